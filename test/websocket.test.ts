// WebSocket mode (--websocket, issue 9) through the real proxy: which upgrades
// are relayed and which are 403; the upstream handshake (the key injected,
// ordinary headers forwarded, Sec-WebSocket-* per hop); messages both ways
// byte-exact with their type and boundaries; refusals passed through; close
// codes both ways and what happens when either side drops; the size limit,
// the idle timeout, --max-concurrent, graceful shutdown, a worker crash; 100
// sockets at once; the key masked in everything the upstream sends and never
// in the worker (root); dumps.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { reserveClosedPort } from './helpers/closedPort.js';
import { send } from './helpers/httpClient.js';
import { scanProcessMemory, type ScanResult } from './helpers/memScan.js';
import { jsonRecords, type LogRecord } from './helpers/netProbe.js';
import { ProxyProcess, TEST_KEY, sleep } from './helpers/proxyProcess.js';
import { headerValues as rawResponseHeader } from './helpers/rawHttp.js';
import { StrayPids } from './helpers/strayPids.js';
import { MessageBudget, type MessageHolder } from '../src/worker/messageBudget.js';
import { SAMPLE_ACCEPT, SAMPLE_KEY, WsClient, rawUpgrade } from './helpers/wsClient.js';
import {
  answerOrEcho,
  DEFAULT_ANSWER,
  headerValues,
  until,
  WsUpstream,
  type WsMessage,
  type WsSession,
} from './helpers/wsUpstream.js';

const IS_ROOT = process.getuid?.() === 0;
const NEEDS_ROOT =
  "needs root: reading the worker's /proc/<pid>/mem (and the worker runs as another uid only when the proxy runs as root)";
const MAX_MESSAGE = 6 * 1024 * 1024;
const MASKED = '*'.repeat(TEST_KEY.length);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);
const describeMessage = (m: WsMessage): string => `${m.isBinary ? 'binary' : 'text'} ${m.data.length} B ${sha(m.data)}`;

const proxies: ProxyProcess[] = [];
const strays = new StrayPids();

after(async () => {
  await strays.stopAll(proxies);
});

async function startProxy(upstreamUrl: string, extra: readonly string[] = []): Promise<ProxyProcess> {
  const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstreamUrl, ...extra] });
  proxies.push(proxy);
  await proxy.waitForListening(10_000);
  strays.add(proxy.workerPid());
  return proxy;
}

/** A text message of exactly `size` bytes of valid UTF-8 with 1- to 4-byte characters. */
function textOf(size: number, seed: number): string {
  const unit = `a${String.fromCharCode(0x61 + (seed % 26))}é€😀`; // 1+1+2+3+4 = 11 bytes
  return unit.repeat(Math.floor(size / 11)) + 'x'.repeat(size % 11);
}

/** The output text of the response.completed among a turn's events. */
function completedText(events: ReadonlyArray<Record<string, unknown>>): string {
  const completed = events.find((e) => e.type === 'response.completed') as
    { response?: { output?: Array<{ content?: Array<{ text?: string }> }> } } | undefined;
  return completed?.response?.output?.[0]?.content?.[0]?.text ?? '<none>';
}

function completedId(events: ReadonlyArray<Record<string, unknown>>): string {
  const completed = events.find((e) => e.type === 'response.completed') as { response?: { id?: string } } | undefined;
  return completed?.response?.id ?? '<none>';
}

/** A process's resident set in kB (/proc/<pid>/status VmRSS), 0 if gone. */
function vmRssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The new session the upstream got after `before` sessions, within timeoutMs. */
async function nextSession(upstream: WsUpstream, before: number, timeoutMs = 5_000): Promise<WsSession> {
  assert.ok(
    await upstream.waitForSessions(before + 1, timeoutMs),
    `the upstream got no WebSocket within ${timeoutMs} ms`,
  );
  return upstream.sessions[before] as WsSession;
}

// ---------------------------------------------------------------- without --websocket

describe('WebSocket upgrades without --websocket', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url());
  });
  after(async () => {
    await upstream?.close();
  });

  test('GET /v1/responses with a valid upgrade → 403, empty body; the upstream sees nothing', async () => {
    const refused = await WsClient.refused(proxy.port, {
      headers: { 'openai-beta': 'responses_websockets=2026-02-06' },
    });
    assert.equal(refused.status, 403);
    assert.equal(refused.body, '');
    const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses');
    conn.close();
    assert.equal(response.status, 403, response.statusLine);
    assert.equal(response.body.length, 0);
    await sleep(100);
    assert.equal(upstream.handshakes.length, 0, 'the upstream saw an upgrade');
    assert.equal(upstream.httpTurns.length + upstream.otherRequests.length, 0, 'the upstream saw a request');
  });
});

// ---------------------------------------------------------------- the shared --websocket proxy

describe('--websocket: relaying', { timeout: 120_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--ws-max-message-bytes', String(MAX_MESSAGE)]);
  });
  after(async () => {
    await upstream?.close();
  });

  test(
    'only exactly GET /v1/responses is upgraded: other targets and any query string → 403 empty, upstream sees nothing',
    { timeout: 20_000 },
    async () => {
      const handshakes = upstream.handshakes.length;
      const targets = [
        '/v1/responses?x=1',
        '/v1/responses?',
        '/v1/responses?api-version=2025-04-01-preview',
        '/v1/responses/',
        '/v1/Responses',
        '/V1/responses',
        '/v1//responses',
        '/v1/./responses',
        '/v1/responses%2F',
        '/v1/respons%65s',
        '/v1/responses;x',
        '/v1/models',
        '/',
        '/shutdown',
        `http://127.0.0.1:${proxy.port}/v1/responses`,
      ];
      const wrong: string[] = [];
      for (const target of targets) {
        const { response, conn } = await rawUpgrade(proxy.port, target);
        conn.close();
        if (response.status !== 403 || response.body.length !== 0)
          wrong.push(`${target} → ${response.statusLine} ${JSON.stringify(response.body.toString())}`);
      }
      const viaClient = await WsClient.refused(proxy.port, { path: '/v1/responses?model=gpt-test' });
      if (viaClient.status !== 403 || viaClient.body !== '')
        wrong.push(`ws client with ?model= → ${viaClient.status} ${JSON.stringify(viaClient.body)}`);
      assert.deepEqual(wrong, [], 'each must be 403 with an empty body');
      await sleep(100);
      assert.equal(
        upstream.handshakes.length,
        handshakes,
        `the upstream saw: ${JSON.stringify(upstream.handshakes.slice(handshakes).map((h) => h.url))}`,
      );
    },
  );

  test(
    'GET /v1/responses without a valid upgrade is not relayed: 403 without a websocket upgrade, 400 for a malformed one; upstream sees nothing',
    { timeout: 20_000 },
    async () => {
      const handshakes = upstream.handshakes.length;
      const upgrade = ['Connection: Upgrade', 'Upgrade: websocket'];
      const cases: Array<{ what: string; lines: string[]; status: number }> = [
        { what: 'no upgrade headers at all', lines: [], status: 403 },
        {
          what: 'Upgrade: h2c',
          lines: [
            'Connection: Upgrade',
            'Upgrade: h2c',
            'Sec-WebSocket-Version: 13',
            `Sec-WebSocket-Key: ${SAMPLE_KEY}`,
          ],
          status: 403,
        },
        {
          what: 'Sec-WebSocket-Version 12',
          lines: [...upgrade, 'Sec-WebSocket-Version: 12', `Sec-WebSocket-Key: ${SAMPLE_KEY}`],
          status: 400,
        },
        { what: 'no Sec-WebSocket-Key', lines: [...upgrade, 'Sec-WebSocket-Version: 13'], status: 400 },
        {
          what: 'a 4-byte Sec-WebSocket-Key',
          lines: [...upgrade, 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: AAAAAA=='],
          status: 400,
        },
      ];
      const wrong: string[] = [];
      for (const c of cases) {
        const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses', c.lines, { bare: true });
        conn.close();
        if (response.status !== c.status) wrong.push(`${c.what} → ${response.statusLine} (expected ${c.status})`);
      }
      assert.deepEqual(wrong, []);
      await sleep(100);
      assert.equal(upstream.handshakes.length, handshakes, 'the upstream saw an upgrade');
    },
  );

  test(
    'upstream handshake: one Authorization (the key), ordinary headers forwarded, hop-by-hop not, Host and Sec-WebSocket-Key per hop; 101 headers come back',
    { timeout: 10_000 },
    async () => {
      const before = upstream.sessions.length;
      upstream.upgradeHeaders = {
        'x-mock-upgrade': 'from-upstream',
        'openai-processing-ms': '7',
        'Keep-Alive': 'timeout=77',
        'Proxy-Connection': 'keep-alive',
      };
      const ordinary: Array<[string, string]> = [
        ['OpenAI-Beta', 'responses_websockets=2026-02-06'],
        ['session-id', '0199a7b2-5c1e-7e43-9d0f-3b8c2a6f1e10'],
        ['thread-id', '0199a7b2-5c1e-7e43-9d0f-3b8c2a6f1e11'],
        ['x-codex-turn-metadata', '{"turn_id":"","sandbox":"seccomp","request_kind":"prewarm"}'],
        ['originator', 'codex_exec'],
        ['User-Agent', 'codex_exec/0.169.0 (Linux; x86_64) test'],
        ['x-client-request-id', 'req-client-1'],
      ];
      try {
        const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses', [
          'Authorization: Bearer client-supplied-one',
          'authorization: Basic Y2xpZW50OnNlY3JldA==',
          'Proxy-Authorization: Basic cHJveHk6c2VjcmV0',
          'Keep-Alive: timeout=99',
          ...ordinary.map(([n, v]) => `${n}: ${v}`),
        ]);
        try {
          assert.equal(response.status, 101, `${response.statusLine} ${response.body.toString()}`);
          assert.deepEqual(
            rawResponseHeader(response, 'sec-websocket-accept'),
            [SAMPLE_ACCEPT],
            'the client gets the accept value for its own key',
          );
          assert.deepEqual(
            rawResponseHeader(response, 'x-mock-upgrade'),
            ['from-upstream'],
            'an upstream 101 header reaches the client',
          );
          assert.deepEqual(rawResponseHeader(response, 'openai-processing-ms'), ['7']);
          assert.deepEqual(rawResponseHeader(response, 'keep-alive'), [], 'a hop-by-hop 101 header reached the client');
          assert.deepEqual(
            rawResponseHeader(response, 'proxy-connection'),
            [],
            'a hop-by-hop 101 header reached the client',
          );
          assert.deepEqual(
            rawResponseHeader(response, 'sec-websocket-extensions'),
            [],
            'the client offered no extension',
          );
          assert.deepEqual(
            rawResponseHeader(response, 'upgrade').map((v) => v.toLowerCase()),
            ['websocket'],
          );
          const session = await nextSession(upstream, before);
          assert.deepEqual(
            rawResponseHeader(response, 'x-request-id'),
            [`req_ws_${session.seq}`],
            'x-request-id from the upstream 101',
          );
          const h = session.handshake;
          assert.equal(h.method, 'GET');
          assert.equal(h.url, '/v1/responses');
          assert.deepEqual(headerValues(h.rawHeaders, 'authorization'), [`Bearer ${TEST_KEY}`]);
          const all = h.rawHeaders.join('\n');
          for (const leaked of ['client-supplied-one', 'Y2xpZW50OnNlY3JldA==', 'cHJveHk6c2VjcmV0', 'timeout=99'])
            assert.ok(!all.includes(leaked), `${leaked} reached the upstream`);
          assert.deepEqual(headerValues(h.rawHeaders, 'proxy-authorization'), []);
          assert.deepEqual(headerValues(h.rawHeaders, 'keep-alive'), []);
          assert.deepEqual(headerValues(h.rawHeaders, 'host'), [`127.0.0.1:${upstream.port}`]);
          const keys = headerValues(h.rawHeaders, 'sec-websocket-key');
          assert.equal(keys.length, 1, `Sec-WebSocket-Key: ${JSON.stringify(keys)}`);
          assert.notEqual(keys[0], SAMPLE_KEY, 'the proxy must make its own Sec-WebSocket-Key for its hop');
          assert.deepEqual(headerValues(h.rawHeaders, 'sec-websocket-version'), ['13']);
          assert.deepEqual(
            headerValues(h.rawHeaders, 'upgrade').map((v) => v.toLowerCase()),
            ['websocket'],
          );
          for (const [name, value] of ordinary)
            assert.deepEqual(headerValues(h.rawHeaders, name), [value], `${name} forwarded unchanged`);
        } finally {
          conn.close();
        }
      } finally {
        upstream.upgradeHeaders = {};
      }
    },
  );

  test('the ws client sees the upstream 101 headers in its upgrade response', { timeout: 10_000 }, async () => {
    upstream.upgradeHeaders = { 'x-mock-upgrade': 'seen' };
    try {
      const client = await WsClient.open(proxy.port, { headers: { 'openai-beta': 'responses_websockets=2026-02-06' } });
      assert.equal(client.upgradeHeaders['x-mock-upgrade'], 'seen');
      assert.match(String(client.upgradeHeaders['x-request-id']), /^req_ws_\d+$/);
      client.close(1000);
      assert.ok(await client.waitClosed(2_000));
    } finally {
      upstream.upgradeHeaders = {};
    }
  });

  test(
    "subprotocols: offered upstream as the client offered them; the upstream's choice is the client's",
    { timeout: 10_000 },
    async () => {
      const before = upstream.sessions.length;
      upstream.selectProtocol = (offered) => (offered.has('responses.v2') ? 'responses.v2' : false);
      try {
        const client = await WsClient.open(proxy.port, { protocols: ['responses.v1', 'responses.v2'] });
        const session = await nextSession(upstream, before);
        assert.deepEqual(
          session
            .header('sec-websocket-protocol')
            .join(', ')
            .split(/\s*,\s*/),
          ['responses.v1', 'responses.v2'],
        );
        assert.equal(client.ws.protocol, 'responses.v2');
        client.close(1000);
        await client.waitClosed(2_000);
      } finally {
        upstream.selectProtocol = null;
      }
    },
  );

  test(
    'response.create → the stream events, one text message each, in order; previous_response_id chains; generate:false warms up',
    { timeout: 10_000 },
    async () => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      try {
        const warm = await client.turn({ model: 'gpt-test', input: [], generate: false });
        assert.deepEqual(
          warm.map((e) => e.type),
          ['response.created', 'response.completed'],
        );
        const session = await nextSession(upstream, before);
        const first = await client.turn({ model: 'gpt-test', input: 'hello', previous_response_id: completedId(warm) });
        assert.deepEqual(
          first.map((e) => e.type),
          [
            'response.created',
            'response.output_item.added',
            'response.output_text.delta',
            'response.output_text.delta',
            'response.output_text.delta',
            'response.output_text.delta',
            'response.output_item.done',
            'response.completed',
          ],
        );
        assert.equal(completedText(first), upstream.answerFor({}));
        assert.ok(
          client.messages.every((m) => !m.isBinary),
          'events are text messages',
        );
        assert.deepEqual(
          session.creates.map((c) => c.previous_response_id ?? null),
          [null, `resp_ws_${session.seq}_1`],
        );
        assert.equal(completedId(first), `resp_ws_${session.seq}_2`);
        assert.equal(upstream.httpTurns.length, 0, 'nothing went over HTTP');
      } finally {
        client.close(1000);
        await client.waitClosed(2_000);
      }
    },
  );

  test(
    'messages both ways: text stays text, binary stays binary, 0 B … 5 MiB byte-exact, boundaries and order kept',
    { timeout: 40_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      try {
        const session = await nextSession(upstream, before);
        const sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 1024 * 1024 + 7, 5 * 1024 * 1024];
        const sent: Array<{ data: Buffer; isBinary: boolean }> = [];
        for (const [i, size] of sizes.entries()) {
          sent.push({ data: Buffer.from(textOf(size, i)), isBinary: false });
          sent.push({ data: randomBytes(size), isBinary: true });
        }
        // A run of tiny messages: boundaries must not merge.
        for (let i = 0; i < 50; i++) sent.push({ data: Buffer.from(String(i)), isBinary: i % 2 === 1 });
        const started = performance.now();
        for (const m of sent) client.send(m.isBinary ? m.data : m.data.toString('utf8'), m.isBinary);
        const done = await until(
          () => client.messages.length >= sent.length || client.closed !== null || session.closed !== null,
          30_000,
        );
        const bytes = sent.reduce((n, m) => n + m.data.length, 0);
        t.diagnostic(
          `${sent.length} messages, ${(bytes / 1048576).toFixed(1)} MiB each way, round trip in ${(performance.now() - started).toFixed(0)} ms`,
        );
        const state = `upstream got ${session.messages.length}, client ${client.messages.length} of ${sent.length}; client close ${JSON.stringify(client.closed)}, upstream close ${JSON.stringify(session.closed)}`;
        assert.ok(done && client.closed === null && session.closed === null, state);
        assert.deepEqual(
          session.messages.map(describeMessage),
          sent.map((m) => describeMessage({ ...m, at: 0 })),
          'client → upstream',
        );
        assert.deepEqual(
          client.messages.map(describeMessage),
          sent.map((m) => describeMessage({ ...m, at: 0 })),
          'upstream → client',
        );
      } finally {
        client.close(1000);
        await client.waitClosed(2_000);
      }
    },
  );

  for (const deflate of [false, true]) {
    test(
      `a message of exactly --ws-max-message-bytes passes both ways (random binary and text, permessage-deflate ${deflate ? 'offered' : 'off'})`,
      { timeout: 20_000 },
      async () => {
        const before = upstream.sessions.length;
        const client = await WsClient.open(proxy.port, { perMessageDeflate: deflate });
        try {
          const session = await nextSession(upstream, before);
          const sent = [
            { data: Buffer.from(textOf(MAX_MESSAGE, 3)), isBinary: false },
            { data: randomBytes(MAX_MESSAGE), isBinary: true },
          ];
          for (const m of sent) client.send(m.isBinary ? m.data : m.data.toString('utf8'), m.isBinary);
          await until(
            () => client.messages.length >= sent.length || client.closed !== null || session.closed !== null,
            15_000,
          );
          const state = `negotiated extensions ${JSON.stringify(client.ws.extensions)}; upstream got ${session.messages.length}, client ${client.messages.length} of ${sent.length}; client close ${JSON.stringify(client.closed)}, upstream close ${JSON.stringify(session.closed)}`;
          assert.deepEqual(
            session.messages.map(describeMessage),
            sent.map((m) => describeMessage({ ...m, at: 0 })),
            `client → upstream; ${state}`,
          );
          assert.deepEqual(
            client.messages.map(describeMessage),
            sent.map((m) => describeMessage({ ...m, at: 0 })),
            `upstream → client; ${state}`,
          );
        } finally {
          client.close(1000);
          await client.waitClosed(2_000);
        }
      },
    );
  }

  test(
    'messages the upstream sends unprompted reach the client in order (burst of 200)',
    { timeout: 15_000 },
    async () => {
      const before = upstream.sessions.length;
      upstream.onSession = (session) => {
        for (let i = 0; i < 200; i++)
          session.send(i % 3 === 0 ? randomBytes(i * 37) : `event ${i} ${'y'.repeat(i * 11)}`, i % 3 === 0);
      };
      try {
        const client = await WsClient.open(proxy.port);
        try {
          const session = await nextSession(upstream, before);
          assert.ok(await client.waitForMessages(200, 10_000), `got ${client.messages.length} of 200`);
          assert.deepEqual(client.messages.map(describeMessage), session.sent.map(describeMessage));
        } finally {
          client.close(1000);
          await client.waitClosed(2_000);
        }
      } finally {
        upstream.onSession = null;
      }
    },
  );

  test('a message the client sends in fragments reaches the upstream as one message', { timeout: 10_000 }, async () => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port, { perMessageDeflate: false });
    try {
      const session = await nextSession(upstream, before);
      client.ws.send('{"type":"resp', { fin: false, binary: false });
      client.ws.send('', { fin: false, binary: false });
      client.ws.send('onse.create","input":"fragmented"}', { fin: true, binary: false });
      client.ws.send(Buffer.from([1, 2]), { fin: false, binary: true });
      client.ws.send(Buffer.from([3]), { fin: true, binary: true });
      assert.ok(await session.waitForMessages(2, 3_000), `the upstream got ${session.messages.length} messages`);
      assert.deepEqual(
        session.messages.map(
          (m) => `${m.isBinary ? 'binary' : 'text'}:${m.isBinary ? m.data.toString('hex') : m.data.toString()}`,
        ),
        ['text:{"type":"response.create","input":"fragmented"}', 'binary:010203'],
      );
      await until(() => client.messages.length >= 9, 3_000);
      assert.equal(client.json().at(-1)?.type, 'response.completed', 'the reassembled response.create was answered');
    } finally {
      client.close(1000);
      await client.waitClosed(2_000);
    }
  });

  test(
    'invalid UTF-8 in a client text message: the client is closed (1007) and the bytes never reach the upstream',
    { timeout: 10_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port, { perMessageDeflate: false });
      const session = await nextSession(upstream, before);
      client.send('valid first');
      await client.next(0, 1, 2_000);
      client.ws.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false }); // ws does not validate what it sends
      const closed = await client.waitClosed(3_000);
      const upstreamClosed = await session.waitClosed(3_000);
      t.diagnostic(`client saw ${JSON.stringify(closed)}, upstream ${JSON.stringify(upstreamClosed)}`);
      assert.equal(closed?.code, 1007);
      assert.ok(upstreamClosed, 'the upstream socket stayed open');
      assert.deepEqual(
        session.messages.map((m) => m.data.toString('hex')),
        [Buffer.from('valid first').toString('hex')],
        'the invalid message reached the upstream',
      );
    },
  );

  test(
    'invalid UTF-8 in an upstream text message never reaches the client as text; both sockets close',
    { timeout: 10_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      // This client would accept the invalid text, so only the proxy can keep it out.
      const client = await WsClient.open(proxy.port, { perMessageDeflate: false, skipUTF8Validation: true });
      const session = await nextSession(upstream, before);
      session.socket.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false });
      const closed = await client.waitClosed(3_000);
      const upstreamClosed = await session.waitClosed(3_000);
      t.diagnostic(`client saw ${JSON.stringify(closed)}, upstream ${JSON.stringify(upstreamClosed)}`);
      assert.equal(upstreamClosed?.code, 1007, 'the proxy closes the upstream that sent invalid UTF-8 with 1007');
      assert.ok(closed, 'the client stayed open');
      assert.deepEqual(client.messages, [], 'the invalid text reached the client');
    },
  );

  test("ping is answered per hop: the client's by the proxy, the upstream's too", { timeout: 10_000 }, async () => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port);
    try {
      const session = await nextSession(upstream, before);
      client.ws.ping(Buffer.from('client-ping'));
      assert.ok(
        await until(() => client.pongs.some((p) => p.toString() === 'client-ping'), 2_000),
        "the client's ping got no pong",
      );
      session.socket.ping(Buffer.from('upstream-ping'));
      assert.ok(
        await until(() => session.pongs.some((p) => p.toString() === 'upstream-ping'), 2_000),
        "the upstream's ping got no pong",
      );
      // The socket still works afterwards.
      client.send('after pings');
      assert.equal((await client.next(0, 1, 2_000))[0]?.data.toString(), 'after pings');
    } finally {
      client.close(1000);
      await client.waitClosed(2_000);
    }
  });

  test(
    `a message over --ws-max-message-bytes closes the client with 1009 and the upstream socket too`,
    { timeout: 20_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      client.send('before');
      await client.next(0, 1, 2_000);
      const sentAt = performance.now();
      client.send(randomBytes(MAX_MESSAGE + 1), true);
      const closed = await client.waitClosed(10_000);
      assert.ok(closed, 'the client was not closed');
      assert.equal(closed.code, 1009, `client close ${closed.code} ${JSON.stringify(closed.reason)}`);
      const upstreamClosed = await session.waitClosed(3_000);
      assert.ok(upstreamClosed, 'the upstream socket stayed open');
      t.diagnostic(
        `client closed ${(closed.at - sentAt).toFixed(0)} ms after sending; upstream saw close ${upstreamClosed.code} ${JSON.stringify(upstreamClosed.reason)}`,
      );
      assert.ok(
        session.messages.every((m) => m.data.length <= MAX_MESSAGE),
        'the oversized message reached the upstream',
      );
    },
  );

  test(
    'an upstream message over --ws-max-message-bytes closes the upstream with 1009 and the client the same way',
    { timeout: 20_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      session.send(randomBytes(MAX_MESSAGE + 1), true);
      const upstreamClosed = await session.waitClosed(10_000);
      const clientClosed = await client.waitClosed(3_000);
      t.diagnostic(`upstream saw ${JSON.stringify(upstreamClosed)}, client ${JSON.stringify(clientClosed)}`);
      assert.equal(upstreamClosed?.code, 1009, 'upstream close code');
      assert.equal(clientClosed?.code, 1009, 'client close code');
      assert.ok(
        client.messages.every((m) => m.data.length <= MAX_MESSAGE),
        'the oversized message reached the client',
      );
    },
  );

  test(
    'flow control, upstream → client: a client that stops reading holds the upstream back; nothing is lost when it resumes',
    { timeout: 30_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      const rssBefore = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid());
      client.ws.pause();
      const count = 64;
      for (let i = 0; i < count; i++) session.send(Buffer.alloc(1024 * 1024, i), true);
      await sleep(800);
      const held = session.socket.bufferedAmount;
      const grown = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid()) - rssBefore;
      t.diagnostic(
        `client paused: ${(held / 1048576).toFixed(1)} MiB still queued at the upstream, proxy RSS ${(rssBefore / 1024).toFixed(1)} MiB +${(grown / 1024).toFixed(1)} MiB, client got ${client.messages.length} messages`,
      );
      client.ws.resume();
      assert.ok(
        await client.waitForMessages(count, 15_000),
        `after resuming the client got ${client.messages.length} of ${count}`,
      );
      assert.deepEqual(
        client.messages.map((m) => `${m.data.length}:${m.data[0]}:${m.data[m.data.length - 1]}`),
        Array.from({ length: count }, (_, i) => `${1024 * 1024}:${i}:${i}`),
      );
      assert.ok(
        held > 32 * 1024 * 1024,
        `only ${(held / 1048576).toFixed(1)} MiB were held back at the upstream: the proxy buffered the rest`,
      );
      assert.ok(grown < 48 * 1024, `the proxy grew by ${(grown / 1024).toFixed(1)} MiB while the client did not read`);
      client.close(1000);
      await client.waitClosed(2_000);
    },
  );

  test(
    'flow control, client → upstream: an upstream that stops reading holds the client back; nothing is lost when it resumes',
    { timeout: 30_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      upstream.onMessage = () => {};
      try {
        const rssBefore = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid());
        session.socket.pause();
        const count = 64;
        for (let i = 0; i < count; i++) client.send(Buffer.alloc(1024 * 1024, i), true);
        await sleep(800);
        const held = client.ws.bufferedAmount;
        const grown = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid()) - rssBefore;
        t.diagnostic(
          `upstream paused: ${(held / 1048576).toFixed(1)} MiB still queued at the client, proxy RSS ${(rssBefore / 1024).toFixed(1)} MiB +${(grown / 1024).toFixed(1)} MiB, upstream got ${session.messages.length} messages`,
        );
        session.socket.resume();
        assert.ok(
          await session.waitForMessages(count, 15_000),
          `after resuming the upstream got ${session.messages.length} of ${count}`,
        );
        assert.deepEqual(
          session.messages.map((m) => `${m.data.length}:${m.data[0]}:${m.data[m.data.length - 1]}`),
          Array.from({ length: count }, (_, i) => `${1024 * 1024}:${i}:${i}`),
        );
        assert.ok(
          held > 32 * 1024 * 1024,
          `only ${(held / 1048576).toFixed(1)} MiB were held back at the client: the proxy buffered the rest`,
        );
        assert.ok(
          grown < 48 * 1024,
          `the proxy grew by ${(grown / 1024).toFixed(1)} MiB while the upstream did not read`,
        );
      } finally {
        upstream.onMessage = answerOrEcho;
        client.close(1000);
        await client.waitClosed(2_000);
      }
    },
  );

  // Every message costs credit beyond its bytes: empty ones used to cost nothing (HTTP/2's empty-frames flood).
  // Kernel buffers on the way take megabytes of frames, and the work of passing
  // them on grows each process's heap by an amount that depends on the machine;
  // what credit bounds is the growth beyond that: a second, larger flood adds
  // next to nothing (figures in docs/PERFORMANCE.md, sixth session).
  const EMPTY_FLOOD = 500_000;
  const MORE_EMPTY = 1_000_000;

  test(
    'flow control counts messages: after half a million empty messages towards an upstream that does not read, a million more grow the proxy by < 24 MiB, and all arrive',
    { timeout: 60_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses');
      assert.equal(response.status, 101);
      const session = await nextSession(upstream, before);
      upstream.onMessage = () => {};
      const proxyRssKb = (): number => vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid());
      const frame = Buffer.from([0x81, 0x80, 1, 2, 3, 4]); // FIN, text, masked, no payload
      const frames = (count: number): Buffer => {
        const bytes = Buffer.alloc(frame.length * count);
        for (let at = 0; at < bytes.length; at += frame.length) frame.copy(bytes, at);
        return bytes;
      };
      try {
        const rssBefore = proxyRssKb();
        session.socket.pause();
        conn.write(frames(EMPTY_FLOOD));
        await sleep(1_000);
        const first = proxyRssKb() - rssBefore;
        conn.write(frames(MORE_EMPTY));
        await sleep(1_500);
        const more = proxyRssKb() - rssBefore - first;
        const held = conn.unsentBytes; // the kernel's buffers take megabytes: only a figure
        t.diagnostic(
          `upstream paused: proxy RSS +${(first / 1024).toFixed(1)} MiB after ${EMPTY_FLOOD} empty messages, ` +
            `+${(more / 1024).toFixed(1)} MiB more after ${MORE_EMPTY} more; ${held} bytes still queued at the client, ` +
            `upstream got ${session.messages.length}`,
        );
        session.socket.resume();
        const total = EMPTY_FLOOD + MORE_EMPTY;
        assert.ok(
          await session.waitForMessages(total, 40_000),
          `after resuming the upstream got ${session.messages.length} of ${total}`,
        );
        assert.ok(session.messages.every((m) => m.data.length === 0 && !m.isBinary));
        assert.ok(
          more < 24 * 1024,
          `${MORE_EMPTY} more empty messages grew the proxy by ${(more / 1024).toFixed(1)} MiB while the upstream did not read`,
        );
      } finally {
        upstream.onMessage = answerOrEcho;
        conn.close();
      }
    },
  );

  test(
    // The kernel's socket buffers take all of these 2-byte frames, so this proves the credit of each comes back, not the bound.
    'flow control counts messages: 100,000 empty messages from the upstream all reach a client that paused, none lost',
    { timeout: 60_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      const rssBefore = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid());
      client.ws.pause();
      const empty = Buffer.alloc(0);
      const count = EMPTY_FLOOD / 5;
      for (let i = 0; i < count; i++) session.socket.send(empty, { binary: false });
      await sleep(1_000);
      const grown = vmRssKb(proxy.pid) + vmRssKb(proxy.workerPid()) - rssBefore;
      t.diagnostic(`client paused: proxy RSS +${(grown / 1024).toFixed(1)} MiB, client got ${client.messages.length}`);
      client.ws.resume();
      assert.ok(
        await client.waitForMessages(count, 30_000),
        `after resuming the client got ${client.messages.length} of ${count}`,
      );
      assert.ok(client.messages.every((m) => m.data.length === 0 && !m.isBinary));
      client.close(1000);
      await client.waitClosed(2_000);
    },
  );

  test(
    'one log line per WebSocket when it ends: GET /v1/responses, status 101, message bytes each way, the close code',
    { timeout: 10_000 },
    async () => {
      const client = await WsClient.open(proxy.port);
      client.send('abc');
      await client.next(0, 1, 2_000);
      client.send(Buffer.from([1, 2, 3, 4, 5]), true);
      await client.next(1, 1, 2_000);
      client.close(4000, 'log me');
      await client.waitClosed(2_000);
      const mine = (): LogRecord | undefined =>
        jsonRecords(proxy.stderr).find(
          (r) => r.msg === 'request' && r.status === 101 && r.closeCode === 4000 && r.bytesIn === 8,
        );
      assert.ok(
        await until(() => mine() !== undefined, 2_000),
        `no matching log line in: ${jsonRecords(proxy.stderr)
          .filter((r) => r.msg === 'request' && r.status === 101)
          .slice(-3)
          .map((r) => JSON.stringify(r))
          .join('\n')}`,
      );
      const line = mine() as LogRecord;
      assert.equal(line.method, 'GET');
      assert.equal(line.path, '/v1/responses');
      assert.equal(line.bytesOut, 8);
      assert.equal(typeof line.durationMs, 'number');
      assert.ok(!proxy.stderr.includes(TEST_KEY), 'the key is in the log');
    },
  );

  test(
    "refusals pass through: 401, 404, 426 with the upstream's status, content-type and body",
    { timeout: 15_000 },
    async () => {
      const cases = [
        {
          status: 401,
          type: 'application/json',
          body: JSON.stringify({
            error: { message: 'bad key', type: 'invalid_request_error', code: 'invalid_api_key', param: null },
          }),
        },
        {
          status: 404,
          type: 'application/json',
          body: JSON.stringify({
            error: {
              message: 'WebSocket mode is not available',
              type: 'invalid_request_error',
              code: null,
              param: null,
            },
          }),
        },
        {
          status: 426,
          type: 'text/plain; charset=utf-8',
          body: 'Upgrade Required: use responses_websockets=2026-02-06',
        },
      ];
      try {
        for (const c of cases) {
          upstream.refusal = {
            status: c.status,
            body: c.body,
            headers: { 'content-type': c.type, 'x-request-id': `req_refused_${c.status}` },
          };
          const refused = await WsClient.refused(proxy.port, {
            headers: { 'openai-beta': 'responses_websockets=2026-02-06' },
          });
          assert.equal(refused.status, c.status);
          assert.equal(refused.body, c.body, `${c.status} body`);
          assert.equal(refused.headers['content-type'], c.type, `${c.status} content-type`);
          assert.equal(upstream.handshakes.at(-1)?.status, c.status, 'the refusal came from the upstream');
        }
      } finally {
        upstream.refusal = null;
      }
      const client = await WsClient.open(proxy.port);
      client.close(1000);
      assert.ok(await client.waitClosed(2_000), 'after the refusals a socket opens and closes normally');
    },
  );

  test('client close(4000, "bye") → the upstream sees 4000 "bye"', { timeout: 10_000 }, async () => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, before);
    client.close(4000, 'bye');
    const seen = await session.waitClosed(2_000);
    assert.deepEqual(seen && { code: seen.code, reason: seen.reason }, { code: 4000, reason: 'bye' });
    const own = await client.waitClosed(2_000);
    assert.ok(own, "the client's close handshake did not complete");
  });

  test('upstream close(4001, "later") → the client sees 4001 "later"', { timeout: 10_000 }, async () => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, before);
    session.socket.close(4001, 'later');
    const seen = await client.waitClosed(2_000);
    assert.deepEqual(seen && { code: seen.code, reason: seen.reason }, { code: 4001, reason: 'later' });
    assert.ok(await session.waitClosed(2_000), "the upstream's close handshake did not complete");
  });

  test('a 123-byte close reason survives both ways', { timeout: 10_000 }, async () => {
    const reason = 'r'.repeat(120) + 'é!'; // 123 bytes
    const before = upstream.sessions.length;
    const a = await WsClient.open(proxy.port);
    const sa = await nextSession(upstream, before);
    a.close(4002, reason);
    assert.deepEqual((await sa.waitClosed(2_000))?.reason, reason);
    const b = await WsClient.open(proxy.port);
    const sb = await nextSession(upstream, before + 1);
    sb.socket.close(4003, reason);
    const seen = await b.waitClosed(2_000);
    assert.deepEqual(seen && { code: seen.code, reason: seen.reason }, { code: 4003, reason });
  });

  test(
    'client terminate() (TCP drop, no close frame, like Codex at exit) → the upstream socket closes within 1 s',
    { timeout: 10_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const client = await WsClient.open(proxy.port);
      const session = await nextSession(upstream, before);
      await client.turn({ model: 'gpt-test', input: 'hi' });
      const droppedAt = performance.now();
      client.terminate();
      const seen = await session.waitClosed(2_000);
      assert.ok(seen, 'the upstream socket was still open 2 s after the client dropped');
      const ms = seen.at - droppedAt;
      t.diagnostic(
        `upstream saw close ${seen.code} ${JSON.stringify(seen.reason)} ${ms.toFixed(0)} ms after the client dropped`,
      );
      assert.ok([1001, 1006].includes(seen.code), `close code ${seen.code}`);
      assert.ok(ms < 1_000, `the upstream socket closed after ${ms.toFixed(0)} ms`);
    },
  );

  test('upstream terminate() → the client sees 1006 within 1 s', { timeout: 10_000 }, async (t: TestContext) => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, before);
    const droppedAt = performance.now();
    session.socket.terminate();
    const seen = await client.waitClosed(2_000);
    assert.ok(seen, 'the client was still open 2 s after the upstream dropped');
    const ms = seen.at - droppedAt;
    t.diagnostic(
      `client saw close ${seen.code} ${JSON.stringify(seen.reason)} ${ms.toFixed(0)} ms after the upstream dropped`,
    );
    assert.equal(seen.code, 1006);
    assert.ok(ms < 1_000, `the client closed after ${ms.toFixed(0)} ms`);
  });

  test('100 concurrent sockets, 3 turns and an echo each, all correct', { timeout: 40_000 }, async (t: TestContext) => {
    const before = upstream.sessions.length;
    upstream.answer = (create) => `answer to ${String(create.input)}`;
    const clients: WsClient[] = [];
    let allClosed = false;
    try {
      const started = performance.now();
      const opened = await Promise.allSettled(
        Array.from({ length: 100 }, () => WsClient.open(proxy.port, { timeoutMs: 10_000 })),
      );
      for (const o of opened) if (o.status === 'fulfilled') clients.push(o.value);
      const failures = opened
        .filter((o) => o.status === 'rejected')
        .map((o) => String((o as PromiseRejectedResult).reason));
      assert.deepEqual(failures, [], 'every socket opens');
      t.diagnostic(`100 sockets open in ${(performance.now() - started).toFixed(0)} ms`);
      const wrong: string[] = [];
      await Promise.all(
        clients.map(async (client, i) => {
          for (let k = 1; k <= 3; k++) {
            const events = await client.turn({ model: 'gpt-test', input: `socket ${i} turn ${k}` }, 20_000);
            const text = completedText(events);
            if (text !== `answer to socket ${i} turn ${k}`) wrong.push(`socket ${i} turn ${k}: ${text}`);
          }
          const payload = randomBytes(1000 + i);
          const from = client.messages.length;
          client.send(payload, true);
          const [echo] = await client.next(from, 1, 20_000);
          if (!echo?.isBinary || !echo.data.equals(payload)) wrong.push(`socket ${i}: binary echo differs`);
        }),
      );
      t.diagnostic(`300 turns and 100 echoes in ${(performance.now() - started).toFixed(0)} ms`);
      assert.deepEqual(wrong, []);
      assert.equal(upstream.sessions.length - before, 100, 'one upstream socket per client socket');
      assert.ok(
        upstream.sessions.slice(before).every((s) => s.creates.length === 3),
        'each upstream socket carried its own 3 turns',
      );
    } finally {
      upstream.answer = DEFAULT_ANSWER;
      for (const c of clients) c.close(1000);
      allClosed = await until(() => upstream.sessions.slice(before).every((s) => s.closed !== null), 10_000);
    }
    assert.ok(
      allClosed,
      `${upstream.sessions.slice(before).filter((s) => s.closed === null).length} upstream sockets still open after the clients closed`,
    );
  });

  test(
    'the worker dying closes its sessions: the upstream sockets close, the client is dropped, and a new worker relays again',
    { timeout: 20_000 },
    async (t: TestContext) => {
      const before = upstream.sessions.length;
      const clients = [await WsClient.open(proxy.port), await WsClient.open(proxy.port)];
      assert.ok(await upstream.waitForSessions(before + 2, 5_000));
      const worker = proxy.workerPid();
      const killedAt = performance.now();
      process.kill(worker, 'SIGKILL');
      const upstreamClosed = await until(() => upstream.sessions.slice(before).every((s) => s.closed !== null), 3_000);
      const clientsClosed = await until(() => clients.every((c) => c.closed !== null), 3_000);
      t.diagnostic(
        `after the worker's SIGKILL: upstream saw ${JSON.stringify(upstream.sessions.slice(before).map((s) => s.closed && { code: s.closed.code, reason: s.closed.reason, ms: Math.round(s.closed.at - killedAt) }))}; clients saw ${JSON.stringify(clients.map((c) => c.closed && { code: c.closed.code, ms: Math.round(c.closed.at - killedAt) }))}`,
      );
      assert.ok(upstreamClosed, 'an upstream socket outlived its worker by 3 s');
      assert.deepEqual(
        upstream.sessions.slice(before).map((s) => s.closed?.code),
        [1001, 1001],
        'the upstream sockets of the lost sessions are closed with 1001',
      );
      assert.ok(clientsClosed, 'a client socket stayed open after its worker died');
      assert.ok(
        await until(() => {
          try {
            return proxy.workerPid() !== worker;
          } catch {
            return false;
          }
        }, 5_000),
        'no new worker',
      );
      strays.add(proxy.workerPid());
      let client: WsClient | null = null;
      const deadline = performance.now() + 5_000;
      while (client === null && performance.now() < deadline) {
        try {
          client = await WsClient.open(proxy.port, { timeoutMs: 2_000 });
        } catch {
          await sleep(50);
        }
      }
      assert.ok(client, 'no WebSocket through the new worker');
      const events = await client.turn({ model: 'gpt-test', input: 'after restart' });
      assert.equal(events.at(-1)?.type, 'response.completed');
      client.close(1000);
      await client.waitClosed(2_000);
    },
  );
});

// ---------------------------------------------------------------- the upstream URL

describe('--websocket: the upstream URL', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  before(async () => {
    upstream = await WsUpstream.start();
  });
  after(async () => {
    await upstream?.close();
  });

  test('http://host:port/path?query → ws://host:port/path?query (path and query kept)', async () => {
    const proxy = await startProxy(upstream.url('/v1/responses?api-version=2025-04-01-preview&x=%2F'), ['--websocket']);
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, 0);
    assert.equal(session.handshake.url, '/v1/responses?api-version=2025-04-01-preview&x=%2F');
    assert.deepEqual(session.header('host'), [`127.0.0.1:${upstream.port}`]);
    client.close(1000);
    await client.waitClosed(2_000);
  });

  test(
    'an upstream that never answers the upgrade → 504 after --upstream-timeout, with an OpenAI-shaped JSON error',
    { timeout: 15_000 },
    async (t: TestContext) => {
      const held: Socket[] = [];
      const silent = createNetServer((socket) => {
        held.push(socket);
        socket.on('error', () => {});
        socket.resume();
      });
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      try {
        const port = (silent.address() as AddressInfo).port;
        const proxy = await startProxy(`http://127.0.0.1:${port}/v1/responses`, [
          '--websocket',
          '--upstream-timeout',
          '1',
        ]);
        const started = performance.now();
        const refused = await WsClient.refused(proxy.port, { timeoutMs: 8_000 });
        const ms = performance.now() - started;
        t.diagnostic(`${refused.status} after ${ms.toFixed(0)} ms: ${refused.body}`);
        assert.equal(refused.status, 504);
        assert.ok(ms >= 900 && ms < 4_000, `answered after ${ms.toFixed(0)} ms`);
        assert.match(String(refused.headers['content-type']), /^application\/json/);
        const parsed = JSON.parse(refused.body) as { error?: { message?: unknown } };
        assert.equal(typeof parsed.error?.message, 'string', refused.body);
        assert.ok(held.length >= 1, 'the proxy did not connect to the silent upstream');
      } finally {
        for (const socket of held) socket.destroy();
        await new Promise<void>((resolve) => silent.close(() => resolve()));
      }
    },
  );

  test('upstream unreachable (closed port) → 502 with an OpenAI-shaped JSON error, no key in it', async () => {
    const closed = reserveClosedPort();
    try {
      const proxy = await startProxy(`http://127.0.0.1:${closed.port}/v1/responses`, ['--websocket']);
      const refused = await WsClient.refused(proxy.port);
      assert.equal(refused.status, 502);
      assert.match(String(refused.headers['content-type']), /^application\/json/);
      assert.ok(!refused.body.includes(TEST_KEY));
      const parsed = JSON.parse(refused.body) as { error?: { message?: unknown; type?: unknown; code?: unknown } };
      assert.equal(typeof parsed.error?.message, 'string', refused.body);
      assert.equal(typeof parsed.error?.type, 'string', refused.body);
      assert.equal(typeof parsed.error?.code, 'string', refused.body);
    } finally {
      closed.release();
    }
  });
});

// ---------------------------------------------------------------- compression is per hop

describe('--websocket: an upstream that accepts permessage-deflate', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start({ perMessageDeflate: true });
    proxy = await startProxy(upstream.url(), ['--websocket']);
  });
  after(async () => {
    await upstream?.close();
  });

  test("the extension is negotiated per hop: the client is not told of the upstream's, and messages stay byte-exact", async (t: TestContext) => {
    const client = await WsClient.open(proxy.port, { perMessageDeflate: true });
    const session = await nextSession(upstream, 0);
    t.diagnostic(
      `client hop: ${JSON.stringify(client.ws.extensions)}; upstream hop offered ${JSON.stringify(session.header('sec-websocket-extensions'))}, negotiated ${JSON.stringify(session.socket.extensions)}`,
    );
    assert.ok(
      session.socket.extensions.includes('permessage-deflate'),
      'compression is offered upstream (README), and this upstream accepts it',
    );
    assert.equal(
      client.upgradeHeaders['sec-websocket-extensions'],
      undefined,
      "the upstream's Sec-WebSocket-Extensions was mirrored to the client",
    );
    assert.equal(client.ws.extensions, '', 'no compression on the loopback hop (README)');
    const sent = [
      { data: Buffer.from(textOf(1024 * 1024, 5)), isBinary: false },
      { data: randomBytes(256 * 1024), isBinary: true },
      { data: Buffer.from('{"type":"response.create","generate":false}'), isBinary: false },
    ];
    for (const m of sent) client.send(m.isBinary ? m.data : m.data.toString('utf8'), m.isBinary);
    assert.ok(
      await client.waitForMessages(4, 10_000),
      `got ${client.messages.length} messages; close ${JSON.stringify(client.closed)}`,
    );
    assert.deepEqual(
      session.messages.map(describeMessage),
      sent.map((m) => describeMessage({ ...m, at: 0 })),
    );
    assert.deepEqual(
      client.messages.slice(0, 2).map(describeMessage),
      sent.slice(0, 2).map((m) => describeMessage({ ...m, at: 0 })),
    );
    assert.deepEqual(
      client.json(2).map((e) => e.type),
      ['response.created', 'response.completed'],
    );
    client.close(1000);
    await client.waitClosed(2_000);
  });
});

// ---------------------------------------------------------------- idle timeout

describe('--ws-idle-timeout 0.5', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--ws-idle-timeout', '0.5']);
  });
  after(async () => {
    await upstream?.close();
  });

  test('traffic keeps a socket open; ~0.5 s without a message either way closes both sides with 1001', async (t: TestContext) => {
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, 0);
    // 1.2 s of a message every 200 ms, alternating who sends.
    for (let i = 0; i < 6; i++) {
      const from = client.messages.length;
      if (i % 2 === 0) client.send(`tick ${i}`);
      else session.send(`tock ${i}`);
      await client.next(from, 1, 2_000);
      await sleep(200);
    }
    assert.equal(client.closed, null, `closed while traffic flowed: ${JSON.stringify(client.closed)}`);
    assert.equal(session.closed, null, `upstream closed while traffic flowed: ${JSON.stringify(session.closed)}`);
    const lastMessage = Math.max(client.messages.at(-1)?.at ?? 0, session.messages.at(-1)?.at ?? 0);
    const closed = await client.waitClosed(3_000);
    assert.ok(closed, 'still open 3 s after the last message');
    const upstreamClosed = await session.waitClosed(2_000);
    assert.ok(upstreamClosed, 'the upstream socket stayed open');
    t.diagnostic(
      `client closed ${(closed.at - lastMessage).toFixed(0)} ms after the last message (${closed.code}), upstream ${(upstreamClosed.at - lastMessage).toFixed(0)} ms (${upstreamClosed.code})`,
    );
    assert.equal(closed.code, 1001, `client close ${closed.code} ${JSON.stringify(closed.reason)}`);
    assert.equal(
      upstreamClosed.code,
      1001,
      `upstream close ${upstreamClosed.code} ${JSON.stringify(upstreamClosed.reason)}`,
    );
    assert.ok(closed.at - lastMessage >= 350, `closed after only ${(closed.at - lastMessage).toFixed(0)} ms idle`);
    assert.ok(closed.at - lastMessage <= 2_000, `closed after ${(closed.at - lastMessage).toFixed(0)} ms idle`);
  });
});

// ---------------------------------------------------------------- --max-concurrent

describe('--websocket: client messages held at once', { timeout: 60_000 }, () => {
  const MAX = 4 * 1024 * 1024; // --ws-max-message-bytes: the worker holds at most 4 x MAX of them
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    upstream.onMessage = () => {};
    proxy = await startProxy(upstream.url(), ['--websocket', '--ws-max-message-bytes', String(MAX)]);
  });
  after(async () => {
    await upstream?.close();
  });

  test('the budget: past it only the first holder reads on; the others wait until the line moves', () => {
    const budget = new MessageBudget(10);
    const readOn: string[] = [];
    const holder = (name: string): MessageHolder => ({ readOn: () => readOn.push(name) });
    const [a, b, c] = [holder('a'), holder('b'), holder('c')];
    assert.equal(budget.hold(a, 6), true);
    assert.equal(budget.hold(b, 3), true);
    assert.equal(budget.hold(c, 3), false, 'over the budget, and not the first holder');
    assert.equal(budget.hold(a, 8), true, 'the first holder reads on past the budget');
    assert.equal(budget.hold(b, 4), false);
    budget.hold(a, 0); // its message went on: 7 held, within the budget
    assert.deepEqual(readOn.sort(), ['b', 'c']);
    assert.equal(budget.hold(c, 9), false, 'b began holding before c');
    budget.hold(b, 5); // still over the budget; b is now the first holder
    budget.hold(c, 0); // c closed while waiting: b, first and reading, is not waiting
    assert.deepEqual(readOn.sort(), ['b', 'c']);
    assert.equal(budget.hold(c, 11), false);
    budget.hold(b, 0); // c is now first: it reads on though still over the budget
    assert.deepEqual(readOn, ['b', 'c', 'c']);
  });

  test('16 clients each sending all but the last byte of a MAX-byte message: the worker holds about 4 x MAX; all arrive whole', async (t: TestContext) => {
    const count = 16;
    const before = upstream.sessions.length;
    const conns = await Promise.all(
      Array.from({ length: count }, async () => {
        const { response, conn } = await rawUpgrade(proxy.port, '/v1/responses');
        assert.equal(response.status, 101);
        return conn;
      }),
    );
    assert.ok(await until(() => upstream.sessions.length >= before + count, 5_000), 'every upstream socket open');
    // One binary frame of MAX bytes, masked with a zero key (the payload as it is).
    const header = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.writeBigUInt64BE(BigInt(MAX), 2);
    const payload = Buffer.alloc(MAX, 0x5a);
    const worker = proxy.workerPid();
    const start = vmRssKb(worker);
    for (const conn of conns) conn.write(Buffer.concat([header, payload.subarray(0, MAX - 1)]));
    await sleep(1_500);
    const grown = (vmRssKb(worker) - start) / 1024;
    t.diagnostic(
      `${count} messages of ${MAX / 1048576} MiB but the last byte: the worker grew ${grown.toFixed(1)} MiB`,
    );
    for (const conn of conns) conn.write(payload.subarray(MAX - 1));
    const sessions = upstream.sessions.slice(before, before + count);
    const arrived = (): number => sessions.filter((s) => s.messages.length === 1).length;
    assert.ok(await until(() => arrived() === count, 30_000), `${arrived()} of ${count} messages arrived`);
    assert.ok(
      sessions.every((s) => s.messages[0]?.data.equals(payload)),
      'every message arrived whole',
    );
    for (const conn of conns) conn.close();
    assert.ok(grown < 6 * (MAX / 1048576), `the worker grew ${grown.toFixed(1)} MiB (holds at most 4 x ${MAX} B)`);
  });
});

describe('--websocket with --max-concurrent 2', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--max-concurrent', '2']);
  });
  after(async () => {
    await upstream?.close();
  });

  test('a third simultaneous socket gets 503 with a JSON error; after one closes a new one is accepted', async (t: TestContext) => {
    const a = await WsClient.open(proxy.port);
    const b = await WsClient.open(proxy.port);
    assert.ok(await upstream.waitForSessions(2, 5_000));
    const refused = await WsClient.refused(proxy.port);
    t.diagnostic(
      `third socket: ${refused.status} retry-after=${String(refused.headers['retry-after'])} ${refused.body}`,
    );
    assert.equal(refused.status, 503);
    assert.match(String(refused.headers['content-type']), /^application\/json/);
    const parsed = JSON.parse(refused.body) as { error?: { message?: unknown } };
    assert.equal(typeof parsed.error?.message, 'string');
    await sleep(100);
    assert.equal(upstream.handshakes.length, 2, 'the refused socket reached the upstream');

    a.close(1000);
    assert.ok(await upstream.sessions[0]?.waitClosed(2_000), 'the first socket did not close upstream');
    let c: WsClient | null = null;
    const deadline = performance.now() + 2_000;
    while (c === null && performance.now() < deadline) {
      try {
        c = await WsClient.open(proxy.port);
      } catch {
        await sleep(20);
      }
    }
    assert.ok(c, 'no new socket accepted within 2 s of one closing');
    const events = await c.turn({ model: 'gpt-test', input: 'third' });
    assert.equal(events.at(-1)?.type, 'response.completed');
    b.close(1000);
    c.close(1000);
    await until(() => upstream.openSessions.length === 0, 2_000);
  });

  test('open WebSockets count against the same limit as HTTP requests: with 2 open, a POST gets 503', async () => {
    const a = await WsClient.open(proxy.port);
    const b = await WsClient.open(proxy.port);
    try {
      const reply = await send(proxy.port, {
        headers: { 'content-type': 'application/json' },
        body: '{"model":"gpt-test","input":"x"}',
      });
      assert.equal(reply.status, 503);
    } finally {
      a.close(1000);
      b.close(1000);
      await until(() => a.closed !== null && b.closed !== null, 2_000);
      await until(() => upstream.openSessions.length === 0, 2_000);
    }
    const reply = await send(proxy.port, {
      headers: { 'content-type': 'application/json' },
      body: '{"model":"gpt-test","input":"x"}',
    });
    assert.equal(reply.status, 200, 'with the sockets closed, a POST goes through');
  });
});

// ---------------------------------------------------------------- graceful shutdown

describe('--websocket: graceful shutdown', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  before(async () => {
    upstream = await WsUpstream.start();
  });
  after(async () => {
    await upstream?.close();
  });

  for (const how of ['GET /shutdown', 'SIGTERM'] as const) {
    test(`${how} with open sockets: client and upstream both see 1001, exit 0 well under --shutdown-timeout`, async (t: TestContext) => {
      const proxy = await startProxy(upstream.url(), ['--websocket', '--http-shutdown', '--shutdown-timeout', '10']);
      const before = upstream.sessions.length;
      const clients = [await WsClient.open(proxy.port), await WsClient.open(proxy.port)];
      assert.ok(await upstream.waitForSessions(before + 2, 5_000));
      const sessions = upstream.sessions.slice(before);
      await clients[0]!.turn({ model: 'gpt-test', input: 'before shutdown' });
      const started = performance.now();
      if (how === 'SIGTERM') proxy.child.kill('SIGTERM');
      else assert.equal((await send(proxy.port, { method: 'GET', path: '/shutdown' })).status, 200);
      const status = await proxy.waitForExit(5_000);
      const exitMs = performance.now() - started;
      assert.ok(
        await until(() => clients.every((c) => c.closed !== null) && sessions.every((s) => s.closed !== null), 2_000),
      );
      t.diagnostic(
        `exit ${JSON.stringify(status)} after ${exitMs.toFixed(0)} ms; clients ${JSON.stringify(clients.map((c) => c.closed?.code))}, upstream ${JSON.stringify(sessions.map((s) => s.closed?.code))}`,
      );
      assert.deepEqual(status, { code: 0, signal: null }, proxy.stderr);
      assert.ok(exitMs < 3_000, `exit took ${exitMs.toFixed(0)} ms`);
      assert.deepEqual(
        clients.map((c) => c.closed?.code),
        [1001, 1001],
        'clients',
      );
      assert.deepEqual(
        sessions.map((s) => s.closed?.code),
        [1001, 1001],
        'upstream',
      );
    });
  }
});

// ---------------------------------------------------------------- the key

/** An upstream that answers 'echo the key' with what it got as Authorization, in a text and a binary message. */
function echoKeyOf(upstream: () => WsUpstream): (session: WsSession, message: WsMessage) => void {
  return (session, message) => {
    if (message.data.toString() !== 'echo the key') return answerOrEcho(session, message, upstream());
    const auth = session.header('authorization')[0] ?? '';
    session.send(JSON.stringify({ type: 'echo', authorization: auth }), false);
    session.send(Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from(auth), Buffer.from([255])]), true);
  };
}

describe('--websocket: the key', { timeout: 60_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  before(async () => {
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket']);
  });
  after(async () => {
    await upstream?.close();
  });

  const echoKey = echoKeyOf(() => upstream);

  test(
    'a key in an upstream message reaches the client masked with * (text and binary, same length)',
    { timeout: 10_000 },
    async () => {
      upstream.onMessage = echoKey;
      try {
        const client = await WsClient.open(proxy.port);
        client.send('echo the key');
        const [text, binary] = await client.next(0, 2, 3_000);
        assert.equal(text?.isBinary, false);
        assert.equal(
          text?.data.toString(),
          JSON.stringify({ type: 'echo', authorization: `Bearer ${MASKED}` }),
          'text message',
        );
        assert.equal(binary?.isBinary, true);
        assert.ok(
          binary?.data.equals(
            Buffer.concat([Buffer.from([0, 1, 2]), Buffer.from(`Bearer ${MASKED}`), Buffer.from([255])]),
          ),
          `binary message: ${binary?.data.toString('latin1')}`,
        );
        client.close(1000);
        await client.waitClosed(2_000);
      } finally {
        upstream.onMessage = answerOrEcho;
      }
    },
  );

  test("a key in the upstream's 101 headers does not reach the client", { timeout: 10_000 }, async () => {
    upstream.upgradeHeaders = { 'x-echo-authorization': `Bearer ${TEST_KEY}` };
    try {
      const client = await WsClient.open(proxy.port);
      const all = JSON.stringify(client.upgradeHeaders);
      assert.ok(!all.includes(TEST_KEY), `the key is in the client's 101: ${all}`);
      client.close(1000);
      await client.waitClosed(2_000);
    } finally {
      upstream.upgradeHeaders = {};
    }
  });

  test('a key in an upstream refusal (body or headers) does not reach the client', { timeout: 10_000 }, async () => {
    upstream.refusal = {
      status: 401,
      body: JSON.stringify({
        error: {
          message: `Incorrect API key provided: ${TEST_KEY}`,
          type: 'invalid_request_error',
          code: 'invalid_api_key',
          param: null,
        },
      }),
      headers: { 'content-type': 'application/json', 'www-authenticate': `Bearer realm="${TEST_KEY}"` },
    };
    try {
      const refused = await WsClient.refused(proxy.port);
      assert.equal(refused.status, 401);
      assert.ok(!refused.body.includes(TEST_KEY), `the key is in the refusal body: ${refused.body}`);
      assert.ok(
        !JSON.stringify(refused.headers).includes(TEST_KEY),
        `the key is in the refusal headers: ${JSON.stringify(refused.headers)}`,
      );
      assert.ok(refused.body.includes(MASKED), 'masked in place, same length');
    } finally {
      upstream.refusal = null;
    }
  });

  test('a key in an upstream close reason does not reach the client', { timeout: 10_000 }, async () => {
    const before = upstream.sessions.length;
    const client = await WsClient.open(proxy.port);
    const session = await nextSession(upstream, before);
    session.socket.close(4005, `bad ${TEST_KEY}`);
    const seen = await client.waitClosed(2_000);
    assert.ok(seen, 'the client saw no close');
    assert.equal(seen.code, 4005);
    assert.ok(!seen.reason.includes(TEST_KEY), `the key is in the close reason: ${seen.reason}`);
  });

  test('nothing the proxy printed contains the key', async () => {
    await sleep(100);
    assert.ok(!proxy.stderr.includes(TEST_KEY), 'the key is on stderr');
    assert.ok(!proxy.stdout.includes(TEST_KEY), 'the key is on stdout');
  });
});

// A proxy of its own: the tests above put the key where a worker may see it
// (a close reason), which would pollute this scan.
describe("--websocket: the key never reaches the worker's memory", { timeout: 60_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess | null = null;
  before(async () => {
    upstream = await WsUpstream.start();
    if (IS_ROOT) proxy = await startProxy(upstream.url(), ['--websocket']);
  });
  after(async () => {
    await upstream?.close();
  });

  test(
    "after 40 WebSocket sessions whose upstream echoes the key, the worker's memory holds it zero times (root)",
    { timeout: 40_000 },
    async (t: TestContext) => {
      if (!IS_ROOT || proxy === null) return t.skip(NEEDS_ROOT);
      const port = proxy.port;
      upstream.onMessage = echoKeyOf(() => upstream);
      let leaked = 0;
      try {
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            for (let s = 0; s < 10; s++) {
              const client = await WsClient.open(port);
              for (let i = 0; i < 5; i++) {
                const from = client.messages.length;
                client.send('echo the key');
                for (const m of await client.next(from, 2, 3_000)) if (m.data.includes(TEST_KEY)) leaked++;
                await client.turn({ model: 'gpt-test', input: `turn ${i} ${'z'.repeat(i * 500)}` });
              }
              client.close(1000);
              await client.waitClosed(2_000);
            }
          }),
        );
      } finally {
        upstream.onMessage = answerOrEcho;
      }
      assert.equal(leaked, 0, 'the echoed key reached a client');
      const worker = proxy.workerPid();
      const keyLatin1 = scanProcessMemory(worker, Buffer.from(TEST_KEY, 'latin1'), {
        includeInaccessible: true,
        maxBytes: 1024 * 1024 * 1024,
      });
      const keyUtf16 = scanProcessMemory(worker, Buffer.from(TEST_KEY, 'utf16le'), {
        includeInaccessible: true,
        maxBytes: 1024 * 1024 * 1024,
      });
      const source = readFileSync(fileURLToPath(new URL('../src/worker/main.js', import.meta.url)), 'utf8');
      const slice = source.slice(Math.floor(source.length / 2), Math.floor(source.length / 2) + 48);
      const control = scanProcessMemory(
        worker,
        Buffer.from(slice, /[\u0100-\uffff]/.test(slice) ? 'utf16le' : 'latin1'),
        { includeInaccessible: true, maxBytes: 1024 * 1024 * 1024 },
      );
      const line = (what: string, scan: ScanResult): string =>
        `${what}: ${scan.occurrences.length} occurrence(s) in ${(scan.bytesScanned / 1048576).toFixed(1)} MiB, ${scan.mappingsRead} mappings${scan.truncated ? ', TRUNCATED' : ''}`;
      t.diagnostic(line('key (latin1)', keyLatin1));
      t.diagnostic(line('key (utf-16)', keyUtf16));
      t.diagnostic(line('control (worker source)', control));
      assert.ok(control.occurrences.length >= 1, "control: the scan does not find the worker's own source");
      assert.equal(keyLatin1.truncated, false);
      assert.deepEqual(
        keyLatin1.occurrences.map((o) => o.mapping),
        [],
        "the key is in the worker's memory",
      );
      assert.deepEqual(
        keyUtf16.occurrences.map((o) => o.mapping),
        [],
        "the key (UTF-16) is in the worker's memory",
      );
    },
  );
});

// ---------------------------------------------------------------- dumps

interface Dump {
  method?: string;
  url?: string;
  status?: number;
  headers: Array<{ name: string; value: string }>;
  body: unknown;
  body_truncated?: boolean;
  body_length?: number;
}

interface DumpedMessage {
  direction: 'client_to_upstream' | 'upstream_to_client';
  type: 'text' | 'binary' | 'close';
  data?: string;
  code?: number;
  reason?: string;
}

describe('--websocket with --dump-dir', { timeout: 30_000 }, () => {
  let upstream: WsUpstream;
  let proxy: ProxyProcess;
  let root: string;
  let dir: string;
  const files = (): string[] =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort();
  const read = (name: string): Dump => JSON.parse(readFileSync(join(dir, name), 'utf8')) as Dump;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'rap-ws-dumps-'));
    chmodSync(root, 0o755);
    dir = join(root, 'dumps');
    upstream = await WsUpstream.start();
    proxy = await startProxy(upstream.url(), ['--websocket', '--dump-dir', dir, '--dump-max-bytes', '4096']);
  });
  after(async () => {
    await upstream?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Open, run `body`, close with 1000, wait for the session's two dump files; returns them. */
  async function session(
    headers: Record<string, string>,
    body: (client: WsClient) => Promise<void>,
  ): Promise<{ request: Dump; response: Dump; names: string[] }> {
    const before = files().length;
    const client = await WsClient.open(proxy.port, { headers });
    await body(client);
    if (client.closed === null) client.close(4000, 'bye');
    assert.ok(await client.waitClosed(2_000), 'the client did not close');
    assert.ok(
      await until(() => files().length >= before + 2, 5_000),
      `no dump pair after the session: ${JSON.stringify(files().slice(before))}`,
    );
    const names = files().slice(before);
    assert.equal(names.length, 2, JSON.stringify(names));
    return { request: read(names[0]!), response: read(names[1]!), names };
  }

  async function echo(client: WsClient, data: string | Buffer): Promise<void> {
    const from = client.messages.length;
    client.send(data);
    await client.next(from, 1, 3_000);
  }

  test('a session: the handshake as the request, the messages and closes as the response body', async () => {
    const binary = Buffer.from([0, 1, 2, 253, 254, 255]);
    const { request, response, names } = await session(
      {
        Authorization: 'Bearer client-own',
        Cookie: 'a=1',
        'X-Cookie-Jar': 'c=3',
        'session-id': 's-1',
        'OpenAI-Beta': 'responses_websockets=2026-02-06',
      },
      async (client) => {
        await echo(client, 'hello dump');
        await echo(client, binary);
        await echo(client, '');
      },
    );
    assert.match(names[0]!, /^\d{6}-\d{13}-request\.json$/);
    assert.equal(names[1], names[0]!.replace('-request.json', '-response.json'));
    assert.equal(request.method, 'GET');
    assert.equal(request.url, '/v1/responses');
    assert.equal(request.body, '');
    const reqHeaders = new Map(request.headers.map((h) => [h.name.toLowerCase(), h.value]));
    assert.equal(reqHeaders.get('authorization'), '[REDACTED]');
    assert.equal(reqHeaders.get('cookie'), '[REDACTED]');
    assert.equal(reqHeaders.get('x-cookie-jar'), '[REDACTED]');
    assert.equal(reqHeaders.get('session-id'), 's-1');
    assert.equal(reqHeaders.get('openai-beta'), 'responses_websockets=2026-02-06');

    assert.equal(response.status, 101);
    const resHeaders = response.headers.map((h) => `${h.name.toLowerCase()}: ${h.value}`);
    assert.ok(
      resHeaders.some((h) => /^x-request-id: req_ws_\d+$/.test(h)),
      `the upstream's 101 headers: ${JSON.stringify(resHeaders)}`,
    );
    assert.ok(Array.isArray(response.body), `body is a list: ${JSON.stringify(response.body)}`);
    const entries = response.body as DumpedMessage[];
    const messages = entries
      .filter((e) => e.type !== 'close')
      .map((e) => ({ direction: e.direction, type: e.type, data: e.data }));
    assert.deepEqual(messages, [
      { direction: 'client_to_upstream', type: 'text', data: 'hello dump' },
      { direction: 'upstream_to_client', type: 'text', data: 'hello dump' },
      { direction: 'client_to_upstream', type: 'binary', data: binary.toString('base64') },
      { direction: 'upstream_to_client', type: 'binary', data: binary.toString('base64') },
      { direction: 'client_to_upstream', type: 'text', data: '' },
      { direction: 'upstream_to_client', type: 'text', data: '' },
    ]);
    const closes = entries.filter((e) => e.type === 'close');
    assert.ok(
      closes.some((e) => e.direction === 'client_to_upstream' && e.code === 4000 && e.reason === 'bye'),
      `the client's close (4000 "bye") is in the dump: ${JSON.stringify(closes)}`,
    );
    assert.equal(response.body_truncated, undefined);
  });

  test('more message data than --dump-max-bytes: body_truncated, body_length = all data bytes', async () => {
    const { response } = await session({}, async (client) => {
      for (let i = 0; i < 3; i++) await echo(client, `${i}`.repeat(2000));
      client.close(1000);
    });
    assert.equal(response.body_truncated, true);
    assert.equal(response.body_length, 12_000);
    const kept = (response.body as DumpedMessage[]).reduce((n, e) => n + Buffer.byteLength(e.data ?? ''), 0);
    assert.ok(kept <= 4096, `${kept} bytes of data kept`);
  });

  test('each message counts against --dump-max-bytes beyond its data: 10,000 empty ones make a small dump', async () => {
    const count = 10_000;
    const { response, names } = await session({}, async (client) => {
      for (let i = 0; i < count; i++) client.send('');
      assert.ok(await client.waitForMessages(count, 20_000), `${client.messages.length} of ${count} echoes`);
    });
    assert.equal(response.body_truncated, true);
    assert.equal(response.body_length, 0);
    const entries = (response.body as DumpedMessage[]).filter((e) => e.type !== 'close');
    assert.ok(entries.length > 0 && entries.length <= 4096 / 128, `${entries.length} messages kept`);
    const size = statSync(join(dir, names[1]!)).size;
    assert.ok(size < 8 * 4096, `the response dump is ${size} bytes`);
  });

  test('the key never reaches a dump (client message, client header, upstream echo)', async () => {
    await session({ 'x-leak': TEST_KEY }, async (client) => {
      await echo(client, `my key is ${TEST_KEY}`);
      await echo(client, Buffer.from(`binary ${TEST_KEY}`));
    });
    const all = files()
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('\n');
    assert.ok(!all.includes(TEST_KEY), 'the key is in a dump file');
    assert.ok(
      !all.includes(Buffer.from(`binary ${TEST_KEY}`).toString('base64').slice(12, 40)),
      'the key is in a dump file, base64',
    );
  });
});
