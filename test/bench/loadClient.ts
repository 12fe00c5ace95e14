// The load generator, in its own process (forked by run.ts) so it shares an
// event loop with neither the mock upstream nor the harness. It runs one task
// at a time on request over its IPC channel. Every loop is bounded by a count
// and a deadline; every request has a timeout; every reply is checked for
// status and length, and each failure is counted by kind.

import { HttpConn, buildRequest, type ExchangeResult } from './httpConn.js';
import { H_ID, SMALL_REQUEST, expectedLength, nowUs, specHeaders, type StreamSpec } from './common.js';
import { percentile } from './report.js';

export interface Failures {
  failed: number;
  timeouts: number;
  unserved: number;
  byKind: Record<string, number>;
}

export interface LoadParams {
  readonly port: number;
  readonly headers: Record<string, string>;
  readonly concurrency: number;
  readonly count: number;
  readonly maxMs: number;
  readonly timeoutMs: number;
}
export interface LoadResult extends Failures {
  readonly sent: number;
  readonly ok: number;
  readonly elapsedMs: number;
  readonly rps: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly connections: number;
}

export interface StreamsParams {
  readonly port: number;
  readonly headers: Record<string, string>;
  readonly spec: StreamSpec;
  readonly concurrency: number;
  readonly count: number;
  readonly maxMs: number;
  readonly timeoutMs: number;
}
export interface StreamsResult extends Failures {
  readonly ok: number;
  readonly wallMs: number;
  readonly totalBytes: number;
  /** Body bytes of successful streams / wall time. */
  readonly mbps: number;
  readonly perStreamMbpsMedian: number;
  /** Request sent -> the response's first byte (its head). */
  readonly headP50Us: number;
  /** Request sent -> the first body byte. */
  readonly ttfbP50Us: number;
  readonly ttfbMaxUs: number;
}

export interface SlowParams {
  readonly port: number;
  readonly headers: Record<string, string>;
  readonly n: number;
  readonly events: number;
  readonly delayMs: number;
  readonly eventSize: number;
  /**
   * An event counts as progress ("live") when it arrived at least this long
   * before the stream's last byte: streamed as sent, not in one burst at the end.
   */
  readonly liveMarginMs: number;
  readonly timeoutMs: number;
}
export interface SlowResult extends Failures {
  readonly ok: number;
  readonly wallMs: number;
  /** Time until every stream had received its first body byte (null if some never did). */
  readonly allFirstByteMs: number | null;
  /** Fewest live events any stream saw, and how many streams saw fewer than 2. */
  readonly minLiveEvents: number;
  readonly fewerThan2Live: number;
  readonly minEventsTotal: number;
}

export interface DisconnectParams {
  readonly port: number;
  readonly headers: Record<string, string>;
  readonly ids: readonly string[];
  readonly waitMs: number;
}
export interface DisconnectResult {
  readonly streams: readonly { id: string; disconnectUs: number; gotBytes: boolean }[];
}

export type Task =
  | { readonly kind: 'load'; readonly params: LoadParams }
  | { readonly kind: 'streams'; readonly params: StreamsParams }
  | { readonly kind: 'slow'; readonly params: SlowParams }
  | { readonly kind: 'stallStart'; readonly params: { port: number; headers: Record<string, string>; waitMs: number } }
  | { readonly kind: 'stallStop' }
  | { readonly kind: 'disconnect'; readonly params: DisconnectParams };

function newFailures(): Failures {
  return { failed: 0, timeouts: 0, unserved: 0, byKind: {} };
}

function countFailure(f: Failures, r: ExchangeResult): void {
  f.failed++;
  if (r.error === 'timeout') f.timeouts++;
  if (r.unserved) f.unserved++;
  // By status for a wrong one, so a refusal (401, 403, 429) shows as itself.
  const kind = r.error === 'status' ? `status ${r.status}` : r.error;
  f.byKind[kind] = (f.byKind[kind] ?? 0) + 1;
}

function once(
  conn: HttpConn,
  request: Buffer,
  expectLength: number,
  timeoutMs: number,
  onBody?: (n: number, at: number) => void,
): Promise<ExchangeResult> {
  return new Promise((resolve) =>
    conn.send(request, 200, expectLength, timeoutMs, { onDone: resolve, ...(onBody ? { onBody } : {}) }),
  );
}

async function load(p: LoadParams): Promise<LoadResult> {
  const request = buildRequest(p.port, { ...p.headers, ...specHeaders({ mode: 'small' }) }, SMALL_REQUEST);
  const expect = expectedLength({ mode: 'small' });
  const f = newFailures();
  const latencies: number[] = [];
  let sent = 0;
  const start = nowUs();
  const deadline = start + p.maxMs * 1000;
  const conns: HttpConn[] = [];
  const worker = async (): Promise<void> => {
    const conn = new HttpConn(p.port);
    conns.push(conn);
    while (sent < p.count && nowUs() < deadline) {
      sent++;
      const r = await once(conn, request, expect, p.timeoutMs);
      if (r.ok) latencies.push(r.endUs - r.startUs);
      else countFailure(f, r);
    }
    conn.destroy();
  };
  await Promise.all(Array.from({ length: p.concurrency }, worker));
  const elapsedMs = (nowUs() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    ...f,
    sent,
    ok: latencies.length,
    elapsedMs,
    rps: latencies.length / (elapsedMs / 1000),
    p50Us: percentile(latencies, 50),
    p99Us: percentile(latencies, 99),
    connections: conns.reduce((n, c) => n + c.opened, 0),
  };
}

async function streams(p: StreamsParams): Promise<StreamsResult> {
  const request = buildRequest(p.port, { ...p.headers, ...specHeaders(p.spec) }, SMALL_REQUEST);
  const expect = expectedLength(p.spec);
  const f = newFailures();
  const ttfb: number[] = [];
  const heads: number[] = [];
  const perStream: number[] = [];
  let totalBytes = 0;
  let ok = 0;
  let started = 0;
  const start = nowUs();
  const deadline = start + p.maxMs * 1000;
  const worker = async (): Promise<void> => {
    const conn = new HttpConn(p.port);
    while (started < p.count && nowUs() < deadline) {
      started++;
      const r = await once(conn, request, expect, p.timeoutMs);
      if (!r.ok) {
        countFailure(f, r);
        continue;
      }
      ok++;
      totalBytes += r.bodyBytes;
      if (r.firstByteUs !== null) ttfb.push(r.firstByteUs - r.startUs);
      if (r.responseStartUs !== null) heads.push(r.responseStartUs - r.startUs);
      perStream.push(r.bodyBytes / (r.endUs - r.startUs)); // bytes/µs = MB/s
    }
    conn.destroy();
  };
  await Promise.all(Array.from({ length: Math.min(p.concurrency, p.count) }, worker));
  const wallUs = nowUs() - start;
  ttfb.sort((a, b) => a - b);
  heads.sort((a, b) => a - b);
  perStream.sort((a, b) => a - b);
  return {
    ...f,
    ok,
    wallMs: wallUs / 1000,
    totalBytes,
    mbps: totalBytes / wallUs,
    perStreamMbpsMedian: percentile(perStream, 50),
    headP50Us: percentile(heads, 50),
    ttfbP50Us: percentile(ttfb, 50),
    ttfbMaxUs: ttfb.length > 0 ? (ttfb[ttfb.length - 1] as number) : NaN,
  };
}

async function slow(p: SlowParams): Promise<SlowResult> {
  const spec: StreamSpec = { mode: 'sse', events: p.events, delayMs: p.delayMs, eventSize: p.eventSize };
  const request = buildRequest(p.port, { ...p.headers, ...specHeaders(spec) }, SMALL_REQUEST);
  const expect = expectedLength(spec);
  const f = newFailures();
  const start = nowUs();
  let lastFirstByte = 0;
  let withFirstByte = 0;
  let ok = 0;
  let minLive = Infinity;
  let fewerThan2 = 0;
  let minTotal = Infinity;
  const one = async (): Promise<void> => {
    const conn = new HttpConn(p.port);
    const arrivals: number[] = []; // [atUs, bytes, atUs, bytes, ...]
    const r = await new Promise<ExchangeResult>((resolve) => {
      conn.send(request, 200, expect, p.timeoutMs, {
        onDone: resolve,
        onBody: (n, at) => {
          if (arrivals.length === 0) {
            withFirstByte++;
            lastFirstByte = Math.max(lastFirstByte, at);
          }
          arrivals.push(at, n);
        },
      });
    });
    conn.destroy();
    const last = arrivals.length > 0 ? (arrivals[arrivals.length - 2] as number) : 0;
    let liveBytes = 0;
    for (let i = 0; i < arrivals.length; i += 2) {
      if ((arrivals[i] as number) <= last - p.liveMarginMs * 1000) liveBytes += arrivals[i + 1] as number;
    }
    const live = Math.floor(liveBytes / p.eventSize);
    minLive = Math.min(minLive, live);
    if (live < 2) fewerThan2++;
    minTotal = Math.min(minTotal, Math.floor(r.bodyBytes / p.eventSize));
    if (r.ok) ok++;
    else countFailure(f, r);
  };
  await Promise.all(Array.from({ length: p.n }, one));
  return {
    ...f,
    ok,
    wallMs: (nowUs() - start) / 1000,
    allFirstByteMs: withFirstByte === p.n ? (lastFirstByte - start) / 1000 : null,
    minLiveEvents: minLive === Infinity ? 0 : minLive,
    fewerThan2Live: fewerThan2,
    minEventsTotal: minTotal === Infinity ? 0 : minTotal,
  };
}

let staller: { conn: HttpConn; bytes: number } | null = null;

async function stallStart(
  port: number,
  headers: Record<string, string>,
  waitMs: number,
): Promise<{ bytesBeforePause: number; gotBody: boolean }> {
  const request = buildRequest(port, headers, SMALL_REQUEST);
  const conn = new HttpConn(port);
  const s = { conn, bytes: 0 };
  staller = s;
  return new Promise((resolve) => {
    let settled = false;
    const settle = (gotBody: boolean): void => {
      if (settled) return;
      settled = true;
      conn.pause();
      resolve({ bytesBeforePause: s.bytes, gotBody });
    };
    const timer = setTimeout(() => settle(false), waitMs);
    conn.send(request, 200, -1, 0, {
      onDone: () => settle(false),
      onBody: (n) => {
        s.bytes += n;
        clearTimeout(timer);
        settle(true);
      },
    });
  });
}

function stallStop(): { bytes: number } {
  const bytes = staller?.bytes ?? 0;
  staller?.conn.destroy();
  staller = null;
  return { bytes };
}

async function disconnect(p: DisconnectParams): Promise<DisconnectResult> {
  const out = await Promise.all(
    p.ids.map(
      (id) =>
        new Promise<{ id: string; disconnectUs: number; gotBytes: boolean }>((resolve) => {
          const conn = new HttpConn(p.port);
          const request = buildRequest(p.port, { ...p.headers, [H_ID]: id }, SMALL_REQUEST);
          let gotBytes = false;
          const cut = (): void => {
            const disconnectUs = nowUs();
            conn.destroy('disconnect');
            resolve({ id, disconnectUs, gotBytes });
          };
          // Cut shortly after the first body byte (or after waitMs if none arrives).
          const timer = setTimeout(cut, p.waitMs);
          conn.send(request, 200, -1, 0, {
            onDone: () => {},
            onBody: () => {
              if (gotBytes) return;
              gotBytes = true;
              clearTimeout(timer);
              setTimeout(cut, 50);
            },
          });
        }),
    ),
  );
  return { streams: out };
}

async function run(task: Task): Promise<unknown> {
  switch (task.kind) {
    case 'load':
      return load(task.params);
    case 'streams':
      return streams(task.params);
    case 'slow':
      return slow(task.params);
    case 'stallStart':
      return stallStart(task.params.port, task.params.headers, task.params.waitMs);
    case 'stallStop':
      return stallStop();
    case 'disconnect':
      return disconnect(task.params);
  }
}

let queue: Promise<void> = Promise.resolve();
process.on('message', (raw: unknown) => {
  const { seq, task } = raw as { seq: number; task: Task };
  queue = queue.then(async () => {
    try {
      process.send?.({ seq, result: await run(task) });
    } catch (err) {
      process.send?.({ seq, error: err instanceof Error ? err.stack : String(err) });
    }
  });
});
process.on('disconnect', () => process.exit(0));
process.send?.({ seq: 0, result: 'ready' });
