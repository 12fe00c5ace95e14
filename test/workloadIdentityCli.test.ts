// --github-oidc's command line and request token intake, with the original's
// messages and exit codes: usage errors (exit 2) before anything else; then,
// exit 1, the checks of the settings and of the token on stdin. None of these
// needs a network: where every check passes, the proxy goes on to ask GitHub,
// at a loopback port where nothing listens, and fails with that one line.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { reserveClosedPort, type ClosedPort } from './helpers/closedPort.js';
import { stackLines } from './helpers/netProbe.js';
import { ProxyProcess, runProxyToExit } from './helpers/proxyProcess.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJyZXF1ZXN0In0.c2lnbmF0dXJl';
const DEFAULT_UPSTREAM = 'https://api.openai.com/v1/responses';

let closed: ClosedPort;
let requestUrl: string;
before(() => {
  closed = reserveClosedPort();
  requestUrl = `https://127.0.0.1:${closed.port}/idtoken?api-version=2.0`;
});
after(() => closed.release());

/** All five flags; `replace` swaps a flag's value (or drops the flag, with undefined). */
function flags(replace: Record<string, string | undefined> = {}): string[] {
  const values: Record<string, string | undefined> = {
    '--oidc-audience': 'api://openai',
    '--identity-provider-id': 'wifp_1',
    '--service-account-id': 'svcacct_1',
    '--github-oidc-request-url': requestUrl,
    ...replace,
  };
  const args = replace['--github-oidc'] === undefined && '--github-oidc' in replace ? [] : ['--github-oidc'];
  for (const [flag, value] of Object.entries(values))
    if (flag !== '--github-oidc' && value !== undefined) args.push(flag, value);
  return args;
}

async function run(args: readonly string[], stdin: string | Buffer = `${TOKEN}\n`) {
  const result = await runProxyToExit({ args, stdin, timeoutMs: 20_000 });
  const lines = result.stderr.split('\n').filter((l) => l !== '');
  return { ...result, lines };
}

function assertOneLine(r: Awaited<ReturnType<typeof run>>, code: number, message: string | RegExp): void {
  assert.deepEqual({ code: r.code, signal: r.signal }, { code, signal: null }, r.stderr);
  assert.equal(r.lines.length, 1, r.stderr);
  const prefix = code === 2 ? 'error: ' : 'Error: ';
  assert.ok((r.lines[0] as string).startsWith(prefix), r.stderr);
  const text = (r.lines[0] as string).slice(prefix.length);
  if (typeof message === 'string') assert.equal(text, message);
  else assert.match(text, message);
  assert.deepEqual(stackLines(r.stderr), []);
  assert.ok(!r.stderr.includes(TOKEN), 'the request token was printed');
}

const REQUIRED = 'the following required arguments were not provided: ';

describe('--github-oidc: usage errors (exit 2)', { concurrency: true, timeout: 60_000 }, () => {
  const cases: Array<[string, string[], string]> = [
    [
      '--github-oidc alone',
      ['--github-oidc'],
      `${REQUIRED}--oidc-audience <AUDIENCE>, --identity-provider-id <ID>, --service-account-id <ID>, ` +
        '--github-oidc-request-url <URL>',
    ],
    ['the four without --github-oidc', flags({ '--github-oidc': undefined }), `${REQUIRED}--github-oidc`],
    [
      '--oidc-audience alone',
      ['--oidc-audience', 'x'],
      `${REQUIRED}--identity-provider-id <ID>, --service-account-id <ID>, --github-oidc-request-url <URL>, ` +
        '--github-oidc',
    ],
    ['no --service-account-id', flags({ '--service-account-id': undefined }), `${REQUIRED}--service-account-id <ID>`],
    [
      'no --github-oidc-request-url',
      flags({ '--github-oidc-request-url': undefined }),
      `${REQUIRED}--github-oidc-request-url <URL>`,
    ],
    [
      '--identity-provider-id twice',
      [...flags(), '--identity-provider-id', 'wifp_2'],
      '--identity-provider-id was given more than once',
    ],
  ];
  for (const [name, args, message] of cases) {
    test(`${name}: "${message}"`, async () => assertOneLine(await run(args, ''), 2, message));
  }
});

describe('--github-oidc: settings (exit 1, before stdin is read)', { concurrency: true, timeout: 60_000 }, () => {
  const cases: Array<[string, string[], string]> = [
    [
      'a custom --upstream-url',
      [...flags(), '--upstream-url', 'https://example.com/v1/responses'],
      'workload identity requires the default OpenAI Responses endpoint',
    ],
    [
      'the default URL spelt differently',
      [...flags(), '--upstream-url', 'https://api.openai.com:443/v1/responses'],
      'workload identity requires the default OpenAI Responses endpoint',
    ],
    [
      'a custom --upstream-url beats an empty value',
      [...flags({ '--oidc-audience': '' }), '--upstream-url', 'http://127.0.0.1:1/'],
      'workload identity requires the default OpenAI Responses endpoint',
    ],
    [
      'an empty --oidc-audience',
      flags({ '--oidc-audience': '' }),
      'workload identity requires a nonempty --oidc-audience',
    ],
    [
      'a blank --identity-provider-id',
      flags({ '--identity-provider-id': '  ' }),
      'workload identity requires a nonempty --identity-provider-id',
    ],
    [
      'an empty --service-account-id',
      flags({ '--service-account-id': '' }),
      'workload identity requires a nonempty --service-account-id',
    ],
    [
      'an empty --github-oidc-request-url',
      flags({ '--github-oidc-request-url': '' }),
      'workload identity requires a nonempty --github-oidc-request-url',
    ],
    [
      'an http:// request URL',
      flags({ '--github-oidc-request-url': 'http://127.0.0.1/idtoken' }),
      'GitHub OIDC request URL must be HTTPS without user info or fragment',
    ],
    [
      'user info in the request URL',
      flags({ '--github-oidc-request-url': 'https://u:p@127.0.0.1/idtoken' }),
      'GitHub OIDC request URL must be HTTPS without user info or fragment',
    ],
    [
      'a fragment in the request URL',
      flags({ '--github-oidc-request-url': 'https://127.0.0.1/idtoken#x' }),
      'GitHub OIDC request URL must be HTTPS without user info or fragment',
    ],
    [
      'a request URL that is no URL',
      flags({ '--github-oidc-request-url': 'not a url' }),
      'invalid GitHub OIDC request URL',
    ],
  ];
  for (const [name, args, message] of cases) {
    // stdin is empty: these come before the request token would be found missing.
    test(`${name}: "${message}"`, async () => assertOneLine(await run(args, ''), 1, message));
  }
});

describe('--github-oidc: the request token on stdin (exit 1)', { concurrency: true, timeout: 60_000 }, () => {
  const INVALID = 'invalid workload identity bearer credential';
  const TOO_LARGE = 'GitHub OIDC request credential too large';
  const REFUSED = /^GitHub OIDC token request failed: ECONNREFUSED$/;
  const cases: Array<[string, string | Buffer, string | RegExp]> = [
    ['empty stdin', '', INVALID],
    ['a lone newline', '\n', INVALID],
    ['a space in the token', 'abc def\n', INVALID],
    ['a leading space', ' abc\n', INVALID],
    ['a non-ASCII byte', Buffer.from([0x61, 0xc3, 0xa9, 0x0a]), INVALID],
    ['"\\r\\r\\n"', 'abc\r\r\n', INVALID],
    ['16,385 bytes', `${'a'.repeat(16_385)}\n`, INVALID],
    ['16,386 bytes and no newline', 'a'.repeat(16_386), TOO_LARGE],
    // Accepted: the proxy goes on to GitHub, which is not there.
    ['16,384 bytes and "\\r\\n"', `${'a'.repeat(16_384)}\r\n`, REFUSED],
    ['b64token characters ("-._~+/=")', 'a-b.c_d~e+f/g=\n', REFUSED],
    ['a token without a newline', TOKEN, REFUSED],
    ['only the first line counts', `${TOKEN}\nsecond line with spaces\n`, REFUSED],
  ];
  for (const [name, stdin, message] of cases) {
    test(`${name}: "${message}"`, async () => assertOneLine(await run(flags(), stdin), 1, message));
  }

  test('--upstream-url spelt exactly as the default is accepted', async () => {
    assertOneLine(await run([...flags(), '--upstream-url', DEFAULT_UPSTREAM]), 1, REFUSED);
  });

  test('the token is taken without waiting for EOF (stdin left open)', async () => {
    const proxy = ProxyProcess.spawn({ args: flags(), stdin: `${TOKEN}\n`, keepStdinOpen: true });
    try {
      const status = await proxy.waitForExit(20_000);
      assert.deepEqual(status, { code: 1, signal: null }, proxy.stderr);
      assert.match(proxy.stderr, /GitHub OIDC token request failed: ECONNREFUSED/);
    } finally {
      await proxy.stop('SIGKILL');
      proxy.child.stdin?.destroy();
    }
  });

  test('--help describes the five flags', async () => {
    const r = await run(['--help'], '');
    assert.equal(r.code, 0);
    for (const flag of [
      '--github-oidc ',
      '--oidc-audience <AUDIENCE>',
      '--identity-provider-id <ID>',
      '--service-account-id <ID>',
      '--github-oidc-request-url <URL>',
    ]) {
      assert.ok(r.stdout.includes(flag), `--help lacks ${flag}`);
    }
  });
});
