// Small HTTP clients for tests: a normal one, and raw bytes over TCP for
// request targets no well-behaved client would send.

import { request, type Agent, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly body: Buffer;
}

export interface RequestOptions {
  readonly method?: string;
  readonly path?: string;
  readonly headers?: Record<string, string | string[]> | string[];
  readonly body?: string | Buffer;
  readonly timeoutMs?: number;
  /** A keep-alive agent whose connection the request goes on; without one, a fresh connection. */
  readonly agent?: Agent;
}

/** One request (on a fresh connection unless `agent` says otherwise); rejects on a transport error (e.g. a reset). */
export function send(port: number, options: RequestOptions = {}): Promise<Reply> {
  return exchange(port, options, (res, resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () =>
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        rawHeaders: res.rawHeaders,
        body: Buffer.concat(chunks),
      }),
    );
  });
}

/** As send(), for answers too large to keep: their status and length only. */
export function sendCounted(port: number, options: RequestOptions = {}): Promise<{ status: number; bytes: number }> {
  return exchange(port, options, (res, resolve) => {
    let bytes = 0;
    res.on('data', (c: Buffer) => (bytes += c.length));
    res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
  });
}

/** One request; `read` takes the response and resolves once it has ended. */
function exchange<T>(
  port: number,
  options: RequestOptions,
  read: (res: IncomingMessage, resolve: (value: T) => void) => void,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'POST',
        path: options.path ?? '/v1/responses',
        headers: options.headers ?? {},
        agent: options.agent ?? false,
      },
      (res) => {
        read(res, resolve);
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('response aborted')));
      },
    );
    req.setTimeout(options.timeoutMs ?? 10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Write raw bytes, collect everything until the server closes or timeoutMs passes. */
export function sendRaw(port: number, bytes: string | Buffer, timeoutMs = 2_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.end(), timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(bytes);
  });
}
