// One forwarded request, seen from the worker: the client's request body goes
// to the supervisor as REQUEST_DATA within the supervisor's credit, and the
// upstream's response comes back as RESPONSE_* frames and is written to the
// client as it arrives (no holding back: each SSE event is written at once).
// The body is re-framed, so the upstream's framing headers are not copied.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { errnoCode } from '../shared/errors.js';
import { CreditReceiver, CreditSender } from '../shared/flowControl.js';
import { withoutHopByHop } from '../shared/hopByHop.js';
import { Msg, type FrameWriter, type HeaderList, type UsageFields } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { bodyTooLarge } from '../shared/openaiError.js';
import { answerOnResponse, errorFields } from './answer.js';
import type { HttpExchangeDump } from './dumpWriter.js';
import { ClientExchange } from './exchange.js';
import { drainThenClose } from './linger.js';
import { declaredLength, type ScreenedBody } from './modelPolicy.js';

const NOT_MIRRORED = new Set(['content-length']);

export class ClientStream extends ClientExchange<HttpExchangeDump> {
  private readonly toSupervisor: CreditSender;
  private readonly responseCredit: CreditReceiver;
  private closed = false;
  /** REQUEST_END or RESET has been sent: the supervisor expects no more of the body. */
  private requestClosed = false;
  private undrained = 0;
  /** A screened body's room in the screening budget, given back once it has gone to the supervisor. */
  private releaseBody: () => void = () => {};

  constructor(
    id: number,
    req: IncomingMessage,
    private readonly res: ServerResponse,
    writer: FrameWriter,
    log: Logger,
    private readonly maxBodyBytes: number,
    onClosed: (stream: ClientExchange) => void,
    dump: HttpExchangeDump | null,
  ) {
    super(id, req, writer, log, dump, onClosed, false);
    this.toSupervisor = new CreditSender(writer, id, req);
    this.responseCredit = new CreditReceiver(writer, id);
  }

  /** `screened`: the whole request body, already read (--allow-model); otherwise it is relayed as it arrives. */
  start(screened?: ScreenedBody): void {
    const { req, res, record } = this;
    this.open(Msg.OPEN);
    if (screened !== undefined) this.releaseBody = screened.release;
    // A body complete by its Content-Length ends at once, not on 'end' a turn
    // later: REQUEST_END then leaves in the same write as the last data.
    const declared = declaredLength(req);
    const onEnd = (): void => {
      if (this.requestClosed) return;
      this.toSupervisor.end(Msg.REQUEST_END, () => {
        this.requestClosed = true;
        this.releaseBody();
      });
    };
    const onData = (chunk: Buffer): void => {
      record.bytesIn += chunk.length;
      if (record.bytesIn > this.maxBodyBytes) return this.refuseBody();
      this.dump?.requestBody.add(chunk);
      this.toSupervisor.send(chunk, Msg.REQUEST_DATA);
      if (record.bytesIn === declared) onEnd();
    };
    if (screened === undefined) {
      req.on('data', onData);
      req.on('end', onEnd);
    } else {
      if (screened.body.length > 0) onData(screened.body);
      onEnd();
    }
    res.on('drain', () => {
      const n = this.undrained;
      this.undrained = 0;
      this.responseCredit.consumed(n, true);
    });
    // 'close' without a finished response: the client went away first.
    res.on('close', () => {
      if (this.closed) return;
      this.sendReset();
      this.finish('client disconnected before the response ended');
    });
  }

  onResponseHead(status: number, headers: HeaderList): void {
    this.record.status = status;
    this.dump?.onResponseHead(status, headers);
    try {
      this.res.writeHead(status, withoutHopByHop(headers, NOT_MIRRORED));
    } catch (err) {
      // The code only: Node's message quotes the offending header value (a cookie, say).
      this.log.warn({ stream: this.id, code: errnoCode(err) }, 'upstream response head rejected');
      this.abort('upstream response head rejected');
      return;
    }
    // Body bytes that came in the same IPC read take the head along (one
    // segment for a small response); otherwise it goes out at the end of this
    // turn, so a client waiting for SSE events sees the head at once.
    process.nextTick(() => {
      if (!this.closed && this.record.bytesOut === 0) this.res.flushHeaders();
    });
  }

  onResponseData(payload: Buffer): void {
    this.responseCredit.received(payload.length);
    this.record.bytesOut += payload.length;
    this.dump?.responseBody.add(payload);
    if (this.res.write(payload)) this.responseCredit.consumed(payload.length);
    else this.undrained += payload.length;
  }

  onResponseEnd(usage: UsageFields | null): void {
    this.record.usage = usage;
    this.closed = true;
    // An upstream may answer before reading the whole body: stop forwarding it.
    if (!this.requestClosed) this.sendReset();
    // Done only once the bytes are with the kernel (or the client has gone):
    // a graceful drain must not end the worker while a response is queued.
    this.res.once('close', () => this.finish());
    this.res.end(() => this.finish());
  }

  onReset(): void {
    this.abort('upstream failed mid-response');
  }

  onWindow(increment: number): void {
    this.toSupervisor.grant(increment);
  }

  abort(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.res.destroy();
    this.sendReset();
    this.finish(reason);
  }

  /** A chunked body grew past --max-body-bytes: abort upstream, answer 413 if still possible. */
  private refuseBody(): void {
    if (this.closed) return;
    if (this.res.headersSent) return this.abort('request body too large');
    this.sendReset();
    this.closed = true;
    const { status, body } = bodyTooLarge(this.maxBodyBytes);
    this.record.status = status;
    this.record.bytesOut = body.length;
    answerOnResponse(this.res, status, errorFields(status), body);
    drainThenClose(this.req);
    this.finish('request body too large');
  }

  /** Also stop reading the body: what the supervisor has not taken is dropped. */
  protected override sendReset(): void {
    if (this.resetSent) return;
    super.sendReset();
    this.requestClosed = true;
    // Bytes still held for lack of credit never reached the supervisor: not dumped.
    this.dump?.requestBody.dropTail(this.toSupervisor.heldBytes);
    this.req.removeAllListeners('data');
    this.req.resume();
  }

  protected override finish(outcome?: string): void {
    this.closed = true;
    this.releaseBody();
    super.finish(outcome);
  }
}
