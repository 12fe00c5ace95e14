// Keeps the key out of JavaScript strings and ordinary heap buffers.
//
// undici formats the request head with a placeholder as the Authorization
// value (a random per-process token: no client can guess it and have the key
// spliced into a header of its own). Each socket undici opens is wrapped: a
// string write (undici writes every request head as one latin1 string) that
// contains "authorization: <placeholder>" is written as three pieces — the head
// before the value, the value "Bearer <key>" copied from the no-access master
// into a pooled sodium_malloc buffer (guarded, mlock'd), and the rest — and the
// pooled buffer is zeroed once the socket reports the write done. Buffer writes
// (request bodies) are never inspected or changed.

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import sodium from 'sodium-native';
import { buildConnector } from 'undici';
import { AUTH_BUFFER_SIZE } from '../shared/constants.js';
import type { AuthHeader } from './authHeader.js';

/** Secure buffers kept for reuse; more are allocated while all are in flight. */
const POOL_LIMIT = 64;

type WriteCallback = (err?: Error | null) => void;

export class KeySplicer {
  /** What undici puts in the Authorization header instead of the key. */
  readonly placeholder = `rap-placeholder-${randomBytes(24).toString('hex')}`;
  private readonly marker = `\r\nauthorization: ${this.placeholder}\r\n`;
  private readonly pool: Buffer[] = [];

  constructor(private readonly auth: AuthHeader) {}

  /** An undici `connect` function: the default connector, with each socket wrapped. */
  connector(options: buildConnector.BuildOptions): buildConnector.connector {
    const connect = buildConnector(options);
    return (opts, callback) =>
      connect(opts, (err, socket) => {
        if (err !== null) return callback(err, null);
        callback(null, this.wrap(socket as Socket));
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
          return this.spliceWrite(write, chunk, at, done);
        }
      }
      return write(chunk as string, encoding as BufferEncoding, cb as WriteCallback);
    }) as Socket['write'];
    return socket;
  }

  private spliceWrite(write: (chunk: Buffer, cb?: WriteCallback) => boolean, head: string, at: number, done?: WriteCallback): boolean {
    const valueStart = at + '\r\nauthorization: '.length;
    const secret = this.take();
    const length = this.auth.read((value) => value.copy(secret));
    write(Buffer.from(head.slice(0, valueStart), 'latin1'));
    write(secret.subarray(0, length), () => this.give(secret));
    return write(Buffer.from(head.slice(valueStart + this.placeholder.length), 'latin1'), done);
  }

  private take(): Buffer {
    return this.pool.pop() ?? sodium.sodium_malloc(AUTH_BUFFER_SIZE);
  }

  /** The socket is done with the bytes: zero them before anything else can reuse them. */
  private give(secret: Buffer): void {
    sodium.sodium_memzero(secret);
    if (this.pool.length < POOL_LIMIT) this.pool.push(secret);
  }
}
