// --client-token-file through the real proxy: the token file (new, 0400, its
// owner, there before the server-info file, gone at exit; a file or symlink
// already there refused), and every request and WebSocket handshake without
// "Authorization: Bearer <token>" answered 401 invalid_api_key with nothing
// sent upstream; the token itself never forwarded, logged or dumped.

import assert from 'node:assert/strict';
import {
  existsSync,
  lstatSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { errorOf, sseAnswer, startProxy, tempDir } from './helpers/policyProxy.js';
import { ProxyProcess, TEST_KEY, childPids, runProxyToExit, sleep, waitFor } from './helpers/proxyProcess.js';
import { scanProcessMemory } from './helpers/memScan.js';
import { WsClient } from './helpers/wsClient.js';
import { WsUpstream } from './helpers/wsUpstream.js';

const IS_ROOT = process.getuid?.() === 0;
const BODY = '{"model":"gpt-test","input":"hi","stream":true}';

describe('--client-token-file', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let token: string;
  const dir = tempDir();
  const tokenFile = join(dir, 'sub', 'token');
  const dumpDir = join(dir, 'dumps');

  before(async () => {
    upstream = await MockUpstream.start(sseAnswer);
    proxy = await startProxy(upstream.url(), ['--client-token-file', tokenFile, '--dump-dir', dumpDir]);
    token = readFileSync(tokenFile, 'utf8');
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test('the file holds 256 random bits as 64 hex digits, mode 0400, owned by the user running the proxy and its group', () => {
    assert.match(token, /^[0-9a-f]{64}$/);
    const st = statSync(tokenFile);
    assert.equal(st.mode & 0o7777, 0o400);
    assert.equal(st.uid, process.getuid?.());
    assert.equal(st.gid, process.getgid?.());
  });

  test(
    'no Authorization, a wrong token, a second copy or another scheme: 401 invalid_api_key, nothing upstream',
    { timeout: 20_000 },
    async () => {
      const before = upstream.requests.length;
      const wrong = token.replace(/^./, (c) => (c === '0' ? '1' : '0'));
      const cases: Array<Record<string, string | string[]>> = [
        {},
        { authorization: `Bearer ${wrong}` },
        { authorization: `Bearer ${token}x` },
        { authorization: `Bearer ${TEST_KEY}` },
        { authorization: [`Bearer ${token}`, `Bearer ${token}`] },
        { authorization: `Basic ${token}` },
      ];
      for (const headers of cases) {
        const reply = await send(proxy.port, {
          headers: { 'content-type': 'application/json', ...headers },
          body: BODY,
        });
        assert.equal(reply.status, 401, JSON.stringify(headers));
        const error = errorOf(reply.body);
        assert.equal(error.code, 'invalid_api_key');
        assert.equal(error.type, 'invalid_request_error');
        assert.ok(!reply.body.toString().includes(token));
      }
      await sleep(200);
      assert.equal(upstream.requests.length, before, 'no refused request reached the upstream');
    },
  );

  test(
    'the right token is forwarded as the key, never as itself; any case of the scheme',
    { timeout: 20_000 },
    async () => {
      for (const scheme of ['Bearer', 'bearer']) {
        const reply = await send(proxy.port, {
          headers: { 'content-type': 'application/json', authorization: `${scheme} ${token}` },
          body: BODY,
        });
        assert.equal(reply.status, 200);
        assert.match(reply.body.toString(), /response\.completed/);
        const seen = upstream.requests.at(-1);
        assert.ok(seen);
        assert.equal(seen.headers.authorization, `Bearer ${TEST_KEY}`);
        assert.ok(!seen.rawHeaders.join('\n').includes(token), 'the token reached the upstream');
      }
    },
  );

  test('the token is in no log line and no dump', async () => {
    assert.ok(await waitFor(() => readdirSync(dumpDir).length >= 2, 5_000));
    await sleep(300);
    assert.ok(!proxy.stderr.includes(token), 'the token is in the log');
    for (const name of readdirSync(dumpDir))
      assert.ok(!readFileSync(join(dumpDir, name), 'utf8').includes(token), `the token is in ${name}`);
  });

  test('the file is removed at exit', async () => {
    const status = await proxy.stop('SIGTERM');
    assert.equal(status.code, 0);
    assert.equal(existsSync(tokenFile), false);
  });
});

describe('--client-token-file with --websocket', () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  let token: string;

  before(async () => {
    upstream = await WsUpstream.start();
    const file = join(tempDir(), 'token');
    proxy = await startProxy(upstream.url(), ['--websocket', '--client-token-file', file]);
    token = readFileSync(file, 'utf8');
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    'a handshake without the token is 401 invalid_api_key and never reaches the upstream',
    { timeout: 20_000 },
    async () => {
      for (const headers of [{}, { authorization: 'Bearer nope' }] as Array<Record<string, string>>) {
        const refused = await WsClient.refused(proxy.port, { headers });
        assert.equal(refused.status, 401);
        assert.equal(errorOf(Buffer.from(refused.body)).code, 'invalid_api_key');
      }
      assert.equal(upstream.handshakes.length, 0);
    },
  );

  test('with the token the socket opens; the upstream sees the key, not the token', { timeout: 20_000 }, async () => {
    const client = await WsClient.open(proxy.port, { headers: { authorization: `Bearer ${token}` } });
    const events = await client.turn({ model: 'gpt-test', input: 'hi' });
    assert.ok(events.some((e) => e.type === 'response.completed'));
    const handshake = upstream.handshakes.at(-1);
    assert.ok(handshake);
    assert.equal(handshake.headers.authorization, `Bearer ${TEST_KEY}`);
    assert.ok(!handshake.rawHeaders.join('\n').includes(token));
    client.close();
  });
});

describe('--client-token-file refuses what is already there', () => {
  test('an existing file: exit 1, one line naming it, the file left as it was', { timeout: 20_000 }, async () => {
    const file = join(tempDir(), 'token');
    writeFileSync(file, 'planted\n');
    const run = await runProxyToExit({ args: ['--client-token-file', file] });
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /^Error: cannot create --client-token-file .*token: EEXIST \(a file or symlink is already there/m,
    );
    assert.equal(readFileSync(file, 'utf8'), 'planted\n');
    assert.ok(!/listening on/.test(run.stderr));
  });

  test(
    'a symlink (even a dangling one): refused, its target never created or written',
    { timeout: 20_000 },
    async () => {
      const dir = tempDir();
      const target = join(dir, 'target');
      const link = join(dir, 'token');
      symlinkSync(target, link);
      const run = await runProxyToExit({ args: ['--client-token-file', link] });
      assert.equal(run.code, 1);
      assert.match(run.stderr, /cannot create --client-token-file .*: EEXIST/);
      assert.equal(existsSync(target), false);
      assert.equal(lstatSync(link).isSymbolicLink(), true);
      assert.equal(readlinkSync(link), target);
    },
  );

  test(
    'the token file exists before the server-info file appears, and both go at exit',
    { timeout: 20_000 },
    async () => {
      const dir = tempDir();
      const file = join(dir, 'token');
      const info = join(dir, 'info.json');
      const proxy = ProxyProcess.spawn({ args: ['--client-token-file', file, '--server-info', info] });
      try {
        let tokenFirst = true;
        assert.ok(
          await waitFor(() => {
            if (!existsSync(info)) return false;
            tokenFirst = existsSync(file);
            return true;
          }, 15_000),
        );
        assert.ok(tokenFirst, 'the server-info file appeared before the token file');
      } finally {
        await proxy.stop('SIGTERM');
      }
      assert.equal(existsSync(file), false);
      assert.equal(existsSync(info), false);
    },
  );

  test(
    '--client-token-owner nobody: the file is owned by nobody and its primary group',
    { skip: IS_ROOT ? false : 'needs root: giving a file to another user' },
    async () => {
      const file = join(tempDir(), 'token');
      const proxy = ProxyProcess.spawn({ args: ['--client-token-file', file, '--client-token-owner', 'nobody'] });
      try {
        await proxy.waitForListening(15_000);
        const st = statSync(file);
        assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [65534, 65534, 0o400]);
      } finally {
        await proxy.stop('SIGTERM');
      }
    },
  );

  test('--client-token-owner without --client-token-file is a usage error', async () => {
    const run = await runProxyToExit({ args: ['--client-token-owner', 'nobody'] });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--client-token-owner needs --client-token-file/);
  });
});

/** A proxy with --client-token-file before a mock upstream, and its token; both are ended whatever `use` does. */
async function withTokenProxy(use: (proxy: ProxyProcess, token: Buffer) => Promise<void>): Promise<void> {
  const upstream = await MockUpstream.start(sseAnswer);
  const file = join(tempDir(), 'token');
  // Started inside the try: a proxy that fails to start must not leave the upstream (and this process) running.
  let proxy: ProxyProcess | null = null;
  try {
    proxy = await startProxy(upstream.url(), ['--client-token-file', file]);
    await use(proxy, Buffer.from(readFileSync(file, 'latin1')));
  } finally {
    await proxy?.stop();
    await upstream.close();
  }
}

describe('--client-token-file: what memory holds', () => {
  test(
    'once the file is written, no memory of either process holds the token (the supervisor keeps a keyed digest)',
    { timeout: 60_000, skip: IS_ROOT ? false : 'needs root: reading /proc/<pid>/mem of another process' },
    async (t) => {
      await withTokenProxy(async (proxy, token) => {
        for (const [name, pid] of [
          ['supervisor', proxy.pid],
          ['worker', childPids(proxy.pid)[0] ?? -1],
        ] as const) {
          const scan = scanProcessMemory(pid, token, { includeInaccessible: true });
          t.diagnostic(`${name}: ${(scan.bytesScanned / 2 ** 20).toFixed(0)} MiB scanned`);
          assert.ok(scan.bytesScanned > 10 * 2 ** 20, `${name}: the scan read its memory`);
          assert.deepEqual(
            scan.occurrences.map((o) => o.mapping),
            [],
            `${name}: the token in memory`,
          );
        }
        // The digest still checks a client: the right token passes, a wrong one does not.
        const authorization = `Bearer ${token.toString('latin1')}`;
        const ok = await send(proxy.port, {
          headers: { authorization, 'content-type': 'application/json' },
          body: BODY,
        });
        assert.equal(ok.status, 200);
        const wrong = `Bearer ${token.toString('latin1').replace(/.$/, (c) => (c === '0' ? '1' : '0'))}`;
        const refused = await send(proxy.port, { headers: { authorization: wrong }, body: BODY });
        assert.equal(refused.status, 401);
      });
    },
  );

  test(
    'after clients have offered it, the supervisor holds no copy of the token in its JavaScript heap (digested where it arrived, then zeroed)',
    { timeout: 60_000, skip: IS_ROOT ? false : 'needs root: reading /proc/<pid>/mem of another process' },
    async (t) => {
      await withTokenProxy(async (proxy, token) => {
        const authorization = `Bearer ${token.toString('latin1')}`;
        for (let i = 0; i < 20; i++) {
          const ok = await send(proxy.port, {
            headers: { authorization, 'content-type': 'application/json' },
            body: BODY,
          });
          assert.equal(ok.status, 200);
        }
        const scan = scanProcessMemory(proxy.pid, token, { includeInaccessible: true });
        const found = scan.occurrences.map((o) => `0x${o.address.toString(16)} in ${o.mapping}`);
        t.diagnostic(`supervisor: ${(scan.bytesScanned / 2 ** 20).toFixed(0)} MiB scanned after 20 requests: ${found}`);
        assert.ok(scan.bytesScanned > 10 * 2 ** 20, 'the scan read its memory');
        // Node copies each read of the channel into a buffer of its size and frees the 64 KiB
        // it read into: that freed block of the C heap may hold the last one until reused.
        const outsideCHeap = found.filter((f) => !f.endsWith('[heap]'));
        assert.deepEqual(outsideCHeap, [], 'the offered token in the JavaScript heap (a string, a pooled Buffer)');
        assert.ok(found.length <= 2, `the offered token in the C heap ${found.length} times`);
      });
    },
  );
});
