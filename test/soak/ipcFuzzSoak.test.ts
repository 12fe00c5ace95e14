// The IPC fuzz test's soak share (`npm run test:soak`): with the ~1,000 cases of
// `npm test` (test/ipcFuzz.test.ts), at least 10,000 hostile-worker cases per
// CI run at the real decoder and dispatcher, from the same generator and
// properties (test/helpers/ipcFuzzSuite.ts). Then the same generator end to
// end: a hostile worker process (test/fixtures/hostileWorker.ts, mode
// fuzz:<seed>) sends a fuzzed case to the real supervisor, which must end that
// worker for the case's reason, stay up, and serve with a fresh real worker.
// Rerun with the printed seed: FUZZ_SEED=<seed> npm run test:soak.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ChannelConfig } from '../../src/shared/ipcProtocol.js';
import { processCase } from '../helpers/ipcFuzzCases.js';
import { FUZZ_SEED, RUNS_FACTOR, describeIpcFuzz } from '../helpers/ipcFuzzSuite.js';
import { HostileRun } from '../helpers/hostileRun.js';
import { send } from '../helpers/httpClient.js';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { TEST_KEY, isAlive, waitFor } from '../helpers/proxyProcess.js';
import { prng } from './soakKit.js';

describeIpcFuzz({
  name: 'soak',
  rerun: 'npm run test:soak',
  runs: {
    randomBytes: 1800,
    validSequences: 1650,
    invalidFrame: 2400,
    mutated: 1850,
    floodHeld: 50,
    floodNearLimit: 2,
    floodChurn: 4,
    mixed: 1410,
  },
  minimum: 9_000,
  timeoutMs: 180_000,
});

/** Real supervisors, each with one hostile worker process; a few at a time. */
const PROCESS_CASES = 24 * RUNS_FACTOR;
const PROCESS_CONCURRENCY = 3;
const VIOLATION_MSG = /broke the IPC protocol/;
/** The supervisor's last-resort handler: an exception that escaped it (it would have crashed without the handler). */
const ESCAPED_MSG = /^unexpected error$/;
/** Stop starting cases after this many failures (a broken supervisor fails every case, each after a wait). */
const MAX_FAILURES = 3;
const REPLACED_WITHIN_MS = 15_000;

describe('hostile worker processes: each fuzzed case ends only that worker; the supervisor stays up and serves', () => {
  let upstream: MockUpstream;
  let workRoot: string;

  before(async () => {
    upstream = await MockUpstream.start();
    workRoot = mkdtempSync(join(tmpdir(), 'ipc-fuzz-soak-'));
    chmodSync(workRoot, 0o755); // the worker may run under another uid
  });

  after(async () => {
    await upstream?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
  });

  /** One case: its kind, and what went wrong (null: nothing). */
  async function runProcessCase(seed: number): Promise<{ kind: string; failure: string | null }> {
    // The flags the worker's CONFIG enables, as the hostile worker reads them.
    const random = prng(seed);
    const coin = (): boolean => random() % 2 === 0;
    const flags: ChannelConfig = { httpShutdown: coin(), webSocket: coin(), dumps: coin(), allowModel: coin() };
    const expected = processCase(seed, flags);
    const workDir = mkdtempSync(join(workRoot, `${seed}-`));
    const flagArgs = [
      ...(flags.httpShutdown ? ['--http-shutdown'] : []),
      ...(flags.webSocket ? ['--websocket'] : []),
      ...(flags.dumps ? ['--dump-dir', join(workDir, 'dumps')] : []),
      ...(flags.allowModel ? ['--allow-model', 'gpt-test'] : []),
    ];
    const what = `seed ${seed} (${expected.kind}; ${flagArgs.join(' ') || 'no flags'})`;
    const proxyArgs = ['--upstream-url', upstream.url(), ...flagArgs];
    const run = HostileRun.start({ workDir, mode: `fuzz:${seed}`, readyFirst: false, hostileInstances: 1, proxyArgs });
    try {
      const failure = await survived(run, seed, expected.reason);
      return { kind: expected.kind, failure: failure === null ? null : `${what}: ${failure}` };
    } finally {
      await run.kill();
    }
  }

  /** The hostile worker was ended for `reason` and only it: the supervisor runs on and a fresh worker serves. */
  async function survived(run: HostileRun, seed: number, reason: RegExp): Promise<string | null> {
    const replaced = (): boolean => run.instances().length >= 2 && run.logRecords(VIOLATION_MSG).length > 0;
    const escaped = (): string =>
      run
        .logRecords(ESCAPED_MSG)
        .map((r) => JSON.stringify(r.err))
        .join('; ');
    if (!(await waitFor(() => replaced() || run.exitStatus !== null, REPLACED_WITHIN_MS))) {
      return `no violation and replacement within ${REPLACED_WITHIN_MS} ms; escaped exceptions: ${escaped() || 'none'}`;
    }
    if (run.exitStatus !== null) return `the supervisor exited (${JSON.stringify(run.exitStatus)}):\n${run.stderr}`;
    const records = run.logRecords(VIOLATION_MSG);
    const [hostile, fresh] = run.instances();
    if (records.length !== 1) return `${records.length} violation records`;
    const given = String(records[0]?.reason);
    if (!reason.test(given)) return `reason "${given}", expected ${reason}`;
    const named = records[0]?.workerPid;
    if (named !== hostile?.pid) return `the record names ${String(named)}, not the hostile worker ${hostile?.pid}`;
    if (!(await waitFor(() => !isAlive(hostile?.pid ?? 0), 2_000))) return `hostile worker ${hostile?.pid} still alive`;
    if (fresh?.role !== 'real') return `the second instance is ${fresh?.role}`;
    const headers = { 'content-type': 'application/json', 'x-fuzz-seed': String(seed) };
    const request = { headers, body: '{"model":"gpt-test"}' };
    const reply = await send(run.port, request);
    if (reply.status !== 200) return `the fresh worker answered ${reply.status}`;
    const served = upstream.requests.find((r) => r.headers['x-fuzz-seed'] === String(seed));
    if (served?.headers.authorization !== `Bearer ${TEST_KEY}`)
      return 'the request reached the upstream without the key';
    const failed = run.exitStatus !== null || run.humanLinesWith('Error:').length > 0;
    if (failed) return `the supervisor failed:\n${run.stderr}`;
    if (run.stderr.includes(TEST_KEY)) return 'the key is in the output';
    if (escaped() !== '') return `an exception escaped: ${escaped()}`;
    return null;
  }

  const name = `${PROCESS_CASES} fuzzed cases against real supervisors, ${PROCESS_CONCURRENCY} at a time`;
  test(name, { timeout: 170_000 }, async (t) => {
    const seeds = Array.from({ length: PROCESS_CASES }, (_, i) => (FUZZ_SEED + 1_000 + i) % 0x7fffffff);
    t.diagnostic(`seeds ${seeds[0]}..${seeds.at(-1)} (rerun: FUZZ_SEED=${FUZZ_SEED} npm run test:soak)`);
    const startedAt = Date.now();
    const failures: string[] = [];
    const kinds = new Map<string, number>();
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < seeds.length && failures.length < MAX_FAILURES) {
        const seed = seeds[next++] as number;
        const { kind, failure } = await runProcessCase(seed);
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        if (failure !== null) failures.push(failure);
      }
    };
    await Promise.all(Array.from({ length: PROCESS_CONCURRENCY }, lane));
    const byKind = [...kinds]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    t.diagnostic(`${seeds.length} process cases in ${Date.now() - startedAt} ms; by kind: ${byKind}`);
    assert.deepEqual(failures, []);
  });
});
