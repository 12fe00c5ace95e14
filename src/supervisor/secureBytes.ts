// Secret bytes in libsodium secure memory (guarded pages, mlock'd, zeroed on
// free), no-access except while `read` runs. The API key header, the GitHub
// request token, GitHub's ID token and each workload identity access token are
// held this way; none of them is ever a JavaScript string.

import sodium from 'sodium-native';

export class SecureBytes {
  #buffer: Buffer;
  #destroyed = false;

  /** Takes ownership of `buffer` (from sodium_malloc); its first `length` bytes are the secret. */
  constructor(
    buffer: Buffer,
    readonly length: number,
  ) {
    this.#buffer = buffer;
    sodium.sodium_mprotect_noaccess(buffer);
  }

  /** Copy `source` into fresh secure memory (the caller zeroes `source` if it must). */
  static copyOf(source: Buffer): SecureBytes {
    const buffer = sodium.sodium_malloc(Math.max(1, source.length));
    source.copy(buffer);
    return new SecureBytes(buffer, source.length);
  }

  /** Give `use` read access to the bytes for the duration of the call. */
  read<T>(use: (bytes: Buffer) => T): T {
    sodium.sodium_mprotect_readonly(this.#buffer);
    try {
      return use(this.#buffer.subarray(0, this.length));
    } finally {
      sodium.sodium_mprotect_noaccess(this.#buffer);
    }
  }

  /** Zero and release the secure memory; later calls do nothing. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    sodium.sodium_mprotect_readwrite(this.#buffer);
    sodium.sodium_memzero(this.#buffer);
    sodium.sodium_free(this.#buffer);
  }
}
