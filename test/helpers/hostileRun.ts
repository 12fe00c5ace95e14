// Runs test/fixtures/supervisorWithWorker.js (the real supervisor with a
// hostile worker entry) as a child process, by pid, and reads what it left:
// its stderr, its exit status and the worker instances it started. And the
// other way round: the real worker with the test as a hostile supervisor.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameWriter, Msg, type MsgType } from '../../src/shared/ipcProtocol.js';
import { encodeWorkerConfig, type WorkerConfig } from '../../src/shared/workerConfig.js';
import { closeFd } from '../../src/shared/libc.js';
import { bindLoopback } from '../../src/supervisor/startup/listenSocket.js';
import { DEFAULT_WORKER_ENTRY, workerReadPaths } from '../../src/supervisor/workerProcess.js';
import { TEST_KEY, killQuietly, waitFor, type ExitStatus } from './proxyProcess.js';

export const SUPERVISOR_WITH_WORKER = fileURLToPath(new URL('../fixtures/supervisorWithWorker.js', import.meta.url));

export interface WorkerInstance {
  readonly pid: number;
  readonly role: 'hostile' | 'real';
}

export interface HostileRunOptions {
  readonly workDir: string;
  /** A hostileWorker.ts mode. */
  readonly mode: string;
  /** Say READY (the worker "served") before misbehaving. */
  readonly readyFirst: boolean;
  /** How many worker instances are hostile before the real worker takes over. */
  readonly hostileInstances: number | 'all';
  readonly proxyArgs: readonly string[];
}

export class HostileRun {
  stderr = '';
  exitStatus: ExitStatus | null = null;
  private readonly exited: Promise<ExitStatus>;

  private constructor(
    readonly child: ChildProcess,
    private readonly workDir: string,
  ) {
    child.stdout?.resume();
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      }),
    );
  }

  static start(options: HostileRunOptions): HostileRun {
    const args = [
      SUPERVISOR_WITH_WORKER,
      options.workDir,
      options.mode,
      options.readyFirst ? 'ready' : 'silent',
      String(options.hostileInstances),
      '--',
      ...options.proxyArgs,
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(`${TEST_KEY}\n`);
    return new HostileRun(child, options.workDir);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Worker instances started so far, in order. */
  instances(): WorkerInstance[] {
    const file = `${this.workDir}/dumps/instances.log`;
    if (!existsSync(file)) return [];
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [pid, role] = line.split(' ');
        return { pid: Number(pid), role: role === 'real' ? 'real' : 'hostile' };
      });
  }

  /** stderr lines meant for people (not JSON log records) that contain every one of `parts`. */
  humanLinesWith(...parts: string[]): string[] {
    return this.linesWith(...parts).filter((line) => !line.startsWith('{'));
  }

  /** JSON log records on stderr whose `msg` matches `pattern`. */
  logRecords(pattern: RegExp): Array<Record<string, unknown>> {
    return logRecordsIn(this.stderr, pattern);
  }

  /** stderr lines that contain every one of `parts`. */
  linesWith(...parts: string[]): string[] {
    return this.stderr.split('\n').filter((line) => parts.every((p) => line.includes(p)));
  }

  /** The port from the "listening on" line, or 0. */
  get port(): number {
    const match = /listening on 127\.0\.0\.1:(\d+)/.exec(this.stderr);
    return match ? Number(match[1]) : 0;
  }

  async waitForExit(timeoutMs: number): Promise<ExitStatus | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    return result;
  }

  /** SIGKILL the supervisor and every worker instance it started (by pid). */
  async kill(): Promise<void> {
    if (this.exitStatus === null) killQuietly(this.pid);
    for (const { pid } of this.instances()) killQuietly(pid);
    await this.waitForExit(5_000);
  }
}

/** The JSON log records in `stderr` whose `msg` matches `pattern`. */
function logRecordsIn(stderr: string, pattern: RegExp): Array<Record<string, unknown>> {
  const records: Array<Record<string, unknown>> = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const record = JSON.parse(line) as Record<string, unknown>;
      if (typeof record.msg === 'string' && pattern.test(record.msg)) records.push(record);
    } catch {
      // not a log record
    }
  }
  return records;
}

/** A TCP server on 127.0.0.1 that accepts and never answers (a TLS handshake to it hangs). */
export class SilentServer {
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  static async start(): Promise<SilentServer> {
    const server = createServer();
    const silent = new SilentServer(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return silent;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** What the worker is told: plain HTTP, no flags, sandbox layers it cannot install are only warned about. */
const WORKER_CONFIG: WorkerConfig = {
  httpShutdown: false,
  logLevel: 'info',
  maxOpenStreams: 8,
  maxBodyBytes: 1024 * 1024,
  dumpDir: null,
  dumpMaxBytes: 0,
  dumpSequenceStart: 1,
  allowWeakerSandbox: true,
  allowCapabilities: process.getuid?.() === 0,
  webSocket: null,
  readPaths: workerReadPaths(DEFAULT_WORKER_ENTRY),
  allowModels: null,
};

/**
 * The real worker, started as spawnWorker starts it (a listening socket as
 * fd 3, the channel as fd 4, an empty environment) but with its stderr
 * captured, and the test as its supervisor: it reads the worker's frames and
 * sends what it likes.
 */
export class HostileSupervisor {
  stderr = '';
  exitStatus: ExitStatus | null = null;
  /** Types of the frames the worker sent, in order. */
  readonly received: MsgType[] = [];
  private readonly writer: FrameWriter;

  private constructor(private readonly child: ChildProcess) {
    const channel = child.stdio[4] as Socket;
    channel.on('error', () => {});
    this.writer = new FrameWriter(channel);
    const decoder = new FrameDecoder('worker', (type) => this.received.push(type));
    channel.on('data', (chunk: Buffer) => decoder.push(chunk));
    child.stderr?.setEncoding('utf8').on('data', (text: string) => (this.stderr += text));
    child.on('exit', (code, signal) => (this.exitStatus = { code, signal }));
  }

  static start(): HostileSupervisor {
    const listen = bindLoopback(0);
    try {
      const child = spawn(process.execPath, ['--no-warnings', DEFAULT_WORKER_ENTRY], {
        stdio: ['ignore', 'ignore', 'pipe', listen.fd, 'pipe'],
        env: {},
        cwd: '/',
      });
      return new HostileSupervisor(child);
    } finally {
      closeFd(listen.fd); // the worker holds its own copy
    }
  }

  get pid(): number {
    return this.child.pid as number;
  }

  sendConfig(): void {
    this.send(Msg.CONFIG, 0, encodeWorkerConfig(WORKER_CONFIG));
  }

  send(type: number, streamId: number, payload?: Buffer): void {
    this.writer.send(type as MsgType, streamId, payload);
  }

  /** A bare frame header: for types the protocol does not know. */
  sendHeader(type: number, length: number, streamId: number): void {
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.writeUInt32BE(length, 0);
    header[4] = type;
    header.writeUInt32BE(streamId, 5);
    (this.child.stdio[4] as Socket).write(header);
  }

  async waitForReady(timeoutMs: number): Promise<boolean> {
    return waitFor(() => this.received.includes(Msg.READY) || this.exitStatus !== null, timeoutMs);
  }

  async waitForExit(timeoutMs: number): Promise<ExitStatus | null> {
    await waitFor(() => this.exitStatus !== null, timeoutMs);
    return this.exitStatus;
  }

  /** JSON log records on stderr whose `msg` matches `pattern`. */
  logRecords(pattern: RegExp): Array<Record<string, unknown>> {
    return logRecordsIn(this.stderr, pattern);
  }

  kill(): void {
    if (this.exitStatus === null) killQuietly(this.pid);
  }
}
