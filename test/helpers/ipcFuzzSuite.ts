// Property-based fuzzing (fast-check) of the supervisor's side of the IPC
// channel: the REAL Monitor (frame decoder + the protocol table's dispatcher +
// UpstreamCall handlers) reading from a REAL AF_UNIX socketpair, with a real Upstream
// (undici pool, real AuthHeader in secure memory). A hostile worker may write
// any byte sequence; whatever it writes, the Monitor must never throw out of
// receive(), must report at most one violation (a ProtocolError: no handler
// fails on what it was given), must keep its memory bounded (decoder buffer ≤
// the largest frame, open calls ≤ MAX_OPEN_STREAMS), and after a violation
// must have abandoned every upstream call of that worker and ignore everything
// that follows; the next worker's Monitor, on the same Upstream, still serves.
//
// One generator (ipcFuzzCases.ts), run in two shares: a small one in `npm test`
// (test/ipcFuzz.test.ts) and the bulk in `npm run test:soak`
// (test/soak/ipcFuzzSoak.test.ts). Seeded: every run prints its seed; rerun a
// failure with FUZZ_SEED=<seed>. Shrinking is off by default (bounded run
// time); FUZZ_SHRINK=1 turns it on. FUZZ_RUNS_FACTOR=<n> multiplies the number
// of cases (deeper local runs).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { WebSocket, WebSocketServer } from 'ws';
import { MAX_OPEN_STREAMS } from '../../src/shared/constants.js';
import {
  FrameDecoder,
  FrameWriter,
  Msg,
  decodeHead,
  dumpFileLimit,
  encodeHead,
  type ChannelConfig,
  type MsgType,
} from '../../src/shared/ipcProtocol.js';
import { createLogger } from '../../src/shared/logger.js';
import { readAuthHeader, type AuthHeader } from '../../src/supervisor/authHeader.js';
import { ClientPolicy } from '../../src/supervisor/clientPolicy.js';
import { DumpDirectory, DumpReceiver } from '../../src/supervisor/dumpFiles.js';
import { Monitor, type MonitorEvents, type MonitorOptions } from '../../src/supervisor/monitor.js';
import type { PolicyOptions } from '../../src/supervisor/startup/policyOptions.js';
import { Upstream } from '../../src/supervisor/upstream.js';
import { loadWebSocketClient } from '../../src/supervisor/upstreamSocket.js';
import { reserveClosedPort, type ClosedPort } from './closedPort.js';
import { ControlledUpstream, answerJson, type Exchange } from './controlledUpstream.js';
import {
  FOLLOW_UP_TAG_HEADER,
  HEAD,
  LARGEST_FRAME,
  NO_FLAGS,
  UPSTREAM_DEPENDENT,
  WS_HEAD,
  WS_STREAM_TYPES,
  applyValidOps,
  buildInvalidCase,
  bytesArb,
  chunkingArb,
  ensureReady,
  flagsArb,
  frame,
  invalidCaseArb,
  liveStreams,
  mixedFrameArb,
  mutate,
  mutationArb,
  newModel,
  opArb,
  randomSegmentArb,
  split,
  u32,
  u32Arb,
  type EventCounts,
} from './ipcFuzzCases.js';
import { waitFor } from './proxyProcess.js';
import { socketPair } from './socketPair.js';

/** The seed of this run (each property derives its own from it). */
export const FUZZ_SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Date.now() % 0x7fffffff;
const SHRINK = process.env.FUZZ_SHRINK === '1';
/** FUZZ_RUNS_FACTOR=10 for a deeper local run (CI uses 1). */
export const RUNS_FACTOR = Math.max(1, Number(process.env.FUZZ_RUNS_FACTOR ?? 1));
const TEST_KEY = 'sk-fuzzKEY_0123456789abcdef';
const FOLLOW_UP_TAG = 'follow-up';
const silentLog = createLogger('supervisor', 'silent');

// ------------------------------------------------------------------ the harness

interface CaseReport {
  throws: unknown[];
  violations: string[];
  dispatched: number;
  dispatchedAfterViolation: number;
  eventsAfterViolation: number;
  events: EventCounts;
  maxBuffered: number;
  maxOpenStreams: number;
  openStreamsAtViolation: number | null;
  /** Calls of this worker the watched upstream held open when the violation came, and still held after it. */
  upstreamOpenAtViolation: number;
  upstreamOpenAfterViolation: number;
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

/** A real upstream the calls go to; if watched, every call it holds open must be ended by a violation. */
interface Target {
  readonly upstream: Upstream;
  readonly watch?: UpstreamWatch;
}

/** The calls (requests or WebSockets) that reached an upstream, seen from its side. */
interface UpstreamWatch {
  /** How many have arrived so far. */
  arrived(): number;
  /** Those from the `since`th on that it still holds open. */
  open(since: number): number;
}

interface CaseOptions {
  readonly flags?: ChannelConfig;
  /** Wait for each chunk to be consumed before writing the next (keeps chunk boundaries). */
  readonly stepwise?: boolean;
  /** With stepwise: also wait this long after each chunk (lets asynchronous upstream events interleave). */
  readonly delayMs?: number;
  /** The supervisor says DRAIN before the worker's first byte (DRAINED is permitted). */
  readonly draining?: boolean;
  /** How long the supervisor end may take to read what was written (default CONSUME_TIMEOUT_MS). */
  readonly consumeTimeoutMs?: number;
  /** After the first `chunks` chunks: wait until `calls` calls have reached the watched upstream. */
  readonly settle?: { readonly chunks: number; readonly calls: number };
}

const CONSUME_TIMEOUT_MS = 5_000;
/** A flood of MAX_OPEN_STREAMS OPENs starts as many upstream calls: slow on a loaded machine. */
const FLOOD_CONSUME_TIMEOUT_MS = 30_000;
const ABANDON_TIMEOUT_MS = 3_000;

/** Totals over the cases of one property, printed so a run shows what it exercised. */
interface Stats {
  cases: number;
  bytes: number;
  frames: number;
  violations: number;
  /** Calls a watched upstream held open when a violation came, and saw ended. */
  heldEnded: number;
  maxBuffered: number;
  maxOpenStreams: number;
  /** Cases (or mutations) by kind. */
  kinds: Map<string, number>;
}

const freshStats = (): Stats => ({
  cases: 0,
  bytes: 0,
  frames: 0,
  violations: 0,
  heldEnded: 0,
  maxBuffered: 0,
  maxOpenStreams: 0,
  kinds: new Map<string, number>(),
});
const stats = freshStats();

function resetStats(): void {
  Object.assign(stats, freshStats());
}

/** Count a case (or a mutation) under `kind`, for the per-kind line. */
function countKind(kind: string): void {
  stats.kinds.set(kind, (stats.kinds.get(kind) ?? 0) + 1);
}

/** The suite's dump directory (a temporary one): --dump-dir cases write there through a real DumpReceiver. */
let dumpDirectory: DumpDirectory | null = null;

/** A Monitor as the supervisor makes one for a worker started with these flags. */
function monitorFor(writer: FrameWriter, upstream: Upstream, flags: ChannelConfig, events: MonitorEvents): Monitor {
  if (flags.dumps && dumpDirectory === null) throw new Error('no dump directory');
  const options: MonitorOptions = {
    httpShutdown: flags.httpShutdown,
    dumps: flags.dumps && dumpDirectory !== null ? new DumpReceiver(dumpDirectory, writer, 0, dumpFileLimit(0)) : null,
    webSocketMaxMessageBytes: flags.webSocket ? 1024 * 1024 : null,
    allowModel: flags.allowModel,
    // --allow-model alone makes a policy (the supervisor records the worker's refusals).
    policy: flags.allowModel ? ClientPolicy.create(ALLOW_MODEL_POLICY, silentLog) : null,
  };
  return new Monitor(writer, upstream, options, silentLog, events);
}

const ALLOW_MODEL_POLICY: PolicyOptions = {
  clientTokenFile: null,
  clientTokenOwner: undefined,
  allowModels: ['gpt-*'],
  limits: { maxRequests: null, maxRequestsPerMinute: null, maxTokens: null },
  usageFile: null,
};

/** Requests are open until answered in full or closed; the follow-up requests are not the hostile worker's. */
function watchExchanges(server: ControlledUpstream): UpstreamWatch {
  const open = (e: Exchange): boolean => e.tag !== FOLLOW_UP_TAG && e.closedAt === null && e.finishedAt === null;
  return { arrived: () => server.exchanges.length, open: (since) => server.exchanges.slice(since).filter(open).length };
}

/**
 * A fresh Monitor on a fresh socketpair: write `chunks` into the worker end,
 * wait until the supervisor end has read every byte, report what happened.
 */
async function runCase(target: Target, chunks: readonly Buffer[], options: CaseOptions = {}): Promise<CaseReport> {
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
    upstreamOpenAtViolation: 0,
    upstreamOpenAfterViolation: 0,
    finalBuffered: 0,
    finalOpenStreams: 0,
    written: 0,
    received: 0,
    timedOut: false,
  };
  const flags = options.flags ?? NO_FLAGS;
  const { watch } = target;
  const firstCall = watch?.arrived() ?? 0;
  let violated = false;
  const note = (event: keyof EventCounts): void => {
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
      report.upstreamOpenAtViolation = watch?.open(firstCall) ?? 0;
      violated = true;
    },
  };
  if (flags.webSocket) await loadWebSocketClient(); // as startProxy does with --websocket
  monitor = monitorFor(new FrameWriter(supervisorEnd), target.upstream, flags, events);
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

  const { settle } = options;
  try {
    for (const [index, chunk] of chunks.entries()) {
      if (watch !== undefined && index === settle?.chunks) {
        // Calls in flight upstream when the rest arrives: the violation must end them.
        await waitFor(() => watch.arrived() - firstCall >= settle.calls, CONSUME_TIMEOUT_MS);
      }
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
    if (violated && watch !== undefined) {
      // Before the test's own clean-up: the violation alone must have ended every call the upstream holds.
      await waitFor(() => watch.open(firstCall) === 0, ABANDON_TIMEOUT_MS);
      report.upstreamOpenAfterViolation = watch.open(firstCall);
      stats.heldEnded += report.upstreamOpenAtViolation - report.upstreamOpenAfterViolation;
    }
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
  const unread = `the supervisor end read ${r.received} of ${r.written} bytes by the deadline`;
  assert.equal(r.timedOut, false, unread);
  assert.equal(r.received, r.written, 'every byte written was read');
  assert.deepEqual(r.throws.map(String), [], 'Monitor.receive() threw');
  assert.ok(r.violations.length <= 1, `more than one violation reported: ${JSON.stringify(r.violations)}`);
  // The Monitor reports any exception as a violation; one that is not a ProtocolError is a handler's bug.
  for (const reason of r.violations) {
    assert.doesNotMatch(reason, /^handler failed/, 'a handler failed on what it was given');
  }
  assert.ok(r.maxBuffered <= LARGEST_FRAME, `decoder held ${r.maxBuffered} bytes (largest frame ${LARGEST_FRAME})`);
  assert.ok(r.maxOpenStreams <= MAX_OPEN_STREAMS, `${r.maxOpenStreams} open calls (limit ${MAX_OPEN_STREAMS})`);
  if (r.violations.length === 1) {
    assert.equal(r.dispatchedAfterViolation, 0, 'frames were dispatched after the violation');
    assert.equal(r.eventsAfterViolation, 0, 'events fired after the violation');
    assert.equal(r.openStreamsAtViolation, 0, 'open calls were not all cancelled at the violation');
    assert.equal(r.finalOpenStreams, 0, 'calls opened after the violation');
    assert.equal(r.finalBuffered, 0, 'the decoder kept bytes after the violation');
    const outlived = r.upstreamOpenAfterViolation;
    assert.equal(outlived, 0, `${outlived} upstream requests outlived the violation`);
  }
}

/**
 * The next worker, after a violation: a fresh Monitor on the same Upstream
 * serves one request (READY, OPEN, body, end) and the worker end reads its
 * whole answer. Returns the status, or why there was none.
 */
async function followUp(upstream: Upstream): Promise<number | string> {
  const pair = socketPair();
  const violations: string[] = [];
  const ignore = (): void => {};
  const events: MonitorEvents = {
    onReady: ignore,
    onShutdownRequest: ignore,
    onStartupFailed: ignore,
    onDrained: ignore,
    onViolation: (reason) => violations.push(reason),
  };
  const monitor = monitorFor(new FrameWriter(pair.a), upstream, NO_FLAGS, events);
  pair.a.on('data', (chunk: Buffer) => monitor.receive(chunk));
  try {
    return await new Promise<number | string>((resolve) => {
      let status: number | string = 'no RESPONSE_HEAD';
      const timeout = (): void => resolve(`no RESPONSE_END within ${CONSUME_TIMEOUT_MS} ms (${status})`);
      const timer = setTimeout(timeout, CONSUME_TIMEOUT_MS);
      const decoder = new FrameDecoder('supervisor', (type, streamId, payload) => {
        if (streamId !== 1) return;
        if (type === Msg.RESPONSE_HEAD) status = decodeHead(payload, true).status;
        if (type === Msg.RESPONSE_END || type === Msg.RESET) {
          clearTimeout(timer);
          if (violations.length > 0) resolve(`violation: ${violations.join('; ')}`);
          else resolve(type === Msg.RESET ? 'RESET' : status);
        }
      });
      pair.b.on('data', (chunk: Buffer) => decoder.push(chunk));
      const fields = ['content-type', 'application/json', 'content-length', '2'];
      const head = encodeHead([...fields, FOLLOW_UP_TAG_HEADER, FOLLOW_UP_TAG]);
      const body = Buffer.from('{}');
      const request = [frame(Msg.OPEN, 1, head), frame(Msg.REQUEST_DATA, 1, body), frame(Msg.REQUEST_END, 1)];
      pair.b.write(Buffer.concat([frame(Msg.READY, 0), ...request]));
    });
  } finally {
    monitor.abandonAll('test over');
    pair.destroy();
  }
}

function authHeaderFor(key: string): AuthHeader {
  const bytes = Buffer.from(`${key}\n`);
  let given = false;
  return readAuthHeader((buffer, offset, length) => {
    if (given) return 0;
    given = true;
    return bytes.copy(buffer, offset, 0, Math.min(length, bytes.length));
  });
}

// ------------------------------------------------------------------ the properties

export type PropertyName =
  | 'randomBytes'
  | 'validSequences'
  | 'invalidFrame'
  | 'mutated'
  | 'floodHeld'
  | 'floodNearLimit'
  | 'floodChurn'
  | 'mixed';

/** One share of the fuzzing: how many cases each property throws in this suite. */
export interface FuzzShare {
  /** 'npm test' or 'soak', in the output. */
  readonly name: string;
  /** The command that reruns this share (printed with the seed). */
  readonly rerun: string;
  readonly runs: Readonly<Record<PropertyName, number>>;
  /** The fewest cases this share may throw (its part of the 10,000 a CI run must throw). */
  readonly minimum: number;
  /** Per property (the mixed one takes longest per case). */
  readonly timeoutMs: number;
}

export function describeIpcFuzz(share: FuzzShare): void {
  describe(`IPC fuzzing (${share.name} share): the supervisor Monitor over a real socketpair`, () => {
    let dumpRoot: string;
    let closedPort: ClosedPort;
    let answeringServer: ControlledUpstream;
    let holdingServer: ControlledUpstream;
    let auth: AuthHeader;
    /** An upstream that refuses every connection: calls fail, request halves stay as the worker leaves them. */
    let refusing: Target;
    /** A real upstream that holds every call (and answers only the follow-up requests). */
    let holding: Target;
    /** A real upstream that answers with a body larger than one credit window. */
    let answering: Target;
    /** A real WebSocket upstream that accepts every upgrade and echoes every message (POSTs get 404). */
    let echoing: Target;
    const echoServer = createServer((_req, res) => res.writeHead(404).end());
    /** The echoing upstream's side of every WebSocket it accepted. */
    const echoSockets: WebSocket[] = [];
    const casesBy = new Map<PropertyName, number>();
    let seedOffset = 0;

    before(async () => {
      dumpRoot = mkdtempSync(join(tmpdir(), 'ipc-fuzz-dumps-'));
      dumpDirectory = DumpDirectory.open(join(dumpRoot, 'dumps'), silentLog);
      closedPort = reserveClosedPort();
      answeringServer = await ControlledUpstream.start((ex) => {
        void ex.body.then(() => {
          if (ex.res.destroyed) return;
          ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
          ex.res.write(Buffer.alloc(300 * 1024, 0x64));
          ex.res.end('done');
        });
      });
      holdingServer = await ControlledUpstream.start((ex) => {
        if (ex.tag === FOLLOW_UP_TAG) answerJson(ex);
      });
      auth = authHeaderFor(TEST_KEY);
      const upstreamAt = (url: string): Upstream => new Upstream(new URL(url), auth, 5_000);
      refusing = { upstream: upstreamAt(`http://127.0.0.1:${closedPort.port}/v1/responses`) };
      holding = { upstream: upstreamAt(holdingServer.url()), watch: watchExchanges(holdingServer) };
      answering = { upstream: upstreamAt(answeringServer.url()), watch: watchExchanges(answeringServer) };
      const webSockets = new WebSocketServer({ noServer: true });
      echoServer.on('upgrade', (req, socket, head) =>
        webSockets.handleUpgrade(req, socket, head, (ws) => {
          echoSockets.push(ws);
          ws.on('error', () => {}); // fuzzed text is often not UTF-8: ws fails such a socket (1007)
          ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
        }),
      );
      await new Promise<void>((resolve) => echoServer.listen(0, '127.0.0.1', resolve));
      const echoWatch: UpstreamWatch = {
        arrived: () => echoSockets.length,
        open: (since) => echoSockets.slice(since).filter((ws) => ws.readyState !== WebSocket.CLOSED).length,
      };
      const echoUrl = `http://127.0.0.1:${(echoServer.address() as AddressInfo).port}/v1/responses`;
      echoing = { upstream: upstreamAt(echoUrl), watch: echoWatch };
    });

    after(async () => {
      for (const target of [refusing, holding, answering, echoing]) await target?.upstream.close();
      for (const ws of echoSockets) ws.terminate(); // upgraded: closeAllConnections does not see them
      echoServer.closeAllConnections();
      echoServer.close();
      await holdingServer?.close();
      await answeringServer?.close();
      closedPort?.release();
      auth?.destroy();
      dumpDirectory = null;
      if (dumpRoot) rmSync(dumpRoot, { recursive: true, force: true });
    });

    const rerun = `FUZZ_SEED=${FUZZ_SEED} ${share.rerun}`;

    /** fc.assert with a printed, reproducible seed (one per property, derived from FUZZ_SEED). */
    async function check<T>(
      t: { diagnostic(msg: string): void },
      property: PropertyName,
      arb: fc.Arbitrary<T>,
      predicate: (value: T) => Promise<void>,
    ): Promise<void> {
      const seed = (FUZZ_SEED + seedOffset++) % 0x7fffffff;
      const numRuns = share.runs[property] * RUNS_FACTOR;
      if (numRuns === 0) return t.diagnostic(`${property}: not in this share`);
      t.diagnostic(`${property}: ${numRuns} cases, seed ${seed} (rerun: ${rerun})`);
      const startedAt = Date.now();
      resetStats();
      try {
        const parameters = { numRuns, seed, endOnFailure: !SHRINK, includeErrorInReport: true };
        await fc.assert(fc.asyncProperty(arb, predicate), parameters);
      } finally {
        casesBy.set(property, stats.cases);
        const kinds = [...stats.kinds].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`);
        const held = stats.heldEnded > 0 ? ` (${stats.heldEnded} held upstream calls ended by one)` : '';
        t.diagnostic(
          `${property}: ${stats.cases} cases in ${Date.now() - startedAt} ms; ${stats.bytes} bytes read, ` +
            `${stats.frames} frames dispatched, ${stats.violations} violations${held}, ` +
            `max decoder buffer ${stats.maxBuffered} B, max open calls ${stats.maxOpenStreams}` +
            (kinds.length > 0 ? `; by kind: ${kinds.join(', ')}` : ''),
        );
      }
    }

    const timeout = share.timeoutMs;

    const randomName = 'random bytes: never throws, at most one violation, bounded memory, deaf after a violation';
    test(randomName, { timeout }, async (t) => {
      const segments = fc.array(randomSegmentArb, { minLength: 1, maxLength: 6, size: 'max' });
      const arb = fc.record({ ready: fc.boolean(), segments, flags: flagsArb, chunking: chunkingArb });
      await check(t, 'randomBytes', arb, async ({ ready, segments, flags, chunking }) => {
        countKind(ready ? 'after READY' : 'before READY');
        // After READY too, so that stream frames reach their handlers.
        const bytes = Buffer.concat([ready ? frame(Msg.READY, 0) : Buffer.alloc(0), ...segments]);
        const report = await runCase(refusing, split(bytes, chunking.cuts), { stepwise: chunking.stepwise, flags });
        checkInvariants(report);
      });
    });

    const validName =
      'valid frame sequences, arbitrarily chunked: no violation, every frame dispatched once, every event delivered';
    test(validName, { timeout }, async (t) => {
      const ops = fc.array(opArb, { maxLength: 40, size: 'max' });
      const arb = fc.record({ ops, flags: flagsArb, draining: fc.boolean(), chunking: chunkingArb });
      await check(t, 'validSequences', arb, async ({ ops, flags, draining, chunking }) => {
        const m = newModel(flags, draining);
        applyValidOps(m, ops);
        countKind(m.streams.size === 0 ? 'no streams' : m.streams.size < 8 ? '1-7 streams' : '8+ streams');
        const options = { flags, draining, stepwise: chunking.stepwise };
        const report = await runCase(refusing, split(Buffer.concat(m.frames), chunking.cuts), options);
        checkInvariants(report);
        assert.deepEqual(report.violations, [], 'a valid sequence was refused');
        assert.equal(report.dispatched, m.frames.length, 'every frame dispatched exactly once');
        assert.deepEqual(report.events, m.expected, 'events delivered');
        assert.equal(report.finalBuffered, 0, 'nothing left in the decoder after whole frames');
        // Open request halves are always tracked; reset streams never are; ended ones until their response half closes.
        const live = liveStreams(m).length;
        const endedOnly = [...m.streams.values()].filter((s) => s.ended && !s.reset).length;
        const { finalOpenStreams } = report;
        const tracked = `${finalOpenStreams} open calls; ${live} live, ${endedOnly} ended`;
        assert.ok(finalOpenStreams >= live && finalOpenStreams <= live + endedOnly, tracked);
      });
    });

    const invalidName =
      'a valid prefix (any state, any flags), then one invalid frame, then more input: exactly one violation ' +
      'with the right reason, the rest ignored, the held upstream calls ended, the next Monitor serves';
    test(invalidName, { timeout }, async (t) => {
      const arb = fc.record({ c: invalidCaseArb, hold: fc.boolean() });
      await check(t, 'invalidFrame', arb, async ({ c, hold }) => {
        countKind(c.bad.k);
        const { prefix, rest, reason, callsInPrefix } = buildInvalidCase(c);
        // A held call takes its body (credit comes back): only the refusing upstream never does.
        const target = hold && !UPSTREAM_DEPENDENT.has(c.bad.k) ? holding : refusing;
        const chunks = [...split(prefix, c.chunking.cuts), ...split(rest, c.chunking.cuts)];
        const settle = { chunks: split(prefix, c.chunking.cuts).length, calls: callsInPrefix };
        const options = { flags: c.flags, draining: c.draining, stepwise: c.chunking.stepwise, settle };
        const report = await runCase(target, chunks, options);
        checkInvariants(report);
        const got = `exactly one violation for ${c.bad.k}; got ${JSON.stringify(report.violations)}`;
        assert.equal(report.violations.length, 1, got);
        assert.match(report.violations[0] as string, reason);
        if (target === holding) {
          assert.equal(await followUp(holding.upstream), 200, 'the next Monitor serves on the same Upstream');
        }
      });
    });

    const mutatedName =
      'valid sequences with random mutations ' +
      '(bytes, lengths, types, stream ids, dropped, repeated, reordered, cut frames)';
    test(mutatedName, { timeout }, async (t) => {
      const arb = fc.record({
        ops: fc.array(opArb, { minLength: 1, maxLength: 30, size: 'max' }),
        flags: flagsArb,
        mutations: fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        hold: fc.boolean(),
        chunking: chunkingArb,
      });
      await check(t, 'mutated', arb, async ({ ops, flags, mutations, hold, chunking }) => {
        const m = newModel(flags);
        ensureReady(m);
        applyValidOps(m, ops);
        let frames: Buffer[] = m.frames;
        for (const mutation of mutations) {
          countKind(mutation.k);
          frames = mutate(frames, mutation);
        }
        const target = hold ? holding : refusing;
        const chunks = split(Buffer.concat(frames), chunking.cuts);
        const report = await runCase(target, chunks, { flags, stepwise: chunking.stepwise });
        checkInvariants(report);
        if (target === holding && report.violations.length === 1) {
          assert.equal(await followUp(holding.upstream), 200, 'the next Monitor serves on the same Upstream');
        }
      });
    });

    const floodName =
      `floods of OPENs: the ${MAX_OPEN_STREAMS + 1}th open stream is a violation, ` +
      `never more than ${MAX_OPEN_STREAMS} calls; opened-and-reset streams never accumulate`;
    test(floodName, { timeout }, async (t) => {
      type Flood = { n: number; chunking: { cuts: number[]; stepwise: boolean } };
      const heldFlood = async ({ n, chunking }: Flood): Promise<void> => {
        countKind(n > MAX_OPEN_STREAMS ? 'beyond the limit' : 'within the limit');
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
      // A flood near the limit starts thousands of upstream calls: few of those, more small ones.
      const small = fc.record({ n: fc.integer({ min: 1, max: 1100 }), chunking: chunkingArb });
      await check(t, 'floodHeld', small, heldFlood);
      const nearLimit = fc.integer({ min: MAX_OPEN_STREAMS - 2, max: MAX_OPEN_STREAMS + 40 });
      await check(t, 'floodNearLimit', fc.record({ n: nearLimit, chunking: chunkingArb }), heldFlood);
      const beyondLimit = fc.integer({ min: MAX_OPEN_STREAMS + 1, max: MAX_OPEN_STREAMS + 100 });
      await check(t, 'floodChurn', fc.record({ n: beyondLimit, chunking: chunkingArb }), async ({ n, chunking }) => {
        const frames: Buffer[] = [frame(Msg.READY, 0)];
        for (let id = 1; id <= n; id++) frames.push(frame(Msg.OPEN, id, HEAD), frame(Msg.RESET, id));
        const chunks = split(Buffer.concat(frames), chunking.cuts);
        const options = { stepwise: chunking.stepwise, consumeTimeoutMs: FLOOD_CONSUME_TIMEOUT_MS };
        const report = await runCase(refusing, chunks, options);
        checkInvariants(report);
        assert.deepEqual(report.violations, [], 'streams that were reset do not count as open');
        assert.ok(report.maxOpenStreams <= 1, `reset calls were not forgotten (max ${report.maxOpenStreams})`);
        assert.equal(report.finalOpenStreams, 0);
      });
    });

    const mixedName =
      'mixed valid and invalid frames, WebSockets too, against a real answering upstream: the invariants hold';
    test(mixedName, { timeout }, async (t) => {
      const itemArb = fc.oneof(
        { weight: 8, arbitrary: opArb.map((op) => ({ op })) },
        {
          weight: 3,
          arbitrary: fc.record({ window: fc.nat(), increment: fc.oneof(fc.integer({ min: 1, max: 300_000 }), u32Arb) }),
        },
        { weight: 1, arbitrary: mixedFrameArb.map((noise) => ({ noise })) },
        // WebSocket streams: opened (the HTTP mock refuses the upgrade; the echoing upstream accepts it),
        // then frames of their kinds.
        { weight: 2, arbitrary: fc.constant({ wsOpen: true as const }) },
        {
          weight: 3,
          arbitrary: fc.record({ wsPick: fc.nat(), type: fc.constantFrom(...WS_STREAM_TYPES), data: bytesArb(300) }),
        },
      );
      const arb = fc.record({
        items: fc.array(itemArb, { minLength: 1, maxLength: 30, size: 'max' }),
        flags: flagsArb.map((flags) => ({ ...flags, webSocket: true })),
        delayMs: fc.integer({ min: 0, max: 1 }),
        echo: fc.boolean(),
      });
      await check(t, 'mixed', arb, async ({ items, flags, delayMs, echo }) => {
        countKind(echo ? 'WebSocket echo upstream' : 'HTTP answering upstream');
        // One chunk per item, written with pauses so the upstream's answers interleave with the worker's frames.
        const m = newModel(flags);
        ensureReady(m);
        const chunks: Buffer[] = [Buffer.concat(m.frames)];
        for (const item of items) {
          const before = m.frames.length;
          if ('op' in item) applyValidOps(m, [item.op]);
          else if ('noise' in item) m.frames.push(item.noise);
          else if ('wsOpen' in item) m.frames.push(frame(Msg.WS_OPEN, ++m.highest, WS_HEAD));
          else if ('wsPick' in item) {
            if (m.highest === 0) continue;
            const payload = wsPayload(item.type, item.data);
            if (payload.length === 0 && (item.type === Msg.WS_TEXT_PART || item.type === Msg.WS_BINARY_PART)) continue;
            m.frames.push(frame(item.type, 1 + (item.wsPick % m.highest), payload));
          } else if (m.highest > 0) {
            m.frames.push(frame(Msg.WINDOW, 1 + (item.window % m.highest), u32(item.increment)));
          }
          if (m.frames.length > before) chunks.push(Buffer.concat(m.frames.slice(before)));
        }
        const report = await runCase(echo ? echoing : answering, chunks, { flags, stepwise: true, delayMs });
        checkInvariants(report);
      });
    });

    test(`the ${share.name} share threw at least ${share.minimum} cases`, { timeout: 5_000 }, (t) => {
      const total = [...casesBy.values()].reduce((a, b) => a + b, 0);
      const by = [...casesBy].map(([p, n]) => `${p} ${n}`).join(', ');
      t.diagnostic(`${share.name} share: ${total} cases (${by}); seed ${FUZZ_SEED} (rerun: ${rerun})`);
      assert.ok(total >= share.minimum, `only ${total} cases`);
    });
  });
}

/** A payload of the right shape for a WebSocket stream frame of `type`. */
function wsPayload(type: (typeof WS_STREAM_TYPES)[number], data: Buffer): Buffer {
  if (type === Msg.WS_CLOSE) return Buffer.concat([Buffer.from([0x03, 0xe8]), data.subarray(0, 100)]);
  if (type === Msg.WINDOW) return u32(1 + data.length);
  if (type === Msg.RESET) return Buffer.alloc(0);
  return data;
}
