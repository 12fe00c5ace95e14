// What both soak suites share: seeded data, the supervisor's figures from /proc,
// and the lanes that run the specs and kill the worker part-way.

import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** mulberry32: a small seeded PRNG, so the upstream and the client agree on every byte. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}

/** Every descriptor and what it points to (printed when the counts differ). */
export function fdList(pid: number): string {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(`${fd}:${readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
    } catch {
      // closed meanwhile
    }
  }
  return out.join(' ');
}

/** What a soak's lanes did, for its assertions. Times are performance.now() values. */
export interface LaneRun<R> {
  readonly results: R[];
  readonly startedAt: number;
  readonly elapsed: number;
  /** When the worker was SIGKILLed (-1: never), and its pid. */
  readonly killAt: number;
  readonly killedWorker: number;
  /** Supervisor RSS (MB): highest sample, at the first quarter, and at each quarter. */
  readonly peakRss: number;
  readonly warmRss: number | null;
  readonly checkpoints: string[];
}

/**
 * Runs every spec, `concurrency` at a time, and SIGKILLs the worker once
 * `killAfter` have finished (its pid goes to `onKill`, to be stopped later if
 * it survives). The supervisor's RSS is sampled every 250 ms and recorded at
 * each quarter of the specs.
 */
export async function runLanes<S, R>(o: {
  readonly specs: readonly S[];
  readonly concurrency: number;
  readonly killAfter: number;
  readonly supervisorPid: number;
  readonly baselineRss: number;
  readonly run: (spec: S) => Promise<R>;
  readonly workerPid: () => number;
  readonly onKill: (pid: number) => void;
}): Promise<LaneRun<R>> {
  const results: R[] = [];
  const checkpoints: string[] = [];
  const startedAt = performance.now();
  let nextIndex = 0;
  let killAt = -1;
  let killedWorker = 0;
  let peakRss = o.baselineRss;
  let warmRss: number | null = null;
  const rssSampler = setInterval(() => {
    try {
      peakRss = Math.max(peakRss, rssMb(o.supervisorPid));
    } catch {
      // exited: the caller's assertions say so
    }
  }, 250);
  const quarter = Math.floor(o.specs.length / 4);
  const lane = async (): Promise<void> => {
    while (nextIndex < o.specs.length) {
      const spec = o.specs[nextIndex++] as S;
      results.push(await o.run(spec));
      if (results.length % quarter === 0) {
        const rss = rssMb(o.supervisorPid);
        if (warmRss === null) warmRss = rss;
        checkpoints.push(
          `${results.length} (${((performance.now() - startedAt) / 1000).toFixed(1)} s): ${rss.toFixed(1)} MB`,
        );
      }
      if (killAt < 0 && results.length >= o.killAfter) {
        killedWorker = o.workerPid();
        o.onKill(killedWorker);
        killAt = performance.now();
        process.kill(killedWorker, 'SIGKILL');
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, lane));
  } finally {
    clearInterval(rssSampler);
  }
  return {
    results,
    startedAt,
    elapsed: performance.now() - startedAt,
    killAt,
    killedWorker,
    peakRss,
    warmRss,
    checkpoints,
  };
}

/** One TCP connection of a process, from its descriptors and its network namespace's /proc/net/tcp{,6}. */
export interface TcpConnection {
  readonly fd: string;
  readonly localPort: number;
  readonly remotePort: number;
  /** The kernel's state name (ESTABLISHED, CLOSE_WAIT...). */
  readonly state: string;
  /** Bytes queued unsent and unread in the kernel. */
  readonly txQueue: number;
  readonly rxQueue: number;
}

const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
];

/** The TCP connections process `pid` holds to `remotePort` (loopback), named by their local ports. */
export function tcpConnectionsTo(pid: number, remotePort: number): TcpConnection[] {
  const byInode = new Map<string, Omit<TcpConnection, 'fd'>>();
  for (const table of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const [, local = '', remote = '', st = '', queues = ''] = f;
      const [tx = '0', rx = '0'] = queues.split(':');
      byInode.set(f[9] as string, {
        localPort: parseInt(local.split(':')[1] ?? '0', 16),
        remotePort: parseInt(remote.split(':')[1] ?? '0', 16),
        state: TCP_STATES[parseInt(st, 16)] ?? st,
        txQueue: parseInt(tx, 16),
        rxQueue: parseInt(rx, 16),
      });
    }
  }
  const out: TcpConnection[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    const conn = inode === undefined ? undefined : byInode.get(inode);
    if (conn !== undefined && conn.remotePort === remotePort) out.push({ fd, ...conn });
  }
  return out;
}
