// Runs the real proxy (both processes) as a child of the test, by pid.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const PROXY_MAIN = fileURLToPath(new URL('../../src/supervisor/main.js', import.meta.url));
/** A key that is easy to search for in memory, logs and files. */
export const TEST_KEY = 'sk-testKEY_4f9d2c7e1b8a6035-SECRET-e3b0c44298fc1c14';

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** Bytes written to stdin; default TEST_KEY + "\n". */
  readonly stdin?: string | Buffer;
  /** Leave stdin open after writing (the original must not wait for EOF). */
  readonly keepStdinOpen?: boolean;
  readonly args?: readonly string[];
  /** The script to run instead of the proxy's main (a fixture wrapping its startup). */
  readonly main?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly startTimeoutMs?: number;
  /** An installed executable to run (found through env.PATH's node) instead of this checkout's main.js. */
  readonly program?: string;
  /** Node flags for the supervisor (not with `program`), such as --trace-gc. */
  readonly nodeFlags?: readonly string[];
}

/** How long after the proxy exits its output may still arrive (see the constructor). */
const EXIT_OUTPUT_GRACE_MS = 500;

const LISTENING = /responses-api-proxy listening on 127\.0\.0\.1:(\d+)/;

export class ProxyProcess {
  stdout = '';
  stderr = '';
  private readonly exited: Promise<ExitStatus>;
  exitStatus: ExitStatus | null = null;
  port = 0;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        const status = { code, signal };
        this.exitStatus = status;
        // At 'exit' the last output may still be in the pipes; 'close' comes
        // once they are read. A worker that outlives the supervisor holds
        // stderr open, so that wait is bounded.
        const grace = setTimeout(() => resolve(status), EXIT_OUTPUT_GRACE_MS);
        child.once('close', () => {
          clearTimeout(grace);
          resolve(status);
        });
      }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Spawn without waiting for anything. */
  static spawn(options: StartOptions = {}): ProxyProcess {
    const [command, ...programArgs] =
      options.program === undefined
        ? [process.execPath, ...(options.nodeFlags ?? []), options.main ?? PROXY_MAIN]
        : [options.program];
    const child = spawn(command as string, [...programArgs, ...(options.args ?? [])], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const proxy = new ProxyProcess(child);
    child.stdin?.on('error', () => {});
    child.stdin?.write(options.stdin ?? `${TEST_KEY}\n`);
    if (!options.keepStdinOpen) child.stdin?.end();
    return proxy;
  }

  /**
   * Spawn and wait for the "listening on" line. A proxy that does not get there
   * is stopped (with its worker) before the error is thrown: left running, its
   * pipes would keep the test file's process, and so the test run, alive.
   */
  static async start(options: StartOptions = {}): Promise<ProxyProcess> {
    const proxy = ProxyProcess.spawn(options);
    try {
      await proxy.waitForListening(options.startTimeoutMs ?? 10_000);
    } catch (err) {
      await proxy.stop('SIGKILL', 2_000);
      throw err;
    }
    return proxy;
  }

  async waitForListening(timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const match = LISTENING.exec(this.stderr);
      if (match) {
        this.port = Number(match[1]);
        return this.port;
      }
      if (this.exitStatus !== null)
        throw new Error(`proxy exited ${JSON.stringify(this.exitStatus)} before listening:\n${this.stderr}`);
      await sleep(10);
    }
    this.child.kill('SIGKILL');
    throw new Error(`proxy did not listen within ${timeoutMs} ms:\n${this.stderr}`);
  }

  /** Resolves with the exit status, or null if still running after timeoutMs. */
  async waitForExit(timeoutMs = 5_000): Promise<ExitStatus | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Send a signal and wait; SIGKILL (by pid) if it does not exit in time. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<ExitStatus> {
    const workers = this.exitStatus === null ? childPids(this.pid) : [];
    if (this.exitStatus === null) this.child.kill(signal);
    const status = await this.waitForExit(timeoutMs);
    if (status !== null) return status;
    this.child.kill('SIGKILL');
    for (const pid of workers) killQuietly(pid);
    return (await this.waitForExit(timeoutMs)) ?? { code: null, signal: 'SIGKILL' };
  }

  /** The worker's pid (the supervisor's only child). */
  workerPid(): number {
    const pids = childPids(this.pid);
    if (pids.length !== 1) throw new Error(`expected one worker, found ${JSON.stringify(pids)}`);
    return pids[0] as number;
  }

  url(path = '/v1/responses'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }
}

/** Direct children of pid, from /proc. */
export function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return children;
}

export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Poll `check` every 10 ms until true or timeoutMs; returns the last result. */
export async function waitFor(check: () => boolean, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(10);
  }
  return check();
}

/** Run the proxy to completion (for startup failures). Killed after timeoutMs. */
export async function runProxyToExit(
  options: StartOptions & { timeoutMs?: number },
): Promise<ExitStatus & { stdout: string; stderr: string }> {
  const proxy = ProxyProcess.spawn(options);
  const status = (await proxy.waitForExit(options.timeoutMs ?? 10_000)) ?? (await proxy.stop('SIGKILL'));
  return { ...status, stdout: proxy.stdout, stderr: proxy.stderr };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
