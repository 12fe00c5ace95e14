// The worker's seccomp filter: default deny. One table per architecture lists
// every system call the worker makes once its sandbox is in place (measured
// with strace over the test suite on Node 20, 22, 24 and 26; docs/SECURITY.md
// says how); anything else fails with EPERM. A few calls are allowed only
// with certain arguments: clone for threads, prctl and ioctl for the requests
// Node makes. clone3 answers ENOSYS so glibc falls back to clone, whose flags
// the filter can read (clone3's are behind a pointer).
//
// Never in a table (the unit test holds them to it): a new socket, a
// connection, a program, another process's memory, io_uring (its operations
// would not pass through this filter at all).
//
// Shared: the worker installs it, the supervisor reports its size, the tests
// run the compiled program through a BPF interpreter.

import { constants as osConstants } from 'node:os';

export type FilterArch = 'x64' | 'arm64';

/** System call numbers by name for one architecture. */
export type SyscallTable = Readonly<Record<string, number>>;

// Grouped by why the worker needs them. Beside what it was seen to call: the
// equivalents other glibc and libuv versions use for the same thing (fstat as
// newfstatat or statx, epoll_wait, poll), what starting a thread
// takes, and signal return and the clock calls the vDSO may fall back to.

// x86_64: arch/x86/entry/syscalls/syscall_64.tbl.
const X86_64: SyscallTable = {
  // memory (pkey_*: V8's write protection of generated code)
  brk: 12,
  mmap: 9,
  munmap: 11,
  mprotect: 10,
  mremap: 25,
  madvise: 28,
  pkey_alloc: 330,
  pkey_free: 331,
  pkey_mprotect: 329,
  // threads and their synchronisation
  clone: 56,
  futex: 202,
  set_robust_list: 273,
  rseq: 334,
  sched_yield: 24,
  sched_getaffinity: 204,
  sched_getparam: 143,
  sched_getscheduler: 145,
  gettid: 186,
  getpid: 39,
  exit: 60,
  exit_group: 231,
  // its own signals only: no kill, no tgkill
  rt_sigaction: 13,
  rt_sigprocmask: 14,
  rt_sigreturn: 15,
  sigaltstack: 131,
  restart_syscall: 219,
  // clocks and sleeping
  clock_gettime: 228,
  clock_getres: 229,
  clock_nanosleep: 230,
  nanosleep: 35,
  gettimeofday: 96,
  // descriptors it holds
  read: 0,
  write: 1,
  writev: 20,
  close: 3,
  fstat: 5,
  newfstatat: 262,
  statx: 332,
  fcntl: 72,
  ioctl: 16,
  fsync: 74,
  // paths: reading its code, what Landlock and the permission model let it reach (it writes no file)
  openat: 257,
  getcwd: 79,
  // the event loop
  epoll_create1: 291,
  epoll_ctl: 233,
  epoll_wait: 232,
  epoll_pwait: 281,
  epoll_pwait2: 441,
  eventfd2: 290,
  pipe2: 293,
  poll: 7,
  ppoll: 271,
  // sockets it was given or accepted: no socket, connect, bind or listen
  accept4: 288,
  shutdown: 48,
  getsockname: 51,
  getsockopt: 55,
  setsockopt: 54,
  // requests checked by argument below; randomness
  prctl: 157,
  getrandom: 318,
};

// aarch64: include/uapi/asm-generic/unistd.h (no stat, poll or epoll_wait
// there: only their p- forms).
const AARCH64: SyscallTable = {
  brk: 214,
  mmap: 222,
  munmap: 215,
  mprotect: 226,
  mremap: 216,
  madvise: 233,
  pkey_alloc: 289,
  pkey_free: 290,
  pkey_mprotect: 288,
  clone: 220,
  futex: 98,
  set_robust_list: 99,
  rseq: 293,
  sched_yield: 124,
  sched_getaffinity: 123,
  sched_getparam: 121,
  sched_getscheduler: 120,
  gettid: 178,
  getpid: 172,
  exit: 93,
  exit_group: 94,
  rt_sigaction: 134,
  rt_sigprocmask: 135,
  rt_sigreturn: 139,
  sigaltstack: 132,
  restart_syscall: 128,
  clock_gettime: 113,
  clock_getres: 114,
  clock_nanosleep: 115,
  nanosleep: 101,
  gettimeofday: 169,
  read: 63,
  write: 64,
  writev: 66,
  close: 57,
  fstat: 80,
  newfstatat: 79,
  statx: 291,
  fcntl: 25,
  ioctl: 29,
  fsync: 82,
  openat: 56,
  getcwd: 17,
  epoll_create1: 20,
  epoll_ctl: 21,
  epoll_pwait: 22,
  epoll_pwait2: 441,
  eventfd2: 19,
  pipe2: 59,
  ppoll: 73,
  accept4: 242,
  shutdown: 210,
  getsockname: 204,
  getsockopt: 209,
  setsockopt: 208,
  prctl: 167,
  getrandom: 278,
};

/** Every call the worker may make, per architecture (Node's process.arch names). */
export const WORKER_SYSCALLS: Readonly<Record<FilterArch, SyscallTable>> = { x64: X86_64, arm64: AARCH64 };

/** Calls no table may ever hold. */
export const NEVER_ALLOWED: readonly string[] = [
  'socket',
  'socketpair',
  'connect',
  'bind',
  'listen',
  'accept',
  'execve',
  'execveat',
  'fork',
  'vfork',
  'clone3',
  'ptrace',
  'process_vm_readv',
  'process_vm_writev',
  'pidfd_open',
  'pidfd_getfd',
  'kcmp',
  'kill',
  'tkill',
  'tgkill',
  'rt_sigqueueinfo',
  'rt_tgsigqueueinfo',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'mount',
  'umount2',
  'unshare',
  'setns',
  'chroot',
  'pivot_root',
  'bpf',
  'perf_event_open',
  'userfaultfd',
  'keyctl',
  'add_key',
  'request_key',
  'seccomp',
  'personality',
  'setuid',
  'setgid',
  'setreuid',
  'setregid',
  'setresuid',
  'setresgid',
  'setgroups',
  'capset',
];

/** clone3's number on both architectures: answered ENOSYS so glibc falls back to clone. */
const CLONE3 = 435;
/** io_uring_setup's number on both architectures. */
const IO_URING_SETUP = 425;

// clone(2) flags. A thread shares memory, files, signal handlers and thread group;
// anything without all of these would be a new process.
const CLONE = { VM: 0x100, FS: 0x200, FILES: 0x400, SIGHAND: 0x800, THREAD: 0x10000, SYSVSEM: 0x40000 } as const;
/** What a thread must share (glibc's pthread_create passes all of them). */
export const CLONE_THREAD_FLAGS = CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM;
/** CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET: never, even for a thread. */
export const CLONE_NAMESPACE_FLAGS =
  0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** prctl options: thread names (libuv, V8), anonymous mapping names (glibc), and reading its own state. */
export const PRCTL_OPTIONS: readonly number[] = [
  3, // PR_GET_DUMPABLE
  15, // PR_SET_NAME
  16, // PR_GET_NAME
  21, // PR_GET_SECCOMP
  39, // PR_GET_NO_NEW_PRIVS
  0x53564d41, // PR_SET_VMA
];

/** ioctl requests (the same numbers on both architectures): non-blocking mode, close-on-exec, "is it a terminal". */
export const IOCTL_REQUESTS: readonly number[] = [
  0x5421, // FIONBIO
  0x5451, // FIOCLEX
  0x5450, // FIONCLEX
  0x5401, // TCGETS
  0x5413, // TIOCGWINSZ
];

/** A call allowed only when one of its arguments passes a test (on the low 32 bits: the kernel reads an int there). */
interface ArgumentRule {
  readonly arg: number;
  /** Allowed when the argument is one of these. */
  readonly oneOf?: readonly number[];
  /** Allowed when the argument has every one of these bits and none of `noneOf`. */
  readonly allOf?: number;
  readonly noneOf?: number;
}

const ARGUMENT_RULES: Readonly<Record<string, ArgumentRule>> = {
  clone: { arg: 0, allOf: CLONE_THREAD_FLAGS, noneOf: CLONE_NAMESPACE_FLAGS },
  prctl: { arg: 0, oneOf: PRCTL_OPTIONS },
  ioctl: { arg: 1, oneOf: IOCTL_REQUESTS },
};

const AUDIT_ARCH: Readonly<Record<FilterArch, number>> = {
  x64: 0xc000003e, // AUDIT_ARCH_X86_64
  arm64: 0xc00000b7, // AUDIT_ARCH_AARCH64
};

/** x32 ABI calls on x86_64 carry this bit in the number; denied, whatever the number. */
const X32_SYSCALL_BIT = 0x40000000;

// ---------------------------------------------------------------- BPF assembly

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JA = 0x05; // BPF_JMP | BPF_JA: k is the offset, up to 2^32
const BPF_JMP_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JMP_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06; // BPF_RET | BPF_K

// seccomp return actions (linux/seccomp.h).
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
const DENY = SECCOMP_RET_ERRNO | osConstants.errno.EPERM;
const NOSYS = SECCOMP_RET_ERRNO | osConstants.errno.ENOSYS;

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
/** The low 32 bits of args[n] (little-endian on both architectures). */
const argLow = (n: number): number => 16 + 8 * n;

interface Instruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  /** A constant, or a label for BPF_JA. */
  readonly k: number | string;
}

/** A tiny assembler: conditional jumps skip 0 or 1 instruction; BPF_JA goes to a label. */
class BpfProgram {
  private readonly code: Instruction[] = [];
  private readonly labels = new Map<string, number>();

  load(offset: number): void {
    this.code.push({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset });
  }
  and(k: number): void {
    this.code.push({ code: BPF_ALU_AND_K, jt: 0, jf: 0, k });
  }
  /** Run the next instruction when the test holds, skip it otherwise. */
  when(code: number, k: number): void {
    this.code.push({ code, jt: 0, jf: 1, k });
  }
  /** Skip the next instruction when the test holds. */
  unless(code: number, k: number): void {
    this.code.push({ code, jt: 1, jf: 0, k });
  }
  goto(label: string): void {
    this.code.push({ code: BPF_JMP_JA, jt: 0, jf: 0, k: label });
  }
  ret(action: number): void {
    this.code.push({ code: BPF_RET_K, jt: 0, jf: 0, k: action });
  }
  label(name: string): void {
    this.labels.set(name, this.code.length);
  }

  /** 8 bytes per struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (little-endian). */
  assemble(): Buffer {
    const out = Buffer.alloc(this.code.length * 8);
    this.code.forEach((ins, index) => {
      let k = ins.k;
      if (typeof k === 'string') {
        const at = this.labels.get(k);
        if (at === undefined || at <= index) throw new Error(`BPF: no label ${k} after instruction ${index}`);
        k = at - index - 1;
      }
      out.writeUInt16LE(ins.code, index * 8);
      out.writeUInt8(ins.jt, index * 8 + 2);
      out.writeUInt8(ins.jf, index * 8 + 3);
      out.writeUInt32LE(k >>> 0, index * 8 + 4);
    });
    return out;
  }
}

function isFilterArch(arch: string): arch is FilterArch {
  return arch === 'x64' || arch === 'arm64';
}

function table(arch: string): SyscallTable {
  if (!isFilterArch(arch)) {
    throw new Error(`unsupported architecture ${arch}: the seccomp filter knows x64 (x86_64) and arm64 (aarch64) only`);
  }
  return WORKER_SYSCALLS[arch];
}

/** The names the worker may call on `arch`, sorted. */
export function allowedSyscalls(arch: string): string[] {
  return Object.keys(table(arch)).sort();
}

type Action = { readonly ret: number } | { readonly rule: string };

/** A binary search over sorted numbers: about log2(n) comparisons for any call. */
function emitSearch(p: BpfProgram, entries: ReadonlyArray<readonly [number, Action]>, depth: string): void {
  if (entries.length <= 3) {
    for (const [nr, action] of entries) {
      p.when(BPF_JMP_JEQ_K, nr);
      if ('ret' in action) p.ret(action.ret);
      else p.goto(`rule:${action.rule}`);
    }
    p.ret(DENY);
    return;
  }
  const middle = entries.length >> 1;
  const upper = `${depth}+`;
  p.when(BPF_JMP_JGE_K, (entries[middle] as readonly [number, Action])[0]);
  p.goto(upper);
  emitSearch(p, entries.slice(0, middle), `${depth}-`);
  p.label(upper);
  emitSearch(p, entries.slice(middle), upper);
}

function emitRule(p: BpfProgram, name: string, rule: ArgumentRule): void {
  p.label(`rule:${name}`);
  p.load(argLow(rule.arg));
  for (const value of rule.oneOf ?? []) {
    p.when(BPF_JMP_JEQ_K, value);
    p.ret(SECCOMP_RET_ALLOW);
  }
  if (rule.noneOf !== undefined) {
    p.when(BPF_JMP_JSET_K, rule.noneOf);
    p.ret(DENY);
  }
  if (rule.allOf !== undefined) {
    p.and(rule.allOf);
    p.when(BPF_JMP_JEQ_K, rule.allOf);
    p.ret(SECCOMP_RET_ALLOW);
  }
  p.ret(DENY);
}

/**
 * The seccomp program for `arch`, as struct sock_filter entries:
 *   another audit arch (i386 or x32 entry on x86_64)  -> KILL_PROCESS
 *   the x32 bit in the number                         -> EPERM
 *   clone3                                            -> ENOSYS
 *   a call in the table (arguments checked where a rule says) -> ALLOW
 *   anything else                                     -> EPERM
 */
export function buildSeccompFilter(arch: string): Buffer {
  const calls = table(arch);
  const p = new BpfProgram();
  p.load(OFFSET_ARCH);
  p.unless(BPF_JMP_JEQ_K, AUDIT_ARCH[arch as FilterArch]);
  p.ret(SECCOMP_RET_KILL_PROCESS);
  p.load(OFFSET_NR);
  if (arch === 'x64') {
    p.when(BPF_JMP_JGE_K, X32_SYSCALL_BIT);
    p.ret(DENY);
  }
  const entries: Array<readonly [number, Action]> = Object.entries(calls).map(([name, nr]) => [
    nr,
    name in ARGUMENT_RULES ? { rule: name } : { ret: SECCOMP_RET_ALLOW },
  ]);
  entries.push([CLONE3, { ret: NOSYS }]);
  entries.sort((a, b) => a[0] - b[0]);
  emitSearch(p, entries, 'n');
  for (const [name, rule] of Object.entries(ARGUMENT_RULES)) emitRule(p, name, rule);
  return p.assemble();
}

/**
 * A filter for the supervisor's main thread, inherited by the worker it
 * spawns: io_uring_setup answers ENOSYS (everything else is allowed), so the
 * worker's libuv never opens a ring whose operations its own filter could not
 * see. libuv falls back to plain epoll; other architectures pass unchanged.
 */
export function buildIoUringDenial(arch: string): Buffer {
  table(arch);
  const p = new BpfProgram();
  p.load(OFFSET_ARCH);
  p.when(BPF_JMP_JEQ_K, AUDIT_ARCH[arch as FilterArch]);
  p.goto('native');
  p.ret(SECCOMP_RET_ALLOW);
  p.label('native');
  p.load(OFFSET_NR);
  p.when(BPF_JMP_JEQ_K, IO_URING_SETUP);
  p.ret(NOSYS);
  p.ret(SECCOMP_RET_ALLOW);
  return p.assemble();
}
