// What the load client talks to: `ours` (this proxy, both processes),
// `original` (the pinned @openai/codex's native responses-api-proxy),
// `direct` (the mock upstream itself, the client adding Authorization), or
// `floor` (two Node processes relaying bytes in our shape: relayFloor.ts), or
// `policy` (ours started the same way with every client-policy flag of issue
// 19 on, limits set never to trip). Proxies are started and stopped by pid.
//
// `ours` and `floor` run under a chosen node binary (--node), each from its
// own copy of it (NodeCopies): processes mapping the same file share its pages,
// and PSS would then credit part of the proxy's binary to the benchmark's own
// node processes. Within one proxy the processes share their copy, as they do
// when deployed.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processTree } from './procTree.js';
import { sleep } from './common.js';

export type TargetName = 'direct' | 'ours' | 'policy' | 'original' | 'floor';

export interface Target {
  readonly name: TargetName;
  readonly port: number;
  /** Root of the proxy's process tree; null for direct. */
  readonly pid: number | null;
  /** Headers the client adds (Authorization for direct, the floor and policy's client token). */
  readonly headers: Record<string, string>;
  /** policy: its --usage-file (rewritten after each exchange); null for the others. */
  readonly usageFile: string | null;
  /** The warn/error lines the proxy has logged and its last stderr lines. */
  readonly log: () => { warnOrWorse: number; tail: string[] };
  stop(): Promise<void>;
}

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const OURS_MAIN = join(REPO, 'dist/src/supervisor/main.js');
const LISTENING = /responses-api-proxy listening on 127\.0\.0\.1:(\d+)/;

/** The native binary of the pinned @openai/codex, or its node wrapper, or null. */
export function originalCommand(): { file: string; args: string[]; native: boolean } | null {
  const triples: Record<string, string> = { x64: 'x86_64-unknown-linux-musl', arm64: 'aarch64-unknown-linux-musl' };
  const triple = triples[process.arch];
  if (triple !== undefined) {
    const native = join(REPO, `node_modules/@openai/codex-linux-${process.arch}/vendor/${triple}/bin/codex`);
    if (existsSync(native)) return { file: native, args: ['responses-api-proxy'], native: true };
  }
  const wrapper = join(REPO, 'node_modules/.bin/codex');
  if (existsSync(wrapper)) return { file: wrapper, args: ['responses-api-proxy'], native: false };
  return null;
}

/** Private copies of one node binary, one per proxy, in a directory removed at the end. */
export class NodeCopies {
  readonly source: string;
  readonly version: string;
  private readonly dir: string;

  constructor(source: string) {
    this.source = realpathSync(source);
    this.version = execFileSync(this.source, ['--version'], { encoding: 'utf8', timeout: 10_000 }).trim();
    this.dir = mkdtempSync(join(tmpdir(), 'rap-bench-node-'));
    chmodSync(this.dir, 0o755); // our worker runs as nobody and must reach its binary
  }

  /** The copy for one proxy (made on first use). */
  pathFor(name: TargetName): string {
    const path = join(this.dir, name, 'node');
    if (!existsSync(path)) {
      mkdirSync(join(this.dir, name), { mode: 0o755 });
      copyFileSync(this.source, path);
      chmodSync(path, 0o755);
    }
    return path;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Every child started here, so an interrupted run can still stop them by pid. */
export const started = new Set<ChildProcess>();

export function killTree(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  for (const pid of processTree(child.pid).reverse()) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    started.delete(child);
    return;
  }
  const pid = child.pid as number;
  const descendants = processTree(pid).filter((p) => p !== pid);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const inTime = await Promise.race([exited.then(() => true), sleep(4000).then(() => false)]);
  if (!inTime) child.kill('SIGKILL');
  await Promise.race([exited, sleep(2000)]);
  for (const p of descendants) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone with its parent, as it should be
    }
  }
  started.delete(child);
}

/** Count a proxy's warn/error lines and keep its last lines. */
function readLog(file: string): { warnOrWorse: number; tail: string[] } {
  let text = '';
  try {
    text = readFileSync(file, 'latin1');
  } catch {
    // not written yet
  }
  let warnOrWorse = 0;
  for (const line of text.split('\n')) {
    if (/"level":(4|5|6)\d/.test(line) || /\b(WARN|ERROR)\b/.test(line)) warnOrWorse++;
  }
  return { warnOrWorse, tail: text.split('\n').slice(-6) };
}

/**
 * A proxy's stderr goes to a file, as a service's log does, and is read at
 * startup (for its port) and when it stops. A pipe read by the benchmark would
 * wake the load client at every log line and charge the proxy that logs more.
 */
function startProxy(
  name: TargetName,
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  key: string,
  cleanup: () => void,
): Promise<Target> {
  const logDir = mkdtempSync(join(tmpdir(), `rap-bench-${name}-log-`));
  const logFile = join(logDir, 'stderr.log');
  const logFd = openSync(logFile, 'w', 0o600);
  const child = spawn(file, args, { stdio: ['pipe', 'ignore', logFd], env });
  closeSync(logFd);
  started.add(child);
  let finalLog: { warnOrWorse: number; tail: string[] } | null = null;
  const stop = async (): Promise<void> => {
    await stopChild(child);
    finalLog ??= readLog(logFile);
    rmSync(logDir, { recursive: true, force: true });
    cleanup();
  };
  child.stdin?.on('error', () => {});
  child.stdin?.end(`${key}\n`);
  return new Promise<Target>((resolve, reject) => {
    const deadline = Date.now() + 15_000;
    const fail = (why: string): void => {
      const tail = readLog(logFile).tail.join('\n');
      void stop().then(() => reject(new Error(`${name} ${why}:\n${tail.slice(-2000)}`)));
    };
    const poll = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) {
        return fail(`exited (${child.exitCode ?? child.signalCode}) before listening`);
      }
      let m: RegExpExecArray | null = null;
      try {
        m = LISTENING.exec(readFileSync(logFile, 'latin1'));
      } catch {
        // not written yet
      }
      if (m !== null) {
        const port = Number(m[1]);
        const target: Target = {
          name,
          port,
          pid: child.pid as number,
          headers: {},
          usageFile: null,
          log: () => finalLog ?? readLog(logFile),
          stop,
        };
        return resolve(target);
      }
      if (Date.now() > deadline) return fail('did not listen within 15 s');
      setTimeout(poll, 20);
    };
    poll();
  });
}

/**
 * `node` runs the supervisor, which spawns the worker from the same binary;
 * `nodeFlags` go to the supervisor only (e.g. --cpu-prof).
 */
export function startOurs(
  node: string,
  upstreamUrl: string,
  key: string,
  extraArgs: readonly string[],
  nodeFlags: readonly string[] = [],
  name: 'ours' | 'policy' = 'ours',
  cleanup: () => void = () => {},
): Promise<Target> {
  const args = [...nodeFlags, OURS_MAIN, '--upstream-url', upstreamUrl, ...extraArgs];
  return startProxy(name, node, args, { PATH: process.env.PATH ?? '/usr/bin:/bin' }, key, cleanup);
}

const POLICY_TOKEN_FILE = 'client-token';
const POLICY_USAGE_FILE = 'usage.json';

/**
 * Every client-policy flag, the files in `dir`. The allow-list's pattern for
 * the model every request names (BENCH_MODEL) comes last, so each request is
 * tried against all three; the limits
 * are far above what a run sends (tens of thousands of requests per proxy, a
 * few tokens each), so none is ever reached: the bench counts policy's refusals.
 */
export function policyArgs(dir: string): string[] {
  return [
    ...['--client-token-file', join(dir, POLICY_TOKEN_FILE)],
    ...['--allow-model', 'o4-mini', '--allow-model', 'gpt-4.1*', '--allow-model', 'gpt-5*'],
    ...['--max-requests', '1000000000', '--max-requests-per-minute', '1000000', '--max-tokens', '1000000000000'],
    ...['--usage-file', join(dir, POLICY_USAGE_FILE)],
  ];
}

/** Ours with every policy flag on: the same start, its files in a fresh directory, the client sending the token. */
export async function startPolicy(
  node: string,
  upstreamUrl: string,
  key: string,
  extraArgs: readonly string[],
  nodeFlags: readonly string[] = [],
): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'rap-bench-policy-'));
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  const t = await startOurs(node, upstreamUrl, key, [...extraArgs, ...policyArgs(dir)], nodeFlags, 'policy', removeDir);
  let token: string;
  try {
    // Written before the proxy listens, owned by the user who started it: this one.
    token = readFileSync(join(dir, POLICY_TOKEN_FILE), 'latin1').trim();
  } catch (err) {
    await t.stop();
    throw err;
  }
  return { ...t, headers: { authorization: `Bearer ${token}` }, usageFile: join(dir, POLICY_USAGE_FILE) };
}

export function oursCommandLine(upstreamUrl: string, extraArgs: readonly string[]): string {
  return ['node', 'dist/src/supervisor/main.js', '--upstream-url', upstreamUrl, ...extraArgs].join(' ');
}

export function startOriginal(upstreamUrl: string, key: string): Promise<Target> {
  const cmd = originalCommand();
  if (cmd === null) return Promise.reject(new Error('the original is not installed'));
  // The original wants a CODEX_HOME it can write to; a fresh one per start.
  const home = mkdtempSync(join(tmpdir(), 'rap-bench-codex-home-'));
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', CODEX_HOME: home, RUST_LOG: 'error' };
  return startProxy('original', cmd.file, [...cmd.args, '--upstream-url', upstreamUrl], env, key, () =>
    rmSync(home, { recursive: true, force: true }),
  );
}

/** The floor relay, in front of the mock at `upstreamPort`; the client adds Authorization, as for direct. */
export async function startFloor(node: string, upstreamPort: number, key: string): Promise<Target> {
  const entry = fileURLToPath(new URL('./relayFloor.js', import.meta.url));
  const t = await startProxy(
    'floor',
    node,
    [entry, 'back', String(upstreamPort)],
    { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    key,
    () => {},
  );
  return { ...t, headers: { authorization: `Bearer ${key}` } };
}

export function direct(port: number, key: string): Target {
  return {
    name: 'direct',
    port,
    pid: null,
    headers: { authorization: `Bearer ${key}` },
    usageFile: null,
    log: () => ({ warnOrWorse: 0, tail: [] }),
    stop: async () => {},
  };
}
