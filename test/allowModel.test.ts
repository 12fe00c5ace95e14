// --allow-model through the real proxy: the worker forwards a request only if
// its body is a JSON object with a string "model" matching a pattern (exact,
// or * globs; case-sensitive) and no top-level key named twice; otherwise 403
// model_not_allowed naming the model, or 400, and nothing goes upstream. Over
// WebSocket each response.create is checked the same way; a refused one gets
// an error event and the socket stays usable.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { errorOf, sseAnswer, startProxy, tempDir } from './helpers/policyProxy.js';
import { sleep, type ProxyProcess } from './helpers/proxyProcess.js';
import { WsClient, rawUpgrade } from './helpers/wsClient.js';
import { WsUpstream } from './helpers/wsUpstream.js';
import { ScreeningBudget } from '../src/worker/modelPolicy.js';

const ARGS = ['--allow-model', 'gpt-5*', '--allow-model', 'o3'];

/** A process's resident memory (VmRSS), in MiB. */
function residentMiB(pid: number): number {
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (kib === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(kib[1]) / 1024;
}

describe('--allow-model over HTTP', () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  const usageFile = join(tempDir(), 'usage.json');
  before(async () => {
    upstream = await MockUpstream.start(sseAnswer);
    proxy = await startProxy(upstream.url(), [...ARGS, '--usage-file', usageFile]);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });
  const post = (body: string | Buffer) => send(proxy.port, { headers: { 'content-type': 'application/json' }, body });

  test('matching models are forwarded, byte for byte', { timeout: 20_000 }, async () => {
    for (const model of ['gpt-5', 'gpt-5-codex', 'gpt-5.1-mini', 'o3']) {
      const body = `{"model":${JSON.stringify(model)},"input":"hi","stream":true}`;
      const reply = await post(body);
      assert.equal(reply.status, 200, model);
      assert.equal(upstream.requests.at(-1)?.body.toString(), body);
    }
  });

  test(
    'other models: 403 model_not_allowed naming the model; patterns are case-sensitive and only * is special',
    { timeout: 20_000 },
    async () => {
      const before = upstream.requests.length;
      for (const model of ['gpt-4o', 'GPT-5', 'o3-mini', 'o', 'xgpt-5', 'gpt-', '']) {
        const reply = await post(JSON.stringify({ model, input: 'hi' }));
        assert.equal(reply.status, 403, model);
        const error = errorOf(reply.body);
        assert.equal(error.code, 'model_not_allowed');
        assert.ok(error.message.includes(JSON.stringify(model)), error.message);
      }
      const questionMark = await send(proxy.port, {
        headers: { 'content-type': 'application/json' },
        body: '{"model":"o?"}',
      });
      assert.equal(questionMark.status, 403);
      await sleep(200);
      assert.equal(upstream.requests.length, before);
    },
  );

  test('a body the check cannot read as the upstream would: 400, nothing upstream', { timeout: 20_000 }, async () => {
    const before = upstream.requests.length;
    const bodies: Array<string | Buffer> = [
      '{"model":"gpt-5","model":"gpt-4o"}',
      '{"model":"gpt-4o","input":"x","model":"gpt-5"}',
      '{"mod\\u0065l":"gpt-4o","model":"gpt-5"}',
      '{"input":"x","input":"y","model":"gpt-5"}',
      '{"model":"gpt-5","input":"a\\"b","input":1}',
      '{"a\\\\":1,"a\\\\":2,"model":"gpt-5"}',
      '{"input":"no model"}',
      '{"model":5}',
      '{"model":null}',
      '["gpt-5"]',
      '"gpt-5"',
      'not json',
      '',
      Buffer.from([
        0x7b, 0x22, 0x6d, 0x6f, 0x64, 0x65, 0x6c, 0x22, 0x3a, 0x22, 0x67, 0x70, 0x74, 0x2d, 0x35, 0xff, 0x22, 0x7d,
      ]),
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"model":"gpt-5"}')]),
    ];
    for (const body of bodies) {
      const reply = await post(body);
      assert.equal(reply.status, 400, String(body));
      assert.equal(errorOf(reply.body).code, 'invalid_request_body');
    }
    await sleep(200);
    assert.equal(upstream.requests.length, before);
  });

  test('a body that arrives in pieces, chunked or with a length, is checked whole and forwarded byte for byte', async () => {
    const body = `{"input":"${'x'.repeat(40_000)}","model":"gpt-5"}`;
    for (const framing of ['chunked', 'length']) {
      const headers: Record<string, string | number> = { 'content-type': 'application/json' };
      if (framing === 'length') headers['content-length'] = body.length;
      const status = await new Promise<number>((resolve, reject) => {
        const req = request({ port: proxy.port, host: '127.0.0.1', method: 'POST', path: '/v1/responses', headers });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.write(body.slice(0, 10));
        setTimeout(() => req.write(body.slice(10, 30_000)), 50);
        setTimeout(() => req.end(body.slice(30_000)), 100);
      });
      assert.equal(status, 200, framing);
      assert.equal(upstream.requests.at(-1)?.body.toString(), body, framing);
    }
  });

  test('a key named twice is named in the refusal', async () => {
    for (const [body, key] of [
      ['{"mod\\u0065l":"gpt-4o","model":"gpt-5"}', 'model'],
      ['{"input":"x","model":"gpt-5","input":"y"}', 'input'],
    ] as const) {
      const reply = await post(body);
      assert.equal(reply.status, 400, body);
      const { message } = errorOf(reply.body);
      assert.ok(message.includes(`names ${JSON.stringify(key)} more than once`), message);
    }
  });

  test("nested duplicate keys are the upstream parser's business, not a refusal", { timeout: 20_000 }, async () => {
    const reply = await post('{"model":"gpt-5","text":{"a":1,"a":2},"input":[{"x":1},{"x":2}]}');
    assert.equal(reply.status, 200);
    // Quotes and backslashes inside strings are not structure.
    const escapes = await post('{"model":"gpt-5","input":"x\\\\","text":"\\",\\"model\\":\\"y"}');
    assert.equal(escapes.status, 200, escapes.body.toString());
  });

  test('refusals are counted in the usage file', async () => {
    await sleep(300);
    const record = JSON.parse(readFileSync(usageFile, 'utf8')) as {
      refusals: { model: number };
      requests: { http: number };
    };
    assert.equal(record.refusals.model, 8 + 15 + 2);
    assert.equal(record.requests.http, 6 + 2);
  });
});

describe('--allow-model: bodies held for the check', () => {
  test('the budget admits in arrival order; a release gives room or leaves the line, once', () => {
    const budget = new ScreeningBudget(10);
    const started: number[] = [];
    const first = budget.reserve(6, () => started.push(1));
    const second = budget.reserve(6, () => started.push(2));
    const third = budget.reserve(2, () => started.push(3));
    assert.deepEqual(started, [1], 'the third fits, but waits behind the second');
    second(); // leaves the line before it started
    assert.deepEqual(started, [1, 3]);
    const fourth = budget.reserve(10, () => started.push(4));
    first();
    first();
    assert.deepEqual(started, [1, 3], 'a second release gives nothing back');
    third();
    assert.deepEqual(started, [1, 3, 4]);
    fourth();
  });

  test(
    'at most 4 x --max-body-bytes of bodies are read at once; the rest wait unread, then all are forwarded',
    { timeout: 60_000 },
    async (t) => {
      const upstream = await MockUpstream.start(sseAnswer);
      const maxBodyBytes = 8 * 2 ** 20;
      const proxy = await startProxy(upstream.url(), [...ARGS, '--max-body-bytes', String(maxBodyBytes)]);
      const sockets: Socket[] = [];
      try {
        const body = `{"model":"gpt-5","input":"${'x'.repeat(maxBodyBytes - 30)}"}`;
        const head = `POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`;
        const worker = proxy.workerPid();
        const before = residentMiB(worker);
        // Ten clients send all of their body but the last byte.
        const replies: Array<Promise<string>> = [];
        for (let i = 0; i < 10; i++) {
          const socket = connect(proxy.port, '127.0.0.1');
          sockets.push(socket);
          replies.push(
            new Promise((resolve) => {
              let reply = '';
              socket.on('data', (chunk: Buffer) => {
                reply += chunk.toString('latin1');
                if (reply.endsWith('\r\n0\r\n\r\n')) resolve(reply);
              });
              socket.on('close', () => resolve(reply));
            }),
          );
          socket.write(head + body.slice(0, -1));
        }
        await sleep(2_000);
        const grown = residentMiB(worker) - before;
        t.diagnostic(`worker resident memory grew ${grown.toFixed(0)} MiB while ten 8 MiB bodies waited`);
        // Four bodies read (32 MiB), not ten (80 MiB).
        assert.ok(grown < 56, `the worker grew ${grown.toFixed(0)} MiB`);
        for (const socket of sockets) socket.write(body.slice(-1));
        const answers = await Promise.all(replies);
        for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 200 /);
        assert.equal(upstream.requests.length, 10);
        for (const request of upstream.requests) assert.equal(request.body.length, body.length);
      } finally {
        for (const socket of sockets) socket.destroy();
        await proxy.stop();
        await upstream.close();
      }
    },
  );
});

describe('--allow-model over WebSocket', () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', ...ARGS]);
  });
  after(async () => {
    await proxy.stop();
    await upstream.close();
  });

  test(
    'a refused response.create gets an error event and is not forwarded; the socket stays usable',
    { timeout: 30_000 },
    async () => {
      const client = await WsClient.open(proxy.port);
      const refused = await client.turn({ model: 'gpt-4o', input: 'hi' });
      assert.deepEqual(refused, [
        {
          type: 'error',
          status: 403,
          error: {
            message: 'The model "gpt-4o" is not allowed by this proxy (--allow-model).',
            type: 'invalid_request_error',
            code: 'model_not_allowed',
            param: null,
          },
        },
      ]);
      const doubled = client.messages.length;
      client.send('{"type":"response.create","model":"gpt-5","model":"gpt-4o"}');
      const [event] = await client.next(doubled, 1, 5_000);
      assert.equal(
        (JSON.parse(event?.data.toString() ?? '{}') as { error?: { code?: string } }).error?.code,
        'invalid_request_body',
      );
      const allowed = await client.turn({ model: 'gpt-5-codex', input: 'hi' });
      assert.ok(allowed.some((e) => e.type === 'response.completed'));
      await sleep(200);
      const creates = upstream.sessions[0]?.creates ?? [];
      assert.deepEqual(
        creates.map((c) => c.model),
        ['gpt-5-codex'],
      );
      assert.ok(client.isOpen);
      client.close();
    },
  );

  test(
    'a client that leaves its refusals unread is not read either: the worker stops growing, and serves on',
    { timeout: 60_000 },
    async (t) => {
      const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses');
      assert.equal(response.status, 101);
      conn.pauseReading();
      const worker = proxy.workerPid();
      const frame = Buffer.from([0x81, 0x80, 1, 2, 3, 4]); // an empty text message: refused, it is no JSON object
      const frames = Buffer.alloc(frame.length * 3_000_000);
      for (let at = 0; at < frames.length; at += frame.length) frame.copy(frames, at);
      const start = residentMiB(worker);
      conn.write(frames);
      await sleep(2_000);
      const early = residentMiB(worker);
      await sleep(4_000);
      const late = residentMiB(worker);
      t.diagnostic(`worker RSS ${start.toFixed(1)} MiB, after 2 s ${early.toFixed(1)}, after 6 s ${late.toFixed(1)}`);
      conn.close();
      assert.ok(
        late - early < 16,
        `the worker grew ${(late - early).toFixed(1)} MiB in 4 s while its refusals went unread`,
      );
      assert.equal(proxy.workerPid(), worker);
      const client = await WsClient.open(proxy.port);
      const allowed = await client.turn({ model: 'gpt-5-codex', input: 'hi' });
      assert.ok(allowed.some((e) => e.type === 'response.completed'));
      client.close();
    },
  );
});
