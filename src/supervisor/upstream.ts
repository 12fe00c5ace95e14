// The supervisor's only outbound traffic: POST to the configured upstream URL
// with the key injected, one UpstreamCall per stream the worker opens. The
// worker chooses neither the method, the URL nor Authorization.

import type { Dispatcher } from 'undici';
// Pool's own file, not undici's index, which also loads fetch, the web APIs and
// the mock and cache layers the supervisor never uses. undici has no "exports"
// map, so the path resolves; package-lock pins the version, and a moved file
// fails the import at startup (test/loadedModules also checks these are the
// public classes).
import Pool from 'undici/lib/dispatcher/pool.js';
import { ProtocolError, errnoCode } from '../shared/errors.js';
import { CreditReceiver } from '../shared/flowControl.js';
import { Msg, encodeHead, encodeUsage, type HeaderList } from '../shared/ipcProtocol.js';
import type { CallMeter } from './clientPolicy.js';
import type { Credential } from './credential/credential.js';
import { flattenHeaders, upstreamRequestHeaders } from './headerRules.js';
import { KeySplicer } from './keySplice.js';
import { RequestBodyQueue } from './requestBody.js';
import { UpstreamStream, type StreamContext } from './upstreamStream.js';

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
    readonly auth: Credential,
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
    // healthy stream is never cut, only one that goes silent. keepAliveTimeout:
    // how long an idle connection is kept when the upstream does not say (as
    // the original's client does; undici's own 4 s is shorter than an agent's
    // pause between turns, and each new connection is a TLS handshake). A
    // request cancelled before its head can leave a fresh connection idle here
    // until then (undici #5845); the next request reuses it.
    this.pool = new Pool(url.origin, {
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      keepAliveTimeout: 90_000,
      connect: splicer.connector({ timeout: Math.min(timeoutMs, 30_000) }),
    });
  }

  close(): Promise<void> {
    return this.pool.destroy();
  }
}

const CANCELLED = new Error('request cancelled');

/** The request's Content-Length, or null (chunked: the body ends with REQUEST_END). */
function declaredLength(headers: HeaderList): number | null {
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== 'content-length') continue;
    const value = headers[i + 1] as string;
    return /^\d{1,15}$/.test(value) ? Number(value) : null;
  }
  return null;
}

/**
 * One upstream request, dispatched on undici's handler interface: response
 * chunks arrive as callbacks, straight from the parser, and back-pressure is
 * the controller's pause/resume (no Readable, promise or AbortSignal per call).
 */
export class UpstreamCall extends UpstreamStream implements Dispatcher.DispatchHandler {
  protected readonly failureMessage = 'upstream request failed';
  private readonly requestBody: RequestBodyQueue;
  private readonly requestCredit: CreditReceiver;
  /** undici's handle on the request, once it is on a connection. */
  private controller: Dispatcher.DispatchController | null = null;
  /** Reads the upstream's answer for its usage (budgets, --usage-file), or null. */
  private readonly meter: CallMeter | null;
  /** Body bytes still to come by the Content-Length; null when chunked. */
  private bodyLeft: number | null;

  constructor(id: number, clientHeaders: HeaderList, ctx: StreamContext) {
    super(id, clientHeaders, ctx);
    this.meter = ctx.policy?.meterCall(id) ?? null;
    this.requestCredit = new CreditReceiver(ctx.writer, id);
    this.requestBody = new RequestBodyQueue((bytes, drained) => {
      if (!this.requestClosed || !this.responseClosed) this.requestCredit.consumed(bytes, drained);
    });
    const headers = upstreamRequestHeaders(clientHeaders, ctx.upstream.host);
    headers.push('authorization', ctx.upstream.authorizationPlaceholder);
    this.bodyLeft = declaredLength(headers);
    if (this.bodyLeft === 0) this.requestBody.end();
    // Dispatched at the end of this event-loop turn. By then the rest of this
    // IPC read is handled: a small request's body usually comes in it, and a
    // body complete by its Content-Length leaves with the head in one write
    // (otherwise, a body still arriving or chunked, it streams). And undici
    // frees a connection only in the turn's setImmediate phase after its
    // answer ended: dispatched any earlier, a request that follows its
    // client's previous answer finds that connection still busy and opens
    // another.
    setImmediate(() => {
      if (this.responseClosed) return; // cancelled meanwhile: nothing was sent
      const whole = this.bodyLeft === 0 ? this.requestBody.whole() : null;
      // undici accepts any async iterable as a body; its types list only Readable.
      const body = whole ?? (this.requestBody as unknown as Dispatcher.DispatchOptions['body']);
      ctx.upstream.pool.dispatch({ path: ctx.upstream.path, method: 'POST', headers, body }, this);
    });
  }

  onRequestData(payload: Buffer): void {
    this.requestCredit.received(payload.length);
    if (this.requestClosed) throw new ProtocolError(`REQUEST_DATA after REQUEST_END on stream ${this.id}`);
    if (this.bodyLeft !== null && (this.bodyLeft -= payload.length) < 0) {
      throw new ProtocolError(`REQUEST_DATA beyond Content-Length on stream ${this.id}`);
    }
    this.scanRequest(payload);
    if (this.responseClosed) return; // the upstream has answered; the rest is not needed
    this.requestBody.push(payload);
    // Complete at its Content-Length, though REQUEST_END may come in a later read: undici
    // drops the connection when a response ends while it is still writing the request.
    if (this.bodyLeft === 0) this.requestBody.end();
  }

  onRequestEnd(): void {
    if (this.requestClosed) throw new ProtocolError(`REQUEST_END twice on stream ${this.id}`);
    this.requestBody.end();
    this.closeRequest();
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  protected dropUpstream(_why: string | null, responseWasOpen: boolean): void {
    if (responseWasOpen) this.controller?.abort(CANCELLED); // not yet on a connection: onRequestStart aborts it
    this.requestBody.destroy(CANCELLED);
  }

  protected override onResponseClosed(): void {
    if (!this.requestClosed) this.requestBody.destroy(CANCELLED);
  }

  // undici's handler interface (called by the pool).

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.responseClosed) controller.abort(CANCELLED);
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (status < 200) return; // informational (103 Early Hints): the final head follows
    if (this.responseClosed) return controller.abort(CANCELLED);
    let head: Buffer;
    try {
      head = encodeHead(flattenHeaders(headers), status);
    } catch (err) {
      this.answerFailure(err);
      return controller.abort(CANCELLED);
    }
    this.meter?.head(status, String(headers['content-type'] ?? ''));
    this.sendHead(head);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.responseClosed || !this.relaying) return;
    // The meter reads what the worker gets, the key masked: a usage field
    // could otherwise carry it into a log line or the usage file.
    const safe = this.scrubber.push(chunk);
    if (safe.length === 0) return;
    this.meter?.data(safe);
    this.sender.send(safe, Msg.RESPONSE_DATA);
  }

  onResponseEnd(): void {
    if (this.responseClosed || !this.relaying) return;
    const rest = this.scrubber.flush();
    if (rest !== null) {
      this.meter?.data(rest);
      this.sender.send(rest, Msg.RESPONSE_DATA);
    }
    const usage = this.meter?.end() ?? null;
    // Stay registered until the last byte has gone out within credit.
    this.sender.end(Msg.RESPONSE_END, () => this.closeResponse(), usage === null ? undefined : encodeUsage(usage));
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.responseClosed) return;
    if (!this.relaying) return this.answerFailure(err);
    this.ctx.log.warn({ stream: this.id, code: errnoCode(err) ?? 'UNKNOWN' }, 'upstream response failed mid-body');
    this.ctx.writer.send(Msg.RESET, this.id);
    this.closeResponse();
  }
}
