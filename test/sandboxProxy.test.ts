// The sandbox of the REAL proxy, proved from outside both processes: the
// test starts the built CLI (supervisor + worker) and then reads
// /proc/<worker>/status, tries the supervisor's /proc files as the worker's
// uid, scans the worker's whole memory for the key after 500 proxied
// requests, and checks the CLI's identity options and startup failures.
// test/sandbox.test.ts proves the modules in throwaway children; this file
// proves they are wired into the product. Root-only checks skip with a
// printed reason when the suite does not run as root.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isInLockedMapping, readMappings, scanProcessMemory, type ScanResult } from './helpers/memScan.js';
import { jsonOk, MockUpstream } from './helpers/mockUpstream.js';
import { jsonRecords, lines, type LogRecord } from './helpers/netProbe.js';
import { send } from './helpers/httpClient.js';
import {
  PROXY_MAIN,
  ProxyProcess,
  TEST_KEY,
  childPids,
  isAlive,
  killQuietly,
  waitFor,
} from './helpers/proxyProcess.js';
import { AUDIT_ARCH, RET_ALLOW, RET_ENOSYS, RET_EPERM, runFilter } from './helpers/bpf.js';
import { intrudeAs, readSeccompFilters } from './helpers/ptrace.js';
import { allowedSyscalls, buildIoUringDenial, buildSeccompFilter } from '../src/shared/seccompFilter.js';
import { DYNAMIC_ID_FIRST, DYNAMIC_ID_LAST } from '../src/supervisor/startup/workerIdLease.js';
import { landlockSupport } from '../src/shared/landlock.js';

const IS_ROOT = process.getuid?.() === 0;
const NEEDS_ROOT =
  'needs root: the worker only changes uid, and only root can read other processes, when the proxy runs as root (as in CI)';
const NOBODY = 65534;
const DIST_ROOT = fileURLToPath(new URL('../', import.meta.url)); // <package>/dist/
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SODIUM_NATIVE = fileURLToPath(import.meta.resolve('sodium-native'));
const WORKER_MAIN = fileURLToPath(new URL('../src/worker/main.js', import.meta.url));
const CONTAINED_SUPERVISOR = fileURLToPath(new URL('./fixtures/containedSupervisor.js', import.meta.url));
const ALLOWED = allowedSyscalls(process.arch).length;
const KEY_LATIN1 = Buffer.from(TEST_KEY, 'latin1');
const KEY_UTF16 = Buffer.from(TEST_KEY, 'utf16le');

// ---------------------------------------------------------------- helpers

/** /proc/<pid>/status as name → value (trimmed). */
function procStatus(pid: number): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/** The identity and sandbox fields of a process, as the kernel shows them. */
function sandboxFields(pid: number): Record<string, string> {
  const status = procStatus(pid);
  const pick = (name: string): string => (status.get(name) ?? '<absent>').split(/\s+/).join(' ');
  return {
    Uid: pick('Uid'),
    Gid: pick('Gid'),
    Groups: pick('Groups'),
    NoNewPrivs: pick('NoNewPrivs'),
    Seccomp: pick('Seccomp'),
    CapEff: pick('CapEff'),
  };
}

const four = (id: number): string => `${id} ${id} ${id} ${id}`;

/** The worker's real uid and gid, as the kernel shows them. */
function workerIds(pid: number): { uid: number; gid: number } {
  const status = procStatus(pid);
  return { uid: Number(status.get('Uid')?.split(/\s+/)[0]), gid: Number(status.get('Gid')?.split(/\s+/)[0]) };
}

/** Other processes (any pid but `except`) holding `id` as a uid, gid or supplementary group. */
function otherHolders(id: number, except: number): number[] {
  const holders: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === except) continue;
    let status: Map<string, string>;
    try {
      status = procStatus(Number(entry));
    } catch {
      continue;
    }
    const field = (name: string): number[] => (status.get(name) ?? '').split(/\s+/).filter(Boolean).map(Number);
    const ids = ['Uid', 'Gid', 'Groups'].flatMap(field);
    if (ids.includes(id)) holders.push(Number(entry));
  }
  return holders;
}

/** uid/gid of a user or group from the system databases (getent, else the files). */
function lookup(db: 'passwd' | 'group', name: string): { id: number; gid: number } | null {
  const run = spawnSync('getent', [db, name], { encoding: 'utf8', timeout: 5_000 });
  let line = run.status === 0 ? run.stdout.trim() : '';
  if (line === '')
    line =
      readFileSync(`/etc/${db}`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith(`${name}:`)) ?? '';
  if (line === '') return null;
  const parts = line.split(':');
  return { id: Number(parts[2]), gid: Number(db === 'passwd' ? parts[3] : parts[2]) };
}

function records(proxy: { stderr: string }): LogRecord[] {
  return jsonRecords(proxy.stderr);
}

/** Wait (bounded) for a log record matching `match`. */
async function waitForRecord(
  proxy: { stderr: string },
  match: (r: LogRecord) => boolean,
  timeoutMs = 3_000,
): Promise<LogRecord | undefined> {
  await waitFor(() => records(proxy).some(match), timeoutMs);
  return records(proxy).find(match);
}

/** Stop a proxy by pid and make sure its worker is gone too. */
async function stopProxy(proxy: ProxyProcess | null): Promise<void> {
  if (proxy === null) return;
  const workers = proxy.exitStatus === null ? childPids(proxy.pid) : [];
  await proxy.stop('SIGTERM', 3_000);
  if (!(await waitFor(() => workers.every((pid) => !isAlive(pid)), 2_000))) for (const pid of workers) killQuietly(pid);
}

/** A child process we started under another uid, tracked by pid. */
class Tracked {
  stdout = '';
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    child.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  async waitExit(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    return this.exit !== null;
  }

  /** SIGTERM, then SIGKILL (this pid and the children it had) after 3 s. */
  async stop(): Promise<void> {
    if (this.exit !== null) return;
    const children = childPids(this.pid);
    killQuietlyWith(this.pid, 'SIGTERM');
    if (!(await this.waitExit(3_000))) {
      killQuietly(this.pid);
      await this.waitExit(3_000);
    }
    if (!(await waitFor(() => children.every((pid) => !isAlive(pid)), 2_000)))
      for (const pid of children) killQuietly(pid);
  }
}

function killQuietlyWith(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

const started: Tracked[] = [];

function spawnTracked(args: readonly string[], ids: { uid?: number; gid?: number } = {}, stdin?: string): Tracked {
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    cwd: '/',
    ...ids,
  });
  const tracked = new Tracked(child);
  started.push(tracked);
  if (stdin !== undefined) child.stdin?.end(stdin);
  return tracked;
}

after(async () => {
  for (const tracked of started) await tracked.stop();
});

// What a process running as `ids` gets when it opens and reads /proc/<pid>/<file>.
const READER = `
const fs = require('node:fs');
const [pid, address] = process.argv.slice(1);
const out = {};
for (const file of ['mem', 'environ', 'maps', 'status', 'limits']) {
  let fd;
  try { fd = fs.openSync('/proc/' + pid + '/' + file, 'r'); } catch (e) { out[file] = e.code; continue; }
  try {
    const n = file === 'mem' ? fs.readSync(fd, Buffer.alloc(64), 0, 64, BigInt('0x' + address)) : fs.readSync(fd, Buffer.alloc(4096), 0, 4096, null);
    out[file] = n > 0 ? 'readable' : 'empty';
  } catch (e) { out[file] = 'read:' + e.code; }
  finally { fs.closeSync(fd); }
}
process.stdout.write(JSON.stringify(out));
`;

/** What uid/gid can read of /proc/<pid>/{mem,environ,maps,status,limits}; mem at a readable address of pid. */
function procAccessAs(pid: number, ids: { uid: number; gid: number }): Record<string, string> {
  const readable = readMappings(pid).find(
    (m) => m.perms.startsWith('r') && m.name !== '[vvar]' && m.name !== '[vsyscall]',
  );
  assert.ok(readable !== undefined, `no readable mapping in /proc/${pid}/maps`);
  const run = spawnSync(process.execPath, ['-e', READER, String(pid), readable.start.toString(16)], {
    ...ids,
    cwd: '/',
    env: {},
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(run.status, 0, `reader as ${ids.uid}:${ids.gid} failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as Record<string, string>;
}

/** An ordinary (dumpable) process as ids: the control for "same uid can read it". */
function idleProcess(ids: { uid: number; gid: number }): Tracked {
  return spawnTracked(['-e', 'setInterval(() => {}, 1000)'], ids);
}

/** Can uid 65534 load the built program? null if so, else why not. */
function nobodyCannotRunProgram(): string | null {
  const run = spawnSync(process.execPath, [PROXY_MAIN, '--version'], {
    uid: NOBODY,
    gid: NOBODY,
    cwd: '/',
    env: {},
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (run.status === 0) return null;
  return `uid ${NOBODY} cannot run ${PROXY_MAIN} (exit ${run.status}): ${(run.stderr || String(run.error)).trim().split('\n')[0]}; make ${DIST_ROOT} and node_modules world-readable`;
}

/** POST through a keep-alive agent. */
function post(agent: Agent, port: number, body: string): Promise<{ status: number; head: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/responses',
        agent,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, head: res.rawHeaders.join('\n'), body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A free port in 1000..1023 on 127.0.0.1 (bound and released), or null. */
async function freePrivilegedPort(): Promise<number | null> {
  for (let port = 1000; port <= 1023; port++) {
    const ok = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  return null;
}

function describeScan(what: string, scan: ScanResult): string {
  return `${what}: ${scan.occurrences.length} occurrence(s), ${(scan.bytesScanned / 1048576).toFixed(1)} MiB in ${scan.mappingsRead} mappings, ${scan.skipped.length} skipped${scan.truncated ? ', TRUNCATED' : ''}`;
}

// ---------------------------------------------------------------- the default proxy as root

describe('the real proxy as root, default identity', { concurrency: false, timeout: 60_000 }, () => {
  let upstream: MockUpstream | null = null;
  let proxy: ProxyProcess | null = null;
  let echoed = 0;

  before(async () => {
    if (!IS_ROOT) return;
    let n = 0;
    upstream = await MockUpstream.start((req, res, body) => {
      // Every 4th response echoes the credential, as a misconfigured gateway
      // would: in a header and in an SSE body split inside the key. The
      // supervisor must mask it before it reaches the worker.
      if (++n % 4 !== 0) return jsonOk(req, res, body);
      echoed++;
      const auth = String(req.headers.authorization ?? '');
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-echo-authorization': auth });
      const text = `data: {"echo":"${auth}"}\n\n`;
      const cut = text.indexOf('SECRET');
      res.write(text.slice(0, cut));
      setTimeout(() => res.end(text.slice(cut)), 1);
    });
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
  });

  after(async () => {
    await stopProxy(proxy);
    await upstream?.close();
  });

  const layersTitle = 'worker: a uid of its own, no groups, NoNewPrivs 1, Seccomp 2, CapEff 0; the log lists layers';
  test(layersTitle, { timeout: 15_000 }, async (t: TestContext) => {
    if (!IS_ROOT || proxy === null) return t.skip(NEEDS_ROOT);
    const worker = proxy.workerPid();
    const { uid, gid } = workerIds(worker);
    const range = `${DYNAMIC_ID_FIRST}-${DYNAMIC_ID_LAST}`;
    assert.ok(uid >= DYNAMIC_ID_FIRST && uid <= DYNAMIC_ID_LAST, `worker uid ${uid} outside ${range}`);
    assert.equal(gid, uid);
    assert.equal(lookup('passwd', String(uid)), null, `uid ${uid} has a passwd entry`);
    assert.equal(lookup('group', String(gid)), null, `gid ${gid} has a group entry`);
    assert.deepEqual(otherHolders(uid, worker), [], `other processes hold uid/gid ${uid}`);
    assert.deepEqual(sandboxFields(worker), {
      Uid: four(uid),
      Gid: four(gid),
      Groups: '',
      NoNewPrivs: '1',
      Seccomp: '2',
      CapEff: '0000000000000000',
    });
    // Two filters: the io_uring denial it inherited, and its own allowlist.
    if (procStatus(worker).has('Seccomp_filters')) assert.equal(procStatus(worker).get('Seccomp_filters'), '2');
    // The supervisor itself stays root (it holds the key and binds).
    assert.equal(procStatus(proxy.pid).get('Uid')?.split(/\s+/)[0], '0');

    const report = await waitForRecord(proxy, (r) => r.msg === 'sandbox: every layer in force');
    assert.ok(report !== undefined, `no "sandbox: every layer in force" line in:\n${proxy.stderr}`);
    const expected = {
      worker_uid: `ok: ${four(uid)}`,
      worker_gid: `ok: ${four(gid)}`,
      worker_uid_of_its_own: `ok: uid ${uid}, gid ${gid}: no other process`,
      worker_supplementary_groups: 'ok: none',
      worker_no_new_privs: 'ok: 1',
      worker_dumpable: "ok: 0 (its /proc files are root's)",
      worker_seccomp_filter: `ok: Seccomp: 2, allowlist of ${ALLOWED} calls (${process.arch})`,
      worker_capabilities: 'ok: CapEff 0000000000000000',
    };
    for (const [field, value] of Object.entries(expected))
      assert.equal(report[field], value, `${field} in ${JSON.stringify(report)}`);
    const landlockRow = /^(ok: ABI \d+: reads its code, writes nothing|MISSING: not available: .+)$/;
    assert.match(String(report.worker_landlock), landlockRow);
    for (const field of [
      'worker_permission_model',
      'supervisor_dumpable',
      'supervisor_core_limit',
      'key_memory_locked',
    ]) {
      assert.match(String(report[field]), /^ok: /, `${field} in ${JSON.stringify(report)}`);
    }
    assert.equal(report.supervisor_dumpable, 'ok: 0');
    assert.equal(report.supervisor_core_limit, 'ok: 0/0');
    const chosen = `the worker runs as uid ${uid} of its own`;
    const note = records(proxy).find((r) => typeof r.msg === 'string' && r.msg.includes(chosen));
    assert.ok(note !== undefined, `no note naming the worker's uid in:\n${proxy.stderr}`);
    assert.match(String(note.msg), /running as root without --uid/);
    const lock = `/run/responses-api-proxy/uid-${uid}\\.lock`;
    assert.match(String(note.msg), new RegExp(`from ${range}, held by a lock on ${lock}`));
    assert.match(String(note.msg), /no supplementary groups/);
  });

  const intruderTitle = "as the worker's uid: no ptrace attach, no /proc/<worker>/mem (an ordinary process: both)";
  test(intruderTitle, { timeout: 20_000 }, async (t: TestContext) => {
    if (!IS_ROOT || proxy === null) return t.skip(NEEDS_ROOT);
    const worker = proxy.workerPid();
    const ids = workerIds(worker);
    const control = idleProcess(ids);
    try {
      const started = await waitFor(() => readMappings(control.pid).some((m) => m.name.endsWith('node')), 5_000);
      assert.ok(started, 'control process did not start');
      const controlAccess = intrudeAs(control.pid, ids);
      const why = 'control: the same uid attaches to and reads an ordinary process';
      assert.deepEqual(controlAccess, { ptrace: 'ok', mem: 'ok' }, why);
    } finally {
      await control.stop();
    }
    const access = intrudeAs(worker, ids);
    t.diagnostic(`uid ${ids.uid} on its worker ${worker}: ${JSON.stringify(access)}`);
    assert.match(access.ptrace, /^(EPERM|EACCES)$/, JSON.stringify(access));
    assert.match(access.mem, /^(EPERM|EACCES)$/, JSON.stringify(access));
    assert.equal(statSync(`/proc/${worker}/environ`).uid, 0, "a non-dumpable process's /proc files are root's");
  });

  const readBackTitle = "the worker's filter read back (PTRACE_SECCOMP_GET_FILTER) is the allowlist: no socket, execve";
  test(readBackTitle, { timeout: 20_000 }, async (t: TestContext) => {
    if (!IS_ROOT || proxy === null) return t.skip(NEEDS_ROOT);
    const worker = proxy.workerPid();
    const filters = readSeccompFilters(worker);
    assert.equal(filters.length, 2, `${filters.length} filters`);
    const [inherited, own] = filters as [Buffer, Buffer];
    assert.ok(own.equals(buildSeccompFilter(process.arch)), 'the worker runs the compiled allowlist');
    assert.ok(inherited.equals(buildIoUringDenial(process.arch)), 'and the io_uring denial it inherited');
    const arch = AUDIT_ARCH[process.arch as 'x64' | 'arm64'];
    const nr =
      process.arch === 'x64'
        ? { socket: 41, connect: 42, execve: 59, read: 0 }
        : { socket: 198, connect: 203, execve: 221, read: 63 };
    for (const call of ['socket', 'connect', 'execve'] as const) {
      assert.equal(runFilter(own, { arch, nr: nr[call] }).action, RET_EPERM, call);
    }
    assert.equal(runFilter(own, { arch, nr: nr.read }).action, RET_ALLOW);
    assert.equal(runFilter(inherited, { arch, nr: 425 }).action, RET_ENOSYS, 'io_uring_setup');
    // Still serving after being stopped and released (a 403: the upstream's count stays the next test's).
    assert.equal((await send(proxy.port, { method: 'GET', path: '/' })).status, 403);
  });

  test(
    'as the worker uid, /proc/<supervisor>/mem, environ and maps are refused; core limit 0 0',
    { timeout: 20_000 },
    async (t: TestContext) => {
      if (!IS_ROOT || proxy === null) return t.skip(NEEDS_ROOT);
      const ids = workerIds(proxy.workerPid());
      // Control: the same reader, same uid, reads an ordinary process of its own uid.
      const control = idleProcess(ids);
      assert.ok(
        await waitFor(() => readMappings(control.pid).some((m) => m.name.endsWith('node')), 5_000),
        'control process did not start',
      );
      const controlAccess = procAccessAs(control.pid, ids);
      assert.deepEqual(
        { mem: controlAccess.mem, environ: controlAccess.environ, maps: controlAccess.maps },
        { mem: 'readable', environ: 'readable', maps: 'readable' },
        'control: a same-uid reader must be able to read an ordinary process',
      );
      await control.stop();

      const access = procAccessAs(proxy.pid, ids);
      t.diagnostic(`uid ${ids.uid} on /proc/${proxy.pid}: ${JSON.stringify(access)}`);
      for (const file of ['mem', 'environ', 'maps'])
        assert.match(String(access[file]), /^(EACCES|EPERM)$/, `${file}: ${JSON.stringify(access)}`);
      assert.equal(access.status, 'readable', 'the reader did reach the supervisor (status is world-readable)');

      const limits = readFileSync(`/proc/${proxy.pid}/limits`, 'utf8');
      assert.match(limits, /^Max core file size\s+0\s+0\s+bytes\s*$/m, limits);
      assert.equal(access.limits, 'readable');
    },
  );

  test(
    "after 500 proxied requests the worker's memory holds the key zero times (controls: its own code is found)",
    { timeout: 40_000 },
    async (t: TestContext) => {
      if (!IS_ROOT || proxy === null || upstream === null) return t.skip(NEEDS_ROOT);
      const agent = new Agent({ keepAlive: true, maxSockets: 8 });
      const statuses = new Map<number, number>();
      let leakedToClient = 0;
      try {
        let next = 0;
        const lane = async (): Promise<void> => {
          while (next < 500) {
            const i = next++;
            const reply = await post(
              agent,
              proxy!.port,
              JSON.stringify({ model: 'gpt-test', input: `request ${i} ${'x'.repeat(i % 300)}` }),
            );
            statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
            if (reply.body.includes(KEY_LATIN1) || reply.head.includes(TEST_KEY)) leakedToClient++;
          }
        };
        await Promise.all(Array.from({ length: 8 }, lane));
      } finally {
        agent.destroy();
      }
      assert.deepEqual([...statuses], [[200, 500]]);
      assert.equal(upstream.requests.length, 500);
      assert.ok(
        upstream.requests.every((r) => r.headers.authorization === `Bearer ${TEST_KEY}`),
        'upstream got the key on every request',
      );
      assert.equal(leakedToClient, 0, 'the echoed key reached a client');
      assert.ok(echoed >= 100, `only ${echoed} echoing responses`);

      const worker = proxy.workerPid();
      const started = Date.now();
      const scan = scanProcessMemory(worker, KEY_LATIN1, { includeInaccessible: true, maxBytes: 1024 * 1024 * 1024 });
      const scan16 = scanProcessMemory(worker, KEY_UTF16, { includeInaccessible: true, maxBytes: 1024 * 1024 * 1024 });
      // Control on the same process: text that must be in the worker's heap (the
      // source of its entry module, which V8 keeps) is found by the same scan.
      // V8 keeps a source with any character above U+00FF as UTF-16, else one byte per character.
      const source = readFileSync(WORKER_MAIN, 'utf8');
      const marker = Buffer.from(
        source.slice(Math.floor(source.length / 2), Math.floor(source.length / 2) + 48),
        /[\u0100-\uffff]/.test(source) ? 'utf16le' : 'latin1',
      );
      const control = scanProcessMemory(worker, marker, { includeInaccessible: true, maxBytes: 1024 * 1024 * 1024 });
      t.diagnostic(describeScan(`worker ${worker}, key (latin1)`, scan));
      t.diagnostic(describeScan(`worker ${worker}, key (utf-16)`, scan16));
      t.diagnostic(describeScan(`worker ${worker}, control (its own source)`, control));
      t.diagnostic(`three scans took ${Date.now() - started} ms; ${echoed} responses echoed the key upstream-side`);
      if (scan.skipped.length > 0) t.diagnostic(`skipped: ${JSON.stringify(scan.skipped.slice(0, 5))}`);

      assert.equal(scan.truncated, false);
      assert.ok(scan.bytesScanned > 16 * 1024 * 1024, `only ${scan.bytesScanned} bytes scanned`);
      assert.ok(scan.mappingsRead > 20, `only ${scan.mappingsRead} mappings read`);
      assert.ok(
        control.occurrences.length >= 1,
        "control: the worker's own source was not found, so the scan sees nothing",
      );
      assert.deepEqual(
        scan.occurrences,
        [],
        `the key is in the worker's memory: ${JSON.stringify(scan.occurrences.slice(0, 5), (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`,
      );
      assert.deepEqual(scan16.occurrences, [], "the key (UTF-16) is in the worker's memory");
    },
  );

  test(
    'control: the same scan finds the key in a worker when a client sends it in a body',
    { timeout: 20_000 },
    async (t: TestContext) => {
      if (!IS_ROOT || upstream === null) return t.skip(NEEDS_ROOT);
      // A separate proxy, so the worker under test above is not polluted.
      const other = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
      try {
        const reply = await send(other.port, { body: JSON.stringify({ input: `a client pasted ${TEST_KEY} here` }) });
        assert.equal(reply.status, 200);
        for (let i = 0; i < 20; i++)
          assert.equal((await send(other.port, { body: JSON.stringify({ input: 'y'.repeat(2000) }) })).status, 200);
        const scan = scanProcessMemory(other.workerPid(), KEY_LATIN1, {
          includeInaccessible: true,
          maxBytes: 1024 * 1024 * 1024,
        });
        t.diagnostic(describeScan('worker that relayed the key from a client', scan));
        assert.ok(scan.occurrences.length >= 1, 'the scan does not see bytes that did pass through the worker');
      } finally {
        await stopProxy(other);
      }
    },
  );
});

// ---------------------------------------------------------------- the scanner's positive control

describe('memory scanner positive control', { concurrency: false, timeout: 60_000 }, () => {
  // The key arrives reversed on stdin and is turned around inside the child, so
  // the only forward copies are the one the mode creates: a JS string, a
  // Buffer, or a libsodium secure (mlock'ed) buffer.
  const HOLDER = `
const mode = process.argv[1];
process.stdin.once('data', (chunk) => {
  const n = chunk.indexOf(10);
  const reversed = chunk.subarray(0, n);
  if (mode === 'string') {
    globalThis.held = String.fromCharCode(...Array.from(reversed).reverse());
  } else {
    const b = mode === 'secure' ? require(process.argv[2]).sodium_malloc(n) : Buffer.allocUnsafeSlow(n);
    for (let i = 0; i < n; i++) b[i] = reversed[n - 1 - i];
    globalThis.held = b;
  }
  chunk.fill(0);
  process.stdout.write('ready\\n');
});
setInterval(() => {}, 1000);
`;
  const reversedKey = Buffer.from(TEST_KEY, 'latin1').reverse().toString('latin1');

  for (const mode of ['string', 'buffer', 'secure'] as const) {
    test(
      `finds TEST_KEY held in a ${mode === 'secure' ? 'sodium_malloc (locked) buffer' : mode} of a throwaway node process`,
      { timeout: 20_000 },
      async (t: TestContext) => {
        if (!IS_ROOT) return t.skip("needs root: reading another process's /proc/<pid>/mem");
        const holder = spawnTracked(['-e', HOLDER, mode, SODIUM_NATIVE]);
        try {
          holder.child.stdin?.write(`${reversedKey}\n`); // stdin stays open: the child lives until stopped
          assert.ok(await waitFor(() => holder.stdout.includes('ready'), 5_000), `holder not ready: ${holder.stderr}`);
          const scan = scanProcessMemory(holder.pid, KEY_LATIN1, { includeInaccessible: true });
          t.diagnostic(describeScan(`holder (${mode})`, scan));
          assert.equal(scan.truncated, false);
          assert.ok(scan.occurrences.length >= 1, `the scanner missed the key held in a ${mode}`);
          const locked = scan.occurrences.map((o) => isInLockedMapping(holder.pid, o.address));
          t.diagnostic(
            `at ${scan.occurrences.map((o, i) => `0x${o.address.toString(16)} (${o.mapping}${locked[i] ? ', locked' : ''})`).join('; ')}`,
          );
          // Each occurrence really is the key, at that address.
          const check = readProcMem(holder.pid, scan.occurrences[0]!.address, KEY_LATIN1.length);
          assert.deepEqual(check, KEY_LATIN1);
          if (mode === 'secure') assert.ok(locked.some(Boolean), 'the sodium_malloc copy is not reported as locked');
          else
            assert.ok(
              locked.every((l) => !l),
              'an ordinary copy is reported as locked',
            );
        } finally {
          await holder.stop();
        }
      },
    );
  }
});

/** length bytes at address in pid's memory (root), read directly. */
function readProcMem(pid: number, address: bigint, length: number): Buffer {
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    const out = Buffer.alloc(length);
    readSync(fd, out, 0, length, address);
    return out;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------- identities

describe('--uid / --gid on the real proxy', { concurrency: false, timeout: 60_000 }, () => {
  let upstream: MockUpstream | null = null;
  const proxies: ProxyProcess[] = [];

  before(async () => {
    upstream = await MockUpstream.start();
  });
  after(async () => {
    for (const proxy of proxies) await stopProxy(proxy);
    await upstream?.close();
  });

  async function startWith(args: readonly string[]): Promise<ProxyProcess> {
    const proxy = ProxyProcess.spawn({ args: [...args, '--upstream-url', upstream!.url()] });
    proxies.push(proxy);
    await proxy.waitForListening(10_000);
    return proxy;
  }

  test(
    '--uid 0 keeps root for the worker, with a warning; the rest of the sandbox stays',
    { timeout: 15_000 },
    async (t: TestContext) => {
      if (!IS_ROOT) return t.skip(NEEDS_ROOT);
      const proxy = await startWith(['--uid', '0']);
      const fields = sandboxFields(proxy.workerPid());
      assert.equal(fields.Uid, four(0));
      assert.equal(fields.Gid, four(0));
      assert.equal(fields.Groups, '');
      assert.equal(fields.NoNewPrivs, '1');
      assert.equal(fields.Seccomp, '2');
      const warning = await waitForRecord(
        proxy,
        (r) => r.level === 40 && typeof r.msg === 'string' && r.msg.includes('--uid 0'),
      );
      assert.ok(warning !== undefined, `no --uid 0 warning in:\n${proxy.stderr}`);
      assert.match(String(warning.msg), /keeps root/);
      assert.ok(
        !records(proxy).some((r) => typeof r.msg === 'string' && /worker runs as nobody/.test(r.msg)),
        'says nobody although --uid 0',
      );
      assert.equal((await send(proxy.port, { body: '{}' })).status, 200);
    },
  );

  test('--uid/--gid by name resolve through the system databases', { timeout: 20_000 }, async (t: TestContext) => {
    if (!IS_ROOT) return t.skip(NEEDS_ROOT);
    const daemon = lookup('passwd', 'daemon');
    const nobody = lookup('passwd', 'nobody');
    const daemonGroup = lookup('group', 'daemon');
    if (daemon === null || nobody === null || daemonGroup === null)
      return t.skip('this system has no daemon/nobody user or daemon group');

    // A user alone: its uid and its primary group from passwd.
    const a = await startWith(['--uid', 'daemon']);
    const fa = sandboxFields(a.workerPid());
    assert.equal(fa.Uid, four(daemon.id));
    assert.equal(fa.Gid, four(daemon.gid));
    assert.equal(fa.Groups, '');
    assert.equal(fa.CapEff, '0000000000000000');
    assert.equal((await send(a.port, { body: '{}' })).status, 200);

    // A user and a group, both by name.
    const b = await startWith(['--uid', 'nobody', '--gid', 'daemon']);
    const fb = sandboxFields(b.workerPid());
    assert.equal(fb.Uid, four(nobody.id));
    assert.equal(fb.Gid, four(daemonGroup.gid));
    assert.equal(fb.Groups, '');
    assert.equal(fb.NoNewPrivs, '1');
    assert.equal(fb.Seccomp, '2');
    const report = await waitForRecord(b, (r) => typeof r.msg === 'string' && r.msg.startsWith('sandbox: '));
    assert.equal(report?.worker_gid, `ok: ${four(daemonGroup.gid)}`);
    assert.equal((await send(b.port, { body: '{}' })).status, 200);
  });

  test('a port below 1024 works as root, the worker under its own uid', { timeout: 15_000 }, async (t: TestContext) => {
    if (!IS_ROOT) return t.skip(NEEDS_ROOT);
    const port = await freePrivilegedPort();
    if (port === null) return t.skip('no free port in 1000..1023 on 127.0.0.1');
    const proxy = await startWith(['--port', String(port)]);
    assert.equal(proxy.port, port);
    const worker = proxy.workerPid();
    assert.ok(workerIds(worker).uid >= DYNAMIC_ID_FIRST, `worker uid ${workerIds(worker).uid}`);
    const reply = await send(port, { body: JSON.stringify({ model: 'm', input: 'low port' }) });
    assert.equal(reply.status, 200);
    assert.equal(JSON.parse(reply.body.toString()).id, 'resp_1');
    assert.equal(upstream!.requests.at(-1)?.headers.authorization, `Bearer ${TEST_KEY}`);
  });
});

// ---------------------------------------------------------------- --check-sandbox

describe('uids of their own', { concurrency: false, timeout: 60_000 }, () => {
  test('two proxies started at once: two uids, each held by no other process', { timeout: 30_000 }, async (t) => {
    if (!IS_ROOT) return t.skip(NEEDS_ROOT);
    const upstream = await MockUpstream.start();
    const proxies = [0, 1].map(() => ProxyProcess.spawn({ args: ['--upstream-url', upstream.url()] }));
    try {
      await Promise.all(proxies.map((proxy) => proxy.waitForListening(15_000)));
      const workers = proxies.map((proxy) => proxy.workerPid());
      const uids = workers.map((pid) => workerIds(pid).uid);
      t.diagnostic(`worker uids ${uids.join(', ')}`);
      assert.notEqual(uids[0], uids[1]);
      for (const [i, uid] of uids.entries()) {
        assert.ok(uid >= DYNAMIC_ID_FIRST && uid <= DYNAMIC_ID_LAST, `uid ${uid}`);
        assert.deepEqual(otherHolders(uid, workers[i] as number), []);
      }
      for (const proxy of proxies) assert.equal((await send(proxy.port, { body: '{}' })).status, 200);
    } finally {
      for (const proxy of proxies) await stopProxy(proxy);
      await upstream.close();
    }
  });
});

describe('code run inside the real worker', { concurrency: false, timeout: 60_000 }, () => {
  const title = 'cannot open a TCP or UNIX connection, exec, reach another process, or open files outside its set';
  test(title, { timeout: 30_000 }, async () => {
    const upstream = await MockUpstream.start();
    const proxy = await ProxyProcess.start({ main: CONTAINED_SUPERVISOR, args: ['--upstream-url', upstream.url()] });
    try {
      const reported = await waitFor(() => /^CONTAINED /m.test(proxy.stderr), 15_000);
      assert.ok(reported, `no CONTAINED line in:\n${proxy.stderr}`);
      const results = JSON.parse(/^CONTAINED (.*)$/m.exec(proxy.stderr)?.[1] ?? '{}') as Record<string, string>;
      // Past the permission model (koffi, as an attacker would): the kernel says no.
      const denied = {
        socketInet: 'EPERM',
        socketInetUdp: 'EPERM',
        socketUnix: 'EPERM',
        socketNetlink: 'EPERM',
        socketpair: 'EPERM',
        fork: 'EPERM',
        execve: 'EPERM',
        ptraceOther: 'EPERM',
        processVmReadv: 'EPERM',
        killOther: 'EPERM',
        ioUringSetup: 'EPERM',
        dumpableAgain: 'EPERM',
        unshareUser: 'EPERM',
      };
      const all = JSON.stringify(results);
      for (const [attempt, code] of Object.entries(denied)) assert.equal(results[attempt], code, `${attempt}: ${all}`);
      assert.equal(results.openInside, 'ok', `control, its own code: ${all}`);
      const landlock = landlockSupport().abi > 0;
      if (landlock) {
        for (const attempt of ['openOutside', 'createInside']) {
          assert.equal(results[attempt], 'EACCES', `${attempt}: ${all}`);
        }
      }
      // Through Node: the permission model or the kernel, whichever comes first.
      const throughNode = ['nodeTcpConnect', 'nodeUnixConnect', 'nodeExec', 'nodeReadOutside', 'nodeReadOutsideAsync'];
      for (const attempt of [...throughNode, 'nodeWriteInside']) {
        assert.match(results[attempt] ?? '', /^(EPERM|EACCES|ERR_ACCESS_DENIED)$/, `${attempt}: ${all}`);
      }
      // And it still serves.
      assert.equal((await send(proxy.port, { body: '{}' })).status, 200);
    } finally {
      await stopProxy(proxy);
      await upstream.close();
    }
  });
});

describe('--check-sandbox', { timeout: 30_000 }, () => {
  test(
    'prints every layer as a table and exits 0 as root, without reading a key',
    { timeout: 20_000 },
    async (t: TestContext) => {
      if (!IS_ROOT) return t.skip(NEEDS_ROOT);
      const landlock = landlockSupport();
      if ('reason' in landlock) return t.skip(`no Landlock here (${landlock.reason}): the check says so and exits 1`);
      // stdin open and empty: a check that waited for a key would never end.
      const check = spawnTracked([PROXY_MAIN, '--check-sandbox']);
      const ended = await check.waitExit(10_000);
      assert.ok(
        ended,
        `--check-sandbox did not exit within 10 s with stdin open (is it reading a key?)\n${check.stderr}`,
      );
      assert.deepEqual(check.exit, { code: 0, signal: null }, `stdout:\n${check.stdout}\nstderr:\n${check.stderr}`);
      const rows = lines(check.stdout);
      const layers: Array<[string, RegExp]> = [
        ['worker uid', /(6[1-5]\d{3}) \1 \1 \1$/],
        ['worker gid', /(6[1-5]\d{3}) \1 \1 \1$/],
        ['worker uid of its own', /uid 6[1-5]\d{3}, gid 6[1-5]\d{3}: no other process$/],
        ['worker supplementary groups', /none$/],
        ['worker no_new_privs', /1$/],
        ['worker dumpable', /0 \(its \/proc files are root's\)$/],
        ['worker seccomp filter', new RegExp(`Seccomp: 2, allowlist of ${ALLOWED} calls \\(${process.arch}\\)$`)],
        ['worker landlock', /ABI \d+: reads its code, writes nothing$/],
        ['worker capabilities', /CapEff 0{16}$/],
        ['worker permission model', /permission/],
        ['supervisor dumpable', /0$/],
        ['supervisor core limit', /0\/0$/],
        ['key memory locked', /VmLck [1-9]\d* kB$/],
      ];
      for (const [layer, value] of layers) {
        const row = rows.find((r) => r.replace(/^\S+\s+/, '').startsWith(`${layer} `));
        assert.ok(row !== undefined, `no row for "${layer}" in:\n${check.stdout}`);
        assert.match(row, /^ok\s/, row);
        assert.match(row, value, row);
      }
      assert.equal(rows.at(-1), 'every layer is in force');
      assert.ok(!check.stdout.includes('listening'), 'no listening line on stdout');
      assert.ok(!childPids(check.pid).length, 'worker left behind');
    },
  );
});

// ---------------------------------------------------------------- the proxy started as a normal user

describe('the real proxy started as a non-root user (uid 65534)', { concurrency: false, timeout: 60_000 }, () => {
  const ids = { uid: NOBODY, gid: NOBODY };
  let unusable: string | null = null;

  before(() => {
    if (IS_ROOT) unusable = nobodyCannotRunProgram();
  });

  test(
    '--uid root fails: exit 1, one line saying only root can switch users',
    { timeout: 15_000 },
    async (t: TestContext) => {
      if (!IS_ROOT) return t.skip('needs root: to start the proxy as another (non-root) user');
      if (unusable !== null) return t.skip(unusable);
      for (const [args, what] of [
        [['--uid', 'root'], /only root can switch users/],
        [['--gid', 'root'], /only root can switch groups/],
      ] as const) {
        const proxy = spawnTracked([PROXY_MAIN, ...args], ids, `${TEST_KEY}\n`);
        assert.ok(await proxy.waitExit(10_000), `${args.join(' ')}: still running after 10 s\n${proxy.stderr}`);
        assert.deepEqual(proxy.exit, { code: 1, signal: null }, proxy.stderr);
        const out = lines(proxy.stderr);
        assert.equal(out.length, 1, `expected one line, got:\n${proxy.stderr}`);
        assert.match(out[0]!, what);
        assert.match(out[0]!, /^Error: /);
        assert.equal(proxy.stdout, '');
        assert.ok(!proxy.stderr.includes(TEST_KEY));
      }
    },
  );

  test(
    "a same-uid process (what a hijacked worker is) cannot read the supervisor's mem, environ or maps",
    { timeout: 20_000 },
    async (t: TestContext) => {
      if (!IS_ROOT) return t.skip('needs root: to start the proxy and a reader as another user');
      if (unusable !== null) return t.skip(unusable);
      const upstream = await MockUpstream.start();
      const proxy = spawnTracked([PROXY_MAIN, '--upstream-url', upstream.url()], ids);
      proxy.child.stdin?.write(`${TEST_KEY}\n`);
      try {
        assert.ok(
          await waitFor(() => /listening on 127\.0\.0\.1:\d+/.test(proxy.stderr) || proxy.exit !== null, 10_000),
          `not listening:\n${proxy.stderr}`,
        );
        const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(proxy.stderr)?.[1]);
        assert.ok(port > 0, proxy.stderr);
        const workers = childPids(proxy.pid);
        assert.equal(workers.length, 1);
        const worker = sandboxFields(workers[0]!);
        assert.equal(worker.Uid, four(NOBODY));
        assert.equal(worker.NoNewPrivs, '1');
        assert.equal(worker.Seccomp, '2');
        assert.equal(worker.CapEff, '0000000000000000');
        assert.equal(sandboxFields(proxy.pid).Uid, four(NOBODY));
        assert.equal((await send(port, { body: '{}' })).status, 200);

        const control = idleProcess(ids);
        assert.ok(
          await waitFor(() => readMappings(control.pid).some((m) => m.name.endsWith('node')), 5_000),
          'control process did not start',
        );
        const controlAccess = procAccessAs(control.pid, ids);
        assert.equal(controlAccess.mem, 'readable', `control: ${JSON.stringify(controlAccess)}`);
        assert.equal(controlAccess.environ, 'readable');
        await control.stop();

        const access = procAccessAs(proxy.pid, ids);
        t.diagnostic(`uid ${NOBODY} on its own-uid supervisor ${proxy.pid}: ${JSON.stringify(access)}`);
        for (const file of ['mem', 'environ', 'maps'])
          assert.match(String(access[file]), /^(EACCES|EPERM)$/, `${file}: ${JSON.stringify(access)}`);
        assert.match(readFileSync(`/proc/${proxy.pid}/limits`, 'utf8'), /^Max core file size\s+0\s+0\s+bytes\s*$/m);
      } finally {
        await proxy.stop();
        await upstream.close();
      }
    },
  );
});

// ---------------------------------------------------------------- program files the worker cannot read

describe('program files the worker cannot read', { timeout: 30_000 }, () => {
  test(
    'a copy installed under a 0700 root directory: exit 1, one line naming it and what to do',
    { timeout: 20_000 },
    async (t: TestContext) => {
      if (!IS_ROOT) return t.skip(NEEDS_ROOT);
      const hidden = mkdtempSync(join(tmpdir(), `rap-0700-${randomBytes(3).toString('hex')}-`));
      try {
        chmodSync(hidden, 0o700);
        const pkg = join(hidden, 'pkg');
        mkdirSync(join(pkg, 'dist'), { recursive: true });
        cpSync(join(DIST_ROOT, 'src'), join(pkg, 'dist', 'src'), { recursive: true });
        copyFileSync(join(PACKAGE_ROOT, 'package.json'), join(pkg, 'package.json'));
        symlinkSync(join(PACKAGE_ROOT, 'node_modules'), join(pkg, 'node_modules'), 'dir');
        const main = join(pkg, 'dist', 'src', 'supervisor', 'main.js');

        // The copy itself works for root: --version loads every module.
        const version = spawnSync(process.execPath, [main, '--version'], { encoding: 'utf8', timeout: 10_000 });
        assert.equal(version.status, 0, `the copy does not run at all: ${version.stderr}`);

        const proxy = spawnTracked([main], {}, `${TEST_KEY}\n`);
        assert.ok(await proxy.waitExit(10_000), `still running after 10 s:\n${proxy.stderr}`);
        assert.deepEqual(proxy.exit, { code: 1, signal: null }, proxy.stderr);
        const out = lines(proxy.stderr);
        assert.equal(out.length, 1, `expected one line, got:\n${proxy.stderr}`);
        const line = out[0]!;
        assert.match(line, /^Error: /);
        assert.ok(line.includes(hidden), `does not name the blocked directory ${hidden}: ${line}`);
        assert.match(line, /uid 6[1-5]\d{3} cannot read/);
        assert.match(line, /world-readable/);
        assert.match(line, /--uid/);
        assert.ok(!/listening/.test(proxy.stderr));
        assert.ok(!proxy.stderr.includes(TEST_KEY));
      } finally {
        rmSync(hidden, { recursive: true, force: true });
      }
    },
  );
});

test('memScan parses /proc/<pid>/maps of this process', () => {
  const mappings = readMappings(process.pid);
  assert.ok(mappings.length > 10, `${mappings.length} mappings`);
  assert.ok(mappings.some((m) => m.perms.startsWith('r') && m.name.endsWith('node')));
  assert.ok(mappings.every((m) => m.end > m.start));
});
