// --max-requests, --max-tokens and --max-requests-per-minute through the real
// proxy, over HTTP and WebSocket: past a limit new requests get 429 with the
// API's codes (and Retry-After for the rate) and nothing goes upstream;
// budgets crossed by concurrent requests hold, and what already runs finishes.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { send, type Reply } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { HoldingUpstream, TOKENS_PER_ANSWER, errorOf, sseAnswer, startProxy } from './helpers/policyProxy.js';
import { sleep, waitFor, type ProxyProcess } from './helpers/proxyProcess.js';
import { WsClient } from './helpers/wsClient.js';
import { WsUpstream } from './helpers/wsUpstream.js';

const BODY = '{"model":"gpt-test","input":"hi","stream":true}';
const post = (proxy: ProxyProcess): Promise<Reply> =>
  send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY, timeoutMs: 20_000 });
const completed = (reply: Reply): boolean =>
  reply.status === 200 && reply.body.toString().includes('event: response.completed');

describe('--max-requests crossed by concurrent requests', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  const holding = new HoldingUpstream();
  before(async () => {
    upstream = await MockUpstream.start(holding.handler);
    proxy = await startProxy(upstream.url(), ['--max-requests', '3']);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    '12 at once: exactly 3 reach the upstream and finish, 9 get 429 insufficient_quota',
    { timeout: 30_000 },
    async () => {
      const replies = Array.from({ length: 12 }, () => post(proxy));
      assert.ok(await waitFor(() => holding.held === 3, 10_000), `held ${holding.held}`);
      await sleep(300); // none of the refused ones arrives late
      assert.equal(upstream.requests.length, 3);
      holding.release();
      const all = await Promise.all(replies);
      assert.equal(all.filter(completed).length, 3);
      const refused = all.filter((r) => r.status === 429);
      assert.equal(refused.length, 9);
      for (const r of refused) {
        assert.deepEqual([errorOf(r.body).code, errorOf(r.body).type], ['insufficient_quota', 'insufficient_quota']);
        assert.equal(r.headers['retry-after'], undefined);
      }
      assert.equal((await post(proxy)).status, 429);
      assert.equal(upstream.requests.length, 3);
    },
  );
});

describe('--max-tokens', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  const holding = new HoldingUpstream();
  before(async () => {
    upstream = await MockUpstream.start(holding.handler);
    proxy = await startProxy(upstream.url(), ['--max-tokens', String(TOKENS_PER_ANSWER + 1)]);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    'requests already running when the budget is crossed all finish; the next one gets 429',
    { timeout: 30_000 },
    async () => {
      const replies = Array.from({ length: 4 }, () => post(proxy));
      assert.ok(await waitFor(() => holding.held === 4, 10_000), `held ${holding.held}`);
      holding.release();
      const all = await Promise.all(replies);
      assert.equal(all.filter(completed).length, 4, 'a response already admitted was cut');
      const after = await post(proxy);
      assert.equal(after.status, 429);
      assert.equal(errorOf(after.body).code, 'insufficient_quota');
      assert.match(errorOf(after.body).message, /token budget/);
      assert.equal(upstream.requests.length, 4);
    },
  );
});

describe('--max-tokens, one at a time', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await MockUpstream.start(sseAnswer);
    proxy = await startProxy(upstream.url(), ['--max-tokens', String(2 * TOKENS_PER_ANSWER)]);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test('counts usage.total_tokens of each response.completed: two answers use it up', { timeout: 20_000 }, async () => {
    assert.ok(completed(await post(proxy)));
    assert.ok(completed(await post(proxy)));
    assert.equal((await post(proxy)).status, 429);
    assert.equal(upstream.requests.length, 2);
  });
});

describe('--max-requests-per-minute', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await MockUpstream.start(sseAnswer);
    proxy = await startProxy(upstream.url(), ['--max-requests-per-minute', '2']);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test('the third request within a minute: 429 rate_limit_exceeded with Retry-After', { timeout: 20_000 }, async () => {
    assert.ok(completed(await post(proxy)));
    assert.ok(completed(await post(proxy)));
    const third = await post(proxy);
    assert.equal(third.status, 429);
    assert.equal(errorOf(third.body).code, 'rate_limit_exceeded');
    const retryAfter = Number(third.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${String(third.headers['retry-after'])}`);
    assert.equal(upstream.requests.length, 2);
  });
});

describe('budgets over WebSocket', () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--max-requests', '2']);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    'each client message counts; past the budget a message gets an error event, is not forwarded, and the socket stays open',
    { timeout: 30_000 },
    async () => {
      const client = await WsClient.open(proxy.port);
      for (let i = 0; i < 2; i++)
        assert.ok(
          (await client.turn({ model: 'gpt-test', input: `turn ${i}` })).some((e) => e.type === 'response.completed'),
        );
      for (let i = 0; i < 2; i++) {
        const events = await client.turn({ model: 'gpt-test', input: 'over budget' });
        assert.equal(events.length, 1);
        assert.deepEqual(events[0], {
          type: 'error',
          status: 429,
          error: {
            message: "The proxy's request budget (--max-requests 2) is used up; no further requests are forwarded.",
            type: 'insufficient_quota',
            code: 'insufficient_quota',
            param: null,
          },
        });
      }
      assert.ok(client.isOpen);
      await sleep(200);
      assert.equal(upstream.sessions[0]?.messages.length, 2);
      // A new handshake once the budget is used up is refused before anything goes upstream.
      const refused = await WsClient.refused(proxy.port);
      assert.equal(refused.status, 429);
      assert.equal(upstream.handshakes.length, 1);
      client.close();
    },
  );
});

describe('rate over WebSocket', () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--max-requests-per-minute', '1']);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test('the second message within a minute gets a rate_limit_exceeded error event', { timeout: 30_000 }, async () => {
    const client = await WsClient.open(proxy.port);
    assert.ok((await client.turn({ model: 'gpt-test', input: 'one' })).some((e) => e.type === 'response.completed'));
    const events = await client.turn({ model: 'gpt-test', input: 'two' });
    assert.equal(events[0]?.type, 'error');
    assert.equal((events[0]?.error as { code?: string }).code, 'rate_limit_exceeded');
    assert.ok(client.isOpen);
    client.close();
  });
});
