// An https:// upstream: the key is spliced into request heads that go through
// TLS (keep-alive, concurrent, and the WebSocket handshake over wss://), and
// the upstream's certificate is checked. The certificate is made for the test
// with openssl and trusted through NODE_EXTRA_CA_CERTS, given to the
// supervisor only (the worker never talks to the upstream).

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { ProxyProcess, TEST_KEY } from './helpers/proxyProcess.js';
import { TestCertificate } from './helpers/tlsCert.js';

interface Post {
  status: number;
  body: string;
}

function post(port: number, agent: Agent, body: string): Promise<Post> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/responses',
        agent,
        headers: { 'content-type': 'application/json', authorization: 'Bearer client-own' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => (text += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('an https:// upstream', { timeout: 60_000 }, () => {
  let certificate: TestCertificate;
  let server: Server;
  let upstreamUrl: string;
  let proxy: ProxyProcess;
  const authorizations: string[] = [];

  before(async () => {
    certificate = TestCertificate.create();
    server = createServer({ key: certificate.key, cert: certificate.cert }, (req, res) => {
      authorizations.push(req.headers.authorization ?? '');
      let body = '';
      req.setEncoding('utf8').on('data', (s: string) => (body += s));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`data: ${body}\n\n`);
      });
    });
    const webSockets = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req, socket, head) => {
      authorizations.push(req.headers.authorization ?? '');
      webSockets.handleUpgrade(req, socket, head, (ws) =>
        ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    upstreamUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}/v1/responses`;
    proxy = await ProxyProcess.start({
      args: ['--websocket', '--upstream-url', upstreamUrl],
      env: certificate.trustingEnv(),
    });
  });
  after(async () => {
    await proxy?.stop();
    server?.closeAllConnections();
    server?.close();
    certificate?.remove();
  });

  test('200 POSTs, 8 at a time over keep-alive: each arrives over TLS with exactly the key, bodies intact', async () => {
    const before = authorizations.length;
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    try {
      const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => post(proxy.port, agent, `{"n":${i}}`)));
      replies.forEach((r, i) => assert.deepEqual(r, { status: 200, body: `data: {"n":${i}}\n\n` }));
    } finally {
      agent.destroy();
    }
    const seen = authorizations.slice(before);
    assert.equal(seen.length, 200);
    assert.ok(
      seen.every((a) => a === `Bearer ${TEST_KEY}`),
      `every request carried the key: ${JSON.stringify([...new Set(seen)])}`,
    );
  });

  test('a WebSocket over wss://: the handshake carries the key, messages come back', async () => {
    const before = authorizations.length;
    const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/v1/responses`, { handshakeTimeout: 5_000 });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('open', resolve);
        socket.once('error', reject);
      });
      const echoed = new Promise<string>((resolve) =>
        socket.once('message', (data: Buffer) => resolve(data.toString())),
      );
      socket.send('{"type":"response.create"}');
      assert.equal(await echoed, '{"type":"response.create"}');
    } finally {
      socket.terminate();
    }
    assert.deepEqual(authorizations.slice(before), [`Bearer ${TEST_KEY}`]);
  });

  test('a certificate the supervisor does not trust: 502 for HTTP and for the WebSocket handshake, nothing reaches the upstream', async () => {
    const untrusting = await ProxyProcess.start({ args: ['--websocket', '--upstream-url', upstreamUrl] });
    const before = authorizations.length;
    try {
      const agent = new Agent();
      const reply = await post(untrusting.port, agent, '{}');
      agent.destroy();
      assert.equal(reply.status, 502);
      assert.match(reply.body, /upstream_unreachable/);
      const status = await new Promise<number>((resolve, reject) => {
        const socket = new WebSocket(`ws://127.0.0.1:${untrusting.port}/v1/responses`, { handshakeTimeout: 5_000 });
        socket.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        socket.once('open', () => reject(new Error('opened through an untrusted upstream')));
        socket.once('error', () => {});
      });
      assert.equal(status, 502);
      assert.equal(authorizations.length, before, 'no request completed against the untrusted upstream');
    } finally {
      await untrusting.stop();
    }
  });
});
