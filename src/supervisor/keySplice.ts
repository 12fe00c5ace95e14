// Keeps the key out of JavaScript strings and ordinary heap buffers.
//
// undici formats the request head with a placeholder as the Authorization
// value (a random per-process token: no client can guess it and have the key
// spliced into a header of its own). Each socket undici (or ws, for the
// WebSocket handshake) opens is wrapped: a string write (both write a request
// head as one latin1 string) that contains "authorization: <placeholder>" is
// written instead as one buffer — the head with "Bearer <key>" copied from the
// no-access master in place of the placeholder — assembled in a pooled
// sodium_malloc buffer (guarded, mlock'd) that is zeroed once the socket
// reports the write done. Buffer writes (request bodies) are never inspected.
//
// On a TLS socket that buffer must reach the TLS layer alone: Node encrypts a
// single buffer straight from where it lies, but first copies several (a corked
// head and body) into one ordinary heap buffer, which would keep the key after
// it is freed. So the head is written uncorked there; on plain TCP, head and
// body still leave in one writev (the kernel is the only copy). Nor may it be
// written while OpenSSL is on the stack: 'secureConnect' is emitted from inside
// the OpenSSL call that finished the handshake, and newer Node releases copy a
// write made there into an ordinary heap buffer to write it after that call.
// So undici gets a TLS socket only once the call has returned.

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import sodium from 'sodium-native';
import type { buildConnector as BuildConnector } from 'undici';
// Not undici's index, for the reason given in upstream.ts.
import buildConnector from 'undici/lib/core/connect.js';
import { ProxyError } from '../shared/errors.js';
import type { AuthHeader } from './authHeader.js';

/** Pooled secure buffers hold a head of up to this size (Codex's are under 3 KiB); a larger one gets its own. */
const HEAD_BUFFER_SIZE = 8 * 1024;
/**
 * Secure buffers kept for reuse: one per head write in flight at once, so as
 * many as concurrent requests (at most 1 MiB of locked memory). Allocating one
 * (mmap, guard pages, mlock) costs ten times the rest of a splice.
 */
const POOL_LIMIT = 128;
const VALUE_OFFSET = '\r\nauthorization: '.length;

type WriteCallback = (err?: Error | null) => void;

export class KeySplicer {
  /** What undici puts in the Authorization header instead of the key. */
  readonly placeholder = `rap-placeholder-${randomBytes(24).toString('hex')}`;
  private readonly marker = `\r\nauthorization: ${this.placeholder}\r\n`;
  private readonly pool: Buffer[] = [];

  constructor(private readonly auth: AuthHeader) {}

  /** An undici `connect` function: the default connector, with each socket wrapped. */
  connector(options: BuildConnector.BuildOptions): BuildConnector.connector {
    const connect = buildConnector(options);
    return (opts, callback) =>
      connect(opts, (err, socket) => {
        if (err !== null) return callback(err, null);
        if ((socket as TLSSocket).encrypted !== true) return callback(null, this.wrap(socket as Socket));
        setImmediate(() => {
          if (!socket.destroyed) return callback(null, this.wrap(socket as Socket));
          callback(socket.errored ?? new ProxyError('ECONNRESET', 'the upstream closed the TLS connection at once'), null);
        });
      });
  }

  /** Splice the key into the request head written on `socket` (also used for the WebSocket handshake). */
  wrap<S extends Socket>(socket: S): S {
    const write = socket.write.bind(socket) as (chunk: string | Buffer, encoding?: BufferEncoding | WriteCallback, cb?: WriteCallback) => boolean;
    socket.write = ((chunk: unknown, encoding?: unknown, cb?: unknown): boolean => {
      if (typeof chunk === 'string') {
        const at = chunk.indexOf(this.marker);
        if (at !== -1) {
          const done = typeof encoding === 'function' ? (encoding as WriteCallback) : (cb as WriteCallback | undefined);
          return this.spliceWrite(socket, write, chunk, at, done);
        }
      }
      return write(chunk as string, encoding as BufferEncoding, cb as WriteCallback);
    }) as Socket['write'];
    return socket;
  }

  private spliceWrite(socket: Socket, write: (chunk: Buffer, cb?: WriteCallback) => boolean, head: string, at: number, done?: WriteCallback): boolean {
    const valueStart = at + VALUE_OFFSET;
    const size = head.length - this.placeholder.length + this.auth.length;
    const secret = size <= HEAD_BUFFER_SIZE ? (this.pool.pop() ?? sodium.sodium_malloc(HEAD_BUFFER_SIZE)) : sodium.sodium_malloc(size);
    let n = secret.write(head.slice(0, valueStart), 0, 'latin1');
    n += this.auth.read((value) => value.copy(secret, n));
    n += secret.write(head.slice(valueStart + this.placeholder.length), n, 'latin1');
    const corks = (socket as TLSSocket).encrypted === true ? socket.writableCorked : 0;
    for (let i = 0; i < corks; i++) socket.uncork();
    const flushed = write(secret.subarray(0, n), (err) => {
      this.give(secret, n);
      done?.(err);
    });
    for (let i = 0; i < corks; i++) socket.cork();
    return flushed;
  }

  /** The socket is done with the `used` bytes: zero them before anything else can reuse them. */
  private give(secret: Buffer, used: number): void {
    sodium.sodium_memzero(secret.subarray(0, used));
    if (secret.length === HEAD_BUFFER_SIZE && this.pool.length < POOL_LIMIT) this.pool.push(secret);
    else sodium.sodium_free(secret);
  }
}
