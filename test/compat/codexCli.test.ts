// The real Codex CLI (pinned @openai/codex) completes a turn through the proxy,
// configured exactly as the original's README shows.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { runCodex } from '../helpers/codex.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { encodeSse, responseEvents } from '../helpers/responsesApi.js';

const ANSWER = 'The proxy relayed this answer from the mock upstream.';

describe('Codex CLI through the proxy', { timeout: 180_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let home: string;
  const seen: Array<{
    authorization: string | undefined;
    accept: string | undefined;
    stream: unknown;
    originator: string | undefined;
  }> = [];

  before(async () => {
    upstream = await MockUpstream.start((req, res, body) => {
      const parsed = JSON.parse(body.toString()) as { stream?: unknown };
      seen.push({
        authorization: req.headers.authorization,
        accept: req.headers.accept,
        stream: parsed.stream,
        originator: req.headers.originator as string | undefined,
      });
      if (req.headers.authorization !== `Bearer ${TEST_KEY}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({ error: { message: 'bad key', type: 'invalid_request_error', code: 'invalid_api_key' } }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const event of responseEvents(ANSWER)) res.write(encodeSse(event));
      res.end();
    });
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url()] });
    home = mkdtempSync(join(tmpdir(), 'rap-codex-'));
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test('codex exec with -c model_providers… as in the README prints the answer', async () => {
    const before = seen.length;
    const provider = `model_providers.openai-proxy={ name = 'OpenAI Proxy', base_url = 'http://127.0.0.1:${proxy.port}/v1', wire_api='responses' }`;
    const run = await runCodex(
      ['exec', '--skip-git-repo-check', '-c', provider, '-c', 'model_provider="openai-proxy"', 'Your prompt here'],
      home,
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), ANSWER, 'the final message is the mock upstream answer');
    const turn = seen.slice(before);
    assert.ok(turn.length >= 1);
    for (const request of turn) {
      assert.equal(request.authorization, `Bearer ${TEST_KEY}`, 'the proxy injected the key');
      assert.equal(request.accept, 'text/event-stream');
      assert.equal(request.stream, true);
      assert.equal(request.originator, 'codex_exec');
    }
  });

  // The original README puts [profiles.proxy] in config.toml; Codex 0.169 refuses
  // that legacy table and reads the profile from <name>.config.toml instead.
  test('codex exec -p proxy with the provider in config.toml and the profile beside it', async () => {
    const before = seen.length;
    writeFileSync(
      join(home, 'config.toml'),
      `[model_providers.codex-responses-api-proxy]
name = 'codex-responses-api-proxy'
base_url = 'http://127.0.0.1:${proxy.port}/v1'
wire_api='responses'
`,
    );
    writeFileSync(join(home, 'proxy.config.toml'), 'model_provider = "codex-responses-api-proxy"\n');
    const run = await runCodex(['exec', '--skip-git-repo-check', '-p', 'proxy', 'Your prompt here'], home);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), ANSWER);
    assert.ok(seen.length > before);
    assert.ok(seen.slice(before).every((r) => r.authorization === `Bearer ${TEST_KEY}`));
  });
});
