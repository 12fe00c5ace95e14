// A WebSocket client for tests (the `ws` library, as a real client would use
// it), recording every message and how the socket ended, with
// performance.now() timestamps; and a raw upgrade over TCP for request
// targets and header sets no well-behaved client would send. Every wait is
// bounded.

import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { RawConnection, type RawResponse } from './rawHttp.js';
import { until, type WsClose, type WsMessage } from './wsUpstream.js';

export interface OpenOptions {
  /** Request-target; default /v1/responses. */
  readonly path?: string;
  readonly headers?: Record<string, string>;
  readonly timeoutMs?: number;
  /** Offer permessage-deflate (ws's default: true). */
  readonly perMessageDeflate?: boolean;
  readonly maxPayload?: number;
  /** Subprotocols to offer (Sec-WebSocket-Protocol). */
  readonly protocols?: readonly string[];
  /** Accept invalid UTF-8 in text messages (to see what a server really sent). */
  readonly skipUTF8Validation?: boolean;
}

/** What the server answered instead of 101. */
export interface Refused {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export class WsRefusedError extends Error {
  constructor(readonly refused: Refused) {
    super(`upgrade refused: ${refused.status} ${JSON.stringify(refused.body)}`);
  }
}

type Outcome =
  { kind: 'open'; client: WsClient } | { kind: 'refused'; refused: Refused } | { kind: 'error'; error: Error };

export class WsClient {
  readonly messages: WsMessage[] = [];
  readonly pongs: Buffer[] = [];
  closed: WsClose | null = null;
  errors: Error[] = [];

  /** Use WsClient.open (the socket must be open). */
  constructor(
    readonly ws: WebSocket,
    /** Headers of the 101 response. */
    readonly upgradeHeaders: IncomingHttpHeaders,
  ) {
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      this.messages.push({ data: bytes, isBinary, at: performance.now() });
    });
    ws.on('pong', (data: Buffer) => this.pongs.push(data));
    ws.on('close', (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString('utf8'), at: performance.now() };
    });
  }

  /** Open ws://127.0.0.1:port<path>; rejects with WsRefusedError on a non-101 answer. */
  static async open(port: number, options: OpenOptions = {}): Promise<WsClient> {
    const outcome = await attempt(port, options);
    if (outcome.kind === 'open') return outcome.client;
    if (outcome.kind === 'refused') throw new WsRefusedError(outcome.refused);
    throw outcome.error;
  }

  /** Attempt an upgrade that must be refused; rejects if it opens. */
  static async refused(port: number, options: OpenOptions = {}): Promise<Refused> {
    const outcome = await attempt(port, options);
    if (outcome.kind === 'refused') return outcome.refused;
    if (outcome.kind === 'open') {
      outcome.client.terminate();
      throw new Error('the upgrade was accepted (101)');
    }
    throw outcome.error;
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(data: string | Buffer, isBinary = typeof data !== 'string'): void {
    this.ws.send(data, { binary: isBinary });
  }

  sendJson(value: unknown): void {
    this.ws.send(JSON.stringify(value), { binary: false });
  }

  /** Resolves once the socket has handed everything queued to the kernel. */
  async drained(timeoutMs = 5_000): Promise<boolean> {
    return until(() => this.ws.bufferedAmount === 0, timeoutMs);
  }

  waitForMessages(count: number, timeoutMs: number): Promise<boolean> {
    return until(() => this.messages.length >= count, timeoutMs);
  }

  /** Waits for the next `count` messages after the first `from`; rejects naming what arrived. */
  async next(from: number, count: number, timeoutMs: number): Promise<WsMessage[]> {
    if (
      !(await until(() => this.messages.length >= from + count || this.closed !== null, timeoutMs)) ||
      this.messages.length < from + count
    ) {
      throw new Error(
        `expected ${count} message(s) after #${from} within ${timeoutMs} ms; got ${this.messages.length - from}${this.closed ? `, then close ${this.closed.code} ${JSON.stringify(this.closed.reason)}` : ''}`,
      );
    }
    return this.messages.slice(from, from + count);
  }

  /** Messages parsed as JSON (text only). */
  json(from = 0): Array<Record<string, unknown>> {
    return this.messages
      .slice(from)
      .filter((m) => !m.isBinary)
      .map((m) => JSON.parse(m.data.toString('utf8')) as Record<string, unknown>);
  }

  /** Send a response.create and wait until the messages up to its response.completed arrived; returns them parsed. */
  async turn(create: Record<string, unknown>, timeoutMs = 5_000): Promise<Array<Record<string, unknown>>> {
    const from = this.messages.length;
    this.sendJson({ type: 'response.create', ...create });
    const done = (): boolean => this.json(from).some((e) => e.type === 'response.completed' || e.type === 'error');
    if (!(await until(() => done() || this.closed !== null, timeoutMs)) || !done()) {
      throw new Error(
        `no response.completed within ${timeoutMs} ms; got ${JSON.stringify(this.json(from).map((e) => e.type))}${this.closed ? `, then close ${this.closed.code}` : ''}`,
      );
    }
    return this.json(from);
  }

  /** The close as this side saw it, or null if still open after timeoutMs. */
  async waitClosed(timeoutMs: number): Promise<WsClose | null> {
    await until(() => this.closed !== null, timeoutMs);
    return this.closed;
  }

  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }

  /** Drop the TCP connection without a close frame (what Codex does at exit). */
  terminate(): void {
    this.ws.terminate();
  }
}

function attempt(port: number, options: OpenOptions): Promise<Outcome> {
  const timeoutMs = options.timeoutMs ?? 5_000;
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const ws = new WebSocket(
      `ws://127.0.0.1:${port}${options.path ?? '/v1/responses'}`,
      [...(options.protocols ?? [])],
      {
        headers: options.headers ?? {},
        perMessageDeflate: options.perMessageDeflate ?? true,
        maxPayload: options.maxPayload ?? 256 * 1024 * 1024,
        handshakeTimeout: timeoutMs,
        skipUTF8Validation: options.skipUTF8Validation ?? false,
      },
    );
    const timer = setTimeout(() => {
      ws.terminate();
      settle({ kind: 'error', error: new Error(`no answer to the upgrade within ${timeoutMs} ms`) });
    }, timeoutMs + 500);
    let upgradeHeaders: IncomingHttpHeaders = {};
    ws.on('error', (error: Error) => settle({ kind: 'error', error }));
    ws.on('upgrade', (res) => (upgradeHeaders = res.headers));
    ws.on('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const finish = (): void => {
        settle({
          kind: 'refused',
          refused: { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') },
        });
        req.destroy();
      };
      res.on('end', finish);
      res.on('error', finish);
      res.on('aborted', finish);
      res.on('close', finish);
    });
    ws.on('open', () => settle({ kind: 'open', client: new WsClient(ws, upgradeHeaders) }));
  });
}

/** The 16-byte base64 key RFC 6455 uses in its example, and its accept value. */
export const SAMPLE_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
export const SAMPLE_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';

/**
 * An upgrade request written byte for byte: the target as given, the header
 * lines as given (a complete valid upgrade unless `bare`), then the head of
 * the answer. The connection is returned open (a 101 leaves a WebSocket on it).
 */
export async function rawUpgrade(
  port: number,
  target: string,
  extraLines: readonly string[] = [],
  options: { bare?: boolean; timeoutMs?: number } = {},
): Promise<{ response: RawResponse; conn: RawConnection }> {
  const conn = await RawConnection.open(port);
  const lines = [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`];
  if (options.bare !== true)
    lines.push(
      'Connection: Upgrade',
      'Upgrade: websocket',
      'Sec-WebSocket-Version: 13',
      `Sec-WebSocket-Key: ${SAMPLE_KEY}`,
    );
  lines.push(...extraLines);
  conn.write(`${lines.join('\r\n')}\r\n\r\n`);
  try {
    return { response: await conn.readResponse(options.timeoutMs ?? 5_000), conn };
  } catch (err) {
    conn.close();
    throw err;
  }
}
