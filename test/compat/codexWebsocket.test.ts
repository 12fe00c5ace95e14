// The real Codex CLI (pinned @openai/codex 0.169.0) in WebSocket mode through
// the proxy: a provider with `supports_websockets = true` makes Codex open
// ws://<base_url>/responses once per session (a warm-up response.create with
// "generate": false, then one per turn chained by previous_response_id) and
// drop the TCP connection at exit. The mock upstream answers differently per
// transport, so both Codex's output and the mock's records show which one a
// turn used. When the upgrade is refused, Codex retries, prints the refusal
// body's error.message and falls back to HTTP.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test, type TestContext } from 'node:test';
import { runCodex } from '../helpers/codex.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { StrayPids } from '../helpers/strayPids.js';
import { headerValues, WsUpstream, type Transport } from '../helpers/wsUpstream.js';

const ANSWERS: Record<Transport, string> = {
  websocket: 'The proxy relayed this answer over its WebSocket.',
  http: 'The proxy relayed this answer over HTTP.',
};

/** `codex exec` against the proxy with a WebSocket-capable provider. */
function execArgs(port: number, prompt: string): string[] {
  const provider = `model_providers.openai-proxy={ name = 'OpenAI Proxy', base_url = 'http://127.0.0.1:${port}/v1', wire_api = 'responses', supports_websockets = true }`;
  return ['exec', '--skip-git-repo-check', '-c', provider, '-c', 'model_provider="openai-proxy"', prompt];
}

/** Header names and values Codex sent, the values of volatile ids shortened. */
function describeHandshake(rawHeaders: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const value = rawHeaders[i + 1] as string;
    out.push(`${name}: ${value.length > 80 ? `${value.slice(0, 80)}…` : value}`);
  }
  return out.join(' | ');
}

describe('Codex CLI in WebSocket mode through the proxy', { timeout: 240_000 }, () => {
  let upstream: WsUpstream;
  let home: string;
  const proxies: ProxyProcess[] = [];
  const strays = new StrayPids();

  async function startProxy(extra: readonly string[]): Promise<ProxyProcess> {
    const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstream.url(), ...extra] });
    proxies.push(proxy);
    await proxy.waitForListening(10_000);
    strays.add(proxy.workerPid());
    return proxy;
  }

  before(async () => {
    upstream = await WsUpstream.start({ perMessageDeflate: true });
    upstream.answer = (_create, transport) => ANSWERS[transport];
    home = mkdtempSync(join(tmpdir(), 'rap-codex-ws-'));
  });
  after(async () => {
    await strays.stopAll(proxies);
    await upstream?.close();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test(
    "supports_websockets = true: the turn goes over the proxy's WebSocket with the key injected",
    { timeout: 120_000 },
    async (t: TestContext) => {
      const dumps = mkdtempSync(join(tmpdir(), 'rap-codex-ws-dumps-'));
      chmodSync(dumps, 0o755); // the worker (nobody, as root) creates and writes dumps/ under it
      t.after(() => rmSync(dumps, { recursive: true, force: true }));
      const dir = join(dumps, 'dumps');
      const proxy = await startProxy(['--websocket', '--dump-dir', dir]);
      const sessions = upstream.sessions.length;
      const handshakes = upstream.handshakes.length;
      const httpTurns = upstream.httpTurns.length;
      const run = await runCodex(execArgs(proxy.port, 'Your prompt here'), home);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), ANSWERS.websocket, `Codex printed the WebSocket answer (stderr: ${run.stderr})`);
      assert.equal(upstream.httpTurns.length, httpTurns, 'no turn went over HTTP');
      assert.equal(
        upstream.handshakes.length - handshakes,
        1,
        `one upgrade, accepted: ${JSON.stringify(upstream.handshakes.slice(handshakes).map((h) => h.status))}`,
      );
      const session = upstream.sessions[sessions];
      assert.ok(session, 'the upstream got a WebSocket');
      assert.equal(upstream.sessions.length - sessions, 1, 'one WebSocket per Codex session');

      const raw = session.handshake.rawHeaders;
      t.diagnostic(`upstream handshake: GET ${session.handshake.url} | ${describeHandshake(raw)}`);
      assert.equal(session.handshake.url, '/v1/responses');
      assert.deepEqual(headerValues(raw, 'authorization'), [`Bearer ${TEST_KEY}`], 'the proxy injected the key');
      assert.deepEqual(headerValues(raw, 'openai-beta'), ['responses_websockets=2026-02-06']);
      assert.deepEqual(headerValues(raw, 'originator'), ['codex_exec']);
      assert.equal(headerValues(raw, 'session-id').length, 1, 'session-id forwarded');
      assert.equal(headerValues(raw, 'thread-id').length, 1, 'thread-id forwarded');
      assert.match(
        headerValues(raw, 'x-codex-turn-metadata')[0] ?? '',
        /^\{.*"session_id"/,
        'x-codex-turn-metadata forwarded',
      );
      assert.deepEqual(headerValues(raw, 'host'), [`127.0.0.1:${upstream.port}`]);

      // What Codex sent over the socket: a warm-up, then the turn chained to it.
      const creates = session.creates;
      t.diagnostic(
        `messages: ${session.messages.length} (${session.messages.map((m) => `${m.isBinary ? 'binary' : 'text'} ${m.data.length} B`).join(', ')})`,
      );
      for (const [i, c] of creates.entries()) {
        const bulky = ['input', 'tools', 'instructions', 'client_metadata'];
        const rest = Object.fromEntries(Object.entries(c).filter(([k]) => !bulky.includes(k)));
        const sizes = bulky.map((k) => `${k} ${JSON.stringify(c[k] ?? null).length} B`).join(', ');
        t.diagnostic(
          `response.create #${i + 1}: ${JSON.stringify(rest)}; ${sizes}; client_metadata keys ${JSON.stringify(Object.keys((c.client_metadata ?? {}) as object))}`,
        );
      }
      assert.ok(creates.length >= 2, `expected a warm-up and a turn, got ${creates.length} response.create`);
      assert.equal(creates[0]?.generate, false, 'the first response.create is the warm-up (generate: false)');
      const turn = creates.find((c) => c.generate !== false);
      assert.ok(turn, 'a generating response.create');
      assert.equal(turn.previous_response_id, `resp_ws_${session.seq}_1`, 'the turn is chained to the warm-up');
      assert.equal(turn.stream, true);

      // Codex drops the TCP connection at exit (no close frame); the proxy must close the upstream socket.
      const closed = await session.waitClosed(2_000);
      assert.ok(closed, 'the upstream socket outlived Codex by 2 s');
      t.diagnostic(
        `upstream socket closed ${(closed.at - run.exitedAt).toFixed(0)} ms after Codex exited, code ${closed.code} ${JSON.stringify(closed.reason)}`,
      );
      await proxy.stop();
      assert.ok(!proxy.stderr.includes(TEST_KEY), "the key is in the proxy's log");

      // The dump pair: what Codex itself sent to the proxy, and the messages both ways.
      const files = readdirSync(dir)
        .filter((f) => f.endsWith('.json'))
        .sort();
      assert.equal(files.length, 2, JSON.stringify(files));
      const text = files.map((f) => readFileSync(join(dir, f), 'utf8'));
      assert.ok(
        text.every((x) => !x.includes(TEST_KEY)),
        'the key is in a dump',
      );
      const request = JSON.parse(text[0] as string) as {
        method: string;
        url: string;
        headers: Array<{ name: string; value: string }>;
      };
      const response = JSON.parse(text[1] as string) as {
        status: number;
        body: Array<{ direction: string; type: string; data?: string; code?: number }>;
      };
      t.diagnostic(
        `Codex → proxy: ${request.method} ${request.url} | ${request.headers.map((h) => `${h.name}: ${h.value.length > 60 ? `${h.value.slice(0, 60)}…` : h.value}`).join(' | ')}`,
      );
      t.diagnostic(
        `dumped messages: ${response.body.map((e) => `${e.direction} ${e.type}${e.type === 'close' ? ` ${e.code}` : ` ${(e.data ?? '').length} B${e.type === 'text' ? ` ${String((JSON.parse(e.data ?? '{}') as { type?: string }).type)}` : ''}`}`).join(', ')}`,
      );
      assert.equal(request.method, 'GET');
      assert.equal(request.url, '/v1/responses');
      const sent = new Map(request.headers.map((h) => [h.name.toLowerCase(), h.value]));
      assert.equal(sent.get('openai-beta'), 'responses_websockets=2026-02-06');
      assert.equal(sent.get('authorization'), undefined, 'Codex sent no Authorization of its own (no key configured)');
      assert.equal(response.status, 101);
      const fromCodex = response.body.filter((e) => e.direction === 'client_to_upstream' && e.type === 'text');
      assert.equal(fromCodex.length, creates.length, 'every response.create is in the dump');
    },
  );

  test(
    "the upstream refuses the upgrade (401): Codex shows the refusal's message and falls back to HTTP through the proxy",
    { timeout: 120_000 },
    async (t: TestContext) => {
      const proxy = await startProxy(['--websocket']);
      const handshakes = upstream.handshakes.length;
      const httpTurns = upstream.httpTurns.length;
      upstream.refusal = {
        status: 401,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          error: {
            message: 'Incorrect API key provided (mock refusal).',
            type: 'invalid_request_error',
            code: 'invalid_api_key',
            param: null,
          },
        }),
      };
      try {
        const started = performance.now();
        const run = await runCodex(execArgs(proxy.port, 'Your prompt here'), home);
        t.diagnostic(
          `Codex took ${(performance.now() - started).toFixed(0)} ms, ${upstream.handshakes.length - handshakes} upgrade attempts; stderr lines: ${JSON.stringify(run.stderr.split('\n').filter((l) => /websocket|reconnect|401/i.test(l)))}`,
        );
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout.trim(), ANSWERS.http, 'the turn completed over HTTP');
        assert.match(
          run.stderr,
          /Incorrect API key provided \(mock refusal\)\./,
          "Codex printed the refusal body's message",
        );
        assert.ok(upstream.handshakes.length - handshakes >= 1);
        assert.ok(
          upstream.handshakes
            .slice(handshakes)
            .every((h) => h.status === 401 && headerValues(h.rawHeaders, 'authorization')[0] === `Bearer ${TEST_KEY}`),
        );
        assert.ok(upstream.httpTurns.length > httpTurns, 'no HTTP turn after the fallback');
        assert.ok(upstream.httpTurns.slice(httpTurns).every((h) => h.headers.authorization === `Bearer ${TEST_KEY}`));
      } finally {
        upstream.refusal = null;
      }
    },
  );

  test(
    "without --websocket (the original's behaviour): the upgrade is 403 and Codex falls back to HTTP",
    { timeout: 120_000 },
    async (t: TestContext) => {
      const proxy = await startProxy([]);
      const handshakes = upstream.handshakes.length;
      const httpTurns = upstream.httpTurns.length;
      const started = performance.now();
      const run = await runCodex(execArgs(proxy.port, 'Your prompt here'), home);
      t.diagnostic(
        `Codex took ${(performance.now() - started).toFixed(0)} ms; stderr lines: ${JSON.stringify(run.stderr.split('\n').filter((l) => /websocket|reconnect|403/i.test(l)))}`,
      );
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), ANSWERS.http);
      assert.equal(upstream.handshakes.length, handshakes, 'an upgrade reached the upstream');
      assert.ok(upstream.httpTurns.length > httpTurns);
    },
  );
});
