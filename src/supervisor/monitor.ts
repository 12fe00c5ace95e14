// The supervisor's side of the IPC channel, after OpenSSH's monitor.c: one
// table of the requests the worker may make, one handler each. Anything else —
// a frame the decoder refuses, a stream id out of order, data beyond credit, a
// handler finding its payload invalid — is a protocol violation: the worker is
// treated as compromised and `onViolation` ends it.

import { MAX_OPEN_STREAMS } from '../shared/constants.js';
import { ProtocolError } from '../shared/errors.js';
import {
  FrameDecoder,
  Msg,
  decodeHead,
  decodeWindowIncrement,
  encodeHead,
  messageName,
  type FrameWriter,
  type MsgType,
} from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { refusalHeaders } from '../shared/refusals.js';
import type { ClientPolicy } from './clientPolicy.js';
import { UpstreamCall, sendWholeResponse, type Upstream } from './upstream.js';
import { UpstreamSocket } from './upstreamSocket.js';

export interface MonitorEvents {
  onReady(): void;
  onShutdownRequest(): void;
  onStartupFailed(reason: string): void;
  onDrained(): void;
  onViolation(reason: string): void;
}

type Handler = (streamId: number, payload: Buffer) => void;

export interface MonitorOptions {
  /** GET /shutdown is allowed (--http-shutdown). */
  readonly httpShutdown: boolean;
  /** Look for the key in requests (for dump redaction, only with --dump-dir). */
  readonly scanRequests: boolean;
  /** --websocket: the largest message; null when WebSocket mode is off. */
  readonly webSocketMaxMessageBytes: number | null;
  /** Client token, budgets, usage record; null when no such flag is given. */
  readonly policy?: ClientPolicy | null;
}

type Stream = UpstreamCall | UpstreamSocket;
const MESSAGE_FRAMES = [Msg.WS_TEXT_PART, Msg.WS_TEXT_END, Msg.WS_BINARY_PART, Msg.WS_BINARY_END] as const;

export class Monitor {
  private readonly calls = new Map<number, Stream>();
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
    [Msg.REQUEST_DATA, (id, payload) => this.call(id, UpstreamCall)?.onRequestData(payload)],
    [Msg.REQUEST_END, (id) => this.call(id, UpstreamCall)?.onRequestEnd()],
    [Msg.RESET, (id) => this.call(id)?.cancel()],
    [Msg.WINDOW, (id, payload) => this.call(id)?.onWindow(decodeWindowIncrement(payload))],
    [Msg.WS_OPEN, (id, payload) => this.onWebSocketOpen(id, payload)],
    ...MESSAGE_FRAMES.map((type): [number, Handler] => [type, (id, payload) => this.call(id, UpstreamSocket)?.onMessageFrame(type, payload)]),
    [Msg.WS_CLOSE, (id, payload) => this.call(id, UpstreamSocket)?.onWorkerClose(payload)],
    [Msg.MODEL_REFUSED, () => this.modelRefused()],
  ]);

  constructor(
    private readonly writer: FrameWriter,
    private readonly upstream: Upstream,
    private readonly options: MonitorOptions,
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

  /** Abort every upstream call; close every upstream socket "going away", saying `why`. */
  cancelAll(why: string): void {
    for (const call of [...this.calls.values()]) {
      if (call instanceof UpstreamSocket) call.goAway(why);
      else call.cancel();
    }
  }

  private dispatch(type: MsgType, streamId: number, payload: Buffer): void {
    const handler = this.handlers.get(type);
    if (handler === undefined) throw new ProtocolError(`${messageName(type)} is not a worker request`);
    handler(streamId, payload);
  }

  private violation(err: unknown): void {
    this.broken = true;
    this.decoder.fail();
    this.cancelAll('proxy worker replaced');
    const reason = err instanceof ProtocolError ? err.message : `handler failed: ${err instanceof Error ? err.message : String(err)}`;
    this.log.error({ reason }, 'IPC protocol violation by the worker');
    this.events.onViolation(reason);
  }

  /**
   * A live stream (of the given kind: an HTTP frame on a WebSocket stream is a
   * violation), null for one that already ended here (late frames are normal).
   */
  private call(streamId: number): Stream | null;
  private call<K extends Stream>(streamId: number, kind: abstract new (...args: never[]) => K): K | null;
  private call(streamId: number, kind?: abstract new (...args: never[]) => Stream): Stream | null {
    const call = this.calls.get(streamId);
    if (call !== undefined) {
      if (kind !== undefined && !(call instanceof kind)) throw new ProtocolError(`frame of the wrong kind for stream ${streamId}`);
      return call;
    }
    if (streamId <= this.highestStreamId) return null;
    throw new ProtocolError(`frame for stream ${streamId}, which was never opened`);
  }

  private onReady(): void {
    if (this.ready) throw new ProtocolError('READY sent twice');
    this.ready = true;
    this.events.onReady();
  }

  private onShutdown(): void {
    if (!this.options.httpShutdown) throw new ProtocolError('SHUTDOWN without --http-shutdown');
    this.events.onShutdownRequest();
  }

  private onOpen(streamId: number, payload: Buffer): void {
    const headers = this.newStream(streamId, payload);
    if (this.refused(streamId, headers, false)) return;
    this.calls.set(streamId, new UpstreamCall(streamId, headers, this.callContext()));
  }

  private onWebSocketOpen(streamId: number, payload: Buffer): void {
    const maxMessageBytes = this.options.webSocketMaxMessageBytes;
    if (maxMessageBytes === null) throw new ProtocolError('WS_OPEN without --websocket');
    const headers = this.newStream(streamId, payload);
    if (this.refused(streamId, headers, true)) return;
    this.calls.set(streamId, new UpstreamSocket(streamId, headers, { ...this.callContext(), maxMessageBytes }));
  }

  /** Checks shared by every kind of stream; returns the client's header list. */
  private newStream(streamId: number, payload: Buffer): string[] {
    if (streamId <= this.highestStreamId) throw new ProtocolError(`OPEN reuses stream id ${streamId}`);
    if (this.calls.size >= MAX_OPEN_STREAMS) throw new ProtocolError(`more than ${MAX_OPEN_STREAMS} open streams`);
    this.highestStreamId = streamId;
    return decodeHead(payload, false).headers;
  }

  /**
   * The client policy refuses the stream (token, budget, rate): answered here,
   * before anything goes upstream, and never registered (its late frames are ignored).
   */
  private refused(streamId: number, headers: string[], webSocket: boolean): boolean {
    const refusal = this.options.policy?.admitStream(streamId, headers, webSocket) ?? null;
    if (refusal === null) return false;
    sendWholeResponse(this.writer, streamId, encodeHead(refusalHeaders(refusal), refusal.status), refusal.body);
    return true;
  }

  private modelRefused(): void {
    const policy = this.options.policy ?? null;
    if (policy === null) throw new ProtocolError('MODEL_REFUSED without --allow-model');
    policy.modelRefused();
  }

  private callContext() {
    return {
      writer: this.writer,
      upstream: this.upstream,
      log: this.log,
      scanRequests: this.options.scanRequests,
      policy: this.options.policy ?? null,
      onDone: (id: number) => this.calls.delete(id),
    };
  }
}

/** Untrusted text from the worker, made safe for a log line or the terminal. */
function printable(payload: Buffer): string {
  return payload.toString('utf8').replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}
