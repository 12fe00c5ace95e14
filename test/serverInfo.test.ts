// --server-info: exact content, atomic publication, exclusive lock, lock
// recovery after a SIGKILL, removal on SIGTERM.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, lines, stackLines, tryConnect } from './helpers/netProbe.js';
import { send } from './helpers/httpClient.js';
import { ProxyProcess, isAlive, killQuietly, runProxyToExit, sleep, waitFor } from './helpers/proxyProcess.js';

function expectedContent(proxy: ProxyProcess): string {
  return `{"port":${proxy.port},"pid":${proxy.pid}}\n`;
}

interface PollResult {
  /** Non-empty contents seen, in order (deduplicated consecutive repeats). */
  readonly seen: string[];
  readonly reads: number;
  readonly timedOut: boolean;
}

/** Read `path` about every millisecond until it is non-empty (at most timeoutMs). */
async function pollUntilNonEmpty(path: string, timeoutMs = 10_000): Promise<PollResult> {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  let reads = 0;
  while (Date.now() < deadline) {
    reads++;
    let content = '';
    try {
      content = readFileSync(path, 'utf8');
    } catch {
      // not there yet
    }
    if (content !== '') {
      seen.push(content);
      return { seen, reads, timedOut: false };
    }
    await sleep(1);
  }
  return { seen, reads, timedOut: true };
}

describe('server-info file', { concurrency: false, timeout: 60_000 }, () => {
  let root: string;
  const started: ProxyProcess[] = [];
  const strayPids: number[] = [];

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'rap-server-info-'));
  });

  after(async () => {
    for (const proxy of started) await proxy.stop('SIGKILL', 2_000);
    for (const pid of strayPids) killQuietly(pid);
    rmSync(root, { recursive: true, force: true });
  });

  function track(proxy: ProxyProcess): ProxyProcess {
    started.push(proxy);
    return proxy;
  }

  test(
    'is {"port":N,"pid":SUPERVISOR_PID}\\n in new parent directories, never seen partial',
    { timeout: 20_000 },
    async () => {
      const file = join(root, 'content', 'a', 'b', 'info.json');
      assert.equal(existsSync(dirname(file)), false);
      const polling = pollUntilNonEmpty(file, 10_000);
      const proxy = track(ProxyProcess.spawn({ args: ['--server-info', file] }));
      await proxy.waitForListening(10_000);
      const poll = await polling;
      assert.equal(poll.timedOut, false, 'the file never became non-empty within 10 s');
      assert.ok(poll.reads > 1, 'the poller was reading while the proxy started');
      for (const content of poll.seen) {
        assert.ok(content.endsWith('\n'), `a poller saw content without its newline: ${JSON.stringify(content)}`);
        assert.doesNotThrow(
          () => JSON.parse(content),
          `a poller saw content that is not JSON: ${JSON.stringify(content)}`,
        );
      }
      assert.equal(poll.seen[0], expectedContent(proxy));
      assert.equal(readFileSync(file, 'utf8'), expectedContent(proxy));
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as { port: number; pid: number };
      assert.equal(parsed.pid, proxy.pid, 'pid is the supervisor (the process the user started)');
      assert.notEqual(parsed.pid, proxy.workerPid(), 'pid is not the worker');
      assert.equal((await send(parsed.port, { method: 'GET', path: '/' })).status, 403, 'the port in the file serves');
      await proxy.stop();
    },
  );

  test(
    'a second proxy on the same file exits 1 with one line naming it and leaves the file alone',
    { timeout: 20_000 },
    async () => {
      const file = join(root, 'second', 'info.json');
      const first = track(await ProxyProcess.start({ args: ['--server-info', file] }));
      const before = readFileSync(file, 'utf8');
      assert.equal(before, expectedContent(first));

      const port = await freePort();
      const second = await runProxyToExit({ args: ['--server-info', file, '--port', String(port)], timeoutMs: 10_000 });
      assert.deepEqual(
        { code: second.code, signal: second.signal },
        { code: 1, signal: null },
        `stderr: ${second.stderr}`,
      );
      const errLines = lines(second.stderr);
      assert.equal(errLines.length, 1, `exactly one line on stderr, got ${JSON.stringify(second.stderr)}`);
      assert.ok((errLines[0] as string).includes(file), `the line names ${file}: ${errLines[0]}`);
      assert.deepEqual(stackLines(second.stderr), []);
      assert.doesNotMatch(second.stderr, /listening/);
      assert.equal(await tryConnect(port), 'refused', 'the second proxy opened its port');

      assert.equal(readFileSync(file, 'utf8'), before, 'the file was overwritten');
      assert.equal(first.exitStatus, null, 'the first proxy still runs');
      assert.equal((await send(first.port, { method: 'GET', path: '/' })).status, 403, 'the first proxy still serves');
      await first.stop();
    },
  );

  test(
    'after SIGKILL of the owner, a new proxy recovers the lock and writes its own pid',
    { timeout: 20_000 },
    async () => {
      const file = join(root, 'recover', 'info.json');
      const first = track(await ProxyProcess.start({ args: ['--server-info', file] }));
      const worker = first.workerPid();
      strayPids.push(worker);
      first.child.kill('SIGKILL');
      assert.deepEqual(await first.waitForExit(5_000), { code: null, signal: 'SIGKILL' });
      assert.ok(await waitFor(() => !isAlive(worker), 2_000), 'the worker outlived its supervisor by more than 2 s');

      const second = track(ProxyProcess.spawn({ args: ['--server-info', file] }));
      await second.waitForListening(10_000);
      assert.notEqual(second.pid, first.pid);
      assert.equal(readFileSync(file, 'utf8'), expectedContent(second));
      await second.stop();
    },
  );

  test('SIGTERM removes the file (and leaves nothing behind in its directory)', { timeout: 20_000 }, async () => {
    const file = join(root, 'sigterm', 'info.json');
    const proxy = track(await ProxyProcess.start({ args: ['--server-info', file] }));
    assert.equal(readFileSync(file, 'utf8'), expectedContent(proxy));
    proxy.child.kill('SIGTERM');
    assert.deepEqual(await proxy.waitForExit(5_000), { code: 0, signal: null }, `stderr: ${proxy.stderr}`);
    assert.equal(existsSync(file), false, 'server-info file still exists after SIGTERM');
    assert.deepEqual(readdirSync(dirname(file)), [], 'leftovers (lock, temporary files) in the server-info directory');
  });
});
