// The worker's HTTP/1.1 server on the listening socket inherited from the
// supervisor. Everything a client sends is parsed here, never in the
// supervisor.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { WORKER_LISTEN_FD } from '../shared/constants.js';
import { Msg, type FrameWriter, type KeyScanResult } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { openAiError } from '../shared/openaiError.js';
import type { WorkerConfig } from '../shared/workerConfig.js';
import { ClientStream } from './clientStream.js';
import { ExchangeDump, type DumpWriter } from './dumpWriter.js';
import { routeRequest } from './route.js';

export class HttpFrontend {
  readonly streams = new Map<number, ClientStream>();
  /** Dumps whose request file waits for the supervisor's REQUEST_SCANNED. */
  private readonly awaitingScan = new Map<number, ExchangeDump>();
  private nextStreamId = 1;
  private readonly server: Server;

  constructor(
    private readonly config: WorkerConfig,
    private readonly writer: FrameWriter,
    private readonly log: Logger,
    private readonly dumps: DumpWriter | null,
  ) {
    this.server = createServer({ noDelay: true, keepAliveTimeout: 5_000, headersTimeout: 30_000, maxHeaderSize: 16 * 1024 }, (req, res) =>
      this.onRequest(req, res),
    );
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      this.log.debug({ code: err.code }, 'malformed request');
      if (socket.writable) socket.end(err.code === 'HPE_HEADER_OVERFLOW' ? 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  listen(onListening: () => void): void {
    this.server.listen({ fd: WORKER_LISTEN_FD }, onListening);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const route = routeRequest(req.method, req.url, this.config.httpShutdown);
    if (route === 'forward') return this.forward(req, res);
    // Drain any body so the connection's framing stays right for keep-alive.
    req.resume();
    if (route === 'shutdown') {
      this.respondEmpty(req, res, 200);
      res.on('finish', () => this.writer.send(Msg.SHUTDOWN, 0));
      return;
    }
    this.respondEmpty(req, res, 403);
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    if (this.streams.size >= this.config.maxOpenStreams) {
      req.resume();
      const { status, body } = openAiError(503, 'The proxy is at its limit of concurrent requests; retry shortly.', 'server_error', 'proxy_overloaded');
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, 'retry-after': '1' });
      res.end(body);
      this.log.warn({ method: req.method, path: req.url, status }, 'request refused: too many open requests');
      return;
    }
    const id = this.nextStreamId++;
    let dump: ExchangeDump | null = null;
    if (this.dumps !== null) {
      dump = new ExchangeDump(this.dumps, req.method ?? 'POST', req.url ?? '', req.rawHeaders);
      this.awaitingScan.set(id, dump);
    }
    const stream = new ClientStream(id, req, res, this.writer, this.log, (s) => this.streams.delete(s.id), dump);
    this.streams.set(id, stream);
    stream.start();
  }

  private respondEmpty(req: IncomingMessage, res: ServerResponse, status: number): void {
    res.writeHead(status, { 'content-length': '0' });
    res.end();
    this.log.info({ method: req.method, path: req.url, status, bytesIn: 0, bytesOut: 0 }, 'request');
  }

  /** Cut every open stream (the supervisor is going away). */
  abortAll(reason: string): void {
    for (const stream of this.streams.values()) stream.abort(reason);
  }

  onRequestScanned(streamId: number, scan: KeyScanResult): void {
    const dump = this.awaitingScan.get(streamId);
    if (dump === undefined) return;
    this.awaitingScan.delete(streamId);
    dump.writeRequest(scan);
  }
}
