// Soak (issue 5, point 7) and the slow-headers deadline: `npm run test:soak`.
//
// A few thousand requests through the real proxy (both processes), 32 at a
// time on keep-alive connections, with random client aborts, random upstream
// failures (socket destroyed before or during the response, 500s), large
// bodies beyond one credit window, and one SIGKILL of the worker in the
// middle. Every request must complete byte-exact (sha256 of the body) or end
// in a clean error (502/504 OpenAI JSON, a cut connection) — never a silently
// truncated or corrupted success, never a hang. Afterwards the supervisor's
// descriptors and the upstream's sockets return to their starting counts (a
// connection undici opened but never used is first shown to be idle in its
// pool by using it) and the supervisor's RSS stays within a stated bound.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { ControlledUpstream, type Exchange } from '../helpers/controlledUpstream.js';
import { ProxyProcess, childPids, isAlive, sleep } from '../helpers/proxyProcess.js';
import { StrayPids } from '../helpers/strayPids.js';
import { fdCount, fdList, prng, rssMb, runLanes, sha256, tcpConnectionsTo, type LaneRun } from './soakKit.js';

/** SOAK_REQUESTS overrides the count (e.g. a longer local run); the kill stays in the middle. */
const REQUESTS = Number(process.env.SOAK_REQUESTS ?? 5000);
const CONCURRENCY = 32;
const KILL_AFTER = Math.floor(REQUESTS / 2);
/**
 * The stated memory bound: the supervisor's RSS after the soak is at most
 * 96 MB above the idle process. Under 32 concurrent streams (bodies up to
 * 400 KB, 256 KiB credit windows each way) its working set was measured at
 * +36..70 MB over idle on 2 cores, and flat afterwards (SOAK_REQUESTS=30000:
 * 131, 130, 126, 125 MB at each quarter), so +64 MB would be too tight to be
 * stable. Leaks are caught by the exact descriptor and socket counts below.
 */
const RSS_GROWTH_LIMIT_MB = 96;
const SETTLE_LIMIT_MS = 15_000;
const REQUEST_TIMEOUT_MS = 20_000;
/** Batches of CONCURRENCY held requests to reach an idle connection anywhere in undici's pool. */
const REUSE_BATCHES = 8;

type Mode = 'ok' | 'big' | 'abort' | 'destroy-mid' | 'reset-before-head' | 'upstream-500';

interface Spec {
  readonly id: number;
  readonly mode: Mode;
  readonly seed: number;
  readonly size: number;
  readonly chunks: number;
  readonly requestBody: Buffer;
  /** sha256 of the response body the upstream sends in full. */
  readonly sha256: string;
  readonly abortAfterMs: number;
}

type Outcome =
  | 'exact' //          the full body, byte for byte, cleanly ended
  | 'mirrored-500' //   the upstream's 500 and its body, exact
  | 'gateway-json' //   the proxy's own 502/504 with an OpenAI-shaped JSON body
  | 'cut' //            the connection was cut or the response ended incomplete
  | 'client-abort' //   this test aborted it
  | 'BAD'; //           anything else: corrupted or truncated success, wrong status, hang

interface Result {
  readonly spec: Spec;
  readonly outcome: Outcome;
  readonly detail: string;
  readonly startedAt: number;
  readonly endedAt: number;
  /** When the client connection it was sent on was opened (a reused keep-alive connection: earlier). */
  readonly connectionOpenedAt: number;
}

// ---------------------------------------------------------------- deterministic bodies

function bodyFor(seed: number, size: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.allocUnsafe(size + 3);
  for (let i = 0; i < size; i += 4) buf.writeUInt32LE(next(), i);
  return buf.subarray(0, size);
}

function makeSpecs(count: number, seed: number): Spec[] {
  const next = prng(seed);
  const rand = (): number => next() / 0x100000000;
  const specs: Spec[] = [];
  for (let id = 1; id <= count; id++) {
    const r = rand();
    let mode: Mode = 'ok';
    if (r < 0.05) mode = 'abort';
    else if (r < 0.075) mode = 'destroy-mid';
    else if (r < 0.085) mode = 'reset-before-head';
    else if (r < 0.1) mode = 'upstream-500';
    else if (r < 0.13) mode = 'big';
    const size = mode === 'big' ? 300 * 1024 + Math.floor(rand() * 100 * 1024) : 256 + Math.floor(rand() * 48 * 1024);
    const bodySeed = next();
    const requestBody = Buffer.from(
      JSON.stringify({
        model: 'gpt-soak',
        input: 'x'.repeat(Math.floor(rand() * (rand() < 0.05 ? 200_000 : 3_000))),
        id,
      }),
    );
    specs.push({
      id,
      mode,
      seed: bodySeed,
      size,
      chunks: 1 + Math.floor(rand() * 8),
      requestBody,
      sha256: sha256(bodyFor(bodySeed, size)),
      abortAfterMs: Math.floor(rand() * 25),
    });
  }
  return specs;
}

// ---------------------------------------------------------------- the upstream's side

const UPSTREAM_ERROR = Buffer.from(
  '{"error":{"message":"soak: upstream failure","type":"server_error","code":"soak_500"}}',
);

async function writeInChunks(
  ex: Exchange,
  body: Buffer,
  chunks: number,
  gapMs: number,
  stopAfter = Infinity,
): Promise<void> {
  const per = Math.ceil(body.length / chunks);
  for (let i = 0, offset = 0; offset < body.length && i < stopAfter; i++, offset += per) {
    if (ex.res.destroyed || ex.closedAt !== null) return;
    const ok = ex.res.write(body.subarray(offset, offset + per));
    if (!ok) await new Promise<void>((resolve) => ex.res.once('drain', resolve).once('close', resolve));
    await sleep(gapMs);
  }
}

async function serveSoak(ex: Exchange): Promise<void> {
  const h = ex.req.headers;
  const mode = h['x-soak-mode'] as Mode;
  const seed = Number(h['x-soak-seed']);
  const size = Number(h['x-soak-size']);
  const chunks = Number(h['x-soak-chunks']);
  const requestBody = await ex.body;
  if (ex.res.destroyed || ex.closedAt !== null) return;
  if (sha256(requestBody) !== h['x-soak-request-sha256']) {
    ex.res.writeHead(422, { 'content-type': 'text/plain' });
    ex.res.end('request body corrupted');
    return;
  }
  const body = bodyFor(seed, size);
  switch (mode) {
    case 'reset-before-head':
      ex.req.socket.destroy();
      return;
    case 'upstream-500':
      ex.res.writeHead(500, { 'content-type': 'application/json' });
      ex.res.end(UPSTREAM_ERROR);
      return;
    case 'destroy-mid':
      ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
      await writeInChunks(ex, body, Math.max(2, chunks), 1, Math.max(1, Math.floor(chunks / 2)));
      await sleep(2);
      ex.req.socket.destroy();
      return;
    case 'abort':
      await sleep(Number(h['x-soak-abort-ms']) % 10);
      if (ex.res.destroyed || ex.closedAt !== null) return;
      ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
      await writeInChunks(ex, body, 16, 5);
      if (!ex.res.destroyed) ex.res.end();
      return;
    default:
      ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
      await writeInChunks(ex, body, chunks, 1);
      if (!ex.res.destroyed) ex.res.end();
  }
}

// ---------------------------------------------------------------- the client's side

/** When each client connection was opened, to tell which belonged to the killed worker. */
const connectionOpenedAt = new WeakMap<Socket, number>();

function runOne(port: number, agent: Agent, spec: Spec): Promise<Result> {
  const startedAt = performance.now();
  let openedAt = startedAt;
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let status = 0;
    let contentType = '';
    let prefix: Buffer[] = [];
    let settled = false;
    let aborted = false;
    const finish = (outcome: Outcome, detail = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      clearTimeout(abortTimer);
      resolve({
        spec,
        outcome: aborted && outcome !== 'BAD' ? 'client-abort' : outcome,
        detail,
        startedAt,
        endedAt: performance.now(),
        connectionOpenedAt: openedAt,
      });
    };
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/responses',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': String(spec.requestBody.length),
          'x-test-tag': `soak-${spec.id}`,
          'x-soak-mode': spec.mode,
          'x-soak-seed': String(spec.seed),
          'x-soak-size': String(spec.size),
          'x-soak-chunks': String(spec.chunks),
          'x-soak-abort-ms': String(spec.abortAfterMs),
          'x-soak-request-sha256': sha256(spec.requestBody),
        },
      },
      (res) => {
        status = res.statusCode ?? 0;
        contentType = String(res.headers['content-type'] ?? '');
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          hash.update(c);
          if (status !== 200) prefix.push(c);
          if (spec.mode === 'abort' && !aborted) {
            aborted = true;
            req.destroy();
          }
        });
        res.on('end', () => {
          if (!res.complete) return finish('cut', 'incomplete');
          const body = Buffer.concat(prefix);
          prefix = [];
          if (status === 200) {
            const digest = hash.digest('hex');
            if (digest === spec.sha256 && bytes === spec.size) return finish('exact');
            return finish(
              'BAD',
              `200 complete but ${bytes}/${spec.size} bytes, sha ${digest === spec.sha256 ? 'ok' : 'differs'}`,
            );
          }
          if (status === 500 && body.equals(UPSTREAM_ERROR)) return finish('mirrored-500');
          if ((status === 502 || status === 504) && /^application\/json/.test(contentType)) {
            try {
              const parsed = JSON.parse(body.toString('utf8')) as { error?: { message?: unknown; code?: unknown } };
              if (typeof parsed.error?.message === 'string' && typeof parsed.error.code === 'string')
                return finish('gateway-json', `${status} ${parsed.error.code}`);
            } catch {
              // falls through
            }
          }
          return finish('BAD', `status ${status}: ${body.toString('utf8').slice(0, 200)}`);
        });
        res.on('aborted', () => finish('cut', 'aborted'));
        res.on('error', (err: NodeJS.ErrnoException) => finish('cut', err.code ?? err.message));
        res.on('close', () => finish('cut', 'closed'));
      },
    );
    req.on('socket', (socket: Socket) => {
      if (!connectionOpenedAt.has(socket)) connectionOpenedAt.set(socket, startedAt);
      openedAt = connectionOpenedAt.get(socket) as number;
    });
    req.on('error', (err: NodeJS.ErrnoException) =>
      finish(aborted ? 'client-abort' : 'cut', `request: ${err.code ?? err.message}`),
    );
    const timeout = setTimeout(() => {
      finish('BAD', `no outcome within ${REQUEST_TIMEOUT_MS} ms`);
      req.destroy();
    }, REQUEST_TIMEOUT_MS);
    const abortTimer =
      spec.mode === 'abort'
        ? setTimeout(() => {
            aborted = true;
            req.destroy();
          }, spec.abortAfterMs)
        : undefined;
    req.end(spec.requestBody);
  });
}

// ---------------------------------------------------------------- /proc figures

describe('soak', { timeout: 180_000, concurrency: true }, () => {
  const proxies: ProxyProcess[] = [];
  const strayPids = new StrayPids();
  let upstream: ControlledUpstream;
  /** The mock's socket of each connection that carried a request, by the proxy's local port. */
  const upstreamSocketByPort = new Map<number, { socket: Socket; exchanges: Exchange[] }>();
  /** Requests of the pool-reuse check, held unanswered until released. */
  const heldForReuse: Exchange[] = [];
  const answerEmpty = (ex: Exchange): void => {
    if (!ex.res.destroyed) ex.res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  };

  /** The mock's open socket for the proxy's local port and the requests it carried; null if none. */
  function carried(port: number): { socket: Socket; exchanges: Exchange[] } | null {
    const seen = upstreamSocketByPort.get(port);
    return seen === undefined || seen.socket.destroyed ? null : seen;
  }

  /** The supervisor's connections to the mock that never carried a request, idle (nothing queued either way). */
  function idleUnusedConnections(pid: number): number[] {
    return tcpConnectionsTo(pid, upstream.port)
      .filter((c) => c.state === 'ESTABLISHED' && c.txQueue === 0 && c.rxQueue === 0 && carried(c.localPort) === null)
      .map((c) => c.localPort);
  }

  /**
   * A request aborted before its response head makes undici open a replacement connection for it,
   * then drop the request: the connection stays idle in the pool, for the pool's keep-alive timeout
   * (90 s while the upstream has given no Keep-Alive hint on it), until a later request uses it. The
   * mock's keep-alive timeout never applies, as no response was sent on it. So such a connection is
   * proved to be in the pool by using it: requests held at the mock, a batch at a time, until each has
   * carried one (the pool hands out its connections in order; a socket held by anything else never
   * would). Once answered they carry the mock's hint and close like the others. Returns the ports never reused.
   */
  async function reuseIdleConnections(proxyPort: number, ports: readonly number[]): Promise<number[]> {
    const agent = new Agent({ keepAlive: false });
    const answers: Promise<void>[] = [];
    const body = Buffer.from('{"model":"gpt-soak","input":"reuse"}');
    const post = (tag: string): Promise<void> =>
      new Promise((resolve) => {
        const req = request(
          { host: '127.0.0.1', port: proxyPort, method: 'POST', path: '/v1/responses', agent },
          (res) => res.resume().on('close', resolve),
        );
        req.setHeader('content-type', 'application/json');
        req.setHeader('x-test-tag', tag);
        req.on('error', () => resolve());
        req.end(body);
      });
    const unused = (): number[] => ports.filter((p) => carried(p) === null);
    try {
      for (let batch = 0; batch < REUSE_BATCHES && unused().length > 0; batch++) {
        const expected = heldForReuse.length + CONCURRENCY;
        for (let i = 0; i < CONCURRENCY; i++) answers.push(post(`reuse-${batch}-${i}`));
        await upstream.waitUntil(() => heldForReuse.length >= expected, REQUEST_TIMEOUT_MS);
      }
      return unused();
    } finally {
      for (const ex of heldForReuse.splice(0)) void ex.body.then(() => answerEmpty(ex));
      await Promise.all(answers);
      agent.destroy();
    }
  }

  /** What both ends know of each supervisor connection to the mock: which one is open, and in what state. */
  function describeUpstreamConnections(pid: number): string[] {
    const now = performance.now();
    const ago = (t: number | null): string => (t === null ? '-' : `${((now - t) / 1000).toFixed(1)}s ago`);
    return tcpConnectionsTo(pid, upstream.port).map((c) => {
      const kernel = `fd ${c.fd} :${c.localPort}->:${c.remotePort} ${c.state} tx ${c.txQueue} rx ${c.rxQueue}`;
      const seen = carried(c.localPort);
      if (seen === null) return `${kernel}; mock: never carried a request`;
      const { socket, exchanges } = seen;
      const last = exchanges[exchanges.length - 1] as Exchange;
      const h = last.req.headers;
      return (
        `${kernel}; mock socket destroyed ${socket.destroyed} timeout ${socket.timeout} read ${socket.bytesRead} ` +
        `written ${socket.bytesWritten} requests ${exchanges.length}; last ${last.tag} ${String(h['x-soak-mode'])} ` +
        `arrived ${ago(last.arrivedAt)} body ${last.bodyBytes}/${String(h['content-length'])} ` +
        `complete ${ago(last.bodyCompleteAt)} finished ${ago(last.finishedAt)} closed ${ago(last.closedAt)} ` +
        `headersSent ${last.res.headersSent} ended ${last.res.writableEnded}`
      );
    });
  }

  before(async () => {
    // Idle upstream connections are closed by undici ~1 s after use (3 s hint - 2 s threshold).
    upstream = await ControlledUpstream.start(
      (ex) => {
        const port = ex.req.socket.remotePort ?? 0;
        const seen = upstreamSocketByPort.get(port);
        if (seen?.socket === ex.req.socket) seen.exchanges.push(ex);
        else upstreamSocketByPort.set(port, { socket: ex.req.socket, exchanges: [ex] });
        if (ex.tag.startsWith('soak-')) void serveSoak(ex);
        else if (ex.tag.startsWith('reuse-')) heldForReuse.push(ex);
        else answerEmpty(ex);
      },
      { keepAliveTimeoutMs: 3_000 },
    );
  });

  after(async () => {
    await strayPids.stopAll(proxies);
    await upstream?.close();
  });

  async function startProxy(args: readonly string[] = []): Promise<ProxyProcess> {
    const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstream.url(), '--log-level', 'warn', ...args] });
    proxies.push(proxy);
    await proxy.waitForListening(10_000);
    for (const pid of childPids(proxy.pid)) strayPids.add(pid);
    return proxy;
  }

  test(
    `${REQUESTS} requests, ${CONCURRENCY} at a time, random aborts and upstream failures, one worker SIGKILL: byte-exact or clean errors, no leaks`,
    { timeout: 170_000 },
    async (t) => {
      const seed = process.env.SOAK_SEED !== undefined ? Number(process.env.SOAK_SEED) : Date.now() % 0x7fffffff;
      t.diagnostic(`seed ${seed} (rerun: SOAK_SEED=${seed} npm run test:soak)`);
      const specs = makeSpecs(REQUESTS, seed);
      const proxy = await startProxy();
      const pid = proxy.pid;
      await sleep(200);
      const baseline = { fds: fdCount(pid), sockets: upstream.openSockets, rss: rssMb(pid), fdList: fdList(pid) };
      t.diagnostic(
        `baseline: supervisor fds ${baseline.fds}, upstream sockets ${baseline.sockets}, supervisor RSS ${baseline.rss.toFixed(1)} MB`,
      );

      const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
      let run: LaneRun<Result>;
      try {
        run = await runLanes({
          specs,
          concurrency: CONCURRENCY,
          killAfter: KILL_AFTER,
          supervisorPid: pid,
          baselineRss: baseline.rss,
          run: (spec) => runOne(proxy.port, agent, spec),
          workerPid: () => proxy.workerPid(),
          onKill: (worker) => strayPids.add(worker),
        });
      } finally {
        agent.destroy();
      }
      const { results, startedAt, elapsed, killAt, killedWorker, peakRss, warmRss, checkpoints } = run;

      // ---- every request: exact or a clean error
      const counts: Record<string, number> = {};
      for (const r of results) counts[`${r.spec.mode}→${r.outcome}`] = (counts[`${r.spec.mode}→${r.outcome}`] ?? 0) + 1;
      t.diagnostic(
        `${results.length} requests in ${(elapsed / 1000).toFixed(1)} s; worker ${killedWorker} killed at ${((killAt - startedAt) / 1000).toFixed(1)} s`,
      );
      t.diagnostic(`outcomes: ${JSON.stringify(counts)}`);
      assert.equal(results.length, REQUESTS);
      assert.ok(killAt > 0, 'the worker was killed');
      // In flight at the kill, or sent on a keep-alive connection to the killed worker that the
      // client had not yet seen reset (a busy event loop can take long to notice).
      const overlapsKill = (r: Result): boolean =>
        r.endedAt >= killAt && (r.startedAt <= killAt + 100 || r.connectionOpenedAt < killAt);
      const problems: string[] = [];
      let hitByKill = 0;
      for (const r of results) {
        const { mode } = r.spec;
        const clean: Outcome[] =
          mode === 'ok' || mode === 'big'
            ? ['exact']
            : mode === 'upstream-500'
              ? ['mirrored-500']
              : mode === 'reset-before-head'
                ? ['gateway-json']
                : mode === 'destroy-mid'
                  ? ['cut', 'gateway-json']
                  : ['client-abort', 'exact'];
        if (clean.includes(r.outcome)) continue;
        if (r.outcome !== 'BAD' && overlapsKill(r) && ['cut', 'gateway-json'].includes(r.outcome)) {
          hitByKill++;
          continue;
        }
        problems.push(`#${r.spec.id} ${mode}: ${r.outcome} ${r.detail}`);
      }
      t.diagnostic(`requests in flight at the kill that ended in a clean error: ${hitByKill}`);
      assert.deepEqual(
        problems.slice(0, 20),
        [],
        `${problems.length} requests ended neither byte-exact nor in a clean error`,
      );
      assert.ok(hitByKill <= CONCURRENCY * 2, `the kill affected only requests in flight around it (${hitByKill})`);

      // The worker was replaced and the proxy still serves.
      assert.equal(proxy.exitStatus, null, `the supervisor survived; stderr:\n${proxy.stderr.slice(-2000)}`);
      const replacement = proxy.workerPid();
      strayPids.add(replacement);
      assert.notEqual(replacement, killedWorker);
      assert.ok(!isAlive(killedWorker));

      // ---- afterwards: no leaked upstream request, descriptors and sockets back to baseline
      const pending = (): Exchange[] =>
        upstream.exchanges.filter((e) => /^(soak|reuse)-/.test(e.tag) && e.closedAt === null && e.finishedAt === null);
      const settle = async (): Promise<{ fds: number; sockets: number; ms: number }> => {
        const start = performance.now();
        let now = { fds: fdCount(pid), sockets: upstream.openSockets };
        while (performance.now() - start < SETTLE_LIMIT_MS) {
          now = { fds: fdCount(pid), sockets: upstream.openSockets };
          if (now.fds <= baseline.fds && now.sockets <= baseline.sockets && pending().length === 0) break;
          await sleep(200);
        }
        return { ...now, ms: performance.now() - start };
      };
      let now = await settle();
      const figures = (): string =>
        `supervisor fds ${now.fds} (baseline ${baseline.fds}), upstream sockets ${now.sockets} ` +
        `(baseline ${baseline.sockets}), upstream exchanges still open ${pending().length}`;
      t.diagnostic(`after ${(now.ms / 1000).toFixed(1)} s settle: ${figures()}`);
      let openConnections = describeUpstreamConnections(pid);
      for (const line of openConnections) t.diagnostic(`upstream connection still open: ${line}`);
      // Past the mock's keep-alive timeout, only a connection that never carried a request may still be
      // open, idle in undici's pool (see reuseIdleConnections); it must be in the pool, so it is used.
      const neverUsed = idleUnusedConnections(pid);
      if (neverUsed.length > 0 && pending().length === 0) {
        const notReused = await reuseIdleConnections(proxy.port, neverUsed);
        t.diagnostic(`idle connections that never carried a request: ${neverUsed.join(', ')}; not reused ${notReused}`);
        assert.deepEqual(notReused, [], 'connections the pool never used again: held by something else');
        now = await settle();
        t.diagnostic(`after ${(now.ms / 1000).toFixed(1)} s more: ${figures()}`);
        openConnections = describeUpstreamConnections(pid);
        for (const line of openConnections) t.diagnostic(`upstream connection still open: ${line}`);
      }
      const rssAfter = rssMb(pid);
      t.diagnostic(`supervisor RSS after n requests: ${checkpoints.join(', ')}`);
      const warm = warmRss ?? baseline.rss;
      t.diagnostic(
        `supervisor RSS: idle ${baseline.rss.toFixed(1)} MB, warm ${warm.toFixed(1)} MB, peak ${peakRss.toFixed(1)} MB, after ${rssAfter.toFixed(1)} MB; ` +
          `growth over idle ${(rssAfter - baseline.rss).toFixed(1)} MB (limit +${RSS_GROWTH_LIMIT_MB} MB), since the first quarter ${(rssAfter - warm).toFixed(1)} MB`,
      );
      assert.deepEqual(
        pending()
          .map((e) => e.tag)
          .slice(0, 10),
        [],
        'upstream requests left open (neither finished nor closed)',
      );
      assert.equal(
        now.sockets,
        baseline.sockets,
        `upstream sockets back to the starting count\n${openConnections.join('\n')}`,
      );
      assert.equal(
        now.fds,
        baseline.fds,
        `supervisor descriptors back to the starting count\nbefore: ${baseline.fdList}\nafter:  ${fdList(pid)}`,
      );
      assert.ok(
        rssAfter - baseline.rss <= RSS_GROWTH_LIMIT_MB,
        `supervisor RSS grew by ${(rssAfter - baseline.rss).toFixed(1)} MB over idle (limit ${RSS_GROWTH_LIMIT_MB} MB)`,
      );

      // Every upstream request of an aborted client was closed or had finished.
      const abortedUpstream = results
        .filter((r) => r.outcome === 'client-abort')
        .flatMap((r) => upstream.withTag(`soak-${r.spec.id}`));
      for (const ex of abortedUpstream)
        assert.ok(ex.closedAt !== null || ex.finishedAt !== null, `upstream of aborted ${ex.tag} still open`);
      await proxy.stop();
    },
  );

  /** Open a connection, write `first` (if any), drip one header byte a second; resolves with when the proxy closed it. */
  async function dropTime(
    port: number,
    first: string | null,
  ): Promise<{ after: number | null; drips: number; answer: string }> {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    const received: Buffer[] = [];
    socket.on('data', (c: Buffer) => received.push(c));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const startAt = performance.now();
    if (first !== null) socket.write(first);
    // One more header byte every second, never the end of the headers (bounded: 40 s).
    let drips = 0;
    const drip = setInterval(() => {
      if (first === null || socket.destroyed || drips >= 40) return clearInterval(drip);
      drips++;
      socket.write('a');
    }, 1_000);
    const closedAt = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), 40_000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(performance.now());
      });
    });
    clearInterval(drip);
    socket.destroy();
    const answer = Buffer.concat(received).toString('latin1').split('\r\n')[0] ?? '';
    return { after: closedAt === null ? null : (closedAt - startAt) / 1000, drips, answer };
  }

  test(
    'a client that sends its headers too slowly is dropped after about 30 s (29-35 s); so is one that sends nothing',
    { timeout: 60_000 },
    async (t) => {
      const proxy = await startProxy();
      const before = upstream.exchanges.length;
      const [slow, silent] = await Promise.all([
        dropTime(proxy.port, 'POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: '),
        dropTime(proxy.port, null),
      ]);
      t.diagnostic(
        `slow headers: dropped ${slow.after?.toFixed(2)} s after the first byte, ${slow.drips} header bytes dripped; answer ${JSON.stringify(slow.answer)}`,
      );
      t.diagnostic(
        `no bytes at all: dropped ${silent.after?.toFixed(2)} s after connecting; answer ${JSON.stringify(silent.answer)}`,
      );
      assert.notEqual(slow.after, null, 'the slow client was still connected after 40 s');
      assert.ok(
        (slow.after as number) >= 29 && (slow.after as number) <= 35,
        `slow headers dropped after ${slow.after} s`,
      );
      assert.ok(slow.drips >= 25, 'the client kept sending header bytes all along');
      assert.notEqual(silent.after, null, 'the silent client was still connected after 40 s');
      assert.ok(
        (silent.after as number) >= 29 && (silent.after as number) <= 35,
        `silent client dropped after ${silent.after} s`,
      );
      assert.equal(
        upstream.exchanges.slice(before).filter((e) => 'x-slow' in e.req.headers).length,
        0,
        'nothing reached the upstream',
      );
      assert.equal(proxy.exitStatus, null);
      await proxy.stop();
    },
  );
});
