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
// So undici gets a TLS socket only once the call has returned, and a head
// written before the handshake is done (ws writes its handshake request at
// once) is spliced and written one turn after 'secureConnect'.

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import sodium from 'sodium-native';
import type { buildConnector as BuildConnector } from 'undici';
// Not undici's index, for the reason given in upstream.ts.
import buildConnector from 'undici/lib/core/connect.js';
import { CredentialUnavailableError } from '../shared/errors.js';
import type { Credential } from './credential/credential.js';

/** Pooled secure buffers hold a request head up to this size (any Codex sends); a larger one gets its own. */
const HEAD_BUFFER_SIZE = 8 * 1024;
/**
 * Secure buffers kept for reuse, one per head write in flight: allocating one
 * (mmap, guard pages, mlock) costs far more than the rest of a splice. The
 * limit bounds the locked memory the pool holds.
 */
const POOL_LIMIT = 128;
const VALUE_OFFSET = '\r\nauthorization: '.length;

type WriteCallback = (err?: Error | null) => void;

export class KeySplicer {
  /** What undici puts in the Authorization header instead of the key. */
  readonly placeholder = `rap-placeholder-${randomBytes(24).toString('hex')}`;
  private readonly marker = `\r\nauthorization: ${this.placeholder}\r\n`;
  private readonly pool: Buffer[] = [];

  constructor(private readonly credential: Credential) {}

  /** An undici `connect` function: the default connector, with each socket wrapped. */
  connector(options: BuildConnector.BuildOptions): BuildConnector.connector {
    const connect = buildConnector(options);
    return (opts, callback) =>
      connect(opts, (err, socket) => {
        if (err !== null) return callback(err, null);
        // undici connects TLS sockets fully first.
        if ((socket as TLSSocket).encrypted !== true) return callback(null, this.wrap(socket as Socket, true));
        setImmediate(() => {
          if (!socket.destroyed) return callback(null, this.wrap(socket as Socket, true));
          const closed = Object.assign(new Error('the upstream closed the TLS connection at once'), {
            code: 'ECONNRESET',
          });
          callback(socket.errored ?? closed, null);
        });
      });
  }

  /**
   * Splice the key into the request head written on `socket` (also used for
   * the WebSocket handshake). `handshakeDone`: a TLS socket has finished its
   * handshake already; else the head waits for 'secureConnect'.
   */
  wrap<S extends Socket>(socket: S, handshakeDone = false): S {
    const write = socket.write.bind(socket) as (
      chunk: string | Buffer,
      encoding?: BufferEncoding | WriteCallback,
      cb?: WriteCallback,
    ) => boolean;
    let secure = handshakeDone || (socket as Socket as TLSSocket).encrypted !== true;
    if (!secure) socket.once('secureConnect', () => (secure = true));
    socket.write = ((chunk: unknown, encoding?: unknown, cb?: unknown): boolean => {
      if (typeof chunk === 'string') {
        const at = chunk.indexOf(this.marker);
        if (at !== -1) {
          const done = typeof encoding === 'function' ? (encoding as WriteCallback) : (cb as WriteCallback | undefined);
          // ws writes its handshake at once; before the TLS handshake is done Node would keep a heap copy of it.
          if (secure) return this.spliceWrite(socket, write, chunk, at, done);
          socket.once('secureConnect', () => setImmediate(() => this.spliceWrite(socket, write, chunk, at, done)));
          return true;
        }
      }
      return write(chunk as string, encoding as BufferEncoding, cb as WriteCallback);
    }) as Socket['write'];
    return socket;
  }

  private spliceWrite(
    socket: Socket,
    write: (chunk: Buffer, cb?: WriteCallback) => boolean,
    head: string,
    at: number,
    done?: WriteCallback,
  ): boolean {
    const valueStart = at + VALUE_OFFSET;
    let secret: Buffer;
    let n: number;
    try {
      [secret, n] = this.credential.withHeader((value): [Buffer, number] => {
        const size = head.length - this.placeholder.length + value.length;
        const buffer = size <= HEAD_BUFFER_SIZE ? this.pooledBuffer() : sodium.sodium_malloc(size);
        let end = buffer.write(head.slice(0, valueStart), 0, 'latin1');
        end += value.copy(buffer, end);
        return [buffer, end + buffer.write(head.slice(valueStart + this.placeholder.length), end, 'latin1')];
      });
    } catch (err) {
      if (!(err instanceof CredentialUnavailableError)) throw err;
      // No valid token to send (--github-oidc): the request fails with that error and nothing is written;
      // the empty write on the destroyed socket reports the failure to its caller the way Node does.
      socket.destroy(err);
      return write(Buffer.alloc(0), done);
    }
    const corks = (socket as TLSSocket).encrypted === true ? socket.writableCorked : 0;
    for (let i = 0; i < corks; i++) socket.uncork();
    const flushed = write(secret.subarray(0, n), (err) => {
      this.give(secret, n);
      done?.(err);
    });
    for (let i = 0; i < corks; i++) socket.cork();
    return flushed;
  }

  private pooledBuffer(): Buffer {
    return this.pool.pop() ?? sodium.sodium_malloc(HEAD_BUFFER_SIZE);
  }

  /** The socket is done with the `used` bytes: zero them before anything else can reuse them. */
  private give(secret: Buffer, used: number): void {
    sodium.sodium_memzero(secret.subarray(0, used));
    if (secret.length === HEAD_BUFFER_SIZE && this.pool.length < POOL_LIMIT) this.pool.push(secret);
    else sodium.sodium_free(secret);
  }
}
