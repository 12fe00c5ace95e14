// `npm run bench`: the benchmark (figures, not assertions).
//
// Starts the mock upstream (upstream.ts) and the load client (loadClient.ts),
// each in its own process, then for every round starts `ours`, `policy`,
// `original` and `floor` afresh and runs each test against `direct` and each
// of them in turn (the order rotates per round; `policy` only in POLICY_TESTS,
// not in the sessions).
// Prints medians and per-round ratios, the issue-20 targets met or missed and
// issue 19's policy cost (checks.ts). Each round ends with Codex-like agent
// sessions over HTTP and WebSocket against their own mock upstream
// (sessions.ts); the retired issue-8 splice micro-benchmark runs only with
// --splice.
//
//   node dist/test/bench/run.js [--rounds N] [--quick] [--json]
//        [--node PATH] [--targets direct,ours,policy,original,floor]
//        [--ours-args "--log-level warn"] [--splice] [--profile DIR [--profile-c N]]
//
// --node PATH runs ours and the floor under that node binary (each from its
// own copy); the harness, the mock upstream and the load client stay on the
// node that runs this file.

import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  nowUs,
  sleep,
  specHeaders,
  type FromMock,
  type MockStats,
  type StreamSpec,
  type StreamTimes,
} from './common.js';
import type { DisconnectResult, Failures, LoadResult, SlowResult, StreamsResult, Task } from './loadClient.js';
import {
  MemorySampler,
  memorySums,
  processTree,
  treeCpuSeconds,
  treeMemory,
  treeRssBytes,
  cpuSeconds,
} from './procTree.js';
import { fmt, median, ratios, table, valuesOf, type RoundResult, type TestFailures, type Values } from './report.js';
import { checkPolicy, checkTargets, printChecks, type TargetCheck } from './checks.js';
import {
  cpuProfileSummary,
  perfAvailable,
  perfByOwner,
  perfSummary,
  removePerfMaps,
  startPerf,
  stopPerf,
} from './profile.js';
import type { SpliceTrial } from './spliceBench.js';
import { streamsFor } from '../../src/shared/openFileBudget.js';
import { SessionsUpstream, runSessionRound, type SessionsUpstreamStats } from './sessions.js';
import type { SessionShape } from './sessionWorkload.js';
import {
  NodeCopies,
  direct,
  killTree,
  originalCommand,
  oursCommandLine,
  startFloor,
  startOriginal,
  startOurs,
  startPolicy,
  policyArgs,
  started,
  type Target,
  type TargetName,
} from './targets.js';

// ------------------------------------------------------------------ options

interface Options {
  rounds: number;
  quick: boolean;
  json: boolean;
  targets: TargetName[];
  oursArgs: string[];
  splice: boolean;
  /** Directory for the CPU-profile phase (--profile DIR), or null. */
  profile: string | null;
  /** Concurrency of the profile phase's small requests. */
  profileConcurrency: number;
  /** --node: the node binary for ours and the floor (default: the one running this). */
  node: string;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    rounds: 3,
    quick: false,
    json: false,
    targets: ['direct', 'ours', 'policy', 'original', 'floor'],
    oursArgs: [],
    splice: false,
    profile: null,
    profileConcurrency: 1,
    node: process.execPath,
  };
  let roundsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = true;
    else if (a === '--splice') o.splice = true;
    else if (a === '--no-splice')
      o.splice = false; // the default since issue 20 retired it
    else if (a === '--node') o.node = value();
    else if (a === '--profile-c') {
      o.profileConcurrency = Number(value());
      if (!Number.isInteger(o.profileConcurrency) || o.profileConcurrency < 1 || o.profileConcurrency > 256)
        throw new Error('--profile-c must be 1..256');
    } else if (a === '--rounds') {
      o.rounds = Number(value());
      roundsGiven = true;
      if (!Number.isInteger(o.rounds) || o.rounds < 0 || o.rounds > 20)
        throw new Error('--rounds must be 0..20 (0: only --profile)');
    } else if (a === '--profile') o.profile = resolve(value());
    else if (a === '--targets') o.targets = value().split(',') as TargetName[];
    else if (a === '--ours-args')
      o.oursArgs = value()
        .split(' ')
        .filter((s) => s !== '');
    else if (a === '-h' || a === '--help') {
      console.log(
        'usage: node dist/test/bench/run.js [--rounds N] [--quick] [--json] [--node PATH] [--splice]\n' +
          '  [--targets direct,ours,policy,original,floor] [--ours-args "ARGS"] [--profile DIR [--profile-c N]]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.quick && !roundsGiven) o.rounds = 1;
  if (o.rounds === 0 && o.profile === null) throw new Error('--rounds 0 only makes sense with --profile DIR');
  if (!o.targets.includes('direct')) o.targets.unshift('direct'); // the baseline is always measured
  return o;
}

const MB = 1024 * 1024;

/** Sizes of every test; --quick scales them down. */
function sizes(quick: boolean) {
  return {
    warmup: quick ? 300 : 1000,
    c1Count: quick ? 1000 : 6000,
    cNCount: quick ? 3000 : 20_000,
    smallTimeoutMs: 5000,
    smallMaxMs: quick ? 15_000 : 30_000,
    ttfbStreams: quick ? 10 : 20,
    ttfbSpec: { mode: 'sse', events: 5, delayMs: 5, eventSize: 128 } as StreamSpec,
    oneStreamBytes: 50 * MB,
    oneStreamRepeats: quick ? 1 : 5,
    multiStreams: 32,
    multiStreamBytes: quick ? 8 * MB : 50 * MB,
    streamTimeoutMs: 60_000,
    slowN: quick ? 250 : 1000,
    slowEvents: 8,
    slowDelayMs: 500,
    slowEventSize: 64,
    slowLiveMarginMs: 250,
    /** How long after the slow-stream burst memory is measured again. */
    burstSettleMs: 10_000,
    readers: 20,
    readerBytes: quick ? 4 * MB : 25 * MB,
    disconnectN: 3,
    profileRequests: quick ? 10_000 : 30_000,
    /** Codex-like sessions, every round; --quick keeps the body growth and shortens the sessions. */
    sessions: {
      agents: 8,
      turns: quick ? 10 : 30,
      events: quick ? 50 : 150,
      minGapMs: 2,
      maxGapMs: 20,
      firstBodyBytes: 20_000,
      lastBodyBytes: 600_000,
    } as SessionShape,
    sessionWarmupTurns: quick ? 2 : 3,
    spliceRequests: quick ? 8000 : 10_000,
    spliceTrials: quick ? 2 : 10,
  };
}

// ------------------------------------------------------------------ children

const HERE = fileURLToPath(new URL('.', import.meta.url));

function forkChild(file: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = fork(`${HERE}${file}`, [], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  started.add(child);
  child.on('exit', () => started.delete(child));
  return child;
}

/** The mock upstream, with request/response over its IPC channel. */
class Mock {
  private seq = 0;
  private readonly waiting = new Map<number, (m: FromMock) => void>();
  port = 0;
  constructor(readonly child: ChildProcess) {
    child.on('message', (raw: unknown) => {
      const m = raw as FromMock;
      if (m.type === 'ready') return;
      const w = this.waiting.get(m.seq);
      this.waiting.delete(m.seq);
      w?.(m);
    });
  }
  static async start(auth: string): Promise<Mock> {
    const child = forkChild('upstream.js', { BENCH_AUTH: auth });
    const mock = new Mock(child);
    mock.port = await withTimeout(
      new Promise<number>((resolve) => child.on('message', (m: FromMock) => m.type === 'ready' && resolve(m.port))),
      10_000,
      'mock upstream start',
    );
    return mock;
  }
  private ask(build: (seq: number) => object): Promise<FromMock> {
    const seq = ++this.seq;
    return withTimeout(
      new Promise<FromMock>((resolve) => {
        this.waiting.set(seq, resolve);
        this.child.send(build(seq));
      }),
      10_000,
      'mock upstream query',
    );
  }
  async stats(): Promise<MockStats> {
    const m = await this.ask((seq) => ({ type: 'stats', seq }));
    return (m as { stats: MockStats }).stats;
  }
  async times(ids: readonly string[]): Promise<readonly StreamTimes[]> {
    const m = await this.ask((seq) => ({ type: 'times', seq, ids }));
    return (m as { times: readonly StreamTimes[] }).times;
  }
}

/** The load client process: one task at a time. */
class Client {
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(readonly child: ChildProcess) {
    child.on('message', (raw: unknown) => {
      const m = raw as { seq: number; result?: unknown; error?: string };
      const w = this.waiting.get(m.seq);
      if (!w) return;
      this.waiting.delete(m.seq);
      if (m.error !== undefined) w.reject(new Error(`load client: ${m.error}`));
      else w.resolve(m.result);
    });
    child.on('exit', (code) => {
      for (const w of this.waiting.values()) w.reject(new Error(`load client exited (${code})`));
      this.waiting.clear();
    });
  }
  static async start(): Promise<Client> {
    const child = forkChild('loadClient.js');
    const client = new Client(child);
    await withTimeout(
      new Promise<void>((resolve) => client.waiting.set(0, { resolve: () => resolve(), reject: () => {} })),
      10_000,
      'load client start',
    );
    return client;
  }
  run<T>(task: Task, timeoutMs: number): Promise<T> {
    const seq = ++this.seq;
    return withTimeout(
      new Promise<T>((resolve, reject) => {
        this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject });
        this.child.send({ seq, task });
      }),
      timeoutMs,
      `load client task ${task.kind}`,
    );
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)),
  );
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ results

function addFailures(list: TestFailures[], test: string, f: Failures): void {
  list.push({ test, failed: f.failed, timeouts: f.timeouts, unserved: f.unserved, byKind: f.byKind });
}

// ------------------------------------------------------------------ tests

interface Ctx {
  readonly client: Client;
  readonly mock: Mock;
  readonly s: ReturnType<typeof sizes>;
  readonly round: number;
  /** When each target's slow-stream burst ended (Date.now()). */
  readonly burstEndedAt: Map<TargetName, number>;
  readonly sessions: SessionsUpstream;
}

/** Tree RSS and PSS now, and the root's and its descendants' shares ('' prefix: idle). */
function recordMemory(t: Target, v: Values, prefix: string): void {
  if (t.pid === null) return;
  const procs = treeMemory(t.pid);
  const [root, ...children] = procs;
  const sum = memorySums(procs);
  const kids = memorySums(children);
  const mb = (x: number | null | undefined): number | null => (x === null || x === undefined ? null : x / MB);
  v[`${prefix}RssMb`] = mb(sum.rss);
  v[`${prefix}PssMb`] = mb(sum.pss);
  v[`${prefix}RootRssMb`] = mb(root?.rss);
  v[`${prefix}RootPssMb`] = mb(root?.pss);
  v[`${prefix}ChildRssMb`] = children.length === 0 ? null : mb(kids.rss);
  v[`${prefix}ChildPssMb`] = children.length === 0 ? null : mb(kids.pss);
}

async function measureIdle(t: Target, v: Values): Promise<void> {
  await sleep(1000);
  recordMemory(t, v, 'idle');
}

/** Memory once the slow-stream burst is burstSettleMs behind (the other targets' tests ran meanwhile). */
async function afterBurst(ctx: Ctx, t: Target, v: Values): Promise<void> {
  const ended = ctx.burstEndedAt.get(t.name);
  if (t.pid === null || ended === undefined) return;
  await sleep(Math.max(0, ended + ctx.s.burstSettleMs - Date.now()));
  recordMemory(t, v, 'burst');
}

async function smallLoad(ctx: Ctx, t: Target, v: Values, f: TestFailures[]): Promise<void> {
  const { client, s } = ctx;
  const base = { port: t.port, headers: t.headers, timeoutMs: s.smallTimeoutMs, maxMs: s.smallMaxMs };
  const warm = await client.run<LoadResult>(
    { kind: 'load', params: { ...base, concurrency: 16, count: s.warmup } },
    s.smallMaxMs + 10_000,
  );
  addFailures(f, 'warmup', warm);
  // c=1 twice: after the warm-up, and again once the proxy has served every
  // other load (c1w), when V8 has optimized its per-request code.
  for (const [c, key] of [
    [1, 'c1'],
    [16, 'c16'],
    [64, 'c64'],
    [1, 'c1w'],
  ] as const) {
    const count = c === 1 ? s.c1Count : s.cNCount;
    const cpu0 = t.pid === null ? 0 : treeCpuSeconds(t.pid);
    const mockCpu0 = cpuSeconds(ctx.mock.child.pid as number);
    const mock0 = await ctx.mock.stats();
    const r = await client.run<LoadResult>(
      { kind: 'load', params: { ...base, concurrency: c, count } },
      s.smallMaxMs + 10_000,
    );
    const cpu1 = t.pid === null ? 0 : treeCpuSeconds(t.pid);
    const mockCpu1 = cpuSeconds(ctx.mock.child.pid as number);
    const mock1 = await ctx.mock.stats();
    addFailures(f, `small ${key === 'c1w' ? 'c=1 warm' : `c=${c}`}`, r);
    v[`${key}Rps`] = r.rps;
    v[`${key}P50Ms`] = r.p50Us / 1000;
    v[`${key}P99Ms`] = r.p99Us / 1000;
    v[`${key}Cpu10k`] = t.pid === null ? null : ((cpu1 - cpu0) / Math.max(1, r.ok)) * 10_000;
    if (key === 'c1w') continue;
    // Counted where they arrive: a proxy that keeps its upstream connections opens few.
    v[`${key}UpConnPer1k`] =
      ((mock1.connections - mock0.connections) / Math.max(1, mock1.requests - mock0.requests)) * 1000;
    if (c === 64) v.mockCpuPer10k = ((mockCpu1 - mockCpu0) / Math.max(1, r.ok)) * 10_000;
  }
}

async function ttfb(ctx: Ctx, t: Target, v: Values, f: TestFailures[]): Promise<void> {
  const { client, s } = ctx;
  const p = { port: t.port, headers: t.headers, spec: s.ttfbSpec, concurrency: 1, maxMs: 30_000, timeoutMs: 10_000 };
  await client.run<StreamsResult>({ kind: 'streams', params: { ...p, count: 2 } }, 40_000); // warm the connection
  const r = await client.run<StreamsResult>({ kind: 'streams', params: { ...p, count: s.ttfbStreams } }, 40_000);
  addFailures(f, 'ttfb', r);
  v.headMs = r.headP50Us / 1000;
  v.ttfbMs = r.ttfbP50Us / 1000;
}

async function largeStreams(ctx: Ctx, t: Target, v: Values, f: TestFailures[]): Promise<void> {
  const { client, s } = ctx;
  const one = await client.run<StreamsResult>(
    {
      kind: 'streams',
      params: {
        port: t.port,
        headers: t.headers,
        spec: { mode: 'large', bytes: s.oneStreamBytes },
        concurrency: 1,
        count: s.oneStreamRepeats,
        maxMs: 60_000,
        timeoutMs: s.streamTimeoutMs,
      },
    },
    130_000,
  );
  addFailures(f, 'one stream', one);
  v.oneStreamMBps = one.perStreamMbpsMedian;
  const cpu0 = t.pid === null ? 0 : treeCpuSeconds(t.pid);
  const many = await client.run<StreamsResult>(
    {
      kind: 'streams',
      params: {
        port: t.port,
        headers: t.headers,
        spec: { mode: 'large', bytes: s.multiStreamBytes },
        concurrency: s.multiStreams,
        count: s.multiStreams,
        maxMs: 60_000,
        timeoutMs: s.streamTimeoutMs,
      },
    },
    130_000,
  );
  addFailures(f, `${s.multiStreams} streams`, many);
  v.multiMBps = many.mbps; // bytes of completed streams only; failures are counted above
  v.multiCpuPerGb = t.pid === null ? null : (treeCpuSeconds(t.pid) - cpu0) / Math.max(1e-9, many.totalBytes / 1e9);
}

async function slowStreams(ctx: Ctx, t: Target, v: Values, f: TestFailures[]): Promise<void> {
  const { client, s } = ctx;
  const sampler = t.pid === null ? null : new MemorySampler(t.pid);
  const r = await client.run<SlowResult>(
    {
      kind: 'slow',
      params: {
        port: t.port,
        headers: t.headers,
        n: s.slowN,
        events: s.slowEvents,
        delayMs: s.slowDelayMs,
        eventSize: s.slowEventSize,
        liveMarginMs: s.slowLiveMarginMs,
        timeoutMs: 30_000,
      },
    },
    60_000,
  );
  const mem = sampler?.stop();
  ctx.burstEndedAt.set(t.name, Date.now());
  addFailures(f, `${s.slowN} slow streams`, r);
  v.slowPeakRssMb = mem === undefined ? null : mem.peak / MB;
  v.slowPeakPssMb = mem === undefined || mem.pssPeak === null ? null : mem.pssPeak / MB;
  v.slowOk = r.ok;
  v.slowMinLiveEvents = r.minLiveEvents;
  v.slowNoProgress = r.fewerThan2Live;
  v.slowMinEventsTotal = r.minEventsTotal;
  v.slowAllFirstByteMs = r.allFirstByteMs;
  await sleep(300);
}

async function stalledReader(ctx: Ctx, t: Target, v: Values, f: TestFailures[]): Promise<void> {
  const { client, s } = ctx;
  const readers = (): Promise<StreamsResult> =>
    client.run<StreamsResult>(
      {
        kind: 'streams',
        params: {
          port: t.port,
          headers: t.headers,
          spec: { mode: 'large', bytes: s.readerBytes },
          concurrency: s.readers,
          count: s.readers,
          maxMs: 60_000,
          timeoutMs: s.streamTimeoutMs,
        },
      },
      70_000,
    );
  const rss = (): number | null => (t.pid === null ? null : treeRssBytes(t.pid) / MB);
  const startStaller = (): Promise<{ bytesBeforePause: number; gotBody: boolean }> =>
    client.run(
      {
        kind: 'stallStart',
        params: {
          port: t.port,
          headers: { ...t.headers, ...specHeaders({ mode: 'large', bytes: 4096 * MB }) },
          waitMs: 2000,
        },
      },
      10_000,
    );
  const stopStaller = async (): Promise<void> => {
    await client.run<{ bytes: number }>({ kind: 'stallStop' }, 10_000);
    await sleep(300);
  };
  // Alternate without / with (A B A B A) so drift and noise hit both alike.
  const without: StreamsResult[] = [];
  const withStaller: StreamsResult[] = [];
  without.push(await readers());
  await sleep(300);
  const before = rss();
  const stall = await startStaller();
  await sleep(1000);
  const pinned1 = rss();
  await sleep(1500);
  const pinned2 = rss();
  withStaller.push(await readers());
  await stopStaller();
  without.push(await readers());
  await startStaller();
  await sleep(500);
  withStaller.push(await readers());
  await stopStaller();
  without.push(await readers());
  for (const r of without) addFailures(f, 'readers', r);
  for (const r of withStaller) addFailures(f, 'readers + staller', r);
  const mean = (rs: StreamsResult[]): number => rs.reduce((n, r) => n + r.mbps, 0) / rs.length;
  v.readersMBps = mean(without);
  v.readersStalledMBps = mean(withStaller);
  v.stallRatio = mean(withStaller) / mean(without);
  v.stallPinnedMb = before === null || pinned1 === null ? null : pinned1 - before;
  v.stallGrowthMb = pinned1 === null || pinned2 === null ? null : pinned2 - pinned1;
  v.stallGotBody = stall.gotBody ? 1 : 0;
}

/** How long the upstream side of a disconnected stream is watched. */
const DISCONNECT_WAIT_MS = 8000;

async function disconnectTest(ctx: Ctx, t: Target, v: Values, f: TestFailures[], notes: string[]): Promise<void> {
  const { client, mock, s, round } = ctx;
  const ids = Array.from({ length: s.disconnectN }, (_, i) => `r${round}-${t.name}-${i}-${nowUs()}`);
  // Realistic deltas: 512-byte events every 100 ms, for at most 30 s.
  const spec: StreamSpec = { mode: 'sse', events: 300, delayMs: 100, eventSize: 512 };
  const r = await client.run<DisconnectResult>(
    {
      kind: 'disconnect',
      params: { port: t.port, headers: { ...t.headers, ...specHeaders(spec) }, ids, waitMs: 1000 },
    },
    20_000,
  );
  const deadline = Date.now() + DISCONNECT_WAIT_MS;
  let times: readonly StreamTimes[] = [];
  while (Date.now() < deadline) {
    times = await mock.times(ids);
    if (times.length === ids.length && times.every((x) => x.closedUs !== null)) break;
    await sleep(25);
  }
  const delays: number[] = [];
  let neverClosed = 0;
  let neverOpened = 0;
  for (const st of r.streams) {
    const tm = times.find((x) => x.id === st.id);
    if (tm === undefined) neverOpened++;
    else if (tm.closedUs === null) neverClosed++;
    else delays.push((tm.closedUs - st.disconnectUs) / 1000);
  }
  if (neverOpened > 0) notes.push(`disconnect: ${neverOpened} stream(s) never reached the upstream`);
  if (neverClosed > 0)
    notes.push(
      `disconnect: ${neverClosed} upstream stream(s) still open ${DISCONNECT_WAIT_MS / 1000} s after the client left (counted as ${DISCONNECT_WAIT_MS} ms, a lower bound)`,
    );
  // A request that never reached the upstream is a failure; one the proxy keeps
  // open too long is what this row measures, so it shows there instead.
  f.push({
    test: 'disconnect',
    failed: neverOpened,
    timeouts: 0,
    unserved: neverOpened,
    byKind: neverOpened > 0 ? { 'never reached upstream': neverOpened } : {},
  });
  v.disconnectCloseMs = median([...delays, ...Array.from({ length: neverClosed }, () => DISCONNECT_WAIT_MS)]);
}

// ------------------------------------------------------------------ main

interface MetricRow {
  key: string;
  label: string;
  /** Higher is better (ratios print as "ours/x" either way). */
  higherBetter: boolean;
  digits?: number;
  /** Counts and near-zero amounts: a ratio would mean nothing. */
  noRatio?: boolean;
}

/** The per-round ratios the table shows: ours against each baseline, and issue 19's policy cost. */
const RATIOS: readonly (readonly [TargetName, TargetName])[] = [
  ['ours', 'original'],
  ['ours', 'floor'],
  ['ours', 'direct'],
  ['policy', 'ours'],
];

const ROWS: MetricRow[] = [
  { key: 'c1Rps', label: 'small req/s, c=1', higherBetter: true },
  { key: 'c16Rps', label: 'small req/s, c=16', higherBetter: true },
  { key: 'c64Rps', label: 'small req/s, c=64', higherBetter: true },
  { key: 'c1Cpu10k', label: 'proxy CPU s per 10k req, c=1', higherBetter: false, digits: 3 },
  { key: 'c16Cpu10k', label: 'proxy CPU s per 10k req, c=16', higherBetter: false, digits: 3 },
  { key: 'c64Cpu10k', label: 'proxy CPU s per 10k req, c=64', higherBetter: false, digits: 3 },
  { key: 'c1wRps', label: 'small req/s, c=1 again, warm (after the loads above)', higherBetter: true },
  { key: 'c1wCpu10k', label: 'proxy CPU s per 10k req, c=1 warm', higherBetter: false, digits: 3 },
  { key: 'mockCpuPer10k', label: 'mock upstream CPU s per 10k req, c=64', higherBetter: false, digits: 3 },
  {
    key: 'c1UpConnPer1k',
    label: 'upstream connections per 1k req, c=1',
    higherBetter: false,
    digits: 2,
    noRatio: true,
  },
  {
    key: 'c16UpConnPer1k',
    label: 'upstream connections per 1k req, c=16',
    higherBetter: false,
    digits: 2,
    noRatio: true,
  },
  {
    key: 'c64UpConnPer1k',
    label: 'upstream connections per 1k req, c=64',
    higherBetter: false,
    digits: 2,
    noRatio: true,
  },
  { key: 'c1P50Ms', label: 'latency p50 ms, c=1', higherBetter: false, digits: 3 },
  { key: 'c1P99Ms', label: 'latency p99 ms, c=1', higherBetter: false, digits: 3 },
  { key: 'c16P50Ms', label: 'latency p50 ms, c=16', higherBetter: false, digits: 3 },
  { key: 'c16P99Ms', label: 'latency p99 ms, c=16', higherBetter: false, digits: 3 },
  { key: 'c64P50Ms', label: 'latency p50 ms, c=64', higherBetter: false, digits: 3 },
  { key: 'c64P99Ms', label: 'latency p99 ms, c=64', higherBetter: false, digits: 3 },
  { key: 'add_c1P50Ms', label: '  added p50 ms vs direct, c=1', higherBetter: false, digits: 3 },
  { key: 'add_c1P99Ms', label: '  added p99 ms vs direct, c=1', higherBetter: false, digits: 3 },
  { key: 'add_c1wP50Ms', label: '  added p50 ms vs direct, c=1 warm', higherBetter: false, digits: 3 },
  { key: 'add_c1wP99Ms', label: '  added p99 ms vs direct, c=1 warm', higherBetter: false, digits: 3 },
  { key: 'add_c16P50Ms', label: '  added p50 ms vs direct, c=16', higherBetter: false, digits: 3 },
  { key: 'add_c16P99Ms', label: '  added p99 ms vs direct, c=16', higherBetter: false, digits: 3 },
  { key: 'add_c64P50Ms', label: '  added p50 ms vs direct, c=64', higherBetter: false, digits: 3 },
  { key: 'add_c64P99Ms', label: '  added p99 ms vs direct, c=64', higherBetter: false, digits: 3 },
  { key: 'headMs', label: 'time to response head ms (SSE, p50)', higherBetter: false, digits: 3 },
  { key: 'add_headMs', label: '  added vs direct ms', higherBetter: false, digits: 3 },
  { key: 'ttfbMs', label: 'time to first SSE event ms (p50)', higherBetter: false, digits: 3 },
  { key: 'add_ttfbMs', label: '  added vs direct ms', higherBetter: false, digits: 3 },
  { key: 'oneStreamMBps', label: 'MB/s, one 50 MiB stream', higherBetter: true },
  { key: 'multiMBps', label: 'MB/s, 32 concurrent streams', higherBetter: true },
  { key: 'multiCpuPerGb', label: '  proxy CPU s per GB, 32 streams', higherBetter: false, digits: 2 },
  { key: 'idlePssMb', label: 'tree PSS MiB, idle', higherBetter: false },
  { key: 'idleRootPssMb', label: '  root process (supervisor, floor back, original)', higherBetter: false },
  { key: 'idleChildPssMb', label: '  its children (worker, floor front)', higherBetter: false },
  { key: 'idleRssMb', label: 'tree RSS MiB, idle (shared pages once per process)', higherBetter: false },
  { key: 'idleRootRssMb', label: '  root process', higherBetter: false },
  { key: 'idleChildRssMb', label: '  its children', higherBetter: false },
  { key: 'slowPeakPssMb', label: 'tree PSS MiB, slow streams (peak)', higherBetter: false },
  { key: 'slowPeakRssMb', label: 'tree RSS MiB, slow streams (peak)', higherBetter: false },
  { key: 'burstPssMb', label: 'tree PSS MiB, 10 s after the slow streams', higherBetter: false },
  { key: 'burstRootPssMb', label: '  root process', higherBetter: false },
  { key: 'burstChildPssMb', label: '  its children', higherBetter: false },
  { key: 'burstRssMb', label: 'tree RSS MiB, 10 s after the slow streams', higherBetter: false },
  { key: 'slowOk', label: 'slow streams completed', higherBetter: true, digits: 0, noRatio: true },
  {
    key: 'slowMinLiveEvents',
    label: '  min live events per stream (of 8)',
    higherBetter: true,
    digits: 0,
    noRatio: true,
  },
  { key: 'slowNoProgress', label: '  streams with < 2 live events', higherBetter: false, digits: 0, noRatio: true },
  { key: 'slowAllFirstByteMs', label: '  ms until every stream had a byte', higherBetter: false },
  { key: 'readersMBps', label: 'MB/s, 20 readers', higherBetter: true },
  { key: 'readersStalledMBps', label: 'MB/s, 20 readers + 1 stalled', higherBetter: true },
  { key: 'stallRatio', label: '  with/without stalled reader', higherBetter: true, digits: 3 },
  { key: 'stallPinnedMb', label: '  RSS pinned by stalled reader MiB', higherBetter: false, noRatio: true },
  { key: 'stallGrowthMb', label: '  its growth over 1.5 s more MiB', higherBetter: false, noRatio: true },
  { key: 'disconnectCloseMs', label: 'client gone -> upstream closed ms', higherBetter: false },
  { key: 'sessHttpAddP50Ms', label: 'sessions, HTTP: added ms per turn, p50', higherBetter: false, digits: 3 },
  { key: 'sessHttpAddP99Ms', label: '  added ms per turn, p99', higherBetter: false, digits: 3 },
  { key: 'sessHttpCpuS', label: '  proxy CPU s per session', higherBetter: false, digits: 3 },
  { key: 'sessWsAddP50Ms', label: 'sessions, WebSocket: added ms per turn, p50', higherBetter: false, digits: 3 },
  { key: 'sessWsAddP99Ms', label: '  added ms per turn, p99', higherBetter: false, digits: 3 },
  { key: 'sessWsCpuS', label: '  proxy CPU s per session', higherBetter: false, digits: 3 },
  { key: 'failures', label: 'failed requests (all tests)', higherBetter: false, digits: 0, noRatio: true },
  { key: 'timeouts', label: '  of which timeouts', higherBetter: false, digits: 0, noRatio: true },
  { key: 'unserved', label: '  of which unserved (no byte)', higherBetter: false, digits: 0, noRatio: true },
];

/** The tests the policy target runs: its cost shows on these; the stream tests would only lengthen the run. */
const POLICY_TESTS: ReadonlySet<string> = new Set(['idle', 'small requests', 'ttfb']);

/** What policy's --usage-file says was forwarded, refused and used (rewritten atomically: always whole). */
function readUsageFile(path: string, v: Values, notes: string[]): void {
  try {
    const u = JSON.parse(readFileSync(path, 'utf8')) as {
      requests: { forwarded: number };
      refusals: Record<string, number>;
      tokens: { total: number };
    };
    v.policyForwarded = u.requests.forwarded;
    v.policyRefused = Object.values(u.refusals).reduce((n, x) => n + x, 0);
    v.policyTokens = u.tokens.total;
    if (v.policyRefused > 0) notes.push(`usage file refusals: ${JSON.stringify(u.refusals)}`);
  } catch (err) {
    notes.push(`cannot read the usage file: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function runRound(ctx: Ctx, opts: Options, mockUrl: string, key: string): Promise<RoundResult> {
  const names = opts.targets;
  const order = names.map((_, i) => names[(i + ctx.round - 1) % names.length] as TargetName);
  const result: RoundResult = { round: ctx.round, order, values: {}, failures: {}, notes: {} };
  const targets = new Map<TargetName, Target>();
  try {
    for (const name of names) {
      result.values[name] = {};
      result.failures[name] = [];
      result.notes[name] = [];
      targets.set(name, await startTarget(name, opts, ctx.mock, mockUrl, key));
    }
    await sleep(300);
    const tests: [string, (t: Target, v: Values, f: TestFailures[], n: string[]) => Promise<void>][] = [
      ['idle', (t, v) => measureIdle(t, v)],
      // Before the slow streams: their thousand upstream connections would stay
      // pooled and hide how many the small requests open.
      ['small requests', (t, v, f) => smallLoad(ctx, t, v, f)],
      ['slow streams', (t, v, f) => slowStreams(ctx, t, v, f)],
      ['after the burst', (t, v) => afterBurst(ctx, t, v)],
      ['ttfb', (t, v, f) => ttfb(ctx, t, v, f)],
      ['large streams', (t, v, f) => largeStreams(ctx, t, v, f)],
      ['stalled reader', (t, v, f) => stalledReader(ctx, t, v, f)],
      ['disconnect', (t, v, f, n) => disconnectTest(ctx, t, v, f, n)],
    ];
    for (const [testName, test] of tests) {
      for (const name of order) {
        if (name === 'policy' && !POLICY_TESTS.has(testName)) continue;
        const t = targets.get(name) as Target;
        progress(opts, `round ${ctx.round}: ${testName} / ${name}`);
        const v = result.values[name] as Values;
        try {
          await test(t, v, result.failures[name] as TestFailures[], result.notes[name] as string[]);
        } catch (err) {
          // A test that cannot finish is reported, never silently dropped.
          (result.notes[name] as string[]).push(`${testName}: ${err instanceof Error ? err.message : String(err)}`);
          (result.failures[name] as TestFailures[]).push({
            test: testName,
            failed: 1,
            timeouts: 1,
            unserved: 0,
            byKind: { aborted: 1 },
          });
        }
        await sleep(150);
      }
    }
    for (const [name, t] of targets) {
      if (t.usageFile !== null)
        readUsageFile(t.usageFile, result.values[name] as Values, result.notes[name] as string[]);
      const log = t.log();
      if (log.warnOrWorse > 0)
        (result.notes[name] as string[]).push(
          `${log.warnOrWorse} warn/error log line(s); last: ${log.tail
            .filter((l) => l !== '')
            .slice(-2)
            .join(' | ')
            .slice(0, 300)}`,
        );
    }
  } finally {
    for (const t of targets.values()) await t.stop();
  }
  await runSessionRound(
    {
      upstream: ctx.sessions,
      warmupTurns: ctx.s.sessionWarmupTurns,
      names: names.filter((name) => name !== 'policy'), // its cost is measured by POLICY_TESTS
      start: (name, port) => startSessionTarget(name, opts, port, key),
      progress: (m) => progress(opts, `round ${ctx.round}: ${m}`),
    },
    result,
  );
  // Derived: added latency vs direct, failure totals.
  const d = result.values.direct as Values;
  for (const name of names) {
    const v = result.values[name] as Values;
    for (const k of [
      'c1P50Ms',
      'c1P99Ms',
      'c16P50Ms',
      'c16P99Ms',
      'c64P50Ms',
      'c64P99Ms',
      'c1wP50Ms',
      'c1wP99Ms',
      'headMs',
      'ttfbMs',
    ]) {
      const a = v[k];
      const b = d[k];
      v[`add_${k}`] = a === null || a === undefined || b === null || b === undefined ? null : a - b;
    }
    const fl = result.failures[name] as TestFailures[];
    v.failures = fl.reduce((n, x) => n + x.failed, 0);
    v.timeouts = fl.reduce((n, x) => n + x.timeouts, 0);
    v.unserved = fl.reduce((n, x) => n + x.unserved, 0);
    const refusedKinds = ['status 401', 'status 403', 'status 429'];
    v.refusals = fl.reduce((n, x) => n + refusedKinds.reduce((m, k) => m + (x.byKind[k] ?? 0), 0), 0);
  }
  return result;
}

/** Start one target afresh; ours and the floor from their copies of the chosen node. */
function startTarget(
  name: TargetName,
  opts: Options,
  mock: { readonly port: number },
  mockUrl: string,
  key: string,
  nodeFlags: readonly string[] = [],
): Promise<Target> {
  if (name === 'direct') return Promise.resolve(direct(mock.port, key));
  if (name === 'ours') return startOurs(nodeCopies().pathFor('ours'), mockUrl, key, opts.oursArgs, nodeFlags);
  if (name === 'policy') return startPolicy(nodeCopies().pathFor('policy'), mockUrl, key, opts.oursArgs, nodeFlags);
  if (name === 'floor') return startFloor(nodeCopies().pathFor('floor'), mock.port, key);
  return startOriginal(mockUrl, key);
}

/** A target in front of the sessions' upstream: ours also relays the WebSocket mode there. */
function startSessionTarget(name: TargetName, opts: Options, port: number, key: string): Promise<Target> {
  const url = `http://127.0.0.1:${port}/v1/responses`;
  if (name === 'ours') return startOurs(nodeCopies().pathFor('ours'), url, key, [...opts.oursArgs, '--websocket']);
  return startTarget(name, opts, { port }, url, key);
}

let copies: NodeCopies | null = null;
function nodeCopies(): NodeCopies {
  if (copies === null) throw new Error('no node binary chosen yet');
  return copies;
}

function progress(opts: Options, msg: string): void {
  if (!opts.json) process.stderr.write(`  … ${msg}\n`);
}

function spliceSummary(trials: readonly SpliceTrial[]) {
  const of = (v: string): SpliceTrial[] => trials.filter((t) => t.variant === v);
  const pairs: number[] = [];
  const cpuPairs: number[] = [];
  const plain = of('plain');
  const splice = of('splice');
  for (let i = 0; i < Math.min(plain.length, splice.length); i++) {
    pairs.push((splice[i] as SpliceTrial).rps / (plain[i] as SpliceTrial).rps);
    cpuPairs.push((splice[i] as SpliceTrial).cpuUsPerRequest / (plain[i] as SpliceTrial).cpuUsPerRequest);
  }
  return {
    plainRps: median(plain.map((t) => t.rps)),
    spliceRps: median(splice.map((t) => t.rps)),
    ratio: median(pairs),
    perTrial: pairs,
    plainCpuUs: median(plain.map((t) => t.cpuUsPerRequest)),
    spliceCpuUs: median(splice.map((t) => t.cpuUsPerRequest)),
    cpuRatio: median(cpuPairs),
    failed: trials.reduce((n, t) => n + t.failed, 0),
  };
}

async function runSplice(mock: Mock, key: string, s: ReturnType<typeof sizes>): Promise<SpliceTrial[]> {
  const child = forkChild('spliceBench.js');
  const result = new Promise<SpliceTrial[]>((resolve, reject) => {
    child.once('message', (m: { trials?: SpliceTrial[]; error?: string }) =>
      m.trials ? resolve(m.trials) : reject(new Error(m.error)),
    );
    child.once('exit', (code) => reject(new Error(`splice benchmark exited (${code})`)));
  });
  child.send({
    port: mock.port,
    key,
    concurrency: 16,
    requests: s.spliceRequests,
    trials: s.spliceTrials,
    timeoutMs: 10_000,
  });
  try {
    return await withTimeout(result, 120_000, 'splice benchmark');
  } finally {
    if (child.exitCode === null) killTree(child, 'SIGKILL');
  }
}

/** What a profiled process is, by target and place in its tree. */
function processLabel(target: TargetName, isRoot: boolean): string {
  if (target === 'original') return 'original';
  if (target === 'floor') return isRoot ? 'floor-back' : 'floor-front';
  return isRoot ? 'supervisor' : 'worker';
}

/**
 * --profile: small requests (at --profile-c, default 1) against ours, the
 * original and the floor under perf, and ours again with --cpu-prof for the
 * supervisor (the worker is spawned with fixed flags, and Node 20 writes no
 * --cpu-prof under the permission model: perf is its only view here). Also
 * each process's CPU per request, from /proc.
 */
async function profilePhase(
  opts: Options,
  client: Client,
  mock: Mock,
  mockUrl: string,
  key: string,
  s: ReturnType<typeof sizes>,
): Promise<string[]> {
  const dir = opts.profile as string;
  const out: string[] = [];
  const perf = perfAvailable();
  if (!perf) out.push("perf is not available: only the supervisor's --cpu-prof profile is taken");
  for (const name of opts.targets.filter((t) => t !== 'direct')) {
    const profDir = join(dir, name);
    mkdirSync(profDir, { recursive: true });
    // Ours twice: perf alone (unbiased), then --cpu-prof alone (its sampling
    // thread would otherwise turn every mprotect into a cross-CPU TLB shootdown).
    const passes =
      name === 'ours' || name === 'policy'
        ? [
            { perf, cpuProf: false },
            { perf: false, cpuProf: true },
          ]
        : [{ perf, cpuProf: false }];
    for (const pass of passes) {
      if (!pass.perf && !pass.cpuProf) continue;
      progress(opts, `profile: ${name}${pass.cpuProf ? ' (--cpu-prof)' : ' (perf)'}`);
      // Newer V8s also open their log file with --perf-basic-prof: into profDir, not the current directory.
      const perfFlags = [
        '--perf-basic-prof-only-functions',
        '--no-logfile-per-isolate',
        `--logfile=${join(profDir, 'supervisor-v8.log')}`,
      ];
      const nodeFlags = pass.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : perfFlags;
      const t = await startTarget(name, opts, mock, mockUrl, key, nodeFlags);
      const c = opts.profileConcurrency;
      let load: LoadResult;
      let sessions: ReturnType<typeof startPerf>[] = [];
      const cpu = new Map<number, number>();
      try {
        const base = { port: t.port, headers: t.headers, timeoutMs: s.smallTimeoutMs, maxMs: 60_000, concurrency: c };
        await client.run<LoadResult>({ kind: 'load', params: { ...base, count: 3000 } }, 70_000);
        const root = t.pid as number;
        if (pass.perf) {
          sessions = [
            startPerf(profDir, name, root, (pid) => processLabel(name, pid === root)),
            startPerf(profDir, name, mock.child.pid as number, () => 'mock-upstream'),
          ];
          await sleep(500); // let perf attach
        }
        for (const pid of processTree(root)) cpu.set(pid, cpuSeconds(pid));
        load = await client.run<LoadResult>(
          { kind: 'load', params: { ...base, count: c === 1 ? s.c1Count : s.profileRequests } },
          70_000,
        );
        for (const [pid, before] of cpu) cpu.set(pid, cpuSeconds(pid) - before);
      } finally {
        for (const session of sessions) await stopPerf(session);
        await t.stop(); // our supervisor writes its .cpuprofile as it exits
      }
      const perRequest = [...cpu].map(
        ([pid, cs], i) => `${processLabel(name, i === 0)} ${fmt((cs / Math.max(1, load.ok)) * 1e6)} µs (pid ${pid})`,
      );
      out.push(
        `${name}${pass.cpuProf ? ' under --cpu-prof' : ''}: ${load.ok} requests at c=${c}, ${fmt(load.rps)} req/s, ${load.failed} failed (files in ${profDir})`,
      );
      out.push(`  CPU per request (/proc): ${perRequest.join(', ')}`);
      for (const session of sessions) {
        for (const c of session.children) {
          const sum = perfSummary(c.file);
          out.push(
            `  perf, ${c.label} (pid ${c.pid}, ${sum.samples} samples at 999 Hz) — self time by shared object: ${sum.byDso.join('; ')}`,
          );
          out.push(`    inclusive: ${sum.inclusive.join('; ')}`);
          for (const l of sum.bySymbol) out.push(`      ${l}`);
          if ((name === 'ours' || name === 'policy') && c.label === 'supervisor') {
            out.push('    by the nearest JavaScript frame (its system calls included):');
            for (const l of perfByOwner(c.file)) out.push(`      ${l}`);
          }
        }
        removePerfMaps(session.children.map((c) => c.pid));
      }
      if (pass.cpuProf) {
        const cp = cpuProfileSummary(profDir);
        if (cp === null) out.push('  supervisor --cpu-prof: no profile written');
        else {
          out.push(
            `  supervisor --cpu-prof (${cp.file}) — self time, % of busy samples, by origin: ${cp.byOrigin.join('; ')}`,
          );
          for (const l of cp.byFunction) out.push(`      ${l}`);
        }
      }
    }
  }
  return out;
}

/** What the default --max-concurrent is here: the proxy derives it from the hard open-file limit it inherits. */
function defaultStreamsNote(slowN: number): string {
  const m = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
  if (m === null) return 'default --max-concurrent, from the open-file limit';
  const streams = streamsFor(Number(m[1]));
  const short = streams < slowN ? `: fewer than the ${slowN} slow streams, expect 503s` : '';
  return `default --max-concurrent: ${streams} from the hard open-file limit ${m[1]}${short}`;
}

/** The commit measured, and whether src/ had uncommitted changes (others edit it concurrently). */
function codeVersion(): string {
  try {
    const cwd = fileURLToPath(new URL('../../../', import.meta.url));
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8', timeout: 5000 }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], {
      cwd,
      encoding: 'utf8',
      timeout: 5000,
    }).trim();
    return `git ${head}${dirty === '' ? ', src/ clean' : `, src/ with uncommitted changes (${dirty.split('\n').length} file(s))`}`;
  } catch {
    return 'unknown (no git)';
  }
}

/** Machine-wide busy and steal CPU seconds (/proc/stat), and this process's own with its reaped descendants. */
function machineCpu(): { busy: number; steal: number; own: number } {
  const ticks = 100;
  const f = (readFileSync('/proc/stat', 'latin1').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  const st = readFileSync('/proc/self/stat', 'latin1');
  const p = st
    .slice(st.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  const own = (p[11] ?? 0) + (p[12] ?? 0) + (p[13] ?? 0) + (p[14] ?? 0);
  return { busy: (user + nice + system + irq + softirq) / ticks, steal: steal / ticks, own: own / ticks };
}

/** CPU other processes used during the run: a noise indicator for the figures. */
function otherCpu(start: ReturnType<typeof machineCpu>): { otherCpuS: number; stealS: number; benchCpuS: number } {
  const end = machineCpu();
  const benchCpuS = end.own - start.own;
  return { otherCpuS: Math.max(0, end.busy - start.busy - benchCpuS), stealS: end.steal - start.steal, benchCpuS };
}

function noiseLine(n: { otherCpuS: number; stealS: number; benchCpuS: number }, elapsedS: number): string {
  const cores = cpus().length;
  return `CPU during the run: the benchmark's processes ${n.benchCpuS.toFixed(0)} s; other processes on the machine ${n.otherCpuS.toFixed(0)} s (${((100 * n.otherCpuS) / (elapsedS * cores)).toFixed(0)}% of ${cores} cores: noise); steal ${n.stealS.toFixed(1)} s.`;
}

async function stopAll(): Promise<void> {
  for (const child of [...started]) killTree(child, 'SIGTERM');
  const deadline = Date.now() + 3000;
  while (started.size > 0 && Date.now() < deadline) {
    for (const c of [...started]) if (c.exitCode !== null || c.signalCode !== null) started.delete(c);
    await sleep(50);
  }
  for (const child of [...started]) killTree(child, 'SIGKILL');
  copies?.remove();
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const s = sizes(opts.quick);
  const haveOriginal = originalCommand() !== null;
  if (!haveOriginal) opts.targets = opts.targets.filter((t) => t !== 'original');
  const key = `sk-bench-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const oursArgs = ['--shutdown-timeout', '1', ...opts.oursArgs];
  opts.oursArgs = oursArgs;
  copies = new NodeCopies(opts.node);
  const started0 = Date.now();
  const machine0 = machineCpu();
  const mock = await Mock.start(`Bearer ${key}`);
  const client = await Client.start();
  const sessions = await SessionsUpstream.start(key, s.sessions);
  const mockUrl = `http://127.0.0.1:${mock.port}/v1/responses`;
  if (!opts.json) {
    console.log(
      `responses-api-proxy benchmark — ${opts.quick ? 'QUICK (reduced) ' : ''}${opts.rounds} round(s); targets: ${opts.targets.join(', ')}`,
    );
    console.log(`code: ${codeVersion()}`);
    console.log(
      `machine: ${cpus().length} CPU(s) (${cpus()[0]?.model ?? '?'}), load ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );
    console.log(
      `node: ours and the floor on ${copies.version} (${copies.source}, each from its own copy); harness, mock upstream and load client on ${process.version}`,
    );
    console.log(
      'note: mock upstream, load client and proxy share these cores; the load client is one lean Node process (raw keep-alive sockets, no pipelining).',
    );
    console.log(`ours: ${oursCommandLine(mockUrl, oursArgs)}  (${defaultStreamsNote(s.slowN)})`);
    if (opts.targets.includes('policy'))
      console.log(
        `policy: ours + ${policyArgs('DIR').join(' ')} (DIR a new temporary directory);\n` +
          `  the client sends "Authorization: Bearer <token>"; policy runs only: ${[...POLICY_TESTS].join(', ')}`,
      );
    const oc = originalCommand();
    if (oc)
      console.log(
        `original: ${oc.file.replace(/^.*node_modules\//, 'node_modules/')} ${oc.args.join(' ')} --upstream-url ${mockUrl}${oc.native ? ' (the native binary, without the node wrapper)' : ''}`,
      );
    console.log('');
  }
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    rounds.push(await runRound({ client, mock, s, round, burstEndedAt: new Map(), sessions }, opts, mockUrl, key));
  }
  let splice: ReturnType<typeof spliceSummary> | null = null;
  let spliceTrials: SpliceTrial[] = [];
  if (opts.splice && opts.rounds > 0) {
    progress(opts, 'splice micro-benchmark');
    spliceTrials = await runSplice(mock, key, s);
    splice = spliceSummary(spliceTrials);
  }
  const profile = opts.profile === null ? [] : await profilePhase(opts, client, mock, mockUrl, key, s);
  const mockStats = await mock.stats();
  const sessionStats = await sessions.stats();
  const checks = [...checkTargets(rounds, opts.targets, s.slowN), ...checkPolicy(rounds, opts.targets)];
  const elapsedS = (Date.now() - started0) / 1000;
  // Every process started here has exited (and been reaped) before the machine's CPU is read again.
  await stopAll();
  const noise = otherCpu(machine0);

  if (opts.json) {
    const medians: Record<string, Record<string, number>> = {};
    for (const t of opts.targets)
      medians[t] = Object.fromEntries(ROWS.map((r) => [r.key, median(valuesOf(rounds, t, r.key))]));
    const perRoundRatios: Record<string, Record<string, number[]>> = {};
    for (const [a, b] of RATIOS)
      perRoundRatios[`${a}/${b}`] = Object.fromEntries(ROWS.map((r) => [r.key, ratios(rounds, a, b, r.key)]));
    const node = { proxy: copies.version, source: copies.source, harness: process.version };
    console.log(
      JSON.stringify(
        {
          code: codeVersion(),
          options: opts,
          sizes: s,
          machine: { cpus: cpus().length, node },
          rounds,
          medians,
          perRoundRatios,
          targets: checks,
          splice: { ...splice, trials: spliceTrials },
          sessions: { shape: s.sessions, upstream: sessionStats },
          profile,
          mock: mockStats,
          noise,
          elapsedS,
        },
        (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v),
        2,
      ),
    );
    return;
  }

  if (rounds.length > 0) printTables(opts, rounds, mockStats, splice, checks);
  if (rounds.length > 0) printSessions(s.sessions, sessionStats);
  if (profile.length > 0)
    console.log(['', `CPU profile under c=${opts.profileConcurrency} small-request load:`, ...profile].join('\n'));
  console.log(`\n${elapsedS.toFixed(0)} s in all. ${noiseLine(noise, elapsedS)}`);
}

function printTables(
  opts: Options,
  rounds: readonly RoundResult[],
  mockStats: MockStats,
  splice: ReturnType<typeof spliceSummary> | null,
  checks: readonly TargetCheck[],
): void {
  const targets = opts.targets;
  const against = RATIOS.filter(([a, b]) => targets.includes(a) && targets.includes(b));
  const header = ['metric (median of rounds)', ...targets, ...against.map(([a, b]) => `${a}/${b} per round`)];
  const rows = ROWS.map((r) => {
    const cells = targets.map((t) => fmt(median(valuesOf(rounds, t, r.key)), r.digits));
    const per = ([a, b]: readonly [TargetName, TargetName]): string => {
      if (r.noRatio === true) return '';
      const rs = ratios(rounds, a, b, r.key);
      if (rs.every((x) => !Number.isFinite(x))) return '—';
      return `${fmt(median(rs), 2)} (${rs.map((x) => fmt(x, 2)).join(' ')})`;
    };
    return [r.label, ...cells, ...against.map(per)];
  });
  console.log(table(header, rows));
  console.log('');
  console.log('failures by test (failed/timeouts/unserved, per round; every reply is checked for status and length):');
  for (const t of targets) {
    // Summed per test name and round (a test may run several loads).
    const byTest = new Map<string, TestFailures[]>();
    rounds.forEach((r, i) => {
      for (const f of r.failures[t] ?? []) {
        const list =
          byTest.get(f.test) ??
          rounds.map(() => ({
            test: f.test,
            failed: 0,
            timeouts: 0,
            unserved: 0,
            byKind: {} as Record<string, number>,
          }));
        const x = list[i] as TestFailures;
        x.failed += f.failed;
        x.timeouts += f.timeouts;
        x.unserved += f.unserved;
        for (const [k, n] of Object.entries(f.byKind)) x.byKind[k] = (x.byKind[k] ?? 0) + n;
        byTest.set(f.test, list);
      }
    });
    const cell = (x: TestFailures): string =>
      x.failed === 0 ? '0' : `${x.failed}/${x.timeouts}/${x.unserved} ${JSON.stringify(x.byKind)}`;
    const bad = [...byTest]
      .map(([test, l]) => [test, l.map(cell)] as const)
      .filter(([, l]) => l.some((x) => x !== '0'));
    console.log(
      `  ${t}: ${bad.length === 0 ? 'none' : bad.map(([test, l]) => `${test}: ${l.join(' | ')}`).join('; ')}`,
    );
  }
  const notes = rounds.flatMap((r) =>
    targets.flatMap((t) => (r.notes[t] ?? []).map((n) => `  round ${r.round} ${t}: ${n}`)),
  );
  if (notes.length > 0) console.log(['notes:', ...notes].join('\n'));
  console.log(
    `mock upstream: ${mockStats.requests} requests, ${mockStats.authMismatches} Authorization mismatches${mockStats.mismatchSamples.length > 0 ? ` (e.g. ${mockStats.mismatchSamples.join(', ')})` : ''}`,
  );
  console.log('');
  if (splice !== null) {
    console.log('issue 8 — splice cost (undici to the mock, c=16, interleaved trials):');
    console.log(
      `  plain header ${fmt(splice.plainRps)} req/s, ${fmt(splice.plainCpuUs)} µs CPU/req; KeySplicer ${fmt(splice.spliceRps)} req/s, ${fmt(splice.spliceCpuUs)} µs CPU/req; failed ${splice.failed}`,
    );
    console.log(
      `  splice/plain throughput ${fmt(splice.ratio, 3)} (per trial pair: ${splice.perTrial.map((x) => fmt(x, 3)).join(' ')}), CPU/req ${fmt(splice.cpuRatio, 3)} -> target ≥ 0.95: ${splice.ratio >= 0.95 ? 'MET' : 'MISSED'}`,
    );
    console.log('');
  }
  printChecks(rounds, checks);
}

function printSessions(shape: SessionShape, stats: SessionsUpstreamStats): void {
  const kb = (n: number): string => `${Math.round(n / 1000)} KB`;
  console.log('');
  console.log(
    `Codex-like sessions (item 7): ${shape.agents} agents at once, ${shape.turns} turns each, per target and ` +
      `transport every round; HTTP bodies ${kb(shape.firstBodyBytes)} to ${kb(shape.lastBodyBytes)}, WebSocket: ` +
      `previous_response_id and the new input; ${shape.events} events per answer, ` +
      `${shape.minGapMs}–${shape.maxGapMs} ms apart (seeded, the same for every target)`,
  );
  console.log(
    `  the sessions' upstream saw ${stats.httpTurns} HTTP and ${stats.webSocketTurns} WebSocket turns (warm-ups ` +
      `included), ${stats.refused} refused for the key, ${stats.malformed} not the turn their agent was due to send`,
  );
}

let stopping = false;
process.on('SIGINT', () => {
  if (stopping) process.exit(130);
  stopping = true;
  process.stderr.write('\ninterrupted: stopping every process started by the benchmark\n');
  void stopAll().then(() => process.exit(130));
});

// The whole run is bounded too.
const watchdog = setTimeout(() => {
  process.stderr.write('benchmark exceeded 60 minutes: stopping\n');
  void stopAll().then(() => process.exit(1));
}, 60 * 60_000);
watchdog.unref();

main().then(
  async () => {
    await stopAll();
    process.exit(0);
  },
  async (err: unknown) => {
    process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await stopAll();
    process.exit(1);
  },
);
