// The worker's CONFIG without starting a process: what the supervisor builds
// from the flags, that it decodes as it was encoded, that every field out of
// the flag table's bounds is refused with a ProtocolError, and that the
// longest CONFIG the bounds allow fits the CONFIG frame.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_OPEN_STREAMS } from '../src/shared/constants.js';
import { ProtocolError } from '../src/shared/errors.js';
import { WORKER_FLAG_ENTRIES } from '../src/shared/flags.js';
import { MESSAGE_SPECS, Msg } from '../src/shared/ipcProtocol.js';
import { parseCommandLine, type ProxyOptions } from '../src/supervisor/startup/cli.js';
import { decodeWorkerConfig, encodeWorkerConfig, workerConfigFor } from '../src/shared/workerConfig.js';
import { WIDEST_CONFIG_BYTES, type WorkerConfig } from '../src/shared/workerConfig.js';

function flags(args: readonly string[]): ProxyOptions {
  const command = parseCommandLine(args);
  assert.equal(command.kind, 'run');
  return (command as { options: ProxyOptions }).options;
}

const READ_PATHS = ['/opt/proxy', '/proc/self/status'];

/** What the supervisor derives from the open-file limit when --max-concurrent is not given. */
const DERIVED_MAX_OPEN_STREAMS = 15_897;

function configFor(args: readonly string[], dumpDir: string | null = null): WorkerConfig {
  const given = flags(args);
  const settled = { ...given, maxOpenStreams: given.maxOpenStreams ?? DERIVED_MAX_OPEN_STREAMS };
  return workerConfigFor(settled, { dumpDir, allowCapabilities: false, readPaths: READ_PATHS });
}

const roundTrip = (config: unknown): WorkerConfig => decodeWorkerConfig(Buffer.from(JSON.stringify(config)));

/** The ProtocolError message decoding `payload` fails with. */
function refusal(payload: Buffer | object): string {
  try {
    decodeWorkerConfig(Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)));
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_IPC_PROTOCOL');
    return err.message;
  }
  assert.fail(`accepted: ${String(payload)}`);
}

const BASE = configFor(['--websocket', '--http-shutdown', '--log-level', 'debug'], '/var/dumps');

describe('workerConfig: what the supervisor sends', () => {
  test('holds the flags the worker reads and what the supervisor adds, nothing else', () => {
    const config = configFor([]);
    const workerKeys = WORKER_FLAG_ENTRIES.map(([key]) => key);
    assert.deepEqual(Object.keys(config).sort(), [...workerKeys, 'allowCapabilities', 'readPaths'].sort());
    for (const key of workerKeys) {
      if (key !== 'maxOpenStreams') assert.deepEqual(config[key], flags([])[key], key);
    }
    assert.equal(flags([]).maxOpenStreams, null, 'not given: derived at startup');
    assert.equal(config.maxOpenStreams, DERIVED_MAX_OPEN_STREAMS, 'the worker gets the derived value');
    for (const supervisorOnly of [
      'port',
      'serverInfo',
      'upstreamUrl',
      'upstreamTimeoutMs',
      'uid',
      'gid',
      'checkSandbox',
    ]) {
      assert.ok(!(supervisorOnly in config), supervisorOnly);
    }
    const given = configFor(['--max-concurrent', '300']).maxOpenStreams;
    assert.equal(given, 300, '--max-concurrent goes by the name the worker has for it');
  });

  test('dumpDir is the directory the supervisor created, not the flag as typed', () => {
    assert.equal(configFor(['--dump-dir', 'relative'], '/abs/relative').dumpDir, '/abs/relative');
  });

  test('decodes as it was encoded', () => {
    assert.deepEqual(decodeWorkerConfig(encodeWorkerConfig(BASE)), BASE);
    const extremes = configFor(
      [
        ...['--websocket', '--ws-max-message-bytes', '999999999999999', '--ws-idle-timeout', '2147483.647'],
        ...['--max-concurrent', String(MAX_OPEN_STREAMS)],
        ...['--dump-max-bytes', '0', '--max-body-bytes', '0', '--allow-weaker-sandbox', '--log-level', 'silent'],
      ],
      '/'.repeat(4096),
    );
    assert.deepEqual(decodeWorkerConfig(encodeWorkerConfig(extremes)), extremes);
    const smallest = ['--ws-max-message-bytes=1', '--ws-idle-timeout=0.001', '--max-concurrent=1'];
    const least = configFor(['--websocket', ...smallest]);
    assert.deepEqual(decodeWorkerConfig(encodeWorkerConfig(least)), least);
  });

  test('the longest CONFIG the flag bounds allow fits the CONFIG frame', () => {
    const limit = MESSAGE_SPECS.get(Msg.CONFIG)?.maxPayload;
    assert.ok(limit !== undefined);
    assert.ok(WIDEST_CONFIG_BYTES > 4096 * 6, 'a 4096-byte dumpDir of control characters is counted');
    assert.ok(WIDEST_CONFIG_BYTES <= limit, `${WIDEST_CONFIG_BYTES} <= ${limit}`);
  });
});

describe('workerConfig: decodeWorkerConfig refuses', () => {
  test('a payload that is not JSON, or not an object', () => {
    assert.equal(refusal(Buffer.from('{"httpShutdown":')), 'CONFIG is not JSON');
    for (const value of ['null', '[]', '5', '"x"']) {
      assert.equal(refusal(Buffer.from(value)), 'CONFIG is not an object', value);
    }
  });

  const bad: readonly [field: string, value: unknown][] = [
    ['httpShutdown', 'true'],
    ['httpShutdown', 1],
    ['logLevel', 'loud'],
    ['logLevel', null],
    ['maxOpenStreams', 0],
    ['maxOpenStreams', MAX_OPEN_STREAMS + 1],
    ['maxOpenStreams', null],
    ['maxOpenStreams', 1.5],
    ['maxOpenStreams', '256'],
    ['maxBodyBytes', -1],
    ['maxBodyBytes', 2 ** 53],
    ['dumpMaxBytes', null],
    ['dumpDir', 5],
    ['dumpDir', 'x'.repeat(4097)],
    ['dumpDir', 'é'.repeat(2049)], // 4098 bytes
    ['allowWeakerSandbox', null],
    ['allowCapabilities', 'false'],
    ['webSocket', {}],
    ['webSocket', []],
    ['webSocket', false],
    ['webSocket', { maxMessageBytes: 0, idleTimeoutMs: 1000 }],
    ['webSocket', { maxMessageBytes: 1, idleTimeoutMs: 0 }],
    ['webSocket', { maxMessageBytes: 1, idleTimeoutMs: 2 ** 31 }],
    ['webSocket', { maxMessageBytes: 1 }],
    ['webSocket', { maxMessageBytes: 1, idleTimeoutMs: 1000, extra: 1 }],
    ['readPaths', '/opt'],
    ['readPaths', ['relative/path']],
    ['readPaths', ['/with\nnewline']],
    ['readPaths', ['/with"quote']],
    ['readPaths', ['/'.repeat(4097)]],
    ['readPaths', Array.from({ length: 9 }, (_, i) => `/p${i}`)],
  ];
  for (const [field, value] of bad) {
    test(`${field}: ${JSON.stringify(value).slice(0, 40)}`, () => {
      assert.equal(refusal({ ...BASE, [field]: value }), `CONFIG.${field} is missing, unknown or out of bounds`);
    });
  }

  for (const field of Object.keys(BASE)) {
    test(`a CONFIG without ${field}`, () => {
      const config: Record<string, unknown> = { ...BASE };
      delete config[field];
      assert.equal(refusal(config), `CONFIG.${field} is missing, unknown or out of bounds`);
    });
  }

  test('a field the table does not have', () => {
    const withUrl = { ...BASE, upstreamUrl: 'https://example.com/' };
    assert.equal(refusal(withUrl), 'CONFIG.upstreamUrl is missing, unknown or out of bounds');
    const withProto = Buffer.from(JSON.stringify(BASE).replace(/^\{/, '{"__proto__":{"httpShutdown":true},'));
    assert.equal(refusal(withProto), 'CONFIG.__proto__ is missing, unknown or out of bounds');
  });

  test('but takes a field at each bound', () => {
    assert.equal(roundTrip({ ...BASE, maxOpenStreams: MAX_OPEN_STREAMS }).maxOpenStreams, MAX_OPEN_STREAMS);
    assert.equal(roundTrip({ ...BASE, dumpDir: 'é'.repeat(2048) }).dumpDir, 'é'.repeat(2048));
    assert.equal(roundTrip({ ...BASE, maxBodyBytes: Number.MAX_SAFE_INTEGER }).maxBodyBytes, Number.MAX_SAFE_INTEGER);
    assert.equal(roundTrip({ ...BASE, webSocket: null }).webSocket, null);
    const widestPaths = Array.from({ length: 8 }, () => '/'.repeat(4096));
    assert.deepEqual(roundTrip({ ...BASE, readPaths: widestPaths }).readPaths, widestPaths);
    assert.deepEqual(roundTrip({ ...BASE, webSocket: { maxMessageBytes: 1, idleTimeoutMs: 2 ** 31 - 1 } }).webSocket, {
      maxMessageBytes: 1,
      idleTimeoutMs: 2 ** 31 - 1,
    });
  });
});
