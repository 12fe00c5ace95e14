// Property-based fuzzing (fast-check) of the supervisor's side of the IPC
// channel: the REAL Monitor (frame decoder + the protocol table's dispatcher +
// UpstreamCall handlers) reading from a REAL AF_UNIX socketpair, with a real Upstream
// (undici pool, real AuthHeader in secure memory). A hostile worker may write
// any byte sequence; whatever it writes, the Monitor must never throw out of
// receive(), must report at most one violation, must keep its memory bounded
// (decoder buffer ≤ the largest frame, open calls ≤ MAX_OPEN_STREAMS), and
// after a violation must ignore everything that follows.
//
// Seeded: every run prints its seed; rerun a failure with FC_SEED=<seed>.
// Shrinking is off by default (bounded run time); FC_SHRINK=1 turns it on.
// FC_RUNS_FACTOR=<n> multiplies the number of cases (deeper local runs).

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { WebSocketServer } from 'ws';
import { MAX_OPEN_STREAMS } from '../src/shared/constants.js';
import {
  FRAME_HEADER_BYTES,
  FrameWriter,
  INITIAL_STREAM_WINDOW,
  MAX_DATA_PAYLOAD,
  MESSAGE_SPECS,
  Msg,
  encodeHead,
  type MsgType,
} from '../src/shared/ipcProtocol.js';
import { createLogger } from '../src/shared/logger.js';
import { readAuthHeader, type AuthHeader } from '../src/supervisor/authHeader.js';
import { Monitor, type MonitorEvents } from '../src/supervisor/monitor.js';
import { Upstream } from '../src/supervisor/upstream.js';
import { loadWebSocketClient } from '../src/supervisor/upstreamSocket.js';
import { reserveClosedPort, type ClosedPort } from './helpers/closedPort.js';
import { ControlledUpstream } from './helpers/controlledUpstream.js';
import { socketPair } from './helpers/socketPair.js';

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Date.now() % 0x7fffffff;
const SHRINK = process.env.FC_SHRINK === '1';
/** FC_RUNS_FACTOR=10 for a deeper local run (CI uses 1). */
const RUNS_FACTOR = Math.max(1, Number(process.env.FC_RUNS_FACTOR ?? 1));

const ALL_TYPES = [...MESSAGE_SPECS.keys()];
const WORKER_TYPES = [...MESSAGE_SPECS].filter(([, s]) => s.from !== 'supervisor').map(([t]) => t);
const SUPERVISOR_TYPES = [...MESSAGE_SPECS].filter(([, s]) => s.from === 'supervisor').map(([t]) => t);
const UNKNOWN_TYPES = Array.from({ length: 256 }, (_, t) => t).filter((t) => !MESSAGE_SPECS.has(t));
const STREAM_TYPES = WORKER_TYPES.filter((t) => MESSAGE_SPECS.get(t)?.onStream === true);
const CONNECTION_TYPES = WORKER_TYPES.filter((t) => MESSAGE_SPECS.get(t)?.onStream === false);
/** Worker messages whose only condition is READY having passed (no flag enables them). */
const AFTER_READY_TYPES = WORKER_TYPES.filter((t) => MESSAGE_SPECS.get(t)?.when.join() === 'afterReady');
/** The largest frame any side may send: the decoder must never hold more than this. */
const LARGEST_FRAME = FRAME_HEADER_BYTES + Math.max(...[...MESSAGE_SPECS.values()].map((s) => s.maxPayload));
const TEST_KEY = 'sk-fuzzKEY_0123456789abcdef';
const silentLog = createLogger('supervisor', 'silent');

// ------------------------------------------------------------------ frames

function header(type: number, length: number, streamId: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(length >>> 0, 0);
  h[4] = type;
  h.writeUInt32BE(streamId >>> 0, 5);
  return h;
}

function frame(type: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([header(type, payload.length, streamId), payload]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** Cut `bytes` at the given points (mod length): the chunks the worker end writes one by one. */
function split(bytes: Buffer, cuts: readonly number[]): Buffer[] {
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

// ------------------------------------------------------------------ the harness

interface CaseReport {
  throws: unknown[];
  violations: string[];
  dispatched: number;
  dispatchedAfterViolation: number;
  eventsAfterViolation: number;
  events: Record<'ready' | 'shutdown' | 'startupFailed' | 'drained', number>;
  maxBuffered: number;
  maxOpenStreams: number;
  openStreamsAtViolation: number | null;
  finalBuffered: number;
  finalOpenStreams: number;
  written: number;
  received: number;
  timedOut: boolean;
}

interface MonitorInternals {
  readonly channel: {
    dispatch(type: MsgType, streamId: number, payload: Buffer): void;
    readonly bufferedBytes: number;
  };
}

interface CaseOptions {
  readonly httpShutdown?: boolean;
  /** Wait for each chunk to be consumed before writing the next (keeps chunk boundaries). */
  readonly stepwise?: boolean;
  /** With stepwise: also wait this long after each chunk (lets asynchronous upstream events interleave). */
  readonly delayMs?: number;
  /** --websocket: WS_OPEN opens a real upstream WebSocket (ws) instead of being a violation. */
  readonly webSocket?: boolean;
  /** The supervisor says DRAIN before the worker's first byte (DRAINED is permitted). */
  readonly draining?: boolean;
  /** How long the supervisor end may take to read what was written (default CONSUME_TIMEOUT_MS). */
  readonly consumeTimeoutMs?: number;
}

const CONSUME_TIMEOUT_MS = 5_000;
/** A flood of MAX_OPEN_STREAMS OPENs starts as many upstream calls: slow on a loaded machine. */
const FLOOD_CONSUME_TIMEOUT_MS = 30_000;

/** Totals over the cases of one property, printed so a run shows what it exercised. */
const stats = { cases: 0, bytes: 0, frames: 0, violations: 0, maxBuffered: 0, maxOpenStreams: 0 };

function resetStats(): void {
  Object.assign(stats, { cases: 0, bytes: 0, frames: 0, violations: 0, maxBuffered: 0, maxOpenStreams: 0 });
}

/**
 * A fresh Monitor on a fresh socketpair: write `chunks` into the worker end,
 * wait until the supervisor end has read every byte, report what happened.
 */
async function runCase(upstream: Upstream, chunks: readonly Buffer[], options: CaseOptions = {}): Promise<CaseReport> {
  const pair = socketPair();
  const supervisorEnd = pair.a;
  const workerEnd = pair.b;
  const report: CaseReport = {
    throws: [],
    violations: [],
    dispatched: 0,
    dispatchedAfterViolation: 0,
    eventsAfterViolation: 0,
    events: { ready: 0, shutdown: 0, startupFailed: 0, drained: 0 },
    maxBuffered: 0,
    maxOpenStreams: 0,
    openStreamsAtViolation: null,
    finalBuffered: 0,
    finalOpenStreams: 0,
    written: 0,
    received: 0,
    timedOut: false,
  };
  let violated = false;
  const note = (event: keyof CaseReport['events']): void => {
    if (violated) report.eventsAfterViolation++;
    report.events[event]++;
  };
  // eslint-disable-next-line prefer-const -- assigned after the events that refer to it
  let monitor: Monitor;
  const events: MonitorEvents = {
    onReady: () => note('ready'),
    onShutdownRequest: () => note('shutdown'),
    onStartupFailed: () => note('startupFailed'),
    onDrained: () => note('drained'),
    onViolation: (reason) => {
      report.violations.push(reason);
      report.openStreamsAtViolation = monitor.openStreams;
      violated = true;
    },
  };
  if (options.webSocket === true) await loadWebSocketClient(); // as startProxy does with --websocket
  monitor = new Monitor(
    new FrameWriter(supervisorEnd),
    upstream,
    {
      httpShutdown: options.httpShutdown ?? false,
      dumps: null,
      webSocketMaxMessageBytes: options.webSocket === true ? 1024 * 1024 : null,
      allowModel: false,
      policy: null,
    },
    silentLog,
    events,
  );
  if (options.draining === true) monitor.drain();
  const { channel } = monitor as unknown as MonitorInternals;
  const realDispatch = channel.dispatch.bind(channel);
  channel.dispatch = (type, streamId, payload) => {
    if (violated) report.dispatchedAfterViolation++;
    else report.dispatched++;
    try {
      realDispatch(type, streamId, payload);
    } finally {
      report.maxOpenStreams = Math.max(report.maxOpenStreams, monitor.openStreams);
    }
  };

  let received = 0;
  let wake: (() => void) | null = null;
  supervisorEnd.on('data', (chunk: Buffer) => {
    received += chunk.length;
    try {
      monitor.receive(chunk);
    } catch (err) {
      report.throws.push(err);
    }
    report.maxBuffered = Math.max(report.maxBuffered, channel.bufferedBytes);
    report.maxOpenStreams = Math.max(report.maxOpenStreams, monitor.openStreams);
    wake?.();
  });
  workerEnd.resume(); // whatever the supervisor answers (WINDOW, RESPONSE_*) is drained

  const consumed = (target: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (received >= target) return resolve(true);
      const timer = setTimeout(() => {
        wake = null;
        resolve(received >= target);
      }, options.consumeTimeoutMs ?? CONSUME_TIMEOUT_MS);
      wake = () => {
        if (received < target) return;
        clearTimeout(timer);
        wake = null;
        resolve(true);
      };
    });

  try {
    for (const chunk of chunks) {
      if (chunk.length === 0) continue;
      workerEnd.write(chunk);
      report.written += chunk.length;
      if (options.stepwise && !(await consumed(report.written))) {
        report.timedOut = true;
        break;
      }
      if (options.stepwise && options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
    }
    if (!report.timedOut && !(await consumed(report.written))) report.timedOut = true;
    report.received = received;
    report.finalBuffered = channel.bufferedBytes;
    report.finalOpenStreams = monitor.openStreams;
    stats.cases++;
    stats.bytes += report.received;
    stats.frames += report.dispatched;
    stats.violations += report.violations.length;
    stats.maxBuffered = Math.max(stats.maxBuffered, report.maxBuffered);
    stats.maxOpenStreams = Math.max(stats.maxOpenStreams, report.maxOpenStreams);
  } finally {
    monitor.abandonAll('test over');
    pair.destroy();
  }
  return report;
}

/** What must hold whatever the worker wrote. */
function checkInvariants(r: CaseReport): void {
  assert.equal(
    r.timedOut,
    false,
    `the supervisor end did not read all ${r.written} bytes within ${CONSUME_TIMEOUT_MS} ms (read ${r.received})`,
  );
  assert.equal(r.received, r.written, 'every byte written was read');
  assert.deepEqual(r.throws.map(String), [], 'Monitor.receive() threw');
  assert.ok(r.violations.length <= 1, `more than one violation reported: ${JSON.stringify(r.violations)}`);
  assert.ok(r.maxBuffered <= LARGEST_FRAME, `decoder held ${r.maxBuffered} bytes (largest frame ${LARGEST_FRAME})`);
  assert.ok(r.maxOpenStreams <= MAX_OPEN_STREAMS, `${r.maxOpenStreams} open calls (limit ${MAX_OPEN_STREAMS})`);
  if (r.violations.length === 1) {
    assert.equal(r.dispatchedAfterViolation, 0, 'frames were dispatched after the violation');
    assert.equal(r.eventsAfterViolation, 0, 'events fired after the violation');
    assert.equal(r.openStreamsAtViolation, 0, 'open calls were not all cancelled at the violation');
    assert.equal(r.finalOpenStreams, 0, 'calls opened after the violation');
    assert.equal(r.finalBuffered, 0, 'the decoder kept bytes after the violation');
  }
}

// ------------------------------------------------------------------ arbitraries

const chunkingArb = fc.record({ cuts: fc.array(fc.nat(), { maxLength: 16 }), stepwise: fc.boolean() });
const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
const bytesArb = (maxLength: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((u) => Buffer.from(u));

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split('');
const VALUE_CHARS = ' \tabcdefghijklmnopqrstuvwxyz0123456789-_=;,/:"{}[]\u00e9\u00ff'.split('');
const tokenArb = fc
  .string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 24 })
  .filter((n) => !['host', 'authorization', 'content-length', 'transfer-encoding', 'expect'].includes(n.toLowerCase()));
const valueArb = fc.string({ unit: fc.constantFrom(...VALUE_CHARS), maxLength: 64 });
/** A header list the worker's HTTP parser could have produced. */
const headersArb = fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 8 }).map((pairs) => pairs.flat());
/** Anything at all, as latin1 strings (names and values the parser could never produce included). */
const junkHeadersArb = fc
  .array(fc.tuple(fc.string({ unit: 'binary', maxLength: 16 }), fc.string({ unit: 'binary', maxLength: 32 })), {
    maxLength: 6,
  })
  .map((pairs) => pairs.flat().map((s) => Buffer.from(s, 'utf8').toString('latin1')));

/** Random bytes, and random frame headers followed by random bytes. */
const randomSegmentArb = fc.oneof(
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
        const spec = MESSAGE_SPECS.get(type);
        const length = Math.max(spec?.minPayload ?? 0, Math.min(bytes.length, spec?.maxPayload ?? 0));
        const payload = Buffer.concat([bytes, Buffer.alloc(Math.max(0, length - bytes.length))]).subarray(0, length);
        return frame(type, spec?.onStream ? id : 0, payload);
      }),
  },
);

// A model of a well-behaved worker: ops interpreted against the protocol state.
type Op =
  | { readonly k: 'ready' }
  | { readonly k: 'drained' }
  | { readonly k: 'startupFailed'; readonly text: Buffer }
  | { readonly k: 'open'; readonly gap: number; readonly headers: string[] }
  | { readonly k: 'data'; readonly pick: number; readonly size: number }
  | { readonly k: 'end'; readonly pick: number }
  | { readonly k: 'reset'; readonly pick: number }
  | { readonly k: 'shutdown' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  // Frequent: streams open only after READY.
  { weight: 4, arbitrary: fc.constant({ k: 'ready' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'drained' as const }) },
  {
    weight: 1,
    arbitrary: fc
      .uint8Array({ minLength: 1, maxLength: 64 })
      .map((t) => ({ k: 'startupFailed' as const, text: Buffer.from(t) })),
  },
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
);

interface StreamModel {
  sent: number;
  ended: boolean;
  reset: boolean;
}

interface Model {
  /** The supervisor said DRAIN before the worker's first frame. */
  readonly draining: boolean;
  ready: boolean;
  startupFailed: boolean;
  highest: number;
  readonly streams: Map<number, StreamModel>;
  readonly frames: Buffer[];
  readonly expected: CaseReport['events'];
}

const HEAD = encodeHead(['content-type', 'application/json']);
const WS_HEAD = encodeHead([
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
const WS_STREAM_TYPES = [
  Msg.WS_TEXT_PART,
  Msg.WS_TEXT_END,
  Msg.WS_BINARY_PART,
  Msg.WS_BINARY_END,
  Msg.WS_CLOSE,
  Msg.WINDOW,
  Msg.RESET,
] as const;

function newModel(draining = false): Model {
  const expected = { ready: 0, shutdown: 0, startupFailed: 0, drained: 0 };
  return { draining, ready: false, startupFailed: false, highest: 0, streams: new Map(), frames: [], expected };
}

function say(m: Model, event: 'ready' | 'drained' | 'shutdown', type: MsgType): void {
  m.expected[event]++;
  m.frames.push(frame(type, 0));
}

/** READY, unless said already: streams are opened only after it. */
function ensureReady(m: Model): void {
  if (m.ready) return;
  m.ready = true;
  say(m, 'ready', Msg.READY);
}

function liveStreams(m: Model): number[] {
  return [...m.streams].filter(([, s]) => !s.ended).map(([id]) => id);
}

function openStream(m: Model, gap = 1, head = HEAD): number {
  ensureReady(m);
  const id = m.highest + gap;
  m.highest = id;
  m.streams.set(id, { sent: 0, ended: false, reset: false });
  m.frames.push(frame(Msg.OPEN, id, head));
  return id;
}

/** Frames a correct worker could send; skips ops that would be invalid in the current state. */
function applyValidOps(m: Model, ops: readonly Op[], httpShutdown: boolean): void {
  for (const op of ops) {
    switch (op.k) {
      case 'ready':
        ensureReady(m);
        break;
      case 'drained':
        if (m.draining) say(m, 'drained', Msg.DRAINED);
        break;
      case 'startupFailed':
        if (m.ready || m.startupFailed) break;
        m.startupFailed = true;
        m.expected.startupFailed++;
        m.frames.push(frame(Msg.STARTUP_FAILED, 0, op.text));
        break;
      case 'shutdown':
        if (httpShutdown && m.ready) say(m, 'shutdown', Msg.SHUTDOWN);
        break;
      case 'open':
        if (!m.ready || m.streams.size >= MAX_OPEN_STREAMS) break;
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

// One invalid frame (or short run of frames ending in one), with the reason the Monitor must give.
type Bad =
  | { readonly k: 'unknownType'; readonly type: number; readonly streamId: number; readonly length: number }
  | { readonly k: 'wrongSide'; readonly type: number; readonly streamId: number }
  | { readonly k: 'badLength'; readonly type: number; readonly length: number }
  | { readonly k: 'wrongStream'; readonly type: number; readonly streamId: number }
  | { readonly k: 'unopened'; readonly type: number; readonly gap: number }
  | { readonly k: 'reuse'; readonly pick: number }
  | { readonly k: 'readyTwice' }
  | { readonly k: 'wrongPhase'; readonly type: number }
  | { readonly k: 'startupFailedTwice' }
  | { readonly k: 'drainedEarly' }
  | { readonly k: 'shutdownDenied' }
  | { readonly k: 'badHead'; readonly headers: string[]; readonly trailing: boolean }
  | { readonly k: 'badHeaderField'; readonly name: string }
  | { readonly k: 'windowZero'; readonly pick: number }
  | { readonly k: 'windowEarly'; readonly pick: number; readonly increment: number }
  | { readonly k: 'overrun'; readonly pick: number; readonly extra: number };

const badArb: fc.Arbitrary<Bad> = fc.oneof(
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
    .filter(({ type, length }) => {
      const s = MESSAGE_SPECS.get(type);
      return s !== undefined && (length < s.minPayload || length > s.maxPayload);
    }),
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
  fc.constant({ k: 'readyTwice' as const }),
  fc.record({ k: fc.constant('wrongPhase' as const), type: fc.constantFrom(...AFTER_READY_TYPES) }),
  fc.constant({ k: 'startupFailedTwice' as const }),
  fc.constant({ k: 'drainedEarly' as const }),
  fc.constant({ k: 'shutdownDenied' as const }),
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
);

/** A payload of a length the spec accepts, for frames that must pass the decoder. */
function validPayloadFor(type: number): Buffer {
  if (type === Msg.OPEN) return HEAD;
  if (type === Msg.WINDOW) return u32(1);
  const s = MESSAGE_SPECS.get(type);
  return Buffer.alloc(s?.minPayload ?? 0, 0x41);
}

/** Append the invalid frame(s) to the model's frames; returns the expected reason. */
function applyBad(m: Model, bad: Bad): RegExp {
  switch (bad.k) {
    case 'unknownType':
      m.frames.push(header(bad.type, bad.length, bad.streamId));
      return new RegExp(`^unknown message type 0x${bad.type.toString(16)}$`);
    case 'wrongSide':
      m.frames.push(header(bad.type, 0, bad.streamId));
      return /may not be sent by the worker$/;
    case 'badLength':
      m.frames.push(header(bad.type, bad.length, MESSAGE_SPECS.get(bad.type)?.onStream ? m.highest + 1 : 0));
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
    case 'readyTwice':
      if (!m.ready) m.frames.push(frame(Msg.READY, 0));
      m.frames.push(frame(Msg.READY, 0));
      return /^READY sent twice$/;
    case 'wrongPhase': {
      // Before READY a stream frame; after it, "cannot start".
      if (m.ready) {
        m.frames.push(frame(Msg.STARTUP_FAILED, 0, Buffer.from('late')));
        return m.startupFailed ? /^STARTUP_FAILED sent twice$/ : /^STARTUP_FAILED after READY$/;
      }
      const name = MESSAGE_SPECS.get(bad.type)?.name as string;
      m.frames.push(frame(bad.type, m.highest + 1, validPayloadFor(bad.type)));
      return new RegExp(`^${name} before READY$`);
    }
    case 'startupFailedTwice':
      if (!m.ready && !m.startupFailed) m.frames.push(frame(Msg.STARTUP_FAILED, 0, Buffer.from('first')));
      m.frames.push(frame(Msg.STARTUP_FAILED, 0, Buffer.from('again')));
      return m.ready && !m.startupFailed ? /^STARTUP_FAILED after READY$/ : /^STARTUP_FAILED sent twice$/;
    case 'drainedEarly':
      m.frames.push(frame(Msg.DRAINED, 0));
      return /^DRAINED before DRAIN$/;
    case 'shutdownDenied':
      m.frames.push(frame(Msg.SHUTDOWN, 0));
      return /^SHUTDOWN without --http-shutdown$/;
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
  }
}

/** After a violation: frames that would be dispatched (and open calls) if the Monitor still listened. */
const suffixArb = fc.array(
  fc.oneof(
    fc.constant('ready' as const),
    fc.constant('drained' as const),
    fc.constant('open' as const),
    fc.constant('startupFailed' as const),
    bytesArb(256),
  ),
  { maxLength: 8 },
);

function suffixBytes(
  m: Model,
  items: ReadonlyArray<'ready' | 'drained' | 'open' | 'startupFailed' | Buffer>,
): Buffer[] {
  let next = m.highest + 1;
  return items.map((item) => {
    if (item === 'ready') return frame(Msg.READY, 0);
    if (item === 'drained') return frame(Msg.DRAINED, 0);
    if (item === 'startupFailed') return frame(Msg.STARTUP_FAILED, 0, Buffer.from('late'));
    if (item === 'open') return frame(Msg.OPEN, next++, HEAD);
    return item;
  });
}

/** Frames of every kind with loosely valid contents, for the mixed property. */
const mixedFrameArb: fc.Arbitrary<Buffer> = fc.oneof(
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

// ------------------------------------------------------------------ the properties

function authHeaderFor(key: string): AuthHeader {
  const bytes = Buffer.from(`${key}\n`);
  let given = false;
  return readAuthHeader((buffer, offset, length) => {
    if (given) return 0;
    given = true;
    return bytes.copy(buffer, offset, 0, Math.min(length, bytes.length));
  });
}

describe('IPC fuzzing: the supervisor Monitor over a real socketpair', { timeout: 120_000 }, () => {
  let closedPort: ClosedPort;
  let mock: ControlledUpstream;
  let auth: AuthHeader;
  /** An upstream that refuses every connection: calls fail, request halves stay as the worker leaves them. */
  let refusing: Upstream;
  /** A real upstream that answers with a body larger than one credit window. */
  let answering: Upstream;
  /** A real WebSocket upstream that accepts every upgrade and echoes every message (POSTs get 404). */
  let echoing: Upstream;
  const echoServer = createServer((_req, res) => res.writeHead(404).end());
  let totalRuns = 0;
  let seedOffset = 0;

  before(async () => {
    closedPort = reserveClosedPort();
    mock = await ControlledUpstream.start((ex) => {
      void ex.body.then(() => {
        if (ex.res.destroyed) return;
        ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
        ex.res.write(Buffer.alloc(300 * 1024, 0x64));
        ex.res.end('done');
      });
    });
    auth = authHeaderFor(TEST_KEY);
    refusing = new Upstream(new URL(`http://127.0.0.1:${closedPort.port}/v1/responses`), auth, 5_000);
    answering = new Upstream(new URL(mock.url()), auth, 5_000);
    const webSockets = new WebSocketServer({ noServer: true });
    echoServer.on('upgrade', (req, socket, head) =>
      webSockets.handleUpgrade(req, socket, head, (ws) => {
        ws.on('error', () => {}); // fuzzed text is often not UTF-8: ws fails such a socket (1007)
        ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      }),
    );
    await new Promise<void>((resolve) => echoServer.listen(0, '127.0.0.1', resolve));
    echoing = new Upstream(
      new URL(`http://127.0.0.1:${(echoServer.address() as AddressInfo).port}/v1/responses`),
      auth,
      5_000,
    );
  });

  after(async () => {
    await refusing?.close();
    await answering?.close();
    await echoing?.close();
    echoServer.closeAllConnections();
    echoServer.close();
    await mock?.close();
    closedPort?.release();
    auth?.destroy();
  });

  /** fc.assert with a printed, reproducible seed (one per property, derived from SEED). */
  async function check<T>(
    t: { diagnostic(msg: string): void },
    name: string,
    arb: fc.Arbitrary<T>,
    numRuns: number,
    predicate: (value: T) => Promise<void>,
  ): Promise<void> {
    const seed = (SEED + seedOffset++) % 0x7fffffff;
    numRuns *= RUNS_FACTOR;
    t.diagnostic(`${name}: ${numRuns} runs, seed ${seed} (whole file: FC_SEED=${SEED})`);
    const startedAt = Date.now();
    resetStats();
    await fc.assert(fc.asyncProperty(arb, predicate), {
      numRuns,
      seed,
      endOnFailure: !SHRINK,
      includeErrorInReport: true,
    });
    totalRuns += numRuns;
    t.diagnostic(
      `${name}: passed in ${Date.now() - startedAt} ms; ${stats.cases} cases, ${stats.bytes} bytes read, ${stats.frames} frames dispatched, ` +
        `${stats.violations} violations, max decoder buffer ${stats.maxBuffered} B, max open calls ${stats.maxOpenStreams}`,
    );
  }

  test(
    'random bytes: never throws, at most one violation, bounded memory, deaf after a violation',
    { timeout: 60_000 },
    async (t) => {
      const segments = fc.array(randomSegmentArb, { minLength: 1, maxLength: 6, size: 'max' });
      const arb = fc.record({ ready: fc.boolean(), segments, chunking: chunkingArb });
      await check(t, 'random bytes', arb, 700, async ({ ready, segments, chunking }) => {
        // After READY too, so that stream frames reach their handlers.
        const bytes = Buffer.concat([ready ? frame(Msg.READY, 0) : Buffer.alloc(0), ...segments]);
        const options = { stepwise: chunking.stepwise, webSocket: true };
        const report = await runCase(refusing, split(bytes, chunking.cuts), options);
        checkInvariants(report);
      });
    },
  );

  test(
    'valid frame sequences, arbitrarily chunked: no violation, every frame dispatched once, every event delivered',
    { timeout: 60_000 },
    async (t) => {
      const ops = fc.array(opArb, { maxLength: 40, size: 'max' });
      const arb = fc.record({ ops, httpShutdown: fc.boolean(), draining: fc.boolean(), chunking: chunkingArb });
      await check(t, 'valid sequences', arb, 500, async ({ ops, httpShutdown, draining, chunking }) => {
        const m = newModel(draining);
        applyValidOps(m, ops, httpShutdown);
        const options = { httpShutdown, draining, stepwise: chunking.stepwise };
        const report = await runCase(refusing, split(Buffer.concat(m.frames), chunking.cuts), options);
        checkInvariants(report);
        assert.deepEqual(report.violations, [], 'a valid sequence was refused');
        assert.equal(report.dispatched, m.frames.length, 'every frame dispatched exactly once');
        assert.deepEqual(report.events, m.expected, 'events delivered');
        assert.equal(report.finalBuffered, 0, 'nothing left in the decoder after whole frames');
        // Open request halves are always tracked; reset streams never are; ended ones until their response half closes.
        const live = liveStreams(m).length;
        const endedOnly = [...m.streams.values()].filter((s) => s.ended && !s.reset).length;
        assert.ok(
          report.finalOpenStreams >= live && report.finalOpenStreams <= live + endedOnly,
          `${report.finalOpenStreams} open calls; ${live} live, ${endedOnly} ended`,
        );
      });
    },
  );

  test(
    'a valid prefix, then one invalid frame, then more input: exactly one violation with the right reason, the rest ignored',
    { timeout: 60_000 },
    async (t) => {
      const arb = fc.record({
        ops: fc.array(opArb, { maxLength: 30, size: 'max' }),
        bad: badArb,
        suffix: suffixArb,
        chunking: chunkingArb,
      });
      await check(t, 'invalid frame', arb, 700, async ({ ops, bad, suffix, chunking }) => {
        const m = newModel();
        applyValidOps(m, ops, false);
        const reason = applyBad(m, bad);
        const bytes = Buffer.concat([...m.frames, ...suffixBytes(m, suffix)]);
        const report = await runCase(refusing, split(bytes, chunking.cuts), { stepwise: chunking.stepwise });
        checkInvariants(report);
        assert.equal(
          report.violations.length,
          1,
          `exactly one violation for ${bad.k}; got ${JSON.stringify(report.violations)}`,
        );
        assert.match(report.violations[0] as string, reason);
      });
    },
  );

  const floods =
    `floods of OPENs: the ${MAX_OPEN_STREAMS + 1}th open stream is a violation, ` +
    `never more than ${MAX_OPEN_STREAMS} calls; opened-and-reset streams never accumulate`;
  test(floods, { timeout: 120_000 }, async (t) => {
    // Each flood near the limit starts thousands of upstream calls: few of those, more small ones.
    const few = fc.record({ n: fc.integer({ min: 1, max: 1100 }), chunking: chunkingArb });
    const nearLimit = fc.integer({ min: MAX_OPEN_STREAMS - 2, max: MAX_OPEN_STREAMS + 40 });
    const many = fc.record({ n: nearLimit, chunking: chunkingArb });
    type Flood = { n: number; chunking: { cuts: number[]; stepwise: boolean } };
    const floodOf = async ({ n, chunking }: Flood): Promise<void> => {
      const frames: Buffer[] = [frame(Msg.READY, 0)];
      for (let id = 1; id <= n; id++) frames.push(frame(Msg.OPEN, id, HEAD));
      frames.push(frame(Msg.DRAINED, 0)); // must be ignored after a violation
      const options = { stepwise: chunking.stepwise, draining: true, consumeTimeoutMs: FLOOD_CONSUME_TIMEOUT_MS };
      const report = await runCase(refusing, split(Buffer.concat(frames), chunking.cuts), options);
      checkInvariants(report);
      if (n > MAX_OPEN_STREAMS) {
        assert.deepEqual(report.violations, [`more than ${MAX_OPEN_STREAMS} open streams`]);
        assert.equal(report.maxOpenStreams, MAX_OPEN_STREAMS);
        assert.equal(report.events.drained, 0);
      } else {
        assert.deepEqual(report.violations, []);
        assert.equal(report.finalOpenStreams, n, 'every open request half is tracked');
        assert.equal(report.events.drained, 1);
      }
    };
    await check(t, 'flood of held OPENs', few, 16, floodOf);
    await check(t, 'flood of held OPENs up to the limit and beyond', many, 3, floodOf);
    const beyondLimit = fc.integer({ min: MAX_OPEN_STREAMS + 1, max: MAX_OPEN_STREAMS + 100 });
    const churn = fc.record({ n: beyondLimit, chunking: chunkingArb });
    await check(t, 'flood of OPEN+RESET', churn, 3, async ({ n, chunking }) => {
      const frames: Buffer[] = [frame(Msg.READY, 0)];
      for (let id = 1; id <= n; id++) frames.push(frame(Msg.OPEN, id, HEAD), frame(Msg.RESET, id));
      const options = { stepwise: chunking.stepwise, consumeTimeoutMs: FLOOD_CONSUME_TIMEOUT_MS };
      const report = await runCase(refusing, split(Buffer.concat(frames), chunking.cuts), options);
      checkInvariants(report);
      assert.deepEqual(report.violations, [], 'streams that were reset do not count as open');
      assert.ok(report.maxOpenStreams <= 1, `reset calls were not forgotten (max ${report.maxOpenStreams})`);
      assert.equal(report.finalOpenStreams, 0);
    });
  });

  test(
    'mixed valid and invalid frames, WebSockets too, against a real answering upstream: the invariants hold',
    { timeout: 60_000 },
    async (t) => {
      const itemArb = fc.oneof(
        { weight: 8, arbitrary: opArb.map((op) => ({ op })) },
        {
          weight: 3,
          arbitrary: fc.record({ window: fc.nat(), increment: fc.oneof(fc.integer({ min: 1, max: 300_000 }), u32Arb) }),
        },
        { weight: 1, arbitrary: mixedFrameArb.map((noise) => ({ noise })) },
        // WebSocket streams: opened (the HTTP mock refuses the upgrade; the echoing upstream accepts it), then frames of their kinds.
        { weight: 2, arbitrary: fc.constant({ wsOpen: true as const }) },
        {
          weight: 3,
          arbitrary: fc.record({ wsPick: fc.nat(), type: fc.constantFrom(...WS_STREAM_TYPES), data: bytesArb(300) }),
        },
      );
      const arb = fc.record({
        items: fc.array(itemArb, { minLength: 1, maxLength: 30, size: 'max' }),
        httpShutdown: fc.boolean(),
        delayMs: fc.integer({ min: 0, max: 1 }),
        echo: fc.boolean(),
      });
      await check(t, 'mixed frames', arb, 400, async ({ items, httpShutdown, delayMs, echo }) => {
        // One chunk per item, written with pauses so the upstream's answers interleave with the worker's frames.
        const m = newModel();
        ensureReady(m);
        const chunks: Buffer[] = [Buffer.concat(m.frames)];
        for (const item of items) {
          const before = m.frames.length;
          if ('op' in item) applyValidOps(m, [item.op], httpShutdown);
          else if ('noise' in item) m.frames.push(item.noise);
          else if ('wsOpen' in item) m.frames.push(frame(Msg.WS_OPEN, ++m.highest, WS_HEAD));
          else if ('wsPick' in item) {
            if (m.highest === 0) continue;
            const payload =
              item.type === Msg.WS_CLOSE
                ? Buffer.concat([Buffer.from([0x03, 0xe8]), item.data.subarray(0, 100)])
                : item.type === Msg.WINDOW
                  ? u32(1 + item.data.length)
                  : item.type === Msg.RESET
                    ? Buffer.alloc(0)
                    : item.data;
            if (payload.length === 0 && (item.type === Msg.WS_TEXT_PART || item.type === Msg.WS_BINARY_PART)) continue;
            m.frames.push(frame(item.type, 1 + (item.wsPick % m.highest), payload));
          } else if (m.highest > 0)
            m.frames.push(frame(Msg.WINDOW, 1 + (item.window % m.highest), u32(item.increment)));
          if (m.frames.length > before) chunks.push(Buffer.concat(m.frames.slice(before)));
        }
        const report = await runCase(echo ? echoing : answering, chunks, {
          httpShutdown,
          stepwise: true,
          delayMs,
          webSocket: true,
        });
        checkInvariants(report);
      });
    },
  );

  test('at least 2000 cases ran in this file', { timeout: 5_000 }, (t) => {
    t.diagnostic(`total fast-check runs: ${totalRuns}; FC_SEED=${SEED}`);
    assert.ok(totalRuns >= 2000, `only ${totalRuns} runs`);
  });
});
