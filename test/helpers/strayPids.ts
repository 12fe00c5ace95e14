// Processes a test started indirectly (workers), remembered by pid AND start
// time (/proc/<pid>/stat field 22), so that cleanup never signals an
// unrelated process that reused a pid after ours exited.

import { readFileSync } from 'node:fs';
import { childPids, killQuietly, type ProxyProcess } from './proxyProcess.js';

/** The process's start time in clock ticks since boot, or null if it is gone. */
export function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export class StrayPids {
  private readonly known = new Map<number, string>();

  /** Remember a live process (no-op if it has already exited). */
  add(pid: number): void {
    if (this.known.has(pid)) return;
    const start = startTime(pid);
    if (start !== null) this.known.set(pid, start);
  }

  /** Stop every proxy by pid (SIGKILL) and then any worker it left behind. */
  async stopAll(proxies: readonly ProxyProcess[]): Promise<void> {
    for (const proxy of proxies) {
      for (const pid of proxy.exitStatus === null ? childPids(proxy.pid) : []) this.add(pid);
      await proxy.stop('SIGKILL', 2_000);
    }
    this.killAll();
  }

  /** SIGKILL each remembered process that is still the same process. */
  killAll(): void {
    for (const [pid, start] of this.known) {
      if (startTime(pid) === start) killQuietly(pid);
    }
    this.known.clear();
  }
}
