// The subset of sodium-native this project uses (the package ships no types).
declare module 'sodium-native' {
  /** Guarded, mlock'd allocation; `secure` is true on the returned buffer. */
  export function sodium_malloc(size: number): Buffer & { secure: true };
  export function sodium_free(buf: Buffer): void;
  export function sodium_memzero(buf: Buffer): void;
  export function sodium_mlock(buf: Buffer): void;
  export function sodium_munlock(buf: Buffer): void;
  export function sodium_mprotect_noaccess(buf: Buffer): void;
  export function sodium_mprotect_readonly(buf: Buffer): void;
  export function sodium_mprotect_readwrite(buf: Buffer): void;
  export function randombytes_buf(buf: Buffer): void;
  /** Constant-time comparison of two buffers of the same length. */
  export function sodium_memcmp(a: Buffer, b: Buffer): boolean;
  export const crypto_secretbox_KEYBYTES: number;
  export const crypto_secretbox_NONCEBYTES: number;
  export const crypto_secretbox_MACBYTES: number;
  /** c (m.length + MACBYTES bytes) = m sealed with nonce n and key k. */
  export function crypto_secretbox_easy(c: Buffer, m: Buffer, n: Buffer, k: Buffer): void;
  /** m = c opened; false when c was not sealed with n and k. */
  export function crypto_secretbox_open_easy(m: Buffer, c: Buffer, n: Buffer, k: Buffer): boolean;
  export const crypto_generichash_KEYBYTES: number;
  /** output = BLAKE2b(input), keyed when `key` is given; output.length is the digest size. */
  export function crypto_generichash(output: Buffer, input: Buffer, key?: Buffer): void;
}
