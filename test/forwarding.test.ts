// Forwarding: what the upstream receives (one Authorization with the key, its
// own Host, no hop-by-hop headers, every ordinary header, the configured path
// and query, the exact body) and what the client gets back (status, headers
// and body mirrored, hop-by-hop response headers dropped).

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { jsonOk, type MockUpstream } from './helpers/mockUpstream.js';
import { proxyWithUpstream } from './helpers/proxyFixture.js';
import { TEST_KEY, sleep } from './helpers/proxyProcess.js';
import { withDeadline } from './helpers/deadline.js';
import { RawConnection, rawHeaderValues } from './helpers/rawHttp.js';

const BODY = '{"model":"gpt-test","input":"hello","stream":true}';
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('forwarding to the upstream', () => {
  const ctx = proxyWithUpstream();

  /** Send raw request bytes on their own connection and return what the upstream recorded. */
  async function forwardRaw(headerLines: string[], body = BODY): Promise<MockUpstream['requests'][number]> {
    ctx.upstream.handler = jsonOk;
    const before = ctx.upstream.requests.length;
    const conn = await RawConnection.open(ctx.proxy.port);
    try {
      const head = [
        'POST /v1/responses HTTP/1.1',
        `Host: 127.0.0.1:${ctx.proxy.port}`,
        ...headerLines,
        `Content-Length: ${Buffer.byteLength(body)}`,
        'Connection: close',
      ];
      conn.write(`${head.join('\r\n')}\r\n\r\n${body}`);
      const response = await conn.readResponse(5_000);
      assert.equal(response.status, 200, `proxy answered ${response.statusLine}`);
    } finally {
      conn.close();
    }
    assert.equal(ctx.upstream.requests.length, before + 1, 'upstream saw exactly one request');
    const seen = ctx.upstream.requests[before];
    assert.ok(seen);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.body.toString(), body);
    return seen;
  }

  test(
    'upstream gets exactly one Authorization: Bearer <key>, whatever the client sent',
    { timeout: 10_000 },
    async () => {
      const seen = await forwardRaw([
        'Authorization: Bearer client-supplied-one',
        'Content-Type: application/json',
        'authorization: Bearer client-supplied-two',
        'AUTHORIZATION: Basic Y2xpZW50OnNlY3JldA==',
      ]);
      assert.deepEqual(rawHeaderValues(seen.rawHeaders, 'authorization'), [`Bearer ${TEST_KEY}`]);
      const all = seen.rawHeaders.join('\n');
      assert.ok(!all.includes('client-supplied'), 'no client Authorization value reached the upstream');
      assert.ok(!all.includes('Y2xpZW50OnNlY3JldA=='), 'no client Basic credential reached the upstream');
    },
  );

  test('Host is the upstream host:port, exactly once', { timeout: 10_000 }, async () => {
    const seen = await forwardRaw(['Content-Type: application/json']);
    assert.deepEqual(rawHeaderValues(seen.rawHeaders, 'host'), [`127.0.0.1:${ctx.upstream.port}`]);
  });

  test(
    'hop-by-hop request headers and the names listed in Connection are not forwarded',
    { timeout: 10_000 },
    async () => {
      const seen = await forwardRaw([
        'Content-Type: application/json',
        'Connection: keep-alive, X-Hop-Listed, x-other-listed',
        'Keep-Alive: timeout=99',
        'TE: trailers',
        'Upgrade: h2c',
        'Proxy-Authorization: Basic cHJveHk6c2VjcmV0',
        'Proxy-Connection: keep-alive',
        'Trailer: X-Checksum',
        'X-Hop-Listed: listed-value-1',
        'X-Other-Listed: listed-value-2',
        'X-Kept: kept-value',
      ]);
      // The proxy's own upstream connection may carry its own Connection
      // header (undici sends "keep-alive"); none of the client's tokens may.
      for (const value of rawHeaderValues(seen.rawHeaders, 'connection'))
        assert.match(value, /^(keep-alive|close)$/i, `client Connection value forwarded: ${value}`);
      for (const name of [
        'keep-alive',
        'te',
        'upgrade',
        'proxy-authorization',
        'proxy-connection',
        'trailer',
        'x-hop-listed',
        'x-other-listed',
      ]) {
        assert.deepEqual(
          rawHeaderValues(seen.rawHeaders, name),
          [],
          `${name} must not be forwarded (upstream saw ${JSON.stringify(seen.rawHeaders)})`,
        );
      }
      const all = seen.rawHeaders.join('\n');
      for (const value of ['timeout=99', 'cHJveHk6c2VjcmV0', 'listed-value-1', 'listed-value-2', 'X-Checksum']) {
        assert.ok(!all.includes(value), `${value} leaked upstream`);
      }
      assert.deepEqual(
        rawHeaderValues(seen.rawHeaders, 'x-kept'),
        ['kept-value'],
        'an unlisted header is still forwarded',
      );
    },
  );

  test('ordinary request headers are forwarded with their values', { timeout: 10_000 }, async () => {
    const sent: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      originator: 'codex_exec',
      'session-id': '0199a7b2-5c1e-7e43-9d0f-3b8c2a6f1e10',
      'x-codex-turn-metadata': '{"turn_id":"t-1","sandbox":"workspace-write"}',
      'user-agent': 'codex_exec/0.169.0 (Linux 6.8; x86_64) test',
      cookie: '__cf_bm=abc123; _cfuvid=def456',
    };
    ctx.upstream.handler = jsonOk;
    const before = ctx.upstream.requests.length;
    const reply = await send(ctx.proxy.port, { headers: sent, body: BODY });
    assert.equal(reply.status, 200);
    const seen = ctx.upstream.requests[before];
    assert.ok(seen, 'upstream saw the request');
    assert.equal(seen.method, 'POST');
    for (const [name, value] of Object.entries(sent)) {
      assert.deepEqual(rawHeaderValues(seen.rawHeaders, name), [value], `${name} forwarded unchanged`);
    }
  });

  test('response status, body and headers are mirrored: 201, 400, 429', { timeout: 15_000 }, async () => {
    const cases: Array<{ status: number; body: string; extra: Record<string, string> }> = [
      { status: 201, body: '{"id":"resp_created","object":"response"}', extra: {} },
      {
        status: 400,
        body: '{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model","code":null}}',
        extra: {},
      },
      {
        status: 429,
        body: '{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
        extra: { 'retry-after': '7', 'x-ratelimit-remaining-requests': '0' },
      },
    ];
    for (const c of cases) {
      ctx.upstream.handler = (_req, res) => {
        res.setHeader('content-type', 'application/json; charset=utf-8');
        res.setHeader('x-request-id', `req_${c.status}`);
        res.setHeader('set-cookie', [
          `__cf_bm=one${c.status}; Path=/; HttpOnly`,
          `_cfuvid=two${c.status}; Path=/; Secure`,
        ]);
        for (const [k, v] of Object.entries(c.extra)) res.setHeader(k, v);
        res.writeHead(c.status);
        res.end(c.body);
      };
      const reply = await send(ctx.proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
      assert.equal(reply.status, c.status);
      assert.equal(reply.body.toString(), c.body, `${c.status} body byte-exact`);
      assert.equal(reply.headers['content-type'], 'application/json; charset=utf-8');
      assert.equal(reply.headers['x-request-id'], `req_${c.status}`);
      assert.deepEqual(reply.headers['set-cookie'], [
        `__cf_bm=one${c.status}; Path=/; HttpOnly`,
        `_cfuvid=two${c.status}; Path=/; Secure`,
      ]);
      for (const [k, v] of Object.entries(c.extra)) assert.equal(reply.headers[k], v, `${k} mirrored`);
    }
  });

  test('hop-by-hop response headers are not mirrored', { timeout: 10_000 }, async () => {
    ctx.upstream.handler = (_req, res) => {
      // Raw header list so Node sends exactly these (chunked body, so Trailer is legal).
      res.writeHead(200, [
        'Content-Type',
        'application/json',
        'Connection',
        'keep-alive, X-Resp-Listed',
        'Keep-Alive',
        'timeout=77, max=3',
        'Proxy-Connection',
        'keep-alive',
        'Trailer',
        'X-Resp-Checksum',
        'X-Resp-Listed',
        'resp-listed-value',
        'X-Resp-Kept',
        'kept',
      ]);
      res.write('{"ok":');
      res.end('true}');
    };
    // send() uses a fresh agent, so the client asks for Connection: close and
    // the proxy adds no Keep-Alive header of its own.
    const reply = await send(ctx.proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), '{"ok":true}');
    assert.equal(reply.headers['x-resp-kept'], 'kept');
    const raw = reply.rawHeaders.join('\n');
    for (const leaked of ['X-Resp-Listed', 'resp-listed-value', 'timeout=77', 'X-Resp-Checksum'])
      assert.ok(
        !raw.toLowerCase().includes(leaked.toLowerCase()),
        `${leaked} must not be mirrored: ${JSON.stringify(reply.rawHeaders)}`,
      );
    assert.equal(reply.headers['keep-alive'], undefined);
    assert.equal(reply.headers['proxy-connection'], undefined);
    assert.equal(reply.headers['trailer'], undefined);
  });

  test('a 5 MB random request body arrives byte-exact', { timeout: 15_000 }, async () => {
    const body = randomBytes(5 * 1024 * 1024);
    ctx.upstream.handler = (_req, res, received) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ length: received.length, sha256: sha256(received) }));
    };
    const before = ctx.upstream.requests.length;
    const reply = await withDeadline(
      send(ctx.proxy.port, { headers: { 'content-type': 'application/octet-stream' }, body, timeoutMs: 10_000 }),
      10_000,
      'the 5 MB request',
    );
    assert.equal(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body.toString()), { length: body.length, sha256: sha256(body) });
    assert.equal(ctx.upstream.requests.length, before + 1);
  });

  test(
    'ten 1 MB request bodies in a row each arrive byte-exact (request credit is always returned)',
    { timeout: 30_000 },
    async () => {
      ctx.upstream.handler = (_req, res, received) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ length: received.length, sha256: sha256(received) }));
      };
      for (let i = 0; i < 10; i++) {
        const body = randomBytes(1024 * 1024);
        const reply = await send(ctx.proxy.port, {
          headers: { 'content-type': 'application/octet-stream' },
          body,
          timeoutMs: 2_500,
        }).catch((err: Error) => {
          throw new Error(`request ${i + 1} of 10 (1 MiB body) stalled: ${err.message}`);
        });
        assert.equal(reply.status, 200, `request ${i + 1}`);
        assert.deepEqual(
          JSON.parse(reply.body.toString()),
          { length: body.length, sha256: sha256(body) },
          `request ${i + 1}`,
        );
      }
    },
  );

  test('a chunked request body arrives byte-exact', { timeout: 15_000 }, async () => {
    // Kept under one 256 KiB credit window: this checks chunked framing only
    // (large bodies are covered above).
    const parts = [
      Buffer.from('{"model":"gpt-test",'),
      randomBytes(100_000),
      Buffer.from('"input":"chunked"}'),
      randomBytes(1),
      randomBytes(70_000),
    ];
    const expected = Buffer.concat(parts);
    ctx.upstream.handler = jsonOk;
    const before = ctx.upstream.requests.length;
    const { status, chunkedSent } = await new Promise<{ status: number; chunkedSent: boolean }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: ctx.proxy.port,
          method: 'POST',
          path: '/v1/responses',
          agent: false,
          headers: { 'content-type': 'application/octet-stream' },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, chunkedSent: req.chunkedEncoding }));
          res.on('error', reject);
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      let i = 0;
      const next = (): void => {
        const part = parts[i++];
        if (part === undefined) return void req.end();
        req.write(part);
        setTimeout(next, 10);
      };
      next();
    });
    assert.equal(chunkedSent, true, 'the client really used chunked encoding');
    assert.equal(status, 200);
    assert.equal(ctx.upstream.requests.length, before + 1);
    assert.equal(sha256(ctx.upstream.requests[before]?.body ?? Buffer.alloc(0)), sha256(expected));
  });

  test('Expect: 100-continue gets a 100 and the body then arrives byte-exact', { timeout: 15_000 }, async () => {
    // Under one 256 KiB credit window: this checks the 100-continue handshake only.
    const body = randomBytes(200_000);
    ctx.upstream.handler = jsonOk;
    const before = ctx.upstream.requests.length;
    const outcome = await new Promise<{ status: number; continued: boolean; text: string }>((resolve, reject) => {
      let continued = false;
      const req = request(
        {
          host: '127.0.0.1',
          port: ctx.proxy.port,
          method: 'POST',
          path: '/v1/responses',
          agent: false,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(body.length),
            expect: '100-continue',
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, continued, text: Buffer.concat(chunks).toString() }),
          );
          res.on('error', reject);
        },
      );
      req.on('continue', () => {
        continued = true;
        req.end(body);
      });
      req.setTimeout(10_000, () => req.destroy(new Error('no 100 Continue / response within 10 s')));
      req.on('error', reject);
    });
    assert.equal(outcome.continued, true, 'client received 100 Continue');
    assert.equal(outcome.status, 200, outcome.text);
    assert.equal(ctx.upstream.requests.length, before + 1);
    assert.equal(sha256(ctx.upstream.requests[before]?.body ?? Buffer.alloc(0)), sha256(body));
  });

  test('50 concurrent SSE streams each receive their own byte-exact body', { timeout: 30_000 }, async () => {
    const STREAMS = 50;
    const EVENTS = 5;
    const event = (id: number, seq: number): string =>
      `event: response.output_text.delta\ndata: ${JSON.stringify({ type: 'response.output_text.delta', stream: id, sequence_number: seq, delta: `s${id}-e${seq}-${'x'.repeat((id * 7 + seq * 13) % 50)}` })}\n\n`;
    const expected = (id: number): string =>
      Array.from({ length: EVENTS }, (_, seq) => event(id, seq)).join('') + 'data: [DONE]\n\n';
    ctx.upstream.handler = (_req, res, received) => {
      const id = (JSON.parse(received.toString()) as { stream_id: number }).stream_id;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-stream-id': String(id) });
      let seq = 0;
      const tick = (): void => {
        if (res.destroyed) return;
        if (seq === EVENTS) return void res.end('data: [DONE]\n\n');
        res.write(event(id, seq++));
        setTimeout(tick, 5 + ((id + seq) % 4) * 10);
      };
      tick();
    };
    const before = ctx.upstream.requests.length;
    const replies = await Promise.all(
      Array.from({ length: STREAMS }, (_, id) =>
        send(ctx.proxy.port, {
          headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
          body: JSON.stringify({ model: 'gpt-test', stream: true, stream_id: id }),
          timeoutMs: 20_000,
        }),
      ),
    );
    replies.forEach((reply, id) => {
      assert.equal(reply.status, 200, `stream ${id} status`);
      assert.equal(reply.headers['content-type'], 'text/event-stream', `stream ${id} content-type`);
      assert.equal(reply.headers['x-stream-id'], String(id), `stream ${id} got its own head`);
      assert.equal(reply.body.toString(), expected(id), `stream ${id} body byte-exact`);
    });
    assert.equal(ctx.upstream.requests.length, before + STREAMS);
  });
});

describe('upstream URL path and query', () => {
  const azurePath = '/openai/deployments/D/responses?api-version=2025-04-01-preview';
  const ctx = proxyWithUpstream(azurePath);

  test(
    'an Azure-style upstream URL keeps its path and ?api-version query; method is POST',
    { timeout: 10_000 },
    async () => {
      const reply = await send(ctx.proxy.port, { headers: { 'content-type': 'application/json' }, body: BODY });
      assert.equal(reply.status, 200);
      await sleep(50);
      assert.equal(ctx.upstream.requests.length, 1);
      const seen = ctx.upstream.requests[0];
      assert.equal(seen?.method, 'POST');
      assert.equal(seen?.url, azurePath);
      assert.deepEqual(rawHeaderValues(seen?.rawHeaders ?? [], 'host'), [`127.0.0.1:${ctx.upstream.port}`]);
      assert.deepEqual(rawHeaderValues(seen?.rawHeaders ?? [], 'authorization'), [`Bearer ${TEST_KEY}`]);
      assert.equal(seen?.body.toString(), BODY);
    },
  );
});
