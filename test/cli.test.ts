// Command line: --help / --version, usage errors (exit 2, one line, no stack,
// never waiting for stdin) and a port already in use (exit 1, nothing opened).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { lines, stackLines, tryConnect, freePort } from './helpers/netProbe.js';
import { ProxyProcess, type ExitStatus } from './helpers/proxyProcess.js';

const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** Spawn with stdin left open and nothing written: the proxy must exit on its own. */
// stdin stays open, so a proxy that waits for it never exits: the limit only
// bounds the test, and is generous because starting Node takes seconds on a loaded CI machine.
async function runWithOpenStdin(
  args: readonly string[],
  timeoutMs = 15_000,
): Promise<{ status: ExitStatus | null; proxy: ProxyProcess }> {
  const proxy = ProxyProcess.spawn({ args, stdin: '', keepStdinOpen: true });
  try {
    const status = await proxy.waitForExit(timeoutMs);
    return { status, proxy };
  } finally {
    await proxy.stop('SIGKILL', 2_000);
    proxy.child.stdin?.destroy();
  }
}

describe('cli: --help and --version', { concurrency: 4, timeout: 90_000 }, () => {
  for (const flag of ['--help', '-h']) {
    test(`${flag} prints usage to stdout and exits 0 without reading stdin`, { timeout: 30_000 }, async () => {
      const { status, proxy } = await runWithOpenStdin([flag]);
      assert.deepEqual(status, { code: 0, signal: null }, `stderr: ${proxy.stderr}`);
      assert.match(proxy.stdout, /^Usage: responses-api-proxy /);
      for (const option of ['--port', '--server-info', '--http-shutdown', '--upstream-url', '--dump-dir'])
        assert.ok(proxy.stdout.includes(option), `usage lacks ${option}`);
      assert.equal(proxy.stderr, '');
    });
  }

  for (const flag of ['--version', '-V']) {
    test(`${flag} prints the version to stdout and exits 0 without reading stdin`, { timeout: 30_000 }, async () => {
      const { status, proxy } = await runWithOpenStdin([flag]);
      assert.deepEqual(status, { code: 0, signal: null }, `stderr: ${proxy.stderr}`);
      assert.equal(proxy.stdout, `responses-api-proxy ${PACKAGE_VERSION}\n`);
      assert.equal(proxy.stderr, '');
    });
  }
});

interface UsageCase {
  readonly name: string;
  readonly args: readonly string[];
  /** Every string the single error line must contain. */
  readonly mentions: readonly string[];
}

const USAGE_CASES: readonly UsageCase[] = [
  { name: 'unknown flag --bogus', args: ['--bogus'], mentions: ['--bogus'] },
  { name: 'positional argument', args: ['extra-positional'], mentions: ['extra-positional'] },
  { name: '--port 70000', args: ['--port', '70000'], mentions: ['--port', '70000'] },
  { name: '--port -1', args: ['--port', '-1'], mentions: ['--port', '-1'] },
  { name: '--port abc', args: ['--port', 'abc'], mentions: ['--port', 'abc'] },
  { name: '--port given twice', args: ['--port', '0', '--port', '0'], mentions: ['--port'] },
  { name: '--check-sandbox given twice', args: ['--check-sandbox', '--check-sandbox'], mentions: ['--check-sandbox'] },
  { name: '--no-dump-dir', args: ['--no-dump-dir'], mentions: ['--no-dump-dir'] },
  {
    name: '--ws-idle-timeout without --websocket',
    args: ['--ws-idle-timeout', '5'],
    mentions: ['--ws-idle-timeout', '--websocket'],
  },
  {
    name: '--ws-max-message-bytes 0',
    args: ['--websocket', '--ws-max-message-bytes', '0'],
    mentions: ['--ws-max-message-bytes', '0'],
  },
  {
    name: '--ws-idle-timeout -1',
    args: ['--websocket', '--ws-idle-timeout', '-1'],
    mentions: ['--ws-idle-timeout', '-1'],
  },
  {
    name: '--upstream-url relative/path',
    args: ['--upstream-url', 'relative/path'],
    mentions: ['--upstream-url', 'relative/path'],
  },
  { name: '--upstream-url ftp://x/y', args: ['--upstream-url', 'ftp://x/y'], mentions: ['--upstream-url', 'ftp'] },
  { name: '--log-level loud', args: ['--log-level', 'loud'], mentions: ['--log-level', 'loud'] },
  // Node's timers fire at once for longer delays: the grace period would be none.
  {
    name: '--shutdown-timeout 2147484',
    args: ['--shutdown-timeout', '2147484'],
    mentions: ['--shutdown-timeout', '2147484'],
  },
];

describe(
  'cli: usage errors exit 2 with one line and do not wait for stdin',
  { concurrency: 4, timeout: 180_000 },
  () => {
    for (const c of USAGE_CASES) {
      test(c.name, { timeout: 30_000 }, async () => {
        const { status, proxy } = await runWithOpenStdin(c.args);
        assert.notEqual(status, null, 'the proxy waited (for stdin?) instead of exiting on a usage error');
        assert.deepEqual(status, { code: 2, signal: null }, `stderr: ${proxy.stderr}`);
        assert.equal(proxy.stdout, '', 'nothing on stdout');
        const errLines = lines(proxy.stderr);
        assert.equal(errLines.length, 1, `exactly one line on stderr, got: ${JSON.stringify(proxy.stderr)}`);
        assert.deepEqual(stackLines(proxy.stderr), [], 'no stack trace');
        assert.ok(proxy.stderr.endsWith('\n'), 'the line ends with a newline');
        const line = errLines[0] as string;
        for (const m of c.mentions)
          assert.ok(line.includes(m), `error line ${JSON.stringify(line)} should mention ${JSON.stringify(m)}`);
        assert.doesNotMatch(proxy.stderr, /listening on/);
      });
    }

    test('a usage error after a valid --port opens nothing on that port', { timeout: 30_000 }, async () => {
      const port = await freePort();
      const { status, proxy } = await runWithOpenStdin(['--port', String(port), '--log-level', 'loud']);
      assert.deepEqual(status, { code: 2, signal: null }, `stderr: ${proxy.stderr}`);
      assert.equal(await tryConnect(port), 'refused');
    });
  },
);

describe('cli: port already in use', { timeout: 30_000 }, () => {
  test('exits 1 with one "already in use" line and leaves the port to its owner', { timeout: 15_000 }, async () => {
    const accepted: Socket[] = [];
    const server: Server = createServer((socket) => {
      accepted.push(socket);
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const proxy = ProxyProcess.spawn({ args: ['--port', String(port)] });
    try {
      const status = await proxy.waitForExit(10_000);
      assert.deepEqual(status, { code: 1, signal: null }, `stderr: ${proxy.stderr}`);
      assert.equal(proxy.stdout, '');
      const errLines = lines(proxy.stderr);
      assert.equal(errLines.length, 1, `exactly one line on stderr, got: ${JSON.stringify(proxy.stderr)}`);
      assert.match(errLines[0] as string, /already in use/);
      assert.ok((errLines[0] as string).includes(String(port)), 'the line names the port');
      assert.deepEqual(stackLines(proxy.stderr), []);
      assert.doesNotMatch(proxy.stderr, /listening on/);

      // The port still belongs to our server: a connection reaches it.
      const before = accepted.length;
      assert.equal(await tryConnect(port), 'connected');
      const reachedUs = await new Promise<boolean>((resolve) => {
        const deadline = Date.now() + 2_000;
        const check = (): void => {
          if (accepted.length > before) resolve(true);
          else if (Date.now() > deadline) resolve(false);
          else setTimeout(check, 10);
        };
        check();
      });
      assert.ok(reachedUs, 'the connection was accepted by the test server, not by a proxy');
    } finally {
      await proxy.stop('SIGKILL', 2_000);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
