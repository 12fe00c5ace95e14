// The supervisor's side of the IPC channel, after OpenSSH's monitor.c: one
// table of the requests the worker may make, one handler each. Anything else —
// a frame the decoder refuses, a stream id out of order, data beyond credit, a
// handler finding its payload invalid — is a protocol violation: the worker is
// treated as compromised and `onViolation` ends it.

import { MAX_OPEN_STREAMS } from '../shared/constants.js';
import { ProtocolError } from '../shared/errors.js';
import { FrameDecoder, Msg, decodeHead, decodeWindowIncrement, messageName, type FrameWriter, type MsgType } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { UpstreamCall, type Upstream } from './upstream.js';

export interface MonitorEvents {
  onReady(): void;
  onShutdownRequest(): void;
  onStartupFailed(reason: string): void;
  onDrained(): void;
  onViolation(reason: string): void;
}

type Handler = (streamId: number, payload: Buffer) => void;

export class Monitor {
  private readonly calls = new Map<number, UpstreamCall>();
  private readonly decoder = new FrameDecoder('worker', (type, streamId, payload) => this.dispatch(type, streamId, payload));
  private highestStreamId = 0;
  private ready = false;
  private broken = false;

  private readonly handlers: ReadonlyMap<number, Handler> = new Map<number, Handler>([
    [Msg.READY, () => this.onReady()],
    [Msg.SHUTDOWN, () => this.onShutdown()],
    [Msg.DRAINED, () => this.events.onDrained()],
    [Msg.STARTUP_FAILED, (_id, payload) => this.events.onStartupFailed(printable(payload))],
    [Msg.OPEN, (id, payload) => this.onOpen(id, payload)],
    [Msg.REQUEST_DATA, (id, payload) => this.call(id)?.onRequestData(payload)],
    [Msg.REQUEST_END, (id) => this.call(id)?.onRequestEnd()],
    [Msg.RESET, (id) => this.call(id)?.cancel()],
    [Msg.WINDOW, (id, payload) => this.call(id)?.onWindow(decodeWindowIncrement(payload))],
  ]);

  constructor(
    private readonly writer: FrameWriter,
    private readonly upstream: Upstream,
    private readonly httpShutdown: boolean,
    private readonly scanRequests: boolean,
    private readonly log: Logger,
    private readonly events: MonitorEvents,
  ) {}

  /** Bytes from the worker's end of the socketpair. Never throws. */
  receive(chunk: Buffer): void {
    if (this.broken) return;
    try {
      this.decoder.push(chunk);
    } catch (err) {
      this.violation(err);
    }
  }

  get openCalls(): number {
    return this.calls.size;
  }

  /** How many streams this worker has opened (ids are strictly increasing). */
  get streamsOpened(): number {
    return this.highestStreamId;
  }

  /** Abort every upstream call (the worker is gone or the proxy is stopping). */
  cancelAll(): void {
    for (const call of [...this.calls.values()]) call.cancel();
  }

  private dispatch(type: MsgType, streamId: number, payload: Buffer): void {
    const handler = this.handlers.get(type);
    if (handler === undefined) throw new ProtocolError(`${messageName(type)} is not a worker request`);
    handler(streamId, payload);
  }

  private violation(err: unknown): void {
    this.broken = true;
    this.decoder.fail();
    this.cancelAll();
    const reason = err instanceof ProtocolError ? err.message : `handler failed: ${err instanceof Error ? err.message : String(err)}`;
    this.log.error({ reason }, 'IPC protocol violation by the worker');
    this.events.onViolation(reason);
  }

  /** A live call, null for a stream that already ended here (late frames are normal). */
  private call(streamId: number): UpstreamCall | null {
    const call = this.calls.get(streamId);
    if (call !== undefined) return call;
    if (streamId <= this.highestStreamId) return null;
    throw new ProtocolError(`frame for stream ${streamId}, which was never opened`);
  }

  private onReady(): void {
    if (this.ready) throw new ProtocolError('READY sent twice');
    this.ready = true;
    this.events.onReady();
  }

  private onShutdown(): void {
    if (!this.httpShutdown) throw new ProtocolError('SHUTDOWN without --http-shutdown');
    this.events.onShutdownRequest();
  }

  private onOpen(streamId: number, payload: Buffer): void {
    if (streamId <= this.highestStreamId) throw new ProtocolError(`OPEN reuses stream id ${streamId}`);
    if (this.calls.size >= MAX_OPEN_STREAMS) throw new ProtocolError(`more than ${MAX_OPEN_STREAMS} open streams`);
    this.highestStreamId = streamId;
    const { headers } = decodeHead(payload, false);
    const call = new UpstreamCall(streamId, headers, {
      writer: this.writer,
      upstream: this.upstream,
      log: this.log,
      scanRequests: this.scanRequests,
      onDone: (id) => this.calls.delete(id),
    });
    this.calls.set(streamId, call);
  }
}

/** Untrusted text from the worker, made safe for a log line or the terminal. */
function printable(payload: Buffer): string {
  return payload.toString('utf8').replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}
