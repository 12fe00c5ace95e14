// A uid and gid of the worker's own, for a proxy started as root without --uid.
//
// Chosen from the range systemd's DynamicUser= uses (61184-65519), where no
// packaged or admin-created account belongs: the first number that neither the
// user nor the group database names and that no running process holds as any
// of its uids, gids or supplementary groups. Held for the proxy's life with
// flock(2) on /run/responses-api-proxy/uid-<N>.lock, so two proxies started at
// once take different numbers. flock rather than a lock file holding a pid or
// a fresh mtime: the kernel drops the lock when its holder ends, however it
// ends, so a killed proxy's number is free at once with no staleness rule and
// no timer. The lock files stay behind, empty; the lock is what counts.
//
// Not seen: processes in other PID namespaces, and files a previous holder of
// the number left on disk (a worker writes only under --dump-dir).

import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, type Stats } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import { ProxyError, errnoCode } from '../../shared/errors.js';
import { getgrgid, getpwuid, tryLockExclusive } from '../../shared/libc.js';

export const DYNAMIC_ID_FIRST = 61184;
export const DYNAMIC_ID_LAST = 65519;
export const LEASE_DIR = '/run/responses-api-proxy';

export interface IdLease {
  /** The uid, and the gid of the same number. */
  readonly id: number;
  /** The lock file held (for the startup note). */
  readonly lockFile: string;
}

export interface LeaseOptions {
  readonly dir?: string;
  readonly first?: number;
  readonly last?: number;
}

/** No free number, or the lock directory cannot be trusted: exit 1, one line. */
export class IdLeaseError extends ProxyError {
  constructor(message: string) {
    super('ERR_WORKER_ID_LEASE', message, 1);
    this.name = 'IdLeaseError';
  }
}

/** Every process /proc shows: pid -> its uids, gids and supplementary groups. */
export function processIds(): Map<number, Set<number>> {
  const processes = new Map<number, Set<number>>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const ids = new Set<number>();
    for (const line of status.split('\n')) {
      if (!/^(Uid|Gid|Groups):/.test(line)) continue;
      for (const id of line
        .slice(line.indexOf(':') + 1)
        .trim()
        .split(/\s+/))
        if (id !== '') ids.add(Number(id));
    }
    processes.set(Number(entry), ids);
  }
  return processes;
}

function idsInUse(): Set<number> {
  const all = new Set<number>();
  for (const ids of processIds().values()) for (const id of ids) all.add(id);
  return all;
}

function inDatabases(id: number): boolean {
  return getpwuid(id) !== null || getgrgid(id) !== null;
}

/** The lock directory, created 0700; refused unless it is root's own and closed to others. */
function lockDirectory(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') {
      const code = errnoCode(err) ?? String(err);
      throw new IdLeaseError(`cannot create ${dir} for the worker's uid lock: ${code} (or pass --uid)`);
    }
  }
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch (err) {
    throw new IdLeaseError(`cannot use ${dir} for the worker's uid lock: ${errnoCode(err) ?? String(err)}`);
  }
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new IdLeaseError(
      `refusing ${dir} for the worker's uid lock: not a directory owned by root and writable only by it`,
    );
  }
}

/** The descriptor of `path`, locked, or null when another open file holds the lock. */
function tryLock(path: string): number | null {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw new IdLeaseError(`cannot open ${path}: ${errnoCode(err) ?? String(err)}`);
  }
  if (tryLockExclusive(fd) && fstatSync(fd).isFile()) return fd;
  closeSync(fd);
  return null;
}

/** One lease per process (and lock directory): a proxy's worker keeps its number across restarts. */
const held = new Map<string, IdLease>();

/**
 * Lease the first free number of the range for this process's life (the
 * locked descriptor is never closed); asked again, the same lease. The
 * processes are looked at again once the lock is held: a proxy that just
 * ended may have left its worker running for a moment.
 */
export function leaseWorkerId(options: LeaseOptions = {}): IdLease {
  const dir = options.dir ?? LEASE_DIR;
  const first = options.first ?? DYNAMIC_ID_FIRST;
  const last = options.last ?? DYNAMIC_ID_LAST;
  const existing = held.get(dir);
  if (existing !== undefined) return existing;
  lockDirectory(dir);
  const inUse = idsInUse();
  for (let id = first; id <= last; id++) {
    if (inUse.has(id) || inDatabases(id)) continue;
    const lockFile = join(dir, `uid-${id}.lock`);
    const fd = tryLock(lockFile);
    if (fd === null) continue;
    if (!idsInUse().has(id)) {
      const lease = { id, lockFile };
      held.set(dir, lease);
      return lease;
    }
    closeSync(fd);
  }
  throw new IdLeaseError(`no free uid in ${first}-${last} for the worker (all in use or locked); pass --uid`);
}
