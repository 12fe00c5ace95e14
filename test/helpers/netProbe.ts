// Small probes for black-box lifecycle tests: is a port listening, a free port,
// the proxy's stderr split into lines and pino records, /proc reads.

import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';

export type ConnectOutcome = 'connected' | 'refused' | 'timeout' | `error:${string}`;

/** Try one TCP connection to 127.0.0.1:port; close it at once if it opens. */
export function tryConnect(port: number, timeoutMs = 2_000): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = (outcome: ConnectOutcome): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    socket.once('connect', () => done('connected'));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'refused' : `error:${err.code ?? err.message}`),
    );
  });
}

/** Poll until a connection to port is refused (or timeoutMs passes); returns the last outcome. */
export async function waitUntilRefused(port: number, timeoutMs = 2_000): Promise<ConnectOutcome> {
  const deadline = Date.now() + timeoutMs;
  let outcome = await tryConnect(port, 500);
  while (outcome !== 'refused' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    outcome = await tryConnect(port, 500);
  }
  return outcome;
}

/** A port that was free a moment ago on 127.0.0.1 (bound to 0, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Non-empty lines of a process's output. */
export function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

/** Lines that look like a JavaScript stack frame. */
export function stackLines(text: string): string[] {
  return text.split('\n').filter((line) => line.startsWith('    at '));
}

export type LogRecord = Record<string, unknown>;

/** Every stderr line that parses as a JSON object (pino records). */
export function jsonRecords(text: string): LogRecord[] {
  const records: LogRecord[] = [];
  for (const line of lines(text)) {
    if (!line.startsWith('{')) continue;
    try {
      const value: unknown = JSON.parse(line);
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) records.push(value as LogRecord);
    } catch {
      // not a JSON line
    }
  }
  return records;
}

/** /proc/<pid>/<file> as bytes (environ, cmdline), or null if unreadable. */
export function readProcFile(pid: number, file: 'environ' | 'cmdline'): Buffer | null {
  try {
    return readFileSync(`/proc/${pid}/${file}`);
  } catch {
    return null;
  }
}
