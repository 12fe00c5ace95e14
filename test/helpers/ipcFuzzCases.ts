// The hostile-worker generator for the IPC fuzz tests: frames built from the
// protocol table (ipcProtocol.ts), a model of a well-behaved worker that knows
// which frames are valid in which state, and fast-check arbitraries for what a
// compromised worker may write instead. Pure (no sockets, no node:test): the
// in-process properties (ipcFuzzSuite.ts) and the hostile worker process
// (test/fixtures/hostileWorker.ts) draw their cases from the same code.

import fc from 'fast-check';
import { MAX_OPEN_STREAMS } from '../../src/shared/constants.js';
import {
  CONDITIONS,
  DUMP_WINDOW_BYTES,
  FRAME_HEADER_BYTES,
  INITIAL_STREAM_WINDOW,
  MAX_DATA_PAYLOAD,
  MESSAGE_SPECS,
  Msg,
  encodeDumpFile,
  encodeHead,
  type ChannelConfig,
  type MessageSpec,
  type MsgType,
} from '../../src/shared/ipcProtocol.js';

export const ALL_TYPES = [...MESSAGE_SPECS.keys()];
export const WORKER_TYPES = [...MESSAGE_SPECS].filter(([, s]) => s.from !== 'supervisor').map(([t]) => t);
const SUPERVISOR_TYPES = [...MESSAGE_SPECS].filter(([, s]) => s.from === 'supervisor').map(([t]) => t);
const UNKNOWN_TYPES = Array.from({ length: 256 }, (_, t) => t).filter((t) => !MESSAGE_SPECS.has(t));
const STREAM_TYPES = WORKER_TYPES.filter((t) => MESSAGE_SPECS.get(t)?.onStream === true);
const CONNECTION_TYPES = WORKER_TYPES.filter((t) => MESSAGE_SPECS.get(t)?.onStream === false);
/** The largest frame any side may send: the decoder must never hold more than this. */
export const LARGEST_FRAME = FRAME_HEADER_BYTES + Math.max(...[...MESSAGE_SPECS.values()].map((s) => s.maxPayload));

function specOf(type: number): MessageSpec {
  const spec = MESSAGE_SPECS.get(type);
  if (spec === undefined) throw new Error(`type 0x${type.toString(16)} is not in the protocol table`);
  return spec;
}

// ------------------------------------------------------------------ frames

export function header(type: number, length: number, streamId: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(length >>> 0, 0);
  h[4] = type;
  h.writeUInt32BE(streamId >>> 0, 5);
  return h;
}

export function frame(type: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([header(type, payload.length, streamId), payload]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** Cut `bytes` at the given points (mod length): the chunks the worker end writes one by one. */
export function split(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  if (bytes.length === 0) return [];
  const points = [...new Set(cuts.map((c) => c % bytes.length))].filter((p) => p > 0).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

export const HEAD = encodeHead(['content-type', 'application/json']);
export const WS_HEAD = encodeHead([
  'upgrade',
  'websocket',
  'connection',
  'Upgrade',
  'sec-websocket-version',
  '13',
  'sec-websocket-key',
  'dGhlIHNhbXBsZSBub25jZQ==',
  'openai-beta',
  'responses_websockets=2026-02-06',
]);
export const WS_STREAM_TYPES = [
  Msg.WS_TEXT_PART,
  Msg.WS_TEXT_END,
  Msg.WS_BINARY_PART,
  Msg.WS_BINARY_END,
  Msg.WS_CLOSE,
  Msg.WINDOW,
  Msg.RESET,
] as const;

/** A payload of a length the spec accepts, for frames that must pass the decoder. */
function validPayloadFor(type: number): Buffer {
  if (type === Msg.OPEN || type === Msg.WS_OPEN) return HEAD;
  if (type === Msg.WINDOW) return u32(1);
  if (type === Msg.WS_CLOSE) return Buffer.from([0x03, 0xe8]);
  return Buffer.alloc(specOf(type).minPayload, 0x41);
}

// ------------------------------------------------------------------ arbitraries

export const chunkingArb = fc.record({ cuts: fc.array(fc.nat(), { maxLength: 16 }), stepwise: fc.boolean() });
export const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
export const bytesArb = (maxLength: number): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ maxLength }).map((u) => Buffer.from(u));
/** The flags that enable messages (--http-shutdown, --websocket, --dump-dir, --allow-model), each on or off. */
export const flagsArb: fc.Arbitrary<ChannelConfig> = fc.record({
  httpShutdown: fc.boolean(),
  webSocket: fc.boolean(),
  dumps: fc.boolean(),
  allowModel: fc.boolean(),
});

/** Tags the follow-up requests of the suite (answered by the holding upstream): never generated. */
export const FOLLOW_UP_TAG_HEADER = 'x-test-tag';
const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split('');
const VALUE_CHARS = ' \tabcdefghijklmnopqrstuvwxyz0123456789-_=;,/:"{}[]\u00e9\u00ff'.split('');
const NOT_GENERATED = ['host', 'authorization', 'content-length', 'transfer-encoding', 'expect', FOLLOW_UP_TAG_HEADER];
const tokenArb = fc
  .string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 24 })
  .filter((n) => !NOT_GENERATED.includes(n.toLowerCase()));
const valueArb = fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: 64 });
/** A header list the worker's HTTP parser could have produced. */
export const headersArb = fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 8 }).map((pairs) => pairs.flat());
/** Anything at all, as latin1 strings (names and values the parser could never produce included). */
const junkFieldArb = fc.tuple(
  fc.string({ unit: 'binary', maxLength: 16 }),
  fc.string({ unit: 'binary', maxLength: 32 }),
);
const junkHeadersArb = fc
  .array(junkFieldArb, { maxLength: 6 })
  .map((pairs) => pairs.flat().map((s) => Buffer.from(s, 'utf8').toString('latin1')));

/** Random bytes, and random frame headers followed by random bytes. */
export const randomSegmentArb = fc.oneof(
  { weight: 3, arbitrary: bytesArb(1024) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.oneof(fc.constantFrom(...ALL_TYPES), fc.integer({ min: 0, max: 255 })),
        fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 70_000 }), u32Arb),
        fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8 }), u32Arb),
        bytesArb(512),
      )
      .map(([t, l, id, rest]) => Buffer.concat([header(t, l, id), rest])),
  },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 70_000 }).map((n) => Buffer.alloc(n, 0)) },
  {
    // Frames that pass the decoder's header checks, with random payloads: reaches the handlers.
    weight: 4,
    arbitrary: fc
      .tuple(fc.constantFrom(...WORKER_TYPES), fc.integer({ min: 1, max: 4 }), bytesArb(1100))
      .map(([type, id, bytes]) => {
        const spec = specOf(type);
        const length = Math.max(spec.minPayload, Math.min(bytes.length, spec.maxPayload));
        const payload = Buffer.concat([bytes, Buffer.alloc(Math.max(0, length - bytes.length))]).subarray(0, length);
        return frame(type, spec.onStream ? id : 0, payload);
      }),
  },
);

// ------------------------------------------------------------------ a model of a well-behaved worker

/** What the Monitor tells the supervisor, by event. */
export type EventCounts = Record<'ready' | 'shutdown' | 'startupFailed' | 'drained', number>;

export type Op =
  | { readonly k: 'ready' }
  | { readonly k: 'drained' }
  | { readonly k: 'startupFailed'; readonly text: Buffer }
  | { readonly k: 'open'; readonly gap: number; readonly headers: string[] }
  | { readonly k: 'data'; readonly pick: number; readonly size: number }
  | { readonly k: 'end'; readonly pick: number }
  | { readonly k: 'reset'; readonly pick: number }
  | { readonly k: 'shutdown' }
  | { readonly k: 'modelRefused' }
  /** A whole dump file (DUMP_FILE, DUMP_DATA, DUMP_END) for an opened stream. */
  | { readonly k: 'dump'; readonly pick: number; readonly kind: 'request' | 'response'; readonly size: number };

const startupFailedOpArb = fc
  .uint8Array({ minLength: 1, maxLength: 64 })
  .map((t) => ({ k: 'startupFailed' as const, text: Buffer.from(t) }));

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  // Frequent: streams open only after READY.
  { weight: 4, arbitrary: fc.constant({ k: 'ready' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'drained' as const }) },
  { weight: 1, arbitrary: startupFailedOpArb },
  {
    weight: 4,
    arbitrary: fc.record({ k: fc.constant('open' as const), gap: fc.integer({ min: 1, max: 3 }), headers: headersArb }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('data' as const),
      pick: fc.nat(),
      size: fc.oneof(fc.integer({ min: 1, max: 512 }), fc.integer({ min: 1, max: MAX_DATA_PAYLOAD })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('end' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('reset' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ k: 'shutdown' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'modelRefused' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('dump' as const),
      pick: fc.nat(),
      kind: fc.constantFrom('request' as const, 'response' as const),
      size: fc.oneof(fc.integer({ min: 0, max: 512 }), fc.integer({ min: 1, max: MAX_DATA_PAYLOAD })),
    }),
  },
);

/** A well-behaved prefix: mostly after READY, sometimes one that stops before it. */
export const prefixArb: fc.Arbitrary<Op[]> = fc.oneof(
  { weight: 3, arbitrary: fc.array(opArb, { maxLength: 30, size: 'max' }) },
  {
    weight: 1,
    arbitrary: fc.array(fc.oneof(fc.constant({ k: 'drained' as const }), startupFailedOpArb), { maxLength: 3 }),
  },
);

interface StreamModel {
  sent: number;
  ended: boolean;
  reset: boolean;
}

export interface Model {
  /** What the worker's configuration enables. */
  readonly flags: ChannelConfig;
  /** The connection messages passed so far, either way (DRAIN when the supervisor said it first). */
  readonly passed: Set<number>;
  highest: number;
  readonly streams: Map<number, StreamModel>;
  /** Dump bytes sent (credit comes back only as they reach the disk: stay within one window). */
  dumpBytes: number;
  /** Dump files begun: at most two per stream opened. */
  dumpFiles: number;
  readonly frames: Buffer[];
  readonly expected: EventCounts;
}

export const NO_FLAGS: ChannelConfig = { httpShutdown: false, webSocket: false, dumps: false, allowModel: false };

/** `draining`: the supervisor said DRAIN before the worker's first frame (DRAINED is permitted). */
export function newModel(flags: ChannelConfig = NO_FLAGS, draining = false): Model {
  const expected = { ready: 0, shutdown: 0, startupFailed: 0, drained: 0 };
  const passed = new Set<number>(draining ? [Msg.DRAIN] : []);
  return { flags, passed, highest: 0, streams: new Map(), dumpBytes: 0, dumpFiles: 0, frames: [], expected };
}

function say(m: Model, event: keyof EventCounts, type: MsgType, payload?: Buffer): void {
  m.expected[event]++;
  m.passed.add(type);
  m.frames.push(frame(type, 0, payload));
}

export function isReady(m: Model): boolean {
  return m.passed.has(Msg.READY);
}

/** READY, unless said already: streams are opened only after it. */
export function ensureReady(m: Model): void {
  if (!isReady(m)) say(m, 'ready', Msg.READY);
}

export function liveStreams(m: Model): number[] {
  return [...m.streams].filter(([, s]) => !s.ended).map(([id]) => id);
}

export function openStream(m: Model, gap = 1, head = HEAD): number {
  ensureReady(m);
  const id = m.highest + gap;
  m.highest = id;
  m.streams.set(id, { sent: 0, ended: false, reset: false });
  m.frames.push(frame(Msg.OPEN, id, head));
  return id;
}

/** Frames a correct worker could send; skips ops that would be invalid in the current state. */
export function applyValidOps(m: Model, ops: readonly Op[]): void {
  for (const op of ops) {
    switch (op.k) {
      case 'ready':
        ensureReady(m);
        break;
      case 'drained':
        if (m.passed.has(Msg.DRAIN)) say(m, 'drained', Msg.DRAINED);
        break;
      case 'startupFailed':
        if (isReady(m) || m.passed.has(Msg.STARTUP_FAILED)) break;
        say(m, 'startupFailed', Msg.STARTUP_FAILED, op.text);
        break;
      case 'shutdown':
        if (m.flags.httpShutdown && isReady(m)) say(m, 'shutdown', Msg.SHUTDOWN);
        break;
      case 'modelRefused':
        if (m.flags.allowModel && isReady(m)) m.frames.push(frame(Msg.MODEL_REFUSED, 0));
        break;
      case 'dump': {
        if (!m.flags.dumps || m.highest === 0 || m.dumpFiles >= 2 * m.highest) break;
        m.dumpFiles++;
        const id = 1 + (op.pick % m.highest);
        const size = Math.min(op.size, MAX_DATA_PAYLOAD, DUMP_WINDOW_BYTES - m.dumpBytes);
        m.dumpBytes += size;
        m.frames.push(frame(Msg.DUMP_FILE, id, encodeDumpFile(op.kind, 1_700_000_000_000 + op.pick)));
        if (size > 0) m.frames.push(frame(Msg.DUMP_DATA, id, Buffer.alloc(size, 0x7b)));
        m.frames.push(frame(Msg.DUMP_END, id));
        break;
      }
      case 'open':
        if (!isReady(m) || m.streams.size >= MAX_OPEN_STREAMS) break;
        openStream(m, op.gap, encodeHead(op.headers));
        break;
      case 'data': {
        const live = liveStreams(m);
        if (live.length === 0) break;
        const id = live[op.pick % live.length] as number;
        const s = m.streams.get(id) as StreamModel;
        // Stay within the initial window whether or not credit comes back.
        const size = Math.min(op.size, MAX_DATA_PAYLOAD, INITIAL_STREAM_WINDOW - s.sent);
        if (size <= 0) break;
        s.sent += size;
        m.frames.push(frame(Msg.REQUEST_DATA, id, Buffer.alloc(size, 0x61 + (id % 26))));
        break;
      }
      case 'end': {
        const live = liveStreams(m);
        if (live.length === 0) break;
        const id = live[op.pick % live.length] as number;
        (m.streams.get(id) as StreamModel).ended = true;
        m.frames.push(frame(Msg.REQUEST_END, id));
        break;
      }
      case 'reset': {
        // RESET is valid for any opened stream, ended or not (late frames are normal).
        const all = [...m.streams.keys()];
        if (all.length === 0) break;
        const id = all[op.pick % all.length] as number;
        const s = m.streams.get(id) as StreamModel;
        s.ended = true;
        s.reset = true;
        m.frames.push(frame(Msg.RESET, id));
        break;
      }
    }
  }
}

/** A live stream (opened, request half open: it cannot have been forgotten), opened now if there is none. */
function aLiveStream(m: Model, pick: number): number {
  const live = liveStreams(m);
  return live.length > 0 ? (live[pick % live.length] as number) : openStream(m);
}

// ------------------------------------------------------------------ one invalid frame

// One invalid frame (or short run of frames ending in one), with the reason the Monitor must give.
export type Bad =
  | { readonly k: 'unknownType'; readonly type: number; readonly streamId: number; readonly length: number }
  | { readonly k: 'wrongSide'; readonly type: number; readonly streamId: number }
  | { readonly k: 'badLength'; readonly type: number; readonly length: number }
  | { readonly k: 'wrongStream'; readonly type: number; readonly streamId: number }
  | { readonly k: 'unopened'; readonly type: number; readonly gap: number }
  | { readonly k: 'reuse'; readonly pick: number }
  | { readonly k: 'forbidden'; readonly pick: number }
  | { readonly k: 'badHead'; readonly headers: string[]; readonly trailing: boolean }
  | { readonly k: 'badHeaderField'; readonly name: string }
  | { readonly k: 'windowZero'; readonly pick: number }
  | { readonly k: 'windowEarly'; readonly pick: number; readonly increment: number }
  | { readonly k: 'overrun'; readonly pick: number; readonly extra: number }
  /** The dump receiver's own checks (with --dump-dir; without it, the table's refusal). */
  | { readonly k: 'dumpUnopened'; readonly gap: number }
  | { readonly k: 'dumpTwice' }
  | { readonly k: 'dumpQuota' }
  | { readonly k: 'dumpWithoutFile'; readonly end: boolean }
  | { readonly k: 'dumpBadFile'; readonly kindByte: number; readonly time: bigint };

/** Kinds whose reason holds only if the upstream never answers nor takes the body (no credit comes back). */
export const UPSTREAM_DEPENDENT: ReadonlySet<Bad['k']> = new Set(['windowEarly', 'overrun']);

export const badArb: fc.Arbitrary<Bad> = fc.oneof(
  fc.record({
    k: fc.constant('unknownType' as const),
    type: fc.constantFrom(...UNKNOWN_TYPES),
    streamId: u32Arb,
    length: u32Arb,
  }),
  fc.record({
    k: fc.constant('wrongSide' as const),
    type: fc.constantFrom(...SUPERVISOR_TYPES),
    streamId: fc.integer({ min: 0, max: 5 }),
  }),
  fc
    .record({ k: fc.constant('badLength' as const), type: fc.constantFrom(...WORKER_TYPES), length: u32Arb })
    .filter(({ type, length }) => length < specOf(type).minPayload || length > specOf(type).maxPayload),
  fc.oneof(
    fc.record({
      k: fc.constant('wrongStream' as const),
      type: fc.constantFrom(...STREAM_TYPES),
      streamId: fc.constant(0),
    }),
    fc.record({
      k: fc.constant('wrongStream' as const),
      type: fc.constantFrom(...CONNECTION_TYPES),
      streamId: fc.integer({ min: 1, max: 0xffffffff }),
    }),
  ),
  fc.record({
    k: fc.constant('unopened' as const),
    type: fc.constantFrom(Msg.REQUEST_DATA, Msg.REQUEST_END, Msg.RESET, Msg.WINDOW),
    gap: fc.integer({ min: 1, max: 1000 }),
  }),
  fc.record({ k: fc.constant('reuse' as const), pick: fc.nat() }),
  // Twice as often: every message type of the table whose conditions fail in the state reached.
  { weight: 2, arbitrary: fc.record({ k: fc.constant('forbidden' as const), pick: fc.nat() }) },
  fc.record({ k: fc.constant('badHead' as const), headers: headersArb, trailing: fc.boolean() }),
  fc.record({
    k: fc.constant('badHeaderField' as const),
    name: fc.constantFrom('', 'bad name', 'x:y', 'caf\u00e9', 'a\r\nb', '(x)'),
  }),
  fc.record({ k: fc.constant('windowZero' as const), pick: fc.nat() }),
  fc.record({
    k: fc.constant('windowEarly' as const),
    pick: fc.nat(),
    increment: fc.integer({ min: 1, max: 0xffffffff }),
  }),
  fc.record({ k: fc.constant('overrun' as const), pick: fc.nat(), extra: fc.integer({ min: 1, max: 1000 }) }),
  fc.record({ k: fc.constant('dumpUnopened' as const), gap: fc.integer({ min: 1, max: 1000 }) }),
  fc.constant({ k: 'dumpTwice' as const }),
  fc.constant({ k: 'dumpQuota' as const }),
  fc.record({ k: fc.constant('dumpWithoutFile' as const), end: fc.boolean() }),
  fc.oneof(
    fc.record({
      k: fc.constant('dumpBadFile' as const),
      kindByte: fc.integer({ min: 2, max: 255 }),
      time: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    }),
    fc.record({
      k: fc.constant('dumpBadFile' as const),
      kindByte: fc.integer({ min: 0, max: 1 }),
      time: fc.bigInt({ min: BigInt(Number.MAX_SAFE_INTEGER) + 1n, max: 2n ** 64n - 1n }),
    }),
  ),
);

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The worker messages the table refuses in the model's state (before/after
 * READY, DRAIN said or not, each flag on or off), with the reason: the first
 * of its conditions that fails. The table is the specification here; the model
 * supplies the state.
 */
function refusedInState(m: Model): Array<{ spec: MessageSpec; reason: string }> {
  const state = { config: m.flags, passed: m.passed };
  return WORKER_TYPES.flatMap((type) => {
    const spec = specOf(type);
    const failing = spec.when.find((condition) => !CONDITIONS[condition].holds(state, type));
    return failing === undefined ? [] : [{ spec, reason: `${spec.name} ${CONDITIONS[failing].denied}` }];
  });
}

/** Append the invalid frame(s) to the model's frames; returns the expected reason. */
export function applyBad(m: Model, bad: Bad): RegExp {
  switch (bad.k) {
    case 'unknownType':
      m.frames.push(header(bad.type, bad.length, bad.streamId));
      return new RegExp(`^unknown message type 0x${bad.type.toString(16)}$`);
    case 'wrongSide':
      m.frames.push(header(bad.type, 0, bad.streamId));
      return /may not be sent by the worker$/;
    case 'badLength':
      m.frames.push(header(bad.type, bad.length, specOf(bad.type).onStream ? m.highest + 1 : 0));
      return new RegExp(`payload of ${bad.length} bytes is outside \\d+\\.\\.\\d+$`);
    case 'wrongStream':
      m.frames.push(frame(bad.type, bad.streamId, validPayloadFor(bad.type)));
      return new RegExp(`on stream ${bad.streamId} is not allowed$`);
    case 'unopened': {
      ensureReady(m);
      const id = m.highest + bad.gap;
      m.frames.push(frame(bad.type, id, validPayloadFor(bad.type)));
      return new RegExp(`^frame for stream ${id}, which was never opened$`);
    }
    case 'reuse': {
      if (m.highest === 0) openStream(m);
      const id = 1 + (bad.pick % m.highest);
      m.frames.push(frame(Msg.OPEN, id, HEAD));
      return new RegExp(`^OPEN reuses stream id ${id}$`);
    }
    case 'forbidden': {
      // There is always one: READY is refused after READY, OPEN before it.
      const refused = refusedInState(m);
      const { spec, reason } = refused[bad.pick % refused.length] as (typeof refused)[number];
      m.frames.push(frame(spec.type, spec.onStream ? m.highest + 1 : 0, validPayloadFor(spec.type)));
      return new RegExp(`^${escapeRegExp(reason)}$`);
    }
    case 'badHead': {
      ensureReady(m);
      const good = encodeHead(bad.headers);
      let payload: Buffer;
      if (bad.trailing) {
        payload = Buffer.concat([good, Buffer.from([0x7a])]);
      } else {
        payload = Buffer.from(good);
        payload.writeUInt16BE(payload.readUInt16BE(0) + 1, 0); // one header more than present
      }
      m.frames.push(frame(Msg.OPEN, m.highest + 1, payload));
      return bad.trailing ? /^trailing bytes after header list$/ : /^truncated header list$/;
    }
    case 'badHeaderField':
      ensureReady(m);
      m.frames.push(frame(Msg.OPEN, m.highest + 1, encodeHead(['content-type', 'application/json', bad.name, 'v'])));
      return /^invalid header field from the worker$/;
    case 'windowZero': {
      const id = aLiveStream(m, bad.pick);
      m.frames.push(frame(Msg.WINDOW, id, u32(0)));
      return /^WINDOW increment of 0$/;
    }
    case 'windowEarly': {
      // The upstream refuses connections: no response data is ever sent, so no credit may come back.
      const id = aLiveStream(m, bad.pick);
      m.frames.push(frame(Msg.WINDOW, id, u32(bad.increment)));
      return new RegExp(`^WINDOW before any response data on stream ${id}$`);
    }
    case 'overrun': {
      // No credit is ever returned (the upstream never takes the body): one byte past the window is fatal.
      const id = aLiveStream(m, bad.pick);
      const s = m.streams.get(id) as StreamModel;
      let beyond = INITIAL_STREAM_WINDOW - s.sent + bad.extra;
      while (beyond > 0) {
        const n = Math.min(beyond, MAX_DATA_PAYLOAD);
        m.frames.push(frame(Msg.REQUEST_DATA, id, Buffer.alloc(n, 0x62)));
        s.sent += n;
        beyond -= n;
      }
      return new RegExp(`^stream ${id} sent \\d+ bytes beyond its ${INITIAL_STREAM_WINDOW}-byte window$`);
    }
    case 'dumpUnopened': {
      ensureReady(m);
      const id = m.highest + bad.gap;
      return dumpFrames(
        m,
        [frame(Msg.DUMP_FILE, id, DUMP_FILE_PAYLOAD)],
        `DUMP_FILE for stream ${id}, which was never opened`,
      );
    }
    case 'dumpTwice': {
      // The first file is a valid one: within the quota of two per stream opened.
      const id = m.highest > 0 && m.dumpFiles < 2 * m.highest ? m.highest : openStream(m);
      const twice = [frame(Msg.DUMP_FILE, id, DUMP_FILE_PAYLOAD), frame(Msg.DUMP_FILE, id, DUMP_FILE_PAYLOAD)];
      return dumpFrames(m, twice, `DUMP_FILE on stream ${id} while another is open`);
    }
    case 'dumpQuota': {
      // Empty files up to the quota of two per stream opened, then one more.
      const id = m.highest > 0 ? m.highest : openStream(m);
      const files: Buffer[] = [];
      for (; m.dumpFiles < 2 * m.highest; m.dumpFiles++) {
        files.push(frame(Msg.DUMP_FILE, id, DUMP_FILE_PAYLOAD), frame(Msg.DUMP_END, id));
      }
      files.push(frame(Msg.DUMP_FILE, id, DUMP_FILE_PAYLOAD));
      return dumpFrames(m, files, `more than 2 dump files per stream (${m.highest} opened)`);
    }
    case 'dumpWithoutFile': {
      const id = m.highest > 0 ? m.highest : openStream(m);
      const orphan = bad.end ? frame(Msg.DUMP_END, id) : frame(Msg.DUMP_DATA, id, Buffer.from('{}'));
      return dumpFrames(m, [orphan], `${bad.end ? 'DUMP_END' : 'DUMP_DATA'} on stream ${id} without DUMP_FILE`);
    }
    case 'dumpBadFile': {
      const id = m.highest > 0 ? m.highest : openStream(m);
      const payload = Buffer.alloc(9);
      payload[0] = bad.kindByte;
      payload.writeBigUInt64BE(bad.time, 1);
      const known = bad.kindByte < 2;
      const reason = known ? 'DUMP_FILE time out of range' : `DUMP_FILE of unknown kind ${bad.kindByte}`;
      return dumpFrames(m, [frame(Msg.DUMP_FILE, id, payload)], reason);
    }
  }
}

const DUMP_FILE_PAYLOAD = encodeDumpFile('request', 1_700_000_000_000);

/** Dump frames that break the receiver's rules; without --dump-dir the first is the table's refusal instead. */
function dumpFrames(m: Model, frames: Buffer[], reason: string): RegExp {
  m.frames.push(...frames);
  const first = specOf((frames[0] as Buffer)[4] as number);
  return new RegExp(`^${escapeRegExp(m.flags.dumps ? reason : `${first.name} without --dump-dir`)}$`);
}

/** After a violation: frames that would be dispatched (and open calls) if the Monitor still listened. */
export const suffixArb = fc.array(
  fc.oneof(
    fc.constant('ready' as const),
    fc.constant('drained' as const),
    fc.constant('open' as const),
    fc.constant('startupFailed' as const),
    bytesArb(256),
  ),
  { maxLength: 8 },
);

type SuffixItem = 'ready' | 'drained' | 'open' | 'startupFailed' | Buffer;

export function suffixBytes(m: Model, items: readonly SuffixItem[]): Buffer[] {
  let next = m.highest + 1;
  return items.map((item) => {
    if (item === 'ready') return frame(Msg.READY, 0);
    if (item === 'drained') return frame(Msg.DRAINED, 0);
    if (item === 'startupFailed') return frame(Msg.STARTUP_FAILED, 0, Buffer.from('late'));
    if (item === 'open') return frame(Msg.OPEN, next++, HEAD);
    return item;
  });
}

/** A valid prefix, one invalid frame, more input: the case both the in-process and the process tests throw. */
export const invalidCaseArb = fc.record({
  flags: flagsArb,
  draining: fc.boolean(),
  ops: prefixArb,
  bad: badArb,
  suffix: suffixArb,
  chunking: chunkingArb,
});

export type InvalidCase = typeof invalidCaseArb extends fc.Arbitrary<infer T> ? T : never;

/** An invalid case in bytes: the valid prefix, and the invalid frame(s) and what follows. */
export interface BuiltCase {
  readonly prefix: Buffer;
  readonly rest: Buffer;
  /** The reason the supervisor must give. */
  readonly reason: RegExp;
  /**
   * Calls of the prefix that reach the upstream before the violation, given time: streams not reset
   * that sent body bytes or ended (a streamed body's request head leaves with its first bytes).
   */
  readonly callsInPrefix: number;
}

export function buildInvalidCase(c: InvalidCase, options: { readyFirst?: boolean } = {}): BuiltCase {
  const model = newModel(c.flags, c.draining);
  if (options.readyFirst === true) ensureReady(model);
  applyValidOps(model, c.ops);
  const prefix = Buffer.concat(model.frames);
  const callsInPrefix = [...model.streams.values()].filter((s) => !s.reset && (s.sent > 0 || s.ended)).length;
  const before = model.frames.length;
  const reason = applyBad(model, c.bad);
  const rest = Buffer.concat([...model.frames.slice(before), ...suffixBytes(model, c.suffix)]);
  return { prefix, rest, reason, callsInPrefix };
}

/**
 * For a worker process under a real supervisor that served (READY first) and
 * an upstream that answers: a case drawn from `seed`, the same in the test and
 * in the hostile worker.
 */
export function processCase(seed: number, flags: ChannelConfig): { chunks: Buffer[]; reason: RegExp; kind: Bad['k'] } {
  // A SHUTDOWN in the prefix would stop the proxy (as it should): the case is about what comes after the prefix.
  const arb = invalidCaseArb
    .filter((c) => !UPSTREAM_DEPENDENT.has(c.bad.k))
    .map((c): InvalidCase => ({ ...c, flags, draining: false, ops: c.ops.filter((op) => op.k !== 'shutdown') }));
  const [c] = fc.sample(arb, { seed, numRuns: 1 }) as [InvalidCase];
  const { prefix, rest, reason } = buildInvalidCase(c, { readyFirst: true });
  return { chunks: split(Buffer.concat([prefix, rest]), c.chunking.cuts), reason, kind: c.bad.k };
}

// ------------------------------------------------------------------ mutations of a valid sequence

export type Mutation =
  /** One byte anywhere (header or payload) changed. */
  | { readonly k: 'flip'; readonly at: number; readonly offset: number; readonly xor: number }
  /** The declared length no longer matches the payload (truncated or overlong). */
  | { readonly k: 'length'; readonly at: number; readonly delta: number }
  /** Another type: often one of the table's, valid elsewhere. */
  | { readonly k: 'type'; readonly at: number; readonly type: number }
  /** Another stream id: 0, a neighbour, a reused, never-opened or huge one. */
  | { readonly k: 'stream'; readonly at: number; readonly id: number }
  | { readonly k: 'drop'; readonly at: number }
  | { readonly k: 'duplicate'; readonly at: number }
  | { readonly k: 'swap'; readonly at: number; readonly with: number }
  /** The frame's bytes cut short: what follows is read as the rest of it. */
  | { readonly k: 'cut'; readonly at: number; readonly keep: number }
  | { readonly k: 'insert'; readonly at: number; readonly bytes: Buffer };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), offset: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({
    k: fc.constant('length' as const),
    at: fc.nat(),
    delta: fc.oneof(fc.constantFrom(-1, 1, -4, 4), fc.integer({ min: -70_000, max: 70_000 }), u32Arb),
  }),
  fc.record({
    k: fc.constant('type' as const),
    at: fc.nat(),
    type: fc.oneof(fc.constantFrom(...ALL_TYPES), fc.integer({ min: 0, max: 255 })),
  }),
  fc.record({
    k: fc.constant('stream' as const),
    at: fc.nat(),
    id: fc.oneof(fc.constantFrom(0, 1, 2, 3, 0xffffffff), fc.integer({ min: 1, max: 40 }), u32Arb),
  }),
  fc.record({ k: fc.constant('drop' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('swap' as const), at: fc.nat(), with: fc.nat() }),
  fc.record({ k: fc.constant('cut' as const), at: fc.nat(), keep: fc.nat() }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), bytes: fc.oneof(bytesArb(64), randomSegmentArb) }),
);

/** The frames with one mutation applied (a copy; `frames` is not changed). */
export function mutate(frames: readonly Buffer[], mutation: Mutation): Buffer[] {
  const out = [...frames];
  if (out.length === 0) return out;
  const i = mutation.at % out.length;
  const target = Buffer.from(out[i] as Buffer);
  // A piece cut short or inserted earlier may have no whole header to change.
  const headerless = target.length < FRAME_HEADER_BYTES;
  if (headerless && (mutation.k === 'length' || mutation.k === 'type' || mutation.k === 'stream')) return out;
  if (target.length === 0 && (mutation.k === 'flip' || mutation.k === 'cut')) return out;
  switch (mutation.k) {
    case 'flip': {
      const offset = mutation.offset % target.length;
      target[offset] = (target[offset] as number) ^ mutation.xor;
      out[i] = target;
      break;
    }
    case 'length':
      target.writeUInt32BE((target.readUInt32BE(0) + mutation.delta) >>> 0, 0);
      out[i] = target;
      break;
    case 'type':
      target[4] = mutation.type;
      out[i] = target;
      break;
    case 'stream':
      target.writeUInt32BE(mutation.id >>> 0, 5);
      out[i] = target;
      break;
    case 'drop':
      out.splice(i, 1);
      break;
    case 'duplicate':
      out.splice(i, 0, target);
      break;
    case 'swap': {
      const j = mutation.with % out.length;
      out[i] = out[j] as Buffer;
      out[j] = target;
      break;
    }
    case 'cut':
      out[i] = target.subarray(0, mutation.keep % target.length);
      break;
    case 'insert':
      out.splice(i, 0, mutation.bytes);
      break;
  }
  return out;
}

/** Frames of every kind with loosely valid contents, for the mixed property. */
export const mixedFrameArb: fc.Arbitrary<Buffer> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.integer({ min: 0, max: 24 }), fc.oneof(headersArb, junkHeadersArb))
      .map(([id, h]) => frame(Msg.OPEN, id, encodeHead(h))),
  },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.integer({ min: 0, max: 24 }),
        fc.oneof(fc.integer({ min: 0, max: 2048 }), fc.integer({ min: 0, max: 70_000 })),
      )
      .map(([id, n]) => frame(Msg.REQUEST_DATA, id, Buffer.alloc(n, 0x63))),
  },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 24 }).map((id) => frame(Msg.REQUEST_END, id)) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 24 }).map((id) => frame(Msg.RESET, id)) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.integer({ min: 0, max: 24 }), fc.oneof(fc.integer({ min: 0, max: 300_000 }), u32Arb))
      .map(([id, inc]) => frame(Msg.WINDOW, id, u32(inc))),
  },
  { weight: 1, arbitrary: fc.constantFrom(Msg.READY, Msg.DRAINED, Msg.SHUTDOWN).map((t) => frame(t, 0)) },
  { weight: 1, arbitrary: bytesArb(1100).map((b) => frame(Msg.STARTUP_FAILED, 0, b)) },
  { weight: 1, arbitrary: randomSegmentArb },
);
