// What an HTTP exchange (clientStream.ts) and a WebSocket session
// (clientSocket.ts) share, seen from the worker: an IPC stream opened with the
// client's head and answered with the upstream's, bytes relayed within credit
// both ways, abandoned with RESET by either side, and done once, with one log
// line. The two differ only where the protocols do.

import type { IncomingMessage } from 'node:http';
import {
  Msg,
  encodeHead,
  type FrameWriter,
  type HeaderList,
  type MsgType,
  type UsageFields,
} from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import type { ExchangeDump } from './dumpWriter.js';

/**
 * The one log line ("request") each client exchange ends with, whatever its
 * outcome: forwarded, refused by the worker, a WebSocket closed, or failed.
 */
export class ExchangeRecord {
  status = 0;
  bytesIn = 0;
  /** Body bytes (message bytes for a WebSocket) written to the client. */
  bytesOut = 0;
  /** WebSocket sessions only: the code the client's socket closed with (0 if it never did). */
  closeCode = 0;
  /** With a client policy: what the upstream said the answer used (the supervisor read it). */
  usage: UsageFields | null = null;
  private readonly startedAt = process.hrtime.bigint();

  constructor(
    private readonly req: IncomingMessage,
    private readonly websocket: boolean,
    /** Absent when the worker answered without opening a stream. */
    private readonly stream?: number,
  ) {}

  /** `outcome` says why an exchange did not end normally. */
  write(log: Logger, outcome?: string): void {
    const { req, websocket } = this;
    log.info(
      {
        stream: this.stream,
        method: req.method,
        path: req.url,
        status: this.status,
        websocket: websocket || undefined,
        bytesIn: this.bytesIn,
        bytesOut: this.bytesOut,
        closeCode: websocket ? this.closeCode : undefined,
        durationMs: Number(process.hrtime.bigint() - this.startedAt) / 1e6,
        outcome,
        ...this.usage,
      },
      'request',
    );
  }
}

/** One client exchange on an IPC stream; the frontend and the frame dispatch see only this. */
export abstract class ClientExchange<Dump extends ExchangeDump = ExchangeDump> {
  protected readonly record: ExchangeRecord;
  /** RESET has been sent: the supervisor expects nothing more on this stream. */
  protected resetSent = false;
  private finished = false;

  constructor(
    readonly id: number,
    protected readonly req: IncomingMessage,
    protected readonly writer: FrameWriter,
    protected readonly log: Logger,
    protected readonly dump: Dump | null,
    private readonly onClosed: (exchange: ClientExchange) => void,
    websocket: boolean,
  ) {
    this.record = new ExchangeRecord(req, websocket, id);
  }

  abstract onResponseHead(status: number, headers: HeaderList): void;
  abstract onResponseData(payload: Buffer): void;
  /** `usage`: with a client policy, what the answer used (for the log line). */
  abstract onResponseEnd(usage: UsageFields | null): void;
  /** The supervisor abandoned the stream (the upstream failed, or it is stopping). */
  abstract onReset(): void;
  abstract onWindow(increment: number): void;
  /** The worker is failing: cut the client so that nothing partial looks complete. */
  abstract abort(reason: string): void;

  /** The worker is draining. An HTTP exchange ends by itself; a WebSocket does not. */
  drain(): void {}

  /** Called now and then while WebSockets are served. */
  sweep(_now: number, _idleTimeoutMs: number): void {}

  /** Ask the supervisor to open the upstream's side with the client's head. */
  protected open(type: MsgType): void {
    this.writer.send(type, this.id, encodeHead(this.req.rawHeaders));
  }

  /** Abandon the stream towards the supervisor (it aborts the upstream call or socket), once. */
  protected sendReset(): void {
    if (this.resetSent) return;
    this.resetSent = true;
    this.writer.send(Msg.RESET, this.id);
  }

  protected finish(outcome?: string): void {
    if (this.finished) return;
    this.finished = true;
    this.onClosed(this);
    this.dump?.end(outcome);
    this.record.write(this.log, outcome);
  }
}
