// The supervisor's only outbound traffic: POST to the configured upstream URL
// with the key injected, one UpstreamCall per stream the worker opens. The
// worker chooses neither the method, the URL nor Authorization.
//
// A call has two halves. The request half closes on REQUEST_END or RESET from
// the worker; the response half when RESPONSE_END or RESET has been sent. The
// call is forgotten only when both are closed, so late frames stay accounted.

import type { Dispatcher } from 'undici';
// Pool's own file, not undici's index: the index also loads fetch, the web
// APIs, the mock and cache layers, ~9 MiB of RSS the supervisor never uses.
// undici has no "exports" map, so the path resolves; package-lock pins the
// version, and a moved file fails the import at startup (test/loadedModules
// also checks these are the public classes).
import Pool from 'undici/lib/dispatcher/pool.js';
import { CreditReceiver, StreamSender } from '../shared/flowControl.js';
import { Msg, encodeHead, encodeKeyScan, type FrameWriter, type HeaderList } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { openAiError, type ProxyErrorResponse } from '../shared/openaiError.js';
import { ProtocolError, errnoCode } from '../shared/errors.js';
import type { AuthHeader } from './authHeader.js';
import type { CallMeter, ClientPolicy } from './clientPolicy.js';
import { flattenHeaders, upstreamRequestHeaders } from './headerRules.js';
import { KeyDetector, KeyScrubber } from './keyScrubber.js';
import { KeySplicer } from './keySplice.js';
import { RequestBodyQueue } from './requestBody.js';

export class Upstream {
  readonly pool: InstanceType<typeof Pool>;
  /** Path and query of the upstream URL, kept as given (Azure's ?api-version=...). */
  readonly path: string;
  readonly host: string;
  /** The Authorization value undici (and ws) sees; the key is spliced in below it. */
  readonly authorizationPlaceholder: string;
  /** --websocket: the upstream URL with ws/wss for http/https, query kept. */
  readonly webSocketUrl: URL;
  readonly splicer: KeySplicer;

  constructor(
    url: URL,
    readonly auth: AuthHeader,
    readonly timeoutMs: number,
  ) {
    this.path = url.pathname + url.search;
    this.host = url.host;
    this.webSocketUrl = new URL(url);
    this.webSocketUrl.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const splicer = new KeySplicer(auth);
    this.splicer = splicer;
    this.authorizationPlaceholder = splicer.placeholder;
    // headersTimeout: to the first byte; bodyTimeout: between chunks, so a long
    // healthy stream is never cut, only one that goes silent.
    this.pool = new Pool(url.origin, {
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connect: splicer.connector({ timeout: Math.min(timeoutMs, 30_000) }),
    });
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
  /** Look for the key in requests (for dump redaction, only with --dump-dir). */
  readonly scanRequests: boolean;
  /** Budgets and usage record (--max-*, --usage-file...), or null. */
  readonly policy: ClientPolicy | null;
  /** Both halves are closed; forget the call. */
  readonly onDone: (id: number) => void;
}

const CANCELLED = new Error('request cancelled');

/** An answer of the supervisor's own (or a short refusal) in one go: it fits the first credit window. */
export function sendWholeResponse(writer: FrameWriter, id: number, head: Buffer, body: Buffer): void {
  writer.send(Msg.RESPONSE_HEAD, id, head);
  if (body.length > 0) writer.send(Msg.RESPONSE_DATA, id, body);
  writer.send(Msg.RESPONSE_END, id);
}

/** The request half has closed and everything the worker sent was scanned: tell it what to redact (dumps only). */
export function reportKeyScan(writer: FrameWriter, id: number, detector: KeyDetector | null): void {
  if (detector !== null) writer.send(Msg.REQUEST_SCANNED, id, encodeKeyScan(detector.result));
}

function hasContentLength(headers: HeaderList): boolean {
  for (let i = 0; i < headers.length; i += 2) if ((headers[i] as string).toLowerCase() === 'content-length') return true;
  return false;
}

/**
 * One upstream request, dispatched on undici's handler interface: response
 * chunks arrive as callbacks, straight from the parser, and back-pressure is
 * the controller's pause/resume (no Readable, promise or AbortSignal per call).
 */
export class UpstreamCall implements Dispatcher.DispatchHandler {
  private readonly requestBody: RequestBodyQueue;
  private readonly requestCredit: CreditReceiver;
  private readonly scrubber: KeyScrubber;
  private readonly detector: KeyDetector | null;
  private readonly meter: CallMeter | null;
  /** undici's handle on the request, once it is on a connection. */
  private controller: Dispatcher.DispatchController | null = null;
  private responseSender: StreamSender | null = null;
  private requestClosed = false;
  private responseClosed = false;

  constructor(
    readonly id: number,
    clientHeaders: HeaderList,
    private readonly ctx: CallContext,
  ) {
    this.scrubber = new KeyScrubber(ctx.upstream.auth);
    this.detector = ctx.scanRequests ? new KeyDetector(ctx.upstream.auth, clientHeaders) : null;
    this.meter = ctx.policy?.meterCall(id) ?? null;
    this.requestCredit = new CreditReceiver(ctx.writer, id);
    this.requestBody = new RequestBodyQueue((bytes, drained) => {
      if (!this.requestClosed || !this.responseClosed) this.requestCredit.consumed(bytes, drained);
    });
    const headers = upstreamRequestHeaders(clientHeaders, ctx.upstream.host);
    headers.push('authorization', ctx.upstream.authorizationPlaceholder);
    // Dispatched once the rest of this IPC read is handled: a small request's
    // body and end usually come in it, and a complete body sent with a
    // Content-Length leaves with the head in one write. Otherwise (a body
    // still arriving, or chunked, whose framing must stay as sent) it streams.
    queueMicrotask(() => {
      if (this.responseClosed) return; // cancelled meanwhile: nothing was sent
      const whole = hasContentLength(headers) ? this.requestBody.whole() : null;
      // undici accepts any async iterable as a body; its types list only Readable.
      const body = whole ?? (this.requestBody as unknown as Dispatcher.DispatchOptions['body']);
      ctx.upstream.pool.dispatch({ path: ctx.upstream.path, method: 'POST', headers, body }, this);
    });
  }

  onRequestData(payload: Buffer): void {
    this.requestCredit.received(payload.length);
    if (this.requestClosed) throw new ProtocolError(`REQUEST_DATA after REQUEST_END on stream ${this.id}`);
    this.detector?.pushBody(payload);
    if (this.responseClosed) return; // the upstream has answered; the rest is not needed
    this.requestBody.push(payload);
  }

  onRequestEnd(): void {
    if (this.requestClosed) throw new ProtocolError(`REQUEST_END twice on stream ${this.id}`);
    this.requestBody.end();
    this.closeRequest();
  }

  onWindow(increment: number): void {
    // Credit can only follow RESPONSE_DATA, which follows the head.
    if (this.responseSender === null) throw new ProtocolError(`WINDOW before any response data on stream ${this.id}`);
    this.responseSender.grant(increment);
  }

  /** RESET from the worker (client gone), or the supervisor is stopping. */
  cancel(): void {
    if (!this.responseClosed) {
      this.responseClosed = true;
      this.controller?.abort(CANCELLED); // not yet on a connection: onRequestStart aborts it
    }
    this.requestBody.destroy(CANCELLED);
    this.closeRequest();
    this.ctx.onDone(this.id);
  }

  // undici's handler interface (called by the pool).

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.responseClosed) controller.abort(CANCELLED);
  }

  onResponseStart(controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    if (status < 200) return; // informational (103 Early Hints): the final head follows
    if (this.responseClosed) return controller.abort(CANCELLED);
    let head: Buffer;
    try {
      head = encodeHead(flattenHeaders(headers), status);
    } catch (err) {
      this.onFailure(err);
      return controller.abort(CANCELLED);
    }
    this.scrubber.maskInPlace(head);
    this.meter?.head(status, String(headers['content-type'] ?? ''));
    // Paused while the worker's credit for this stream is used up.
    this.responseSender = new StreamSender(this.ctx.writer, Msg.RESPONSE_DATA, this.id, { pause: () => controller.pause(), resume: () => controller.resume() });
    this.ctx.writer.send(Msg.RESPONSE_HEAD, this.id, head);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.responseClosed || this.responseSender === null) return;
    this.meter?.data(chunk);
    const safe = this.scrubber.push(chunk);
    if (safe.length > 0) this.responseSender.write(safe);
  }

  onResponseEnd(): void {
    const sender = this.responseSender;
    if (this.responseClosed || sender === null) return;
    const rest = this.scrubber.flush();
    if (rest !== null) sender.write(rest);
    this.meter?.end();
    // Stay registered until the last byte has gone out within credit.
    sender.end(Msg.RESPONSE_END, () => this.closeResponse());
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.responseClosed) return;
    if (this.responseSender === null) return this.onFailure(err);
    this.ctx.log.warn({ stream: this.id, code: errnoCode(err) ?? 'UNKNOWN' }, 'upstream response failed mid-body');
    this.ctx.writer.send(Msg.RESET, this.id);
    this.closeResponse();
  }

  private onFailure(err: unknown): void {
    if (this.responseClosed) return;
    const failure = upstreamFailure(err);
    this.ctx.log.warn({ stream: this.id, code: failure.code, status: failure.status }, 'upstream request failed');
    sendWholeResponse(this.ctx.writer, this.id, encodeHead(['content-type', 'application/json'], failure.status), failure.body);
    this.closeResponse();
  }

  private closeRequest(): void {
    if (this.requestClosed) return;
    this.requestClosed = true;
    reportKeyScan(this.ctx.writer, this.id, this.detector);
    if (this.responseClosed) this.ctx.onDone(this.id);
  }

  private closeResponse(): void {
    if (this.responseClosed) return;
    this.responseClosed = true;
    if (!this.requestClosed) this.requestBody.destroy(CANCELLED);
    if (this.requestClosed) this.ctx.onDone(this.id);
  }
}
