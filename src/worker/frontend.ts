// The worker's front end: the HTTP/1.1 server on the listening socket
// inherited from the supervisor, and with --websocket the WebSocket upgrades
// it receives. Everything a client sends is parsed here, never in the
// supervisor. Each client exchange it lets through runs on its own IPC stream.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocketServer } from 'ws';
import { WEBSOCKET_CLOSE_TIMEOUT_MS, WORKER_LISTEN_FD } from '../shared/constants.js';
import { errnoCode } from '../shared/errors.js';
import { Msg, type FrameWriter, type HeaderList, type KeyScanResult } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { bodyTooLarge, openAiError, type ProxyErrorResponse } from '../shared/openaiError.js';
import type { WorkerConfig } from '../shared/workerConfig.js';
import { NO_BODY, NO_FIELDS, answerOnResponse, answerOnSocket, errorFields } from './answer.js';
import { ClientSocket } from './clientSocket.js';
import { ClientStream } from './clientStream.js';
import { HttpExchangeDump, WebSocketDump, type DumpWriter, type ExchangeDump } from './dumpWriter.js';
import { ExchangeRecord, type ClientExchange } from './exchange.js';
import { drainThenClose } from './linger.js';
import { ModelPolicy, ScreeningBudget, screenRequest, type ScreenedBody } from './modelPolicy.js';
import { MessageBudget } from './messageBudget.js';
import { isWebSocketRoute, routeRequest } from './route.js';

/** With --allow-model, at most this many times --max-body-bytes of request bodies are held at once. */
const SCREENED_BODIES = 4;
/** At most this many times --ws-max-message-bytes of client WebSocket messages are held at once. */
const HELD_MESSAGES = 4;

export class Frontend {
  /** Open client exchanges (HTTP and WebSocket) by IPC stream id. */
  readonly streams = new Map<number, ClientExchange>();
  /** Dumps whose request file waits for the supervisor's REQUEST_SCANNED. */
  private readonly awaitingScan = new Map<number, ExchangeDump>();
  /** ws's hooks see the request; this finds its session. */
  private readonly sessions = new WeakMap<IncomingMessage, ClientSocket>();
  private nextStreamId = 1;
  private draining = false;
  private readonly connections = new Set<Socket>();
  private readonly server: Server;
  /** --allow-model, or null. */
  private readonly models: ModelPolicy | null;
  /** With --allow-model: how much request body the check may hold at once. */
  private readonly screening: ScreeningBudget;

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
    this.screening = new ScreeningBudget(SCREENED_BODIES * config.maxBodyBytes);
    this.server = createServer(options, (req, res) => this.onRequest(req, res));
    this.server.on('connection', (socket: Socket) => {
      this.connections.add(socket);
      socket.once('close', () => this.connections.delete(socket));
    });
    this.server.on('clientError', (err: Error, socket: Duplex) => {
      const code = errnoCode(err);
      this.log.debug({ code }, 'malformed request');
      if (socket.writable) answerOnSocket(socket, code === 'HPE_HEADER_OVERFLOW' ? 431 : 400, NO_FIELDS, NO_BODY);
      else socket.destroy();
    });
    if (config.webSocket !== null) {
      if (webSocketServer === null) throw new Error('--websocket without ws loaded');
      this.serveWebSockets(webSocketServer, config.webSocket.maxMessageBytes, config.webSocket.idleTimeoutMs);
    }
  }

  /** --websocket: upgrades go to ws, which checks the handshake and then asks us (verifyClient). */
  private serveWebSockets(WsServer: typeof WebSocketServer, maxPayload: number, idleTimeoutMs: number): void {
    const sessionOf = (req: IncomingMessage): ClientSocket => this.sessions.get(req) as ClientSocket;
    const webSockets = new WsServer({
      noServer: true,
      maxPayload,
      // On the loopback hop compression saves nothing and costs each message
      // milliseconds (ws compresses on the thread pool); the upstream hop offers it.
      perMessageDeflate: false,
      clientTracking: false,
      verifyClient: (info, accept) => sessionOf(info.req).verified(accept),
      handleProtocols: (offered, req) => sessionOf(req).selectProtocol(offered),
      ...{ closeTimeout: WEBSOCKET_CLOSE_TIMEOUT_MS }, // ws 8.19+; not in @types/ws yet
    });
    webSockets.on('headers', (lines, req) => lines.push(...sessionOf(req).mirroredHeaderLines()));
    const messages = new MessageBudget(HELD_MESSAGES * maxPayload);
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      this.onUpgrade(webSockets, messages, req, socket, head);
    });
    const sweep = setInterval(
      () => {
        const now = Date.now();
        for (const stream of this.streams.values()) stream.sweep(now, idleTimeoutMs);
      },
      Math.min(1_000, Math.max(50, idleTimeoutMs / 4)),
    );
    sweep.unref();
  }

  private onUpgrade(
    webSockets: WebSocketServer,
    messages: MessageBudget,
    req: IncomingMessage,
    socket: Socket,
    head: Buffer,
  ): void {
    const refuse = (status: number, fields: HeaderList, body: Buffer): void => {
      const record = new ExchangeRecord(req, true);
      record.status = status;
      record.bytesOut = body.length;
      answerOnSocket(socket, status, fields, body);
      record.write(this.log);
    };
    if (!isWebSocketRoute(req.method, req.url, req.headers.upgrade)) return refuse(403, NO_FIELDS, NO_BODY);
    const refusal = this.refusal(req);
    if (refusal !== null) return refuse(refusal.status, errorFields(refusal.status), refusal.body);
    const id = this.nextStreamId++;
    let dump: WebSocketDump | null = null;
    if (this.dumps !== null) {
      dump = new WebSocketDump(this.dumps, id, req.url ?? '', req.rawHeaders);
      this.awaitingScan.set(id, dump);
    }
    const onClosed = (s: ClientExchange): void => this.onStreamClosed(s);
    const session = new ClientSocket(id, req, socket, this.writer, this.log, dump, onClosed, messages, this.models);
    this.sessions.set(req, session);
    this.streams.set(id, session);
    session.start(webSockets, head);
  }

  listen(onListening: () => void): void {
    this.server.listen({ fd: WORKER_LISTEN_FD }, onListening);
  }

  /** Stop listening before anything was accepted (the sandbox could not be completed). */
  close(): void {
    this.server.close();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const route = routeRequest(req.method, req.url, this.config.httpShutdown);
    if (route === 'forward') return this.forward(req, res);
    this.answer(req, res, route === 'shutdown' ? 200 : 403, NO_FIELDS, NO_BODY);
    // Drain any body so the connection's framing stays right for keep-alive.
    req.resume();
    if (route === 'shutdown') res.on('finish', () => this.writer.send(Msg.SHUTDOWN, 0));
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const refusal = this.refusal(req);
    if (refusal !== null) {
      this.answer(req, res, refusal.status, errorFields(refusal.status), refusal.body);
      drainThenClose(req);
      return;
    }
    const { models } = this;
    if (models !== null) {
      const { screening, log } = this;
      const forward = (screened: ScreenedBody): void => this.open(req, res, screened);
      return screenRequest(req, res, models, screening, this.config.maxBodyBytes, log, forward);
    }
    this.open(req, res);
  }

  /** A new stream for a forwarded request; `screened` when its body was read whole first (--allow-model). */
  private open(req: IncomingMessage, res: ServerResponse, screened?: ScreenedBody): void {
    const id = this.nextStreamId++;
    let dump: HttpExchangeDump | null = null;
    if (this.dumps !== null) {
      dump = new HttpExchangeDump(this.dumps, id, req.method ?? 'POST', req.url ?? '', req.rawHeaders);
      this.awaitingScan.set(id, dump);
    }
    const onClosed = (s: ClientExchange): void => this.onStreamClosed(s);
    const stream = new ClientStream(id, req, res, this.writer, this.log, this.config.maxBodyBytes, onClosed, dump);
    this.streams.set(id, stream);
    stream.start(screened);
  }

  /** Why a forwardable request is answered here instead, or null. */
  private refusal(req: IncomingMessage): ProxyErrorResponse | null {
    const { maxOpenStreams, maxBodyBytes } = this.config;
    if (this.draining) return openAiError(503, 'The proxy is shutting down.', 'server_error', 'proxy_shutting_down');
    if (this.streams.size >= maxOpenStreams) {
      const message = `The proxy is at its limit of ${maxOpenStreams} concurrent requests; retry shortly.`;
      return openAiError(503, message, 'server_error', 'proxy_overloaded');
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBodyBytes) return bodyTooLarge(maxBodyBytes);
    return null;
  }

  /** A request answered here; it is logged once its body has been read. */
  private answer(req: IncomingMessage, res: ServerResponse, status: number, fields: HeaderList, body: Buffer): void {
    const record = new ExchangeRecord(req, false);
    record.status = status;
    record.bytesOut = body.length;
    req.on('data', (chunk: Buffer) => (record.bytesIn += chunk.length));
    req.once('close', () => record.write(this.log));
    answerOnResponse(res, status, fields, body);
  }

  /** Streams opened so far. */
  get streamsOpened(): number {
    return this.nextStreamId - 1;
  }

  private onStreamClosed(stream: ClientExchange): void {
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
    for (const stream of this.streams.values()) stream.drain();
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
