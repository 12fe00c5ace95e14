// An upstream that echoes the key must not hand it to the worker or the client.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readAuthHeader } from '../src/supervisor/authHeader.js';
import { KeyScrubber } from '../src/supervisor/keyScrubber.js';
import { send } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY } from './helpers/proxyProcess.js';

const MASKED = '*'.repeat(TEST_KEY.length);

function scrubberFor(key: string): KeyScrubber {
  const input = Buffer.from(`${key}\n`);
  let offset = 0;
  const auth = readAuthHeader((buffer, at, length) => {
    const n = Math.min(length, input.length - offset);
    input.copy(buffer, at, offset, offset + n);
    offset += n;
    return n;
  });
  return new KeyScrubber(auth);
}

describe('KeyScrubber', () => {
  test('masks the key wherever chunk boundaries fall, and nothing else', () => {
    const text = `a${TEST_KEY}b ${TEST_KEY}${TEST_KEY} sk-test not the key\n`;
    const expected = text.replaceAll(TEST_KEY, MASKED);
    for (let cut = 0; cut <= text.length; cut++) {
      const scrubber = scrubberFor(TEST_KEY);
      const out = [scrubber.push(Buffer.from(text.slice(0, cut))), scrubber.push(Buffer.from(text.slice(cut)))];
      const rest = scrubber.flush();
      if (rest !== null) out.push(rest);
      assert.equal(Buffer.concat(out).toString(), expected, `cut at ${cut}`);
    }
  });

  test('holds back only a possible key prefix, and releases it at the end', () => {
    const scrubber = scrubberFor(TEST_KEY);
    assert.equal(scrubber.push(Buffer.from('data: x\n\n')).toString(), 'data: x\n\n', 'SSE chunks pass whole');
    assert.equal(scrubber.push(Buffer.from('xx sk-test')).toString(), 'xx ');
    assert.equal(scrubber.flush()?.toString(), 'sk-test');
  });
});

describe('an upstream echoing the key', { timeout: 30_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await MockUpstream.start((req, res) => {
      const echoed = String(req.headers.authorization);
      res.writeHead(401, { 'content-type': 'text/plain', 'x-echo': echoed });
      // The key split across writes (and so, usually, across chunks).
      res.write(`got ${echoed.slice(0, 20)}`);
      setTimeout(() => res.end(`${echoed.slice(20)} end`), 50);
    });
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
  });

  test('reaches the client masked in headers and body', async () => {
    const reply = await send(proxy.port, { body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(reply.status, 401);
    assert.equal(reply.headers['x-echo'], `Bearer ${MASKED}`);
    assert.equal(reply.body.toString(), `got Bearer ${MASKED} end`);
    assert.ok(!proxy.stderr.includes(TEST_KEY));
  });
});
