// The proxy installed as users install it, `npm install -g` of the packed
// tarball (into a prefix of the test's own), run by whatever node is first on
// PATH: CI runs this file once per supported Node.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { ProxyProcess, TEST_KEY } from '../helpers/proxyProcess.js';
import { packProxy } from '../helpers/packedProxy.js';
import { encodeSse, responseEvents } from '../helpers/responsesApi.js';
import { StreamClient } from '../helpers/streamClient.js';

// The installed program's `#!/usr/bin/env node` must find the node running this test.
const PATH = `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`;

describe(`npm install -g of the packed proxy, on Node ${process.version}`, { timeout: 300_000 }, () => {
  let work: string;
  let program: string;

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'rap-global-'));
    chmodSync(work, 0o755); // as root, the worker's user reads the installed program
    const prefix = join(work, 'global');
    const options = { env: { ...process.env, PATH }, timeout: 180_000, stdio: 'ignore' } as const;
    execFileSync(
      'npm',
      ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', packProxy(work)],
      options,
    );
    program = join(prefix, 'bin', 'codex-responses-api-proxy');
  });
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('--help prints the usage and exits 0', () => {
    const help = execFileSync(program, ['--help'], { env: { PATH }, encoding: 'utf8', timeout: 30_000 });
    assert.match(help, /--http-shutdown/);
    assert.match(help, /--server-info/);
  });

  test('a streamed response passes through it, with the key added upstream', async (t) => {
    const events = responseEvents('streamed through the installed proxy', 'resp_global', 4);
    const upstream = await MockUpstream.start(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const event of events) {
        res.write(encodeSse(event));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      res.end();
    });
    t.after(() => upstream.close());
    const proxy = await ProxyProcess.start({ program, env: { PATH }, args: ['--upstream-url', upstream.url()] });
    t.after(() => proxy.stop());
    // The supervisor runs on the node this test runs on.
    assert.equal(realpathSync(readlinkSync(`/proc/${proxy.pid}/exe`)), realpathSync(process.execPath));
    const client = StreamClient.open(proxy.port, { body: '{"model":"m","stream":true}' });
    const result = await client.done;
    assert.equal(result.outcome, 'end', result.detail);
    assert.equal(result.status, 200);
    assert.equal(result.body.toString('utf8'), events.map(encodeSse).join(''));
    assert.equal(upstream.requests.at(-1)?.headers.authorization, `Bearer ${TEST_KEY}`);
  });
});
