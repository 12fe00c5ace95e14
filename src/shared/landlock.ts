// Landlock: the kernel confines the worker's files to reading its own code and
// dependencies (the paths the permission model gets) and writing nothing (the
// supervisor writes the dumps); an addon cannot step around it as it can around the permission
// model. Where the ABI allows, TCP bind/connect (ABI 4), abstract UNIX sockets
// and signals outside the worker (ABI 6) are refused too, under the seccomp
// filter that already refuses new sockets.
//
// Before ABI 8 a ruleset binds the calling thread and the threads it starts
// afterwards, not threads that already run: so the worker installs it on its
// JavaScript thread before anything starts libuv's pool. ABI 8 binds every
// thread (LANDLOCK_RESTRICT_SELF_TSYNC).

import { closeSync, fstatSync, openSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { LibcError, landlockAbi, landlockAddPathRule, landlockCreateRuleset, landlockRestrictSelf } from './libc.js';

/** open(2) flags for a rule's anchor (same values on x86_64 and aarch64). */
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;

// Filesystem rights (linux/landlock.h).
const EXECUTE = 1n << 0n;
const WRITE_FILE = 1n << 1n;
const READ_FILE = 1n << 2n;
const READ_DIR = 1n << 3n;
/** Rights a rule on a file (not a directory) may carry. */
const FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | (1n << 14n) | (1n << 15n);

const TCP_BIND_AND_CONNECT = 3n; // LANDLOCK_ACCESS_NET_BIND_TCP | CONNECT_TCP
const SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 3n; // LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | SIGNAL
const RESTRICT_SELF_TSYNC = 1 << 3;

/** Every filesystem right the ABI knows: all denied unless a rule grants them. */
function handledFilesystem(abi: number): bigint {
  if (abi >= 5) return (1n << 16n) - 1n; // + IOCTL_DEV
  if (abi >= 3) return (1n << 15n) - 1n; // + TRUNCATE
  if (abi >= 2) return (1n << 14n) - 1n; // + REFER
  return (1n << 13n) - 1n;
}

export type LandlockSupport = { readonly abi: number } | { readonly abi: 0; readonly reason: string };

/** The kernel's Landlock ABI, or why there is none (not an error: an older kernel). */
export function landlockSupport(): LandlockSupport {
  try {
    return { abi: landlockAbi() };
  } catch (err) {
    if (!(err instanceof LibcError)) throw err;
    if (err.errno === osConstants.errno.ENOSYS) return { abi: 0, reason: 'the kernel has no Landlock (ENOSYS)' };
    if (err.errno === osConstants.errno.EOPNOTSUPP) {
      return { abi: 0, reason: 'Landlock is not enabled at boot (EOPNOTSUPP: add it to lsm=)' };
    }
    return { abi: 0, reason: err.message };
  }
}

export interface FileRules {
  /** Files and directories (with everything beneath) the worker may read; it may write none. */
  readonly read: readonly string[];
}

/** Whether the ruleset binds every thread of the process, or the calling one and its future threads. */
export function bindsEveryThread(abi: number): boolean {
  return abi >= 8;
}

/** Enforce `rules` on this thread (every thread with ABI 8). Throws LibcError or a path's open error. */
export function restrictFiles(abi: number, rules: FileRules): void {
  const handled = handledFilesystem(abi);
  const attr = Buffer.alloc(abi >= 6 ? 24 : abi >= 4 ? 16 : 8); // struct landlock_ruleset_attr as this ABI knows it
  attr.writeBigUInt64LE(handled, 0);
  if (abi >= 4) attr.writeBigUInt64LE(TCP_BIND_AND_CONNECT, 8);
  if (abi >= 6) attr.writeBigUInt64LE(SCOPE_ABSTRACT_UNIX_AND_SIGNAL, 16);
  const ruleset = landlockCreateRuleset(attr);
  try {
    for (const path of rules.read) allow(ruleset, path, READ_FILE | READ_DIR);
    landlockRestrictSelf(ruleset, bindsEveryThread(abi) ? RESTRICT_SELF_TSYNC : 0);
  } finally {
    closeSync(ruleset);
  }
}

function allow(ruleset: number, path: string, rights: bigint): void {
  const anchor = openSync(path, O_PATH | O_CLOEXEC);
  try {
    const granted = fstatSync(anchor).isDirectory() ? rights : rights & FILE_RIGHTS;
    landlockAddPathRule(ruleset, granted, anchor, path);
  } finally {
    closeSync(anchor);
  }
}
