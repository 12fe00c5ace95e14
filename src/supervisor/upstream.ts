// The supervisor's only outbound traffic: POST to the configured upstream URL
// with the key injected, one UpstreamCall per stream the worker opens. The
// worker chooses neither the method, the URL nor Authorization.

import { Readable } from 'node:stream';
import { Pool } from 'undici';
import { CreditReceiver, StreamSender } from '../shared/flowControl.js';
import { INITIAL_STREAM_WINDOW, Msg, encodeHead, type FrameWriter, type HeaderList } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { openAiError, type ProxyErrorResponse } from '../shared/openaiError.js';
import { ProtocolError, errnoCode } from '../shared/errors.js';
import type { AuthHeader } from './authHeader.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headerRules.js';

export class Upstream {
  readonly pool: Pool;
  /** Path and query of the upstream URL, kept as given (Azure's ?api-version=...). */
  readonly path: string;
  readonly host: string;

  constructor(
    url: URL,
    readonly auth: AuthHeader,
    headersTimeoutMs: number,
  ) {
    this.path = url.pathname + url.search;
    this.host = url.host;
    this.pool = new Pool(url.origin, { headersTimeout: headersTimeoutMs, connect: { timeout: 30_000 } });
  }

  close(): Promise<void> {
    return this.pool.destroy();
  }
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT']);

/** 502 (504 for timeouts) with an OpenAI-shaped body; no header or key in it. */
export function upstreamFailure(err: unknown): ProxyErrorResponse & { code: string } {
  const code = errnoCode(err) ?? 'UNKNOWN';
  const cause = err instanceof Error ? err.message : String(err);
  if (TIMEOUT_CODES.has(code)) {
    return { code, ...openAiError(504, `The upstream did not answer in time (${code}).`, 'upstream_error', 'upstream_timeout') };
  }
  return { code, ...openAiError(502, `The proxy could not reach the upstream (${code}: ${cause}).`, 'upstream_error', 'upstream_unreachable') };
}

export interface CallContext {
  readonly writer: FrameWriter;
  readonly upstream: Upstream;
  readonly log: Logger;
  /** The stream is over on the supervisor's side; forget it. */
  readonly onDone: (id: number) => void;
}

export class UpstreamCall {
  private readonly requestBody: Readable;
  private readonly requestCredit: CreditReceiver;
  private readonly abortController = new AbortController();
  private responseBody: Readable | null = null;
  private responseSender: StreamSender | null = null;
  private bytesPushed = 0;
  private bytesTaken = 0;
  private done = false;

  constructor(
    readonly id: number,
    clientHeaders: HeaderList,
    private readonly ctx: CallContext,
  ) {
    this.requestCredit = new CreditReceiver(ctx.writer, id);
    this.requestBody = new Readable({ highWaterMark: INITIAL_STREAM_WINDOW, read: () => this.returnRequestCredit() });
    this.requestBody.on('error', () => {}); // undici reports body failures through the request
    const headers = upstreamRequestHeaders(clientHeaders, ctx.upstream.host);
    // TODO(issue 8): splice the key in below undici instead of a string.
    headers.push('authorization', ctx.upstream.auth.read((value) => value.toString('latin1')));
    ctx.upstream.pool
      .request({ path: ctx.upstream.path, method: 'POST', headers, body: this.requestBody, signal: this.abortController.signal })
      .then(
        (response) => this.onResponse(response.statusCode, response.headers, response.body),
        (err: unknown) => this.onFailure(err),
      );
  }

  onRequestData(payload: Buffer): void {
    this.requestCredit.received(payload.length);
    this.bytesPushed += payload.length;
    this.requestBody.push(payload);
  }

  onRequestEnd(): void {
    this.requestBody.push(null);
  }

  onWindow(increment: number): void {
    // Credit can only follow RESPONSE_DATA, which follows the head.
    if (this.responseSender === null) throw new ProtocolError(`WINDOW before any response data on stream ${this.id}`);
    this.responseSender.grant(increment);
  }

  /** The client went away (RESET from the worker) or the supervisor is stopping. */
  cancel(): void {
    if (this.done) return;
    this.finish();
    this.abortController.abort();
    this.responseBody?.destroy();
    this.requestBody.destroy();
  }

  private returnRequestCredit(): void {
    if (this.done) return;
    const taken = this.bytesPushed - this.requestBody.readableLength;
    const delta = taken - this.bytesTaken;
    this.bytesTaken = taken;
    if (delta > 0) this.requestCredit.consumed(delta, true);
  }

  private onResponse(status: number, headers: Record<string, string | string[] | undefined>, body: Readable): void {
    if (this.done) {
      body.destroy();
      return;
    }
    let head: Buffer;
    try {
      head = encodeHead(clientResponseHeaders(headers), status);
    } catch (err) {
      body.destroy();
      return this.onFailure(err);
    }
    const { writer } = this.ctx;
    this.responseBody = body;
    this.responseSender = new StreamSender(writer, Msg.RESPONSE_DATA, this.id, body);
    writer.send(Msg.RESPONSE_HEAD, this.id, head);
    body.on('data', (chunk: Buffer) => this.responseSender?.write(chunk));
    body.on('end', () => {
      // Stay registered until the last byte has been sent within credit.
      if (!this.done) this.responseSender?.end(Msg.RESPONSE_END, () => this.finish());
    });
    body.on('error', (err) => {
      if (this.done) return;
      this.ctx.log.warn({ stream: this.id, code: errnoCode(err) ?? 'UNKNOWN' }, 'upstream response failed mid-body');
      writer.send(Msg.RESET, this.id);
      this.finish();
    });
  }

  private onFailure(err: unknown): void {
    if (this.done) return;
    const failure = upstreamFailure(err);
    this.ctx.log.warn({ stream: this.id, code: failure.code, status: failure.status, message: failure.body.toString() }, 'upstream request failed');
    const { writer } = this.ctx;
    writer.send(Msg.RESPONSE_HEAD, this.id, encodeHead(['content-type', 'application/json'], failure.status));
    writer.send(Msg.RESPONSE_DATA, this.id, failure.body);
    writer.send(Msg.RESPONSE_END, this.id);
    this.finish();
    this.requestBody.destroy();
  }

  private finish(): void {
    this.done = true;
    this.ctx.onDone(this.id);
  }
}
