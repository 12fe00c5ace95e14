// --usage-file through the real proxy: a reader polling the file while
// requests run always finds complete, valid JSON; the record counts requests,
// refusals and tokens by kind, overall and per model, from HTTP streams,
// non-streaming answers and WebSocket turns; each HTTP request's log line
// carries the model the upstream answered with, the response id and the
// tokens (read by the supervisor, logged by the worker), each WebSocket turn
// has a line of the supervisor's, and a summary line comes at exit.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { MockUpstream, type UpstreamHandler } from './helpers/mockUpstream.js';
import { jsonRecords } from './helpers/netProbe.js';
import { TOKENS_PER_ANSWER, sseAnswer, startProxy, tempDir, writeAnswer } from './helpers/policyProxy.js';
import { TEST_KEY, sleep, type ProxyProcess } from './helpers/proxyProcess.js';
import { WsClient } from './helpers/wsClient.js';
import { WsUpstream } from './helpers/wsUpstream.js';

interface Record {
  requests: { forwarded: number; http: number; webSocketMessages: number };
  refusals: { token: number; model: number; budget: number; rate: number };
  tokens: { input: number; cachedInput: number; output: number; reasoning: number; total: number };
  models: { [name: string]: { responses: number; tokens: Record['tokens'] } };
  limits: { maxRequests: number | null; maxRequestsPerMinute: number | null; maxTokens: number | null };
  remaining: { requests: number | null; tokens: number | null };
}

const BODY = '{"model":"gpt-test","input":"hi","stream":true}';
const readRecord = (path: string): Record => JSON.parse(readFileSync(path, 'utf8')) as Record;

/** A non-streaming answer with every kind of token. */
const jsonAnswer: UpstreamHandler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(
    JSON.stringify({
      id: 'resp_json_1',
      object: 'response',
      model: 'gpt-json-2025',
      status: 'completed',
      output: [],
      usage: {
        input_tokens: 100,
        input_tokens_details: { cached_tokens: 40 },
        output_tokens: 30,
        output_tokens_details: { reasoning_tokens: 20 },
        total_tokens: 130,
      },
    }),
  );
};

describe('--usage-file over HTTP', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  const file = join(tempDir(), 'usage', 'usage.json');
  before(async () => {
    upstream = await MockUpstream.start(sseAnswer);
    proxy = await startProxy(upstream.url(), ['--usage-file', file, '--max-requests', '41', '--max-tokens', '100000']);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    'is complete valid JSON at every moment a reader polls it, while 40 requests run',
    { timeout: 60_000 },
    async () => {
      let reads = 0;
      let polling = true;
      const reader = (async () => {
        while (polling) {
          const text = readFileSync(file, 'utf8'); // throws ENOENT if it ever disappears
          assert.doesNotThrow(() => JSON.parse(text), `read ${reads}: ${JSON.stringify(text.slice(-80))}`);
          reads++;
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      for (let round = 0; round < 8; round++) {
        const replies = await Promise.all(
          Array.from({ length: 5 }, () =>
            send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY }),
          ),
        );
        for (const r of replies) assert.equal(r.status, 200);
      }
      await sleep(300);
      polling = false;
      await reader;
      assert.ok(reads > 100, `only ${reads} reads`);
      const record = readRecord(file);
      assert.deepEqual(record.requests, { forwarded: 40, http: 40, webSocketMessages: 0 });
      assert.deepEqual(record.tokens, {
        input: 40 * 12,
        cachedInput: 0,
        output: 40 * 3,
        reasoning: 0,
        total: 40 * TOKENS_PER_ANSWER,
      });
      assert.deepEqual(Object.keys(record.models), ['mock-model']);
      assert.equal(record.models['mock-model']?.responses, 40);
      assert.deepEqual(record.limits, { maxRequests: 41, maxRequestsPerMinute: null, maxTokens: 100000 });
      assert.deepEqual(record.remaining, { requests: 1, tokens: 100000 - 40 * TOKENS_PER_ANSWER });
      assert.equal(statSync(file).mode & 0o777, 0o644);
      assert.deepEqual(readdirSync(dirname(file)), ['usage.json'], 'a temporary file was left behind');
    },
  );

  test(
    'a non-streaming JSON answer: every kind of token, per model; refusals by reason',
    { timeout: 20_000 },
    async () => {
      upstream.handler = jsonAnswer;
      assert.equal(
        (await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: '{"model":"x"}' })).status,
        200,
      );
      assert.equal(
        (await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: '{"model":"x"}' })).status,
        429,
      );
      await sleep(300);
      const record = readRecord(file);
      assert.deepEqual(record.models['gpt-json-2025'], {
        responses: 1,
        tokens: { input: 100, cachedInput: 40, output: 30, reasoning: 20, total: 130 },
      });
      assert.deepEqual(record.refusals, { token: 0, model: 0, budget: 1, rate: 0 });
      assert.deepEqual(record.remaining.requests, 0);
    },
  );

  test("each request's log line has the model the upstream answered with, the response id and the tokens", () => {
    const requests = jsonRecords(proxy.stderr).filter((r) => r.msg === 'request');
    const line = requests.find((r) => r.model === 'gpt-json-2025');
    assert.ok(line, 'no request line with the usage');
    assert.equal(line.process, 'worker');
    assert.equal(line.responseId, 'resp_json_1');
    assert.deepEqual(
      [line.inputTokens, line.cachedInputTokens, line.outputTokens, line.reasoningTokens, line.totalTokens],
      [100, 40, 30, 20, 130],
    );
    const streamed = requests.filter((r) => r.model === 'mock-model');
    assert.equal(streamed.length, 40);
    assert.ok(streamed.every((r) => r.totalTokens === TOKENS_PER_ANSWER && /^resp_/.test(String(r.responseId))));
    // The request refused by the budget (429) reached no upstream: its line has no usage.
    assert.deepEqual(
      requests.filter((r) => !('model' in r)).map((r) => r.status),
      [429],
    );
    assert.equal(jsonRecords(proxy.stderr).filter((r) => r.msg === 'upstream usage').length, 0, 'one line per request');
  });

  test('at exit: written once more and one summary line', { timeout: 20_000 }, async () => {
    const status = await proxy.stop('SIGTERM');
    assert.equal(status.code, 0);
    const summary = jsonRecords(proxy.stderr).filter((r) => r.msg === 'usage summary');
    assert.equal(summary.length, 1);
    assert.deepEqual((summary[0] as { tokens?: unknown }).tokens, readRecord(file).tokens);
    assert.equal(readRecord(file).requests.forwarded, 41);
  });
});

describe('--usage-file over WebSocket', () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  const file = join(tempDir(), 'usage.json');
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--usage-file', file]);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test('each message is counted and each response.completed read for its usage', { timeout: 30_000 }, async () => {
    const client = await WsClient.open(proxy.port);
    for (let i = 0; i < 3; i++) await client.turn({ model: 'gpt-test', input: `turn ${i}` });
    client.close();
    await sleep(300);
    const record = readRecord(file);
    assert.deepEqual(record.requests, { forwarded: 3, http: 0, webSocketMessages: 3 });
    assert.equal(record.models['mock-model']?.responses, 3);
    // responseEvents: 12 input tokens; the default answer is split into 4 deltas.
    assert.deepEqual(record.tokens, { input: 36, cachedInput: 0, output: 12, reasoning: 0, total: 48 });
    const ids = jsonRecords(proxy.stderr)
      .filter((r) => r.msg === 'upstream usage')
      .map((r) => r.responseId);
    assert.deepEqual(ids, ['resp_ws_1_1', 'resp_ws_1_2', 'resp_ws_1_3']);
  });
});

describe('--usage-file: an upstream that echoes the key in a usage field', () => {
  test('the record and the log lines show it masked, as the client does', { timeout: 20_000 }, async () => {
    const upstream = await MockUpstream.start((_req, res) => {
      if (upstream.requests.length === 1) return writeAnswer(res, `resp_${TEST_KEY}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'resp_2', model: TEST_KEY, usage: { input_tokens: 1, output_tokens: 1 } }));
    });
    const file = join(tempDir(), 'usage.json');
    const proxy = await startProxy(upstream.url(), ['--usage-file', file]);
    try {
      for (let i = 0; i < 2; i++) {
        const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
        assert.equal(reply.status, 200);
        assert.ok(!reply.body.includes(TEST_KEY), 'the key reached the client');
      }
      await sleep(300);
      const requests = jsonRecords(proxy.stderr).filter((r) => r.msg === 'request');
      assert.deepEqual(
        requests.map((r) => [/^resp_\*+$/.test(String(r.responseId)), /^\*+$/.test(String(r.model))]),
        [
          [true, false],
          [false, true],
        ],
        'masked in the log lines',
      );
      assert.ok(!proxy.stderr.includes(TEST_KEY), 'the key in a log line');
      assert.ok(!readFileSync(file, 'utf8').includes(TEST_KEY), 'the key in the usage file');
    } finally {
      await proxy.stop();
      await upstream.close();
    }
  });
});
