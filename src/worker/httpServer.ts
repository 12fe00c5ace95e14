// The worker's HTTP/1.1 server on the listening socket inherited from the
// supervisor. Everything a client sends is parsed here, never in the
// supervisor.

import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import type { WebSocketServer } from 'ws';
import { WORKER_LISTEN_FD } from '../shared/constants.js';
import { Msg, type FrameWriter, type KeyScanResult } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { bodyTooLarge, openAiError, type ProxyErrorResponse } from '../shared/openaiError.js';
import type { WorkerConfig } from '../shared/workerConfig.js';
import { ClientSocket, CLOSING_LIMIT_MS } from './clientSocket.js';
import { ClientStream } from './clientStream.js';
import { ExchangeDump, WebSocketDump, type DumpWriter } from './dumpWriter.js';
import { drainThenClose } from './linger.js';
import { ModelPolicy, screenRequest } from './modelPolicy.js';
import { isWebSocketRoute, routeRequest } from './route.js';

export class HttpFrontend {
  readonly streams = new Map<number, ClientStream | ClientSocket>();
  /** Dumps whose request file waits for the supervisor's REQUEST_SCANNED. */
  private readonly awaitingScan = new Map<number, ExchangeDump | WebSocketDump>();
  /** ws's hooks see the request; this finds its session. */
  private readonly sessions = new WeakMap<IncomingMessage, ClientSocket>();
  private nextStreamId = 1;
  private draining = false;
  private readonly connections = new Set<Socket>();
  private readonly server: Server;
  /** --allow-model, or null. */
  private readonly models: ModelPolicy | null;

  constructor(
    private readonly config: WorkerConfig,
    private readonly writer: FrameWriter,
    private readonly log: Logger,
    private readonly dumps: DumpWriter | null,
    /** ws's server class, loaded by main.ts only with --websocket. */
    webSocketServer: typeof WebSocketServer | null,
  ) {
    // Host is replaced upstream anyway; the original accepts requests without one.
    // connectionsCheckingInterval makes the 30 s header deadline hold to within 2 s.
    const options = {
      noDelay: true,
      keepAliveTimeout: 5_000,
      headersTimeout: 30_000,
      connectionsCheckingInterval: 2_000,
      maxHeaderSize: 16 * 1024,
      requireHostHeader: false,
    };
    const onModelRefused = (): void => writer.send(Msg.MODEL_REFUSED, 0);
    this.models = config.allowModels === null ? null : new ModelPolicy(config.allowModels, onModelRefused);
    this.server = createServer(options, (req, res) => this.onRequest(req, res));
    this.server.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      this.log.debug({ code: err.code }, 'malformed request');
      if (socket.writable) socket.end(err.code === 'HPE_HEADER_OVERFLOW' ? 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    if (config.webSocket !== null) {
      if (webSocketServer === null) throw new Error('--websocket without ws loaded');
      this.serveWebSockets(webSocketServer, config.webSocket.maxMessageBytes, config.webSocket.idleTimeoutMs);
    }
  }

  /** --websocket: upgrades go to ws, which checks the handshake and then asks us (verifyClient). */
  private serveWebSockets(WebSocketServerClass: typeof WebSocketServer, maxPayload: number, idleTimeoutMs: number): void {
    const sessionOf = (req: IncomingMessage): ClientSocket => this.sessions.get(req) as ClientSocket;
    const webSockets = new WebSocketServerClass({
      noServer: true,
      maxPayload,
      // On the loopback hop compression saves nothing and costs each message
      // milliseconds (ws compresses on the thread pool); the upstream hop offers it.
      perMessageDeflate: false,
      clientTracking: false,
      verifyClient: (info, accept) => sessionOf(info.req).verified(accept),
      handleProtocols: (offered, req) => sessionOf(req).selectProtocol(offered),
      ...{ closeTimeout: CLOSING_LIMIT_MS }, // ws 8.19+; not in @types/ws yet
    });
    webSockets.on('headers', (lines, req) => lines.push(...sessionOf(req).mirroredHeaderLines()));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(webSockets, req, socket, head));
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const stream of this.streams.values()) if (stream instanceof ClientSocket) stream.sweep(now, idleTimeoutMs);
    }, Math.min(1_000, Math.max(50, idleTimeoutMs / 4)));
    sweep.unref();
  }

  private onUpgrade(webSockets: WebSocketServer, req: IncomingMessage, socket: Socket, head: Buffer): void {
    const startedAt = process.hrtime.bigint();
    const answer = (status: number, body: Buffer, headers: Record<string, string | number> = {}): void => {
      const fields = Object.entries({ ...headers, 'content-length': body.length, connection: 'close' }).map(([name, value]) => `${name}: ${value}\r\n`);
      socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${fields.join('')}\r\n`, 'latin1'), body]));
      const durationMs = Number(process.hrtime.bigint() - startedAt) / 1e6;
      this.log.info({ method: req.method, path: req.url, status, websocket: true, bytesIn: 0, bytesOut: body.length, durationMs }, 'request');
    };
    if (!isWebSocketRoute(req.method, req.url, req.headers.upgrade)) return answer(403, Buffer.alloc(0));
    const refusal = this.refusal(req);
    if (refusal !== null) return answer(refusal.status, refusal.body, { 'content-type': 'application/json', ...(refusal.status === 503 ? { 'retry-after': '1' } : {}) });
    const id = this.nextStreamId++;
    let dump: WebSocketDump | null = null;
    if (this.dumps !== null) {
      dump = new WebSocketDump(this.dumps, req.url ?? '', req.rawHeaders);
      this.awaitingScan.set(id, dump);
    }
    const onClosed = (s: ClientStream | ClientSocket): void => this.onStreamClosed(s);
    const session = new ClientSocket(id, req, socket, this.writer, this.log, dump, onClosed, this.models);
    this.sessions.set(req, session);
    this.streams.set(id, session);
    session.start(webSockets, head);
  }

  listen(onListening: () => void): void {
    this.server.listen({ fd: WORKER_LISTEN_FD }, onListening);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const startedAt = process.hrtime.bigint();
    const route = routeRequest(req.method, req.url, this.config.httpShutdown);
    if (route === 'forward') return this.forward(req, res);
    this.logWhenDone(req, res, startedAt);
    // Drain any body so the connection's framing stays right for keep-alive.
    req.resume();
    res.writeHead(route === 'shutdown' ? 200 : 403, { 'content-length': '0' });
    res.end();
    if (route === 'shutdown') res.on('finish', () => this.writer.send(Msg.SHUTDOWN, 0));
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const refusal = this.refusal(req);
    if (refusal !== null) {
      const { status, body } = refusal;
      this.logWhenDone(req, res, process.hrtime.bigint());
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, ...(status === 503 ? { 'retry-after': '1' } : {}) });
      res.end(body);
      drainThenClose(req);
      return;
    }
    const { models } = this;
    if (models !== null) {
      return screenRequest(req, res, models, this.config.maxBodyBytes, this.log, (body) => this.open(req, res, body));
    }
    this.open(req, res);
  }

  /** A new stream for a forwarded request; `body` when it was read whole first (--allow-model). */
  private open(req: IncomingMessage, res: ServerResponse, body?: Buffer): void {
    const id = this.nextStreamId++;
    let dump: ExchangeDump | null = null;
    if (this.dumps !== null) {
      dump = new ExchangeDump(this.dumps, req.method ?? 'POST', req.url ?? '', req.rawHeaders);
      this.awaitingScan.set(id, dump);
    }
    const stream = new ClientStream(id, req, res, this.writer, this.log, this.config.maxBodyBytes, (s) => this.onStreamClosed(s), dump);
    this.streams.set(id, stream);
    stream.start(body);
  }

  /** Why a forwardable request is answered here instead, or null. */
  private refusal(req: IncomingMessage): ProxyErrorResponse | null {
    if (this.draining) return openAiError(503, 'The proxy is shutting down.', 'server_error', 'proxy_shutting_down');
    if (this.streams.size >= this.config.maxOpenStreams) {
      return openAiError(503, `The proxy is at its limit of ${this.config.maxOpenStreams} concurrent requests; retry shortly.`, 'server_error', 'proxy_overloaded');
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.config.maxBodyBytes) return bodyTooLarge(this.config.maxBodyBytes);
    return null;
  }

  /** One log line per answered request, once its body has been drained. */
  private logWhenDone(req: IncomingMessage, res: ServerResponse, startedAt: bigint): void {
    let bytesIn = 0;
    req.on('data', (chunk: Buffer) => (bytesIn += chunk.length));
    req.once('close', () => {
      const durationMs = Number(process.hrtime.bigint() - startedAt) / 1e6;
      this.log.info({ method: req.method, path: req.url, status: res.statusCode, bytesIn, bytesOut: 0, durationMs }, 'request');
    });
  }

  private onStreamClosed(stream: ClientStream | ClientSocket): void {
    this.streams.delete(stream.id);
    if (this.draining && this.streams.size === 0) this.drained();
  }

  /** Stop accepting; once the open streams have finished, close and exit. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    // Exit once every connection is closed; the supervisor then exits 0. Stop
    // listening the net.Server way: http's close() also destroys every
    // connection whose response has ended, although its tail may not have left
    // Node's buffers yet (a client not reading then got a truncated response).
    NetServer.prototype.close.call(this.server, () => process.exit(0));
    // A WebSocket never finishes by itself: close it as "going away".
    for (const stream of this.streams.values()) if (stream instanceof ClientSocket) stream.close(1001, 'proxy shutting down');
    if (this.streams.size === 0) this.drained();
  }

  /**
   * Every response is with the kernel: end each connection with a FIN after
   * its queued bytes (destroying it, or dying, could reset a client that has
   * not read everything yet).
   */
  private drained(): void {
    this.writer.send(Msg.DRAINED, 0);
    for (const socket of this.connections) socket.end();
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
