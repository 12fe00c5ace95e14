// The real Codex CLI through the proxy with a client token (read by Codex
// from the environment variable its provider's env_key names, as docs/POLICY.md
// shows) and a model allow-list: an allowed model completes its turn; without
// the token, or with a model off the list, Codex fails and the upstream sees
// nothing.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCodex } from '../helpers/codex.js';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { encodeSse, responseEvents } from '../helpers/responsesApi.js';

const ANSWER = 'Answered behind a client token.';

describe('Codex CLI with --client-token-file and --allow-model', { timeout: 300_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let home: string;
  let token: string;
  const models: string[] = [];

  before(async () => {
    upstream = await MockUpstream.start((req, res, body) => {
      models.push(String((JSON.parse(body.toString()) as { model?: unknown }).model));
      assert.equal(req.headers.authorization, `Bearer ${TEST_KEY}`);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const event of responseEvents(ANSWER)) res.write(encodeSse(event));
      res.end();
    });
    home = mkdtempSync(join(tmpdir(), 'rap-codex-policy-'));
    const tokenFile = join(home, 'proxy-token');
    proxy = await ProxyProcess.start({
      args: ['--upstream-url', upstream.url(), '--client-token-file', tokenFile, '--allow-model', 'gpt-5*'],
    });
    token = readFileSync(tokenFile, 'utf8');
    writeFileSync(
      join(home, 'config.toml'),
      `[model_providers.proxy]
name = 'responses-api-proxy'
base_url = 'http://127.0.0.1:${proxy.port}/v1'
wire_api = 'responses'
env_key = 'PROXY_CLIENT_TOKEN'
`,
    );
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  const codex = (model: string, env: Record<string, string>) =>
    runCodex(
      ['exec', '--skip-git-repo-check', '-c', 'model_provider="proxy"', '-c', `model="${model}"`, 'Your prompt here'],
      home,
      120_000,
      env,
    );

  test('an allowed model with the token from env_key completes the turn', async () => {
    const run = await codex('gpt-5-codex', { PROXY_CLIENT_TOKEN: token });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), ANSWER);
    assert.ok(models.length > 0 && models.every((m) => m === 'gpt-5-codex'), JSON.stringify(models));
  });

  test('a model off the list fails, and nothing reaches the upstream', async () => {
    const before = models.length;
    const run = await codex('o3', { PROXY_CLIENT_TOKEN: token });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /not allowed by this proxy|model_not_allowed/);
    assert.equal(models.length, before);
  });

  test("a wrong token fails with the proxy's 401, and nothing reaches the upstream", async () => {
    const before = models.length;
    const run = await codex('gpt-5-codex', { PROXY_CLIENT_TOKEN: 'not-the-token' });
    assert.notEqual(run.code, 0);
    assert.equal(models.length, before);
  });
});
