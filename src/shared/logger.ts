// Structured logs (pino, JSON lines) on stderr for both processes.
//
// stderr may be a pipe whose reader has gone away (the Codex GitHub Action
// closes the step's pipes while the proxy keeps serving): a failed write must
// never throw, kill or stall the proxy, so the sink swallows write errors and
// stops writing once stderr is gone.
//
// Log lines (one per request at info) are written in batches: those of one
// event-loop turn go out in one write, not one syscall each. Anything written
// directly, and process exit, flushes the batch first, so order is kept and
// nothing logged before an exit is lost.

import { writeSync } from 'node:fs';
import pino from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type Logger = pino.Logger;

let stderrGone = false;
/** A batch larger than this is written at once rather than at the end of the turn. */
const BATCH_BYTES = 16 * 1024;
let batch: string[] = [];
let batchBytes = 0;
let flushScheduled = false;

/** Write a line to fd 2 (after any pending log lines), dropping it if stderr is closed or would block. */
export function writeStderr(text: string): void {
  flushLogLines();
  writeNow(text);
}

function writeNow(text: string): void {
  if (stderrGone) return;
  try {
    writeSync(2, text);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EAGAIN') stderrGone = true; // EPIPE, EBADF, ...: stop trying
  }
}

function flushLogLines(): void {
  if (batch.length === 0) return;
  const text = batch.length === 1 ? (batch[0] as string) : batch.join('');
  batch = [];
  batchBytes = 0;
  writeNow(text);
}

const stderrSink = {
  write(line: string): void {
    if (stderrGone) return;
    batch.push(line);
    batchBytes += line.length;
    if (batchBytes >= BATCH_BYTES) return flushLogLines();
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(() => {
      flushScheduled = false;
      flushLogLines();
    });
  },
};
process.on('exit', flushLogLines);

/** Header names whose values must never reach a log line. */
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);

/**
 * A header object logged under `headers` (no log line logs one today; this is
 * the safety net), secret values censored. A serializer runs only for lines
 * that have the key, where pino's path redaction walked every line.
 */
function censorHeaders(headers: unknown): unknown {
  if (headers === null || typeof headers !== 'object') return headers;
  const censored: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers)) {
    censored[name] = SECRET_HEADERS.has(name.toLowerCase()) ? '[REDACTED]' : value;
  }
  return censored;
}

export function createLogger(processName: 'supervisor' | 'worker', level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, process: processName },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { headers: censorHeaders },
    },
    stderrSink,
  );
}
