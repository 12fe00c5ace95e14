// Runs a scenario of test/fixtures/oidcScenarios.ts as root in a fresh mount
// and network namespace (`unshare -m -n`), where auth.openai.com and
// api.openai.com are loopback mocks, and returns what it reports. Outside
// root, or where the kernel refuses the namespaces, `namespaceSkipReason`
// says why and the tests skip.

import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('../fixtures/oidcScenarios.js', import.meta.url));

let skipReason: string | false | undefined;

/** Why namespace tests cannot run here, or false when they can. */
export function namespaceSkipReason(): string | false {
  if (skipReason !== undefined) return skipReason;
  if (process.getuid?.() !== 0) {
    return (skipReason = 'needs root: a network namespace with auth.openai.com on loopback');
  }
  try {
    execFileSync('unshare', ['-m', '-n', '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
    skipReason = false;
  } catch (err) {
    skipReason = `unshare -m -n is not available here (${err instanceof Error ? err.message : String(err)})`;
  }
  return skipReason;
}

/** Run `scenario` in its own namespaces; rejects with the fixture's error (or output) when it did not report. */
export function runScenario<T>(
  scenario: string,
  options: Record<string, unknown> = {},
  timeoutMs = 60_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['-m', '-n', '--', process.execPath, FIXTURE, scenario, JSON.stringify(options)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      let report: { result?: T; error?: string } = {};
      try {
        report = JSON.parse(line) as typeof report;
      } catch {
        return reject(
          new Error(`scenario ${scenario} ended (${code ?? signal}) without a report:\n${stdout}\n${stderr}`),
        );
      }
      if (report.error !== undefined) {
        return reject(new Error(`scenario ${scenario} failed: ${report.error}\n${stderr}`));
      }
      resolve(report.result as T);
    });
  });
}
