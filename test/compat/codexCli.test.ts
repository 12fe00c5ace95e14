// The real Codex CLI (pinned @openai/codex) completes a turn through the proxy,
// configured exactly as the original's README shows.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { encodeSse, responseEvents } from '../helpers/responsesApi.js';

const CODEX = fileURLToPath(new URL('../../../node_modules/.bin/codex', import.meta.url));
const ANSWER = 'The proxy relayed this answer from the mock upstream.';

interface CodexRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCodex(args: string[], home: string, timeoutMs = 60_000): Promise<CodexRun> {
  return new Promise((resolve) => {
    const child = spawn(CODEX, args, { cwd: home, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, CODEX_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('Codex CLI through the proxy', { timeout: 180_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let home: string;
  const seen: Array<{ authorization: string | undefined; accept: string | undefined; stream: unknown; originator: string | undefined }> = [];

  before(async () => {
    upstream = await MockUpstream.start((req, res, body) => {
      const parsed = JSON.parse(body.toString()) as { stream?: unknown };
      seen.push({ authorization: req.headers.authorization, accept: req.headers.accept, stream: parsed.stream, originator: req.headers.originator as string | undefined });
      if (req.headers.authorization !== `Bearer ${TEST_KEY}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'bad key', type: 'invalid_request_error', code: 'invalid_api_key' } }));
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
    const run = await runCodex(['exec', '--skip-git-repo-check', '-c', provider, '-c', 'model_provider="openai-proxy"', 'Your prompt here'], home);
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
