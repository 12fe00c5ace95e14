// A real HTTP upstream on 127.0.0.1 for fault tests: the handler runs as soon
// as a request's head arrives (the body may still be streaming), and every
// exchange records when its head arrived, when its body completed and when
// its connection closed before the response finished, with performance.now()
// timestamps comparable to the test's own (same process).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface Exchange {
  readonly seq: number;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The x-test-tag request header ('' when absent). */
  readonly tag: string;
  readonly arrivedAt: number;
  bodyBytes: number;
  /** The body's last byte arrived (the request is complete). */
  bodyCompleteAt: number | null;
  /** The connection closed before the response finished. */
  closedAt: number | null;
  /** The response was written completely. */
  finishedAt: number | null;
  /** Resolves with the whole body once complete (never rejects). */
  readonly body: Promise<Buffer>;
}

export type ExchangeHandler = (exchange: Exchange) => void;

/** Answers 200 JSON once the body is complete. */
export const answerJson: ExchangeHandler = (ex) => {
  void ex.body.then(() => {
    if (ex.res.destroyed) return;
    ex.res.writeHead(200, { 'content-type': 'application/json' });
    ex.res.end('{"id":"resp_1","object":"response","status":"completed"}');
  });
};

export class ControlledUpstream {
  readonly exchanges: Exchange[] = [];
  handler: ExchangeHandler = answerJson;
  private readonly sockets = new Set<Socket>();
  private readonly closeWaiters = new Set<() => void>();

  private constructor(private readonly server: Server) {}

  /** `keepAliveTimeoutMs`: how long an idle connection from the proxy is kept (Node's default 5 s). */
  static async start(
    handler?: ExchangeHandler,
    options: { keepAliveTimeoutMs?: number } = {},
  ): Promise<ControlledUpstream> {
    const server = createServer({ keepAliveTimeout: options.keepAliveTimeoutMs ?? 5_000 });
    const upstream = new ControlledUpstream(server);
    if (handler) upstream.handler = handler;
    server.on('connection', (socket: Socket) => {
      upstream.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => upstream.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => upstream.onRequest(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let resolveBody: (b: Buffer) => void = () => {};
    const body = new Promise<Buffer>((resolve) => (resolveBody = resolve));
    const tag = req.headers['x-test-tag'];
    const exchange: Exchange = {
      seq: this.exchanges.length + 1,
      req,
      res,
      tag: typeof tag === 'string' ? tag : '',
      arrivedAt: performance.now(),
      bodyBytes: 0,
      bodyCompleteAt: null,
      closedAt: null,
      finishedAt: null,
      body,
    };
    this.exchanges.push(exchange);
    req.on('data', (c: Buffer) => {
      chunks.push(c);
      exchange.bodyBytes += c.length;
    });
    req.on('end', () => {
      exchange.bodyCompleteAt = performance.now();
      resolveBody(Buffer.concat(chunks));
    });
    req.on('error', () => {});
    res.on('error', () => {});
    res.on('finish', () => (exchange.finishedAt = performance.now()));
    res.on('close', () => {
      if (exchange.finishedAt === null && exchange.closedAt === null) exchange.closedAt = performance.now();
      for (const wake of [...this.closeWaiters]) wake();
    });
    this.handler(exchange);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  url(path = '/v1/responses'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** TCP connections from the proxy currently open. */
  get openSockets(): number {
    return this.sockets.size;
  }

  withTag(tag: string): Exchange[] {
    return this.exchanges.filter((e) => e.tag === tag);
  }

  /** Poll (every 5 ms, at most timeoutMs) until `check` holds; returns the last result. */
  async waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (check()) return true;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return check();
  }

  /** Resolves with the close timestamp as soon as the exchange's connection closes unfinished, or null after timeoutMs. */
  closed(exchange: Exchange, timeoutMs: number): Promise<number | null> {
    if (exchange.closedAt !== null) return Promise.resolve(exchange.closedAt);
    return new Promise((resolve) => {
      const wake = (): void => {
        if (exchange.closedAt === null) return;
        clearTimeout(timer);
        this.closeWaiters.delete(wake);
        resolve(exchange.closedAt);
      };
      const timer = setTimeout(() => {
        this.closeWaiters.delete(wake);
        resolve(exchange.closedAt);
      }, timeoutMs);
      this.closeWaiters.add(wake);
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
