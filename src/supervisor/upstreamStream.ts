// What every stream the worker opens shares, seen from the supervisor. An HTTP
// call (upstream.ts) and a WebSocket session (upstreamSocket.ts) differ only in
// how they talk to the upstream; opening, relaying within credit, masking the
// key, failing, abandoning and being forgotten are written here once.
//
// A stream has two halves. The worker's (the request) closes on its end frame
// (REQUEST_END, WS_CLOSE) or RESET; ours (the response) once our end frame
// (RESPONSE_END, WS_CLOSE, RESET) or a whole answer has been sent. The stream
// is forgotten only when both are closed, so late frames stay accounted.

import { CredentialUnavailableError, errnoCode, messageOf, ProtocolError } from '../shared/errors.js';
import { CreditSender, type PausableSource } from '../shared/flowControl.js';
import { Msg, encodeHead, encodeKeyScan, type FrameWriter, type HeaderList } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { openAiError, type ProxyErrorResponse } from '../shared/openaiError.js';
import { KeyDetector, KeyScrubber } from './keyScrubber.js';
import type { ClientPolicy } from './clientPolicy.js';
import type { Upstream } from './upstream.js';

/** What every stream of one worker shares; the monitor makes it once. */
export interface StreamContext {
  readonly writer: FrameWriter;
  readonly upstream: Upstream;
  readonly log: Logger;
  /** Look for the key in requests (for dump redaction, only with --dump-dir). */
  readonly scanRequests: boolean;
  /** Budgets and usage record (--max-*, --usage-file...), or null. */
  readonly policy: ClientPolicy | null;
  /** Both halves are closed; forget the stream. */
  readonly onDone: (id: number) => void;
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT']);
const JSON_FIELDS = ['content-type', 'application/json'];

/**
 * 502 (504 for timeouts, 503 with no valid workload identity token) with an
 * OpenAI-shaped body; no header or key in it.
 */
function upstreamFailure(err: unknown): ProxyErrorResponse & { code: string } {
  const code = errnoCode(err) ?? 'UNKNOWN';
  const cause = messageOf(err);
  if (code === CredentialUnavailableError.CODE) {
    return { code, ...openAiError(503, cause, 'server_error', 'workload_identity_unavailable') };
  }
  if (TIMEOUT_CODES.has(code)) {
    const message = `The upstream did not answer in time (${code}).`;
    return { code, ...openAiError(504, message, 'upstream_error', 'upstream_timeout') };
  }
  const message = `The proxy could not reach the upstream (${code}: ${cause}).`;
  return { code, ...openAiError(502, message, 'upstream_error', 'upstream_unreachable') };
}

/** A complete answer to stream `id` in one go: it fits the first credit window. */
export function sendWholeAnswer(writer: FrameWriter, id: number, head: Buffer, body: Buffer): void {
  writer.send(Msg.RESPONSE_HEAD, id, head);
  if (body.length > 0) writer.send(Msg.RESPONSE_DATA, id, body);
  writer.send(Msg.RESPONSE_END, id);
}

/**
 * One stream's lifecycle. A subclass opens its upstream side in its
 * constructor, relays what the upstream sends through `sender` (masked with
 * `scrubber`), passes request bytes through `scanRequest`, and says how to
 * pause, resume and drop its upstream side.
 */
export abstract class UpstreamStream implements PausableSource {
  /** Masks the key in everything the upstream sends towards the worker. */
  protected readonly scrubber: KeyScrubber;
  /** Sends towards the worker within the credit it grants; pauses this stream's upstream side when short. */
  protected readonly sender: CreditSender;
  private readonly detector: KeyDetector | null;
  /** The log message when the upstream cannot be reached or does not answer. */
  protected abstract readonly failureMessage: string;
  #requestClosed = false;
  #responseClosed = false;
  #relaying = false;

  constructor(
    readonly id: number,
    clientHeaders: HeaderList,
    protected readonly ctx: StreamContext,
  ) {
    this.scrubber = new KeyScrubber(ctx.upstream.auth);
    this.detector = ctx.scanRequests ? new KeyDetector(ctx.upstream.auth, clientHeaders) : null;
    this.sender = new CreditSender(ctx.writer, id, this);
  }

  /** Stop reading from the upstream: the worker's credit is used up. */
  abstract pause(): void;
  abstract resume(): void;

  /** Drop the upstream side at once: `why` is null when the worker reset the stream. */
  protected abstract dropUpstream(why: string | null, responseWasOpen: boolean): void;

  /** WINDOW from the worker: credit for what `sender` sent. */
  onWindow(increment: number): void {
    // Credit can only follow data sent within credit, which follows a relayed head (not a whole answer).
    if (!this.#relaying) throw new ProtocolError(`WINDOW before any response data on stream ${this.id}`);
    this.sender.grant(increment);
  }

  /** RESET from the worker: the client is gone. */
  onReset(): void {
    this.end(null);
  }

  /** The worker is gone or the proxy stops; the upstream is told `why` where its protocol can say it. */
  abandon(why: string): void {
    this.end(why);
  }

  /** The worker's half has closed. */
  protected get requestClosed(): boolean {
    return this.#requestClosed;
  }

  /** Our half has closed: nothing more goes to the worker. */
  protected get responseClosed(): boolean {
    return this.#responseClosed;
  }

  /** The upstream's head has gone to the worker; its data follows through `sender`. */
  protected get relaying(): boolean {
    return this.#relaying;
  }

  /** Request bytes on their way upstream (only scanned, for dump redaction). */
  protected scanRequest(bytes: Buffer): void {
    this.detector?.pushBody(bytes);
  }

  /** The upstream's head, masked, to the worker; data follows through `sender`. */
  protected sendHead(head: Buffer): void {
    this.scrubber.maskInPlace(head);
    this.#relaying = true;
    this.ctx.writer.send(Msg.RESPONSE_HEAD, this.id, head);
  }

  /** A complete answer (our own, or a refusal) in one go. */
  protected answer(head: Buffer, body: Buffer): void {
    sendWholeAnswer(this.ctx.writer, this.id, head, body);
    this.closeResponse();
  }

  /** The upstream could not be reached or did not answer: the worker answers the client 502/504. */
  protected answerFailure(err: unknown): void {
    const failure = upstreamFailure(err);
    this.ctx.log.warn({ stream: this.id, code: failure.code, status: failure.status }, this.failureMessage);
    this.answer(encodeHead(JSON_FIELDS, failure.status), failure.body);
  }

  /** The worker's half closes; everything it sent was scanned, so it learns what to redact (dumps only). */
  protected closeRequest(): void {
    if (this.#requestClosed) return;
    this.#requestClosed = true;
    if (this.detector !== null) this.ctx.writer.send(Msg.REQUEST_SCANNED, this.id, encodeKeyScan(this.detector.result));
    if (this.#responseClosed) this.ctx.onDone(this.id);
  }

  protected closeResponse(): void {
    if (this.#responseClosed) return;
    this.#responseClosed = true;
    this.onResponseClosed();
    if (this.#requestClosed) this.ctx.onDone(this.id);
  }

  /** Our half has closed on its own (not abandoned); the worker's may still be open. */
  protected onResponseClosed(): void {}

  private end(why: string | null): void {
    const responseWasOpen = !this.#responseClosed;
    this.#responseClosed = true;
    this.dropUpstream(why, responseWasOpen);
    this.closeRequest();
    this.ctx.onDone(this.id);
  }
}
