// --client-token-file: a random token the proxy makes at startup, writes to a
// file only its owner can read, and then requires of every client as
// "Authorization: Bearer <token>". The supervisor keeps only a keyed BLAKE2b
// digest of it (key and digest in libsodium secure memory, read-only): the
// token itself lives in secure memory just long enough to be written, so no
// memory of the proxy holds it afterwards, and checking a request needs no
// mprotect. Offered tokens are digested with the same key and the digests
// compared in constant time. The token is never forwarded, logged or sent to
// the worker. The file is created new (O_EXCL|O_NOFOLLOW: a planted file or
// symlink is refused), 0400, owned by --client-token-owner and that user's
// primary group, and removed at exit.

import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import sodium from 'sodium-native';
import { ProxyError, errnoCode } from '../shared/errors.js';
import { getpwnam, getpwuid } from '../shared/libc.js';

/** 256 bits from the system CSPRNG, written as 64 hex digits. */
const TOKEN_BYTES = 32;
const DIGEST_BYTES = 32;
const SCHEME = 'bearer ';
const HEX = Buffer.from('0123456789abcdef', 'latin1');

export interface TokenOwner {
  readonly uid: number;
  readonly gid: number;
}

/** --client-token-owner USER|UID (default: the user running the proxy) and that user's primary group. */
export function resolveTokenOwner(spec: string | undefined): TokenOwner {
  if (spec === undefined) {
    const uid = process.getuid?.() ?? 0;
    return { uid, gid: getpwuid(uid)?.gid ?? process.getgid?.() ?? 0 };
  }
  const entry = /^\d{1,10}$/.test(spec) ? getpwuid(Number(spec)) : getpwnam(spec);
  if (entry !== null) return { uid: entry.uid, gid: entry.gid };
  if (/^\d{1,10}$/.test(spec)) return { uid: Number(spec), gid: Number(spec) };
  const message = `--client-token-owner ${spec}: no such user (not in the passwd database)`;
  throw new ProxyError('ERR_CLIENT_TOKEN', message, 2);
}

export class ClientToken {
  /** BLAKE2b key, random per process. */
  #digestKey: Buffer;
  /** The keyed digest of the token's hex digits. */
  #digest: Buffer;
  /** The digest of an offered token (reused: one check at a time). */
  readonly #offeredDigest = Buffer.alloc(DIGEST_BYTES);
  readonly path: string;
  #file: { dev: number; ino: number } | null = null;

  private constructor(path: string) {
    this.path = path;
    this.#digestKey = sodium.sodium_malloc(sodium.crypto_generichash_KEYBYTES);
    this.#digest = sodium.sodium_malloc(DIGEST_BYTES);
    sodium.randombytes_buf(this.#digestKey);
  }

  /** Make a token and write it to `path` for `owner`; the file is removed when the process exits. */
  static create(path: string, owner: TokenOwner): ClientToken {
    const token = new ClientToken(resolve(path));
    const hex = sodium.sodium_malloc(TOKEN_BYTES * 2);
    try {
      const raw = sodium.sodium_malloc(TOKEN_BYTES);
      sodium.randombytes_buf(raw);
      for (let i = 0; i < TOKEN_BYTES; i++) {
        hex[2 * i] = HEX[(raw[i] as number) >> 4] as number;
        hex[2 * i + 1] = HEX[(raw[i] as number) & 15] as number;
      }
      sodium.sodium_free(raw); // zeroes it
      sodium.crypto_generichash(token.#digest, hex, token.#digestKey);
      sodium.sodium_mprotect_readonly(token.#digest);
      sodium.sodium_mprotect_readonly(token.#digestKey);
      token.writeFile(hex, owner);
    } catch (err) {
      token.destroy();
      throw err;
    } finally {
      sodium.sodium_free(hex);
    }
    process.once('exit', () => token.destroy());
    return token;
  }

  private writeFile(secret: Buffer, owner: TokenOwner): void {
    const fail = (what: string, err: unknown): ProxyError => {
      const code = errnoCode(err) ?? String(err);
      let hint = '';
      if (code === 'EEXIST') {
        hint =
          ' (a file or symlink is already there: the proxy creates the file new;' +
          ' remove it or choose another path)';
      } else if (code === 'ELOOP') hint = ' (it is a symlink: refused)';
      else if (code === 'EPERM') hint = ' (only root can give the file to another user)';
      return new ProxyError('ERR_CLIENT_TOKEN', `cannot ${what} --client-token-file ${this.path}: ${code}${hint}`);
    };
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o755 });
    } catch (err) {
      throw fail('create the directory of', err);
    }
    let fd: number;
    try {
      fd = openSync(this.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o400);
    } catch (err) {
      throw fail('create', err);
    }
    const stat = fstatSync(fd);
    this.#file = { dev: stat.dev, ino: stat.ino };
    try {
      fchownSync(fd, owner.uid, owner.gid);
      fchmodSync(fd, 0o400);
      const written = writeSync(fd, secret);
      if (written !== secret.length) throw Object.assign(new Error('short write'), { code: 'EIO' });
    } catch (err) {
      this.removeFile();
      throw fail('write', err);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Whether a client sent exactly one Authorization (`authorizations`: the
   * values, as bytes), "Bearer <token>". The scheme is matched without regard
   * to case (RFC 9110); the token in constant time, digested where it lies.
   */
  matches(authorizations: readonly Buffer[]): boolean {
    const value = authorizations.length === 1 ? (authorizations[0] as Buffer) : null;
    if (value === null || value.length !== SCHEME.length + TOKEN_BYTES * 2) return false;
    for (let i = 0; i < SCHEME.length; i++) {
      const byte = value[i] as number;
      if ((byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte) !== SCHEME.charCodeAt(i)) return false;
    }
    sodium.crypto_generichash(this.#offeredDigest, value.subarray(SCHEME.length), this.#digestKey);
    return sodium.sodium_memcmp(this.#offeredDigest, this.#digest);
  }

  /** Remove the file (if it is still ours) and free the secure memory. Runs once, at exit. */
  destroy(): void {
    this.removeFile();
    if (this.#digest.length === 0) return;
    sodium.sodium_free(this.#digest); // sodium_free zeroes, whatever the protection
    sodium.sodium_free(this.#digestKey);
    this.#digest = Buffer.alloc(0);
    this.#digestKey = Buffer.alloc(0);
  }

  private removeFile(): void {
    const file = this.#file;
    this.#file = null;
    if (file === null) return;
    try {
      const now = lstatSync(this.path);
      if (now.dev === file.dev && now.ino === file.ino) unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
