// The compiled seccomp program against its tables: every system call number
// from 0 to 1023 (and the x32 and i386 ways in) run through a BPF interpreter
// for both architectures, the argument rules with the arguments that must
// pass and those that must not, and the calls no table may hold, by numbers
// written out here independently of src/shared/seccompFilter.ts.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CLONE_THREAD_FLAGS,
  IOCTL_REQUESTS,
  NEVER_ALLOWED,
  PRCTL_OPTIONS,
  WORKER_SYSCALLS,
  allowedSyscalls,
  buildIoUringDenial,
  buildSeccompFilter,
} from '../src/shared/seccompFilter.js';
import { AUDIT_ARCH, RET_ALLOW, RET_ENOSYS, RET_EPERM, RET_KILL_PROCESS, runFilter } from './helpers/bpf.js';

const ARCHES = ['x64', 'arm64'] as const;

/** From the kernel's tables (syscall_64.tbl, asm-generic/unistd.h), not from the module under test. */
const NUMBERS = {
  x64: {
    read: 0,
    write: 1,
    mmap: 9,
    futex: 202,
    epoll_pwait: 281,
    accept4: 288,
    clone: 56,
    clone3: 435,
    prctl: 157,
    ioctl: 16,
    socket: 41,
    socketpair: 53,
    connect: 42,
    bind: 49,
    listen: 50,
    accept: 43,
    execve: 59,
    execveat: 322,
    fork: 57,
    vfork: 58,
    ptrace: 101,
    process_vm_readv: 310,
    process_vm_writev: 311,
    kill: 62,
    tgkill: 234,
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    mount: 165,
    unshare: 272,
    bpf: 321,
    seccomp: 317,
    setuid: 105,
  },
  arm64: {
    read: 63,
    write: 64,
    mmap: 222,
    futex: 98,
    epoll_pwait: 22,
    accept4: 242,
    clone: 220,
    clone3: 435,
    prctl: 167,
    ioctl: 29,
    socket: 198,
    socketpair: 199,
    connect: 203,
    bind: 200,
    listen: 201,
    accept: 202,
    execve: 221,
    execveat: 281,
    ptrace: 117,
    process_vm_readv: 270,
    process_vm_writev: 271,
    kill: 129,
    tgkill: 131,
    io_uring_setup: 425,
    io_uring_enter: 426,
    io_uring_register: 427,
    mount: 40,
    unshare: 97,
    bpf: 280,
    seccomp: 277,
    setuid: 146,
  },
} as const;

const PR_SET_NAME = 15;
const PR_SET_DUMPABLE = 4;
const PR_SET_SECCOMP = 22;
const PR_SET_PTRACER = 0x59616d61;
const FIONBIO = 0x5421;
const TIOCSTI = 0x5412; // types into a terminal
const SIOCGIFCONF = 0x8912;
const FORK_FLAGS = 0x01200011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD: what glibc's fork passes
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWNET = 0x40000000;

describe('seccomp program', () => {
  for (const arch of ARCHES) {
    const program = buildSeccompFilter(arch);
    const native = AUDIT_ARCH[arch];
    const n = NUMBERS[arch];
    const run = (nr: number, args: ReadonlyArray<number | bigint> = []): number =>
      runFilter(program, { arch: native, nr, args }).action;

    test(`${arch}: every number 0..1023 is allowed exactly when the table has it; clone3 gets ENOSYS`, () => {
      const allowed = new Set(Object.values(WORKER_SYSCALLS[arch]));
      const ruled = new Set<number>([n.clone, n.prctl, n.ioctl]);
      let allowedCount = 0;
      for (let nr = 0; nr < 1024; nr++) {
        // Arguments that pass every rule, so only the number decides.
        const passing: Readonly<Record<number, number[]>> = {
          [n.clone]: [CLONE_THREAD_FLAGS],
          [n.prctl]: [PR_SET_NAME],
          [n.ioctl]: [3, FIONBIO],
        };
        const args = passing[nr] ?? [];
        const expected = nr === n.clone3 ? RET_ENOSYS : allowed.has(nr) ? RET_ALLOW : RET_EPERM;
        assert.equal(run(nr, args), expected, `syscall ${nr}`);
        if (expected === RET_ALLOW) allowedCount++;
        if (ruled.has(nr)) assert.ok(allowed.has(nr), `rule for ${nr} without a table entry`);
      }
      assert.equal(allowedCount, allowedSyscalls(arch).length);
      for (const nr of [1024, 4095, 0x3fffffff, 0xffffffff]) assert.equal(run(nr), RET_EPERM, `syscall ${nr}`);
    });

    test(`${arch}: never socket, connect, bind, listen, exec, ptrace, other processes, io_uring`, () => {
      const never = Object.entries(n).filter(([name]) => NEVER_ALLOWED.includes(name));
      assert.ok(never.length >= 22, `${never.length} names checked`);
      for (const [name, nr] of never) {
        assert.equal(run(nr, [0, 0, 0, 0, 0, 0]), name === 'clone3' ? RET_ENOSYS : RET_EPERM, name);
        assert.ok(!(name in WORKER_SYSCALLS[arch]), `${name} is in the ${arch} table`);
      }
      const required = ['socket', 'socketpair', 'connect', 'bind', 'listen', 'execve', 'execveat', 'ptrace'];
      for (const name of [...required, 'process_vm_readv', 'process_vm_writev']) {
        assert.ok(NEVER_ALLOWED.includes(name), name);
      }
    });

    test(`${arch}: clone only for threads, prctl and ioctl only for the listed requests`, () => {
      assert.equal(run(n.clone, [CLONE_THREAD_FLAGS]), RET_ALLOW, 'a thread');
      const highBits = (0xdeadn << 32n) | BigInt(CLONE_THREAD_FLAGS);
      assert.equal(run(n.clone, [highBits]), RET_ALLOW, 'upper 32 bits: the kernel ignores them');
      assert.equal(run(n.clone, [FORK_FLAGS]), RET_EPERM, 'fork');
      assert.equal(run(n.clone, [0]), RET_EPERM, 'no flags');
      assert.equal(run(n.clone, [CLONE_THREAD_FLAGS & ~0x100]), RET_EPERM, 'a "thread" without CLONE_VM');
      assert.equal(run(n.clone, [CLONE_THREAD_FLAGS | CLONE_NEWUSER]), RET_EPERM, 'a new user namespace');
      assert.equal(run(n.clone, [CLONE_THREAD_FLAGS | CLONE_NEWNET]), RET_EPERM, 'a new network namespace');
      for (const option of PRCTL_OPTIONS) assert.equal(run(n.prctl, [option]), RET_ALLOW, `prctl ${option}`);
      for (const option of [PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_PTRACER, 0, 38]) {
        assert.equal(run(n.prctl, [option, 1]), RET_EPERM, `prctl ${option}`);
      }
      const hex = (request: number): string => `ioctl 0x${request.toString(16)}`;
      for (const request of IOCTL_REQUESTS) assert.equal(run(n.ioctl, [2, request]), RET_ALLOW, hex(request));
      for (const request of [TIOCSTI, SIOCGIFCONF, 0]) {
        assert.equal(run(n.ioctl, [2, request]), RET_EPERM, hex(request));
      }
    });

    test(`${arch}: another ABI is killed; the x32 bit is refused`, () => {
      const other = arch === 'x64' ? AUDIT_ARCH.arm64 : AUDIT_ARCH.x64;
      assert.equal(runFilter(program, { arch: other, nr: n.read }).action, RET_KILL_PROCESS);
      assert.equal(runFilter(program, { arch: AUDIT_ARCH.i386, nr: n.read }).action, RET_KILL_PROCESS);
      if (arch === 'x64') {
        assert.equal(run(0x40000000 | n.read), RET_EPERM, 'x32 read');
        assert.equal(run(0x40000000 | n.socket), RET_EPERM, 'x32 socket');
      }
    });

    test(`${arch}: a binary search, not a list: few instructions per call, far under the kernel's 4096`, () => {
      assert.ok(program.length / 8 <= 4096);
      let most = 0;
      for (let nr = 0; nr < 1024; nr++) {
        most = Math.max(most, runFilter(program, { arch: native, nr, args: [CLONE_THREAD_FLAGS, FIONBIO] }).steps);
      }
      assert.ok(most <= 40, `up to ${most} instructions for one call`);
    });

    test(`${arch}: the io_uring denial for the supervisor's children: io_uring_setup ENOSYS, the rest allowed`, () => {
      const denial = buildIoUringDenial(arch);
      assert.equal(runFilter(denial, { arch: native, nr: n.io_uring_setup }).action, RET_ENOSYS);
      for (const nr of [n.read, n.execve, n.io_uring_enter, n.socket]) {
        assert.equal(runFilter(denial, { arch: native, nr }).action, RET_ALLOW);
      }
      assert.equal(runFilter(denial, { arch: AUDIT_ARCH.i386, nr: 1 }).action, RET_ALLOW);
    });
  }

  test('the tables hold the same calls on both architectures, less the ones arm64 does not have', () => {
    const arm64 = new Set(allowedSyscalls('arm64'));
    const onlyX64 = allowedSyscalls('x64').filter((name) => !arm64.has(name));
    assert.deepEqual(onlyX64, ['epoll_wait', 'poll', 'rename', 'unlink']);
    assert.deepEqual(
      allowedSyscalls('arm64').filter((name) => !allowedSyscalls('x64').includes(name)),
      [],
    );
  });

  test('other architectures are refused with a clear error', () => {
    for (const arch of ['ia32', 'riscv64', 'ppc64']) {
      assert.throws(() => buildSeccompFilter(arch), /unsupported architecture/);
      assert.throws(() => buildIoUringDenial(arch), /unsupported architecture/);
    }
  });
});
