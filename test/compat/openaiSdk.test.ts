// The official OpenAI Node SDK (pinned) through the proxy: streaming and
// non-streaming, and upstream errors surfacing as the SDK's APIError.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI, { APIError } from 'openai';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { encodeSse, responseEvents } from '../helpers/responsesApi.js';

const TEXT = 'Streaming through the proxy works.';

describe('OpenAI SDK through the proxy', { timeout: 60_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let client: OpenAI;

  before(async () => {
    upstream = await MockUpstream.start((req, res, body) => {
      if (req.headers.authorization !== `Bearer ${TEST_KEY}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        return res.end(
          JSON.stringify({
            error: { message: 'key not injected', type: 'invalid_request_error', code: 'invalid_api_key' },
          }),
        );
      }
      const request = JSON.parse(body.toString()) as { input: string; stream?: boolean };
      if (request.input === 'rate-limit' || request.input === 'crash') {
        const status = request.input === 'rate-limit' ? 429 : 500;
        res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': 'req_err' });
        return res.end(
          JSON.stringify({ error: { message: `upstream says ${status}`, type: 'server_error', code: null } }),
        );
      }
      const events = responseEvents(TEXT);
      if (request.stream === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const event of events) res.write(encodeSse(event));
        return res.end();
      }
      const completed = events.at(-1) as unknown as { response: unknown };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(completed.response));
    });
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
    // The SDK insists on a key; the proxy replaces whatever it sends.
    client = new OpenAI({
      apiKey: 'sk-client-side-placeholder',
      baseURL: `http://127.0.0.1:${proxy.port}/v1`,
      maxRetries: 0,
    });
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
  });

  test('responses.create, non-streaming', async () => {
    const response = await client.responses.create({ model: 'mock-model', input: 'hello' });
    assert.equal(response.status, 'completed');
    assert.equal(response.output_text, TEXT);
    assert.equal(response.usage?.input_tokens, 12);
  });

  test('responses.create, streaming: deltas arrive and add up', async () => {
    const stream = await client.responses.create({ model: 'mock-model', input: 'hello', stream: true });
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.output_text.delta') text += event.delta;
    }
    assert.equal(text, TEXT);
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
  });

  for (const [input, status] of [
    ['rate-limit', 429],
    ['crash', 500],
  ] as const) {
    test(`an upstream ${status} surfaces as APIError ${status} with the upstream's message`, async () => {
      await assert.rejects(client.responses.create({ model: 'mock-model', input }), (err: unknown) => {
        assert.ok(err instanceof APIError);
        assert.equal(err.status, status);
        assert.match(err.message, new RegExp(`upstream says ${status}`));
        return true;
      });
    });
  }

  test("upstream unreachable surfaces as APIError 502 with the proxy's message", async () => {
    const dead = await ProxyProcess.start({ args: ['--upstream-url', 'http://127.0.0.1:1/v1/responses'] });
    try {
      const deadClient = new OpenAI({ apiKey: 'x', baseURL: `http://127.0.0.1:${dead.port}/v1`, maxRetries: 0 });
      await assert.rejects(deadClient.responses.create({ model: 'm', input: 'x' }), (err: unknown) => {
        assert.ok(err instanceof APIError);
        assert.equal(err.status, 502);
        assert.match(err.message, /could not reach the upstream/);
        return true;
      });
    } finally {
      await dead.stop();
    }
  });
});
