// Upstream failures before a response: the client gets 502 with an
// OpenAI-shaped JSON error (never the original's empty 500), nothing secret in
// it, and the proxy goes on serving.

import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { send, type Reply } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY, isAlive } from './helpers/proxyProcess.js';

const BODY = '{"model":"gpt-test","input":"hi"}';

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface ErrorBody {
  error: { message: unknown; type: unknown; code: unknown };
}

function assertJson502(reply: Reply, expectedCode?: string): ErrorBody {
  assert.equal(reply.status, 502, `status (body ${reply.body.toString()})`);
  assert.match(String(reply.headers['content-type']), /^application\/json\b/);
  const text = reply.body.toString();
  assert.ok(!text.includes(TEST_KEY), 'the key is not in the error body');
  assert.ok(!/bearer/i.test(text), 'no Authorization value in the error body');
  const parsed = JSON.parse(text) as ErrorBody;
  assert.equal(typeof parsed.error, 'object');
  assert.equal(typeof parsed.error.message, 'string');
  assert.ok((parsed.error.message as string).length > 0);
  assert.equal(typeof parsed.error.type, 'string');
  assert.equal(typeof parsed.error.code, 'string');
  if (expectedCode !== undefined) assert.equal(parsed.error.code, expectedCode);
  return parsed;
}

describe('upstream port closed', () => {
  let proxy: ProxyProcess;

  before(async () => {
    const port = await closedPort();
    proxy = await ProxyProcess.start({ args: ['--upstream-url', `http://127.0.0.1:${port}/v1/responses`] });
  });

  after(async () => {
    await proxy?.stop();
  });

  test(
    '502 application/json {"error":{message,type,code:"upstream_unreachable"}} without the key',
    { timeout: 15_000 },
    async () => {
      const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
      assertJson502(reply, 'upstream_unreachable');
    },
  );

  test('a second request gets the same 502 and the proxy is still alive', { timeout: 15_000 }, async () => {
    const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
    assertJson502(reply, 'upstream_unreachable');
    assert.equal(proxy.exitStatus, null);
    assert.ok(isAlive(proxy.pid), 'supervisor alive');
    assert.ok(isAlive(proxy.workerPid()), 'worker alive');
    assert.ok(!proxy.stderr.includes(TEST_KEY), 'the key is not in the logs');
  });
});

describe('TLS failure: https upstream URL pointing at a plain-HTTP server', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;

  before(async () => {
    upstream = await MockUpstream.start();
    proxy = await ProxyProcess.start({ args: ['--upstream-url', `https://127.0.0.1:${upstream.port}/v1/responses`] });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.close();
  });

  test('502 with an OpenAI-shaped JSON error and no key', { timeout: 15_000 }, async () => {
    const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
    assertJson502(reply);
    assert.equal(upstream.requests.length, 0, 'no HTTP request was made in clear text');
  });

  test('a second request gets a 502 too and the proxy is still alive', { timeout: 15_000 }, async () => {
    const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
    assertJson502(reply);
    assert.equal(proxy.exitStatus, null);
    assert.ok(isAlive(proxy.pid), 'supervisor alive');
    assert.ok(isAlive(proxy.workerPid()), 'worker alive');
    assert.ok(!proxy.stderr.includes(TEST_KEY), 'the key is not in the logs');
  });
});
