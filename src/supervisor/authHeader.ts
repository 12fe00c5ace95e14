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
import { API_KEY_BYTES, onlyBytesOf, type Credential } from './credential/credential.js';
import { SecureBytes } from './secureBytes.js';

const MISSING = 'API key must be provided via stdin (e.g. printenv OPENAI_API_KEY | codex responses-api-proxy)';
const BAD_CHARS = "API key may only contain ASCII letters, numbers, '-' or '_'";
const TOO_LARGE = `API key is too large to fit in the ${AUTH_BUFFER_SIZE}-byte buffer`;

const LF = 0x0a;
const CR = 0x0d;

/** The "Bearer <key>" bytes in guarded, mlock'd memory, no-access while idle: the credential of API key mode. */
export class AuthHeader extends SecureBytes implements Credential {
  readonly secretBytes = API_KEY_BYTES;
  /** Bytes of the key alone (the header value minus the scheme). */
  readonly keyLength: number;

  /** `length`: bytes of "Bearer <key>". */
  constructor(buffer: Buffer, length: number) {
    super(buffer, length);
    this.keyLength = length - AUTH_SCHEME_PREFIX.length;
  }

  get shortestSecret(): number {
    return this.keyLength;
  }

  withHeader<T>(use: (headerValue: Buffer) => T): T {
    return this.read(use);
  }

  withSecrets<T>(use: (secrets: readonly Buffer[]) => T): T {
    return this.read((value) => use([value.subarray(AUTH_SCHEME_PREFIX.length)]));
  }
}

export type ReadFn = (buffer: Buffer, offset: number, length: number) => number;

export const readStdin: ReadFn = (buffer, offset, length) => {
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

/** Where the first line of stdin ended up in the buffer. */
export interface FirstLine {
  /** Index in the buffer of the "\n" that ends the line; -1 when EOF or a full buffer came first. */
  readonly newline: number;
  /** Bytes read into the buffer. */
  readonly received: number;
  readonly eof: boolean;
}

/** Read into buffer[offset, offset + capacity) until the first "\n", EOF or a full buffer; never waits for more. */
export function readFirstLine(read: ReadFn, buffer: Buffer, offset: number, capacity: number): FirstLine {
  let received = 0;
  while (received < capacity) {
    const start = offset + received;
    const n = read(buffer, start, capacity - received);
    if (n === 0) return { newline: -1, received, eof: true };
    const newline = buffer.subarray(start, start + n).indexOf(LF);
    received += n;
    if (newline !== -1) return { newline: start + newline, received, eof: false };
  }
  return { newline: -1, received, eof: false };
}

/** What the first line of stdin must be, and the errors for one that is not. */
export interface BearerLineRules {
  /** Bytes the line may take after "Bearer " (its line ending included). */
  readonly capacity: number;
  /** Trim one "\r" before the end also when no "\n" came (EOF). */
  readonly crAtEof: boolean;
  readonly tooLarge: () => Error;
  /** For a read that fails; undefined: the read's own error. */
  readonly unreadable?: () => Error;
  /** Throws when the value (the line without its ending) is not acceptable. */
  check(value: Buffer): void;
}

/**
 * stdin's first line read straight into secure memory as "Bearer <value>",
 * one trailing "\n" and then "\r" trimmed and what followed zeroed; returns the
 * buffer and where the value ends. On any error the buffer is zeroed and freed.
 */
export function readBearerLine(read: ReadFn, rules: BearerLineRules): { buffer: Buffer; end: number } {
  const buffer = sodium.sodium_malloc(AUTH_SCHEME_PREFIX.length + rules.capacity);
  const prefixLength = buffer.write(AUTH_SCHEME_PREFIX, 0, 'latin1');
  try {
    let line: FirstLine;
    try {
      line = readFirstLine(read, buffer, prefixLength, rules.capacity);
    } catch (err) {
      throw rules.unreadable?.() ?? err;
    }
    if (line.newline === -1 && !line.eof) throw rules.tooLarge();
    let end = line.newline === -1 ? prefixLength + line.received : line.newline;
    if ((line.newline !== -1 || rules.crAtEof) && end > prefixLength && buffer[end - 1] === CR) end -= 1;
    rules.check(buffer.subarray(prefixLength, end));
    // Whatever followed the value (line ending, further input) is scratch: zero it.
    sodium.sodium_memzero(buffer.subarray(end));
    return { buffer, end };
  } catch (err) {
    sodium.sodium_memzero(buffer);
    sodium.sodium_free(buffer);
    throw err;
  }
}

export function readAuthHeader(read: ReadFn = readStdin): AuthHeader {
  const { buffer, end } = readBearerLine(read, {
    capacity: AUTH_BUFFER_SIZE - AUTH_SCHEME_PREFIX.length,
    crAtEof: false,
    tooLarge: () => new KeyIntakeError(TOO_LARGE),
    check(key) {
      if (key.length === 0) throw new KeyIntakeError(MISSING);
      if (!onlyBytesOf(API_KEY_BYTES, key)) throw new KeyIntakeError(BAD_CHARS);
    },
  });
  return new AuthHeader(buffer, end);
}
