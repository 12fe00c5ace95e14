// A mock Responses API upstream on 127.0.0.1 that speaks WebSocket mode (as
// wss://api.openai.com/v1/responses does) and plain HTTP on the same port:
//
// - GET /v1/responses with a WebSocket upgrade (any query string) opens a
//   session; every `{"type":"response.create",...}` text message is answered
//   with the stream events of one response, one text message per event
//   (`"generate": false`, Codex's warm-up, gets response.created and
//   response.completed with no output); any other message is echoed back
//   as it came (text stays text, binary stays binary);
// - POST /v1/responses is answered with the same events as server-sent
//   events, so a client that falls back to HTTP still completes its turn and
//   a test can tell which transport a turn used;
// - any other path is 404; `refusal` makes every upgrade fail with a chosen
//   status, headers and body (what api.openai.com does for a bad key).
//
// Everything that arrives is recorded: each handshake (refused ones too), each
// message, each close code and reason, with performance.now() timestamps
// comparable to the test's own (same process). `onSession` and `onMessage`
// let a test drive a session itself.

import {
  createServer,
  STATUS_CODES,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeSse, responseEvents, type SseEvent } from './responsesApi.js';

export const WS_PATH = '/v1/responses';
export const DEFAULT_ANSWER = 'The mock upstream answered.';

export type Transport = 'websocket' | 'http';

export interface WsHandshake {
  readonly seq: number;
  readonly method: string;
  /** The request-target as received (path and query). */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly at: number;
  /** The status the upgrade got: 101, or the refusal's. */
  status: number;
}

export interface WsMessage {
  readonly data: Buffer;
  readonly isBinary: boolean;
  readonly at: number;
}

export interface WsClose {
  readonly code: number;
  readonly reason: string;
  readonly at: number;
}

export interface Refusal {
  readonly status: number;
  readonly body?: string;
  /** Extra response headers; Content-Length and Connection: close are added. */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface HttpTurn {
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  readonly at: number;
}

/** Every value of a header in a rawHeaders list, case-insensitive. */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const lower = name.toLowerCase();
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    if ((rawHeaders[i] as string).toLowerCase() === lower) values.push(rawHeaders[i + 1] as string);
  return values;
}

/** Poll `check` every 5 ms until it holds or timeoutMs passes; returns the last result. */
export async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return check();
}

/** One accepted upstream WebSocket: what the proxy sent over it and how it ended. */
export class WsSession {
  /** Messages received from the proxy, in order. */
  readonly messages: WsMessage[] = [];
  /** Parsed `response.create` messages, in order. */
  readonly creates: Array<Record<string, unknown>> = [];
  /** Messages this mock sent, in order. */
  readonly sent: WsMessage[] = [];
  readonly pings: Buffer[] = [];
  readonly pongs: Buffer[] = [];
  closed: WsClose | null = null;

  constructor(
    readonly handshake: WsHandshake,
    readonly socket: WebSocket,
  ) {}

  get seq(): number {
    return this.handshake.seq;
  }

  /** Values of a handshake header, case-insensitive, as received. */
  header(name: string): string[] {
    return headerValues(this.handshake.rawHeaders, name);
  }

  send(data: string | Buffer, isBinary = typeof data !== 'string'): void {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    this.sent.push({ data: bytes, isBinary, at: performance.now() });
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes, { binary: isBinary });
  }

  sendJson(event: unknown): void {
    this.send(JSON.stringify(event), false);
  }

  waitForMessages(count: number, timeoutMs: number): Promise<boolean> {
    return until(() => this.messages.length >= count, timeoutMs);
  }

  /** The close as this side saw it, or null if still open after timeoutMs. */
  async waitClosed(timeoutMs: number): Promise<WsClose | null> {
    await until(() => this.closed !== null, timeoutMs);
    return this.closed;
  }
}

export type SessionHook = (session: WsSession) => void;
export type MessageHandler = (session: WsSession, message: WsMessage, upstream: WsUpstream) => void;

/** The events of one response to a `response.create` (one WS text message, or one SSE event, each). */
export function eventsFor(create: Record<string, unknown>, id: string, answer: string): SseEvent[] {
  if (create.generate === false) {
    const response = {
      id,
      object: 'response',
      model: String(create.model ?? 'mock-model'),
      status: 'in_progress',
      output: [] as unknown[],
    };
    return [
      { type: 'response.created', response },
      {
        type: 'response.completed',
        response: { ...response, status: 'completed', usage: { input_tokens: 0, output_tokens: 0, total_tokens: 0 } },
      },
    ];
  }
  return responseEvents(answer, id);
}

function parseCreate(message: WsMessage): Record<string, unknown> | null {
  if (message.isBinary) return null;
  try {
    const value: unknown = JSON.parse(message.data.toString('utf8'));
    if (
      value !== null &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      (value as { type?: unknown }).type === 'response.create'
    )
      return value as Record<string, unknown>;
  } catch {
    // not JSON: echoed
  }
  return null;
}

/** The default: answer `response.create` with a response's events, echo anything else. */
export const answerOrEcho: MessageHandler = (session, message, upstream) => {
  const create = parseCreate(message);
  if (create === null) {
    session.send(message.data, message.isBinary);
    return;
  }
  // creates already holds this one: ids are resp_ws_<session>_<1-based turn>.
  const id = `resp_ws_${session.seq}_${session.creates.length}`;
  for (const event of eventsFor(create, id, upstream.answerFor(create))) session.sendJson(event);
};

export interface WsUpstreamOptions {
  /** Offer permessage-deflate (default false). */
  readonly perMessageDeflate?: boolean;
  /** Largest message the mock accepts (default 128 MiB). */
  readonly maxPayload?: number;
}

export class WsUpstream {
  /** Every upgrade request, accepted or refused. */
  readonly handshakes: WsHandshake[] = [];
  /** Accepted sessions, in order. */
  readonly sessions: WsSession[] = [];
  /** Plain HTTP POST /v1/responses turns. */
  readonly httpTurns: HttpTurn[] = [];
  /** Plain HTTP requests to any other path or with another method. */
  readonly otherRequests: Array<{ method: string; url: string }> = [];
  /** When set, every upgrade is refused with it. */
  refusal: Refusal | null = null;
  /** Headers added to each 101 response (an `x-request-id: req_ws_<seq>` is always added). */
  upgradeHeaders: Record<string, string> = {};
  /** The answer text, fixed or per `response.create` (or HTTP request body) and transport. */
  answer: string | ((create: Record<string, unknown>, transport: Transport) => string) = DEFAULT_ANSWER;
  onMessage: MessageHandler = answerOrEcho;
  onSession: SessionHook | null = null;
  /** Which offered subprotocol to accept (false: none); default the first offered, as ws does. */
  selectProtocol: ((offered: ReadonlySet<string>) => string | false) | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly wss: WebSocketServer;
  private readonly byRequest = new WeakMap<IncomingMessage, WsHandshake>();

  private constructor(
    private readonly server: Server,
    options: WsUpstreamOptions,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: options.perMessageDeflate ?? false,
      maxPayload: options.maxPayload ?? 128 * 1024 * 1024,
      handleProtocols: (offered: Set<string>) =>
        this.selectProtocol !== null ? this.selectProtocol(offered) : (offered.values().next().value ?? false),
    });
    this.wss.on('headers', (headers: string[], req: IncomingMessage) => {
      headers.push(`x-request-id: req_ws_${this.byRequest.get(req)?.seq ?? 0}`);
      for (const [name, value] of Object.entries(this.upgradeHeaders)) headers.push(`${name}: ${value}`);
    });
  }

  static async start(options: WsUpstreamOptions = {}): Promise<WsUpstream> {
    const server = createServer();
    const upstream = new WsUpstream(server, options);
    server.on('connection', (socket: Socket) => {
      upstream.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => upstream.sockets.delete(socket));
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => upstream.onUpgrade(req, socket, head));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => upstream.onRequest(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** http://127.0.0.1:<port><path>: what --upstream-url takes. */
  url(path = WS_PATH): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  answerFor(create: Record<string, unknown>, transport: Transport = 'websocket'): string {
    return typeof this.answer === 'string' ? this.answer : this.answer(create, transport);
  }

  waitForSessions(count: number, timeoutMs: number): Promise<boolean> {
    return until(() => this.sessions.length >= count, timeoutMs);
  }

  /** TCP connections to the mock currently open (any transport). */
  get openSockets(): number {
    return this.sockets.size;
  }

  /** Sessions not yet closed. */
  get openSessions(): WsSession[] {
    return this.sessions.filter((s) => s.closed === null);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const handshake: WsHandshake = {
      seq: this.handshakes.length + 1,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      at: performance.now(),
      status: 0,
    };
    this.handshakes.push(handshake);
    this.byRequest.set(req, handshake);
    const path = handshake.url.split('?')[0];
    if (path !== WS_PATH) {
      this.refuse(socket, handshake, {
        status: 404,
        body: JSON.stringify({
          error: { message: `no route ${path}`, type: 'invalid_request_error', code: 'not_found', param: null },
        }),
        headers: { 'content-type': 'application/json' },
      });
      return;
    }
    if (this.refusal !== null) {
      this.refuse(socket, handshake, this.refusal);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      handshake.status = 101;
      const session = new WsSession(handshake, ws);
      this.sessions.push(session);
      ws.on('error', () => {});
      ws.on('ping', (data: Buffer) => session.pings.push(data));
      ws.on('pong', (data: Buffer) => session.pongs.push(data));
      ws.on('close', (code: number, reason: Buffer) => {
        session.closed = { code, reason: reason.toString('utf8'), at: performance.now() };
      });
      ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
        const message: WsMessage = { data: bytes, isBinary, at: performance.now() };
        session.messages.push(message);
        const create = parseCreate(message);
        if (create !== null) session.creates.push(create);
        this.onMessage(session, message, this);
      });
      this.onSession?.(session);
    });
  }

  private refuse(socket: Duplex, handshake: WsHandshake, refusal: Refusal): void {
    handshake.status = refusal.status;
    const body = Buffer.from(refusal.body ?? '');
    const lines = [`HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? 'Unknown'}`];
    for (const [name, value] of Object.entries(refusal.headers ?? {})) lines.push(`${name}: ${value}`);
    lines.push(`Content-Length: ${body.length}`, 'Connection: close', '', '');
    socket.end(Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), body]));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    res.on('error', () => {});
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'POST' || path !== WS_PATH) {
        this.otherRequests.push({ method: req.method ?? '', url: req.url ?? '' });
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            error: {
              message: `no route ${req.method} ${path}`,
              type: 'invalid_request_error',
              code: 'not_found',
              param: null,
            },
          }),
        );
        return;
      }
      const body = Buffer.concat(chunks);
      this.httpTurns.push({
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
        at: performance.now(),
      });
      let create: Record<string, unknown> = {};
      try {
        const parsed: unknown = JSON.parse(body.toString('utf8'));
        if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed))
          create = parsed as Record<string, unknown>;
      } catch {
        // answered anyway
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': `req_http_${this.httpTurns.length}` });
      for (const event of eventsFor(
        { ...create, generate: true },
        `resp_http_${this.httpTurns.length}`,
        this.answerFor(create, 'http'),
      ))
        res.write(encodeSse(event));
      res.end();
    });
  }

  close(): Promise<void> {
    return closeUpstream(this.server, this.wss, this.sockets);
  }
}

/** Stop a mock upstream: every WebSocket and socket dropped, the server closed. */
export async function closeUpstream(server: Server, wss: WebSocketServer, sockets: Iterable<Socket>): Promise<void> {
  for (const client of wss.clients) client.terminate();
  for (const socket of sockets) socket.destroy();
  wss.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
