// Process lifecycle: GET /shutdown, signals, the worker dying with its
// supervisor, the key kept out of /proc and out of everything printed, and the
// log lines scripts and operators rely on.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { freePort, jsonRecords, readProcFile, waitUntilRefused, type LogRecord } from './helpers/netProbe.js';
import { ProxyProcess, TEST_KEY, isAlive, killQuietly, sleep, waitFor } from './helpers/proxyProcess.js';

describe('lifecycle', { concurrency: true, timeout: 60_000 }, () => {
  let root: string;
  const started: ProxyProcess[] = [];
  const strayPids: number[] = [];

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'rap-lifecycle-'));
  });

  after(async () => {
    for (const proxy of started) await proxy.stop('SIGKILL', 2_000);
    for (const pid of strayPids) killQuietly(pid);
    rmSync(root, { recursive: true, force: true });
  });

  async function startTracked(
    args: readonly string[] = [],
    env?: NodeJS.ProcessEnv,
  ): Promise<{ proxy: ProxyProcess; worker: number }> {
    const proxy = ProxyProcess.spawn(env === undefined ? { args } : { args, env });
    started.push(proxy);
    await proxy.waitForListening(10_000);
    const worker = proxy.workerPid();
    strayPids.push(worker);
    return { proxy, worker };
  }

  test(
    '--http-shutdown: GET /shutdown → 200 empty, exit 0 within 2 s, worker gone, port closed',
    { timeout: 20_000 },
    async () => {
      const { proxy, worker } = await startTracked(['--http-shutdown']);
      const reply = await send(proxy.port, { method: 'GET', path: '/shutdown' });
      assert.equal(reply.status, 200);
      assert.equal(reply.headers['content-length'], '0');
      assert.equal(reply.body.length, 0);
      assert.deepEqual(await proxy.waitForExit(2_000), { code: 0, signal: null }, `stderr: ${proxy.stderr}`);
      assert.ok(await waitFor(() => !isAlive(worker), 2_000), 'the worker is still alive');
      assert.equal(await waitUntilRefused(proxy.port, 2_000), 'refused');
    },
  );

  test('without --http-shutdown: GET /shutdown → 403 and the proxy keeps running', { timeout: 20_000 }, async () => {
    const { proxy, worker } = await startTracked();
    const reply = await send(proxy.port, { method: 'GET', path: '/shutdown' });
    assert.equal(reply.status, 403);
    assert.equal(reply.body.length, 0);
    await sleep(300);
    assert.equal(proxy.exitStatus, null, `the proxy exited: ${proxy.stderr}`);
    assert.ok(isAlive(worker), 'the worker died');
    assert.equal((await send(proxy.port, { method: 'GET', path: '/shutdown' })).status, 403, 'still serving');
    await proxy.stop();
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} → exit code 0, worker gone, port closed, server-info removed`, { timeout: 20_000 }, async () => {
      const file = join(root, `${signal}.json`);
      const { proxy, worker } = await startTracked(['--server-info', file]);
      assert.ok(existsSync(file), 'server-info written');
      proxy.child.kill(signal);
      assert.deepEqual(await proxy.waitForExit(5_000), { code: 0, signal: null }, `stderr: ${proxy.stderr}`);
      assert.ok(await waitFor(() => !isAlive(worker), 2_000), 'the worker is still alive');
      assert.equal(await waitUntilRefused(proxy.port, 2_000), 'refused');
      assert.equal(existsSync(file), false, 'server-info file left behind');
    });
  }

  test(
    'SIGKILL of the supervisor: the worker exits by itself within 2 s and the port closes',
    { timeout: 20_000 },
    async () => {
      const { proxy, worker } = await startTracked();
      proxy.child.kill('SIGKILL');
      assert.deepEqual(await proxy.waitForExit(5_000), { code: null, signal: 'SIGKILL' });
      assert.ok(await waitFor(() => !isAlive(worker), 2_000), 'the worker outlived its supervisor by more than 2 s');
      assert.equal(await waitUntilRefused(proxy.port, 2_000), 'refused');
    },
  );

  test(
    'the key is in neither /proc/<pid>/environ nor /proc/<pid>/cmdline of either process',
    { timeout: 20_000 },
    async () => {
      const env = {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        LANG: 'C',
        RAP_TEST_MARKER: 'present-in-supervisor-env',
      };
      const { proxy, worker } = await startTracked([], env);
      const key = Buffer.from(TEST_KEY);
      const supervisorEnviron = readProcFile(proxy.pid, 'environ');
      const supervisorCmdline = readProcFile(proxy.pid, 'cmdline');
      const workerEnviron = readProcFile(worker, 'environ');
      const workerCmdline = readProcFile(worker, 'cmdline');
      assert.ok(
        supervisorEnviron && supervisorCmdline && workerEnviron && workerCmdline,
        'a /proc file could not be read',
      );
      // Sanity: we read the right files.
      assert.ok(
        supervisorEnviron.includes('RAP_TEST_MARKER=present-in-supervisor-env'),
        'supervisor environ lacks the variable the test set',
      );
      assert.ok(supervisorCmdline.includes('supervisor/main.js'), 'supervisor cmdline');
      assert.ok(workerCmdline.includes('worker/main.js'), 'worker cmdline');
      for (const [name, bytes] of [
        ['supervisor environ', supervisorEnviron],
        ['supervisor cmdline', supervisorCmdline],
        ['worker environ', workerEnviron],
        ['worker cmdline', workerCmdline],
      ] as const) {
        assert.equal(bytes.includes(key), false, `the key is in the ${name}`);
      }
      assert.equal(
        workerEnviron.length,
        0,
        `the worker's environment is not empty: ${JSON.stringify(workerEnviron.toString())}`,
      );
      await proxy.stop();
    },
  );
});

describe('lifecycle: what the proxy prints', { concurrency: true, timeout: 60_000 }, () => {
  let upstream: MockUpstream;
  const started: ProxyProcess[] = [];

  before(async () => {
    upstream = await MockUpstream.start();
  });

  after(async () => {
    for (const proxy of started) await proxy.stop('SIGKILL', 2_000);
    await upstream.close();
  });

  function requestRecords(proxy: ProxyProcess): LogRecord[] {
    return jsonRecords(proxy.stderr).filter((r) => r.msg === 'request');
  }

  test(
    'a proxied request and a 403: listening line, pino JSON, per-request info lines, no key anywhere',
    { timeout: 20_000 },
    async () => {
      const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstream.url()] });
      started.push(proxy);
      const port = await proxy.waitForListening(10_000);

      const requestBody = JSON.stringify({ model: 'gpt-test', input: 'hello' });
      const ok = await send(port, { headers: { 'content-type': 'application/json' }, body: requestBody });
      assert.equal(ok.status, 200);
      const forbidden = await send(port, { method: 'GET', path: '/v1/models' });
      assert.equal(forbidden.status, 403);

      assert.ok(
        await waitFor(() => requestRecords(proxy).length >= 2, 2_000),
        `expected two "request" log lines, stderr:\n${proxy.stderr}`,
      );
      const stderrLines = proxy.stderr.split('\n');
      assert.ok(stderrLines.includes(`responses-api-proxy listening on 127.0.0.1:${port}`), 'the exact listening line');
      const records = jsonRecords(proxy.stderr);
      assert.ok(records.length >= 3, 'pino JSON lines on stderr');
      for (const r of records) {
        assert.equal(typeof r.level, 'number', `pino record without a numeric level: ${JSON.stringify(r)}`);
        assert.equal(typeof r.time, 'string', `pino record without a time: ${JSON.stringify(r)}`);
        assert.equal(typeof r.pid, 'number', `pino record without a pid: ${JSON.stringify(r)}`);
      }

      const forwarded = requestRecords(proxy).find((r) => r.method === 'POST' && r.path === '/v1/responses');
      assert.ok(forwarded, 'a request line for the forwarded POST');
      assert.equal(forwarded.level, 30, 'info level');
      assert.equal(forwarded.status, 200);
      assert.equal(forwarded.bytesIn, Buffer.byteLength(requestBody));
      assert.equal(forwarded.bytesOut, ok.body.length);
      assert.equal(typeof forwarded.durationMs, 'number');
      assert.ok((forwarded.durationMs as number) >= 0);

      const rejected = requestRecords(proxy).find((r) => r.method === 'GET' && r.path === '/v1/models');
      assert.ok(rejected, 'a request line for the 403');
      assert.equal(rejected.level, 30, 'info level');
      assert.equal(rejected.status, 403);

      await proxy.stop();
      assert.equal(proxy.stdout.includes(TEST_KEY), false, 'the key is on stdout');
      assert.equal(proxy.stderr.includes(TEST_KEY), false, 'the key is on stderr');
    },
  );

  test(
    'a 403 also gets a full request line (method, path, status, bytesIn, bytesOut, durationMs)',
    { timeout: 20_000 },
    async () => {
      const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstream.url()] });
      started.push(proxy);
      const port = await proxy.waitForListening(10_000);
      const body = 'ignored body';
      assert.equal((await send(port, { method: 'POST', path: '/v1/responses?x=1', body })).status, 403);
      assert.ok(
        await waitFor(() => requestRecords(proxy).length >= 1, 2_000),
        `no "request" log line, stderr:\n${proxy.stderr}`,
      );
      const rejected = requestRecords(proxy)[0] as LogRecord;
      assert.equal(rejected.level, 30, 'info level');
      assert.equal(rejected.method, 'POST');
      assert.equal(rejected.path, '/v1/responses?x=1');
      assert.equal(rejected.status, 403);
      assert.equal(rejected.bytesOut, 0, 'a 403 has an empty body');
      for (const field of ['bytesIn', 'bytesOut', 'durationMs']) {
        assert.equal(
          typeof rejected[field],
          'number',
          `the 403 request line lacks ${field}: ${JSON.stringify(rejected)}`,
        );
      }
      await proxy.stop();
    },
  );

  test(
    'upstream unreachable → 502 OpenAI-shaped JSON without the key; nothing printed contains the key',
    { timeout: 20_000 },
    async () => {
      const closedPort = await freePort();
      const proxy = ProxyProcess.spawn({ args: ['--upstream-url', `http://127.0.0.1:${closedPort}/v1/responses`] });
      started.push(proxy);
      const port = await proxy.waitForListening(10_000);

      const reply = await send(port, { headers: { 'content-type': 'application/json' }, body: '{"input":"x"}' });
      assert.equal(reply.status, 502);
      assert.match(String(reply.headers['content-type']), /^application\/json/);
      const text = reply.body.toString('utf8');
      assert.equal(text.includes(TEST_KEY), false, 'the key is in the error body');
      const parsed = JSON.parse(text) as { error?: { message?: unknown; type?: unknown; code?: unknown } };
      assert.ok(parsed.error, `no "error" object: ${text}`);
      assert.equal(typeof parsed.error.message, 'string');
      assert.ok((parsed.error.message as string).length > 0);
      assert.equal(typeof parsed.error.type, 'string');
      assert.equal(typeof parsed.error.code, 'string');

      assert.ok(
        await waitFor(() => requestRecords(proxy).some((r) => r.status === 502), 2_000),
        `expected a request line with status 502, stderr:\n${proxy.stderr}`,
      );
      await proxy.stop();
      assert.equal(proxy.stdout.includes(TEST_KEY), false, 'the key is on stdout');
      assert.equal(proxy.stderr.includes(TEST_KEY), false, 'the key is on stderr');
    },
  );
});
