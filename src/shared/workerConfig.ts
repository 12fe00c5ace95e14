// The worker's configuration, sent by the supervisor as the CONFIG frame.
// The worker gets nothing from argv or its (empty) environment.

import { LOG_LEVELS, type LogLevel } from './logger.js';
import { ProtocolError } from './errors.js';

export interface WorkerConfig {
  /** Serve GET /shutdown (the --http-shutdown flag). */
  readonly httpShutdown: boolean;
  readonly logLevel: LogLevel;
  /** Open requests beyond this get 503 (--max-concurrent). */
  readonly maxOpenStreams: number;
  /** Request bodies beyond this get 413 (--max-body-bytes). */
  readonly maxBodyBytes: number;
  /** --dump-dir (absolute, created by the supervisor), or null. */
  readonly dumpDir: string | null;
  readonly dumpMaxBytes: number;
  /** Sequence number of the next dump pair (continues across worker restarts). */
  readonly dumpSequenceStart: number;
  /** Start even if a sandbox layer cannot be installed (--allow-weaker-sandbox). */
  readonly allowWeakerSandbox: boolean;
  /** Capabilities are expected (--uid 0 was asked for explicitly). */
  readonly allowCapabilities: boolean;
  /** --websocket: serve GET /v1/responses upgrades; null when off. */
  readonly webSocket: WebSocketLimits | null;
  /** --allow-model patterns, or null: every model is forwarded. */
  readonly allowModels: readonly string[] | null;
}

export interface WebSocketLimits {
  /** --ws-max-message-bytes */
  readonly maxMessageBytes: number;
  /** --ws-idle-timeout: close a socket with no message either way for this long. */
  readonly idleTimeoutMs: number;
}

export function encodeWorkerConfig(config: WorkerConfig): Buffer {
  return Buffer.from(JSON.stringify(config), 'utf8');
}

export function decodeWorkerConfig(payload: Buffer): WorkerConfig {
  const value: unknown = JSON.parse(payload.toString('utf8'));
  if (value === null || typeof value !== 'object') throw new ProtocolError('CONFIG is not an object');
  const c = value as Record<string, unknown>;
  if (typeof c.httpShutdown !== 'boolean') throw new ProtocolError('CONFIG.httpShutdown');
  if (!(LOG_LEVELS as readonly unknown[]).includes(c.logLevel)) throw new ProtocolError('CONFIG.logLevel');
  if (!isCount(c.maxOpenStreams) || (c.maxOpenStreams as number) < 1) {
    throw new ProtocolError('CONFIG.maxOpenStreams');
  }
  if (c.dumpDir !== null && typeof c.dumpDir !== 'string') throw new ProtocolError('CONFIG.dumpDir');
  if (typeof c.allowWeakerSandbox !== 'boolean' || typeof c.allowCapabilities !== 'boolean') throw new ProtocolError('CONFIG sandbox');
  if (!isCount(c.dumpMaxBytes) || !isCount(c.dumpSequenceStart) || !isCount(c.maxBodyBytes)) throw new ProtocolError('CONFIG limits');
  const ws = c.webSocket as Record<string, unknown> | null;
  if (ws !== null && (typeof ws !== 'object' || !isCount(ws.maxMessageBytes) || !isCount(ws.idleTimeoutMs))) throw new ProtocolError('CONFIG.webSocket');
  const models = c.allowModels;
  if (models !== null && (!Array.isArray(models) || !models.every((m) => typeof m === 'string'))) {
    throw new ProtocolError('CONFIG.allowModels');
  }
  return {
    httpShutdown: c.httpShutdown,
    logLevel: c.logLevel as LogLevel,
    maxOpenStreams: c.maxOpenStreams as number,
    maxBodyBytes: c.maxBodyBytes as number,
    dumpDir: c.dumpDir,
    dumpMaxBytes: c.dumpMaxBytes as number,
    dumpSequenceStart: c.dumpSequenceStart as number,
    allowWeakerSandbox: c.allowWeakerSandbox,
    allowCapabilities: c.allowCapabilities,
    webSocket: ws === null ? null : { maxMessageBytes: ws.maxMessageBytes as number, idleTimeoutMs: ws.idleTimeoutMs as number },
    allowModels: models as string[] | null,
  };
}

function isCount(value: unknown): boolean {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
