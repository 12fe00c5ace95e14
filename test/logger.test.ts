// The log sink of both processes: JSON lines on stderr, header secrets
// censored wherever a header object is logged, order kept across batches.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

const LOGGER = new URL('../src/shared/logger.js', import.meta.url).href;

/** Runs `body` in a fresh Node with `log` from createLogger; returns its stderr lines as parsed JSON. */
function logLines(body: string): Array<Record<string, unknown>> {
  const script = `import { createLogger, writeStderr } from ${JSON.stringify(LOGGER)};
const log = createLogger('worker', 'info');
${body}`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.status, 0, run.stderr);
  return run.stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

test('a header object logged under headers has its secret values censored, in any case', () => {
  const [line] = logLines(
    `log.info({ headers: { Authorization: 'Bearer sk-SECRET1', 'proxy-authorization': 'Basic SECRET2',
      Cookie: 'SECRET3', 'Set-Cookie': ['SECRET4'], 'x-request-id': 'kept' } }, 'h');`,
  );
  assert.ok(line !== undefined);
  assert.doesNotMatch(JSON.stringify(line), /SECRET/);
  assert.deepEqual(line.headers, {
    Authorization: '[REDACTED]',
    'proxy-authorization': '[REDACTED]',
    Cookie: '[REDACTED]',
    'Set-Cookie': '[REDACTED]',
    'x-request-id': 'kept',
  });
});

test('log lines batched in one turn and a direct stderr write keep their order', () => {
  const lines = logLines(`log.info('one'); log.info('two'); writeStderr('{"msg":"direct"}\\n'); log.info('three');`);
  assert.deepEqual(
    lines.map((l) => l.msg),
    ['one', 'two', 'direct', 'three'],
  );
});
