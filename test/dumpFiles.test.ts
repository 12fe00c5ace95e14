// The supervisor's half of --dump-dir (src/supervisor/dumpFiles.ts) on real
// files: names it makes itself, 0600 files, an existing name (file or symlink)
// never replaced or followed, and the worker held to its dump credit.

import assert from 'node:assert/strict';
import {
  closeSync,
  constants,
  lstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ProtocolError } from '../src/shared/errors.js';
import {
  DUMP_WINDOW_BYTES,
  FrameDecoder,
  FrameWriter,
  MAX_DATA_PAYLOAD,
  Msg,
  dumpFileLimit,
  encodeDumpFile,
} from '../src/shared/ipcProtocol.js';
import { LibcError, createFileAt } from '../src/shared/libc.js';
import type { Logger } from '../src/shared/logger.js';
import { DumpDirectory, DumpReceiver } from '../src/supervisor/dumpFiles.js';
import { waitFor } from './helpers/proxyProcess.js';

const STARTED = 1_700_000_000_123;

/** Log calls by level, message and fields. */
class RecordingLog {
  readonly lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> = [];
  warn(fields: Record<string, unknown>, msg: string): void {
    this.lines.push({ level: 'warn', fields, msg });
  }
  error(fields: Record<string, unknown>, msg: string): void {
    this.lines.push({ level: 'error', fields, msg });
  }
}

/** A FrameWriter whose frames (the DUMP_WINDOW credit) are decoded as sent. */
function creditWriter(): { writer: FrameWriter; credit: () => number } {
  let returned = 0;
  const decoder = new FrameDecoder('supervisor', (type, _id, payload) => {
    if (type === Msg.DUMP_WINDOW) returned += payload.readUInt32BE(0);
  });
  const sink = { destroyed: false, cork: () => {}, uncork: () => {}, write: (b: Buffer) => (decoder.push(b), true) };
  return { writer: new FrameWriter(sink), credit: () => returned };
}

describe('dump files written by the supervisor', () => {
  let dir: string;
  let log: RecordingLog;
  let directory: DumpDirectory;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'rap-dumpfiles-'));
    log = new RecordingLog();
    directory = DumpDirectory.open(dir, log as unknown as Logger);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('named from the stream and the time only, created 0600, owned by this process, credit returned', async () => {
    const { writer, credit } = creditWriter();
    const receiver = new DumpReceiver(directory, writer, 4, dumpFileLimit(0));
    receiver.onFile(2, encodeDumpFile('request', STARTED), 2);
    receiver.onData(2, Buffer.from('{"a":'));
    receiver.onData(2, Buffer.from('1}\n'));
    receiver.onEnd(2);
    assert.ok(await waitFor(() => credit() === 8, 5_000), 'credit for every byte written');
    const name = `000006-${STARTED}-request.json`;
    assert.deepEqual(readdirSync(dir), [name]);
    assert.equal(readFileSync(join(dir, name), 'utf8'), '{"a":1}\n');
    const stat = statSync(join(dir, name));
    assert.equal(stat.mode & 0o777, 0o600);
    assert.equal(stat.uid, process.geteuid?.());
  });

  test('an existing name is neither replaced nor followed: that dump is skipped with one log line', async () => {
    const target = join(dir, 'elsewhere.txt');
    writeFileSync(target, 'target');
    const linked = `000001-${STARTED}-request.json`;
    const planted = `000001-${STARTED}-response.json`;
    symlinkSync(target, join(dir, linked));
    writeFileSync(join(dir, planted), 'planted');
    const { writer, credit } = creditWriter();
    const receiver = new DumpReceiver(directory, writer, 0, dumpFileLimit(0));
    const before = log.lines.length;
    for (const kind of ['request', 'response'] as const) {
      receiver.onFile(1, encodeDumpFile(kind, STARTED), 1);
      receiver.onData(1, Buffer.from('dump bytes'));
      receiver.onEnd(1);
    }
    assert.ok(await waitFor(() => credit() === 20 && log.lines.length === before + 2, 5_000), 'credit back, logged');
    assert.equal(readFileSync(target, 'utf8'), 'target', 'the symlink was not followed');
    assert.ok(lstatSync(join(dir, linked)).isSymbolicLink(), 'the symlink is still there');
    assert.equal(readFileSync(join(dir, planted), 'utf8'), 'planted', 'the file was not replaced or written');
    const lines = log.lines.slice(before);
    assert.deepEqual(
      lines.map((l) => [l.level, l.fields.file]),
      [
        ['warn', linked],
        ['warn', planted],
      ],
      'one log line per skipped dump',
    );
  });

  test('where the filesystem has no O_TMPFILE: created under its name, O_EXCL|O_NOFOLLOW', () => {
    const target = join(dir, 'elsewhere-2.txt');
    writeFileSync(target, 'target');
    symlinkSync(target, join(dir, 'linked.json'));
    writeFileSync(join(dir, 'planted.json'), 'planted');
    const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      for (const name of ['linked.json', 'planted.json']) {
        assert.throws(
          () => createFileAt(dirFd, name, 0o600),
          (err) => err instanceof LibcError && err.errnoName === 'EEXIST',
        );
      }
      closeSync(createFileAt(dirFd, 'new.json', 0o600));
    } finally {
      closeSync(dirFd);
    }
    assert.equal(readFileSync(target, 'utf8'), 'target');
    assert.equal(readFileSync(join(dir, 'planted.json'), 'utf8'), 'planted');
    assert.equal(statSync(join(dir, 'new.json')).mode & 0o777, 0o600);
  });

  test('the worker is held to its dump credit', () => {
    const { writer } = creditWriter();
    const receiver = new DumpReceiver(directory, writer, 100, dumpFileLimit(0));
    receiver.onFile(1, encodeDumpFile('request', STARTED), 1);
    // The whole window arrives before any write can complete: this is all the worker may send.
    for (let sent = 0; sent < DUMP_WINDOW_BYTES; sent += MAX_DATA_PAYLOAD)
      receiver.onData(1, Buffer.alloc(MAX_DATA_PAYLOAD));
    assert.throws(
      () => receiver.onData(1, Buffer.from('x')),
      (err) => {
        assert.ok(err instanceof ProtocolError);
        assert.equal(err.message, `dump data beyond its ${DUMP_WINDOW_BYTES}-byte window`);
        return true;
      },
    );
    receiver.abandon();
  });

  test('a file that grows past dumpFileLimit is a violation', async () => {
    const { writer, credit } = creditWriter();
    const maxFileBytes = 3 * MAX_DATA_PAYLOAD + 10;
    const receiver = new DumpReceiver(directory, writer, 300, maxFileBytes);
    receiver.onFile(1, encodeDumpFile('request', STARTED), 1);
    for (let i = 0; i < 3; i++) receiver.onData(1, Buffer.alloc(MAX_DATA_PAYLOAD, 0x20));
    receiver.onData(1, Buffer.alloc(10, 0x20)); // exactly the limit
    assert.ok(await waitFor(() => credit() === maxFileBytes, 5_000), 'written, credit back');
    assert.throws(
      () => receiver.onData(1, Buffer.from(' ')),
      (err) => err instanceof ProtocolError && err.message === `a dump file of more than ${maxFileBytes} bytes`,
    );
    receiver.abandon();
  });

  test('frames out of order are violations', () => {
    const { writer } = creditWriter();
    const receiver = new DumpReceiver(directory, writer, 200, dumpFileLimit(0));
    const violation = (fn: () => void, message: string): void => {
      assert.throws(fn, (err) => err instanceof ProtocolError && err.message === message);
    };
    violation(() => receiver.onData(1, Buffer.from('x')), 'DUMP_DATA on stream 1 without DUMP_FILE');
    violation(() => receiver.onEnd(1), 'DUMP_END on stream 1 without DUMP_FILE');
    violation(
      () => receiver.onFile(3, encodeDumpFile('request', STARTED), 2),
      'DUMP_FILE for stream 3, which was never opened',
    );
    const unknownKind = encodeDumpFile('request', STARTED);
    unknownKind[0] = 2;
    violation(() => receiver.onFile(1, unknownKind, 2), 'DUMP_FILE of unknown kind 2');
    receiver.onFile(1, encodeDumpFile('request', STARTED), 2);
    violation(
      () => receiver.onFile(2, encodeDumpFile('request', STARTED), 2),
      'DUMP_FILE on stream 2 while another is open',
    );
    violation(() => receiver.onData(2, Buffer.from('x')), 'DUMP_DATA on stream 2 without DUMP_FILE');
    receiver.abandon();
  });
});
