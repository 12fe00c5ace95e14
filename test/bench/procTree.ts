// Memory and CPU of a process and all its descendants, from /proc.

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
 * Samples the tree's summed RSS every `everyMs` until stopped; the list of
 * descendants is refreshed every second (so a restarted worker is followed).
 */
export class RssSampler {
  private pids: number[];
  private lastScan = Date.now();
  private readonly timer: NodeJS.Timeout;
  peak = 0;
  last = 0;
  samples = 0;

  constructor(
    private readonly root: number,
    everyMs = 50,
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
    this.samples++;
    if (sum > this.peak) this.peak = sum;
  }

  stop(): { peak: number; last: number; samples: number } {
    clearInterval(this.timer);
    this.sample();
    return { peak: this.peak, last: this.last, samples: this.samples };
  }
}
