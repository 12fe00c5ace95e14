// The worker's in-process sandbox, installed after it listens and before it
// accepts a connection:
//   1. no_new_privs: execve can never grant privileges again (and lets an
//      unprivileged process install a seccomp filter);
//   2. a seccomp filter, on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC:
//      Node runs a dozen threads), denying the system calls a proxy never needs
//      with EPERM (execve first: a compromised worker cannot run a program) and
//      killing the process if a call arrives through another architecture's ABI;
//   3. a capability report: CapEff from /proc/self/status must be 0 (the
//      supervisor starts the worker as another uid, which clears them).
// Fail closed: a layer that cannot be installed throws SandboxError naming the
// layer and the errno, unless { allowWeaker: true }, which records it instead.

import { readProcStatus } from '../shared/procStatus.js';
import { constants as osConstants } from 'node:os';
import { LayerMissingError } from '../shared/errors.js';
export { WORKER_SANDBOX_READ_PATHS } from '../shared/constants.js';
import {
  LibcError,
  SECCOMP_FILTER_FLAG_TSYNC,
  getNoNewPrivs,
  seccompSetModeFilter,
  setNoNewPrivs,
} from '../shared/libc.js';

export type SandboxLayer = 'no_new_privs' | 'seccomp' | 'capabilities';

export interface MissingLayer {
  readonly layer: SandboxLayer;
  readonly reason: string;
}

export interface SandboxOptions {
  /** Record a layer that cannot be installed instead of throwing (--allow-weaker-sandbox). */
  readonly allowWeaker?: boolean;
  /** Accept a non-zero CapEff without counting it as missing (the operator asked for --uid 0). */
  readonly allowCapabilities?: boolean;
}

export interface SandboxLayers {
  readonly arch: string;
  /** Read back with PR_GET_NO_NEW_PRIVS. */
  readonly noNewPrivs: boolean;
  /** The filter is installed on every thread. */
  readonly seccomp: boolean;
  /** "Seccomp:" from /proc/self/status (2 = filter), null when unreadable. */
  readonly seccompMode: number | null;
  /** The system calls the filter answers with EPERM on this architecture. */
  readonly deniedSyscalls: readonly string[];
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


// ---------------------------------------------------------------- syscall table

/** The calls denied with EPERM, by name; a name missing from an arch table does not exist there. */
export const DENIED_SYSCALLS: readonly string[] = [
  // running programs
  'execve', 'execveat', 'fork', 'vfork',
  // reading or writing other processes
  'ptrace', 'process_vm_readv', 'process_vm_writev', 'pidfd_getfd', 'kcmp',
  // file systems and namespaces
  'mount', 'umount2', 'pivot_root', 'chroot', 'setns', 'unshare',
  'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount', 'open_tree', 'mount_setattr',
  'open_by_handle_at', 'name_to_handle_at', 'quotactl', 'swapon', 'swapoff', 'acct',
  // kernel attack surface a proxy never needs
  'bpf', 'keyctl', 'add_key', 'request_key', 'perf_event_open', 'personality', 'userfaultfd',
  'io_uring_setup', 'lookup_dcookie', 'syslog', 'uselib', 'iopl', 'ioperm',
  // the machine itself
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'reboot',
  'settimeofday', 'clock_settime', 'vhangup',
];

/** Syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h. */
export const SYSCALL_NUMBERS: Readonly<Record<'x64' | 'arm64', Readonly<Record<string, number>>>> = {
  x64: {
    execve: 59, execveat: 322, fork: 57, vfork: 58, clone: 56, clone3: 435,
    ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, pidfd_getfd: 438, kcmp: 312,
    mount: 165, umount2: 166, pivot_root: 155, chroot: 161, setns: 308, unshare: 272,
    fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, move_mount: 429, open_tree: 428, mount_setattr: 442,
    open_by_handle_at: 304, name_to_handle_at: 303, quotactl: 179, swapon: 167, swapoff: 168, acct: 163,
    bpf: 321, keyctl: 250, add_key: 248, request_key: 249, perf_event_open: 298, personality: 135,
    userfaultfd: 323, io_uring_setup: 425, lookup_dcookie: 212, syslog: 103, uselib: 134, iopl: 172, ioperm: 173,
    kexec_load: 246, kexec_file_load: 320, init_module: 175, finit_module: 313, delete_module: 176, reboot: 169,
    settimeofday: 164, clock_settime: 227, vhangup: 153,
  },
  arm64: {
    execve: 221, execveat: 281, clone: 220, clone3: 435,
    ptrace: 117, process_vm_readv: 270, process_vm_writev: 271, pidfd_getfd: 438, kcmp: 272,
    mount: 40, umount2: 39, pivot_root: 41, chroot: 51, setns: 268, unshare: 97,
    fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, move_mount: 429, open_tree: 428, mount_setattr: 442,
    open_by_handle_at: 265, name_to_handle_at: 264, quotactl: 60, swapon: 224, swapoff: 225, acct: 89,
    bpf: 280, keyctl: 219, add_key: 217, request_key: 218, perf_event_open: 241, personality: 92,
    userfaultfd: 282, io_uring_setup: 425, lookup_dcookie: 18, syslog: 116,
    kexec_load: 104, kexec_file_load: 294, init_module: 105, finit_module: 273, delete_module: 106, reboot: 142,
    settimeofday: 170, clock_settime: 112, vhangup: 58,
  },
};

const AUDIT_ARCH: Readonly<Record<'x64' | 'arm64', number>> = {
  x64: 0xc000003e, // AUDIT_ARCH_X86_64
  arm64: 0xc00000b7, // AUDIT_ARCH_AARCH64
};

/** x32 ABI calls on x86_64 carry this bit in the number; they would bypass the table. */
const X32_SYSCALL_BIT = 0x40000000;

// clone() flags that create namespaces: the same effect as unshare, so denied too.
// (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)
const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

// ---------------------------------------------------------------- BPF assembly

// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JMP_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K = 0x06; // BPF_RET | BPF_K

// seccomp return actions (linux/seccomp.h).
const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_ERRNO = 0x00050000;
const SECCOMP_RET_ALLOW = 0x7fff0000;

// struct seccomp_data offsets: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16; // little-endian: the low 32 bits of args[0]

type Target = number | string; // a relative offset, or a label

interface Instruction {
  readonly code: number;
  readonly jt: Target;
  readonly jf: Target;
  readonly k: number;
}

/** A tiny assembler: jumps name labels, resolved to the u8 forward offsets BPF wants. */
class BpfProgram {
  private readonly code: Instruction[] = [];
  private readonly labels = new Map<string, number>();

  load(offset: number): void {
    this.code.push({ code: BPF_LD_W_ABS, jt: 0, jf: 0, k: offset });
  }
  jump(code: number, k: number, jt: Target, jf: Target): void {
    this.code.push({ code, jt, jf, k });
  }
  ret(action: number): void {
    this.code.push({ code: BPF_RET_K, jt: 0, jf: 0, k: action });
  }
  label(name: string): void {
    this.labels.set(name, this.code.length);
  }

  /** 8 bytes per struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (host order: little-endian). */
  assemble(): Buffer {
    const out = Buffer.alloc(this.code.length * 8);
    this.code.forEach((ins, index) => {
      out.writeUInt16LE(ins.code, index * 8);
      out.writeUInt8(this.resolve(ins.jt, index), index * 8 + 2);
      out.writeUInt8(this.resolve(ins.jf, index), index * 8 + 3);
      out.writeUInt32LE(ins.k >>> 0, index * 8 + 4);
    });
    return out;
  }

  private resolve(target: Target, index: number): number {
    if (typeof target === 'number') return target;
    const at = this.labels.get(target);
    if (at === undefined) throw new Error(`BPF: undefined label ${target}`);
    const offset = at - index - 1;
    if (offset < 0 || offset > 255) throw new Error(`BPF: jump to ${target} out of range (${offset})`);
    return offset;
  }
}

function isSupportedArch(arch: string): arch is 'x64' | 'arm64' {
  return arch === 'x64' || arch === 'arm64';
}

/** The names from DENIED_SYSCALLS that exist on `arch` (Node's process.arch naming). */
export function deniedSyscallsFor(arch: string): string[] {
  if (!isSupportedArch(arch)) throw unsupportedArch(arch);
  const table = SYSCALL_NUMBERS[arch];
  return DENIED_SYSCALLS.filter((name) => table[name] !== undefined);
}

function unsupportedArch(arch: string): Error {
  return new Error(`unsupported architecture ${arch}: the seccomp filter knows x64 (x86_64) and arm64 (aarch64) only`);
}

/**
 * The seccomp program for `arch` as an array of struct sock_filter:
 *   wrong audit arch                      -> KILL_PROCESS
 *   x32 ABI call (x86_64)                 -> EPERM
 *   a DENIED_SYSCALLS call                -> EPERM
 *   clone with a namespace flag           -> EPERM
 *   clone3 (flags are behind a pointer)   -> ENOSYS, so libc falls back to clone
 *   anything else                         -> ALLOW
 */
export function buildSeccompFilter(arch: string): Buffer {
  if (!isSupportedArch(arch)) throw unsupportedArch(arch);
  const table = SYSCALL_NUMBERS[arch];
  const p = new BpfProgram();
  p.load(OFFSET_ARCH);
  p.jump(BPF_JMP_JEQ_K, AUDIT_ARCH[arch], 1, 0);
  p.ret(SECCOMP_RET_KILL_PROCESS);
  p.load(OFFSET_NR);
  if (arch === 'x64') p.jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 'deny', 0);
  for (const name of deniedSyscallsFor(arch)) p.jump(BPF_JMP_JEQ_K, table[name] as number, 'deny', 0);
  p.jump(BPF_JMP_JEQ_K, table.clone3 as number, 'nosys', 0);
  p.jump(BPF_JMP_JEQ_K, table.clone as number, 0, 'allow');
  p.load(OFFSET_ARG0_LOW);
  p.jump(BPF_JMP_JSET_K, CLONE_NAMESPACE_FLAGS, 'deny', 'allow');
  p.label('allow');
  p.ret(SECCOMP_RET_ALLOW);
  p.label('deny');
  p.ret(SECCOMP_RET_ERRNO | osConstants.errno.EPERM);
  p.label('nosys');
  p.ret(SECCOMP_RET_ERRNO | osConstants.errno.ENOSYS);
  return p.assemble();
}

// ---------------------------------------------------------------- status

interface ProcStatus {
  readonly capEff: string;
  readonly seccompMode: number | null;
}

/** CapEff and Seccomp from /proc/self/status (the kernel's own account). */
function ownStatus(): ProcStatus {
  const status = readProcStatus('self');
  const capEff = status.get('CapEff');
  if (capEff === undefined || !/^[0-9a-f]+$/i.test(capEff)) throw new Error('no CapEff line in /proc/self/status');
  const seccomp = status.get('Seccomp');
  return { capEff, seccompMode: seccomp === undefined ? null : Number(seccomp) };
}

function explain(err: unknown): string {
  if (err instanceof LibcError) {
    const hints: Record<string, string> = {
      EINVAL: 'the kernel does not support it',
      EACCES: 'neither no_new_privs nor CAP_SYS_ADMIN',
      EFAULT: 'bad filter address',
      ENOSYS: 'the kernel has no seccomp support',
    };
    const hint = hints[err.errnoName];
    return hint === undefined ? err.message : `${err.message}: ${hint}`;
  }
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string' && 'message' in err) {
    return `${err.code}: ${String(err.message)}`;
  }
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------- install

let installed: SandboxLayers | null = null;

/**
 * Install every layer this process can take, in order. Idempotent: a second
 * call returns the first result (stacking a second filter would be harmless
 * but confusing in /proc). Throws SandboxError for the first missing layer
 * unless options.allowWeaker.
 */
export function installWorkerSandbox(options: SandboxOptions = {}): SandboxLayers {
  if (installed !== null) return installed;
  const missing: MissingLayer[] = [];
  const fail = (layer: SandboxLayer, reason: string): void => {
    if (options.allowWeaker !== true) throw new SandboxError(layer, reason);
    missing.push({ layer, reason });
  };
  const arch = process.arch;
  const linux = process.platform === 'linux';

  let noNewPrivs = false;
  if (!linux) fail('no_new_privs', `not available on ${process.platform}`);
  else {
    try {
      setNoNewPrivs();
      noNewPrivs = getNoNewPrivs();
      if (!noNewPrivs) fail('no_new_privs', 'PR_GET_NO_NEW_PRIVS still reads 0');
    } catch (err) {
      fail('no_new_privs', explain(err));
    }
  }

  let seccomp = false;
  let deniedSyscalls: string[] = [];
  if (!linux) fail('seccomp', `not available on ${process.platform}`);
  else {
    try {
      const filter = buildSeccompFilter(arch);
      seccompSetModeFilter(filter, SECCOMP_FILTER_FLAG_TSYNC);
      seccomp = true;
      deniedSyscalls = deniedSyscallsFor(arch);
    } catch (err) {
      fail('seccomp', explain(err));
    }
  }

  let capEff = 'unknown';
  let seccompMode: number | null = null;
  try {
    const status = ownStatus();
    capEff = status.capEff;
    seccompMode = status.seccompMode;
  } catch (err) {
    fail('capabilities', `cannot read /proc/self/status: ${explain(err)}`);
  }
  if (seccomp && seccompMode !== null && seccompMode !== 2) {
    seccomp = false;
    fail('seccomp', `the filter was accepted but /proc/self/status reads Seccomp: ${seccompMode}`);
  }
  const noCapabilities = capEff !== 'unknown' && BigInt(`0x${capEff}`) === 0n;
  if (capEff !== 'unknown' && !noCapabilities && options.allowCapabilities !== true) {
    fail('capabilities', `CapEff is ${capEff}, not 0 (the worker runs with capabilities: start it as another uid)`);
  }

  installed = { arch, noNewPrivs, seccomp, seccompMode, deniedSyscalls, capEff, noCapabilities, missing };
  return installed;
}
