// The flag table's rules without starting a process: parseCommandLine (every
// flag, defaults, bounds, errors), --help listing every flag, and README's flag
// table listing exactly what --help lists.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { MAX_OPEN_STREAMS } from '../src/shared/constants.js';
import { UsageError, WorkloadIdentityError } from '../src/shared/errors.js';
import { FLAG_ENTRIES, FLAG_LIST, isOption, isSection } from '../src/shared/flags.js';
import { parseCommandLine, USAGE, type ProxyOptions } from '../src/supervisor/startup/cli.js';

function options(args: readonly string[]): ProxyOptions {
  const command = parseCommandLine(args);
  assert.equal(command.kind, 'run');
  return (command as { options: ProxyOptions }).options;
}

/** The one-line message parseCommandLine refuses `args` with, as a UsageError (exit 2). */
function usageError(args: readonly string[]): string {
  try {
    parseCommandLine(args);
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.equal(err.code, 'ERR_USAGE');
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  }
  assert.fail(`${JSON.stringify(args)} was accepted`);
}

describe('flags: parseCommandLine', () => {
  test('defaults', () => {
    assert.deepEqual(options([]), {
      port: 0,
      serverInfo: null,
      httpShutdown: false,
      upstreamUrl: new URL('https://api.openai.com/v1/responses'),
      dumpDir: null,
      dumpMaxBytes: 16 * 1024 * 1024,
      maxBodyBytes: 64 * 1024 * 1024,
      maxOpenStreams: null, // derived at startup from the open-file limit
      webSocket: null,
      upstreamTimeoutMs: 300_000,
      shutdownTimeoutMs: 10_000,
      uid: null,
      gid: null,
      allowWeakerSandbox: false,
      checkSandbox: false,
      workloadIdentity: null,
      clientTokenFile: null,
      clientTokenOwner: null,
      allowModels: null,
      maxRequests: null,
      maxRequestsPerMinute: null,
      maxTokens: null,
      usageFile: null,
      logLevel: 'info',
    });
  });

  test('every flag given', () => {
    const given = options([
      ...['--port', '8080', '--server-info', '/run/info.json', '--http-shutdown'],
      ...['--upstream-url', 'http://127.0.0.1:9/v1/x?a=1#frag', '--dump-dir', 'dumps', '--dump-max-bytes', '0'],
      ...['--max-body-bytes', '1', '--max-concurrent', '16384', '--websocket', '--ws-max-message-bytes', '1'],
      ...['--ws-idle-timeout', '0.001', '--upstream-timeout', '1.5', '--shutdown-timeout', '2147483.647'],
      ...['--uid', 'nobody', '--gid', '65534', '--allow-weaker-sandbox', '--check-sandbox', '--log-level', 'silent'],
      ...['--client-token-file', '/run/t', '--client-token-owner', 'agent', '--allow-model', 'gpt-5*'],
      ...['--allow-model', 'o3', '--max-requests', '10', '--max-requests-per-minute', '1000000'],
      ...['--max-tokens', '9007199254740991', '--usage-file', 'usage.json'],
    ]);
    assert.deepEqual(given, {
      port: 8080,
      serverInfo: '/run/info.json',
      httpShutdown: true,
      upstreamUrl: new URL('http://127.0.0.1:9/v1/x?a=1'),
      dumpDir: 'dumps',
      dumpMaxBytes: 0,
      maxBodyBytes: 1,
      maxOpenStreams: 16384,
      webSocket: { maxMessageBytes: 1, idleTimeoutMs: 1 },
      upstreamTimeoutMs: 1500,
      shutdownTimeoutMs: 2 ** 31 - 1,
      uid: 'nobody',
      gid: '65534',
      allowWeakerSandbox: true,
      checkSandbox: true,
      workloadIdentity: null,
      clientTokenFile: '/run/t',
      clientTokenOwner: 'agent',
      allowModels: ['gpt-5*', 'o3'],
      maxRequests: 10,
      maxRequestsPerMinute: 1_000_000,
      maxTokens: Number.MAX_SAFE_INTEGER,
      usageFile: 'usage.json',
      logLevel: 'silent',
    });
    assert.equal(given.upstreamUrl.hash, '', 'the fragment is dropped');
  });

  test('--flag=value and a value starting with a dash', () => {
    assert.equal(options(['--port=0']).port, 0);
    assert.equal(options(['--uid', '-5']).uid, '-5');
    assert.match(usageError(['--port', '-1']), /^invalid value '-1' for '--port <PORT>'/);
  });

  test('--websocket alone takes the default limits', () => {
    assert.deepEqual(options(['--websocket']).webSocket, { maxMessageBytes: 64 * 1024 * 1024, idleTimeoutMs: 300_000 });
  });

  const invalid = (value: string, label: string, expected: string): string =>
    `invalid value '${value}' for '${label}': ${expected}`;
  const URL_ = '--upstream-url <URL>';
  const PORT = 'expected a number from 0 to 65535';
  const whole = (min: number, max = Number.MAX_SAFE_INTEGER): string => `expected a whole number from ${min} to ${max}`;
  const LEVELS = 'fatal, error, warn, info, debug, trace, silent';
  const SECONDS = 'expected a positive number of seconds';
  const TIMER = 'at most 2147483.647 seconds';
  const bounds: readonly [args: string[], message: string][] = [
    [['--port', '65536'], invalid('65536', '--port <PORT>', PORT)],
    [['--port', '1.5'], invalid('1.5', '--port <PORT>', PORT)],
    [['--port', '000001'], invalid('000001', '--port <PORT>', PORT)],
    [['--max-concurrent', '0'], invalid('0', '--max-concurrent <N>', whole(1, MAX_OPEN_STREAMS))],
    [['--max-concurrent', '16385'], invalid('16385', '--max-concurrent <N>', whole(1, MAX_OPEN_STREAMS))],
    [['--max-body-bytes', '-1'], invalid('-1', '--max-body-bytes <N>', whole(0))],
    [['--dump-max-bytes', '1e3'], invalid('1e3', '--dump-max-bytes <N>', whole(0))],
    [['--websocket', '--ws-max-message-bytes', '0'], invalid('0', '--ws-max-message-bytes <N>', whole(1))],
    [['--upstream-timeout', '0'], invalid('0', '--upstream-timeout <SECONDS>', SECONDS)],
    [['--upstream-timeout', '1.0005'], invalid('1.0005', '--upstream-timeout <SECONDS>', SECONDS)],
    [['--shutdown-timeout', 'abc'], invalid('abc', '--shutdown-timeout <SECONDS>', SECONDS)],
    // Node's timers fire at once for longer delays.
    [['--shutdown-timeout', '2147483.648'], invalid('2147483.648', '--shutdown-timeout <SECONDS>', TIMER)],
    [['--websocket', '--ws-idle-timeout', '2147484'], invalid('2147484', '--ws-idle-timeout <SECONDS>', TIMER)],
    [['--upstream-url', 'rel/path'], invalid('rel/path', URL_, 'expected an absolute http:// or https:// URL')],
    [['--upstream-url', 'ftp://x/y'], invalid('ftp://x/y', URL_, 'scheme must be http or https, not ftp')],
    [
      ['--upstream-url', 'https://user:secret@host/v1/responses'],
      "invalid value for '--upstream-url <URL>': credentials in the URL are not allowed (the key comes from stdin)",
    ],
    [['--log-level', 'loud'], invalid('loud', '--log-level <LEVEL>', `expected one of ${LEVELS}`)],
    [['--ws-idle-timeout', '5'], '--ws-max-message-bytes and --ws-idle-timeout need --websocket'],
    [['--ws-max-message-bytes', '5'], '--ws-max-message-bytes and --ws-idle-timeout need --websocket'],
    [['--bogus'], "unexpected argument '--bogus' found; see --help"],
    [['-x'], "unexpected argument '-x' found; see --help"],
    [['extra'], "unexpected argument 'extra' found; see --help"],
    // mri would read these as the flag set to false, or to the text 'false'.
    [['--no-dump-dir'], "unexpected argument '--no-dump-dir' found; see --help"],
    [['--no-http-shutdown'], "unexpected argument '--no-http-shutdown' found; see --help"],
    [['-no-port'], "unexpected argument '-no-port' found; see --help"],
    // mri would make these arrays, which read as not given.
    [['--help', '--help'], '--help was given more than once'],
    [['-h', '-h'], '--help was given more than once'],
    [['--version', '--version'], '--version was given more than once'],
  ];
  for (const [args, message] of bounds) {
    test(`${args.join(' ')}: ${message}`, () => assert.equal(usageError(args), message));
  }

  test('the values at each bound are accepted', () => {
    assert.equal(options(['--port', '65535']).port, 65535);
    assert.equal(options(['--max-concurrent', '1']).maxOpenStreams, 1);
    assert.equal(options(['--max-body-bytes', '999999999999999']).maxBodyBytes, 999_999_999_999_999);
    assert.equal(options(['--upstream-timeout', '0.001']).upstreamTimeoutMs, 1);
    assert.equal(options(['--websocket', '--ws-idle-timeout', '2147483.647']).webSocket?.idleTimeoutMs, 2 ** 31 - 1);
  });

  test('the credential of a refused --upstream-url is not echoed', () => {
    assert.doesNotMatch(usageError(['--upstream-url', 'https://user:secret@host/']), /secret/);
  });

  test('--help and --version win over everything but unknown and positional arguments', () => {
    for (const args of [['--help'], ['-h'], ['--port', 'abc', '--help'], ['--help', '--port', '1', '--port', '2']]) {
      assert.deepEqual(parseCommandLine(args), { kind: 'help' }, args.join(' '));
    }
    assert.deepEqual(parseCommandLine(['-V']), { kind: 'version' });
    assert.deepEqual(parseCommandLine(['--version', '--log-level', 'loud']), { kind: 'version' });
    assert.equal(usageError(['--bogus', '--help']), "unexpected argument '--bogus' found; see --help");
    assert.equal(usageError(['extra', '--help']), "unexpected argument 'extra' found; see --help");
  });

  /** What each section member needs: its switch, and in a section that goes together, the other members too. */
  const needs = new Map(
    FLAG_ENTRIES.flatMap(([, entry]) => {
      if (!isSection(entry)) return [];
      const members = Object.values(entry.members);
      return members.map((member) => {
        const others = entry.together === true ? members.filter((m) => m !== member) : [];
        return [member.flag, [`--${entry.flag}`, ...others.flatMap((m) => [`--${m.flag}`, 'https://x/'])]] as const;
      });
    }),
  );
  const together = new Set(
    FLAG_ENTRIES.flatMap(([, e]) => (isSection(e) && e.together === true ? Object.values(e.members) : [])),
  );
  for (const entry of FLAG_LIST.filter(isOption)) {
    const needed = needs.get(entry.flag) ?? [];
    test(`--${entry.flag}: given twice, without a value, or with an empty one`, () => {
      const value = entry.default === null ? 'https://x/' : String(entry.default);
      const twice = [...needed, `--${entry.flag}`, value, `--${entry.flag}`, value];
      if (entry.repeatable === undefined) assert.equal(usageError(twice), `--${entry.flag} was given more than once`);
      // An empty value there is the section's own rule (exit 1, the original's message): see below.
      if (together.has(entry)) return;
      assert.equal(usageError([...needed, `--${entry.flag}`]), `--${entry.flag} needs a value; see --help`);
      assert.equal(usageError([...needed, `--${entry.flag}=`]), `--${entry.flag} needs a value; see --help`);
      const flagNext = [...needed, `--${entry.flag}`, '--http-shutdown'];
      assert.equal(usageError(flagNext), `--${entry.flag} needs a value; see --help`);
    });
  }

  test('--allow-model is repeatable up to 32 times, each a printable pattern; --client-token-owner needs the file', () => {
    const patterns = Array.from({ length: 32 }, (_, i) => ['--allow-model', `m${i}`]).flat();
    assert.equal(options(patterns).allowModels?.length, 32);
    assert.equal(usageError([...patterns, '--allow-model', 'x']), '--allow-model was given more than 32 times');
    assert.match(usageError(['--allow-model', 'a\tb']), /^invalid value 'a\tb' for '--allow-model <PATTERN>'/);
    assert.match(usageError(['--allow-model', 'x'.repeat(257)]), /for '--allow-model <PATTERN>'/);
    assert.equal(usageError(['--client-token-owner', 'agent']), '--client-token-owner needs --client-token-file');
  });

  test('--github-oidc and its four flags go together; then each must be nonempty, the request URL https', () => {
    const oidc = {
      '--github-oidc': [],
      '--oidc-audience': ['aud'],
      '--identity-provider-id': ['idp'],
      '--service-account-id': ['sa'],
      '--github-oidc-request-url': ['https://runner/idtoken?x=1'],
    };
    const all = Object.entries(oidc).flatMap(([flag, value]) => [flag, ...value]);
    assert.deepEqual(options(all).workloadIdentity, {
      audience: 'aud',
      identityProviderId: 'idp',
      serviceAccountId: 'sa',
      requestUrl: new URL('https://runner/idtoken?x=1'),
    });
    const missing = 'the following required arguments were not provided: ';
    assert.equal(
      usageError(['--github-oidc']),
      `${missing}--oidc-audience <AUDIENCE>, --identity-provider-id <ID>, ` +
        '--service-account-id <ID>, --github-oidc-request-url <URL>',
    );
    assert.equal(usageError(all.slice(1)), `${missing}--github-oidc`);
    assert.equal(usageError(all.slice(0, -2)), `${missing}--github-oidc-request-url <URL>`);
    const refusal = (args: string[]): string => {
      try {
        parseCommandLine(args);
      } catch (err) {
        assert.ok(err instanceof WorkloadIdentityError && err.exitCode === 1, String(err));
        return err.message;
      }
      assert.fail('accepted');
    };
    assert.equal(
      refusal(['--github-oidc', '--oidc-audience', '', ...all.slice(3)]),
      'workload identity requires a nonempty --oidc-audience',
    );
    assert.equal(
      refusal(['--github-oidc', '--oidc-audience', ' ', ...all.slice(3)]),
      'workload identity requires a nonempty --oidc-audience',
    );
    assert.equal(
      refusal([...all, '--upstream-url', 'http://127.0.0.1/']),
      'workload identity requires the default OpenAI Responses endpoint',
    );
    const httpUrl = [...all.slice(0, -1), 'http://runner/idtoken'];
    assert.equal(refusal(httpUrl), 'GitHub OIDC request URL must be HTTPS without user info or fragment');
  });

  for (const entry of FLAG_LIST.filter((e) => !isOption(e) && !(isSection(e) && e.together === true))) {
    test(`--${entry.flag} is a switch: on when given, off by default, not given twice`, () => {
      assert.notDeepEqual(options([`--${entry.flag}`]), options([]));
      assert.equal(usageError([`--${entry.flag}`, `--${entry.flag}`]), `--${entry.flag} was given more than once`);
    });
  }
});

/** The flags --help lists, in order. */
function helpFlags(): string[] {
  return [...USAGE.matchAll(/^ {2}(?:-[A-Za-z], )?(--[a-z0-9-]+)/gm)].map((m) => m[1] as string);
}

describe('flags: --help', () => {
  test('lists every flag of the table, in its order, then --help and --version', () => {
    assert.deepEqual(helpFlags(), [...FLAG_LIST.map((entry) => `--${entry.flag}`), '--help', '--version']);
  });

  test("shows each option's value name and its default where the help text asks for it", () => {
    for (const entry of FLAG_LIST.filter(isOption)) {
      assert.ok(USAGE.includes(`  --${entry.flag} <${entry.arg}>`), `--${entry.flag} <${entry.arg}>`);
      if (!entry.help.includes('{default}')) continue;
      const shown = (entry.derived ?? String(entry.default)).split('\n')[0] as string;
      assert.ok(USAGE.includes(`(default: ${shown}`), `default of --${entry.flag}`);
    }
    assert.doesNotMatch(USAGE, /\{default\}/);
    const column = ' '.repeat(25);
    const url = 'https://api.openai.com/v1/responses';
    const urlLine = '  --upstream-url <URL>   Absolute http(s) URL to forward to';
    const levels = 'fatal, error, warn, info, debug, trace, silent';
    assert.ok(USAGE.includes(`\n${urlLine}\n${column}(default: ${url})\n`));
    assert.ok(USAGE.includes(`\n  --log-level <LEVEL>    ${levels} (default: info)\n`));
    const derived = `${column}(default: from the open-file limit,\n${column}(ulimit -n - 128) / 1.25, at most 16384)\n`;
    assert.ok(USAGE.includes(derived), '--max-concurrent says how its default is derived');
  });

  test('help text starts in one column; a long flag puts it on the next line', () => {
    const lines = USAGE.slice(USAGE.indexOf('Options:\n') + 'Options:\n'.length)
      .trimEnd()
      .split('\n');
    for (const [i, line] of lines.entries()) {
      const longFlag = /^ {2}-\S+(?: <[^>]+>)?$/.test(line) && /^ {25}\S/.test(lines[i + 1] ?? '');
      assert.ok(longFlag || /^ {2}-.{21} \S/.test(line) || /^ {25}\S/.test(line), JSON.stringify(line));
    }
    assert.match(USAGE, /^ {2}--ws-max-message-bytes <N>\n {25}Close a WebSocket \(1009\)/m);
  });
});

describe("flags: README's flag table", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const COMMANDS = ['--help', '--version'];

  test('lists exactly the flags --help lists', () => {
    const rows = [...readme.matchAll(/^\| `(--[a-z0-9-]+)/gm)].map((m) => m[1] as string);
    const listed = new Set(rows.filter((flag) => !COMMANDS.includes(flag)));
    const expected = new Set(helpFlags().filter((flag) => !COMMANDS.includes(flag)));
    assert.deepEqual(
      { missing: [...expected].filter((f) => !listed.has(f)), unknown: [...listed].filter((f) => !expected.has(f)) },
      { missing: [], unknown: [] },
    );
  });

  test('its section also mentions --help and --version', () => {
    const start = readme.search(/^#+ .*Command line/m);
    assert.notEqual(start, -1, 'a heading containing "Command line"');
    const rest = readme.slice(readme.indexOf('\n', start) + 1);
    const next = rest.search(/^#{1,2} /m);
    const section = next === -1 ? rest : rest.slice(0, next);
    for (const flag of COMMANDS) assert.ok(section.includes(flag), `${flag} in the Command line section`);
  });
});
