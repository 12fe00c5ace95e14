// Runs the proxy once the key is held and the socket bound. Keeps one worker
// alive on the listening socket it owns for its whole life: a worker that
// crashes or breaks the protocol is replaced (with backoff) on the same socket,
// so the port and the server-info file never change and connections wait in
// the kernel backlog meanwhile. Stops gracefully on SIGTERM/SIGINT/GET /shutdown
// (stop accepting, let streams finish and connections close, up to the
// shutdown timeout; the worker exits when it is done) and at once
// on a second SIGINT, a crash loop or a worker that cannot start.

import type { ChildProcess } from 'node:child_process';
import { PROGRAM_NAME } from '../shared/constants.js';
import { FrameWriter, Msg, dumpFileLimit } from '../shared/ipcProtocol.js';
import { writeStderr, type Logger } from '../shared/logger.js';
import { encodeWorkerConfig, type WorkerConfig } from '../shared/workerConfig.js';
import type { Credential } from './credential/credential.js';
import { closeDescriptor, type ListenSocket } from './startup/listenSocket.js';
import type { ClientPolicy } from './clientPolicy.js';
import { DumpReceiver, type DumpDirectory } from './dumpFiles.js';
import { Monitor } from './monitor.js';
import type { ServerInfoFile } from './startup/serverInfo.js';
import { giveMemoryBack, trimWhenIdle } from '../shared/idleTrim.js';
import { Upstream } from './upstream.js';
import { spawnWorker, type WorkerLaunch } from './workerProcess.js';

export interface SupervisorSetup {
  readonly auth: Credential;
  readonly listen: ListenSocket;
  readonly upstreamUrl: URL;
  readonly upstreamTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly serverInfo: ServerInfoFile | null;
  /** Client token, budgets, usage record; null when no such flag is given. */
  readonly policy: ClientPolicy | null;
  readonly workerConfig: WorkerConfig;
  /** --dump-dir, open; null without it. */
  readonly dumpDirectory: DumpDirectory | null;
  readonly worker: Omit<WorkerLaunch, 'listenFd'>;
  readonly log: Logger;
  /** Called once, when the first worker serves (the sandbox report, --check-sandbox). */
  readonly onServing?: (workerPid: number) => void;
}

/** A crash loop: this many worker deaths within CRASH_WINDOW_MS ends the proxy. */
export const CRASH_LIMIT = 5;
export const CRASH_WINDOW_MS = 30_000;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;

interface RunningWorker {
  readonly child: ChildProcess;
  readonly monitor: Monitor;
}

export class ProxySupervisor {
  private readonly upstream: Upstream;
  private worker: RunningWorker | null = null;
  private crashes: number[] = [];
  private served = false;
  private draining = false;
  private stopping = false;
  /** Streams opened by earlier workers: dump sequence numbers continue after them. */
  private streamsOpenedBefore = 0;
  private lastViolation: string | null = null;

  constructor(private readonly setup: SupervisorSetup) {
    this.upstream = new Upstream(setup.upstreamUrl, setup.auth, setup.upstreamTimeoutMs);
    trimWhenIdle(() => ({
      openStreams: this.worker?.monitor.openStreams ?? 0,
      streamsOpened: this.streamsOpenedBefore + (this.worker?.monitor.streamsOpened ?? 0),
    }));
  }

  start(): void {
    const { setup } = this;
    const config = setup.workerConfig;
    const { child, channel } = spawnWorker({ ...setup.worker, listenFd: setup.listen.fd });
    const writer = new FrameWriter(channel);
    const monitorOptions = {
      httpShutdown: config.httpShutdown,
      dumps:
        setup.dumpDirectory === null
          ? null
          : new DumpReceiver(setup.dumpDirectory, writer, this.streamsOpenedBefore, dumpFileLimit(config.dumpMaxBytes)),
      webSocketMaxMessageBytes: config.webSocket?.maxMessageBytes ?? null,
      allowModel: config.allowModels !== null,
      policy: setup.policy,
    };
    const monitor = new Monitor(writer, this.upstream, monitorOptions, setup.log, {
      onReady: () => this.onWorkerReady(child.pid ?? 0),
      onShutdownRequest: () => this.shutdown('shutdown requested with GET /shutdown'),
      // Only before READY (the protocol table): a worker that cannot start will not start on a retry either.
      onStartupFailed: (reason) => this.stop(1, reason),
      // The worker exits by itself once its connections have closed (exit handler below).
      onDrained: () => setup.log.info('open requests finished; the worker is closing its connections'),
      onViolation: (reason) => {
        setup.log.error({ workerPid: child.pid, reason }, 'worker broke the IPC protocol; replacing it');
        this.lastViolation = reason;
        child.kill('SIGKILL');
      },
    });
    const worker: RunningWorker = { child, monitor };
    this.worker = worker;
    channel.on('data', (chunk: Buffer) => monitor.receive(chunk));
    channel.on('error', () => {}); // the exit handler reports the worker's end
    child.on('error', (err) => this.stop(1, `cannot start the worker: ${err.message}`));
    child.on('exit', (code, signal) =>
      this.onWorkerExit(worker, signal === null ? `code ${code}` : `signal ${signal}`),
    );
    writer.send(Msg.CONFIG, 0, encodeWorkerConfig(config));
  }

  /** Graceful stop: accept nothing new, let open streams finish, then exit 0. */
  shutdown(reason: string): void {
    if (this.draining || this.stopping) return;
    this.draining = true;
    const { log, listen, shutdownTimeoutMs } = this.setup;
    log.info({ reason, timeoutMs: shutdownTimeoutMs }, 'shutting down: finishing open requests');
    closeDescriptor(listen.fd); // new connections are refused from now on
    if (this.worker === null) return this.stop(0, reason); // between restarts: nothing is open
    this.worker.monitor.drain();
    setTimeout(
      () => this.stop(0, `${reason}; open requests cut after ${shutdownTimeoutMs} ms`),
      shutdownTimeoutMs,
    ).unref();
  }

  /** Stop now: abort calls, end the worker, remove the server-info file, exit. */
  stop(exitCode: number, reason: string, quiet = false): void {
    if (this.stopping) return;
    this.stopping = true;
    const { log, serverInfo, auth } = this.setup;
    if (exitCode === 0) log.info({ reason }, 'stopped');
    else log.error({ reason }, 'stopped');
    this.worker?.monitor.abandonAll('proxy stopping');
    this.worker?.child.kill('SIGKILL');
    serverInfo?.remove();
    this.setup.policy?.close();
    auth.destroy();
    if (exitCode !== 0 && !quiet) writeStderr(`Error: ${reason}\n`);
    process.exit(exitCode);
  }

  private onWorkerReady(workerPid: number): void {
    const { listen, serverInfo, log } = this.setup;
    if (this.served) {
      log.info({ workerPid }, 'replacement worker serving');
      return;
    }
    this.served = true;
    // Startup is done: before it is announced, so no client that waits for
    // the announcement waits for the collection.
    giveMemoryBack();
    try {
      serverInfo?.write(listen.port, process.pid);
    } catch (err) {
      return this.stop(1, `cannot write --server-info ${serverInfo?.path}: ${(err as Error).message}`);
    }
    this.setup.onServing?.(workerPid);
    if (this.stopping) return;
    log.info({ port: listen.port, workerPid, upstream: this.setup.upstreamUrl.origin }, 'listening');
    // The original's line, which scripts wait for.
    writeStderr(`${PROGRAM_NAME} listening on 127.0.0.1:${listen.port}\n`);
  }

  private onWorkerExit(worker: RunningWorker, how: string): void {
    if (this.stopping) return;
    // Its streams are lost: abort their upstream requests so nothing leaks.
    worker.monitor.abandonAll('proxy worker restarted');
    this.streamsOpenedBefore += worker.monitor.streamsOpened;
    this.worker = null;
    if (this.draining) return this.stop(0, `worker exited (${how}) while shutting down`);
    if (!this.served) {
      const why =
        this.lastViolation === null ? 'see the log lines above' : `it broke the IPC protocol: ${this.lastViolation}`;
      return this.stop(1, `the worker exited (${how}) before it could serve; ${why}`);
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS);
    this.crashes.push(now);
    if (this.crashes.length >= CRASH_LIMIT) {
      return this.stop(
        1,
        `the worker failed ${this.crashes.length} times within ${CRASH_WINDOW_MS / 1000} s (last: ${how}); giving up`,
      );
    }
    const delay = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.crashes.length - 1));
    this.setup.log.warn(
      { workerPid: worker.child.pid, exit: how, restartInMs: delay },
      'worker exited unexpectedly; restarting',
    );
    setTimeout(() => {
      if (!this.stopping && !this.draining) this.start();
    }, delay);
  }
}
