// A hostile worker: the real supervisor (ProxySupervisor, run as main.ts runs
// it) must end a worker that sends a frame the protocol does not accept, say
// why in one line, and never go on trusting it.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { Msg, encodeHead } from '../src/shared/ipcProtocol.js';
import { HostileRun, HostileSupervisor, SilentServer } from './helpers/hostileRun.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { TEST_KEY, isAlive, sleep, waitFor } from './helpers/proxyProcess.js';

const VIOLATION = 'broke the IPC protocol';
/** The supervisor's log record for each violation ("worker broke the IPC protocol; replacing it"). */
const VIOLATION_MSG = /broke the IPC protocol/;

// mode -> the reason the supervisor must give (src/shared/ipcProtocol.ts, src/supervisor/monitor.ts)
type Mode = [mode: string, reason: string, extraArgs?: string[]];

/** Refused before the worker said READY: it never served, so the proxy cannot start. */
const BEFORE_READY: Mode[] = [
  ['unknown-type', 'unknown message type 0x55'],
  ['oversize-length', 'REQUEST_DATA payload of 2147483647 bytes is outside 1..65536'],
  ['wrong-side', 'REQUEST_SCANNED may not be sent by the worker'],
  ['open-before-ready', 'OPEN before READY'],
  ['shutdown', 'SHUTDOWN without --http-shutdown'],
  ['ws-open-without-flag', 'WS_OPEN without --websocket'],
];

/** Refused after READY: that worker is ended and another is started in its place. */
const AFTER_READY: Mode[] = [
  ['data-unopened', 'frame for stream 7, which was never opened'],
  ['reuse-stream', 'OPEN reuses stream id 1'],
  ['window-overrun', 'stream 1 sent 262145 bytes beyond its 262144-byte window'],
  ['beyond-content-length', 'REQUEST_DATA beyond Content-Length on stream 1'],
  ['truncated-head', 'truncated header list'],
  ['ready-twice', 'READY sent twice'],
  ['startup-failed-after-ready', 'STARTUP_FAILED after READY'],
  ['drained-before-drain', 'DRAINED before DRAIN'],
  ['ws-message-without-flag', 'WS_TEXT_END without --websocket'],
  ['ws-message-on-http-stream', 'frame of the wrong kind for stream 1', ['--websocket']],
  ['ws-message-before-handshake', 'message before the handshake on stream 1', ['--websocket']],
  ['dump-without-flag', 'DUMP_DATA without --dump-dir'],
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

  const proxyArgs = (extraArgs: string[]): string[] => [
    '--upstream-url',
    `https://127.0.0.1:${silent.port}/v1/responses`,
    ...extraArgs,
  ];

  for (const [mode, reason, extraArgs = []] of BEFORE_READY) {
    const name = `before READY, ${mode}: supervisor exits 1, says the worker broke the IPC protocol (${reason})`;
    test(name, { timeout: 20_000 }, async () => {
      const workDir = mkdtempSync(join(workRoot, `${mode}-`));
      const args = proxyArgs(extraArgs);
      const run = HostileRun.start({ workDir, mode, readyFirst: false, hostileInstances: 'all', proxyArgs: args });
      try {
        const status = await run.waitForExit(10_000);
        assert.deepEqual(status, { code: 1, signal: null }, `supervisor exit status; stderr:\n${run.stderr}`);
        const lines = run.humanLinesWith(VIOLATION);
        assert.equal(
          lines.length,
          1,
          `one line (besides the JSON log) says the worker broke the IPC protocol; stderr:\n${run.stderr}`,
        );
        assert.ok((lines[0] as string).includes(reason), `the line gives the reason "${reason}": ${lines[0]}`);
        assert.equal(run.humanLinesWith('Error:').length, 1, `exactly one error line:\n${run.stderr}`);
        const instances = run.instances();
        assert.equal(instances.length, 1, `one worker instance was started: ${JSON.stringify(instances)}`);
        for (const { pid } of instances)
          assert.ok(await waitFor(() => !isAlive(pid), 2_000), `hostile worker ${pid} is gone`);
        assert.ok(!run.stderr.includes(TEST_KEY), 'the key is not in the output');
      } finally {
        await run.kill();
      }
    });
  }

  for (const [mode, reason, extraArgs = []] of AFTER_READY) {
    const name = `after READY, ${mode}: that worker is ended for it (${reason}) and another one started`;
    test(name, { timeout: 30_000 }, async () => {
      const workDir = mkdtempSync(join(workRoot, `${mode}-`));
      const args = proxyArgs(extraArgs);
      const run = HostileRun.start({ workDir, mode, readyFirst: true, hostileInstances: 'all', proxyArgs: args });
      try {
        // The next instance misbehaves too, and so on until the crash limit: look at the first.
        const restarted = await waitFor(() => run.instances().length >= 2 || run.exitStatus !== null, 20_000);
        assert.ok(restarted && run.exitStatus === null, `restarted, the supervisor runs on; stderr:\n${run.stderr}`);
        const [record] = run.logRecords(VIOLATION_MSG);
        const [hostile] = run.instances();
        assert.equal(record?.reason, reason, `the log record gives the reason; stderr:\n${run.stderr}`);
        assert.equal(record?.workerPid, hostile?.pid, 'the record names the hostile worker');
        assert.ok(await waitFor(() => !isAlive(hostile?.pid ?? 0), 2_000), 'the hostile worker is gone');
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

  /** `hostileDumps`: with --dump-dir, how many files the hostile worker's stream may leave at most. */
  const REPLACED: Array<[mode: string, reason: string, hostileDumps?: number]> = [
    ['reuse-stream', 'OPEN reuses stream id 1'],
    // "Cannot start" from a worker that has served ends that worker, not the proxy.
    ['startup-failed-after-ready', 'STARTUP_FAILED after READY'],
    // With --dump-dir: the replacement's dumps number on after the hostile worker's stream.
    ['dump-data-without-file', 'DUMP_DATA on stream 1 without DUMP_FILE', 0],
    // Empty dump files cost no disk credit: their number is bounded by the streams opened.
    ['dump-files-beyond-streams', 'more than 2 dump files per stream (1 opened)', 2],
  ];

  for (const [mode, reason, hostileDumps] of REPLACED) {
    const name = `${mode}: it is killed at once and a fresh (real) worker serves on the same port`;
    test(name, { timeout: 20_000 }, async () => {
      const workDir = mkdtempSync(join(workRoot, `replaced-${mode}-`));
      const dumpDir = join(workDir, 'dumps');
      const dumpArgs = hostileDumps === undefined ? [] : ['--dump-dir', dumpDir];
      const proxyArgs = ['--upstream-url', upstream.url(), ...dumpArgs];
      const run = HostileRun.start({ workDir, mode, readyFirst: true, hostileInstances: 1, proxyArgs });
      const requestsBefore = upstream.requests.length; // the upstream is shared with the other modes
      try {
        assert.ok(await waitFor(() => run.port !== 0 || run.exitStatus !== null, 10_000), 'listening line printed');
        const port = run.port;
        assert.notEqual(port, 0, `listening; stderr:\n${run.stderr}`);
        const violated = (): boolean => run.logRecords(VIOLATION_MSG).length > 0 || run.exitStatus !== null;
        const reported = await waitFor(violated, 5_000);
        assert.ok(reported, `violation reported; stderr:\n${run.stderr}`);
        const records = run.logRecords(VIOLATION_MSG);
        assert.equal(records.length, 1, `one log record says the worker broke the IPC protocol:\n${run.stderr}`);
        assert.equal(records[0]?.reason, reason);
        assert.equal(records[0]?.workerPid, run.instances()[0]?.pid, 'the record names the hostile worker');
        const hostile = run.instances()[0];
        assert.equal(hostile?.role, 'hostile');
        assert.ok(await waitFor(() => !isAlive(hostile?.pid ?? 0), 2_000), 'the hostile worker is gone');
        // The stream it opened was cancelled: no complete request reached the upstream.
        assert.equal(upstream.requests.length, requestsBefore, 'nothing from the hostile worker reached the upstream');
        // Replaced: the same port is served by a real worker.
        const replaced = await waitFor(() => run.instances().length === 2 || run.exitStatus !== null, 5_000);
        assert.ok(replaced, `a replacement was started; stderr:\n${run.stderr}`);
        assert.equal(run.instances()[1]?.role, 'real');
        const forbidden = await send(port, { method: 'GET', path: '/' });
        assert.equal(forbidden.status, 403);
        const request = { headers: { 'content-type': 'application/json' }, body: '{"model":"gpt-test"}' };
        const reply = await send(port, request);
        assert.equal(reply.status, 200);
        assert.equal(upstream.requests.length, requestsBefore + 1);
        assert.equal(upstream.requests[requestsBefore]?.headers.authorization, `Bearer ${TEST_KEY}`);
        if (hostileDumps !== undefined) {
          const dumped = (prefix: string): string[] =>
            readdirSync(dumpDir)
              .filter((f) => f.startsWith(prefix))
              .sort();
          assert.ok(
            await waitFor(() => dumped('000002-').length === 2, 5_000),
            `the real worker's exchange is dumped: ${dumped('')}`,
          );
          assert.match(dumped('000002-').join(' '), /^000002-\d+-request\.json 000002-\d+-response\.json$/);
          assert.ok(dumped('000001-').length <= hostileDumps, `the hostile worker's files: ${dumped('')}`);
        }
        assert.equal(run.exitStatus, null, 'supervisor still running');
      } finally {
        await run.kill();
      }
    });
  }

  test(
    'a worker that keeps breaking it makes the supervisor give up with exit 1; no instance survives',
    { timeout: 30_000 },
    async () => {
      const workDir = mkdtempSync(join(workRoot, 'crashloop-'));
      const run = HostileRun.start({
        workDir,
        mode: 'data-unopened',
        readyFirst: true,
        hostileInstances: 'all',
        proxyArgs: ['--upstream-url', `https://127.0.0.1:${silent.port}/v1/responses`],
      });
      try {
        const status = await run.waitForExit(20_000);
        assert.deepEqual(status, { code: 1, signal: null }, `supervisor exit status; stderr:\n${run.stderr}`);
        const instances = run.instances();
        assert.ok(instances.length >= 1, 'at least one worker was started');
        const records = run.logRecords(VIOLATION_MSG);
        assert.equal(records.length, instances.length, `one violation record per hostile worker:\n${run.stderr}`);
        for (const record of records) assert.equal(record.reason, 'frame for stream 7, which was never opened');
        assert.deepEqual(
          records.map((r) => r.workerPid),
          instances.map((i) => i.pid),
          'each record names its worker',
        );
        assert.equal(run.humanLinesWith('Error:').length, 1, `one error line on the way out:\n${run.stderr}`);
        for (const { pid } of instances)
          assert.ok(await waitFor(() => !isAlive(pid), 2_000), `hostile worker ${pid} is gone`);
      } finally {
        await run.kill();
      }
    },
  );

  test('control: a worker that only says READY is left alone', { timeout: 15_000 }, async () => {
    const workDir = mkdtempSync(join(workRoot, 'control-'));
    const run = HostileRun.start({
      workDir,
      mode: 'none',
      readyFirst: true,
      hostileInstances: 'all',
      proxyArgs: ['--upstream-url', upstream.url()],
    });
    try {
      assert.ok(
        await waitFor(() => run.port !== 0 || run.exitStatus !== null, 10_000),
        `listening; stderr:\n${run.stderr}`,
      );
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

describe('a supervisor that sends a frame the worker does not accept', { concurrency: 3 }, () => {
  const WORKER_VIOLATION_MSG = /^IPC protocol violation by the supervisor$/;
  // what the supervisor sends once the worker said READY -> the reason the worker must give
  const AFTER_READY: Array<[string, (s: HostileSupervisor) => void, string]> = [
    ['an unknown type', (s) => s.sendHeader(0x99, 0, 0), 'unknown message type 0x99'],
    ['a worker message', (s) => s.send(Msg.OPEN, 1, encodeHead([])), 'OPEN may not be sent by the supervisor'],
    ['CONFIG again', (s) => s.sendConfig(), 'CONFIG sent twice'],
    ['a key scan', (s) => s.send(Msg.REQUEST_SCANNED, 1, Buffer.alloc(3)), 'REQUEST_SCANNED without --dump-dir'],
    ['a WebSocket close', (s) => s.send(Msg.WS_CLOSE, 1, Buffer.from([0x03, 0xe8])), 'WS_CLOSE without --websocket'],
  ];

  for (const [what, misbehave, reason] of AFTER_READY) {
    test(`${what}: the worker exits 70 with one log record saying why (${reason})`, { timeout: 15_000 }, async () => {
      const supervisor = HostileSupervisor.start();
      try {
        supervisor.sendConfig();
        assert.ok(await supervisor.waitForReady(10_000), `READY; stderr:\n${supervisor.stderr}`);
        assert.equal(supervisor.exitStatus, null, `the worker serves; stderr:\n${supervisor.stderr}`);
        misbehave(supervisor);
        const status = await supervisor.waitForExit(5_000);
        assert.deepEqual(status, { code: 70, signal: null }, `stderr:\n${supervisor.stderr}`);
        const records = supervisor.logRecords(WORKER_VIOLATION_MSG);
        assert.equal(records.length, 1, `one log record says the supervisor broke the protocol:\n${supervisor.stderr}`);
        assert.equal(records[0]?.reason, reason);
        assert.equal(records[0]?.level, 60, 'fatal');
        assert.equal(supervisor.logRecords(/worker failed/).length, 0, 'not reported as a crash');
      } finally {
        supervisor.kill();
      }
    });
  }

  test('a frame before CONFIG: the worker exits 70, says why on stderr', { timeout: 15_000 }, async () => {
    const supervisor = HostileSupervisor.start();
    try {
      supervisor.send(Msg.DRAIN, 0);
      const status = await supervisor.waitForExit(10_000);
      assert.deepEqual(status, { code: 70, signal: null }, `stderr:\n${supervisor.stderr}`);
      const line = 'responses-api-proxy worker: IPC protocol violation by the supervisor: DRAIN before CONFIG';
      assert.deepEqual(supervisor.stderr.split('\n').filter(Boolean), [line]);
      assert.deepEqual(supervisor.received, [], 'it sent nothing');
    } finally {
      supervisor.kill();
    }
  });
});
