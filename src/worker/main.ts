// Worker entry point. Spawned by the supervisor with an empty environment and
// two inherited descriptors: the bound listening socket (fd 3) and the IPC
// socketpair (fd 4). It never sees the API key.

import { Socket } from 'node:net';
import type { WebSocketServer } from 'ws';
import { WORKER_IPC_FD } from '../shared/constants.js';
import { FrameDecoder, FrameWriter, Msg, decodeHead, decodeKeyScan, decodeWindowIncrement, type MsgType } from '../shared/ipcProtocol.js';
import { createLogger, writeStderr, type Logger } from '../shared/logger.js';
import { decodeWorkerConfig, type WorkerConfig } from '../shared/workerConfig.js';
import { DumpWriter } from './dumpWriter.js';
import { beginWorkerSandbox, installWorkerSandbox, type SandboxOptions } from './sandbox.js';
import { Frontend } from './frontend.js';
import { ClientSocket } from './clientSocket.js';
import { isMessageFrame } from '../shared/wsRelay.js';

const channel = new Socket({ fd: WORKER_IPC_FD, readable: true, writable: true });
const writer = new FrameWriter(channel);
let log: Logger | null = null;
let frontend: Frontend | null = null;

// The supervisor is our reason to live: when the channel closes (it exited or
// was killed), stop at once so nothing keeps holding the port.
channel.on('close', () => process.exit(0));
channel.on('error', () => process.exit(0));

function onFrame(type: MsgType, streamId: number, payload: Buffer): void {
  if (log === null) {
    if (type !== Msg.CONFIG) throw new Error('first frame from the supervisor was not CONFIG');
    const config = decodeWorkerConfig(payload);
    log = createLogger('worker', config.logLevel);
    void start(config, log);
    return;
  }
  if (type === Msg.DRAIN) {
    if (frontend === null) writer.send(Msg.DRAINED, 0);
    else frontend.drain();
    return;
  }
  if (frontend === null) return; // still starting: nothing can be open yet
  if (type === Msg.REQUEST_SCANNED) return frontend.onRequestScanned(streamId, decodeKeyScan(payload));
  const stream = frontend.streams.get(streamId);
  if (stream === undefined) return; // already closed on this side: late frames are expected
  switch (type) {
    case Msg.RESPONSE_HEAD: {
      const { status, headers } = decodeHead(payload, true);
      return stream.onResponseHead(status, headers);
    }
    case Msg.RESPONSE_DATA:
      return stream.onResponseData(payload);
    case Msg.RESPONSE_END:
      return stream.onResponseEnd();
    case Msg.RESET:
      return stream.onReset();
    case Msg.WINDOW:
      return stream.onWindow(decodeWindowIncrement(payload));
  }
  if (!(stream instanceof ClientSocket)) return;
  if (type === Msg.WS_CLOSE) return stream.onCloseFrame(payload);
  if (isMessageFrame(type)) return stream.onMessageFrame(type, payload);
}

function startupFailed(reason: string): void {
  writer.send(Msg.STARTUP_FAILED, 0, Buffer.from(reason.slice(0, 1000)));
  // The supervisor stops us.
}

async function start(config: WorkerConfig, logger: Logger): Promise<void> {
  const sandbox: SandboxOptions = {
    allowWeaker: config.allowWeakerSandbox,
    allowCapabilities: config.allowCapabilities,
    files: { read: config.readPaths, write: config.dumpDir === null ? [] : [config.dumpDir] },
  };
  // Landlock binds only threads started after it: before anything below starts libuv's pool.
  try {
    beginWorkerSandbox(sandbox);
  } catch (err) {
    return startupFailed(err instanceof Error ? err.message : String(err));
  }
  // ws only with --websocket: loading it costs several MiB of RSS. Imported
  // here, under Landlock (its directory is among the read paths).
  let webSocketServer: typeof WebSocketServer | null = null;
  if (config.webSocket !== null) {
    try {
      webSocketServer = (await import('ws')).WebSocketServer;
    } catch (err) {
      return startupFailed(`cannot load ws for --websocket: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  let dumps: DumpWriter | null = null;
  if (config.dumpDir !== null) {
    dumps = new DumpWriter(config.dumpDir, config.dumpMaxBytes, config.dumpSequenceStart, logger);
    try {
      await dumps.probe();
    } catch (err) {
      return startupFailed(`cannot write to --dump-dir ${config.dumpDir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  const server = new Frontend(config, writer, logger, dumps, webSocketServer);
  // listen(2) on the inherited socket now, while the filter still allows it;
  // nothing is accepted before this function returns to the event loop, by
  // which time every layer is in place.
  server.listen(() => writer.send(Msg.READY, 0));
  try {
    const layers = installWorkerSandbox(sandbox);
    for (const { layer, reason } of layers.missing) logger.warn({ layer, reason }, 'worker sandbox layer missing (--allow-weaker-sandbox)');
  } catch (err) {
    server.close();
    return startupFailed(err instanceof Error ? err.message : String(err));
  }
  frontend = server;
}

// Response bodies are handed on in pieces as they arrive (never copied to reassemble a frame).
const decoder = new FrameDecoder('supervisor', onFrame, new Set([Msg.RESPONSE_DATA]));
channel.on('data', (chunk: Buffer) => decoder.push(chunk));

process.on('uncaughtException', (err) => {
  // A bug here must not leave a half-working worker: report and exit; the
  // supervisor decides what happens next.
  if (log !== null) log.fatal({ err: { message: err.message, stack: err.stack } }, 'worker failed');
  else writeStderr(`responses-api-proxy worker failed: ${err.message}\n`);
  frontend?.abortAll('worker failed');
  process.exit(70);
});
