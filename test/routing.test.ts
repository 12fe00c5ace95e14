// Routing: only exactly "POST /v1/responses" is forwarded; every other request
// target or method gets an empty 403 and never reaches the upstream, and a
// rejected request's body is consumed so keep-alive framing stays intact.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sendRaw } from './helpers/httpClient.js';
import { proxyWithUpstream } from './helpers/proxyFixture.js';
import { sleep } from './helpers/proxyProcess.js';
import { RawConnection, headerValues, parseAllResponses, type RawResponse } from './helpers/rawHttp.js';

const BODY = '{"model":"gpt-test","input":"hi","stream":true}';

function rawRequest(method: string, target: string, port: number, body: string | null, extra: string[] = []): string {
  const lines = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...extra];
  if (body !== null) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body ?? ''}`;
}

function assertEmpty403(response: RawResponse, label: string): void {
  assert.match(response.statusLine, /^HTTP\/1\.1 403 /, `${label}: status line`);
  assert.deepEqual(headerValues(response, 'content-length'), ['0'], `${label}: Content-Length: 0`);
  assert.equal(headerValues(response, 'transfer-encoding').length, 0, `${label}: no transfer-encoding`);
  assert.equal(response.body.length, 0, `${label}: empty body`);
}

describe('rejected request targets and methods', () => {
  const ctx = proxyWithUpstream();
  /** Valid requests this suite sent on purpose (control cases). */
  let validSent = 0;

  // [method, target, has body]
  const cases: Array<[string, (port: number) => string, boolean]> = [
    ['GET', () => '/v1/responses', false],
    ['PUT', () => '/v1/responses', true],
    ['DELETE', () => '/v1/responses', false],
    ['PATCH', () => '/v1/responses', true],
    ['OPTIONS', () => '/v1/responses', false],
    ['POST', () => '/v1/responses?', true],
    ['POST', () => '/v1/responses?a=1', true],
    ['POST', () => '/v1/responses/', true],
    ['POST', () => '/V1/responses', true],
    ['POST', () => '/v1/Responses', true],
    ['POST', () => '//v1/responses', true],
    ['POST', () => '/v1//responses', true],
    ['POST', () => '/v1/./responses', true],
    ['POST', () => '/v1/x/../responses', true],
    ['POST', () => '/v1/%72esponses', true],
    ['POST', () => '/v1/responses;x', true],
    ['POST', (port) => `http://127.0.0.1:${port}/v1/responses`, true],
    ['POST', () => '/', true],
    ['GET', () => '/shutdown', false],
  ];

  for (const [method, target, hasBody] of cases) {
    const name = `${method} ${target(0).replace(':0', ':P')} is 403 with Content-Length: 0 and never reaches the upstream`;
    test(name, { timeout: 10_000 }, async () => {
      const before = ctx.upstream.requests.length;
      const raw = await sendRaw(
        ctx.proxy.port,
        rawRequest(method, target(ctx.proxy.port), ctx.proxy.port, hasBody ? BODY : null, ['Connection: close']),
        5_000,
      );
      const { responses, rest } = parseAllResponses(raw);
      assert.equal(responses.length, 1, `exactly one response, got ${JSON.stringify(raw)}`);
      assertEmpty403(responses[0] as RawResponse, name);
      assert.equal(rest.length, 0, 'no bytes after the response');
      assert.equal(ctx.upstream.requests.length, before, 'upstream received nothing');
    });
  }

  test('GET /shutdown without --http-shutdown leaves the proxy running', { timeout: 10_000 }, async () => {
    await sendRaw(ctx.proxy.port, rawRequest('GET', '/shutdown', ctx.proxy.port, null, ['Connection: close']), 5_000);
    await sleep(200);
    assert.equal(ctx.proxy.exitStatus, null, 'proxy still running');
    // And it still forwards: a valid request reaches the ctx.upstream.
    const before = ctx.upstream.requests.length;
    validSent++;
    const raw = await sendRaw(
      ctx.proxy.port,
      rawRequest('POST', '/v1/responses', ctx.proxy.port, BODY, ['Connection: close']),
      5_000,
    );
    const { responses } = parseAllResponses(raw);
    assert.equal(responses[0]?.status, 200);
    assert.equal(ctx.upstream.requests.length, before + 1);
  });

  test(
    'after all rejections settle the upstream saw only the valid control requests',
    { timeout: 10_000 },
    async () => {
      await sleep(300);
      assert.equal(ctx.upstream.requests.length, validSent);
      for (const seen of ctx.upstream.requests) {
        assert.equal(seen.method, 'POST');
        assert.equal(seen.url, '/v1/responses');
        assert.equal(seen.body.toString(), BODY);
      }
    },
  );
});

describe('keep-alive framing after a rejected request with a body', () => {
  const ctx = proxyWithUpstream();

  // A rejected body that is itself a valid request: if the proxy failed to
  // consume it, it would be parsed as a second request and reach the ctx.upstream.
  const smuggled = (port: number): string =>
    `POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"smuggled":1}\n`;

  async function rejectedThenValid(first: string): Promise<void> {
    const before = ctx.upstream.requests.length;
    const conn = await RawConnection.open(ctx.proxy.port);
    try {
      conn.write(first);
      const rejected = await conn.readResponse(5_000);
      assertEmpty403(rejected, 'rejected request');
      assert.equal(conn.closed, false, 'connection kept alive after the 403');
      const valid = '{"model":"gpt-test","input":"second"}';
      conn.write(rawRequest('POST', '/v1/responses', ctx.proxy.port, valid));
      const second = await conn.readResponse(5_000);
      assert.equal(second.status, 200, `second response: ${second.statusLine}`);
      assert.deepEqual(JSON.parse(second.body.toString()), { id: 'resp_1', object: 'response', status: 'completed' });
      await sleep(200);
      assert.equal(ctx.upstream.requests.length, before + 1, 'upstream saw exactly one request');
      const seen = ctx.upstream.requests[before];
      assert.equal(seen?.url, '/v1/responses');
      assert.equal(seen?.body.toString(), valid);
      assert.equal(conn.pendingBytes.length, 0, 'no stray bytes on the connection');
    } finally {
      conn.close();
    }
  }

  test(
    'Content-Length body of a rejected POST is consumed; next POST on the same connection is forwarded',
    { timeout: 15_000 },
    async () => {
      const body = smuggled(ctx.proxy.port);
      await rejectedThenValid(rawRequest('POST', '/v1/responses?a=1', ctx.proxy.port, body));
    },
  );

  test(
    'chunked body of a rejected POST is consumed; next POST on the same connection is forwarded',
    { timeout: 15_000 },
    async () => {
      const body = smuggled(ctx.proxy.port);
      const half = Math.floor(body.length / 2);
      const chunks = [body.slice(0, half), body.slice(half)];
      const chunked = chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') + '0\r\n\r\n';
      const head = [
        `POST /v1/responses/ HTTP/1.1`,
        `Host: 127.0.0.1:${ctx.proxy.port}`,
        'Content-Type: application/json',
        'Transfer-Encoding: chunked',
      ].join('\r\n');
      await rejectedThenValid(`${head}\r\n\r\n${chunked}`);
    },
  );
});
