// Runs the proxy once the key is held and the socket bound: starts the worker,
// answers its requests through the Monitor, publishes the server-info file when
// the worker serves, and stops everything (exit code, file removed, key zeroed)
// on a signal, a shutdown request, a protocol violation or the worker's death.

import type { ChildProcess } from 'node:child_process';
import { PROGRAM_NAME } from '../shared/constants.js';
import { FrameWriter, Msg } from '../shared/ipcProtocol.js';
import { writeStderr, type Logger } from '../shared/logger.js';
import { encodeWorkerConfig, type WorkerConfig } from '../shared/workerConfig.js';
import type { AuthHeader } from './authHeader.js';
import type { ListenSocket } from './listenSocket.js';
import { Monitor } from './monitor.js';
import type { ServerInfoFile } from './serverInfo.js';
import { Upstream } from './upstream.js';
import { spawnWorker } from './workerProcess.js';

export interface SupervisorSetup {
  readonly auth: AuthHeader;
  readonly listen: ListenSocket;
  readonly upstreamUrl: URL;
  readonly upstreamTimeoutMs: number;
  readonly serverInfo: ServerInfoFile | null;
  readonly workerConfig: WorkerConfig;
  readonly workerEntry: string;
  readonly log: Logger;
}

export class ProxySupervisor {
  private readonly upstream: Upstream;
  private worker: ChildProcess | null = null;
  private monitor: Monitor | null = null;
  private stopping = false;

  constructor(private readonly setup: SupervisorSetup) {
    this.upstream = new Upstream(setup.upstreamUrl, setup.auth, setup.upstreamTimeoutMs);
  }

  start(): void {
    const { setup } = this;
    const { child, channel } = spawnWorker(setup.workerEntry, setup.listen.fd);
    this.worker = child;
    const writer = new FrameWriter(channel);
    const { workerConfig } = setup;
    const monitor = new Monitor(writer, this.upstream, workerConfig.httpShutdown, workerConfig.dumpDir !== null, setup.log, {
      onReady: () => this.onWorkerReady(child.pid ?? 0),
      onShutdownRequest: () => this.stop(0, 'shutdown requested with GET /shutdown'),
      onStartupFailed: (reason) => this.stop(1, reason),
      onViolation: (reason) => this.stop(1, `the worker broke the IPC protocol (${reason}); stopping`),
    });
    this.monitor = monitor;
    channel.on('data', (chunk: Buffer) => monitor.receive(chunk));
    channel.on('error', () => {}); // the exit handler below reports the worker's end
    child.on('error', (err) => this.stop(1, `cannot start the worker: ${err.message}`));
    child.on('exit', (code, signal) => {
      this.stop(1, `the worker exited unexpectedly (${signal === null ? `code ${code}` : `signal ${signal}`}); stopping`);
    });
    writer.send(Msg.CONFIG, 0, encodeWorkerConfig(setup.workerConfig));
  }

  /** Stop the proxy: abort calls, end the worker, remove the server-info file, exit. */
  stop(exitCode: number, reason: string): void {
    if (this.stopping) return;
    this.stopping = true;
    const { log, serverInfo, auth } = this.setup;
    if (exitCode === 0) log.info({ reason }, 'stopping');
    else log.error({ reason }, 'stopping');
    this.monitor?.cancelAll();
    this.worker?.kill('SIGKILL');
    serverInfo?.remove();
    auth.destroy();
    if (exitCode !== 0) writeStderr(`Error: ${reason}\n`);
    process.exit(exitCode);
  }

  private onWorkerReady(workerPid: number): void {
    const { listen, serverInfo, log } = this.setup;
    try {
      serverInfo?.write(listen.port, process.pid);
    } catch (err) {
      return this.stop(1, `cannot write --server-info ${serverInfo?.path}: ${(err as Error).message}`);
    }
    log.info({ port: listen.port, workerPid, upstream: this.setup.upstreamUrl.origin }, 'listening');
    // The original's line, which scripts wait for.
    writeStderr(`${PROGRAM_NAME} listening on 127.0.0.1:${listen.port}\n`);
  }
}
