// `--profile DIR`: where the CPU goes under the small-request load (c=1 by
// default), for every process involved. Each process is sampled with `perf
// record -g` (native frames: V8 builtins, libuv, libc, the kernel; the original
// is a stripped binary, so only its shared objects and the kernel have names).
// Our supervisor runs with --perf-basic-prof-only-functions, so its JavaScript
// has names too, and each of its samples is charged to the nearest JavaScript
// frame on its stack (byOwner: undici, pino, our files, node internals), the
// natives and system calls it made included. It also runs once under `node
// --cpu-prof`. The worker is spawned by the supervisor with a fixed command
// line and an empty environment, so its JavaScript stays unnamed here.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from './common.js';
import { processTree } from './procTree.js';

export function perfAvailable(): boolean {
  try {
    return spawnSync('perf', ['--version'], { stdio: 'ignore', timeout: 5000 }).status === 0;
  } catch {
    return false;
  }
}

export interface PerfSession {
  readonly children: { pid: number; label: string; file: string; perf: ChildProcess }[];
}

/** Start one `perf record` per process of the tree rooted at `root`. */
export function startPerf(
  dir: string,
  name: string,
  root: number,
  labelOf: (pid: number, index: number) => string,
): PerfSession {
  const children = processTree(root).map((pid, i) => {
    const label = labelOf(pid, i);
    const file = join(dir, `${name}-${label}-${pid}.perf.data`);
    const perf = spawn('perf', ['record', '-F', '999', '-g', '-p', String(pid), '-o', file], { stdio: 'ignore' });
    return { pid, label, file, perf };
  });
  return { children };
}

export async function stopPerf(session: PerfSession): Promise<void> {
  for (const c of session.children) c.perf.kill('SIGINT');
  for (const c of session.children) {
    const done = new Promise<void>((resolve) =>
      c.perf.exitCode !== null ? resolve() : c.perf.once('exit', () => resolve()),
    );
    if (!(await Promise.race([done.then(() => true), sleep(15_000).then(() => false)]))) c.perf.kill('SIGKILL');
  }
}

/** Symbols whose inclusive (children) share says where the time goes, whatever the runtime. */
const INCLUSIVE: readonly [string, RegExp][] = [
  ['syscalls', /\[k\] entry_SYSCALL_64_after_hwframe$/],
  ['mprotect', /\[\.\] __mprotect$/],
  ['read', /\[k\] ksys_read$/],
  ['write', /\[k\] ksys_write$/],
  ['writev', /\[k\] do_writev$/],
  ['epoll_wait', /\[k\] do_epoll_wait$/],
  ['futex', /\[k\] do_futex$/],
  ['GC scavenge', /\[\.\] v8::internal::Heap::Scavenge\(\)$/],
  ['GC mark-compact', /\[\.\] v8::internal::MarkCompactCollector::CollectGarbage\(\)$/],
  ['GC concurrent marking', /\[\.\] v8::internal::ConcurrentMarking::RunMajor/],
];

/** Where a JavaScript frame's code comes from, by its script (perf map names: `JS:*fn file:line:col`). */
function ownerOf(frame: string): string | null {
  if (frame.includes('wasm-function')) return 'undici (llhttp, WebAssembly)';
  const m = /JS:[*^~+]?\S* (\S+?)(?::\d+:\d+)?$/.exec(frame);
  if (m === null) return null;
  const path = m[1] as string;
  if (path.includes('/node_modules/undici/')) return 'undici';
  if (/\/node_modules\/(pino|@pinojs|sonic-boom)/.test(path)) return 'pino';
  if (path.includes('/node_modules/sodium-native/')) return 'sodium-native';
  const ours = /\/dist\/(src\/.*)$/.exec(path);
  if (ours !== null) return ours[1] as string;
  if (path.startsWith('node:')) return path;
  return 'other JavaScript';
}

/**
 * Every sample charged to the nearest JavaScript frame on its stack (so a
 * system call counts for the code that made it); samples without one are the
 * event loop, GC or V8's compiler threads. Percentages of all samples.
 */
export function perfByOwner(file: string, n = 14): string[] {
  const r = spawnSync('perf', ['script', '-i', file, '-F', 'ip,sym'], {
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 512 * 1024 * 1024,
  });
  const counts = new Map<string, number>();
  let total = 0;
  for (const sample of (r.stdout ?? '').split('\n\n')) {
    const frames = sample
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
    if (frames.length === 0) continue;
    total++;
    let owner: string | null = null;
    for (const f of frames) if ((owner = ownerOf(f)) !== null) break;
    if (owner === null) {
      const stack = frames.join(' ');
      owner = /OptimizingCompileDispatcher|Compile(Job|Task)/.test(stack)
        ? 'V8 compiler threads'
        : /Heap::|Scavenge|MarkCompact|ConcurrentMarking/.test(stack)
          ? 'GC'
          : /uv__io_poll|uv_run/.test(stack)
            ? 'event loop, no JavaScript on the stack'
            : 'other native';
    }
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([owner, c]) => `${((100 * c) / Math.max(1, total)).toFixed(1).padStart(5)}%  ${owner}`);
}

/** The perf map files V8 wrote for these processes (--perf-basic-prof): removed once perf has read them. */
export function removePerfMaps(pids: readonly number[]): void {
  for (const pid of pids) rmSync(`/tmp/perf-${pid}.map`, { force: true });
}

/**
 * perf report: the top `n` lines of self time by (shared object, symbol), by
 * shared object alone, and the inclusive share of a few telling symbols.
 */
export function perfSummary(
  file: string,
  n = 12,
): { samples: number; bySymbol: string[]; byDso: string[]; inclusive: string[] } {
  const report = (extra: string[], sort: string): string[] => {
    const r = spawnSync(
      'perf',
      ['report', '-i', file, '--stdio', ...extra, '--sort', sort, '-g', 'none', '--percent-limit', '0.1'],
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
    );
    return (r.stdout ?? '').split('\n').filter((l) => /^\s+\d+\.\d+%/.test(l));
  };
  const tidy = (l: string): string => l.trim().replace(/\s+/g, ' ').slice(0, 140);
  const children = report(['--children'], 'sym');
  const inclusive: string[] = [];
  for (const [label, re] of INCLUSIVE) {
    const line = children.find((l) => re.test(l.trim()));
    if (line !== undefined) inclusive.push(`${label} ${line.trim().split(/\s+/)[0]}`);
  }
  const samples =
    spawnSync('perf', ['script', '-i', file, '-F', 'pid'], {
      encoding: 'utf8',
      timeout: 60_000,
      maxBuffer: 256 * 1024 * 1024,
    })
      .stdout?.split('\n')
      .filter((l) => l.trim() !== '').length ?? 0;
  return {
    samples,
    bySymbol: report(['--no-children'], 'dso,sym').slice(0, n).map(tidy),
    byDso: report(['--no-children'], 'dso').slice(0, 6).map(tidy),
    inclusive,
  };
}

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time (% of non-idle samples) by function and by origin (ours, undici, node internals, GC…) from a .cpuprofile. */
export function cpuProfileSummary(
  dir: string,
  n = 15,
): { file: string; byFunction: string[]; byOrigin: string[] } | null {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) return null;
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: CpuProfileNode[]; samples: number[] };
  // Percentages of the busy samples: the profile also covers the idle time before and after the load.
  const idleIds = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  const total = Math.max(1, profile.samples.filter((id) => !idleIds.has(id)).length);
  const byFn = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0 || idleIds.has(node.id)) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const short = url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/');
    const key = `${functionName || '(anonymous)'} ${short === '' ? '' : `${short}:${lineNumber + 1}`}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + hits);
    const origin =
      functionName === '(idle)' || functionName === '(program)' || functionName === '(garbage collector)'
        ? functionName
        : url.includes('/node_modules/undici/')
          ? 'undici'
          : url.includes('/node_modules/sodium-native/')
            ? 'sodium-native (key access)'
            : url.includes('/node_modules/pino') || url.includes('/node_modules/sonic-boom')
              ? 'pino (logging)'
              : url.includes('/dist/src/')
                ? 'ours (dist/src)'
                : url.startsWith('node:')
                  ? 'node internals'
                  : url === ''
                    ? 'native / builtins'
                    : 'other';
    byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + hits);
  }
  const top = (m: Map<string, number>, k: number): string[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, hits]) => `${((100 * hits) / total).toFixed(1).padStart(5)}%  ${name}`);
  return { file, byFunction: top(byFn, n), byOrigin: top(byOrigin, 10) };
}
