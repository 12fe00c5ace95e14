// Runs the real Codex CLI (the pinned @openai/codex) in a throwaway home, for
// the compatibility suite.

import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const CODEX = fileURLToPath(new URL('../../../node_modules/.bin/codex', import.meta.url));

export interface CodexRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** performance.now() when the process exited. */
  exitedAt: number;
}

/** `codex <args>` with HOME and CODEX_HOME set to `home` (and `env`); SIGKILLed after timeoutMs. */
export function runCodex(
  args: string[],
  home: string,
  timeoutMs = 60_000,
  env: Record<string, string> = {},
): Promise<CodexRun> {
  return new Promise((resolve) => {
    const child = spawn(CODEX, args, {
      cwd: home,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, CODEX_HOME: home, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, exitedAt: performance.now() });
    });
  });
}
