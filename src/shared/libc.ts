// The libc calls Node does not expose, bound with koffi: a listening socket
// the supervisor never accepts on, the hardening layers (prctl, seccomp,
// Landlock), flock for the worker's uid lease and malloc_trim. Linux/glibc only.
//
// Every wrapper reads errno right after its call and throws LibcError (a
// ProxyError) naming the call and the errno, so a caller can say which layer
// failed and why. The library is loaded on first use, so importing this module
// on a platform without libc.so.6 costs nothing until a wrapper is called.

import { constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import koffi, { type IKoffiLib } from 'koffi';
import { ProxyError } from './errors.js';

/** A libc call failed; `errnoName` is the symbolic errno (EPERM, EINVAL...). */
export class LibcError extends ProxyError {
  readonly call: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(call: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    super('ERR_LIBC', `${call} failed: ${name}${detail === undefined ? '' : ` (${detail})`}`);
    this.name = 'LibcError';
    this.call = call;
    this.errno = errno;
    this.errnoName = name;
  }
}

/** Symbolic name of an errno value ("EPERM"), or "errno N" when unknown. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

// prctl(2) options.
export const PR_GET_DUMPABLE = 3;
export const PR_SET_DUMPABLE = 4;
export const PR_SET_NO_NEW_PRIVS = 38;
export const PR_GET_NO_NEW_PRIVS = 39;

// getrlimit(2) resources (same numbers on x86_64 and aarch64).
export const RLIMIT_CORE = 4;
export const RLIMIT_NOFILE = 7;
/** RLIM_INFINITY: rlim_t is 64-bit unsigned on the 64-bit targets we support. */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

// seccomp(2) operation and flag.
export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;

/** seccomp's syscall number per Node architecture (glibc has no wrapper for it). */
const SYS_SECCOMP: Readonly<Record<string, number>> = { x64: 317, arm64: 277 };

// prctl(2) option read back after the filter is installed: 2 = filter mode.
export const PR_GET_SECCOMP = 21;

// Landlock's calls: numbered alike on x86_64 and aarch64 (the unified table from 403 on); no glibc wrappers.
const SYS_LANDLOCK_CREATE_RULESET = 444;
const SYS_LANDLOCK_ADD_RULE = 445;
const SYS_LANDLOCK_RESTRICT_SELF = 446;
const LANDLOCK_CREATE_RULESET_VERSION = 1;
const LANDLOCK_RULE_PATH_BENEATH = 1;

// flock(2) operations.
const LOCK_EX = 2;
const LOCK_NB = 4;

type CFunction = ReturnType<IKoffiLib['func']>;

interface Bindings {
  prctl: CFunction;
  syscall: CFunction;
  getrlimit: CFunction;
  setrlimit: CFunction;
  getpwnam_r: CFunction;
  getpwuid_r: CFunction;
  getgrnam_r: CFunction;
  getgrgid_r: CFunction;
  socket: CFunction;
  setsockopt: CFunction;
  bind: CFunction;
  listen: CFunction;
  getsockname: CFunction;
  close: CFunction;
  flock: CFunction;
  openat: CFunction;
  linkat: CFunction;
  malloc_trim: CFunction;
}

let bindings: Bindings | null = null;

function bind(): Bindings {
  if (bindings !== null) return bindings;
  const libc = koffi.load('libc.so.6');
  // struct passwd / struct group as glibc lays them out; koffi adds the padding.
  // The strings point into the caller's buffer and are copied out by koffi
  // right after the call, while that buffer is still alive.
  koffi.struct('rap_passwd', {
    pw_name: 'const char *',
    pw_passwd: 'const char *',
    pw_uid: 'uint32_t',
    pw_gid: 'uint32_t',
    pw_gecos: 'const char *',
    pw_dir: 'const char *',
    pw_shell: 'const char *',
  });
  koffi.struct('rap_group', {
    gr_name: 'const char *',
    gr_passwd: 'const char *',
    gr_gid: 'uint32_t',
    gr_mem: 'void *',
  });
  // struct sock_fprog: unsigned short len; (6 bytes padding) struct sock_filter *filter.
  koffi.struct('rap_sock_fprog', { len: 'uint16_t', filter: 'void *' });
  bindings = {
    // prctl is variadic in glibc; every extra argument is passed as unsigned long.
    // PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE (both processes) and the read-backs.
    prctl: libc.func('int prctl(int option, ...)'),
    // seccomp(2) has no glibc wrapper: reached through syscall(SYS_seccomp, ...),
    // the only way to pass SECCOMP_FILTER_FLAG_TSYNC (prctl's seccomp mode
    // filters the calling thread only, and Node runs several threads).
    syscall: libc.func('long syscall(long number, ...)'),
    // RLIMIT_CORE 0: a crash of the key holder must not write a core file;
    // RLIMIT_NOFILE raised to its hard limit: the streams the proxy can hold.
    getrlimit: libc.func('int getrlimit(int resource, _Out_ uint8_t *rlim)'),
    setrlimit: libc.func('int setrlimit(int resource, const uint8_t *rlim)'),
    // --uid / --gid names resolved through NSS (the reentrant forms: no static buffers).
    getpwnam_r: libc.func(
      'int getpwnam_r(const char *name, _Out_ rap_passwd *pwd, _Out_ uint8_t *buf, size_t buflen, _Out_ void **result)',
    ),
    getpwuid_r: libc.func(
      'int getpwuid_r(uint32_t uid, _Out_ rap_passwd *pwd, _Out_ uint8_t *buf, size_t buflen, _Out_ void **result)',
    ),
    getgrnam_r: libc.func(
      'int getgrnam_r(const char *name, _Out_ rap_group *grp, _Out_ uint8_t *buf, size_t buflen, _Out_ void **result)',
    ),
    getgrgid_r: libc.func(
      'int getgrgid_r(uint32_t gid, _Out_ rap_group *grp, _Out_ uint8_t *buf, size_t buflen, _Out_ void **result)',
    ),
    // A TCP socket bound and listening without libuv ever polling it: Node
    // cannot bind without accepting, and the supervisor must never accept.
    socket: libc.func('int socket(int domain, int type, int protocol)'),
    setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
    bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
    listen: libc.func('int listen(int fd, int backlog)'),
    getsockname: libc.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)'),
    close: libc.func('int close(int fd)'),
    // The worker uid lease: held until the process ends, however it ends.
    flock: libc.func('int flock(int fd, int operation)'),
    // Dump files, created relative to the directory the supervisor holds open (Node has no openat).
    openat: libc.func('int openat(int dirfd, const char *path, int flags, ...)'),
    linkat: libc.func('int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)'),
    // Both processes, once a burst is over (idleTrim.ts): freed heap returned to the kernel.
    malloc_trim: libc.func('int malloc_trim(size_t pad)'),
  };
  return bindings;
}

// ---------------------------------------------------------------- prctl

/** prctl(option, arg2, 0, 0, 0); returns the result, throws LibcError when it is -1. */
export function prctl(option: number, arg2 = 0, what = `prctl(${option})`): number {
  const ul = 'unsigned long';
  const result = bind().prctl(option, ul, arg2, ul, 0, ul, 0, ul, 0) as number;
  if (result === -1) throw new LibcError(what, koffi.errno());
  return result;
}

/** Irrevocably forbid privilege gains through execve (setuid bits, file caps). */
export function setNoNewPrivs(): void {
  prctl(PR_SET_NO_NEW_PRIVS, 1, 'prctl(PR_SET_NO_NEW_PRIVS)');
}

export function getNoNewPrivs(): boolean {
  return prctl(PR_GET_NO_NEW_PRIVS, 0, 'prctl(PR_GET_NO_NEW_PRIVS)') === 1;
}

/** 0 = not dumpable: no core dumps, no ptrace attach, /proc/<pid>/{mem,environ,...} root-owned. */
export function setDumpable(value: 0 | 1): void {
  prctl(PR_SET_DUMPABLE, value, 'prctl(PR_SET_DUMPABLE)');
}

export function getDumpable(): number {
  return prctl(PR_GET_DUMPABLE, 0, 'prctl(PR_GET_DUMPABLE)');
}

// ---------------------------------------------------------------- seccomp

/**
 * seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) with a classic-BPF program
 * (8 bytes per sock_filter). With SECCOMP_FILTER_FLAG_TSYNC a positive result
 * is the id of a thread that could not be synchronised.
 */
export function seccompSetModeFilter(filter: Buffer, flags: number): void {
  const nr = SYS_SECCOMP[process.arch];
  if (nr === undefined) throw new ProxyError('ERR_LIBC', `seccomp: unsupported architecture ${process.arch}`);
  if (filter.length === 0 || filter.length % 8 !== 0 || filter.length / 8 > 4096) {
    throw new ProxyError('ERR_LIBC', `seccomp: invalid filter of ${filter.length} bytes`);
  }
  const prog = { len: filter.length / 8, filter };
  const result = Number(
    bind().syscall(nr, 'unsigned int', SECCOMP_SET_MODE_FILTER, 'unsigned int', flags, 'rap_sock_fprog *', prog),
  );
  if (result === -1) throw new LibcError('seccomp(SECCOMP_SET_MODE_FILTER)', koffi.errno());
  if (result > 0) {
    throw new ProxyError(
      'ERR_LIBC',
      `seccomp(SECCOMP_SET_MODE_FILTER) failed: thread ${result} could not be synchronized (TSYNC)`,
    );
  }
}

/** prctl(PR_GET_SECCOMP): 0 none, 1 strict, 2 filter (the kernel's account, as in /proc/self/status). */
export function getSeccompMode(): number {
  return prctl(PR_GET_SECCOMP, 0, 'prctl(PR_GET_SECCOMP)');
}

// ---------------------------------------------------------------- Landlock

/**
 * The kernel's Landlock ABI version (1 and up). Throws LibcError: ENOSYS when
 * the kernel was built without it, EOPNOTSUPP when it is not enabled at boot.
 */
export function landlockAbi(): number {
  const version = LANDLOCK_CREATE_RULESET_VERSION;
  const abi = Number(bind().syscall(SYS_LANDLOCK_CREATE_RULESET, 'void *', null, 'size_t', 0, 'uint32_t', version));
  if (abi === -1) throw new LibcError('landlock_create_ruleset(VERSION)', koffi.errno());
  return abi;
}

/** A ruleset from a struct landlock_ruleset_attr (as many u64 fields as the ABI knows); returns its fd. */
export function landlockCreateRuleset(attr: Buffer): number {
  const fd = Number(bind().syscall(SYS_LANDLOCK_CREATE_RULESET, 'void *', attr, 'size_t', attr.length, 'uint32_t', 0));
  if (fd === -1) throw new LibcError('landlock_create_ruleset', koffi.errno());
  return fd;
}

/** Allow `access` beneath the file or directory open (O_PATH) as parentFd. */
export function landlockAddPathRule(rulesetFd: number, access: bigint, parentFd: number, what: string): void {
  const attr = Buffer.alloc(12); // struct landlock_path_beneath_attr, packed: u64 allowed_access, s32 parent_fd
  attr.writeBigUInt64LE(access, 0);
  attr.writeInt32LE(parentFd, 8);
  const type = LANDLOCK_RULE_PATH_BENEATH;
  const syscall = bind().syscall;
  const rc = Number(syscall(SYS_LANDLOCK_ADD_RULE, 'int', rulesetFd, 'int', type, 'void *', attr, 'uint32_t', 0));
  if (rc === -1) throw new LibcError('landlock_add_rule', koffi.errno(), what);
}

/** Enforce the ruleset on the calling thread (and, with the ABI 8 TSYNC flag, every thread). */
export function landlockRestrictSelf(rulesetFd: number, flags: number): void {
  const rc = Number(bind().syscall(SYS_LANDLOCK_RESTRICT_SELF, 'int', rulesetFd, 'uint32_t', flags));
  if (rc === -1) throw new LibcError('landlock_restrict_self', koffi.errno());
}

// ---------------------------------------------------------------- flock

/** flock(fd, LOCK_EX|LOCK_NB): true when taken, false when another open file holds it. */
export function tryLockExclusive(fd: number): boolean {
  if ((bind().flock(fd, LOCK_EX | LOCK_NB) as number) === 0) return true;
  const errno = koffi.errno();
  if (errno === osConstants.errno.EWOULDBLOCK) return false;
  throw new LibcError('flock', errno);
}

// ---------------------------------------------------------------- openat, linkat

// O_NOFOLLOW and O_DIRECTORY differ between x86_64 and aarch64: Node knows this platform's values.
const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = fsConstants;
/** Not in Node's constants; the same on x86_64 and aarch64. */
const O_CLOEXEC = 0o2000000;
const O_TMPFILE = 0o20000000 | O_DIRECTORY;
const AT_FDCWD = -100;
const AT_SYMLINK_FOLLOW = 0x400;

/**
 * A new regular file `name` in the directory open as `dirFd`, for writing:
 * O_CREAT|O_EXCL|O_NOFOLLOW, so an existing name (a file, a symlink, anything)
 * is never opened, followed or truncated (EEXIST). Returns the descriptor.
 */
export function createFileAt(dirFd: number, name: string, mode: number): number {
  const flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  const fd = bind().openat(dirFd, name, flags, 'uint32_t', mode) as number;
  if (fd === -1) throw new LibcError('openat', koffi.errno(), name);
  return fd;
}

/**
 * A file without a name yet in the directory open as `dirFd` (O_TMPFILE), for
 * writing; nobody sees it until linkFileAt names it. Throws LibcError
 * (EOPNOTSUPP, EISDIR: the filesystem cannot).
 */
export function createUnnamedFileAt(dirFd: number, mode: number): number {
  const fd = bind().openat(dirFd, '.', O_WRONLY | O_TMPFILE | O_CLOEXEC, 'uint32_t', mode) as number;
  if (fd === -1) throw new LibcError('openat(O_TMPFILE)', koffi.errno());
  return fd;
}

/** Give the unnamed file open as `fd` the name `name` in `dirFd`; an existing name is never replaced (EEXIST). */
export function linkFileAt(fd: number, dirFd: number, name: string): void {
  const rc = bind().linkat(AT_FDCWD, `/proc/self/fd/${fd}`, dirFd, name, AT_SYMLINK_FOLLOW) as number;
  if (rc === -1) throw new LibcError('linkat', koffi.errno(), name);
}

// ---------------------------------------------------------------- rlimits

export interface Rlimit {
  readonly soft: bigint;
  readonly hard: bigint;
}

export function getrlimit(resource: number, what = `getrlimit(${resource})`): Rlimit {
  const rlim = Buffer.alloc(16); // struct rlimit { rlim_t rlim_cur, rlim_max; }
  if ((bind().getrlimit(resource, rlim) as number) !== 0) throw new LibcError(what, koffi.errno());
  return { soft: rlim.readBigUInt64LE(0), hard: rlim.readBigUInt64LE(8) };
}

export function setrlimit(resource: number, limit: Rlimit, what = `setrlimit(${resource})`): void {
  const rlim = Buffer.alloc(16);
  rlim.writeBigUInt64LE(limit.soft, 0);
  rlim.writeBigUInt64LE(limit.hard, 8);
  if ((bind().setrlimit(resource, rlim) as number) !== 0) throw new LibcError(what, koffi.errno());
}

/** "unlimited" or the decimal value, as /proc/<pid>/limits prints it. */
export function formatRlimitValue(value: bigint): string {
  return value === RLIM_INFINITY ? 'unlimited' : value.toString();
}

// ---------------------------------------------------------------- user/group databases

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
}

/** Run a get*_r call, growing the string buffer on ERANGE; null when not found. */
function lookup<T>(
  call: string,
  fn: (entry: Record<string, unknown>, buf: Buffer, result: unknown[]) => number,
  convert: (entry: Record<string, unknown>) => T,
): T | null {
  for (let size = 4096; size <= 1 << 20; size *= 4) {
    const entry: Record<string, unknown> = {};
    const buf = Buffer.alloc(size);
    const result: unknown[] = [null];
    const rc = fn(entry, buf, result);
    if (rc === osConstants.errno.ERANGE) continue;
    // glibc returns 0 with a NULL result for "not found"; other libcs use these.
    if (rc === osConstants.errno.ENOENT || rc === osConstants.errno.ESRCH) return null;
    if (rc !== 0) throw new LibcError(call, rc);
    return result[0] === null ? null : convert(entry);
  }
  throw new LibcError(call, osConstants.errno.ERANGE, 'entry too large');
}

const toPasswd = (e: Record<string, unknown>): PasswdEntry => ({
  name: String(e.pw_name),
  uid: Number(e.pw_uid),
  gid: Number(e.pw_gid),
});
const toGroup = (e: Record<string, unknown>): GroupEntry => ({ name: String(e.gr_name), gid: Number(e.gr_gid) });

/** getpwnam_r: the user's entry, or null when there is none. */
export function getpwnam(name: string): PasswdEntry | null {
  return lookup('getpwnam_r', (e, b, r) => bind().getpwnam_r(name, e, b, b.length, r) as number, toPasswd);
}

export function getpwuid(uid: number): PasswdEntry | null {
  return lookup('getpwuid_r', (e, b, r) => bind().getpwuid_r(uid, e, b, b.length, r) as number, toPasswd);
}

/** getgrnam_r: the group's entry, or null when there is none. */
export function getgrnam(name: string): GroupEntry | null {
  return lookup('getgrnam_r', (e, b, r) => bind().getgrnam_r(name, e, b, b.length, r) as number, toGroup);
}

export function getgrgid(gid: number): GroupEntry | null {
  return lookup('getgrgid_r', (e, b, r) => bind().getgrgid_r(gid, e, b, b.length, r) as number, toGroup);
}

// ---------------------------------------------------------------- ids

// ---------------------------------------------------------------- sockets

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;

/** socket+bind+listen on an IPv4 address; returns the fd and the bound port. Throws LibcError. */
export function listenTcp4(
  address: readonly [number, number, number, number],
  port: number,
  backlog: number,
): { fd: number; port: number } {
  const b = bind();
  const fd = b.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new LibcError('socket', koffi.errno());
  const check = (result: number, call: string): void => {
    if (result === 0) return;
    const errno = koffi.errno();
    b.close(fd);
    throw new LibcError(call, errno);
  };
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  check(b.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) as number, 'setsockopt');
  const addr = Buffer.alloc(16); // struct sockaddr_in
  addr.writeUInt16LE(AF_INET, 0);
  addr.writeUInt16BE(port, 2);
  addr.set(address, 4);
  check(b.bind(fd, addr, addr.length) as number, 'bind');
  check(b.listen(fd, backlog) as number, 'listen');
  const bound = Buffer.alloc(16);
  check(b.getsockname(fd, bound, [bound.length]) as number, 'getsockname');
  return { fd, port: bound.readUInt16BE(2) };
}

export function closeFd(fd: number): void {
  bind().close(fd);
}

/** Return the free memory at the top and inside glibc's heaps to the kernel. */
export function mallocTrim(): void {
  bind().malloc_trim(0);
}
