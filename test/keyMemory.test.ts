// Issue 8 from outside the process: after 2,000 proxied requests the key's
// bytes exist in the supervisor only inside locked mappings (sodium secure
// memory): not in the V8 heap, malloc arenas or socket buffers. And the scan
// can fail: a throwaway process that sends the key through undici as a plain
// header string leaves it in ordinary memory, where the same scan finds it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Agent, createServer, request as httpRequest } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import { isInLockedMapping, scanProcessMemory, type ScanResult } from './helpers/memScan.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY, killQuietly, waitFor } from './helpers/proxyProcess.js';
import { TestCertificate } from './helpers/tlsCert.js';

const asRoot = process.getuid?.() === 0;
const KEY = Buffer.from(TEST_KEY);
const UNDICI = fileURLToPath(new URL('../../node_modules/undici/index.js', import.meta.url));

/** Every occurrence of the key, and those outside locked mappings. */
function keyOutsideLockedMemory(pid: number): { scan: ScanResult; unlocked: string[] } {
  const scan = scanProcessMemory(pid, KEY, { includeInaccessible: true });
  const unlocked = scan.occurrences
    .filter((o) => !isInLockedMapping(pid, o.address))
    .map((o) => `0x${o.address.toString(16)} in ${o.mapping}`);
  return { scan, unlocked };
}

/** The key is in the supervisor (the scan sees it), and only inside locked mappings. */
function assertKeyOnlyInLockedMemory(t: TestContext, pid: number): void {
  const { scan, unlocked } = keyOutsideLockedMemory(pid);
  const mib = (scan.bytesScanned / 2 ** 20).toFixed(0);
  t.diagnostic(
    `scanned ${mib} MiB in ${scan.mappingsRead} mappings; ` +
      `key found ${scan.occurrences.length} times, ${unlocked.length} outside locked memory`,
  );
  assert.ok(scan.occurrences.length >= 1, 'the master copy is found (the scan sees the supervisor)');
  assert.deepEqual(unlocked, []);
}

/** `count` small POSTs over `connections` keep-alive connections. */
async function load(port: number, count: number, connections: number): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  let ok = 0;
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/responses',
          agent,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) ok++;
            resolve();
          });
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end('{"input":"hi"}');
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (next < count) {
        next++;
        await one();
      }
    }),
  );
  agent.destroy();
  return ok;
}

describe(
  'where the key lives in the supervisor',
  { timeout: 120_000, skip: !asRoot && 'needs root: reading /proc/<pid>/mem of another process' },
  () => {
    let upstream: MockUpstream;
    let proxy: ProxyProcess;
    before(async () => {
      upstream = await MockUpstream.start((req, res) => {
        res.writeHead(req.headers.authorization === `Bearer ${TEST_KEY}` ? 200 : 401, {
          'content-type': 'application/json',
        });
        res.end('{"ok":true}');
      });
      proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
    });
    after(async () => {
      await proxy?.stop();
      await upstream?.close();
    });

    test('after 2,000 requests every occurrence is inside a locked mapping', async (t) => {
      assert.equal(await load(proxy.port, 2000, 8), 2000, 'every request reached the upstream with the key');
      assertKeyOnlyInLockedMemory(t, proxy.pid);
    });
  },
);

describe(
  'where the key lives in the supervisor, with an https:// upstream',
  { timeout: 120_000, skip: !asRoot && 'needs root: reading /proc/<pid>/mem of another process' },
  () => {
    let certificate: TestCertificate;
    let server: HttpsServer;
    let proxy: ProxyProcess;
    before(async () => {
      certificate = TestCertificate.create();
      server = createHttpsServer({ key: certificate.key, cert: certificate.cert }, (req, res) => {
        req.resume();
        res.writeHead(req.headers.authorization === `Bearer ${TEST_KEY}` ? 200 : 401, {
          'content-type': 'application/json',
        });
        res.end('{"ok":true}');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      proxy = await ProxyProcess.start({
        args: ['--upstream-url', `https://127.0.0.1:${port}/v1/responses`],
        env: certificate.trustingEnv(),
      });
    });
    after(async () => {
      await proxy?.stop();
      server?.closeAllConnections();
      server?.close();
      certificate?.remove();
    });

    test('after 2,000 requests through TLS every occurrence is inside a locked mapping (none left in OpenSSL buffers)', async (t) => {
      assert.equal(await load(proxy.port, 2000, 8), 2000, 'every request reached the upstream with the key');
      assertKeyOnlyInLockedMemory(t, proxy.pid);
    });
  },
);

/** `count` WebSocket sessions one after another, each one message there and back; how many were answered. */
async function webSocketSessions(port: number, count: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < count; i++) {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/responses`, { handshakeTimeout: 5_000 });
    const answered = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5_000);
      socket.once('open', () => socket.send('{"type":"response.create"}'));
      socket.once('message', () => {
        clearTimeout(timer);
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (answered) ok++;
    socket.terminate();
  }
  return ok;
}

describe(
  'where the key lives in the supervisor, with --websocket',
  { timeout: 120_000, skip: !asRoot && 'needs root: reading /proc/<pid>/mem of another process' },
  () => {
    const server = createServer((_req, res) => res.writeHead(404).end());
    const webSockets = new WebSocketServer({ noServer: true });
    let proxy: ProxyProcess;
    before(async () => {
      // Accepts only the right key, answers each message once.
      server.on('upgrade', (req, socket, head) => {
        if (req.headers.authorization !== `Bearer ${TEST_KEY}`)
          return socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
        webSockets.handleUpgrade(req, socket, head, (ws) => {
          ws.on('message', () => ws.send('{"type":"response.completed"}'));
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      proxy = await ProxyProcess.start({
        args: ['--websocket', '--upstream-url', `http://127.0.0.1:${port}/v1/responses`],
      });
    });
    after(async () => {
      await proxy?.stop();
      server.closeAllConnections();
      server.close();
    });

    test('after 300 WebSocket handshakes every occurrence is inside a locked mapping', async (t) => {
      assert.equal(await webSocketSessions(proxy.port, 300), 300, 'every handshake reached the upstream with the key');
      assertKeyOnlyInLockedMemory(t, proxy.pid);
    });
  },
);

const SKIP_UNLESS_ROOT = !asRoot && 'needs root: reading /proc/<pid>/mem of another process';

// ws writes its handshake as soon as it has the socket: the key must not wait in a heap copy for the TLS handshake.
const WSS = 'where the key lives in the supervisor, with --websocket over wss://';
describe(WSS, { timeout: 120_000, skip: SKIP_UNLESS_ROOT }, () => {
  let certificate: TestCertificate;
  let server: HttpsServer;
  let proxy: ProxyProcess;
  before(async () => {
    certificate = TestCertificate.create();
    const { key, cert } = certificate;
    server = createHttpsServer({ key, cert }, (_req, res) => res.writeHead(404).end());
    const webSockets = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req, socket, head) => {
      if (req.headers.authorization !== `Bearer ${TEST_KEY}`) {
        return socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
      }
      webSockets.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', () => ws.send('{"type":"response.completed"}'));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const upstreamUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}/v1/responses`;
    const args = ['--websocket', '--upstream-url', upstreamUrl];
    proxy = await ProxyProcess.start({ args, env: certificate.trustingEnv() });
  });
  after(async () => {
    await proxy?.stop();
    server?.closeAllConnections();
    server?.close();
    certificate?.remove();
  });

  test('after 300 handshakes through TLS every occurrence is inside a locked mapping', async (t) => {
    assert.equal(await webSocketSessions(proxy.port, 300), 300, 'every handshake reached the upstream with the key');
    assertKeyOnlyInLockedMemory(t, proxy.pid);
  });
});

describe(
  'the scan can fail',
  { timeout: 60_000, skip: !asRoot && 'needs root: reading /proc/<pid>/mem of another process' },
  () => {
    test('a process sending the key through undici as a plain header string leaves it in ordinary memory', async () => {
      const upstream = await MockUpstream.start();
      // The key arrives reversed on stdin so that it is not in the child's argv or source.
      const child = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { request } from ${JSON.stringify(UNDICI)};
         let input = '';
         process.stdin.on('data', (d) => (input += d));
         process.stdin.on('end', async () => {
           const key = [...input.trim()].reverse().join('');
           for (let i = 0; i < 200; i++) {
             const { body } = await request(${JSON.stringify(upstream.url())}, { method: 'POST', headers: { authorization: 'Bearer ' + key }, body: '{}' });
             await body.text();
           }
           process.stdout.write('sent\\n');
           setInterval(() => {}, 1000);
         });`,
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      try {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
        child.stdin.end([...TEST_KEY].reverse().join(''));
        assert.ok(await waitFor(() => out.includes('sent'), 20_000), 'the control process sent its requests');
        const { scan, unlocked } = keyOutsideLockedMemory(child.pid as number);
        assert.ok(unlocked.length >= 1, `the scan finds the key in unlocked memory (found ${scan.occurrences.length})`);
      } finally {
        killQuietly(child.pid as number);
        await upstream.close();
      }
    });
  },
);
