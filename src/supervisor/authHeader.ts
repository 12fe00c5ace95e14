// Reads the API key from stdin straight into libsodium secure memory and keeps
// it there as the complete header value "Bearer <key>".
//
// Rules and messages are the original's: only the first line is read (stdin may
// stay open; EOF is not awaited), one trailing "\n" or "\r\n" is trimmed, the
// key is [A-Za-z0-9_-]+ and "Bearer " + key must fit 1024 bytes with a byte to
// spare (so the longest key is 1016 bytes). No JavaScript string ever holds the
// stdin bytes: readSync writes into the secure buffer itself.

import { readSync } from 'node:fs';
import sodium from 'sodium-native';
import { AUTH_BUFFER_SIZE, AUTH_SCHEME_PREFIX } from '../shared/constants.js';
import { KeyIntakeError, errnoCode } from '../shared/errors.js';

const MISSING = 'API key must be provided via stdin (e.g. printenv OPENAI_API_KEY | codex responses-api-proxy)';
const BAD_CHARS = "API key may only contain ASCII letters, numbers, '-' or '_'";
const TOO_LARGE = `API key is too large to fit in the ${AUTH_BUFFER_SIZE}-byte buffer`;

const LF = 0x0a;
const CR = 0x0d;

/** The "Bearer <key>" bytes in guarded, mlock'd memory, no-access while idle. */
export class AuthHeader {
  #buffer: Buffer;
  /** Bytes of "Bearer <key>". */
  readonly length: number;
  /** Bytes of the key alone (the header value minus the scheme). */
  readonly keyLength: number;

  constructor(buffer: Buffer, length: number) {
    this.#buffer = buffer;
    this.length = length;
    this.keyLength = length - AUTH_SCHEME_PREFIX.length;
    sodium.sodium_mprotect_noaccess(buffer);
  }

  /** Give `use` read access to the header bytes for the duration of the call. */
  read<T>(use: (headerValue: Buffer) => T): T {
    sodium.sodium_mprotect_readonly(this.#buffer);
    try {
      return use(this.#buffer.subarray(0, this.length));
    } finally {
      sodium.sodium_mprotect_noaccess(this.#buffer);
    }
  }

  /** Zero and release the secure memory (at exit). */
  destroy(): void {
    sodium.sodium_mprotect_readwrite(this.#buffer);
    sodium.sodium_memzero(this.#buffer);
    sodium.sodium_free(this.#buffer);
  }
}

export type ReadFn = (buffer: Buffer, offset: number, length: number) => number;

const readStdin: ReadFn = (buffer, offset, length) => {
  for (;;) {
    try {
      return readSync(0, buffer, offset, length, null);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EAGAIN') {
        // stdin was handed to us non-blocking: wait briefly, as a blocking read would.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
        continue;
      }
      if (code === 'EINTR') continue;
      if (code === 'EOF' || code === 'EBADF') return 0;
      throw err;
    }
  }
};

export function readAuthHeader(read: ReadFn = readStdin): AuthHeader {
  const buffer = sodium.sodium_malloc(AUTH_BUFFER_SIZE);
  const prefixLength = buffer.write(AUTH_SCHEME_PREFIX, 0, 'latin1');
  const capacity = AUTH_BUFFER_SIZE - prefixLength;
  try {
    let received = 0;
    let lineEnd = -1;
    let eof = false;
    while (received < capacity) {
      const start = prefixLength + received;
      const n = read(buffer, start, capacity - received);
      if (n === 0) {
        eof = true;
        break;
      }
      const newline = buffer.subarray(start, start + n).indexOf(LF);
      received += n;
      if (newline !== -1) {
        lineEnd = start + newline;
        break;
      }
    }
    if (lineEnd === -1 && !eof) throw new KeyIntakeError(TOO_LARGE);
    let end = lineEnd === -1 ? prefixLength + received : lineEnd;
    if (lineEnd !== -1 && end > prefixLength && buffer[end - 1] === CR) end -= 1;
    if (end === prefixLength) throw new KeyIntakeError(MISSING);
    for (let i = prefixLength; i < end; i++) {
      if (!isKeyByte(buffer[i] as number)) throw new KeyIntakeError(BAD_CHARS);
    }
    // Whatever followed the key (line ending, further input) is scratch: zero it.
    sodium.sodium_memzero(buffer.subarray(end));
    return new AuthHeader(buffer, end);
  } catch (err) {
    sodium.sodium_memzero(buffer);
    sodium.sodium_free(buffer);
    throw err;
  }
}

function isKeyByte(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2d || b === 0x5f;
}
