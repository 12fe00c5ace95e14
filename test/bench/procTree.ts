// Memory and CPU of a process and all its descendants, from /proc.
//
// Memory is RSS and PSS. RSS counts every resident page a process maps, so
// pages it shares (the node binary's text, libc) are counted once per process;
// PSS divides each shared page among the processes that map it, so a tree's
// summed PSS counts them once. A process sharing its binary with unrelated
// processes (the benchmark's own node processes) would see that share shrink:
// targets.ts runs each proxy from its own copy of the binary.

import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

const PAGE_SIZE = 4096;
let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100, Linux's usual USER_HZ
}

function readStat(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // comm may contain spaces and parentheses: fields start after the last ')'.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** pid and every descendant, by a scan of /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const f = readStat(pid);
    if (f === null) continue;
    const ppid = Number(f[1]);
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop() as number;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Resident bytes of one process (0 if gone). */
export function rssBytes(pid: number): number {
  try {
    const statm = readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ');
    return Number(statm[1]) * PAGE_SIZE;
  } catch {
    return 0;
  }
}

/** Proportional set size of one process (0 if gone; null if /proc denies it, as for a non-dumpable process to non-root). */
export function pssBytes(pid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 0 : null;
  }
  const m = /^Pss:\s+(\d+) kB$/m.exec(text);
  return m === null ? null : Number(m[1]) * 1024;
}

export interface ProcessMemory {
  readonly pid: number;
  readonly rss: number;
  readonly pss: number | null;
}

/** RSS and PSS of every process of the tree, root first. */
export function treeMemory(root: number): ProcessMemory[] {
  return processTree(root).map((pid) => ({ pid, rss: rssBytes(pid), pss: pssBytes(pid) }));
}

/** Sums of a treeMemory() snapshot (PSS null if any process's was unreadable). */
export function memorySums(procs: readonly ProcessMemory[]): { rss: number; pss: number | null } {
  let pss: number | null = 0;
  for (const p of procs) pss = pss === null || p.pss === null ? null : pss + p.pss;
  return { rss: procs.reduce((n, p) => n + p.rss, 0), pss };
}

/** utime + stime of one process (all its threads), in seconds. */
export function cpuSeconds(pid: number): number {
  const f = readStat(pid);
  if (f === null) return 0;
  return (Number(f[11]) + Number(f[12])) / clockTicks;
}

export function treeCpuSeconds(root: number): number {
  return processTree(root).reduce((s, pid) => s + cpuSeconds(pid), 0);
}

export function treeRssBytes(root: number): number {
  return processTree(root).reduce((s, pid) => s + rssBytes(pid), 0);
}

/**
 * Samples the tree's summed RSS every `everyMs`, and its summed PSS every
 * `pssEvery`-th time (the kernel walks every page table for it), until
 * stopped; the list of descendants is refreshed every second (so a restarted
 * worker is followed).
 */
export class MemorySampler {
  private pids: number[];
  private lastScan = Date.now();
  private readonly timer: NodeJS.Timeout;
  /** Samples until the next PSS reading. */
  private untilPss = 0;
  peak = 0;
  last = 0;
  samples = 0;
  /** Peak summed PSS; null once a process's PSS could not be read. */
  pssPeak: number | null = 0;

  constructor(
    private readonly root: number,
    everyMs = 50,
    private readonly pssEvery = 5,
  ) {
    this.pids = processTree(root);
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  private sample(): void {
    if (Date.now() - this.lastScan > 1000) {
      this.pids = processTree(this.root);
      this.lastScan = Date.now();
    }
    let sum = 0;
    for (const pid of this.pids) sum += rssBytes(pid);
    this.last = sum;
    if (sum > this.peak) this.peak = sum;
    this.samples++;
    if (this.untilPss-- === 0 && this.pssPeak !== null) {
      this.untilPss = this.pssEvery - 1;
      const { pss } = memorySums(this.pids.map((pid) => ({ pid, rss: 0, pss: pssBytes(pid) })));
      this.pssPeak = pss === null ? null : Math.max(this.pssPeak, pss);
    }
  }

  stop(): { peak: number; last: number; samples: number; pssPeak: number | null } {
    clearInterval(this.timer);
    this.untilPss = 0; // the last sample reads PSS too
    this.sample();
    return { peak: this.peak, last: this.last, samples: this.samples, pssPeak: this.pssPeak };
  }
}
