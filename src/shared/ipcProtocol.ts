// The supervisor <-> worker protocol, defined once for both sides.
//
// Transport: a dedicated socketpair (the worker's fd 4). Every message is a
// frame with a fixed 9-byte header:
//
//   u32 payload length | u8 message type | u32 stream id | payload
//
// Stream id 0 is the connection itself; every other id is one proxied request,
// chosen by the worker, strictly increasing. Bodies travel as raw DATA payloads
// (never JSON), bounded by per-stream credit windows (see flowControl.ts).
//
// Like OpenSSH's monitor, the table below is the whole contract: a message
// that is not in it, comes from the wrong side, has a payload outside its
// limits or arrives when its conditions do not hold is a protocol violation.
// The decoder checks the header; the dispatcher (ipcDispatch.ts) checks the
// conditions before any handler runs, so handlers never check them. The
// supervisor ends a worker that breaks the protocol; the worker exits if the
// supervisor does.

import { ProtocolError } from './errors.js';

export const FRAME_HEADER_BYTES = 9;
/** Largest body slice in one DATA frame; bigger chunks are split (no copy). */
export const MAX_DATA_PAYLOAD = 64 * 1024;
/** Credit each side grants per stream and direction before it hears back. */
export const INITIAL_STREAM_WINDOW = 256 * 1024;
/**
 * Credit a WebSocket message costs beyond its bytes, taken with its END frame:
 * without it an empty message cost nothing, and a client sending them as fast
 * as it could grew its peers' queues without bound (HTTP/2's empty-frames flood).
 */
export const MESSAGE_CREDIT = 256;
/** Request or response head: status and header list. */
export const MAX_HEAD_PAYLOAD = 64 * 1024;
const MAX_CONFIG_PAYLOAD = 128 * 1024;
/** RFC 6455: a close frame's reason fits 123 bytes. */
export const MAX_CLOSE_REASON = 123;
/** RESPONSE_END's usage fields (its strings are cut to MAX_USAGE_STRING characters). */
const MAX_USAGE_PAYLOAD = 4096;
const MAX_USAGE_STRING = 256;

export type Side = 'worker' | 'supervisor';

/**
 * One message of the protocol: who may send it, whether it belongs to a stream
 * (id > 0) or to the connection (id 0), its payload size limits, and when it is
 * permitted: every condition in `when` holds (checked in that order).
 */
export interface MessageSpec {
  readonly name: string;
  readonly type: number;
  readonly from: Side | 'either';
  readonly onStream: boolean;
  readonly minPayload: number;
  readonly maxPayload: number;
  readonly when: readonly Condition[];
}

function message<const T extends number, const F extends Side | 'either'>(
  type: T,
  from: F,
  on: 'connection' | 'stream',
  [minPayload, maxPayload]: readonly [number, number],
  ...when: Condition[]
) {
  return { type, from, onStream: on === 'stream', minPayload, maxPayload, when };
}

const PROTOCOL = {
  // worker -> supervisor
  /** The worker accepts connections. */
  READY: message(0x01, 'worker', 'connection', [0, 0], 'once', 'beforeReady'),
  /** A client asked for GET /shutdown (repeats are harmless). */
  SHUTDOWN: message(0x02, 'worker', 'connection', [0, 0], 'httpShutdown', 'afterReady'),
  /** The worker cannot serve (e.g. its sandbox cannot be installed): UTF-8 reason. */
  STARTUP_FAILED: message(0x08, 'worker', 'connection', [1, 1024], 'once', 'beforeReady'),
  /** After DRAIN: the last open stream has finished (it exits once its connections close). */
  DRAINED: message(0x09, 'worker', 'connection', [0, 0], 'afterDrain'),
  /** A POST /v1/responses head (client header list). */
  OPEN: message(0x03, 'worker', 'stream', [2, MAX_HEAD_PAYLOAD], 'afterReady'),
  /** Request body bytes. */
  REQUEST_DATA: message(0x04, 'worker', 'stream', [1, MAX_DATA_PAYLOAD], 'afterReady'),
  /** The request body is complete. */
  REQUEST_END: message(0x05, 'worker', 'stream', [0, 0], 'afterReady'),
  /** A GET /v1/responses upgrade head (client header list). */
  WS_OPEN: message(0x0a, 'worker', 'stream', [2, MAX_HEAD_PAYLOAD], 'webSocket', 'afterReady'),
  /** The worker refused a request or WebSocket message by its model (for the usage record). */
  MODEL_REFUSED: message(0x10, 'worker', 'connection', [0, 0], 'allowModel', 'afterReady'),
  // --dump-dir: the worker formats each dump file and the supervisor writes it, one file at a time,
  // into the directory it holds open; DUMP_DATA bytes count against the dump credit (DUMP_WINDOW).
  /** A dump file of this stream begins: u8 kind (0 request, 1 response), u64 the exchange's start in unix ms. */
  DUMP_FILE: message(0x11, 'worker', 'stream', [9, 9], 'dumps', 'afterReady'),
  /** Bytes of the open dump file. */
  DUMP_DATA: message(0x12, 'worker', 'stream', [1, MAX_DATA_PAYLOAD], 'dumps', 'afterReady'),
  /** The open dump file is complete. */
  DUMP_END: message(0x13, 'worker', 'stream', [0, 0], 'dumps', 'afterReady'),

  // either direction
  /** Abandon the stream (client gone, upstream failed mid-stream). */
  RESET: message(0x06, 'either', 'stream', [0, 0], 'afterReady'),
  /** u32 more bytes of credit for the peer. */
  WINDOW: message(0x07, 'either', 'stream', [4, 4], 'afterReady'),
  // WebSocket streams: a message travels as *_PART frames and one *_END frame
  // (a message of up to MAX_DATA_PAYLOAD bytes, even 0, is a single *_END),
  // counted against the same credit as body bytes.
  /** Part of a text message, more follows. */
  WS_TEXT_PART: message(0x0b, 'either', 'stream', [1, MAX_DATA_PAYLOAD], 'webSocket', 'afterReady'),
  /** Last part of a text message. */
  WS_TEXT_END: message(0x0c, 'either', 'stream', [0, MAX_DATA_PAYLOAD], 'webSocket', 'afterReady'),
  /** Part of a binary message, more follows. */
  WS_BINARY_PART: message(0x0d, 'either', 'stream', [1, MAX_DATA_PAYLOAD], 'webSocket', 'afterReady'),
  /** Last part of a binary message. */
  WS_BINARY_END: message(0x0e, 'either', 'stream', [0, MAX_DATA_PAYLOAD], 'webSocket', 'afterReady'),
  /** This side's socket closed: u16 code + UTF-8 reason (what its peer said). */
  WS_CLOSE: message(0x0f, 'either', 'stream', [2, 2 + MAX_CLOSE_REASON], 'webSocket', 'afterReady'),

  // supervisor -> worker
  /** JSON WorkerConfig. Every other message needs it first (their conditions read it or follow READY). */
  CONFIG: message(0x81, 'supervisor', 'connection', [2, MAX_CONFIG_PAYLOAD], 'once'),
  /** Stop accepting, finish open streams, say DRAINED, close connections, exit. */
  DRAIN: message(0x86, 'supervisor', 'connection', [0, 0], 'configured', 'once'),
  /** u16 status + header list. */
  RESPONSE_HEAD: message(0x82, 'supervisor', 'stream', [4, MAX_HEAD_PAYLOAD], 'afterReady'),
  /** Response body bytes. */
  RESPONSE_DATA: message(0x83, 'supervisor', 'stream', [1, MAX_DATA_PAYLOAD], 'afterReady'),
  /** The response is complete; with a client policy, the answer's UsageFields for the worker's log line. */
  RESPONSE_END: message(0x84, 'supervisor', 'stream', [0, MAX_USAGE_PAYLOAD], 'afterReady'),
  /** The request half closed: u8 body has key, u16 n, n x u16 index of a header field holding the key. */
  REQUEST_SCANNED: message(0x85, 'supervisor', 'stream', [3, MAX_HEAD_PAYLOAD], 'dumps', 'afterReady'),
  /** u32 more bytes of dump credit for the worker (DUMP_DATA written to disk). */
  DUMP_WINDOW: message(0x87, 'supervisor', 'connection', [4, 4], 'dumps', 'afterReady'),
};

/** What the receiving side knows when a frame arrives: the conditions read it. */
export interface ChannelState {
  /** What the worker's configuration enables; null on the worker until CONFIG arrives. */
  readonly config: ChannelConfig | null;
  /** The connection messages (stream 0) that have passed so far, either way. */
  readonly passed: ReadonlySet<number>;
}

/** The flags that enable messages. */
export interface ChannelConfig {
  /** --http-shutdown */
  readonly httpShutdown: boolean;
  /** --websocket */
  readonly webSocket: boolean;
  /** --dump-dir */
  readonly dumps: boolean;
  /** --allow-model */
  readonly allowModel: boolean;
}

export interface ConditionRule {
  holds(state: ChannelState, type: number): boolean;
  /** Completes "<MESSAGE> ..." as the violation's reason. */
  readonly denied: string;
}

/** When a message is permitted (see CONDITIONS). */
export type Condition =
  | 'once'
  | 'beforeReady'
  | 'afterReady'
  | 'afterDrain'
  | 'configured'
  | 'httpShutdown'
  | 'webSocket'
  | 'dumps'
  | 'allowModel';

export const CONDITIONS: Readonly<Record<Condition, ConditionRule>> = {
  /** At most once on the channel (a connection message). */
  once: { holds: (s, type) => !s.passed.has(type), denied: 'sent twice' },
  beforeReady: { holds: (s) => !s.passed.has(Msg.READY), denied: 'after READY' },
  afterReady: { holds: (s) => s.passed.has(Msg.READY), denied: 'before READY' },
  afterDrain: { holds: (s) => s.passed.has(Msg.DRAIN), denied: 'before DRAIN' },
  configured: { holds: (s) => s.config !== null, denied: 'before CONFIG' },
  httpShutdown: { holds: (s) => s.config?.httpShutdown === true, denied: 'without --http-shutdown' },
  webSocket: { holds: (s) => s.config?.webSocket === true, denied: 'without --websocket' },
  dumps: { holds: (s) => s.config?.dumps === true, denied: 'without --dump-dir' },
  allowModel: { holds: (s) => s.config?.allowModel === true, denied: 'without --allow-model' },
};

export type MessageName = keyof typeof PROTOCOL;
type Entry<K extends MessageName> = (typeof PROTOCOL)[K];

/** The messages `sender` may send: its own and those of either side. */
export type SentBy<Sender extends Side> = {
  [K in MessageName]: Entry<K>['from'] extends Sender | 'either' ? K : never;
}[MessageName];

/** Each message's type byte, by name. */
export const Msg = Object.fromEntries(Object.entries(PROTOCOL).map(([name, spec]) => [name, spec.type])) as {
  readonly [K in MessageName]: Entry<K>['type'];
};

export type MsgType = (typeof Msg)[MessageName];

/** The table by type byte. */
export const MESSAGE_SPECS: ReadonlyMap<number, MessageSpec> = new Map(
  Object.entries(PROTOCOL).map(([name, spec]) => [spec.type, { name, ...spec }]),
);

export type FrameHandler = (type: MsgType, streamId: number, payload: Buffer) => void;

/**
 * Splits a byte stream into frames sent by `from`, validating each header
 * against MESSAGE_SPECS before waiting for its payload (so an oversize length
 * is refused at once, never buffered). Payloads are views into the received
 * chunks; bytes are copied only when a frame straddles chunks, except for the
 * `pieceTypes` (body data): such a frame is handed on in pieces as its bytes
 * arrive, each piece a frame of the same type and stream, because a full-size
 * DATA frame usually straddles the socket's reads and would otherwise be
 * copied to be reassembled.
 * Throws ProtocolError; after that the decoder accepts nothing more.
 */
export class FrameDecoder {
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  private needed = FRAME_HEADER_BYTES;
  private failed = false;
  /** The rest of a piece-type frame whose first bytes were handed on. */
  private piece: { type: MsgType; streamId: number; remaining: number } | null = null;

  constructor(
    private readonly from: Side,
    private readonly onFrame: FrameHandler,
    private readonly pieceTypes: ReadonlySet<number> = new Set(),
  ) {}

  push(chunk: Buffer): void {
    if (this.failed) return;
    const piece = this.piece;
    if (piece !== null) {
      const n = Math.min(piece.remaining, chunk.length);
      piece.remaining -= n;
      if (piece.remaining === 0) this.piece = null;
      try {
        this.onFrame(piece.type, piece.streamId, n === chunk.length ? chunk : chunk.subarray(0, n));
      } catch (err) {
        this.fail();
        throw err;
      }
      if (this.failed || n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    if (this.queuedBytes === 0) return this.consume(chunk);
    this.queued.push(chunk);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes < this.needed) return;
    const joined = Buffer.concat(this.queued, this.queuedBytes);
    this.queued = [];
    this.queuedBytes = 0;
    this.consume(joined);
  }

  /** Bytes held waiting for the rest of a frame (bounded by the largest frame). */
  get bufferedBytes(): number {
    return this.queuedBytes;
  }

  private consume(buf: Buffer): void {
    let offset = 0;
    try {
      while (buf.length - offset >= FRAME_HEADER_BYTES) {
        const length = buf.readUInt32BE(offset);
        const type = buf[offset + 4] as number;
        const streamId = buf.readUInt32BE(offset + 5);
        this.checkHeader(type, length, streamId);
        const end = offset + FRAME_HEADER_BYTES + length;
        if (end > buf.length && this.pieceTypes.has(type) && buf.length > offset + FRAME_HEADER_BYTES) {
          const first = buf.subarray(offset + FRAME_HEADER_BYTES);
          this.piece = { type: type as MsgType, streamId, remaining: end - buf.length };
          offset = buf.length;
          this.onFrame(type as MsgType, streamId, first);
          break;
        }
        if (end > buf.length) {
          this.needed = FRAME_HEADER_BYTES + length;
          break;
        }
        const payload = buf.subarray(offset + FRAME_HEADER_BYTES, end);
        offset = end;
        this.onFrame(type as MsgType, streamId, payload);
        if (this.failed) return;
      }
    } catch (err) {
      this.fail();
      throw err;
    }
    if (offset < buf.length) {
      const rest = buf.subarray(offset);
      this.queued = [rest];
      this.queuedBytes = rest.length;
      if (rest.length < FRAME_HEADER_BYTES) this.needed = FRAME_HEADER_BYTES;
    } else {
      this.needed = FRAME_HEADER_BYTES;
    }
  }

  private checkHeader(type: number, length: number, streamId: number): void {
    const s = MESSAGE_SPECS.get(type);
    if (s === undefined) throw new ProtocolError(`unknown message type 0x${type.toString(16)}`);
    if (s.from !== this.from && s.from !== 'either')
      throw new ProtocolError(`${s.name} may not be sent by the ${this.from}`);
    if (length < s.minPayload || length > s.maxPayload) {
      throw new ProtocolError(`${s.name} payload of ${length} bytes is outside ${s.minPayload}..${s.maxPayload}`);
    }
    if (s.onStream !== (streamId !== 0)) throw new ProtocolError(`${s.name} on stream ${streamId} is not allowed`);
  }

  /** Stop decoding (e.g. after a handler found the frame's content invalid). */
  fail(): void {
    this.failed = true;
    this.queued = [];
    this.queuedBytes = 0;
    this.piece = null;
  }
}

interface FrameSink {
  readonly destroyed: boolean;
  cork(): void;
  uncork(): void;
  write(chunk: Buffer): boolean;
}

/**
 * Writes frames to the socketpair. Everything written in one tick is corked
 * into a single writev; DATA payloads are written as they are (no copy). The
 * uncork is a microtask, so it runs after the tick's process.nextTick
 * callbacks: a request's OPEN, body and end (the body's 'data' and 'end' are
 * emitted from nextTick) leave in one write. Corking any longer (until
 * setImmediate) would hold back credit and slow every stream down.
 */
export class FrameWriter {
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.sink.uncork();
  };

  constructor(private readonly sink: FrameSink) {}

  send(type: MsgType, streamId: number, payload?: Buffer): void {
    if (this.sink.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.sink.cork();
      queueMicrotask(this.uncork);
    }
    const length = payload === undefined ? 0 : payload.length;
    const small = length <= 256;
    const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES + (small ? length : 0));
    header.writeUInt32BE(length, 0);
    header[4] = type;
    header.writeUInt32BE(streamId, 5);
    if (payload !== undefined && small) {
      payload.copy(header, FRAME_HEADER_BYTES);
      this.sink.write(header);
      return;
    }
    this.sink.write(header);
    if (payload !== undefined) this.sink.write(payload);
  }

  sendWindow(streamId: number, increment: number): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(increment, 0);
    this.send(Msg.WINDOW, streamId, payload);
  }
}

/** Dump bytes the worker may have in flight before the supervisor has written them. */
export const DUMP_WINDOW_BYTES = INITIAL_STREAM_WINDOW;

/**
 * The largest dump file a worker may write for --dump-max-bytes N: a body
 * escaped for JSON is at most 6 N bytes, pretty-printed at most 10 N + 4 KiB
 * (worker/dumpWriter.ts), and the heads fit the rest. The worker skips a
 * larger file; the supervisor ends a worker that sends one, so a compromised
 * worker fills the disk no faster than hostile clients could through an honest one.
 */
export function dumpFileLimit(dumpMaxBytes: number): number {
  return 12 * dumpMaxBytes + 4 * 1024 * 1024;
}

export type DumpKind = 'request' | 'response';
const DUMP_KINDS: readonly DumpKind[] = ['request', 'response'];

export function encodeDumpFile(kind: DumpKind, startedAtMs: number): Buffer {
  const buf = Buffer.allocUnsafe(9);
  buf[0] = DUMP_KINDS.indexOf(kind);
  buf.writeBigUInt64BE(BigInt(startedAtMs), 1);
  return buf;
}

export function decodeDumpFile(payload: Buffer): { kind: DumpKind; startedAtMs: number } {
  const kind = DUMP_KINDS[payload[0] as number];
  const startedAtMs = payload.readBigUInt64BE(1);
  if (kind === undefined) throw new ProtocolError(`DUMP_FILE of unknown kind ${payload[0]}`);
  if (startedAtMs > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('DUMP_FILE time out of range');
  return { kind, startedAtMs: Number(startedAtMs) };
}

export function decodeWindowIncrement(payload: Buffer): number {
  const increment = payload.readUInt32BE(0);
  if (increment === 0) throw new ProtocolError('WINDOW increment of 0');
  return increment;
}

// Header lists: u16 count, then per header u16 name length, name, u16 value
// length, value. Names and values are latin1 so every byte round-trips as the
// HTTP parser delivered it. A RESPONSE_HEAD prefixes a u16 status.

/** Flat [name, value, name, value, ...] as Node's rawHeaders. */
export type HeaderList = string[];

export function encodeHead(headers: HeaderList, status?: number): Buffer {
  const prefix = status === undefined ? 0 : 2;
  let size = prefix + 2;
  for (const field of headers) size += 2 + field.length;
  if (size > MAX_HEAD_PAYLOAD) throw new RangeError(`head of ${size} bytes exceeds ${MAX_HEAD_PAYLOAD}`);
  const buf = Buffer.allocUnsafe(size);
  let offset = 0;
  if (status !== undefined) offset = buf.writeUInt16BE(status, 0);
  offset = buf.writeUInt16BE(headers.length / 2, offset);
  for (const field of headers) {
    offset = buf.writeUInt16BE(field.length, offset);
    offset += buf.write(field, offset, 'latin1');
  }
  return buf;
}

const NOTHING_WITHHELD: readonly Buffer[] = Object.freeze([]);

/**
 * A head as sent: status (if `withStatus`) and header list. The value of a
 * field named `withheld` (lower case; any case on the wire) is not decoded:
 * it is '' in the list, and its bytes, still in `payload`, are in
 * `withheldValues` (the supervisor digests a client's Authorization there and
 * zeroes it, so it never becomes a string).
 */
export function decodeHead(
  payload: Buffer,
  withStatus: boolean,
  withheld: string | null = null,
): { status: number; headers: HeaderList; withheldValues: readonly Buffer[] } {
  let offset = 0;
  const need = (n: number): void => {
    if (offset + n > payload.length) throw new ProtocolError('truncated header list');
  };
  let status = 0;
  if (withStatus) {
    need(2);
    status = payload.readUInt16BE(0);
    offset = 2;
  }
  need(2);
  const count = payload.readUInt16BE(offset);
  offset += 2;
  const headers: HeaderList = new Array<string>(count * 2);
  let withheldValues = NOTHING_WITHHELD;
  for (let i = 0; i < count * 2; i++) {
    need(2);
    const length = payload.readUInt16BE(offset);
    offset += 2;
    need(length);
    const name = i % 2 === 1 ? (headers[i - 1] as string) : '';
    if (withheld !== null && name.length === withheld.length && name.toLowerCase() === withheld) {
      if (withheldValues === NOTHING_WITHHELD) withheldValues = [];
      (withheldValues as Buffer[]).push(payload.subarray(offset, offset + length));
      headers[i] = '';
    } else {
      headers[i] = payload.toString('latin1', offset, offset + length);
    }
    offset += length;
  }
  if (offset !== payload.length) throw new ProtocolError('trailing bytes after header list');
  return { status, headers, withheldValues };
}

/** Where the supervisor found the key in a request (for dump redaction). */
export interface KeyScanResult {
  readonly bodyHasKey: boolean;
  /** Indexes (in header pairs) of header fields whose value contains the key. */
  readonly headerIndexes: readonly number[];
}

export function encodeKeyScan(result: KeyScanResult): Buffer {
  const buf = Buffer.allocUnsafe(3 + 2 * result.headerIndexes.length);
  buf[0] = result.bodyHasKey ? 1 : 0;
  let offset = buf.writeUInt16BE(result.headerIndexes.length, 1);
  for (const index of result.headerIndexes) offset = buf.writeUInt16BE(index, offset);
  return buf;
}

export function decodeKeyScan(payload: Buffer): KeyScanResult {
  const count = payload.readUInt16BE(1);
  if (payload.length !== 3 + 2 * count) throw new ProtocolError('malformed REQUEST_SCANNED');
  const headerIndexes: number[] = [];
  for (let i = 0; i < count; i++) headerIndexes.push(payload.readUInt16BE(3 + 2 * i));
  return { bodyHasKey: payload[0] === 1, headerIndexes };
}

/**
 * What the upstream said an answer used, as the worker's log line for the
 * request shows it (a client policy is in force): the supervisor reads it from
 * the answer, the worker only logs it.
 */
export interface UsageFields {
  readonly model: string | null;
  readonly responseId: string | null;
  readonly inputTokens?: number;
  readonly cachedInputTokens?: number;
  readonly outputTokens?: number;
  readonly reasoningTokens?: number;
  readonly totalTokens?: number;
}

// Usage: a flag byte (1: the five token counts follow), the model and the
// response id, each a u16 byte length (NO_STRING for null) and UTF-8 text,
// then the counts as float64 (exact for every safe integer).
const NO_STRING = 0xffff;

function encodedString(s: string | null): Buffer | null {
  return s === null ? null : Buffer.from(s.slice(0, MAX_USAGE_STRING), 'utf8');
}

export function encodeUsage(fields: UsageFields): Buffer {
  const model = encodedString(fields.model);
  const responseId = encodedString(fields.responseId);
  const counts = fields.totalTokens === undefined ? null : fields;
  const size = 5 + (model?.length ?? 0) + (responseId?.length ?? 0) + (counts === null ? 0 : 40);
  const buf = Buffer.allocUnsafe(size);
  buf[0] = counts === null ? 0 : 1;
  let offset = 1;
  for (const s of [model, responseId]) {
    offset = buf.writeUInt16BE(s?.length ?? NO_STRING, offset);
    if (s !== null) offset += s.copy(buf, offset);
  }
  if (counts !== null) {
    for (const n of [
      counts.inputTokens,
      counts.cachedInputTokens,
      counts.outputTokens,
      counts.reasoningTokens,
      counts.totalTokens,
    ]) {
      offset = buf.writeDoubleBE(n ?? 0, offset);
    }
  }
  return buf;
}

export function decodeUsage(payload: Buffer): UsageFields {
  let offset = 1;
  const take = (n: number): number => {
    if (offset + n > payload.length) throw new ProtocolError('truncated RESPONSE_END usage');
    offset += n;
    return offset - n;
  };
  const string = (): string | null => {
    const length = payload.readUInt16BE(take(2));
    return length === NO_STRING ? null : payload.toString('utf8', take(length), offset);
  };
  const count = (): number => {
    const n = payload.readDoubleBE(take(8));
    if (!Number.isSafeInteger(n) || n < 0) throw new ProtocolError('malformed RESPONSE_END usage count');
    return n;
  };
  const flag = payload[0];
  if (flag !== 0 && flag !== 1) throw new ProtocolError('malformed RESPONSE_END usage');
  const model = string();
  const responseId = string();
  const fields: UsageFields =
    flag === 0
      ? { model, responseId }
      : {
          model,
          responseId,
          inputTokens: count(),
          cachedInputTokens: count(),
          outputTokens: count(),
          reasoningTokens: count(),
          totalTokens: count(),
        };
  if (offset !== payload.length) throw new ProtocolError('trailing bytes after RESPONSE_END usage');
  return fields;
}
