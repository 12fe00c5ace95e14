// Fault tolerance (issue 5), black-box with real processes and signals:
// worker crashes are invisible to new clients and abort the dead worker's
// upstream calls; a crash loop ends the proxy cleanly; graceful shutdown
// (SIGTERM, SIGINT, GET /shutdown) stops accepting at once and lets streams
// finish up to --shutdown-timeout; a client that leaves stops the upstream
// call within 100 ms; upstream timeouts give 504 without cutting long healthy
// streams; request limits are answered by the worker and never reach the
// upstream.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { listenWithoutAccepting } from './helpers/closedPort.js';
import { answerJson, ControlledUpstream, type Exchange } from './helpers/controlledUpstream.js';
import { send } from './helpers/httpClient.js';
import { tryConnect, waitUntilRefused, type ConnectOutcome } from './helpers/netProbe.js';
import { ProxyProcess, childPids, isAlive, sleep, waitFor } from './helpers/proxyProcess.js';
import { RawConnection, headerValues, parseResponse, type RawResponse } from './helpers/rawHttp.js';
import { StreamClient } from './helpers/streamClient.js';
import { StrayPids } from './helpers/strayPids.js';

/** One SSE event of a recognisable, numbered content. */
const event = (i: number): string =>
  `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":${i},"delta":"part ${i} ${'x'.repeat(i % 7)}"}\n\n`;
const events = (n: number): string => Array.from({ length: n }, (_, i) => event(i)).join('');

/** The finite streams in flight during a graceful shutdown: about 1.4 s long. */
const FINITE_EVENTS = 12;

/** Start an SSE response and write `count` events `intervalMs` apart (Infinity: until the connection closes). */
function streamEvents(ex: Exchange, count: number, intervalMs: number): void {
  ex.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let i = 0;
  ex.res.write(event(i++));
  const timer = setInterval(() => {
    if (ex.res.destroyed || ex.closedAt !== null) return clearInterval(timer);
    if (i >= count) {
      clearInterval(timer);
      ex.res.end();
      return;
    }
    ex.res.write(event(i++));
  }, intervalMs);
  ex.res.on('close', () => clearInterval(timer));
}

/** Write the SSE head and one event, then nothing: the stream stays open until someone closes it. */
function holdStream(ex: Exchange): void {
  ex.res.writeHead(200, { 'content-type': 'text/event-stream' });
  ex.res.write(event(0));
}

/** Live (non-zombie) children of the supervisor: its workers. */
function liveWorkers(supervisorPid: number): number[] {
  return childPids(supervisorPid).filter(isAlive);
}

/** stderr lines meant for people (the JSON log records excluded). */
function humanLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('{'));
}

function rawPost(tag: string, headers: readonly string[] = [], body = '{}'): string {
  const head = [
    'POST /v1/responses HTTP/1.1',
    'Host: 127.0.0.1',
    'Content-Type: application/json',
    `X-Test-Tag: ${tag}`,
    ...headers,
  ];
  if (!headers.some((h) => /^(content-length|transfer-encoding):/i.test(h)))
    head.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${head.join('\r\n')}\r\n\r\n${body}`;
}

interface ErrorBody {
  readonly error: { readonly message: string; readonly type: string; readonly code: string };
}

/** An OpenAI-shaped JSON error body with the given status and code. */
function assertOpenAiError(
  status: number,
  contentType: string | undefined,
  body: Buffer,
  expectedStatus: number,
  expectedCode: string,
): ErrorBody {
  assert.equal(status, expectedStatus, `status (body ${body.toString()})`);
  assert.match(String(contentType), /^application\/json\b/);
  const parsed = JSON.parse(body.toString('utf8')) as ErrorBody;
  assert.equal(typeof parsed.error, 'object', body.toString());
  assert.equal(typeof parsed.error.message, 'string');
  assert.ok(parsed.error.message.length > 0);
  assert.equal(typeof parsed.error.type, 'string');
  assert.equal(parsed.error.code, expectedCode);
  return parsed;
}

/**
 * Client gone → upstream closed, over several trials: the median must be under 100 ms (the
 * requirement); a single trial may exceed it only by scheduler noise on a loaded machine (500 ms).
 */
function assertWithin100ms(delays: readonly number[]): void {
  const sorted = [...delays].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] as number;
  assert.ok(
    median < 100,
    `median ${median.toFixed(1)} ms from the client leaving to the upstream closing (limit 100 ms): ${delays.map((d) => d.toFixed(1)).join(', ')}`,
  );
  for (const d of delays) assert.ok(d < 500, `one trial took ${d.toFixed(1)} ms: beyond machine noise`);
}

const contentTypeOf = (r: RawResponse): string | undefined => headerValues(r, 'content-type')[0];

/** A TCP connect that is kept open; `outcome` settles on connect, error or timeoutMs. */
function connectSocket(port: number, timeoutMs: number): { socket: Socket; outcome: Promise<ConnectOutcome> } {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const outcome = new Promise<ConnectOutcome>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED' ? 'refused' : `error:${err.code ?? err.message}`);
    });
  });
  return { socket, outcome };
}

describe('faults', { timeout: 120_000 }, () => {
  let root: string;
  let upstream: ControlledUpstream;
  const proxies: ProxyProcess[] = [];
  const strayPids = new StrayPids();

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'rap-faults-'));
    upstream = await ControlledUpstream.start();
    // Behaviour by tag: each test's requests carry their own x-test-tag.
    upstream.handler = (ex) => {
      if (ex.tag.startsWith('finite')) return streamEvents(ex, FINITE_EVENTS, 120);
      if (ex.tag.startsWith('endless')) return streamEvents(ex, Infinity, 100);
      if (ex.tag.startsWith('hold')) return holdStream(ex);
      if (ex.tag.startsWith('silent')) return; // never answers, not even headers
      if (ex.tag.startsWith('healthy-3s')) return streamEvents(ex, 16, 200);
      if (ex.tag.startsWith('reset')) return void ex.body.then(() => ex.req.socket.destroy());
      if (ex.tag.startsWith('bulk-')) {
        const size = Number(ex.tag.slice('bulk-'.length));
        return void ex.body.then(() => {
          ex.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
          ex.res.end(Buffer.alloc(size, 0x62));
        });
      }
      answerJson(ex);
    };
  });

  after(async () => {
    await strayPids.stopAll(proxies);
    await upstream?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function startProxy(args: readonly string[]): Promise<ProxyProcess> {
    const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstream.url(), ...args] });
    proxies.push(proxy);
    await proxy.waitForListening(10_000);
    for (const pid of childPids(proxy.pid)) strayPids.add(pid);
    return proxy;
  }

  describe('worker restarts', { timeout: 60_000 }, () => {
    test(
      'SIGKILLed worker: its upstream call is aborted, a client connecting while no worker runs is served, same port, server-info unchanged',
      { timeout: 30_000 },
      async (t) => {
        const info = join(root, 'restart', 'server-info.json');
        const proxy = await startProxy(['--server-info', info]);
        const port = proxy.port;
        const infoBefore = readFileSync(info, 'utf8');
        assert.equal(infoBefore, `{"port":${port},"pid":${proxy.pid}}\n`);
        const first = proxy.workerPid();

        // A stream in flight on the worker that is about to die.
        const inflight = StreamClient.open(port, { headers: { 'x-test-tag': 'hold-restart' } });
        assert.ok(await inflight.waitFor((c) => c.received >= event(0).length, 5_000), 'the in-flight stream started');
        const [held] = upstream.withTag('hold-restart');
        assert.ok(held, 'the upstream has the in-flight request');
        assert.equal(held.closedAt, null);

        const killedAt = performance.now();
        process.kill(first, 'SIGKILL');
        assert.ok(await waitFor(() => !isAlive(first), 2_000), 'the worker died');

        // Connect during the restart backoff: the kernel backlog holds the connection.
        const conn = await RawConnection.open(port, 2_000);
        const workersAtConnect = liveWorkers(proxy.pid);
        const connectedAfter = performance.now() - killedAt;
        try {
          assert.deepEqual(workersAtConnect, [], 'the connection was made while no worker process existed');
          conn.write(rawPost('during-restart', ['Connection: close'], '{"model":"gpt-test"}'));
          const reply = await conn.readResponse(10_000);
          assert.equal(reply.status, 200, `served after the restart: ${reply.statusLine} ${reply.body.toString()}`);
          assert.equal(upstream.withTag('during-restart').length, 1);
        } finally {
          conn.close();
        }
        t.diagnostic(
          `connected ${connectedAfter.toFixed(1)} ms after the kill with no worker running; served after the restart`,
        );

        // The dead worker's stream: upstream call aborted, client cut (not a clean end).
        const closedAt = await upstream.closed(held, 3_000);
        assert.notEqual(closedAt, null, 'the upstream saw the in-flight request closed');
        t.diagnostic(
          `upstream connection of the in-flight stream closed ${((closedAt as number) - killedAt).toFixed(1)} ms after the kill`,
        );
        const result = await inflight.done;
        assert.notEqual(result.outcome, 'end', 'the in-flight stream must not look complete');
        assert.notEqual(result.outcome, 'timeout', `the client learns its stream failed (${result.outcome})`);

        const second = proxy.workerPid();
        strayPids.add(second);
        assert.notEqual(second, first, 'a new worker');
        assert.equal(readFileSync(info, 'utf8'), infoBefore, 'server-info content unchanged');
        assert.equal(
          (await send(port, { headers: { 'x-test-tag': 'after-restart' }, body: '{}' })).status,
          200,
          'same port, still served',
        );
        assert.equal(proxy.exitStatus, null);
        await proxy.stop();
      },
    );

    test(
      'crash loop: 5 worker kills in quick succession, restarts backing off 100/200/400/800 ms → exit 1, one "Error:" line, server-info removed',
      { timeout: 30_000 },
      async (t) => {
        const info = join(root, 'crashloop', 'server-info.json');
        const proxy = await startProxy(['--server-info', info]);
        assert.ok(existsSync(info));
        const killed: number[] = [];
        /** Kill → next worker process seen in /proc: the restart backoff (plus reaping and spawning). */
        const gaps: number[] = [];
        let next = proxy.workerPid();
        const startedAt = performance.now();
        for (let i = 0; i < 5; i++) {
          const killedAt = performance.now();
          process.kill(next, 'SIGKILL');
          killed.push(next);
          strayPids.add(next);
          if (i === 4) break;
          let found = 0;
          const appeared = await waitFor(() => {
            found = liveWorkers(proxy.pid).find((pid) => !killed.includes(pid)) ?? 0;
            return found !== 0 || proxy.exitStatus !== null;
          }, 8_000);
          assert.ok(
            appeared && found !== 0,
            `replacement worker ${i + 2} appeared (exit ${JSON.stringify(proxy.exitStatus)}); stderr:\n${proxy.stderr}`,
          );
          gaps.push(performance.now() - killedAt);
          strayPids.add(found);
          next = found;
        }
        t.diagnostic(`restart delays (kill → new worker process): ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
        // Exponential backoff: at least 100, 200, 400, 800 ms (the upper margin only absorbs a loaded machine).
        gaps.forEach((gap, i) => {
          const expected = 100 * 2 ** i;
          assert.ok(
            gap >= expected - 15 && gap <= expected + 1_500,
            `restart ${i + 1} after ${gap.toFixed(0)} ms, expected about ${expected} ms`,
          );
        });
        const status = await proxy.waitForExit(5_000);
        t.diagnostic(`5 kills and the exit took ${(performance.now() - startedAt).toFixed(0)} ms`);
        assert.deepEqual(status, { code: 1, signal: null }, `exit status; stderr:\n${proxy.stderr}`);
        const errors = humanLines(proxy.stderr).filter((line) => line.startsWith('Error:'));
        assert.equal(errors.length, 1, `exactly one Error: line:\n${proxy.stderr}`);
        assert.match(errors[0] as string, /^Error: the worker failed 5 times within 30 s/);
        assert.ok(!/\n\s+at /.test(proxy.stderr), 'no stack trace');
        assert.equal(existsSync(info), false, 'server-info file removed');
        for (const pid of killed) assert.ok(await waitFor(() => !isAlive(pid), 2_000), `worker ${pid} is gone`);
        assert.deepEqual(liveWorkers(proxy.pid), []);
      },
    );
  });

  describe('graceful shutdown', { timeout: 60_000 }, () => {
    test(
      'SIGTERM with an SSE stream in flight: refuses new connections at once, the stream completes byte-exact, exit 0 after it',
      { timeout: 20_000 },
      async (t) => {
        const proxy = await startProxy([]);
        const port = proxy.port;
        const stream = StreamClient.open(port, { headers: { 'x-test-tag': 'finite-sigterm' } });
        assert.ok(await stream.waitFor((c) => c.received >= event(0).length, 5_000), 'stream started');
        const signalledAt = performance.now();
        proxy.child.kill('SIGTERM');
        assert.equal(
          await waitUntilRefused(port, 1_000),
          'refused',
          `new connections are refused; stderr:\n${proxy.stderr}`,
        );
        const refusedAfter = performance.now() - signalledAt;
        t.diagnostic(`connections refused ${refusedAfter.toFixed(1)} ms after SIGTERM`);
        assert.ok(
          refusedAfter < 1_000,
          `refused at once (${refusedAfter.toFixed(1)} ms; bound generous for a loaded machine)`,
        );
        assert.equal(stream.isSettled, false, 'the stream was still in flight when connections were refused');
        // Still running while the stream goes on.
        assert.ok(
          await stream.waitFor((c) => c.received >= events(FINITE_EVENTS - 2).length, 5_000),
          'the stream goes on',
        );
        assert.equal(proxy.exitStatus, null, 'the proxy waits for the stream');
        const result = await stream.done;
        assert.equal(
          result.outcome,
          'end',
          `stream ended cleanly (${result.detail}); got ${result.body.length} bytes; stderr:\n${proxy.stderr}`,
        );
        assert.equal(result.status, 200);
        assert.equal(result.body.toString(), events(FINITE_EVENTS), 'byte-exact');
        const status = await proxy.waitForExit(2_000);
        assert.deepEqual(
          status,
          { code: 0, signal: null },
          `exit 0 soon after the stream (not after the 10 s timeout); stderr:\n${proxy.stderr}`,
        );
        t.diagnostic(`exit ${(performance.now() - result.at).toFixed(1)} ms after the stream ended (observed)`);
      },
    );

    test(
      '--shutdown-timeout 1 with a never-ending stream: SIGTERM cuts it and exits 0 within 1-3 s; the upstream call is aborted',
      { timeout: 20_000 },
      async (t) => {
        const proxy = await startProxy(['--shutdown-timeout', '1']);
        const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'endless-timeout' } });
        assert.ok(await stream.waitFor((c) => c.received >= events(2).length, 5_000), 'stream started');
        const [ex] = upstream.withTag('endless-timeout');
        assert.ok(ex);
        const signalledAt = performance.now();
        proxy.child.kill('SIGTERM');
        const status = await proxy.waitForExit(5_000);
        const elapsed = performance.now() - signalledAt;
        t.diagnostic(`exit ${elapsed.toFixed(0)} ms after SIGTERM`);
        assert.deepEqual(status, { code: 0, signal: null }, `stderr:\n${proxy.stderr}`);
        assert.ok(
          elapsed >= 900 && elapsed <= 3_000,
          `exit after the 1 s timeout, within 3 s (${elapsed.toFixed(0)} ms)`,
        );
        const result = await stream.done;
        assert.notEqual(result.outcome, 'end', 'the cut stream must not look complete');
        assert.ok(
          result.body.length > 0 && events(200).startsWith(result.body.toString()),
          'what arrived is an intact prefix',
        );
        assert.notEqual(await upstream.closed(ex, 2_000), null, 'the upstream call was closed');
      },
    );

    // Sizes just above the send-buffer limit used to arrive short: http.Server.close() destroys
    // every connection whose response has ended, with its tail still in Node's buffers.
    test(
      'SIGTERM while a client is momentarily not reading: the in-flight response still arrives complete',
      { timeout: 60_000 },
      async (t) => {
        // The response's tail may still sit in the worker's socket buffer (up to one 256 KiB credit
        // window beyond what the kernel holds) when the worker has handed the last byte to Node.
        // A graceful drain must deliver it. Which body size leaves such a tail depends on the
        // kernel's socket buffers, so sizes around the send-buffer limit are tried, 96 KiB apart.
        const wmemMax = Number(readFileSync('/proc/sys/net/ipv4/tcp_wmem', 'utf8').trim().split(/\s+/)[2] ?? 4_194_304);
        const sizes = Array.from({ length: 14 }, (_, i) => wmemMax - 256 * 1024 + i * 96 * 1024);
        const results: Array<{ size: number; outcome: string }> = [];
        const attempt = async (size: number): Promise<void> => {
          const proxy = await startProxy([]);
          const socket = connect(proxy.port, '127.0.0.1');
          socket.pause(); // not reading for now
          socket.on('error', () => {});
          const chunks: Buffer[] = [];
          socket.on('data', (c: Buffer) => chunks.push(c));
          const closed = new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              socket.destroy();
              resolve();
            }, 20_000);
            socket.on('close', () => {
              clearTimeout(timer);
              resolve();
            });
          });
          socket.write(rawPost(`bulk-${size}`, ['Connection: close']));
          await sleep(300);
          proxy.child.kill('SIGTERM');
          await sleep(500);
          socket.resume();
          await closed;
          const status = await proxy.waitForExit(5_000);
          const parsed = parseResponse(Buffer.concat(chunks), true);
          let outcome: string;
          if (parsed === null) outcome = `incomplete response, ${Buffer.concat(chunks).length} bytes received`;
          else if (parsed.response.status !== 200) outcome = `status ${parsed.response.status}`;
          else if (parsed.response.body.length !== size || parsed.response.body.some((b) => b !== 0x62))
            outcome = `body of ${parsed.response.body.length}/${size} bytes`;
          else outcome = 'complete';
          if (JSON.stringify(status) !== JSON.stringify({ code: 0, signal: null }))
            outcome += `; exit ${JSON.stringify(status)}`;
          results.push({ size, outcome });
        };
        for (let i = 0; i < sizes.length; i += 3) await Promise.all(sizes.slice(i, i + 3).map(attempt));
        results.sort((a, b) => a.size - b.size);
        t.diagnostic(results.map((r) => `${r.size}: ${r.outcome}`).join('; '));
        assert.deepEqual(
          results.filter((r) => r.outcome !== 'complete'),
          [],
          'every in-flight response was delivered complete before the exit',
        );
      },
    );

    test('SIGINT twice: the second exits at once although a stream is in flight', { timeout: 20_000 }, async (t) => {
      const proxy = await startProxy([]);
      const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'endless-sigint' } });
      assert.ok(await stream.waitFor((c) => c.received >= events(2).length, 5_000), 'stream started');
      proxy.child.kill('SIGINT');
      await sleep(300);
      assert.equal(proxy.exitStatus, null, 'the first SIGINT drains (the stream has 10 s)');
      assert.equal(stream.isSettled, false, 'the stream is still flowing');
      assert.equal(await tryConnect(proxy.port, 500), 'refused', 'not accepting after the first SIGINT');
      const secondAt = performance.now();
      proxy.child.kill('SIGINT');
      const status = await proxy.waitForExit(3_000);
      const elapsed = performance.now() - secondAt;
      t.diagnostic(`exit ${elapsed.toFixed(1)} ms after the second SIGINT`);
      assert.deepEqual(status, { code: 0, signal: null }, `stderr:\n${proxy.stderr}`);
      assert.ok(elapsed < 1_000, `exits at once (${elapsed.toFixed(0)} ms)`);
      assert.notEqual((await stream.done).outcome, 'end', 'the stream was cut, not ended cleanly');
    });

    test(
      'GET /shutdown (--http-shutdown) drains the same way: refuses at once, the stream completes byte-exact, exit 0 after it',
      { timeout: 20_000 },
      async (t) => {
        const proxy = await startProxy(['--http-shutdown']);
        const port = proxy.port;
        const stream = StreamClient.open(port, { headers: { 'x-test-tag': 'finite-http-shutdown' } });
        assert.ok(await stream.waitFor((c) => c.received >= event(0).length, 5_000), 'stream started');
        const askedAt = performance.now();
        const reply = await send(port, { method: 'GET', path: '/shutdown' });
        assert.equal(reply.status, 200);
        assert.equal(await waitUntilRefused(port, 1_000), 'refused');
        const refusedAfter = performance.now() - askedAt;
        t.diagnostic(`connections refused ${refusedAfter.toFixed(1)} ms after GET /shutdown`);
        assert.ok(
          refusedAfter < 1_000,
          `refused at once (${refusedAfter.toFixed(1)} ms; bound generous for a loaded machine)`,
        );
        assert.equal(stream.isSettled, false, 'the stream was still in flight');
        assert.ok(await stream.waitFor((c) => c.received >= events(FINITE_EVENTS - 2).length, 5_000));
        assert.equal(proxy.exitStatus, null, 'the proxy waits for the stream');
        const result = await stream.done;
        assert.equal(
          result.outcome,
          'end',
          `stream ended cleanly (${result.detail}); got ${result.body.length} bytes; stderr:\n${proxy.stderr}`,
        );
        assert.equal(result.body.toString(), events(FINITE_EVENTS), 'byte-exact');
        assert.deepEqual(await proxy.waitForExit(2_000), { code: 0, signal: null }, `stderr:\n${proxy.stderr}`);
      },
    );
  });

  describe('client disconnects', { timeout: 30_000 }, () => {
    let proxy: ProxyProcess;

    before(async () => {
      proxy = await startProxy([]);
    });

    after(async () => {
      await proxy?.stop();
    });

    test(
      'mid-stream: the upstream sees its response connection close within 100 ms',
      { timeout: 20_000 },
      async (t) => {
        const delays: number[] = [];
        for (let trial = 0; trial < 5; trial++) {
          const tag = `hold-disconnect-${trial}`;
          const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': tag } });
          assert.ok(await stream.waitFor((c) => c.received >= event(0).length, 5_000), 'stream started');
          const [ex] = upstream.withTag(tag);
          assert.ok(ex);
          await sleep(20); // the upstream is idle, writing nothing: it must learn of the close from the proxy
          const leftAt = stream.destroy();
          const closedAt = await upstream.closed(ex, 2_000); // generous bound for machine noise; asserted below
          assert.notEqual(closedAt, null, `trial ${trial}: the upstream response was never closed`);
          delays.push((closedAt as number) - leftAt);
        }
        t.diagnostic(`client left → upstream closed (ms): ${delays.map((d) => d.toFixed(1)).join(', ')}`);
        assertWithin100ms(delays);
      },
    );

    test(
      'mid-request (body still being sent): the upstream sees the request closed within 100 ms',
      { timeout: 20_000 },
      async (t) => {
        const delays: number[] = [];
        for (let trial = 0; trial < 5; trial++) {
          const tag = `silent-midrequest-${trial}`;
          const stream = StreamClient.open(proxy.port, {
            headers: { 'x-test-tag': tag, 'transfer-encoding': 'chunked' },
            body: '{"input":"part one',
            keepBodyOpen: true,
          });
          assert.ok(
            await upstream.waitUntil(() => (upstream.withTag(tag)[0]?.bodyBytes ?? 0) > 0, 5_000),
            'the upstream is receiving the body',
          );
          const ex = upstream.withTag(tag)[0] as Exchange;
          await sleep(20);
          const leftAt = stream.destroy();
          const closedAt = await upstream.closed(ex, 2_000);
          assert.notEqual(closedAt, null, `trial ${trial}: the upstream request was never closed`);
          assert.equal(ex.bodyCompleteAt, null, 'the upstream never saw a complete request');
          delays.push((closedAt as number) - leftAt);
        }
        t.diagnostic(`client left mid-body → upstream closed (ms): ${delays.map((d) => d.toFixed(1)).join(', ')}`);
        assertWithin100ms(delays);
      },
    );

    test(
      'while waiting for the response head (request sent, upstream thinking): the upstream sees the close within 100 ms',
      { timeout: 20_000 },
      async (t) => {
        const delays: number[] = [];
        for (let trial = 0; trial < 5; trial++) {
          const tag = `silent-waiting-${trial}`;
          const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': tag } });
          assert.ok(
            await upstream.waitUntil(() => upstream.withTag(tag)[0]?.bodyCompleteAt != null, 5_000),
            'the upstream has the whole request',
          );
          const ex = upstream.withTag(tag)[0] as Exchange;
          await sleep(20);
          assert.equal(stream.status, 0, 'no response head yet');
          const leftAt = stream.destroy();
          const closedAt = await upstream.closed(ex, 2_000);
          assert.notEqual(closedAt, null, `trial ${trial}: the upstream request was never closed`);
          delays.push((closedAt as number) - leftAt);
        }
        t.diagnostic(
          `client left before the head → upstream closed (ms): ${delays.map((d) => d.toFixed(1)).join(', ')}`,
        );
        assertWithin100ms(delays);
      },
    );
  });

  describe('upstream trouble (--upstream-timeout 1)', { timeout: 30_000, concurrency: true }, () => {
    let proxy: ProxyProcess;

    before(async () => {
      proxy = await startProxy(['--upstream-timeout', '1']);
    });

    after(async () => {
      await proxy?.stop();
    });

    test(
      'an upstream that never sends headers → 504 upstream_timeout JSON in about 1 s; the upstream call is closed',
      { timeout: 15_000 },
      async (t) => {
        const startedAt = performance.now();
        const reply = await send(proxy.port, {
          headers: { 'content-type': 'application/json', 'x-test-tag': 'silent-timeout' },
          body: '{"model":"gpt-test"}',
        });
        const elapsed = performance.now() - startedAt;
        t.diagnostic(`504 after ${elapsed.toFixed(0)} ms`);
        assertOpenAiError(reply.status, reply.headers['content-type'], reply.body, 504, 'upstream_timeout');
        assert.ok(elapsed >= 900 && elapsed < 2_500, `about 1 s (${elapsed.toFixed(0)} ms)`);
        const [ex] = upstream.withTag('silent-timeout');
        assert.ok(ex, 'the request reached the upstream');
        assert.notEqual(await upstream.closed(ex, 2_000), null, 'the timed-out upstream connection was closed');
      },
    );

    test('a healthy 3 s stream (a chunk every 200 ms) is not cut', { timeout: 15_000 }, async (t) => {
      const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'healthy-3s' } });
      const startedAt = performance.now();
      const result = await stream.done;
      const elapsed = result.at - startedAt;
      t.diagnostic(`stream of ${result.body.length} bytes took ${elapsed.toFixed(0)} ms`);
      assert.equal(result.outcome, 'end', `not cut (${result.detail})`);
      assert.equal(result.status, 200);
      assert.equal(result.body.toString(), events(16), 'byte-exact');
      assert.ok(elapsed >= 2_800, `the stream really outlived the timeout (${elapsed.toFixed(0)} ms)`);
    });

    test(
      'an upstream that goes silent mid-body: the client stream is cut (incomplete) after about 1 s, the upstream call closed',
      { timeout: 15_000 },
      async (t) => {
        const stream = StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'hold-silent-mid' } });
        assert.ok(await stream.waitFor((c) => c.received >= event(0).length, 5_000), 'the stream started');
        const firstAt = performance.now();
        const result = await stream.done;
        const elapsed = result.at - firstAt;
        t.diagnostic(`cut ${elapsed.toFixed(0)} ms after the last chunk`);
        assert.equal(result.status, 200);
        assert.notEqual(result.outcome, 'end', 'a stream cut by the idle timeout must not look complete');
        assert.notEqual(result.outcome, 'timeout');
        assert.equal(result.body.toString(), event(0));
        assert.ok(elapsed >= 900 && elapsed < 3_000, `about 1 s (${elapsed.toFixed(0)} ms)`);
        const [ex] = upstream.withTag('hold-silent-mid');
        assert.ok(ex);
        assert.notEqual(await upstream.closed(ex, 2_000), null, 'the upstream connection was closed');
      },
    );

    test(
      'an upstream that resets the connection before answering → 502 upstream_unreachable JSON',
      { timeout: 15_000 },
      async () => {
        const reply = await send(proxy.port, {
          headers: { 'content-type': 'application/json', 'x-test-tag': 'reset-before-head' },
          body: '{"model":"gpt-test"}',
        });
        assertOpenAiError(reply.status, reply.headers['content-type'], reply.body, 502, 'upstream_unreachable');
        assert.equal(upstream.withTag('reset-before-head').length, 1, 'sent once (a POST is not retried)');
      },
    );
  });

  describe('upstream connect timeout', { timeout: 30_000 }, () => {
    test(
      'an upstream whose accept queue is full (SYNs dropped) → 504 upstream_timeout JSON after about --upstream-timeout',
      { timeout: 20_000 },
      async (t) => {
        const blackhole = listenWithoutAccepting(0);
        const fillers: Array<ReturnType<typeof connectSocket>> = [];
        try {
          // Fill the accept queue until a connect no longer completes (bounded).
          let outcome: ConnectOutcome = 'connected';
          for (let i = 0; i < 8 && outcome === 'connected'; i++) {
            const filler = connectSocket(blackhole.port, 300);
            fillers.push(filler);
            outcome = await filler.outcome;
          }
          assert.equal(outcome, 'timeout', 'the accept queue is full: connects hang');
          const hung = ProxyProcess.spawn({
            args: ['--upstream-url', `http://127.0.0.1:${blackhole.port}/v1/responses`, '--upstream-timeout', '1'],
          });
          proxies.push(hung);
          await hung.waitForListening(10_000);
          for (const pid of childPids(hung.pid)) strayPids.add(pid);
          const startedAt = performance.now();
          const reply = await send(hung.port, {
            headers: { 'content-type': 'application/json' },
            body: '{"model":"gpt-test"}',
          });
          const elapsed = performance.now() - startedAt;
          t.diagnostic(`504 after ${elapsed.toFixed(0)} ms`);
          const parsed = assertOpenAiError(
            reply.status,
            reply.headers['content-type'],
            reply.body,
            504,
            'upstream_timeout',
          );
          assert.match(parsed.error.message, /UND_ERR_CONNECT_TIMEOUT|ETIMEDOUT/);
          assert.ok(elapsed >= 900 && elapsed < 3_000, `about 1 s (${elapsed.toFixed(0)} ms)`);
          await hung.stop();
        } finally {
          for (const f of fillers) f.socket.destroy();
          blackhole.release();
        }
      },
    );
  });

  describe('limits (--max-body-bytes 1000, --max-concurrent 2)', { timeout: 30_000 }, () => {
    let proxy: ProxyProcess;

    before(async () => {
      proxy = await startProxy(['--max-body-bytes', '1000', '--max-concurrent', '2']);
    });

    after(async () => {
      await proxy?.stop();
    });

    test(
      'Content-Length over the limit → 413 JSON at once (before the body), nothing reaches the upstream',
      { timeout: 10_000 },
      async () => {
        const conn = await RawConnection.open(proxy.port);
        try {
          const head = rawPost('limit-413', ['Content-Length: 5000'], '');
          conn.write(head); // the body is never sent: the answer must not wait for it
          const reply = await conn.readResponse(5_000);
          assertOpenAiError(reply.status, contentTypeOf(reply), reply.body, 413, 'request_too_large');
        } finally {
          conn.close();
        }
        await sleep(100);
        assert.equal(upstream.withTag('limit-413').length, 0, 'the upstream saw nothing');
      },
    );

    test(
      'a client that writes its whole oversize body (8 MB, Content-Length) before reading still gets the 413',
      { timeout: 20_000 },
      async (t) => {
        // Many clients (Python requests/urllib3, Java HttpURLConnection) write the entire body,
        // then read the response. The proxy answers 413 at the head; if it then closes with the
        // body unread, the kernel resets the connection, the client's write fails (EPIPE) and the
        // 413 is lost. RFC 9112 §9.6: close in stages (lingering close), reading and discarding
        // the rest of the body for a while, so the client can read the answer.
        const size = 8 * 1024 * 1024;
        const outcomes: string[] = [];
        for (let i = 0; i < 3; i++) {
          outcomes.push(
            await new Promise<string>((resolve) => {
              const socket = connect(proxy.port, '127.0.0.1');
              socket.pause(); // read only once everything is written
              const received: Buffer[] = [];
              let writeOutcome = 'written';
              socket.on('data', (c: Buffer) => received.push(c));
              socket.on(
                'error',
                (err: NodeJS.ErrnoException) => (writeOutcome = `write failed: ${err.code ?? err.message}`),
              );
              const timer = setTimeout(() => socket.destroy(), 10_000);
              socket.on('close', () => {
                clearTimeout(timer);
                const text = Buffer.concat(received).toString('latin1');
                resolve(`${writeOutcome}; read: ${text.slice(0, 12) || 'nothing'}`);
              });
              socket.write(rawPost('limit-413-full-body', [`Content-Length: ${size}`, 'Connection: close'], ''));
              socket.write(Buffer.alloc(size, 0x61), () => setTimeout(() => socket.resume(), 50));
            }),
          );
        }
        t.diagnostic(`outcomes: ${outcomes.join(' | ')}`);
        assert.deepEqual(
          outcomes,
          Array(3).fill('written; read: HTTP/1.1 413'),
          'the client wrote its body and read the 413',
        );
        assert.equal(upstream.withTag('limit-413-full-body').length, 0, 'the upstream saw nothing');
      },
    );

    test(
      'a body of exactly --max-body-bytes is forwarded, with Content-Length and chunked',
      { timeout: 10_000 },
      async () => {
        const body = `{"input":"${'y'.repeat(1000 - 12)}"}`;
        assert.equal(Buffer.byteLength(body), 1000);
        const fixed = await send(proxy.port, {
          headers: { 'content-type': 'application/json', 'x-test-tag': 'limit-exact-length' },
          body,
        });
        assert.equal(fixed.status, 200, fixed.body.toString());
        const conn = await RawConnection.open(proxy.port);
        try {
          conn.write(rawPost('limit-exact-chunked', ['Transfer-Encoding: chunked', 'Connection: close'], ''));
          conn.write(`1f4\r\n${body.slice(0, 500)}\r\n`);
          await sleep(50);
          conn.write(`1f4\r\n${body.slice(500)}\r\n0\r\n\r\n`);
          const reply = await conn.readResponse(5_000);
          assert.equal(reply.status, 200, reply.statusLine);
        } finally {
          conn.close();
        }
        for (const tag of ['limit-exact-length', 'limit-exact-chunked']) {
          const [ex] = upstream.withTag(tag);
          assert.ok(ex, `${tag} reached the upstream`);
          assert.equal((await ex.body).toString(), body, `${tag}: the upstream got the body byte for byte`);
        }
      },
    );

    test(
      'a chunked body growing past the limit → 413 or a cut connection; the upstream never gets a complete request',
      { timeout: 10_000 },
      async (t) => {
        const conn = await RawConnection.open(proxy.port);
        let outcome: string;
        try {
          conn.write(rawPost('limit-chunked', ['Transfer-Encoding: chunked'], ''));
          const chunk = `${(600).toString(16)}\r\n${'a'.repeat(600)}\r\n`;
          conn.write(chunk);
          await sleep(100);
          conn.write(chunk); // 1200 bytes > 1000
          await sleep(100);
          if (!conn.closed) conn.write('0\r\n\r\n');
          try {
            const reply = await conn.readResponse(5_000);
            assertOpenAiError(reply.status, contentTypeOf(reply), reply.body, 413, 'request_too_large');
            outcome = '413';
          } catch (err) {
            assert.ok(conn.closed, `neither a 413 nor a cut connection: ${(err as Error).message}`);
            outcome = 'connection cut';
          }
        } finally {
          conn.close();
        }
        t.diagnostic(`outcome: ${outcome}`);
        // The head may have been forwarded (the body streams); the request must never complete upstream.
        for (const ex of upstream.withTag('limit-chunked')) {
          assert.notEqual(await upstream.closed(ex, 2_000), null, 'the upstream request was aborted');
          assert.equal(ex.bodyCompleteAt, null, 'the upstream never received a complete request');
          assert.ok(ex.bodyBytes <= 1000, `at most the limit reached the upstream (${ex.bodyBytes})`);
        }
      },
    );

    test('request headers over 16 KiB → 431, nothing reaches the upstream', { timeout: 10_000 }, async () => {
      const conn = await RawConnection.open(proxy.port);
      try {
        conn.write(rawPost('limit-431', [`X-Big: ${'b'.repeat(17 * 1024)}`]));
        const reply = await conn.readResponse(5_000);
        assert.equal(reply.status, 431, reply.statusLine);
      } finally {
        conn.close();
      }
      await sleep(100);
      assert.equal(upstream.withTag('limit-431').length, 0, 'the upstream saw nothing');
    });

    test(
      'more than --max-concurrent open requests → 503 with Retry-After, not forwarded; served again once they finish',
      { timeout: 15_000 },
      async () => {
        const held = [
          StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'hold-limit' } }),
          StreamClient.open(proxy.port, { headers: { 'x-test-tag': 'hold-limit' } }),
        ];
        try {
          assert.ok(
            await upstream.waitUntil(() => upstream.withTag('hold-limit').length === 2, 5_000),
            'two requests open upstream',
          );
          for (const h of held) assert.ok(await h.waitFor((c) => c.received > 0, 5_000));
          for (let i = 0; i < 3; i++) {
            const conn = await RawConnection.open(proxy.port);
            try {
              conn.write(rawPost('limit-503'));
              const reply = await conn.readResponse(5_000);
              assertOpenAiError(reply.status, contentTypeOf(reply), reply.body, 503, 'proxy_overloaded');
              const retryAfter = headerValues(reply, 'retry-after');
              assert.equal(retryAfter.length, 1, 'one Retry-After header');
              assert.match(retryAfter[0] as string, /^\d+$/, 'Retry-After in seconds');
            } finally {
              conn.close();
            }
          }
          await sleep(100);
          assert.equal(upstream.withTag('limit-503').length, 0, 'no refused request reached the upstream');
        } finally {
          for (const h of held) h.destroy();
        }
        // Capacity comes back once the held streams are gone (bounded retries).
        let status = 0;
        for (let i = 0; i < 20 && status !== 200; i++) {
          if (i > 0) await sleep(50);
          status = (await send(proxy.port, { headers: { 'x-test-tag': 'limit-after' }, body: '{}' })).status;
        }
        assert.equal(status, 200, 'served again after the held streams ended');
      },
    );
  });
});
