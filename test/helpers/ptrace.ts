// ptrace from a test, through koffi: reading the seccomp filters installed in
// a running process (PTRACE_SECCOMP_GET_FILTER, as root), and the attach and
// /proc/<pid>/mem attempts of a helper running as another uid.

import { spawnSync } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';

const PTRACE_DETACH = 17;
const PTRACE_SEIZE = 0x4206;
const PTRACE_INTERRUPT = 0x4207;
const PTRACE_SECCOMP_GET_FILTER = 0x420c;
const WNOHANG = 1;
const WALL = 0x40000000;

const libc = koffi.load('libc.so.6');
const ptrace = libc.func('long ptrace(long request, int pid, uintptr_t addr, void *data)');
const waitpid = libc.func('int waitpid(int pid, _Out_ int *status, int options)');

function errnoName(): string {
  const errno = koffi.errno();
  return Object.entries(osConstants.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
}

/**
 * Every seccomp filter of `pid`'s thread `pid`, the first installed first (the kernel counts from the oldest),
 * as struct sock_filter bytes. Needs CAP_SYS_ADMIN and no filter on this
 * process. The thread is stopped (PTRACE_INTERRUPT) for the read, at most for
 * a few seconds, and detached whatever happens.
 */
export function readSeccompFilters(pid: number): Buffer[] {
  if (Number(ptrace(PTRACE_SEIZE, pid, 0, null)) !== 0) throw new Error(`PTRACE_SEIZE ${pid}: ${errnoName()}`);
  try {
    if (Number(ptrace(PTRACE_INTERRUPT, pid, 0, null)) !== 0) {
      throw new Error(`PTRACE_INTERRUPT ${pid}: ${errnoName()}`);
    }
    const status = [0];
    const deadline = Date.now() + 5_000;
    while (waitpid(pid, status, WNOHANG | WALL) === 0) {
      if (Date.now() > deadline) throw new Error(`${pid} did not stop within 5 s`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
    const filters: Buffer[] = [];
    for (let index = 0; index < 16; index++) {
      const count = Number(ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, null));
      if (count < 0) {
        if (koffi.errno() === osConstants.errno.ENOENT) break;
        throw new Error(`PTRACE_SECCOMP_GET_FILTER ${pid} #${index}: ${errnoName()}`);
      }
      const program = Buffer.alloc(count * 8);
      const copied = Number(ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, program));
      if (copied !== count) throw new Error(`filter #${index} changed size`);
      filters.push(program);
    }
    return filters;
  } finally {
    ptrace(PTRACE_DETACH, pid, 0, null);
  }
}

const KOFFI = fileURLToPath(import.meta.resolve('koffi'));

// Run as another uid: PTRACE_SEIZE (no stop; the kernel detaches when the
// helper exits) and an open of /proc/<pid>/mem, each "ok" or the errno.
const INTRUDER = `
const koffi = require(process.argv[1]);
const pid = Number(process.argv[2]);
const ptrace = koffi.load('libc.so.6').func('long ptrace(long request, int pid, uintptr_t addr, void *data)');
const errnos = Object.entries(require('node:os').constants.errno);
const name = (errno) => errnos.find(([, v]) => v === errno)?.[0] ?? String(errno);
const out = {};
out.ptrace = Number(ptrace(${PTRACE_SEIZE}, pid, 0, null)) === 0 ? 'ok' : name(koffi.errno());
const fs = require('node:fs');
try { fs.closeSync(fs.openSync('/proc/' + pid + '/mem', 'r')); out.mem = 'ok'; } catch (e) { out.mem = e.code; }
process.stdout.write(JSON.stringify(out));
`;

/** What a process running as uid/gid gets for ptrace attach and /proc/<pid>/mem of `pid`. */
export function intrudeAs(pid: number, ids: { uid: number; gid: number }): { ptrace: string; mem: string } {
  const options = { ...ids, cwd: '/', env: {}, encoding: 'utf8', timeout: 10_000 } as const;
  const run = spawnSync(process.execPath, ['-e', INTRUDER, KOFFI, String(pid)], options);
  if (run.status !== 0) throw new Error(`intruder as ${ids.uid}:${ids.gid} failed (${run.status}): ${run.stderr}`);
  return JSON.parse(run.stdout) as { ptrace: string; mem: string };
}
