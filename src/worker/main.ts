// Worker entry point. Spawned by the supervisor with an empty environment and
// two inherited descriptors: the bound listening socket (fd 3) and the IPC
// socketpair (fd 4). It never sees the API key.

import { Socket } from 'node:net';
import type { WebSocketServer } from 'ws';
import { WORKER_IPC_FD } from '../shared/constants.js';
import { messageOf, ProtocolError } from '../shared/errors.js';
import { IpcDispatcher } from '../shared/ipcDispatch.js';
import {
  FrameWriter,
  Msg,
  decodeHead,
  decodeKeyScan,
  decodeUsage,
  decodeWindowIncrement,
} from '../shared/ipcProtocol.js';
import { createLogger, writeStderr, type Logger } from '../shared/logger.js';
import { decodeWorkerConfig, type WorkerConfig } from '../shared/workerConfig.js';
import { DumpWriter } from './dumpWriter.js';
import { beginWorkerSandbox, installWorkerSandbox, type SandboxOptions } from './sandbox.js';
import { giveMemoryBack, trimWhenIdle } from '../shared/idleTrim.js';
import { Frontend } from './frontend.js';
import { ClientSocket } from './clientSocket.js';
import type { ClientExchange } from './exchange.js';

const channel = new Socket({ fd: WORKER_IPC_FD, readable: true, writable: true });
const writer = new FrameWriter(channel);
let log: Logger | null = null;
let frontend: Frontend | null = null;
/** --dump-dir: dump files go to the supervisor through this. */
let dumps: DumpWriter | null = null;

// The supervisor is our reason to live: when the channel closes (it exited or
// was killed), stop at once so nothing keeps holding the port.
channel.on('close', () => process.exit(0));
channel.on('error', () => process.exit(0));

// One handler for each message the protocol table lets the supervisor send;
// the dispatcher checks when each is permitted (stream messages only once we
// said READY, so `frontend` is set for them).
const supervisor = new IpcDispatcher(
  'supervisor',
  {
    CONFIG: (_id, payload) => configure(decodeWorkerConfig(payload)),
    DRAIN: () => {
      if (frontend === null)
        writer.send(Msg.DRAINED, 0); // still starting: nothing is open
      else frontend.drain();
    },
    RESPONSE_HEAD: (id, payload) => {
      const { status, headers } = decodeHead(payload, true);
      stream(id)?.onResponseHead(status, headers);
    },
    RESPONSE_DATA: (id, payload) => stream(id)?.onResponseData(payload),
    RESPONSE_END: (id, payload) => stream(id)?.onResponseEnd(payload.length === 0 ? null : decodeUsage(payload)),
    REQUEST_SCANNED: (id, payload) => frontend?.onRequestScanned(id, decodeKeyScan(payload)),
    RESET: (id) => stream(id)?.onReset(),
    WINDOW: (id, payload) => stream(id)?.onWindow(decodeWindowIncrement(payload)),
    WS_TEXT_PART: (id, payload) => webSocket(id)?.onMessageFrame(Msg.WS_TEXT_PART, payload),
    WS_TEXT_END: (id, payload) => webSocket(id)?.onMessageFrame(Msg.WS_TEXT_END, payload),
    WS_BINARY_PART: (id, payload) => webSocket(id)?.onMessageFrame(Msg.WS_BINARY_PART, payload),
    WS_BINARY_END: (id, payload) => webSocket(id)?.onMessageFrame(Msg.WS_BINARY_END, payload),
    WS_CLOSE: (id, payload) => webSocket(id)?.onCloseFrame(payload),
    DUMP_WINDOW: (_id, payload) => dumps?.grant(payload.readUInt32BE(0)),
  },
  null,
  // Response bodies are handed on in pieces as they arrive (never copied to reassemble a frame).
  new Set([Msg.RESPONSE_DATA]),
);

/** An open stream; undefined once it has closed on this side (late frames are expected). */
function stream(id: number): ClientExchange | undefined {
  return frontend?.streams.get(id);
}

/** An open WebSocket stream: a WebSocket frame on an HTTP stream is a violation. */
function webSocket(id: number): ClientSocket | undefined {
  const open = stream(id);
  if (open === undefined || open instanceof ClientSocket) return open;
  throw new ProtocolError(`frame of the wrong kind for stream ${id}`);
}

function configure(config: WorkerConfig): void {
  supervisor.configure({
    httpShutdown: config.httpShutdown,
    webSocket: config.webSocket !== null,
    dumps: config.dumpDir !== null,
    allowModel: config.allowModels !== null,
  });
  log = createLogger('worker', config.logLevel);
  void start(config, log);
}

function startupFailed(reason: string): void {
  writer.send(Msg.STARTUP_FAILED, 0, Buffer.from(reason.slice(0, 1000)));
  // The supervisor stops us.
}

async function start(config: WorkerConfig, logger: Logger): Promise<void> {
  const sandbox: SandboxOptions = {
    allowWeaker: config.allowWeakerSandbox,
    allowCapabilities: config.allowCapabilities,
    files: { read: config.readPaths },
  };
  // Landlock binds only threads started after it: before anything below starts libuv's pool.
  try {
    beginWorkerSandbox(sandbox);
  } catch (err) {
    return startupFailed(messageOf(err));
  }
  // ws only with --websocket: loading it costs several MiB of RSS. Imported
  // here, under Landlock (its directory is among the read paths).
  let webSocketServer: typeof WebSocketServer | null = null;
  if (config.webSocket !== null) {
    try {
      webSocketServer = (await import('ws')).WebSocketServer;
    } catch (err) {
      return startupFailed(`cannot load ws for --websocket: ${messageOf(err)}`);
    }
  }
  if (config.dumpDir !== null) dumps = new DumpWriter(writer, config.dumpMaxBytes, logger);
  const server = new Frontend(config, writer, logger, dumps, webSocketServer);
  // listen(2) on the inherited socket now, while the filter still allows it;
  // nothing is accepted before this function returns to the event loop, by
  // which time every layer is in place.
  server.listen(() => {
    supervisor.sent(Msg.READY);
    writer.send(Msg.READY, 0);
  });
  try {
    const layers = installWorkerSandbox(sandbox);
    for (const { layer, reason } of layers.missing)
      logger.warn({ layer, reason }, 'worker sandbox layer missing (--allow-weaker-sandbox)');
  } catch (err) {
    server.close();
    return startupFailed(messageOf(err));
  }
  frontend = server;
  // Before returning to the event loop, so before any client is accepted.
  giveMemoryBack();
  trimWhenIdle(() => ({ openStreams: server.streams.size, streamsOpened: server.streamsOpened }));
}

channel.on('data', (chunk: Buffer) => {
  try {
    supervisor.push(chunk);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    // Not what the supervisor sends: nothing it says can be trusted any more.
    if (log !== null) log.fatal({ reason: err.message }, 'IPC protocol violation by the supervisor');
    else writeStderr(`responses-api-proxy worker: IPC protocol violation by the supervisor: ${err.message}\n`);
    exitFailed('IPC protocol violation by the supervisor');
  }
});

process.on('uncaughtException', (err) => {
  // A bug here must not leave a half-working worker: report and exit; the
  // supervisor decides what happens next.
  if (log !== null) log.fatal({ err: { message: err.message, stack: err.stack } }, 'worker failed');
  else writeStderr(`responses-api-proxy worker failed: ${err.message}\n`);
  exitFailed('worker failed');
});

/** Cut every open stream, so no partial response looks complete, and exit. */
function exitFailed(reason: string): never {
  frontend?.abortAll(reason);
  process.exit(70);
}
