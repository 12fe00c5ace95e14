// The open-file limit and --max-concurrent: how many streams a limit holds
// (the derivation alone), and the real proxy started under a low limit
// (prlimit around it): the soft limit raised to the hard one in both
// processes, the default --max-concurrent derived from it and in force (every
// stream up to it served, the next one answered 503), and a --max-concurrent
// or a limit it cannot hold refused at startup in one line, exit 1.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { MAX_OPEN_STREAMS } from '../src/shared/constants.js';
import { MIN_STREAMS, openFilesFor, streamsFor } from '../src/shared/openFileBudget.js';
import { PROXY_MAIN, ProxyProcess, runProxyToExit, waitFor } from './helpers/proxyProcess.js';
import { SlowSseUpstream, SseStream } from './helpers/slowSse.js';
import { StrayPids } from './helpers/strayPids.js';

describe('openFileBudget: the streams an open-file limit holds', () => {
  test('(limit - 128) / 1.25, rounded down, at most MAX_OPEN_STREAMS', () => {
    assert.equal(streamsFor(200), 57);
    assert.equal(streamsFor(1024), 716);
    assert.equal(streamsFor(20_000), 15_897);
    assert.equal(streamsFor(1_048_576), MAX_OPEN_STREAMS);
    assert.equal(streamsFor(0), 0);
    assert.equal(streamsFor(128), 0);
  });

  test('openFilesFor is the least limit that holds that many streams', () => {
    for (let streams = 1; streams <= MAX_OPEN_STREAMS; streams += 1 + (streams >> 4)) {
      const files = openFilesFor(streams);
      assert.ok(streamsFor(files) >= streams, `${files} files hold ${streams} streams`);
      assert.ok(streamsFor(files - 1) < streams, `${files - 1} files do not hold ${streams} streams`);
    }
  });

  test('10,000 streams fit under the protocol maximum', () => {
    assert.ok(MAX_OPEN_STREAMS >= 10_000);
    assert.ok(MIN_STREAMS >= 1 && MIN_STREAMS < streamsFor(1024));
  });
});

const PRLIMIT = '/usr/bin/prlimit';
const prlimitMissing = existsSync(PRLIMIT) ? false : `${PRLIMIT} (util-linux) is not installed`;

/** The proxy's command line under `prlimit --nofile=SOFT:HARD`. */
function underLimit(nofile: string, args: readonly string[] = []): { program: string; args: string[] } {
  return { program: PRLIMIT, args: [`--nofile=${nofile}`, process.execPath, PROXY_MAIN, ...args] };
}

/** Soft and hard "Max open files" of a process, as /proc/<pid>/limits reads. */
function openFileLimits(pid: number): [string, string] {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = (line ?? '').split(/\s{2,}/).slice(1, 3);
  return [soft ?? '?', hard ?? '?'];
}

/** The startup line saying what --max-concurrent is in force. */
function streamLimitLine(stderr: string): Record<string, unknown> {
  const line = stderr.split('\n').find((l) => l.includes('"maxOpenStreams"'));
  assert.ok(line !== undefined, `no --max-concurrent line in:\n${stderr}`);
  return JSON.parse(line) as Record<string, unknown>;
}

const underLowLimit = { skip: prlimitMissing, timeout: 60_000 };

describe('the proxy under a soft limit of 100 and a hard limit of 200', underLowLimit, () => {
  const strays = new StrayPids();
  let upstream: SlowSseUpstream;
  let proxy: ProxyProcess;

  before(async () => {
    upstream = await SlowSseUpstream.start(200);
    proxy = await ProxyProcess.start(underLimit('100:200', ['--upstream-url', upstream.url()]));
    strays.add(proxy.workerPid());
  });

  after(async () => {
    await strays.stopAll(proxy === undefined ? [] : [proxy]);
    await upstream?.close();
  });

  test('both processes run with the soft limit raised to the hard one', () => {
    assert.deepEqual(openFileLimits(proxy.pid), ['200', '200'], 'supervisor');
    assert.deepEqual(openFileLimits(proxy.workerPid()), ['200', '200'], 'worker');
  });

  test('--max-concurrent defaults to what 200 open files hold, and says so', () => {
    const line = streamLimitLine(proxy.stderr);
    assert.equal(line.maxOpenStreams, streamsFor(200));
    assert.equal(line.openFileLimit, 200);
    const said = /^at most 57 concurrent requests and WebSockets \(derived from the open-file limit\)$/;
    assert.match(String(line.msg), said);
  });

  test('that many slow streams all make progress; one more is answered 503', async () => {
    const held = Array.from({ length: streamsFor(200) }, () => new SseStream(proxy.port));
    try {
      const progressed = await waitFor(() => held.every((s) => s.events >= 3 || s.failure !== null), 20_000);
      const stuck = held.filter((s) => s.events < 3);
      const example = `${stuck[0]?.failure} ${stuck[0]?.status}`;
      assert.ok(progressed && stuck.length === 0, `${stuck.length} streams stuck: ${example}`);
      const extra = new SseStream(proxy.port);
      assert.ok(await waitFor(() => extra.status !== 0 || extra.failure !== null, 10_000), 'an answer to one more');
      assert.equal(extra.status, 503, extra.failure ?? '');
      await waitFor(() => extra.errorBody.includes('}'), 2_000);
      assert.match(extra.errorBody, /"code":"proxy_overloaded"/);
      extra.close();
    } finally {
      for (const stream of held) stream.close();
    }
  });
});

describe('a limit too low for what is asked: refused at startup, one line, exit 1', underLowLimit, () => {
  const raise = /raise the hard limit \(ulimit -Hn, or LimitNOFILE= in a systemd unit\)/;

  test('--max-concurrent beyond what the hard limit holds', async () => {
    const args = ['--max-concurrent', '58', '--upstream-url', 'http://127.0.0.1:9/'];
    const result = await runProxyToExit(underLimit('200:200', args));
    assert.equal(result.code, 1, result.stderr);
    assert.equal(result.stderr.split('\n').filter(Boolean).length, 1, result.stderr);
    const why = 'needs an open-file limit of 201, but the hard limit is 200 (enough for 57)';
    assert.ok(result.stderr.startsWith(`Error: --max-concurrent 58 ${why}: `), result.stderr);
    assert.match(result.stderr, raise);
  });

  test('the most the hard limit holds is taken', async () => {
    const args = ['--max-concurrent', '57', '--upstream-url', 'http://127.0.0.1:9/'];
    const proxy = await ProxyProcess.start(underLimit('200:200', args));
    const strays = new StrayPids();
    try {
      strays.add(proxy.workerPid());
      assert.equal(streamLimitLine(proxy.stderr).maxOpenStreams, 57);
      assert.match(String(streamLimitLine(proxy.stderr).msg), /^at most 57 concurrent requests and WebSockets$/);
    } finally {
      await strays.stopAll([proxy]);
    }
  });

  test('a hard limit too low for even the smallest default', async () => {
    const limit = openFilesFor(MIN_STREAMS) - 1;
    const result = await runProxyToExit(underLimit(`${limit}:${limit}`, ['--upstream-url', 'http://127.0.0.1:9/']));
    assert.equal(result.code, 1, result.stderr);
    assert.equal(result.stderr.split('\n').filter(Boolean).length, 1, result.stderr);
    const why = `too low to serve (${MIN_STREAMS} concurrent requests need ${limit + 1})`;
    assert.ok(result.stderr.startsWith(`Error: the open-file limit is ${limit}, ${why}: `), result.stderr);
    assert.match(result.stderr, raise);
  });
});
