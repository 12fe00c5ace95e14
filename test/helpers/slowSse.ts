// Slow SSE streams for concurrency tests: an upstream on 127.0.0.1 that answers
// every request with an event stream that never ends on its own (one event at
// once, then one per tick for every open stream), and a client that opens such
// a stream through the proxy and counts the events it receives.

import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** Every event has this exact length, so a stream's byte count says how many it received. */
const EVENT = 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n';
const EVENT_BYTES = Buffer.byteLength(EVENT);

export class SlowSseUpstream {
  private readonly open = new Set<ServerResponse>();
  private readonly sockets = new Set<Socket>();
  private readonly ticker: NodeJS.Timeout;

  private constructor(
    private readonly server: Server,
    tickMs: number,
  ) {
    this.ticker = setInterval(() => {
      for (const res of this.open) res.write(EVENT);
    }, tickMs);
  }

  /** Every `tickMs` each open stream gets one more event. */
  static async start(tickMs: number): Promise<SlowSseUpstream> {
    const server = createServer({ keepAliveTimeout: 90_000 });
    const upstream = new SlowSseUpstream(server, tickMs);
    server.on('connection', (socket: Socket) => {
      upstream.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => upstream.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.once('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(EVENT);
        upstream.open.add(res);
        res.once('close', () => upstream.open.delete(res));
      });
    });
    server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
    await new Promise<void>((resolve) => server.once('listening', resolve));
    return upstream;
  }

  url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/responses`;
  }

  /** Streams the upstream is feeding now. */
  get openStreams(): number {
    return this.open.size;
  }

  async close(): Promise<void> {
    clearInterval(this.ticker);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** One client stream through the proxy: its status, and the events counted so far. */
export class SseStream {
  status = 0;
  /** The proxy's error body, when the status is not 200. */
  errorBody = '';
  failure: string | null = null;
  private bytes = 0;
  private readonly req;

  constructor(port: number) {
    const body = '{"model":"gpt-test","stream":true,"input":"hi"}';
    const headers = { 'content-type': 'application/json', 'content-length': String(body.length) };
    const target = { host: '127.0.0.1', port, method: 'POST', path: '/v1/responses', headers, agent: false };
    this.req = request(target, (res) => {
      this.status = res.statusCode ?? 0;
      res.on('data', (chunk: Buffer) => {
        if (this.status === 200) this.bytes += chunk.length;
        else this.errorBody += chunk.toString('utf8');
      });
      res.on('error', (err) => (this.failure ??= err.message));
      res.on('end', () => (this.failure ??= this.status === 200 ? 'the stream ended' : null));
    });
    this.req.on('error', (err) => (this.failure ??= err.message));
    this.req.end(body);
  }

  /** Whole events received so far. */
  get events(): number {
    return Math.floor(this.bytes / EVENT_BYTES);
  }

  close(): void {
    this.req.destroy();
  }
}
