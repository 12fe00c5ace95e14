// What each process loads, seen from outside: ws only with --websocket,
// proper-lockfile only with --server-info, and undici's Pool without its index
// (each costs resident memory for nothing otherwise, and proper-lockfile patches
// fs and process signal handling as it loads; README, Dependencies). They are
// CommonJS, so every file they load lands in require.cache, which a preload
// prints at exit.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as undici from 'undici';
import buildConnector from 'undici/lib/core/connect.js';
import Pool from 'undici/lib/dispatcher/pool.js';

const DIST = fileURLToPath(new URL('../src/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'rap-loaded-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const PRELOAD = join(dir, 'printCache.cjs');
writeFileSync(
  PRELOAD,
  "process.on('exit', () => require('fs').writeSync(2, '\\nLOADED ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));\n",
);

/**
 * Package files a process loaded before it exited (it is killed, by pid, after
 * 10 s). With `stdin`, that is written to it; with `stopWhen`, it is sent
 * SIGTERM once its output matches.
 */
function loadedFiles(
  args: string[],
  stdio: ('ignore' | 'pipe')[],
  options: { stdin?: string; stopWhen?: RegExp } = {},
): Promise<string[]> {
  const child = spawn(process.execPath, ['--require', PRELOAD, ...args], { stdio });
  if (options.stdin !== undefined) child.stdin?.end(options.stdin);
  let stderr = '';
  let stopped = false;
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
    if (!stopped && options.stopWhen?.test(stderr) === true) {
      stopped = true;
      child.kill('SIGTERM');
    }
  });
  child.stdio[4]?.destroy(); // the worker's IPC channel: closed at once, so it exits
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  return new Promise((resolve, reject) => {
    child.on('close', () => {
      clearTimeout(timer);
      const line = /^LOADED (.*)$/m.exec(stderr);
      if (line === null) return reject(new Error(`no module list printed; stderr: ${stderr.slice(-500)}`));
      resolve((JSON.parse(line[1] as string) as string[]).filter((f) => f.includes('/node_modules/')));
    });
  });
}

const has = (files: string[], part: string): boolean => files.some((f) => f.includes(part));

test("undici's pool.js and connect.js are its public Pool and buildConnector", () => {
  assert.equal(Pool, undici.Pool);
  assert.equal(buildConnector, undici.buildConnector);
});

test("the supervisor loads undici's Pool but not its index, and no ws without --websocket", async () => {
  // No key on stdin: it loads its modules, refuses to start and exits.
  const files = await loadedFiles(
    [join(DIST, 'supervisor/main.js'), '--upstream-url', 'http://127.0.0.1:9/v1/responses'],
    ['ignore', 'ignore', 'pipe'],
  );
  assert.ok(has(files, '/node_modules/undici/lib/dispatcher/pool.js'), 'control: the list shows what was loaded');
  assert.ok(!has(files, '/node_modules/undici/index.js'), "undici's index was loaded");
  assert.ok(!has(files, '/node_modules/ws/'), 'ws was loaded without --websocket');
});

test('the supervisor loads proper-lockfile only with --server-info', async () => {
  const serve = (extra: string[]): Promise<string[]> =>
    loadedFiles(
      [join(DIST, 'supervisor/main.js'), '--upstream-url', 'http://127.0.0.1:9/v1/responses', ...extra],
      ['pipe', 'ignore', 'pipe'],
      {
        stdin: 'sk-loaded-modules-test-key\n',
        stopWhen: /listening on 127\.0\.0\.1:\d+/,
      },
    );
  const without = await serve([]);
  assert.ok(has(without, '/node_modules/undici/lib/dispatcher/pool.js'), 'control: the list shows what was loaded');
  assert.ok(!has(without, '/node_modules/proper-lockfile/'), 'proper-lockfile was loaded without --server-info');
  assert.ok(!has(without, '/node_modules/graceful-fs/'), 'graceful-fs was loaded without --server-info');
  const withInfo = await serve(['--server-info', join(dir, 'server-info.json')]);
  assert.ok(has(withInfo, '/node_modules/proper-lockfile/'), 'proper-lockfile was not loaded with --server-info');
});

test('the worker loads no ws before its configuration asks for it', async () => {
  const files = await loadedFiles([join(DIST, 'worker/main.js')], ['ignore', 'ignore', 'pipe', 'ignore', 'pipe']);
  assert.ok(has(files, '/node_modules/pino/'), 'control: the list shows what was loaded');
  assert.ok(!has(files, '/node_modules/ws/'), 'ws was loaded without --websocket');
});
