// Structured logs (pino, JSON lines) on stderr for both processes.
//
// stderr may be a pipe whose reader has gone away (the Codex GitHub Action
// closes the step's pipes while the proxy keeps serving): a failed write must
// never throw, kill or stall the proxy, so the sink swallows write errors and
// stops writing once stderr is gone.

import { writeSync } from 'node:fs';
import pino from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type Logger = pino.Logger;

let stderrGone = false;

/** Write a line to fd 2, dropping it if stderr is closed or would block. */
export function writeStderr(text: string): void {
  if (stderrGone) return;
  try {
    writeSync(2, text);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EAGAIN') stderrGone = true; // EPIPE, EBADF, ...: stop trying
  }
}

const stderrSink = { write: writeStderr };

/** Header names that must never reach a log line with their value. */
const SECRET_HEADER_PATHS = ['authorization', 'cookie', '"set-cookie"', '"proxy-authorization"'];

export function createLogger(processName: 'supervisor' | 'worker', level: LogLevel): Logger {
  const paths = SECRET_HEADER_PATHS.flatMap((h) => [`headers.${h}`, `*.headers.${h}`]);
  return pino(
    {
      level,
      base: { pid: process.pid, process: processName },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths, censor: '[REDACTED]' },
    },
    stderrSink,
  );
}
