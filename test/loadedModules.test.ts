// What each process loads, seen from outside: ws only with --websocket, and
// undici's Pool without its index (both cost resident memory for nothing
// otherwise; README, Dependencies). ws, undici and pino are CommonJS, so every
// file they load lands in require.cache, which a preload prints at exit.

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
writeFileSync(PRELOAD, "process.on('exit', () => require('fs').writeSync(2, '\\nLOADED ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));\n");

/** Package files a process loaded before it exited (it is killed, by pid, after 10 s). */
function loadedFiles(args: string[], stdio: ('ignore' | 'pipe')[]): Promise<string[]> {
  const child = spawn(process.execPath, ['--require', PRELOAD, ...args], { stdio });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
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
  const files = await loadedFiles([join(DIST, 'supervisor/main.js'), '--upstream-url', 'http://127.0.0.1:9/v1/responses'], ['ignore', 'ignore', 'pipe']);
  assert.ok(has(files, '/node_modules/undici/lib/dispatcher/pool.js'), 'control: the list shows what was loaded');
  assert.ok(!has(files, '/node_modules/undici/index.js'), "undici's index was loaded");
  assert.ok(!has(files, '/node_modules/ws/'), 'ws was loaded without --websocket');
});

test('the worker loads no ws before its configuration asks for it', async () => {
  const files = await loadedFiles([join(DIST, 'worker/main.js')], ['ignore', 'ignore', 'pipe', 'ignore', 'pipe']);
  assert.ok(has(files, '/node_modules/pino/'), 'control: the list shows what was loaded');
  assert.ok(!has(files, '/node_modules/ws/'), 'ws was loaded without --websocket');
});
