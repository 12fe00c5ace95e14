// The hardening layers, proved from outside the process that installs them:
// a throwaway child (fixtures/sandboxProbe.js) runs the real module on itself
// and waits on stdin while this test reads /proc/<pid>/... and, as root, tries
// to read its secrets as another uid. Root-only checks skip with the reason.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ProxyError } from '../src/shared/errors.js';
import { errnoName } from '../src/shared/libc.js';
import {
  NOBODY_ID,
  WorkerIdentityError,
  findUnreadablePath,
  permissionFlagFor,
  permissionModelFlags,
  resolveGroup,
  resolveUser,
  resolveWorkerIdentity,
  unreadableMessage,
} from '../src/supervisor/startup/workerIdentity.js';
import type { IdLease } from '../src/supervisor/startup/workerIdLease.js';
import { landlockSupport } from '../src/shared/landlock.js';
import { allowedSyscalls } from '../src/shared/seccompFilter.js';
import { WORKER_SANDBOX_READ_PATHS, type SandboxLayers } from '../src/worker/sandbox.js';

const PROBE = fileURLToPath(new URL('./fixtures/sandboxProbe.js', import.meta.url));
const DIST_SRC = fileURLToPath(new URL('../src/', import.meta.url));
const KOFFI_DIR = dirname(fileURLToPath(import.meta.resolve('koffi/package.json')));
const IS_ROOT = process.getuid?.() === 0;
const NEEDS_ROOT = 'needs root: run the suite as root (as CI does) to check this from another uid';
const linuxOnly = process.platform === 'linux' ? {} : { skip: `Linux only (this is ${process.platform})` };

// ---------------------------------------------------------------- helpers

interface ProbeEvent {
  readonly event: string;
  readonly [key: string]: unknown;
}

/** One sandboxProbe child, ended by pid in stop() whatever happens. */
class Probe {
  readonly events: ProbeEvent[] = [];
  stderr = '';
  exitCode: number | null | undefined = undefined;
  private buffered = '';
  private readonly waiters = new Set<() => void>();

  private constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.buffered += chunk;
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        try {
          this.events.push(JSON.parse(line) as ProbeEvent);
        } catch {
          this.events.push({ event: 'garbage', line });
        }
      }
      this.wake();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    child.stdin?.on('error', () => {});
    child.on('exit', (code) => {
      this.exitCode = code;
      this.wake();
    });
  }

  static start(mode: string, args: readonly string[] = [], ids: { uid?: number; gid?: number } = {}): Probe {
    const child = spawn(process.execPath, [PROBE, mode, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {},
      cwd: '/',
      ...ids,
    });
    return new Probe(child);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  private wake(): void {
    for (const waiter of this.waiters) waiter();
  }

  /** The first event named `name`, waiting at most timeoutMs. */
  async waitFor(name: string, timeoutMs = 15_000): Promise<ProbeEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name);
      if (found !== undefined) return found;
      const failed = this.events.find((e) => e.event === 'failed');
      if (failed !== undefined && name !== 'failed')
        throw new Error(`probe failed: ${JSON.stringify(failed)}\n${this.stderr}`);
      if (this.exitCode !== undefined)
        throw new Error(`probe exited ${this.exitCode} before "${name}":\n${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`probe sent no "${name}" within ${timeoutMs} ms:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }

  /** Ask it to exit; SIGKILL by pid if it has not within 5 s. */
  async stop(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.stdin?.end('exit\n');
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), 5_000)));
    const result = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    if (result === 'timeout' && this.exitCode === undefined) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    }
  }
}

const probes: Probe[] = [];

function startProbe(mode: string, args: readonly string[] = [], ids: { uid?: number; gid?: number } = {}): Probe {
  const probe = Probe.start(mode, args, ids);
  probes.push(probe);
  return probe;
}

after(async () => {
  for (const probe of probes) await probe.stop();
});

/** "Name:\tvalue" lines of a /proc status file. */
function parseStatus(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

function procStatus(path: string): Map<string, string> {
  return parseStatus(readFileSync(path, 'utf8'));
}

/** Run `code` in a fresh `node -e` as uid/gid; its stdout (bounded: killed after 15 s). */
function runNodeAs(
  uid: number | undefined,
  gid: number | undefined,
  code: string,
  args: readonly string[] = [],
): string {
  const result = spawnSync(process.execPath, [...args, '-e', code], {
    ...(uid === undefined ? {} : { uid }),
    ...(gid === undefined ? {} : { gid }),
    env: {},
    cwd: '/',
    encoding: 'utf8',
    timeout: 15_000,
    killSignal: 'SIGKILL',
  });
  assert.equal(result.error, undefined, `node -e failed to run: ${String(result.error)}`);
  assert.equal(result.status, 0, `node -e exited ${result.status}: ${result.stderr}`);
  return result.stdout.trim();
}

/** What a process as uid/gid gets when reading /proc/<pid>/environ and opening /proc/<pid>/mem. */
function secretsAccess(pid: number, uid?: number, gid?: number): { environ: string; mem: string } {
  const code = `
    const fs = require('node:fs');
    const out = {};
    try { fs.readFileSync('/proc/${pid}/environ'); out.environ = 'readable'; } catch (e) { out.environ = e.code; }
    try { fs.closeSync(fs.openSync('/proc/${pid}/mem', 'r')); out.mem = 'readable'; } catch (e) { out.mem = e.code; }
    console.log(JSON.stringify(out));`;
  return JSON.parse(runNodeAs(uid, gid, code)) as { environ: string; mem: string };
}

/** Whether uid 65534 can read the compiled program and koffi (so a probe can run as nobody). */
function nobodyCanRunProbes(): string | null {
  const found = findUnreadablePath([PROBE, DIST_SRC, KOFFI_DIR], NOBODY_ID, NOBODY_ID);
  return found === null ? null : unreadableMessage({ uid: NOBODY_ID, userName: 'nobody' }, found);
}

// ---------------------------------------------------------------- the sandbox, from outside

/** A TCP and a UNIX listener on loopback that count the connections they get. */
interface Listeners {
  readonly tcpPort: number;
  readonly unixPath: string;
  connections(): number;
  close(): Promise<void>;
}

async function listeners(dir: string): Promise<Listeners> {
  let count = 0;
  const tcp = createServer((socket) => {
    count++;
    socket.destroy();
  });
  const unix = createServer((socket) => {
    count++;
    socket.destroy();
  });
  const unixPath = join(dir, 'probe.sock');
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  await new Promise<void>((resolve) => unix.listen(unixPath, resolve));
  chmodSync(unixPath, 0o777);
  return {
    tcpPort: (tcp.address() as AddressInfo).port,
    unixPath,
    connections: () => count,
    close: async () => {
      await new Promise((resolve) => tcp.close(resolve));
      await new Promise((resolve) => unix.close(resolve));
    },
  };
}

describe('worker sandbox seen from /proc', { ...linuxOnly, concurrency: false, timeout: 120_000 }, () => {
  test('every layer on every thread (TSYNC), and what code in it then cannot do', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rap-probe-'));
    chmodSync(dir, 0o755);
    const outsideFile = join(dir, 'outside.txt');
    writeFileSync(outsideFile, 'not for the worker', { mode: 0o644 });
    const servers = await listeners(dir);
    try {
      const targets = {
        tcpPort: servers.tcpPort,
        unixPath: servers.unixPath,
        outsideFile,
        insideFile: PROBE,
        readOnlyDir: dirname(PROBE),
        otherPid: process.pid,
      };
      const capabilities = IS_ROOT ? ['--allow-capabilities'] : [];
      const probe = startProbe('sandbox', [...capabilities, `--targets=${JSON.stringify(targets)}`]);
      const installed = await probe.waitFor('installed');
      const layers = installed.layers as SandboxLayers;
      assert.equal(layers.noNewPrivs, true);
      assert.equal(layers.dumpable, 0);
      assert.equal(layers.seccomp, true);
      assert.equal(layers.seccompMode, 2);
      assert.equal(layers.allowedSyscalls, allowedSyscalls(process.arch).length);
      assert.deepEqual(layers.missing, []);
      const landlock = landlockSupport();
      assert.equal(layers.landlock.abi, landlock.abi);
      assert.equal(layers.landlock.inForce, landlock.abi > 0);

      const results = (await probe.waitFor('attempts')).results as Record<string, string>;
      const denied = [
        'nodeTcpConnect',
        'nodeUnixConnect',
        'socketInet',
        'socketInetUdp',
        'socketUnix',
        'socketNetlink',
        'socketpair',
        'nodeExec',
        'fork',
        'execve',
        'ptraceOther',
        'processVmReadv',
        'killOther',
        'ioUringSetup',
        'dumpableAgain',
        'unshareUser',
      ];
      for (const attempt of denied) assert.equal(results[attempt], 'EPERM', `${attempt}: ${JSON.stringify(results)}`);
      assert.equal(servers.connections(), 0, 'a connection reached a listener');
      assert.equal(results.openInside, 'ok', 'control: reading its own code works');
      assert.equal(results.nodeReadInside, 'ok');
      if (landlock.abi > 0) {
        for (const attempt of ['nodeReadOutside', 'openOutside', 'nodeWriteInside', 'createInside']) {
          assert.equal(results[attempt], 'EACCES', `${attempt}: ${JSON.stringify(results)}`);
        }
        // libuv's pool starts after Landlock on Node 22 and later; Node 20 starts it before any
        // JavaScript runs, so there only the permission model stands in the way of async reads.
        const asyncRead = Number(process.versions.node.split('.')[0]) >= 22 ? 'EACCES' : 'ok';
        assert.equal(results.nodeReadOutsideAsync, asyncRead, JSON.stringify(results));
      }
      await probe.waitFor('thread');
      await probe.waitFor('waiting');

      const status = procStatus(`/proc/${probe.pid}/status`);
      assert.equal(status.get('NoNewPrivs'), '1');
      assert.equal(status.get('Seccomp'), '2');
      // The io_uring denial it inherited and its own filter.
      if (status.has('Seccomp_filters')) assert.equal(status.get('Seccomp_filters'), '2');
      // The kernel hands a non-dumpable process's /proc files to root.
      if (IS_ROOT) assert.equal(statSync(`/proc/${probe.pid}/environ`).uid, 0);

      // TSYNC: the threads Node had before the filter, and the ones started after it.
      const tasks = readdirSync(`/proc/${probe.pid}/task`).map(Number);
      const before = installed.tasksBefore as number[];
      assert.ok(before.length > 1, `Node ran ${before.length} thread(s) before install`);
      const stillThere = before.filter((tid) => tasks.includes(tid));
      assert.ok(stillThere.length > 1, 'threads that existed before the filter are still alive');
      assert.ok(
        tasks.some((tid) => !before.includes(tid)),
        'a thread started after install is alive',
      );
      for (const tid of tasks) {
        let task: Map<string, string>;
        try {
          task = procStatus(`/proc/${probe.pid}/task/${tid}/status`);
        } catch {
          continue; // a thread that ended meanwhile
        }
        assert.equal(task.get('Seccomp'), '2', `thread ${tid} (${task.get('Name')}) is filtered`);
        assert.equal(task.get('NoNewPrivs'), '1', `thread ${tid} (${task.get('Name')}) has no_new_privs`);
      }
      await probe.stop();
    } finally {
      await servers.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('refuses the filter while libuv holds an io_uring instance (it would bypass it)', async (t: TestContext) => {
    const countRings = `const fs = require('node:fs');
      const link = (fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd); } catch { return ''; } };
      const ring = (fd) => link(fd) === 'anon_inode:[io_uring]';
      console.log(fs.readdirSync('/proc/self/fd').filter(ring).length);`;
    if (runNodeAs(undefined, undefined, countRings) === '0') {
      const versions = `Node ${process.versions.node} (libuv ${process.versions.uv})`;
      return t.skip(`${versions} opens no io_uring instance at startup here`);
    }
    const probe = startProbe('sandbox', ['--keep-io-uring', ...(IS_ROOT ? ['--allow-capabilities'] : [])]);
    const error = (await probe.waitFor('failed')).error as { name: string; layer: string; message: string };
    assert.equal(error.name, 'SandboxError');
    assert.equal(error.layer, 'seccomp');
    assert.match(error.message, /io_uring instances are open \(fd \d+/);
    await probe.stop();
  });

  test('fails closed on capabilities unless allowed (as root)', async (t: TestContext) => {
    if (!IS_ROOT) {
      // Not root: CapEff is 0, so the strict call succeeds.
      const probe = startProbe('sandbox-strict');
      const installed = await probe.waitFor('installed');
      assert.deepEqual((installed.layers as { missing: unknown[] }).missing, []);
      await probe.stop();
      return t.skip(`${NEEDS_ROOT} (the capability refusal needs a non-zero CapEff)`);
    }
    const strict = startProbe('sandbox-strict');
    const failed = await strict.waitFor('failed');
    const error = failed.error as { name: string; layer: string; message: string };
    assert.equal(error.name, 'SandboxError');
    assert.equal(error.layer, 'capabilities');
    assert.match(error.message, /CapEff is [0-9a-f]+, not 0/);
    assert.match(error.message, /--allow-weaker-sandbox/);
    await strict.stop();

    const weaker = startProbe('sandbox-weaker');
    const installed = await weaker.waitFor('installed');
    const layers = installed.layers as SandboxLayers;
    assert.equal(layers.seccomp, true);
    assert.equal(layers.noNewPrivs, true);
    assert.deepEqual(
      layers.missing.map((m) => m.layer),
      ['capabilities'],
    );
    await weaker.stop();
  });

  test('as uid 65534: every layer in force, CapEff 0, no groups (as root)', async (t: TestContext) => {
    if (!IS_ROOT) return t.skip(NEEDS_ROOT);
    const unreadable = nobodyCanRunProbes();
    if (unreadable !== null) return t.skip(`nobody cannot run the probe here: ${unreadable}`);
    const probe = startProbe('sandbox-strict', [], { uid: NOBODY_ID, gid: NOBODY_ID });
    const installed = await probe.waitFor('installed');
    const layers = installed.layers as SandboxLayers;
    assert.deepEqual(layers.missing, []);
    assert.equal(layers.noCapabilities, true);
    await probe.waitFor('waiting');
    const status = procStatus(`/proc/${probe.pid}/status`);
    assert.equal(status.get('Uid'), '65534\t65534\t65534\t65534');
    assert.equal(status.get('Gid'), '65534\t65534\t65534\t65534');
    assert.equal(status.get('Groups'), '');
    assert.match(status.get('CapEff') ?? '', /^0+$/);
    assert.equal(status.get('NoNewPrivs'), '1');
    assert.equal(status.get('Seccomp'), '2');
    // Same uid as the reader, yet neither its memory nor its environment: not dumpable.
    assert.deepEqual(secretsAccess(probe.pid, NOBODY_ID, NOBODY_ID), { environ: 'EACCES', mem: 'EACCES' });
    await probe.stop();
  });

  test('works under the permission model with the reads it documents', async (t: TestContext) => {
    const model = permissionModelFlags(process.versions.node, [DIST_SRC, KOFFI_DIR, ...WORKER_SANDBOX_READ_PATHS], []);
    if (!model.supported) return t.skip(`permission model unavailable: ${model.reason}`);
    const sandboxUrl = new URL('../src/worker/sandbox.js', import.meta.url).href;
    const code = `
      const { beginWorkerSandbox } = await import(${JSON.stringify(sandboxUrl)});
      const read = ${JSON.stringify([DIST_SRC, KOFFI_DIR, ...WORKER_SANDBOX_READ_PATHS])};
      beginWorkerSandbox({ allowCapabilities: true, files: { read, write: [] } });
      console.log('begun');`;
    assert.equal(runNodeAs(undefined, undefined, code, [...model.flags, '--input-type=module']), 'begun');
  });
});

// ---------------------------------------------------------------- supervisor hardening

describe('supervisor hardening seen from /proc', { ...linuxOnly, concurrency: false, timeout: 120_000 }, () => {
  test('core limit 0/0 in /proc/<pid>/limits; report read back', async () => {
    const probe = startProbe('harden');
    const hardened = await probe.waitFor('hardened');
    assert.deepEqual(hardened.report, { dumpable: 0, coreLimitSoft: '0', coreLimitHard: '0', missing: [] });
    await probe.waitFor('waiting');
    const limits = readFileSync(`/proc/${probe.pid}/limits`, 'utf8');
    const core = /^Max core file size\s+(\S+)\s+(\S+)/m.exec(limits);
    assert.ok(core !== null, limits);
    assert.equal(core[1], '0');
    assert.equal(core[2], '0');
    await probe.stop();
  });

  test('uid 65534 can read neither environ nor mem of a hardened root process (as root)', async (t: TestContext) => {
    if (!IS_ROOT) return t.skip(NEEDS_ROOT);
    const probe = startProbe('harden');
    await probe.waitFor('waiting');
    assert.deepEqual(secretsAccess(probe.pid, NOBODY_ID, NOBODY_ID), { environ: 'EACCES', mem: 'EACCES' });
    await probe.stop();
  });

  test('non-dumpable is what stops a same-uid reader (control: an unhardened twin is readable)', async (t: TestContext) => {
    // As root both sides run as nobody; otherwise as ourselves. Either way
    // reader and target share a uid, so only PR_SET_DUMPABLE 0 stands between them.
    let ids: { uid?: number; gid?: number } = {};
    if (IS_ROOT) {
      const unreadable = nobodyCanRunProbes();
      if (unreadable !== null) return t.skip(`nobody cannot run the probe here: ${unreadable}`);
      ids = { uid: NOBODY_ID, gid: NOBODY_ID };
    }
    const control = startProbe('idle', [], ids);
    const hardened = startProbe('harden', [], ids);
    await control.waitFor('waiting');
    await hardened.waitFor('waiting');
    assert.deepEqual(secretsAccess(control.pid, ids.uid, ids.gid), { environ: 'readable', mem: 'readable' });
    assert.deepEqual(secretsAccess(hardened.pid, ids.uid, ids.gid), { environ: 'EACCES', mem: 'EACCES' });
    // The kernel hands a non-dumpable process's /proc files to root.
    assert.equal(statSync(`/proc/${hardened.pid}/environ`).uid, 0);
    assert.equal(statSync(`/proc/${control.pid}/environ`).uid, ids.uid ?? process.getuid?.());
    await control.stop();
    await hardened.stop();
  });
});

// ---------------------------------------------------------------- worker identity

describe('worker identity', linuxOnly, () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'rap-identity-'));
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  test('resolves users by name and number through the passwd database', () => {
    assert.deepEqual(resolveUser('root'), { uid: 0, name: 'root', primaryGid: 0 });
    assert.equal(resolveUser('0').name, 'root');
    const nobody = resolveUser('nobody');
    assert.equal(nobody.uid, NOBODY_ID);
    assert.equal(nobody.name, 'nobody');
    assert.equal(resolveUser('65534').uid, NOBODY_ID);
    assert.equal(resolveUser('65534').name, 'nobody');
    assert.deepEqual(resolveUser('4000000000'), { uid: 4000000000, name: null, primaryGid: null });
  });

  test('unknown names and bad numbers are clear errors', () => {
    assert.throws(
      () => resolveUser('no-such-user-rap'),
      (err: unknown) => {
        assert.ok(err instanceof WorkerIdentityError && err instanceof ProxyError);
        assert.equal(
          err.message,
          '--uid no-such-user-rap: no such user (not in the passwd database; pass a name that exists or a number)',
        );
        assert.equal(err.exitCode, 2);
        return true;
      },
    );
    assert.throws(() => resolveGroup('no-such-group-rap'), /--gid no-such-group-rap: no such group/);
    assert.throws(() => resolveUser('99999999999'), /invalid uid 99999999999: out of range/);
    assert.throws(() => resolveUser(''), /--uid needs a name or a number/);
  });

  test('resolves groups by name and number', () => {
    assert.deepEqual(resolveGroup('root'), { gid: 0, name: 'root' });
    assert.equal(resolveGroup('65534').gid, NOBODY_ID);
  });

  test('root leases a uid of its own; --uid 0 warns; a non-root supervisor cannot switch', () => {
    let leases = 0;
    const lease = (): IdLease => {
      leases++;
      return { id: 61190, lockFile: '/run/responses-api-proxy/uid-61190.lock' };
    };
    const asRoot = resolveWorkerIdentity({}, { uid: 0, gid: 0 }, lease);
    assert.deepEqual([asRoot.uid, asRoot.gid, asRoot.userName, asRoot.switchUser], [61190, 61190, null, true]);
    assert.equal(leases, 1);
    assert.equal(asRoot.lease?.id, 61190);
    const note = asRoot.notes.join('\n');
    assert.match(note, /without --uid: the worker runs as uid 61190 of its own \(from 61184-65519, /);
    assert.match(note, /held by a lock on \/run\/responses-api-proxy\/uid-61190\.lock\)/);
    assert.deepEqual(asRoot.warnings, []);
    const groupOnly = resolveWorkerIdentity({ gid: 'root' }, { uid: 0, gid: 0 }, lease);
    assert.deepEqual([groupOnly.uid, groupOnly.gid], [61190, 0], '--gid alone: a leased uid, the given group');

    const keepRoot = resolveWorkerIdentity({ uid: '0' }, { uid: 0, gid: 0 }, lease);
    assert.equal(keepRoot.uid, 0);
    assert.equal(keepRoot.lease, null);
    assert.match(keepRoot.warnings.join('\n'), /--uid 0: the worker keeps root/);

    const named = resolveWorkerIdentity({ uid: 'nobody', gid: 'root' }, { uid: 0, gid: 0 }, lease);
    assert.deepEqual([named.uid, named.gid], [NOBODY_ID, 0]);
    assert.equal(leases, 2, 'an explicit --uid leases nothing');

    const user = resolveWorkerIdentity({}, { uid: 1000, gid: 1000 }, lease);
    assert.deepEqual([user.uid, user.gid, user.switchUser, user.lease], [1000, 1000, false, null]);
    assert.throws(
      () => resolveWorkerIdentity({ uid: 'nobody' }, { uid: 1000, gid: 1000 }, lease),
      (err: unknown) =>
        err instanceof WorkerIdentityError && err.exitCode === 1 && /only root can switch users/.test(err.message),
    );
    const user1000 = { uid: 1000, gid: 1000 };
    assert.throws(() => resolveWorkerIdentity({ gid: '0' }, user1000, lease), /only root can switch groups/);
    assert.equal(resolveWorkerIdentity({ uid: '1000' }, { uid: 1000, gid: 1000 }, lease).uid, 1000);
    assert.equal(leases, 2, 'not root: nothing leased');
  });

  test('readability: a 0700 directory blocks uid 65534 (and the kernel agrees, as root)', (t: TestContext) => {
    const dir = join(root, 'home');
    const file = join(dir, 'dist', 'main.js');
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, 'export {};\n');
    chmodSync(root, 0o755);
    chmodSync(dir, 0o700);
    // Another uid than the directory's owner (the suite may itself run as nobody).
    const other = process.getuid?.() === NOBODY_ID ? 54321 : NOBODY_ID;
    const found = findUnreadablePath([file], other, other);
    assert.ok(found !== null);
    assert.equal(found.path, file);
    assert.equal(found.blockedAt, dir);
    assert.match(found.reason, /no search \(x\) permission/);
    assert.equal(
      unreadableMessage({ uid: NOBODY_ID, userName: 'nobody' }, found),
      `user nobody cannot read ${file} (${dir}: ${found.reason}): install the proxy somewhere world-readable or pass --uid`,
    );
    const owner = statSync(dir).uid;
    assert.equal(findUnreadablePath([file], owner, owner), null, 'the owner can read it');

    chmodSync(dir, 0o755);
    chmodSync(file, 0o600);
    assert.equal(findUnreadablePath([file], other, other)?.blockedAt, file, 'a 0600 file');
    chmodSync(file, 0o644);
    assert.equal(findUnreadablePath([file, dir], other, other), null);
    assert.equal(findUnreadablePath([join(dir, 'missing')], other, other)?.reason, 'cannot stat it (ENOENT)');

    if (!IS_ROOT) return t.skip(`${NEEDS_ROOT} (the prediction was checked; the kernel's verdict was not)`);
    const read = (): string =>
      runNodeAs(
        NOBODY_ID,
        NOBODY_ID,
        `try { require('node:fs').readFileSync(${JSON.stringify(file)}); console.log('readable'); } catch (e) { console.log(e.code); }`,
      );
    assert.equal(read(), 'readable');
    chmodSync(dir, 0o700);
    assert.equal(read(), 'EACCES');
    assert.notEqual(findUnreadablePath([file], NOBODY_ID, NOBODY_ID), null);
    chmodSync(dir, 0o755);
  });
});

// ---------------------------------------------------------------- permission model flags

describe('permission model flags', () => {
  const all = new Set([
    '--permission',
    '--experimental-permission',
    '--allow-fs-read',
    '--allow-fs-write',
    '--allow-addons',
  ]);

  test('the flag follows the Node version', () => {
    assert.equal(permissionFlagFor('20.18.1'), '--experimental-permission');
    assert.equal(permissionFlagFor('v22.12.0'), '--experimental-permission');
    assert.equal(permissionFlagFor('22.13.0'), '--permission');
    assert.equal(permissionFlagFor('23.4.0'), '--experimental-permission');
    assert.equal(permissionFlagFor('23.5.0'), '--permission');
    assert.equal(permissionFlagFor('24.0.0'), '--permission');
    assert.equal(permissionFlagFor('18.20.0'), null);
  });

  test('one flag per path, addons allowed for koffi, nothing for children or workers', () => {
    const model = permissionModelFlags('22.13.0', ['/opt/rap', '/proc/self/status'], ['/var/dumps'], {
      allowedFlags: all,
    });
    assert.deepEqual(model, {
      supported: true,
      reason: '--permission (network not gated by this Node)',
      flags: [
        '--permission',
        '--allow-fs-read=/opt/rap',
        '--allow-fs-read=/proc/self/status',
        '--allow-fs-write=/var/dumps',
        '--allow-addons',
      ],
    });
    assert.ok(!model.flags.some((f) => f.startsWith('--allow-child-process') || f.startsWith('--allow-worker')));
    assert.deepEqual(permissionModelFlags('20.18.1', ['/a'], [], { allowedFlags: all, allowAddons: false }).flags, [
      '--experimental-permission',
      '--allow-fs-read=/a',
    ]);
  });

  test('Node 25 and later: --allow-net, since the model gates accepting on the inherited socket', () => {
    const model = permissionModelFlags('26.10.0', ['/opt/rap'], [], { allowedFlags: new Set([...all, '--allow-net']) });
    assert.deepEqual(model.flags, ['--permission', '--allow-fs-read=/opt/rap', '--allow-addons', '--allow-net']);
    assert.equal(model.reason, '--permission (network allowed for the inherited socket)');
  });

  test('unsupported when the running Node does not accept the flag, or a path cannot be expressed', () => {
    const without = new Set([...all].filter((f) => f !== '--permission'));
    assert.match(
      permissionModelFlags('22.13.0', [], [], { allowedFlags: without }).reason,
      /does not accept --permission/,
    );
    assert.equal(permissionModelFlags('18.20.0', [], [], { allowedFlags: all }).supported, false);
    assert.match(
      permissionModelFlags('22.13.0', ['relative/path'], [], { allowedFlags: all }).reason,
      /must be absolute/,
    );
    assert.equal(permissionModelFlags('22.13.0', ['/a,b'], [], { allowedFlags: all }).supported, false);
  });

  test('on this Node: reads, writes, child processes and worker threads are limited', (t: TestContext) => {
    const model = permissionModelFlags(process.versions.node, [], [], { allowAddons: false });
    if (!model.supported)
      return t.skip(`permission model unavailable on Node ${process.versions.node}: ${model.reason}`);
    const dir = mkdtempSync(join(tmpdir(), 'rap-permission-'));
    try {
      const allowed = join(dir, 'allowed.txt');
      const denied = join(dir, 'denied.txt');
      const dumps = join(dir, 'dumps');
      mkdirSync(dumps);
      writeFileSync(allowed, 'ok');
      writeFileSync(denied, 'secret');
      const flags = permissionModelFlags(process.versions.node, [allowed], [dumps], { allowAddons: false }).flags;
      const code = `
        const fs = require('node:fs');
        const attempt = (f) => { try { f(); return 'ok'; } catch (e) { return e.code ?? e.message; } };
        console.log(JSON.stringify({
          readAllowed: attempt(() => fs.readFileSync(${JSON.stringify(allowed)})),
          readDenied: attempt(() => fs.readFileSync(${JSON.stringify(denied)})),
          writeDumps: attempt(() => fs.writeFileSync(${JSON.stringify(join(dumps, 'x.json'))}, '{}')),
          writeElsewhere: attempt(() => fs.writeFileSync(${JSON.stringify(join(dir, 'y'))}, 'x')),
          childProcess: attempt(() => require('node:child_process').spawnSync('/bin/true')),
          workerThread: attempt(() => new (require('node:worker_threads').Worker)('0', { eval: true })),
        }));`;
      assert.deepEqual(JSON.parse(runNodeAs(undefined, undefined, code, flags)), {
        readAllowed: 'ok',
        readDenied: 'ERR_ACCESS_DENIED',
        writeDumps: 'ok',
        writeElsewhere: 'ERR_ACCESS_DENIED',
        childProcess: 'ERR_ACCESS_DENIED',
        workerThread: 'ERR_ACCESS_DENIED',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('errnoName names errno values', () => {
  assert.equal(errnoName(1), 'EPERM');
  assert.equal(errnoName(13), 'EACCES');
  assert.equal(errnoName(99999), 'errno 99999');
});
