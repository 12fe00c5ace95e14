// One forwarded request, seen from the worker: the client's request body goes
// to the supervisor as REQUEST_DATA within the supervisor's credit, and the
// upstream's response comes back as RESPONSE_* frames and is written to the
// client as it arrives (no holding back: each SSE event is written at once).

import type { IncomingMessage, ServerResponse } from 'node:http';
import { CreditReceiver, StreamSender } from '../shared/flowControl.js';
import { Msg, encodeHead, type FrameWriter, type HeaderList } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';

export class ClientStream {
  private readonly toSupervisor: StreamSender;
  private readonly responseCredit: CreditReceiver;
  private closed = false;
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
    private readonly onClosed: (stream: ClientStream) => void,
  ) {
    this.toSupervisor = new StreamSender(writer, Msg.REQUEST_DATA, id, req);
    this.responseCredit = new CreditReceiver(writer, id);
  }

  start(): void {
    const { req, res } = this;
    this.writer.send(Msg.OPEN, this.id, encodeHead(req.rawHeaders));
    req.on('data', (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      this.toSupervisor.write(chunk);
    });
    req.on('end', () => this.toSupervisor.end(Msg.REQUEST_END));
    res.on('drain', () => {
      const n = this.undrained;
      this.undrained = 0;
      this.responseCredit.consumed(n, true);
    });
    // 'close' without a finished response: the client went away first.
    res.on('close', () => {
      if (this.closed) return;
      this.writer.send(Msg.RESET, this.id);
      this.finish('client closed');
    });
  }

  onResponseHead(status: number, headers: HeaderList): void {
    this.status = status;
    try {
      this.res.writeHead(status, headers);
      this.res.flushHeaders();
    } catch (err) {
      this.log.warn({ stream: this.id, err: (err as Error).message }, 'upstream response head rejected');
      this.abort();
    }
  }

  onResponseData(payload: Buffer): void {
    this.responseCredit.received(payload.length);
    this.bytesOut += payload.length;
    if (this.res.write(payload)) this.responseCredit.consumed(payload.length);
    else this.undrained += payload.length;
  }

  onResponseEnd(): void {
    this.closed = true;
    this.res.end();
    this.finish();
  }

  /** The supervisor abandoned the stream (upstream failed mid-body, or stopping). */
  onReset(): void {
    this.abort();
  }

  onWindow(increment: number): void {
    this.toSupervisor.grant(increment);
  }

  /** Cut the client's connection so a partial response cannot look complete. */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    this.res.destroy();
    this.finish('aborted');
  }

  private finish(outcome?: string): void {
    this.closed = true;
    this.onClosed(this);
    const durationMs = Number(process.hrtime.bigint() - this.startedAt) / 1e6;
    this.log.info(
      { stream: this.id, method: this.req.method, path: this.req.url, status: this.status, bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs, ...(outcome ? { outcome } : {}) },
      'request',
    );
  }
}
