// The supervisor's side of the IPC channel, after OpenSSH's monitor.c: one
// handler for each message the protocol table (ipcProtocol.ts) lets the worker
// send; the dispatcher checks when each is permitted. Anything else — a frame
// the table does not permit, a stream id out of order, data beyond credit, a
// handler finding its payload invalid — is a protocol violation: the worker is
// treated as compromised and `onViolation` ends it.

import { MAX_OPEN_STREAMS } from '../shared/constants.js';
import { messageOf, ProtocolError } from '../shared/errors.js';
import { IpcDispatcher, type MessageHandlers } from '../shared/ipcDispatch.js';
import { Msg, decodeHead, decodeWindowIncrement, encodeHead, type FrameWriter } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { UpstreamCall, type Upstream } from './upstream.js';
import { UpstreamSocket } from './upstreamSocket.js';
import { sendWholeAnswer, type StreamContext, type UpstreamStream } from './upstreamStream.js';
import { refusalHeaders } from '../shared/refusals.js';
import type { ClientPolicy } from './clientPolicy.js';
import type { DumpReceiver } from './dumpFiles.js';

export interface MonitorEvents {
  onReady(): void;
  onShutdownRequest(): void;
  onStartupFailed(reason: string): void;
  onDrained(): void;
  onViolation(reason: string): void;
}

export interface MonitorOptions {
  /** GET /shutdown is allowed (--http-shutdown). */
  readonly httpShutdown: boolean;
  /** --dump-dir: writes the dump files the worker hands over (and requests are scanned for the key); else null. */
  readonly dumps: DumpReceiver | null;
  /** --websocket: the largest message; null when WebSocket mode is off. */
  readonly webSocketMaxMessageBytes: number | null;
  /** --allow-model: the worker may report refusals (MODEL_REFUSED). */
  readonly allowModel: boolean;
  /** Client token, budgets, usage record; null when no such flag is given. */
  readonly policy: ClientPolicy | null;
}

export class Monitor {
  private readonly streams = new Map<number, UpstreamStream>();
  private readonly streamContext: StreamContext;
  private readonly channel: IpcDispatcher<'worker'>;
  private highestStreamId = 0;
  private broken = false;

  /** What the worker may ask for; when it may is the table's business, not the handlers'. */
  private readonly handlers: MessageHandlers<'worker'> = {
    READY: () => this.events.onReady(),
    SHUTDOWN: () => this.events.onShutdownRequest(),
    STARTUP_FAILED: (_id, payload) => this.events.onStartupFailed(printable(payload)),
    DRAINED: () => this.events.onDrained(),
    OPEN: (id, payload) => this.onOpen(id, payload),
    REQUEST_DATA: (id, payload) => this.stream(id, UpstreamCall)?.onRequestData(payload),
    REQUEST_END: (id) => this.stream(id, UpstreamCall)?.onRequestEnd(),
    RESET: (id) => this.stream(id)?.onReset(),
    WINDOW: (id, payload) => this.stream(id)?.onWindow(decodeWindowIncrement(payload)),
    WS_OPEN: (id, payload) => this.onWebSocketOpen(id, payload),
    WS_TEXT_PART: (id, payload) => this.stream(id, UpstreamSocket)?.onMessageFrame(Msg.WS_TEXT_PART, payload),
    WS_TEXT_END: (id, payload) => this.stream(id, UpstreamSocket)?.onMessageFrame(Msg.WS_TEXT_END, payload),
    WS_BINARY_PART: (id, payload) => this.stream(id, UpstreamSocket)?.onMessageFrame(Msg.WS_BINARY_PART, payload),
    WS_BINARY_END: (id, payload) => this.stream(id, UpstreamSocket)?.onMessageFrame(Msg.WS_BINARY_END, payload),
    WS_CLOSE: (id, payload) => this.stream(id, UpstreamSocket)?.onWorkerClose(payload),
    // The table permits it only with --allow-model, which makes a policy.
    MODEL_REFUSED: () => this.options.policy?.modelRefused(),
    // The table permits these only with --dump-dir, which makes a receiver.
    DUMP_FILE: (id, payload) => this.options.dumps?.onFile(id, payload, this.highestStreamId),
    DUMP_DATA: (id, payload) => this.options.dumps?.onData(id, payload),
    DUMP_END: (id) => this.options.dumps?.onEnd(id),
  };

  constructor(
    writer: FrameWriter,
    upstream: Upstream,
    private readonly options: MonitorOptions,
    private readonly log: Logger,
    private readonly events: MonitorEvents,
  ) {
    const onDone = (id: number): boolean => this.streams.delete(id);
    const policy = options.policy;
    const scanRequests = options.dumps !== null;
    this.streamContext = { writer, upstream, log, scanRequests, policy, onDone };
    this.channel = new IpcDispatcher('worker', this.handlers, {
      httpShutdown: options.httpShutdown,
      webSocket: options.webSocketMaxMessageBytes !== null,
      dumps: scanRequests,
      allowModel: options.allowModel,
    });
  }

  /** Bytes from the worker's end of the socketpair. Never throws. */
  receive(chunk: Buffer): void {
    if (this.broken) return;
    try {
      this.channel.push(chunk);
    } catch (err) {
      this.violation(err);
    }
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** How many streams this worker has opened (ids are strictly increasing). */
  get streamsOpened(): number {
    return this.highestStreamId;
  }

  /** End every stream (the worker is gone or the proxy stops), telling the upstream `why` where it can be told. */
  abandonAll(why: string): void {
    for (const stream of [...this.streams.values()]) stream.abandon(why);
    this.options.dumps?.abandon();
  }

  /** Tell the worker to finish its open streams and exit (DRAINED may follow). */
  drain(): void {
    this.channel.sent(Msg.DRAIN);
    this.streamContext.writer.send(Msg.DRAIN, 0);
  }

  private violation(err: unknown): void {
    this.broken = true;
    this.channel.fail();
    this.abandonAll('proxy worker replaced');
    const reason = err instanceof ProtocolError ? err.message : `handler failed: ${messageOf(err)}`;
    this.log.error({ reason }, 'IPC protocol violation by the worker');
    this.events.onViolation(reason);
  }

  /**
   * A live stream (of the given kind: an HTTP frame on a WebSocket stream is a
   * violation), null for one that already ended here (late frames are normal).
   */
  private stream(streamId: number): UpstreamStream | null;
  private stream<K extends UpstreamStream>(streamId: number, kind: abstract new (...args: never[]) => K): K | null;
  private stream(streamId: number, kind?: abstract new (...args: never[]) => UpstreamStream): UpstreamStream | null {
    const stream = this.streams.get(streamId);
    if (stream !== undefined) {
      if (kind !== undefined && !(stream instanceof kind)) {
        throw new ProtocolError(`frame of the wrong kind for stream ${streamId}`);
      }
      return stream;
    }
    if (streamId <= this.highestStreamId) return null;
    throw new ProtocolError(`frame for stream ${streamId}, which was never opened`);
  }

  private onOpen(streamId: number, payload: Buffer): void {
    const headers = this.admittedStream(streamId, payload, false);
    if (headers === null) return;
    this.streams.set(streamId, new UpstreamCall(streamId, headers, this.streamContext));
  }

  private onWebSocketOpen(streamId: number, payload: Buffer): void {
    // The table permits WS_OPEN only with --websocket, so the limit is set.
    const maxMessageBytes = this.options.webSocketMaxMessageBytes as number;
    const headers = this.admittedStream(streamId, payload, true);
    if (headers === null) return;
    this.streams.set(streamId, new UpstreamSocket(streamId, headers, this.streamContext, maxMessageBytes));
  }

  /**
   * Checks shared by every kind of stream, then the client policy (token,
   * budget, rate): the client's header list, or null when the stream was
   * refused here, answered before anything went upstream and never registered
   * (its late frames are ignored). The client's Authorization is read only as
   * bytes, where it arrived, and zeroed: it never becomes a string here.
   */
  private admittedStream(streamId: number, payload: Buffer, webSocket: boolean): string[] | null {
    if (streamId <= this.highestStreamId) throw new ProtocolError(`OPEN reuses stream id ${streamId}`);
    if (this.streams.size >= MAX_OPEN_STREAMS) throw new ProtocolError(`more than ${MAX_OPEN_STREAMS} open streams`);
    this.highestStreamId = streamId;
    const { headers, withheldValues: authorizations } = decodeHead(payload, false, 'authorization');
    const refusal = this.options.policy?.admitStream(streamId, authorizations, webSocket) ?? null;
    for (const value of authorizations) value.fill(0);
    if (refusal === null) return headers;
    const head = encodeHead(refusalHeaders(refusal), refusal.status);
    sendWholeAnswer(this.streamContext.writer, streamId, head, refusal.body);
    return null;
  }
}

/** Untrusted text from the worker, made safe for a log line or the terminal. */
function printable(payload: Buffer): string {
  return payload
    .toString('utf8')
    .replace(/[^\x20-\x7e]/g, '?')
    .slice(0, 300);
}
