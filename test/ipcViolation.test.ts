// A hostile worker: the real supervisor (ProxySupervisor, run as main.ts runs
// it) must end a worker that sends a frame the protocol does not accept, say
// why in one line, and never go on trusting it.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { HostileRun, SilentServer } from './helpers/hostileRun.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { TEST_KEY, isAlive, sleep, waitFor } from './helpers/proxyProcess.js';

const VIOLATION = 'broke the IPC protocol';
/** The supervisor's log record for each violation ("worker broke the IPC protocol; replacing it"). */
const VIOLATION_MSG = /broke the IPC protocol/;

// mode -> the reason the supervisor must give (src/shared/ipcProtocol.ts, src/supervisor/monitor.ts)
const MODES: Array<[string, string, string[]?]> = [
  ['unknown-type', 'unknown message type 0x55'],
  ['oversize-length', 'REQUEST_DATA payload of 2147483647 bytes is outside 1..65536'],
  ['data-unopened', 'frame for stream 7, which was never opened'],
  ['reuse-stream', 'OPEN reuses stream id 1'],
  ['window-overrun', 'stream 1 sent 262145 bytes beyond its 262144-byte window'],
  ['beyond-content-length', 'REQUEST_DATA beyond Content-Length on stream 1'],
  ['truncated-head', 'truncated header list'],
  ['shutdown', 'SHUTDOWN without --http-shutdown'],
  ['ws-open-without-flag', 'WS_OPEN without --websocket'],
  ['ws-message-on-http-stream', 'frame of the wrong kind for stream 1'],
  ['ws-message-before-handshake', 'message before the handshake on stream 1', ['--websocket']],
];

describe('a worker that sends a frame the supervisor does not accept', { concurrency: 4 }, () => {
  // The upstream never completes a TLS handshake, so an opened stream stays
  // open and its request body is never consumed (no credit is returned).
  let silent: SilentServer;
  let workRoot: string;

  before(async () => {
    silent = await SilentServer.start();
    workRoot = mkdtempSync(join(tmpdir(), 'ipc-violation-'));
    chmodSync(workRoot, 0o755); // the worker may run as nobody
  });

  after(async () => {
    await silent?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
  });

  for (const [mode, reason, extraArgs = []] of MODES) {
    test(`${mode}: supervisor exits 1, says the worker broke the IPC protocol (${reason}), the worker is gone`, { timeout: 20_000 }, async () => {
      const workDir = mkdtempSync(join(workRoot, `${mode}-`));
      const run = HostileRun.start({ workDir, mode, readyFirst: false, hostileInstances: 'all', proxyArgs: ['--upstream-url', `https://127.0.0.1:${silent.port}/v1/responses`, ...extraArgs] });
      try {
        const status = await run.waitForExit(10_000);
        assert.deepEqual(status, { code: 1, signal: null }, `supervisor exit status; stderr:\n${run.stderr}`);
        const lines = run.humanLinesWith(VIOLATION);
        assert.equal(lines.length, 1, `one line (besides the JSON log) says the worker broke the IPC protocol; stderr:\n${run.stderr}`);
        assert.ok((lines[0] as string).includes(reason), `the line gives the reason "${reason}": ${lines[0]}`);
        assert.equal(run.humanLinesWith('Error:').length, 1, `exactly one error line:\n${run.stderr}`);
        const instances = run.instances();
        assert.equal(instances.length, 1, `one worker instance was started: ${JSON.stringify(instances)}`);
        for (const { pid } of instances) assert.ok(await waitFor(() => !isAlive(pid), 2_000), `hostile worker ${pid} is gone`);
        assert.ok(!run.stderr.includes(TEST_KEY), 'the key is not in the output');
      } finally {
        await run.kill();
      }
    });
  }
});

describe('a worker that breaks the protocol after it has served', () => {
  let upstream: MockUpstream;
  let silent: SilentServer;
  let workRoot: string;

  before(async () => {
    upstream = await MockUpstream.start();
    silent = await SilentServer.start();
    workRoot = mkdtempSync(join(tmpdir(), 'ipc-violation-served-'));
    chmodSync(workRoot, 0o755); // the worker may run as nobody
  });

  after(async () => {
    await upstream?.close();
    await silent?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
  });

  test('it is killed at once and a fresh (real) worker serves on the same port', { timeout: 20_000 }, async () => {
    const workDir = mkdtempSync(join(workRoot, 'replaced-'));
    const run = HostileRun.start({ workDir, mode: 'reuse-stream', readyFirst: true, hostileInstances: 1, proxyArgs: ['--upstream-url', upstream.url()] });
    try {
      assert.ok(await waitFor(() => run.port !== 0 || run.exitStatus !== null, 10_000), 'listening line printed');
      const port = run.port;
      assert.notEqual(port, 0, `listening; stderr:\n${run.stderr}`);
      assert.ok(await waitFor(() => run.logRecords(VIOLATION_MSG).length > 0 || run.exitStatus !== null, 5_000), `violation reported; stderr:\n${run.stderr}`);
      const records = run.logRecords(VIOLATION_MSG);
      assert.equal(records.length, 1, `one log record says the worker broke the IPC protocol:\n${run.stderr}`);
      assert.equal(records[0]?.reason, 'OPEN reuses stream id 1');
      assert.equal(records[0]?.workerPid, run.instances()[0]?.pid, 'the record names the hostile worker');
      const hostile = run.instances()[0];
      assert.equal(hostile?.role, 'hostile');
      assert.ok(await waitFor(() => !isAlive(hostile?.pid ?? 0), 2_000), 'the hostile worker is gone');
      // The stream it opened was cancelled: no complete request reached the upstream.
      assert.equal(upstream.requests.length, 0, 'nothing from the hostile worker reached the upstream');
      // Replaced: the same port is served by a real worker.
      assert.ok(await waitFor(() => run.instances().length === 2 || run.exitStatus !== null, 5_000), `a replacement was started; stderr:\n${run.stderr}`);
      assert.equal(run.instances()[1]?.role, 'real');
      const forbidden = await send(port, { method: 'GET', path: '/' });
      assert.equal(forbidden.status, 403);
      const reply = await send(port, { headers: { 'content-type': 'application/json' }, body: '{"model":"gpt-test"}' });
      assert.equal(reply.status, 200);
      assert.equal(upstream.requests.length, 1);
      assert.equal(upstream.requests[0]?.headers.authorization, `Bearer ${TEST_KEY}`);
      assert.equal(run.exitStatus, null, 'supervisor still running');
    } finally {
      await run.kill();
    }
  });

  test('a worker that keeps breaking it makes the supervisor give up with exit 1; no instance survives', { timeout: 30_000 }, async () => {
    const workDir = mkdtempSync(join(workRoot, 'crashloop-'));
    const run = HostileRun.start({ workDir, mode: 'data-unopened', readyFirst: true, hostileInstances: 'all', proxyArgs: ['--upstream-url', `https://127.0.0.1:${silent.port}/v1/responses`] });
    try {
      const status = await run.waitForExit(20_000);
      assert.deepEqual(status, { code: 1, signal: null }, `supervisor exit status; stderr:\n${run.stderr}`);
      const instances = run.instances();
      assert.ok(instances.length >= 1, 'at least one worker was started');
      const records = run.logRecords(VIOLATION_MSG);
      assert.equal(records.length, instances.length, `one violation record per hostile worker:\n${run.stderr}`);
      for (const record of records) assert.equal(record.reason, 'frame for stream 7, which was never opened');
      assert.deepEqual(records.map((r) => r.workerPid), instances.map((i) => i.pid), 'each record names its worker');
      assert.equal(run.humanLinesWith('Error:').length, 1, `one error line on the way out:\n${run.stderr}`);
      for (const { pid } of instances) assert.ok(await waitFor(() => !isAlive(pid), 2_000), `hostile worker ${pid} is gone`);
    } finally {
      await run.kill();
    }
  });

  test('control: a worker that only says READY is left alone', { timeout: 15_000 }, async () => {
    const workDir = mkdtempSync(join(workRoot, 'control-'));
    const run = HostileRun.start({ workDir, mode: 'none', readyFirst: true, hostileInstances: 'all', proxyArgs: ['--upstream-url', upstream.url()] });
    try {
      assert.ok(await waitFor(() => run.port !== 0 || run.exitStatus !== null, 10_000), `listening; stderr:\n${run.stderr}`);
      assert.notEqual(run.port, 0);
      await sleep(500);
      assert.equal(run.exitStatus, null, `supervisor still running; stderr:\n${run.stderr}`);
      assert.equal(run.linesWith(VIOLATION).length, 0);
      assert.equal(run.logRecords(VIOLATION_MSG).length, 0);
      const instances = run.instances();
      assert.equal(instances.length, 1);
      assert.ok(isAlive(instances[0]?.pid ?? 0), 'the well-behaved worker is alive');
    } finally {
      await run.kill();
    }
  });
});
