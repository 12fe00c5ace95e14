// Starts the worker: a fresh Node image (spawn, never fork), an empty
// environment, stdin and stdout closed, stderr shared for logs, the listening
// socket as fd 3 and a dedicated socketpair as fd 4. As root it runs under
// another uid/gid (libuv's setgid/setuid path also clears supplementary
// groups) and, where this Node has one, under the permission model.

import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MARKING_TRIGGER_FLAGS, WORKER_SANDBOX_READ_PATHS } from '../shared/constants.js';
import { seccompSetModeFilter, setNoNewPrivs } from '../shared/libc.js';
import { buildIoUringDenial } from '../shared/seccompFilter.js';
import { permissionModelFlags, type PermissionModelFlags } from './startup/workerIdentity.js';
import { messageOf } from '../shared/errors.js';

export const DEFAULT_WORKER_ENTRY = fileURLToPath(new URL('../worker/main.js', import.meta.url));
/** The package's own directory (dist/ and, installed standalone, node_modules/). */
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface WorkerProcess {
  readonly child: ChildProcess;
  /** The supervisor's end of the socketpair. */
  readonly channel: Socket;
}

export interface WorkerLaunch {
  readonly entry: string;
  readonly listenFd: number;
  /** Set only when the supervisor is root and switches identity. */
  readonly uid?: number;
  readonly gid?: number;
  /** Node flags placed before the entry point (permission model). */
  readonly nodeFlags: readonly string[];
}

/**
 * The worker's young generation is capped below V8's default: its live heap is
 * small, and a larger one only added resident memory (docs/PERFORMANCE.md).
 */
const WORKER_V8_FLAGS = ['--max-semi-space-size=4', ...MARKING_TRIGGER_FLAGS];

export function spawnWorker(launch: WorkerLaunch): WorkerProcess {
  const child = spawn(process.execPath, ['--no-warnings', ...WORKER_V8_FLAGS, ...launch.nodeFlags, launch.entry], {
    stdio: ['ignore', 'ignore', 'inherit', launch.listenFd, 'pipe'],
    env: {},
    cwd: '/',
    ...(launch.uid === undefined ? {} : { uid: launch.uid }),
    ...(launch.gid === undefined ? {} : { gid: launch.gid }),
  });
  const channel = child.stdio[4] as Socket;
  return { child, channel };
}

/**
 * Deny io_uring_setup to this thread and every process it starts from now on
 * (a seccomp filter is inherited across fork and exec): libuv opens io_uring
 * instances as Node starts, before the worker runs a line of its own, and an
 * operation submitted through one never passes the worker's seccomp filter.
 * Denied, libuv uses plain epoll. Call on the main thread, which spawns the
 * worker; the supervisor's own instances, opened already, keep working.
 * Returns null, or why it could not be done (the worker then refuses to start
 * unless --allow-weaker-sandbox).
 */
export function denyIoUringToWorker(): string | null {
  try {
    setNoNewPrivs(); // what an unprivileged process needs for a filter; nothing the supervisor runs is setuid
    seccompSetModeFilter(buildIoUringDenial(process.arch), 0);
    return null;
  } catch (err) {
    return messageOf(err);
  }
}

/** The node_modules directory a dependency is loaded from (hoisted or nested). */
function modulesDirOf(name: string): string {
  const resolved = createRequire(import.meta.url).resolve(name);
  const marker = `${sep}node_modules${sep}`;
  return resolved.slice(0, resolved.lastIndexOf(marker) + marker.length - 1);
}

/**
 * `paths` without those beneath another one: they add nothing, and with one
 * beneath it Node 20's permission model refuses to open the outer directory
 * itself (which Landlock's rules need).
 */
function outermost(paths: readonly string[]): string[] {
  const unique = [...new Set(paths)];
  return unique.filter((path) => !unique.some((outer) => path.startsWith(`${outer}${sep}`)));
}

/** The worker's code and dependencies (what its uid must be able to read). */
export function workerProgramPaths(entry: string): string[] {
  const dependencies = ['pino', 'koffi', 'ws'].map(modulesDirOf);
  return outermost([PACKAGE_ROOT.replace(/\/$/, ''), dirname(entry), ...dependencies]);
}

/** Everything the worker may read: its code, its dependencies, and what its sandbox reads about itself. */
export function workerReadPaths(entry: string): string[] {
  return [...workerProgramPaths(entry), ...WORKER_SANDBOX_READ_PATHS];
}

/** Permission-model flags for this Node: reads limited as above, no writes (the supervisor writes the dumps). */
export function workerPermissionFlags(entry: string): PermissionModelFlags {
  return permissionModelFlags(process.versions.node, outermost(workerReadPaths(entry)), []);
}
