// Who the worker runs as, and what that identity can reach.
//
// --uid USER|UID and --gid GROUP|GID are resolved through the system databases
// (NSS: getpwnam_r/getgrnam_r, so LDAP/sssd users work) or taken as numbers.
// Started as root without --uid, the worker runs under a uid and gid of its
// own, leased for the proxy's life (workerIdLease.ts): no other process can
// ptrace it, read its memory or signal it by sharing its uid. --uid nobody
// stays possible, but nobody is shared with other daemons (and, in the GitHub
// Action flow, with the client), so the report shows it as not its own.
// --uid 0 keeps root only when asked, with a warning. A non-root supervisor
// cannot switch users, so asking it to is an error rather than a silent no-op.
//
// Also here: the check that the worker's uid/gid can read the program's files
// (a 0700 home directory is the classic trap), and the Node permission-model
// flags the worker is spawned with.

import { realpathSync, statSync, type Stats } from 'node:fs';
import { isAbsolute, resolve, sep } from 'node:path';
import { ProxyError } from '../../shared/errors.js';
import { getgrgid, getgrnam, getpwnam, getpwuid } from '../../shared/libc.js';
import { DYNAMIC_ID_FIRST, DYNAMIC_ID_LAST, leaseWorkerId, type IdLease } from './workerIdLease.js';

/** uid/gid of nobody/nogroup (shared by many daemons: never the default). */
export const NOBODY_ID = 65534;
const MAX_ID = 0xfffffffe; // (uid_t)-1 means "unchanged" to setuid-family calls

/** A --uid/--gid value that cannot be used (exit 2), or a switch only root may make (exit 1). */
export class WorkerIdentityError extends ProxyError {
  constructor(message: string, exitCode = 2) {
    super('ERR_WORKER_IDENTITY', message, exitCode);
    this.name = 'WorkerIdentityError';
  }
}

export interface ResolvedUser {
  readonly uid: number;
  /** Name from the passwd database, null for a number without an entry. */
  readonly name: string | null;
  /** The user's primary group, null for a number without an entry. */
  readonly primaryGid: number | null;
}

export interface ResolvedGroup {
  readonly gid: number;
  readonly name: string | null;
}

function parseId(spec: string, what: string): number | null {
  if (!/^\d+$/.test(spec)) return null;
  const id = Number(spec);
  if (!Number.isSafeInteger(id) || id > MAX_ID) throw new WorkerIdentityError(`invalid ${what} ${spec}: out of range`);
  return id;
}

function checkName(spec: string, option: string): void {
  if (spec === '' || spec.includes('\0')) throw new WorkerIdentityError(`${option} needs a name or a number`);
}

/** --uid: a user name (looked up) or a number (looked up for its name, used as is when absent). */
export function resolveUser(spec: string): ResolvedUser {
  checkName(spec, '--uid');
  const uid = parseId(spec, 'uid');
  if (uid !== null) {
    const entry = getpwuid(uid);
    return { uid, name: entry?.name ?? null, primaryGid: entry?.gid ?? null };
  }
  const entry = getpwnam(spec);
  if (entry === null)
    throw new WorkerIdentityError(
      `--uid ${spec}: no such user (not in the passwd database; pass a name that exists or a number)`,
    );
  return { uid: entry.uid, name: entry.name, primaryGid: entry.gid };
}

/** --gid: a group name (looked up) or a number. */
export function resolveGroup(spec: string): ResolvedGroup {
  checkName(spec, '--gid');
  const gid = parseId(spec, 'gid');
  if (gid !== null) return { gid, name: getgrgid(gid)?.name ?? null };
  const entry = getgrnam(spec);
  if (entry === null)
    throw new WorkerIdentityError(
      `--gid ${spec}: no such group (not in the group database; pass a name that exists or a number)`,
    );
  return { gid: entry.gid, name: entry.name };
}

export interface WorkerIdentity {
  readonly uid: number;
  readonly gid: number;
  readonly userName: string | null;
  readonly groupName: string | null;
  /** Spawn the worker with uid/gid (root only; libuv then also clears the supplementary groups). */
  readonly switchUser: boolean;
  /** The uid of its own this proxy holds (root without --uid), else null. */
  readonly lease: IdLease | null;
  /** Lines for the startup log (e.g. which uid was leased). */
  readonly notes: readonly string[];
  /** Lines to log as warnings (e.g. --uid 0). */
  readonly warnings: readonly string[];
}

export interface CurrentIds {
  readonly uid: number;
  readonly gid: number;
}

function currentIds(): CurrentIds {
  if (typeof process.geteuid !== 'function' || typeof process.getegid !== 'function') {
    throw new WorkerIdentityError('--uid/--gid need a POSIX system', 1);
  }
  return { uid: process.geteuid(), gid: process.getegid() };
}

/** "nobody (uid 65534)" / "uid 1234". */
export function describeUser(uid: number, name: string | null): string {
  return name === null ? `uid ${uid}` : `${name} (uid ${uid})`;
}

export function describeGroup(gid: number, name: string | null): string {
  return name === null ? `gid ${gid}` : `${name} (gid ${gid})`;
}

/**
 * The worker's identity from --uid/--gid and who the supervisor runs as.
 * Root: a leased uid of its own (and the gid of the same number) by default;
 * --uid's primary group when --gid is absent.
 * Not root: the supervisor's own ids; naming any other uid or gid is an error.
 */
export function resolveWorkerIdentity(
  args: { readonly uid?: string | undefined; readonly gid?: string | undefined },
  current: CurrentIds = currentIds(),
  lease: () => IdLease = leaseWorkerId,
): WorkerIdentity {
  const notes: string[] = [];
  const warnings: string[] = [];
  const user = args.uid === undefined ? null : resolveUser(args.uid);
  const group = args.gid === undefined ? null : resolveGroup(args.gid);

  if (current.uid !== 0) {
    if (user !== null && user.uid !== current.uid) {
      throw new WorkerIdentityError(
        `cannot run the worker as ${describeUser(user.uid, user.name)}: only root can switch users (the proxy runs as uid ${current.uid}); omit --uid or start the proxy as root`,
        1,
      );
    }
    if (group !== null && group.gid !== current.gid) {
      throw new WorkerIdentityError(
        `cannot run the worker as ${describeGroup(group.gid, group.name)}: only root can switch groups (the proxy runs as gid ${current.gid}); omit --gid or start the proxy as root`,
        1,
      );
    }
    return {
      uid: current.uid,
      gid: current.gid,
      userName: user?.name ?? getpwuid(current.uid)?.name ?? null,
      groupName: group?.name ?? getgrgid(current.gid)?.name ?? null,
      switchUser: false,
      lease: null,
      notes,
      warnings,
    };
  }

  let uid: number;
  let userName: string | null;
  let primaryGid: number | null;
  let held: IdLease | null = null;
  if (user === null) {
    held = lease();
    uid = held.id;
    userName = null;
    primaryGid = held.id;
  } else {
    ({ uid, name: userName, primaryGid } = user);
  }
  let gid: number;
  let groupName: string | null;
  if (group !== null) ({ gid, name: groupName } = group);
  else {
    gid = primaryGid ?? uid;
    groupName = getgrgid(gid)?.name ?? null;
  }
  if (held !== null) {
    notes.push(
      `running as root without --uid: the worker runs as uid ${uid} of its own ` +
        `(from ${DYNAMIC_ID_FIRST}-${DYNAMIC_ID_LAST}, held by a lock on ${held.lockFile}), ` +
        `group ${describeGroup(gid, groupName)}, no supplementary groups`,
    );
  }
  if (uid === 0) warnings.push('--uid 0: the worker keeps root and its capabilities; a compromised worker is root');
  else if (gid === 0) warnings.push('--gid 0: the worker runs with group root');
  return { uid, gid, userName, groupName, switchUser: true, lease: held, notes, warnings };
}

// ---------------------------------------------------------------- readability

export interface UnreadablePath {
  /** The path that was asked about. */
  readonly path: string;
  /** The component that blocks it (the path itself, or a directory above it). */
  readonly blockedAt: string;
  readonly reason: string;
}

const R = 4;
const X = 1;

/** Whether uid/gid/groups have every bit of `want` on `st` by the classic owner/group/other rule. */
function permits(st: Stats, want: number, uid: number, gid: number, groups: readonly number[]): boolean {
  if (uid === 0) return true; // CAP_DAC_READ_SEARCH covers reading and searching
  let bits: number;
  if (st.uid === uid) bits = (st.mode >> 6) & 7;
  else if (st.gid === gid || groups.includes(st.gid)) bits = (st.mode >> 3) & 7;
  else bits = st.mode & 7;
  return (bits & want) === want;
}

/** '/', '/a', '/a/b' ... for an absolute path. */
function prefixes(path: string): string[] {
  const out: string[] = [sep];
  let current = '';
  for (const part of path.split(sep)) {
    if (part === '') continue;
    current += sep + part;
    out.push(current);
  }
  return out;
}

function checkWalk(
  path: string,
  walked: string,
  uid: number,
  gid: number,
  groups: readonly number[],
): UnreadablePath | null {
  const steps = prefixes(walked);
  for (const [index, step] of steps.entries()) {
    let st: Stats;
    try {
      st = statSync(step);
    } catch (err) {
      const code = err !== null && typeof err === 'object' && 'code' in err ? String(err.code) : 'error';
      return { path, blockedAt: step, reason: `cannot stat it (${code})` };
    }
    const last = index === steps.length - 1;
    if (!last || st.isDirectory()) {
      const want = last ? R | X : X;
      if (!st.isDirectory()) return { path, blockedAt: step, reason: 'not a directory' };
      if (!permits(st, want, uid, gid, groups)) {
        return {
          path,
          blockedAt: step,
          reason: `directory mode ${modeString(st)} gives no ${last ? 'read and search' : 'search (x)'} permission`,
        };
      }
    } else if (!permits(st, R, uid, gid, groups)) {
      return { path, blockedAt: step, reason: `file mode ${modeString(st)} gives no read permission` };
    }
  }
  return null;
}

function modeString(st: Stats): string {
  return `0${(st.mode & 0o7777).toString(8)} owner ${st.uid}:${st.gid}`;
}

/**
 * The first of `paths` that uid/gid (with `groups`) cannot read, or null.
 * Walks every component: each directory above needs search (x), the path
 * itself needs read (and search for a directory). Symlinks are checked along
 * the spelled path and along the resolved one. Mode bits only: POSIX ACLs and
 * LSMs are not consulted. Call it as root, before starting the worker.
 */
export function findUnreadablePath(
  paths: readonly string[],
  uid: number,
  gid: number,
  groups: readonly number[] = [],
): UnreadablePath | null {
  for (const given of paths) {
    const absolute = resolve(given);
    const spelled = checkWalk(given, absolute, uid, gid, groups);
    if (spelled !== null) return spelled;
    let real: string;
    try {
      real = realpathSync(absolute);
    } catch {
      continue; // the walk above already stat'ed every component
    }
    if (real !== absolute) {
      const resolved = checkWalk(given, real, uid, gid, groups);
      if (resolved !== null) return resolved;
    }
  }
  return null;
}

/** The startup error line for an unreadable program file. */
export function unreadableMessage(identity: Pick<WorkerIdentity, 'uid' | 'userName'>, found: UnreadablePath): string {
  const who = identity.userName === null ? `uid ${identity.uid}` : `user ${identity.userName}`;
  const detail = found.blockedAt === found.path ? found.reason : `${found.blockedAt}: ${found.reason}`;
  return `${who} cannot read ${found.path} (${detail}): install the proxy somewhere world-readable or pass --uid`;
}

// ---------------------------------------------------------------- permission model

export interface PermissionModelFlags {
  readonly supported: boolean;
  /** The flags to put before the worker's entry point (empty when unsupported). */
  readonly flags: readonly string[];
  /** Which flag enables the model, or why it cannot be used. */
  readonly reason: string;
}

export interface PermissionModelOptions {
  /**
   * Pass --allow-addons (default true): the worker loads koffi, a native
   * addon, to install its seccomp filter. An addon can bypass the model, which
   * is why the model is one layer among several and not the only one.
   */
  readonly allowAddons?: boolean;
  /** The flags this Node accepts (default: process.allowedNodeEnvironmentFlags). */
  readonly allowedFlags?: ReadonlySet<string>;
}

function parseVersion(version: string): [number, number, number] | null {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (match === null) return null;
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** The flag that turns the permission model on in `nodeVersion`, or null when it has none. */
export function permissionFlagFor(nodeVersion: string): string | null {
  const parsed = parseVersion(nodeVersion);
  if (parsed === null) return null;
  const [major, minor] = parsed;
  // Stable (and renamed --permission) in 23.5.0 and 22.13.0.
  if (major >= 24 || (major === 23 && minor >= 5) || (major === 22 && minor >= 13)) return '--permission';
  if (major >= 20) return '--experimental-permission';
  return null;
}

/**
 * Node CLI flags for the worker under the permission model: reads limited to
 * `readPaths`, writes to `writePaths`, no child processes and no worker
 * threads (the model's defaults: neither --allow-child-process nor
 * --allow-worker is given). Each path gets its own flag (current 20.x and
 * later no longer split comma-separated lists). Support is detected from the version
 * and confirmed against the flags this Node accepts.
 */
export function permissionModelFlags(
  nodeVersion: string,
  readPaths: readonly string[],
  writePaths: readonly string[],
  options: PermissionModelOptions = {},
): PermissionModelFlags {
  const allowed = options.allowedFlags ?? process.allowedNodeEnvironmentFlags;
  const unsupported = (reason: string): PermissionModelFlags => ({ supported: false, flags: [], reason });
  const flag = permissionFlagFor(nodeVersion);
  if (flag === null) return unsupported(`Node ${nodeVersion} has no permission model (needs 20 or later)`);
  const allowAddons = options.allowAddons ?? true;
  const needed = [flag, '--allow-fs-read', '--allow-fs-write', ...(allowAddons ? ['--allow-addons'] : [])];
  const absent = needed.filter((name) => !allowed.has(name));
  if (absent.length > 0) return unsupported(`Node ${nodeVersion} does not accept ${absent.join(', ')}`);
  for (const path of [...readPaths, ...writePaths]) {
    if (!isAbsolute(path)) return unsupported(`permission model paths must be absolute: ${path}`);
    // ',' was a list separator and '*' a wildcard in some 20.x/21.x releases.
    if (/[,*\0]/.test(path)) return unsupported(`cannot express ${JSON.stringify(path)} as a permission-model path`);
  }
  // Node 25 and later gate network under the model, all or nothing: the
  // worker accepts on its inherited listening socket, which needs --allow-net.
  // New sockets are denied by the seccomp filter, not by the model.
  const gatesNetwork = allowed.has('--allow-net');
  const flags = [
    flag,
    ...readPaths.map((path) => `--allow-fs-read=${path}`),
    ...writePaths.map((path) => `--allow-fs-write=${path}`),
    ...(allowAddons ? ['--allow-addons'] : []),
    ...(gatesNetwork ? ['--allow-net'] : []),
  ];
  const network = gatesNetwork ? 'network allowed for the inherited socket' : 'network not gated by this Node';
  return { supported: true, flags, reason: `${flag} (${network})` };
}
