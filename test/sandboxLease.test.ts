// The worker's uid lease (src/supervisor/startup/workerIdLease.ts) in real processes:
// holders are throwaway node processes that lease from a lock directory of the
// test's own and then wait, so the test can start two at once, kill one with
// SIGKILL, and run a process under a number to see it skipped. Root only: the
// lock directory must be root's.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { IdLeaseError, leaseWorkerId } from '../src/supervisor/startup/workerIdLease.js';
import { waitFor } from './helpers/proxyProcess.js';

const IS_ROOT = process.getuid?.() === 0;
const LEASE_MODULE = new URL('../src/supervisor/startup/workerIdLease.js', import.meta.url).href;

function named(id: number): boolean {
  return ['passwd', 'group'].some((db) => spawnSync('getent', [db, String(id)], { timeout: 5_000 }).status === 0);
}

function heldByAProcess(id: number): boolean {
  const grep = `grep -lE "^(Uid|Gid|Groups):.*\\b${id}\\b" /proc/[0-9]*/status 2>/dev/null`;
  const holders = spawnSync('sh', ['-c', grep], { encoding: 'utf8' });
  return holders.stdout.trim() !== '';
}

/** Neither database names it and no process holds it (checked here independently of the module). */
function free(id: number): boolean {
  return !named(id) && !heldByAProcess(id);
}

/** A uid the passwd database names that no process holds, followed by a free one, or null. */
function namedButIdle(): number | null {
  const listed = spawnSync('getent', ['passwd'], { encoding: 'utf8', timeout: 5_000 }).stdout.split('\n');
  for (const id of listed.map((line) => Number(line.split(':')[2])).filter((id) => id > 0)) {
    if (!heldByAProcess(id) && free(id + 1)) return id;
  }
  return null;
}

/** The first `size` consecutive free numbers from 64000 up (inside the dynamic range, away from its start). */
function freeBlock(size: number): number {
  for (let first = 64000; first < 65400; first++) {
    let ok = true;
    for (let id = first; id < first + size && ok; id++) ok = free(id);
    if (ok) return first;
  }
  throw new Error('no free block of ids');
}

/** A process that leases from `dir` in [first, last], prints the number, and waits. */
class Holder {
  id: number | null = null;
  error = '';
  exited = false;
  constructor(readonly child: ChildProcess) {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (/^\d+\n/.test(out)) this.id = Number.parseInt(out, 10);
    });
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.error += s));
    child.on('exit', () => (this.exited = true));
  }
  static start(dir: string, first: number, last: number): Holder {
    const code = `import(${JSON.stringify(LEASE_MODULE)}).then(({ leaseWorkerId }) => {
      console.log(leaseWorkerId({ dir: ${JSON.stringify(dir)}, first: ${first}, last: ${last} }).id);
      setInterval(() => {}, 1000);
      setTimeout(() => process.exit(3), 30000);
    });`;
    return new Holder(spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }
  async leased(): Promise<number> {
    assert.ok(await waitFor(() => this.id !== null || this.exited, 10_000), 'holder did not lease within 10 s');
    assert.ok(this.id !== null, `holder failed: ${this.error}`);
    return this.id;
  }
  async kill(): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    await waitFor(() => this.exited, 5_000);
  }
}

const rootOnly = { skip: !IS_ROOT && 'needs root: the lock directory must be root-owned' };

describe('worker uid lease', { ...rootOnly, concurrency: false, timeout: 120_000 }, () => {
  let dir: string;
  let first: number;
  const holders: Holder[] = [];
  const hold = (from: number, to: number): Holder => {
    const holder = Holder.start(dir, from, to);
    holders.push(holder);
    return holder;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rap-lease-'));
    chmodSync(dir, 0o700);
    first = freeBlock(4);
  });
  after(async () => {
    for (const holder of holders) await holder.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  test('two processes leasing at once get different numbers, the lowest free ones', async () => {
    const [a, b] = [hold(first, first + 3), hold(first, first + 3)];
    const ids = [await a.leased(), await b.leased()].sort();
    assert.deepEqual(ids, [first, first + 1]);
    await a.kill();
    await b.kill();
  });

  test("a killed holder's number is taken over at once; a living holder's is not", async () => {
    const living = hold(first, first + 3);
    assert.equal(await living.leased(), first);
    const killed = hold(first, first + 3);
    assert.equal(await killed.leased(), first + 1);
    await killed.kill();
    // Its lock file is still there; its lock is not.
    const next = hold(first, first + 3);
    assert.equal(await next.leased(), first + 1);
    await living.kill();
    await next.kill();
  });

  test('a number a process runs under is skipped, as is one the user or group database names', async () => {
    const sleeper = 'setInterval(() => {}, 1000); setTimeout(() => process.exit(0), 30000)';
    const squatter = spawn(process.execPath, ['-e', sleeper], { uid: first, gid: first, stdio: 'ignore' });
    try {
      assert.ok(await waitFor(() => !free(first), 5_000), 'the squatter does not show in /proc');
      const holder = hold(first, first + 3);
      assert.equal(await holder.leased(), first + 1);
      await holder.kill();
    } finally {
      squatter.kill('SIGKILL');
    }
    const idle = namedButIdle();
    assert.ok(idle !== null, 'no passwd entry without a process here');
    const holder = hold(idle, idle + 1);
    assert.equal(await holder.leased(), idle + 1, `uid ${idle} has a passwd entry`);
    await holder.kill();
  });

  test('one lease per process: asking again returns the same number', () => {
    const own = mkdtempSync(join(tmpdir(), 'rap-lease-own-'));
    try {
      chmodSync(own, 0o700);
      const lease = leaseWorkerId({ dir: own, first: first + 2, last: first + 3 });
      assert.deepEqual(leaseWorkerId({ dir: own, first: first + 2, last: first + 3 }), lease);
      assert.equal(lease.lockFile, join(own, `uid-${lease.id}.lock`));
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  test('nothing free, or a lock directory others could write: one clear error', async () => {
    const holder = hold(first, first);
    assert.equal(await holder.leased(), first);
    const busy = mkdtempSync(join(tmpdir(), 'rap-lease-busy-'));
    try {
      chmodSync(busy, 0o700);
      assert.throws(
        () => leaseWorkerId({ dir, first, last: first }),
        (err: unknown) =>
          err instanceof IdLeaseError &&
          err.exitCode === 1 &&
          err.message === `no free uid in ${first}-${first} for the worker (all in use or locked); pass --uid`,
      );
      chmodSync(busy, 0o777);
      const refusal = /refusing .* not a directory owned by root and writable only by it/;
      assert.throws(() => leaseWorkerId({ dir: busy }), refusal);
      chmodSync(busy, 0o700);
      chownSync(busy, 65534, 65534);
      assert.throws(() => leaseWorkerId({ dir: busy }), /refusing/);
    } finally {
      rmSync(busy, { recursive: true, force: true });
      await holder.kill();
    }
  });
});
