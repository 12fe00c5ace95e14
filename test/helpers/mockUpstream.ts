// A real HTTP upstream on 127.0.0.1 that records what reached it.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

/** Called once the request body has fully arrived (unless `streaming`). */
export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export const jsonOk: UpstreamHandler = (_req, res) => {
  const body = JSON.stringify({ id: 'resp_1', object: 'response', status: 'completed' });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(body);
};

export class MockUpstream {
  readonly requests: RecordedRequest[] = [];
  /** Requests whose connection closed before the response finished. */
  readonly clientAborts: string[] = [];
  handler: UpstreamHandler = jsonOk;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(handler?: UpstreamHandler): Promise<MockUpstream> {
    const server = createServer();
    const upstream = new MockUpstream(server);
    if (handler) upstream.handler = handler;
    server.on('connection', (socket) => {
      upstream.sockets.add(socket);
      socket.on('close', () => upstream.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        upstream.requests.push({
          method: req.method ?? '',
          url: req.url ?? '',
          rawHeaders: req.rawHeaders,
          headers: req.headers,
          body,
        });
        upstream.handler(req, res, body);
      });
      res.on('close', () => {
        if (!res.writableFinished) upstream.clientAborts.push(req.url ?? '');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  url(path = '/v1/responses'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
