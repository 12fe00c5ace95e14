// One forwarded request, seen from the worker: the client's request body goes
// to the supervisor as REQUEST_DATA within the supervisor's credit, and the
// upstream's response comes back as RESPONSE_* frames and is written to the
// client as it arrives (no holding back: each SSE event is written at once).
// The body is re-framed, so the upstream's framing headers are not copied.

const NOT_MIRRORED = new Set(['content-length']);

import type { IncomingMessage, ServerResponse } from 'node:http';
import { CreditReceiver, StreamSender } from '../shared/flowControl.js';
import { withoutHopByHop } from '../shared/hopByHop.js';
import { Msg, encodeHead, type FrameWriter, type HeaderList } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import type { ExchangeDump } from './dumpWriter.js';
import { drainThenClose } from './linger.js';
import { bodyTooLarge } from '../shared/openaiError.js';

export class ClientStream {
  private readonly toSupervisor: StreamSender;
  private readonly responseCredit: CreditReceiver;
  private closed = false;
  /** REQUEST_END or RESET has been sent: the supervisor expects nothing more. */
  private requestClosed = false;
  private resetSent = false;
  private finished = false;
  private undrained = 0;
  private status = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private readonly startedAt = process.hrtime.bigint();

  constructor(
    readonly id: number,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly writer: FrameWriter,
    private readonly log: Logger,
    private readonly maxBodyBytes: number,
    private readonly onClosed: (stream: ClientStream) => void,
    private readonly dump: ExchangeDump | null,
  ) {
    this.toSupervisor = new StreamSender(writer, Msg.REQUEST_DATA, id, req);
    this.responseCredit = new CreditReceiver(writer, id);
  }

  /** `body`: the whole request body, already read (--allow-model); otherwise it is relayed as it arrives. */
  start(body?: Buffer): void {
    const { req, res } = this;
    this.writer.send(Msg.OPEN, this.id, encodeHead(req.rawHeaders));
    const onData = (chunk: Buffer): void => {
      this.bytesIn += chunk.length;
      if (this.bytesIn > this.maxBodyBytes) return this.refuseBody();
      this.dump?.requestBody.add(chunk);
      this.toSupervisor.write(chunk);
    };
    const onEnd = (): void => {
      if (!this.requestClosed) this.toSupervisor.end(Msg.REQUEST_END, () => (this.requestClosed = true));
    };
    if (body === undefined) {
      req.on('data', onData);
      req.on('end', onEnd);
    } else {
      if (body.length > 0) onData(body);
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
    this.status = status;
    this.dump?.onResponseHead(status, headers);
    try {
      this.res.writeHead(status, withoutHopByHop(headers, NOT_MIRRORED));
    } catch (err) {
      // The code only: Node's message quotes the offending header value (a cookie, say).
      this.log.warn({ stream: this.id, code: (err as NodeJS.ErrnoException).code }, 'upstream response head rejected');
      this.abort('upstream response head rejected');
      return;
    }
    // Body bytes that came in the same IPC read take the head along (one
    // segment for a small response); otherwise it goes out at the end of this
    // turn, so a client waiting for SSE events sees the head at once.
    process.nextTick(() => {
      if (!this.closed && this.bytesOut === 0) this.res.flushHeaders();
    });
  }

  onResponseData(payload: Buffer): void {
    this.responseCredit.received(payload.length);
    this.bytesOut += payload.length;
    this.dump?.responseBody.add(payload);
    if (this.res.write(payload)) this.responseCredit.consumed(payload.length);
    else this.undrained += payload.length;
  }

  onResponseEnd(): void {
    this.closed = true;
    // An upstream may answer before reading the whole body: stop forwarding it.
    if (!this.requestClosed) this.sendReset();
    // Done only once the bytes are with the kernel (or the client has gone):
    // a graceful drain must not end the worker while a response is queued.
    this.res.once('close', () => this.finish());
    this.res.end(() => this.finish());
  }

  /** The supervisor abandoned the stream (upstream failed mid-body, or stopping). */
  onReset(): void {
    this.abort('upstream failed mid-response');
  }

  onWindow(increment: number): void {
    this.toSupervisor.grant(increment);
  }

  /** Cut the client's connection so a partial response cannot look complete. */
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
    this.status = status;
    this.res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
    this.res.end(body);
    drainThenClose(this.req);
    this.finish('request body too large');
  }

  /** Abandon the stream towards the supervisor (it aborts the upstream call) and stop reading the body. */
  private sendReset(): void {
    if (this.resetSent) return;
    this.resetSent = true;
    this.requestClosed = true;
    this.writer.send(Msg.RESET, this.id);
    // Bytes still held for lack of credit never reached the supervisor: not dumped.
    this.dump?.requestBody.dropTail(this.toSupervisor.heldBytes);
    this.req.removeAllListeners('data');
    this.req.resume();
  }

  private finish(outcome?: string): void {
    if (this.finished) return;
    this.finished = true;
    this.closed = true;
    this.onClosed(this);
    this.dump?.writeResponse(outcome);
    const durationMs = Number(process.hrtime.bigint() - this.startedAt) / 1e6;
    this.log.info(
      { stream: this.id, method: this.req.method, path: this.req.url, status: this.status, bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs, ...(outcome ? { outcome } : {}) },
      'request',
    );
  }
}
