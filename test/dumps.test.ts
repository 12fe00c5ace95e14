// --dump-dir through the real proxy: format, redaction, teeing, truncation,
// modes, failures.

import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { send, sendRaw } from './helpers/httpClient.js';
import { MockUpstream } from './helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY, runProxyToExit, sleep, waitFor } from './helpers/proxyProcess.js';

interface Dump {
  status?: number | null;
  method?: string;
  url?: string;
  headers: Array<{ name: string; value: string }>;
  body: unknown;
  body_truncated?: boolean;
  body_length?: number;
  error?: string;
}

function dumpFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
}

function readDump(dir: string, name: string): Dump {
  return JSON.parse(readFileSync(join(dir, name), 'utf8')) as Dump;
}

/** Wait until `count` dump files exist; returns their names. */
async function waitForDumps(dir: string, count: number): Promise<string[]> {
  await waitFor(() => dumpFiles(dir).length >= count, 5_000);
  return dumpFiles(dir);
}

const asRoot = process.getuid?.() === 0;

/** A temporary root anyone can pass through. */
function traversableTempDir(): string {
  const root = mkdtempSync(join(tmpdir(), 'rap-dumps-'));
  chmodSync(root, 0o755);
  return root;
}

function allDumpText(dir: string): string {
  return dumpFiles(dir)
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

describe('--dump-dir', { timeout: 60_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let root: string;
  let dir: string;
  /** Lets a test hold the upstream's SSE stream open until the client confirms. */
  let release: (() => void) | null = null;

  before(async () => {
    root = traversableTempDir();
    dir = join(root, 'nested', 'dumps');
    upstream = await MockUpstream.start();
    proxy = await ProxyProcess.start({
      args: ['--upstream-url', upstream.url(), '--dump-dir', dir, '--dump-max-bytes', '1000'],
    });
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('one request/response pair per forwarded request, in the original format', async () => {
    upstream.handler = (_req, res) => {
      res.writeHead(201, {
        'content-type': 'application/json',
        'x-request-id': 'req_1',
        'Set-Cookie': ['a=1', 'b=2'],
        authorization: 'Bearer upstream-echo',
      });
      res.end('{"id":"resp_1","ok":true}');
    };
    const before = dumpFiles(dir).length;
    assert.equal(statSync(dir).mode & 0o777, 0o700, 'directory is created 0700');
    const reply = await send(proxy.port, {
      headers: [
        'Content-Type',
        'application/json',
        'AUTHORIZATION',
        'Bearer client-own',
        'X-Cookie-Jar',
        'c=3',
        'cookie',
        'd=4',
        'Session-Id',
        's1',
      ],
      body: '{"model":"m","input":"hi"}',
    });
    assert.equal(reply.status, 201);
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    assert.match(files[0]!, /^000001-\d{13}-request\.json$/);
    assert.equal(
      files[1],
      files[0]!.replace('-request.json', '-response.json'),
      'request and response share the prefix',
    );
    for (const f of files) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);

    const req = readDump(dir, files[0]!);
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/v1/responses');
    assert.deepEqual(req.body, { model: 'm', input: 'hi' }, 'JSON body stored as JSON');
    const reqHeaders = new Map(req.headers.map((h) => [h.name, h.value]));
    assert.equal(
      reqHeaders.get('AUTHORIZATION'),
      '[REDACTED]',
      'names as the client sent them, Authorization redacted',
    );
    assert.equal(reqHeaders.get('X-Cookie-Jar'), '[REDACTED]', 'any name containing cookie, any case');
    assert.equal(reqHeaders.get('cookie'), '[REDACTED]');
    assert.equal(reqHeaders.get('Session-Id'), 's1');
    assert.equal(reqHeaders.get('Content-Type'), 'application/json');

    const res = readDump(dir, files[1]!);
    assert.equal(res.status, 201);
    assert.deepEqual(res.body, { id: 'resp_1', ok: true });
    assert.equal(res.error, undefined);
    const resHeaders = res.headers.map((h) => `${h.name}: ${h.value}`);
    assert.ok(resHeaders.includes('x-request-id: req_1'), 'upstream headers, lower-cased');
    assert.deepEqual(
      resHeaders.filter((h) => h.startsWith('set-cookie')),
      ['set-cookie: [REDACTED]', 'set-cookie: [REDACTED]'],
    );
    assert.ok(resHeaders.includes('authorization: [REDACTED]'));
  });

  test('non-JSON bodies are stored as text; 403s are not dumped', async () => {
    upstream.handler = (_req, res) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('not json at all');
    };
    const before = dumpFiles(dir).length;
    await sendRaw(proxy.port, 'GET /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await send(proxy.port, { body: 'plain {text' });
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    assert.equal(files.length, 2, 'the 403 left nothing');
    assert.equal(readDump(dir, files[0]!).body, 'plain {text');
    assert.equal(readDump(dir, files[1]!).body, 'not json at all');
    assert.equal(readDump(dir, files[1]!).status, 400);
  });

  test('SSE is teed: the client gets events before the stream ends, the dump has the streamed text', async () => {
    const released = new Promise<void>((resolve) => (release = resolve));
    upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":1}\n\n');
      const timer = setTimeout(() => res.end('data: {"n":2}\n\n'), 5_000); // bound, should not be needed
      void released.then(() => {
        clearTimeout(timer);
        res.end('data: {"n":2}\n\n');
      });
    };
    const before = dumpFiles(dir).length;
    const firstEventBeforeEnd = await new Promise<boolean>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: proxy.port, method: 'POST', path: '/v1/responses', agent: false },
        (res) => {
          let text = '';
          let sawFirstEarly = false;
          res.setEncoding('utf8');
          res.on('data', (s: string) => {
            text += s;
            if (!sawFirstEarly && text.includes('"n":1') && !text.includes('"n":2')) {
              sawFirstEarly = true;
              release?.();
            }
          });
          res.on('end', () => resolve(sawFirstEarly));
        },
      );
      req.on('error', reject);
      req.end('{}');
    });
    assert.ok(firstEventBeforeEnd, 'event 1 reached the client while the upstream still held the stream open');
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    assert.equal(readDump(dir, files[1]!).body, 'data: {"n":1}\n\ndata: {"n":2}\n\n');
  });

  test('bodies beyond --dump-max-bytes are truncated, saying so, and the client still gets everything', async () => {
    const big = 'x'.repeat(5_000);
    upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(big);
    };
    const before = dumpFiles(dir).length;
    const reply = await send(proxy.port, { body: 'y'.repeat(3_000) });
    assert.equal(reply.body.toString(), big);
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    const req = readDump(dir, files[0]!);
    const res = readDump(dir, files[1]!);
    assert.deepEqual([req.body, req.body_truncated, req.body_length], ['y'.repeat(1000), true, 3000]);
    assert.deepEqual([res.body, res.body_truncated, res.body_length], ['x'.repeat(1000), true, 5000]);
  });

  test('the key never reaches a dump, whatever the client or upstream puts where', async () => {
    upstream.handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo': String(req.headers.authorization) });
      res.end(JSON.stringify({ echoed: req.headers.authorization }));
    };
    const before = dumpFiles(dir).length;
    await send(proxy.port, {
      headers: { 'x-api-key': TEST_KEY, 'x-other': `pre${TEST_KEY}post` },
      body: JSON.stringify({ input: `my key is ${TEST_KEY}` }),
    });
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    const text = allDumpText(dir);
    assert.ok(!text.includes(TEST_KEY), 'no dump contains the key');
    const req = readDump(dir, files[0]!);
    assert.equal(req.body, '[REDACTED: contained the proxy API key]');
    assert.equal(req.headers.find((h) => h.name === 'x-api-key')?.value, '[REDACTED: contained the proxy API key]');
    const res = readDump(dir, files[1]!);
    assert.deepEqual(res.body, { echoed: `Bearer ${'*'.repeat(TEST_KEY.length)}` });
  });

  test('a client that disconnects mid-stream still gets a response dump saying so', async () => {
    upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      const timer = setInterval(() => res.write('data: more\n\n'), 50);
      res.on('close', () => clearInterval(timer));
    };
    const before = dumpFiles(dir).length;
    await new Promise<void>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: proxy.port, method: 'POST', path: '/v1/responses', agent: false },
        (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        },
      );
      req.on('error', () => {});
      req.on('timeout', () => reject(new Error('no data')));
      req.setTimeout(5_000);
      req.end('{}');
    });
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    const res = readDump(
      dir,
      files.find((f) => f.endsWith('-response.json'))!,
    );
    assert.equal(res.status, 200);
    assert.match(String(res.body), /^data: first\n\n/);
    assert.equal(res.error, 'client disconnected before the response ended');
  });

  test('an upstream cut off mid-stream gives a response dump saying so', async () => {
    upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: partial\n\n');
      setTimeout(() => res.socket?.destroy(), 50);
    };
    const before = dumpFiles(dir).length;
    await send(proxy.port, { body: '{}' }).catch(() => null);
    const files = (await waitForDumps(dir, before + 2)).slice(before);
    const res = readDump(dir, files[1]!);
    assert.equal(res.body, 'data: partial\n\n');
    assert.equal(res.error, 'upstream failed mid-response');
  });

  test('sequence numbers keep increasing', () => {
    const sequences = dumpFiles(dir).map((f) => Number(f.slice(0, 6)));
    const unique = [...new Set(sequences)];
    assert.deepEqual(
      unique,
      unique.map((_, i) => i + 1),
    );
  });
});

describe('--dump-dir and bodies built to blow up their dump', { timeout: 60_000 }, () => {
  let upstream: MockUpstream;
  let proxy: ProxyProcess;
  let dir: string;
  before(async () => {
    dir = traversableTempDir();
    upstream = await MockUpstream.start();
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url(), '--dump-dir', dir] });
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Send `body`; its request dump once written. */
  async function dumped(body: string): Promise<{ body: unknown; size: number }> {
    const before = dumpFiles(dir).length;
    const reply = await send(proxy.port, { headers: { 'content-type': 'application/json' }, body });
    assert.equal(reply.status, 200);
    const name = (await waitForDumps(dir, before + 2)).slice(before).find((f) => f.endsWith('-request.json'));
    return { body: readDump(dir, name!).body, size: statSync(join(dir, name!)).size };
  }

  test('nesting deeper than 127 levels is dumped as text, as the original does; the worker keeps serving', async () => {
    const worker = proxy.workerPid();
    // Pretty-printing this exhausted the worker's stack, ending every stream it served.
    const deep = `${'['.repeat(20_000)}${']'.repeat(20_000)}`;
    assert.equal((await dumped(deep)).body, deep);
    // 6 KB that pretty-printed would have been an 18 MB file.
    const quadratic = `${'['.repeat(3_000)}${']'.repeat(3_000)}`;
    const { body, size } = await dumped(quadratic);
    assert.equal(body, quadratic);
    assert.ok(size < 2 * quadratic.length + 4096, `${size} bytes`);
    const nested = `{"a":${'['.repeat(20)}1${']'.repeat(20)}}`;
    assert.deepEqual((await dumped(nested)).body, JSON.parse(nested));
    assert.equal(proxy.workerPid(), worker, 'the same worker');
    assert.ok(!proxy.stderr.includes('worker failed'), proxy.stderr);
  });

  test('a body whose pretty form would grow more than fourfold is dumped as text', async () => {
    // 126 levels, then 20,000 elements: each would get a line indented 252 spaces (5 MB from 40 KB).
    const wide = `${'['.repeat(126)}${Array(20_000).fill('0').join(',')}${']'.repeat(126)}`;
    const { body, size } = await dumped(wide);
    assert.equal(body, wide);
    assert.ok(size < 2 * wide.length + 4096, `${size} bytes`);
    // An ordinary request body keeps its parsed form.
    const ordinary = { model: 'm', input: [{ role: 'user', content: [{ type: 'input_text', text: 'hi' }] }] };
    assert.deepEqual((await dumped(JSON.stringify(ordinary))).body, ordinary);
  });
});

describe('--dump-dir failures', { timeout: 60_000 }, () => {
  test('a directory that cannot be created stops startup with one line, exit 1', async () => {
    const root = traversableTempDir();
    const file = join(root, 'a-file');
    writeFileSync(file, '');
    try {
      const result = await runProxyToExit({ args: ['--dump-dir', join(file, 'sub')] });
      assert.equal(result.code, 1);
      const lines = result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
      assert.equal(lines.length, 1, result.stderr);
      assert.match(
        lines[0]!,
        /^Error: cannot create --dump-dir .*a-file\/sub: (EEXIST|ENOTDIR) \(a part of the path is a file, not a directory\)$/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test(
    'an existing directory the proxy cannot write stops startup with one line, exit 1',
    { skip: asRoot && 'root writes any directory' },
    async () => {
      const root = traversableTempDir();
      const readOnly = join(root, 'ro');
      mkdirSync(readOnly, { mode: 0o555 });
      try {
        const result = await runProxyToExit({ args: ['--dump-dir', readOnly] });
        assert.equal(result.code, 1);
        const lines = result.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
        assert.deepEqual(lines, [`Error: cannot write to --dump-dir ${readOnly}: EACCES`]);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  );

  test('a directory removed while running: logged once, proxying carries on', async () => {
    const root = traversableTempDir();
    const dir = join(root, 'd');
    const upstream = await MockUpstream.start();
    const proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url(), '--dump-dir', dir] });
    try {
      assert.equal((await send(proxy.port, { body: '{}' })).status, 200);
      // Let the first pair land, so the removal does not race the worker's own writes.
      assert.ok(await waitFor(() => dumpFiles(dir).length === 2, 5_000), 'the first exchange was dumped');
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
      for (let i = 0; i < 3; i++) assert.equal((await send(proxy.port, { body: '{}' })).status, 200);
      await waitFor(() => proxy.stderr.includes('cannot write dump files'), 2_000);
      const complaints = proxy.stderr.split('\n').filter((l) => l.includes('cannot write dump files'));
      assert.equal(complaints.length, 1, 'logged once');
      assert.equal(proxy.exitStatus, null, 'still running');
    } finally {
      await proxy.stop();
      await upstream.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

/** One request through a proxy dumping to `dir`; resolves with the names of the dump files it left. */
async function dumpedExchange(dir: string): Promise<string[]> {
  const upstream = await MockUpstream.start();
  const proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url(), '--dump-dir', dir] });
  try {
    assert.equal((await send(proxy.port, { body: '{"input":"hi"}' })).status, 200);
    assert.ok(await waitFor(() => dumpFiles(dir).length === 2, 5_000), `two dump files; stderr:\n${proxy.stderr}`);
    // The worker has no write access anywhere, dumps or not.
    const landlock = /"worker_landlock":"([^"]*)"/.exec(proxy.stderr)?.[1] ?? '';
    if (!landlock.includes('not available')) assert.match(landlock, /^ok: ABI \d+: reads its code, writes nothing/);
    return dumpFiles(dir);
  } finally {
    await proxy.stop();
    await upstream.close();
  }
}

describe(
  '--dump-dir where only root may write (the supervisor writes the dumps)',
  { skip: !asRoot && 'needs root', timeout: 60_000 },
  () => {
    test('a new directory under a parent only root can enter: files 0600, owned by root', async () => {
      const parent = mkdtempSync(join(tmpdir(), 'rap-dumps-')); // 0700 root, like /root
      try {
        const dir = join(parent, 'dumps');
        const files = await dumpedExchange(dir);
        assert.equal(statSync(dir).mode & 0o777, 0o700);
        assert.equal(statSync(dir).uid, 0, "the directory is root's");
        for (const f of files) {
          const stat = statSync(join(dir, f));
          assert.deepEqual(
            [stat.mode & 0o777, stat.uid, stat.gid],
            [0o600, 0, process.getgid?.()],
            `${f}: 0600, root's`,
          );
        }
        assert.deepEqual(readDump(dir, files[0]!).body, { input: 'hi' });
      } finally {
        rmSync(parent, { recursive: true, force: true });
      }
    });

    test('an existing root-owned 0755 directory', async () => {
      const dir = traversableTempDir();
      try {
        const files = await dumpedExchange(dir);
        assert.equal(files.length, 2);
        assert.equal(statSync(dir).mode & 0o777, 0o755, 'an existing directory is left as it is');
        for (const f of files) assert.equal(statSync(join(dir, f)).uid, 0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test('names planted where the next dump goes are neither replaced nor followed; that dump is skipped, one line each', async () => {
      const dir = traversableTempDir();
      const outside = mkdtempSync(join(tmpdir(), 'rap-dumps-target-'));
      const target = join(outside, 'target');
      writeFileSync(target, 'target');
      const upstream = await MockUpstream.start();
      const proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url(), '--dump-dir', dir] });
      try {
        // The first exchange's files are 000001-<its start in ms>-*.json: plant both names from now until
        // 5 s after the request is sent (planting takes a while on a loaded machine; bounded by the deadline).
        const from = Date.now();
        let horizon = from;
        while (horizon < Date.now() + 5_000 && horizon < from + 60_000) {
          symlinkSync(target, join(dir, `000001-${horizon}-request.json`));
          writeFileSync(join(dir, `000001-${horizon}-response.json`), 'planted');
          horizon++;
        }
        assert.equal((await send(proxy.port, { body: '{"input":"first"}' })).status, 200);
        assert.ok(Date.now() < horizon, 'the exchange started while its names were planted');
        assert.equal((await send(proxy.port, { body: '{"input":"second"}' })).status, 200);
        const seconds = (): string[] => dumpFiles(dir).filter((f) => f.startsWith('000002-'));
        assert.ok(await waitFor(() => seconds().length === 2, 5_000), 'the next exchange is dumped as usual');
        // Log lines reach us through a pipe, maybe after the next exchange's files.
        const skipped = (): string[] =>
          proxy.stderr.split('\n').filter((l) => l.includes('not replaced, this dump is skipped'));
        await waitFor(() => skipped().length >= 2, 5_000);
        await sleep(200); // and no third line follows
        assert.equal(skipped().length, 2, `one line per skipped file:\n${proxy.stderr}`);
        assert.equal(readFileSync(target, 'utf8'), 'target', 'the symlink was not followed');
        const names = dumpFiles(dir).filter((f) => f.startsWith('000001-'));
        assert.equal(names.length, 2 * (horizon - from), 'no other name was taken for the first exchange');
        for (const f of names.filter((n) => n.endsWith('-response.json'))) {
          assert.equal(readFileSync(join(dir, f), 'utf8'), 'planted', `${f} untouched`);
        }
        assert.ok(!proxy.stderr.includes('cannot write dump files'), 'nothing else failed');
      } finally {
        await proxy.stop();
        await upstream.close();
        rmSync(dir, { recursive: true, force: true });
        rmSync(outside, { recursive: true, force: true });
      }
    });
  },
);
