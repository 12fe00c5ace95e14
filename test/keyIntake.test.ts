// Key intake from stdin: the original's rules and messages, first line only,
// no waiting for EOF, and a rejected key opens no port.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort, stackLines, tryConnect } from './helpers/netProbe.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { send } from './helpers/httpClient.js';
import { ProxyProcess, runProxyToExit, type StartOptions } from './helpers/proxyProcess.js';

const MISSING = 'API key must be provided via stdin';
const BAD_CHARS = "API key may only contain ASCII letters, numbers, '-' or '_'";
const TOO_LARGE = 'API key is too large to fit in the 1024-byte buffer';

/** A key of exactly `length` bytes using every allowed character class. */
function keyOfLength(length: number): string {
  const alphabet = 'abcXYZ019-_';
  let key = '';
  for (let i = 0; i < length; i++) key += alphabet[i % alphabet.length];
  return key;
}

interface RejectCase {
  readonly name: string;
  readonly stdin: string | Buffer;
  readonly message: string;
}

const REJECT_CASES: readonly RejectCase[] = [
  { name: 'empty stdin', stdin: '', message: MISSING },
  { name: 'a lone newline', stdin: '\n', message: MISSING },
  { name: 'a key with a space', stdin: 'sk-abc def\n', message: BAD_CHARS },
  {
    name: 'a key with a non-ASCII byte',
    stdin: Buffer.concat([Buffer.from('sk-abc'), Buffer.from([0xc3, 0xa9]), Buffer.from('def\n')]),
    message: BAD_CHARS,
  },
  { name: 'a key with a dot', stdin: 'sk-abc.def\n', message: BAD_CHARS },
  { name: 'a 1017-byte key', stdin: `${keyOfLength(1017)}\n`, message: TOO_LARGE },
];

describe('key intake: rejected keys', { concurrency: true, timeout: 30_000 }, () => {
  for (const c of REJECT_CASES) {
    test(`${c.name} → exit 1 "${c.message}", nothing listens`, { timeout: 15_000 }, async () => {
      const port = await freePort();
      const result = await runProxyToExit({ stdin: c.stdin, args: ['--port', String(port)], timeoutMs: 10_000 });
      assert.deepEqual(
        { code: result.code, signal: result.signal },
        { code: 1, signal: null },
        `stderr: ${result.stderr}`,
      );
      assert.ok(
        result.stderr.includes(c.message),
        `stderr should contain ${JSON.stringify(c.message)}, got ${JSON.stringify(result.stderr)}`,
      );
      assert.doesNotMatch(result.stderr, /listening/);
      assert.deepEqual(stackLines(result.stderr), []);
      assert.equal(result.stdout, '');
      assert.equal(await tryConnect(port), 'refused', `something listens on ${port} after a rejected key`);
    });
  }
});

describe('key intake: rejections do not wait for EOF', { concurrency: true, timeout: 30_000 }, () => {
  const OPEN_CASES: readonly RejectCase[] = [
    { name: 'a bad first line', stdin: 'sk-abc def\nmore', message: BAD_CHARS },
    { name: '1017 key bytes and no newline yet', stdin: keyOfLength(1017), message: TOO_LARGE },
  ];
  for (const c of OPEN_CASES) {
    test(`${c.name}, stdin left open → exit 1 "${c.message}"`, { timeout: 15_000 }, async () => {
      const proxy = ProxyProcess.spawn({ stdin: c.stdin, keepStdinOpen: true });
      try {
        const status = await proxy.waitForExit(5_000);
        assert.deepEqual(status, { code: 1, signal: null }, `still running or wrong exit; stderr: ${proxy.stderr}`);
        assert.ok(
          proxy.stderr.includes(c.message),
          `stderr should contain ${JSON.stringify(c.message)}, got ${JSON.stringify(proxy.stderr)}`,
        );
        assert.doesNotMatch(proxy.stderr, /listening/);
      } finally {
        await proxy.stop('SIGKILL', 2_000);
        proxy.child.stdin?.destroy();
      }
    });
  }
});

describe(
  'key intake: accepted keys reach the upstream as "Bearer <key>"',
  { concurrency: true, timeout: 60_000 },
  () => {
    let upstream: MockUpstream;
    before(async () => {
      upstream = await MockUpstream.start();
    });
    after(async () => {
      await upstream.close();
    });

    /** Start a proxy with this stdin, send one request, return the Authorization values upstream saw. */
    async function authorizationSeen(stdin: string, options: Partial<StartOptions> = {}): Promise<string[]> {
      const marker = `marker-${Math.random().toString(36).slice(2)}`;
      const proxy = ProxyProcess.spawn({ stdin, args: ['--upstream-url', upstream.url()], ...options });
      try {
        await proxy.waitForListening(10_000);
        const reply = await send(proxy.port, {
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ marker }),
        });
        assert.equal(reply.status, 200, `proxy answered ${reply.status}: ${reply.body.toString()}`);
        const seen = upstream.requests.find((r) => r.body.toString().includes(marker));
        assert.ok(seen, 'the request reached the upstream');
        const values: string[] = [];
        for (let i = 0; i < seen.rawHeaders.length; i += 2) {
          if ((seen.rawHeaders[i] as string).toLowerCase() === 'authorization')
            values.push(seen.rawHeaders[i + 1] as string);
        }
        return values;
      } finally {
        await proxy.stop();
        proxy.child.stdin?.destroy();
      }
    }

    test('a 1016-byte key (the longest) followed by "\\n"', { timeout: 15_000 }, async () => {
      const key = keyOfLength(1016);
      assert.deepEqual(await authorizationSeen(`${key}\n`), [`Bearer ${key}`]);
    });

    test('"key\\r\\n": the CR is trimmed', { timeout: 15_000 }, async () => {
      assert.deepEqual(await authorizationSeen('sk-crlf_KEY-1\r\n'), ['Bearer sk-crlf_KEY-1']);
    });

    test('"key" without a newline at EOF', { timeout: 15_000 }, async () => {
      assert.deepEqual(await authorizationSeen('sk-no_newline-2'), ['Bearer sk-no_newline-2']);
    });

    test('only the first line is used ("key1\\nkey2\\n")', { timeout: 15_000 }, async () => {
      assert.deepEqual(await authorizationSeen('key1\nkey2\n'), ['Bearer key1']);
    });

    test('stdin left open after "key\\n": starts and serves without waiting for EOF', { timeout: 15_000 }, async () => {
      assert.deepEqual(await authorizationSeen('sk-open_stdin-3\n', { keepStdinOpen: true }), [
        'Bearer sk-open_stdin-3',
      ]);
    });
  },
);
