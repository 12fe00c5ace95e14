// Starts the worker: a fresh Node image (spawn, never fork), an empty
// environment, stdin and stdout closed, stderr shared for logs, the listening
// socket as fd 3 and a dedicated socketpair as fd 4.

import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export const DEFAULT_WORKER_ENTRY = fileURLToPath(new URL('../worker/main.js', import.meta.url));

export interface WorkerProcess {
  readonly child: ChildProcess;
  /** The supervisor's end of the socketpair. */
  readonly channel: Socket;
}

export function spawnWorker(entry: string, listenFd: number): WorkerProcess {
  const child = spawn(process.execPath, [entry], {
    stdio: ['ignore', 'ignore', 'inherit', listenFd, 'pipe'],
    env: {},
    cwd: '/',
  });
  const channel = child.stdio[4] as Socket;
  return { child, channel };
}
