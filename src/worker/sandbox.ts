// The worker's in-process sandbox, in two steps.
//
// beginWorkerSandbox, first thing once the configuration is known, before
// anything can start another thread:
//   1. no_new_privs: execve can never grant privileges again (and an
//      unprivileged process may install seccomp and Landlock);
//   2. not dumpable: a process of the same uid can neither ptrace it nor read
//      its memory (/proc/<pid>/mem and friends become root's);
//   3. Landlock, where the kernel has it: reads limited to the worker's code
//      and dependencies, writes nothing.
// installWorkerSandbox, once the listening socket is set up and before the
// first connection is accepted:
//   4. a default-deny seccomp filter on every thread (SECCOMP_FILTER_FLAG_TSYNC:
//      Node runs a dozen threads): no new socket, no exec, no other process;
//   5. a capability check: CapEff must be 0 (the supervisor starts the worker
//      as another uid, which clears them).
// Fail closed: a layer that cannot be installed throws SandboxError naming the
// layer and the errno, unless { allowWeaker: true }, which records it instead.
// A kernel without Landlock is recorded, not an error.

import { readdirSync, readlinkSync } from 'node:fs';
import { LayerMissingError, messageOf } from '../shared/errors.js';
import {
  LibcError,
  SECCOMP_FILTER_FLAG_TSYNC,
  getDumpable,
  getNoNewPrivs,
  getSeccompMode,
  seccompSetModeFilter,
  setDumpable,
  setNoNewPrivs,
} from '../shared/libc.js';
import { readProcStatus } from '../shared/procStatus.js';
import { allowedSyscalls, buildSeccompFilter } from '../shared/seccompFilter.js';
import { bindsEveryThread, landlockSupport, restrictFiles, type FileRules } from '../shared/landlock.js';
export { WORKER_SANDBOX_READ_PATHS } from '../shared/constants.js';

export type SandboxLayer = 'no_new_privs' | 'dumpable' | 'landlock' | 'seccomp' | 'capabilities';

export interface MissingLayer {
  readonly layer: SandboxLayer;
  readonly reason: string;
}

export interface SandboxOptions {
  /** Record a layer that cannot be installed instead of throwing (--allow-weaker-sandbox). */
  readonly allowWeaker?: boolean;
  /** Accept a non-zero CapEff without counting it as missing (the operator asked for --uid 0). */
  readonly allowCapabilities?: boolean;
  /** What Landlock lets the worker reach (default: nothing). */
  readonly files?: FileRules;
}

export interface LandlockLayer {
  /** The kernel's ABI version, 0 when it has none. */
  readonly abi: number;
  readonly inForce: boolean;
  /** Binds every thread (ABI 8), else this thread and those it starts. */
  readonly everyThread: boolean;
  /** Why it is not in force (no Landlock in the kernel, or the error with allowWeaker). */
  readonly reason: string | null;
}

export interface SandboxLayers {
  readonly arch: string;
  /** Read back with PR_GET_NO_NEW_PRIVS. */
  readonly noNewPrivs: boolean;
  /** Read back with PR_GET_DUMPABLE (0 = not dumpable), null when unreadable. */
  readonly dumpable: number | null;
  readonly landlock: LandlockLayer;
  /** The filter is installed on every thread. */
  readonly seccomp: boolean;
  /** PR_GET_SECCOMP after installing (2 = filter), null when unreadable. */
  readonly seccompMode: number | null;
  /** How many system calls the filter allows on this architecture. */
  readonly allowedSyscalls: number;
  /** CapEff from /proc/self/status as printed there (16 hex digits), or "unknown". */
  readonly capEff: string;
  readonly noCapabilities: boolean;
  /** Layers not in force (only ever non-empty with allowWeaker). */
  readonly missing: readonly MissingLayer[];
}

/** A sandbox layer could not be installed; `layer` says which one. */
export class SandboxError extends LayerMissingError<SandboxLayer> {
  constructor(layer: SandboxLayer, reason: string) {
    super('ERR_SANDBOX', 'worker sandbox', layer, reason);
    this.name = 'SandboxError';
  }
}

function explain(err: unknown): string {
  if (err instanceof LibcError) {
    const hints: Record<string, string> = {
      EINVAL: 'the kernel does not support it',
      EACCES: 'neither no_new_privs nor CAP_SYS_ADMIN',
      EFAULT: 'bad filter address',
      ENOSYS: 'the kernel has no support for it',
    };
    const hint = hints[err.errnoName];
    return hint === undefined ? err.message : `${err.message}: ${hint}`;
  }
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string' && 'message' in err) {
    return `${err.code}: ${String(err.message)}`;
  }
  return messageOf(err);
}

/** The descriptors of io_uring instances this process holds (libuv opens one per loop where it can). */
function ioUringDescriptors(): number[] {
  const rings: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === 'anon_inode:[io_uring]') rings.push(Number(name));
    } catch {
      // the descriptor readdir itself used, closed by now
    }
  }
  return rings;
}

interface FirstLayers {
  readonly missing: MissingLayer[];
  readonly noNewPrivs: boolean;
  readonly dumpable: number | null;
  readonly landlock: LandlockLayer;
  readonly capEff: string;
  /** Why the seccomp filter cannot be installed, found before Landlock hides /proc. */
  readonly seccompBlocked: string | null;
}

let first: FirstLayers | null = null;
let installed: SandboxLayers | null = null;

function failer(options: SandboxOptions, missing: MissingLayer[]): (layer: SandboxLayer, reason: string) => void {
  return (layer, reason) => {
    if (options.allowWeaker !== true) throw new SandboxError(layer, reason);
    missing.push({ layer, reason });
  };
}

/**
 * no_new_privs, not dumpable, Landlock; call before anything starts a thread
 * (an async fs call starts libuv's pool). Idempotent.
 */
export function beginWorkerSandbox(options: SandboxOptions = {}): void {
  if (first !== null) return;
  const missing: MissingLayer[] = [];
  const fail = failer(options, missing);
  const linux = process.platform === 'linux';
  const notLinux = `not available on ${process.platform}`;

  // Read before Landlock, which leaves /proc out of reach.
  let capEff = 'unknown';
  let seccompBlocked: string | null = null;
  try {
    const status = readProcStatus('self').get('CapEff');
    if (status === undefined || !/^[0-9a-f]+$/i.test(status)) throw new Error('no CapEff line in /proc/self/status');
    capEff = status;
    const rings = ioUringDescriptors();
    if (rings.length > 0) {
      seccompBlocked =
        `io_uring instances are open (fd ${rings.join(', ')}): their operations would bypass the filter, ` +
        'and libuv aborts without them; start the worker from the supervisor, which denies io_uring_setup to it';
    }
  } catch (err) {
    fail('capabilities', `cannot read /proc/self: ${explain(err)}`);
  }

  let noNewPrivs = false;
  if (!linux) fail('no_new_privs', notLinux);
  else {
    try {
      setNoNewPrivs();
      noNewPrivs = getNoNewPrivs();
      if (!noNewPrivs) fail('no_new_privs', 'PR_GET_NO_NEW_PRIVS still reads 0');
    } catch (err) {
      fail('no_new_privs', explain(err));
    }
  }

  let dumpable: number | null = null;
  if (!linux) fail('dumpable', notLinux);
  else {
    try {
      setDumpable(0);
      dumpable = getDumpable();
      if (dumpable !== 0) fail('dumpable', `PR_GET_DUMPABLE still reads ${dumpable}`);
    } catch (err) {
      fail('dumpable', explain(err));
    }
  }

  let landlock: LandlockLayer = { abi: 0, inForce: false, everyThread: false, reason: notLinux };
  if (linux) {
    const support = landlockSupport();
    if ('reason' in support) landlock = { abi: 0, inForce: false, everyThread: false, reason: support.reason };
    else {
      try {
        restrictFiles(support.abi, options.files ?? { read: [] });
        landlock = { abi: support.abi, inForce: true, everyThread: bindsEveryThread(support.abi), reason: null };
      } catch (err) {
        fail('landlock', explain(err));
        landlock = { abi: support.abi, inForce: false, everyThread: false, reason: explain(err) };
      }
    }
  }
  first = { missing, noNewPrivs, dumpable, landlock, capEff, seccompBlocked };
}

/**
 * Every layer: the first ones (if beginWorkerSandbox has not run), then the
 * seccomp filter and the capability check. Idempotent: a second call returns
 * the first result. Throws SandboxError for the first missing layer unless
 * options.allowWeaker.
 */
export function installWorkerSandbox(options: SandboxOptions = {}): SandboxLayers {
  if (installed !== null) return installed;
  beginWorkerSandbox(options);
  const begun = first as FirstLayers;
  const missing = [...begun.missing];
  const fail = failer(options, missing);
  const arch = process.arch;

  let seccomp = false;
  let seccompMode: number | null = null;
  let allowed = 0;
  if (process.platform !== 'linux') fail('seccomp', `not available on ${process.platform}`);
  else if (begun.seccompBlocked !== null) fail('seccomp', begun.seccompBlocked);
  else {
    try {
      const filter = buildSeccompFilter(arch);
      seccompSetModeFilter(filter, SECCOMP_FILTER_FLAG_TSYNC);
      allowed = allowedSyscalls(arch).length;
      seccompMode = getSeccompMode();
      seccomp = seccompMode === 2;
      if (!seccomp) fail('seccomp', `the filter was accepted but PR_GET_SECCOMP reads ${seccompMode}`);
    } catch (err) {
      fail('seccomp', explain(err));
    }
  }

  const capEff = begun.capEff;
  const noCapabilities = capEff !== 'unknown' && BigInt(`0x${capEff}`) === 0n;
  if (capEff !== 'unknown' && !noCapabilities && options.allowCapabilities !== true) {
    fail('capabilities', `CapEff is ${capEff}, not 0 (the worker runs with capabilities: start it as another uid)`);
  }

  installed = {
    arch,
    noNewPrivs: begun.noNewPrivs,
    dumpable: begun.dumpable,
    landlock: begun.landlock,
    seccomp,
    seccompMode,
    allowedSyscalls: allowed,
    capEff,
    noCapabilities,
    missing,
  };
  return installed;
}
