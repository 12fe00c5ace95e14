// The bound on one dump file (dumpFileLimit): what an honest worker formats
// stays within it whatever the client or upstream sends (bodies of control
// characters, numbers that print longer, wide nesting, floods of empty
// WebSocket messages). dumpFiles.test holds the supervisor to it.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FrameDecoder, FrameWriter, Msg, dumpFileLimit } from '../src/shared/ipcProtocol.js';
import type { Logger } from '../src/shared/logger.js';
import { DumpWriter, HttpExchangeDump, WebSocketDump } from '../src/worker/dumpWriter.js';
import { waitFor } from './helpers/proxyProcess.js';

const LIMIT = 64 * 1024; // --dump-max-bytes for these cases
const NO_KEY = { bodyHasKey: false, headerIndexes: [] };

/** A DumpWriter whose files are collected whole; DUMP_WINDOW credit is returned at once. */
function collectingDumpWriter(maxBodyBytes: number): { dumps: DumpWriter; files: Buffer[]; errors: string[] } {
  const files: Buffer[] = [];
  const errors: string[] = [];
  let current: Buffer[] = [];
  let dumps: DumpWriter | null = null;
  const decoder = new FrameDecoder('worker', (type, _id, payload) => {
    if (type === Msg.DUMP_FILE) current = [];
    if (type === Msg.DUMP_DATA) {
      current.push(Buffer.from(payload));
      queueMicrotask(() => dumps?.grant(payload.length));
    }
    if (type === Msg.DUMP_END) files.push(Buffer.concat(current));
  });
  const sink = { destroyed: false, cork: () => {}, uncork: () => {}, write: (b: Buffer) => (decoder.push(b), true) };
  const log = { error: (_fields: unknown, msg: string) => errors.push(msg) } as unknown as Logger;
  dumps = new DumpWriter(new FrameWriter(sink), maxBodyBytes, log);
  return { dumps, files, errors };
}

/** The request and response files of one HTTP exchange whose bodies are `request` and `response`. */
async function httpFiles(request: Buffer, response: Buffer): Promise<Buffer[]> {
  const { dumps, files, errors } = collectingDumpWriter(LIMIT);
  const exchange = new HttpExchangeDump(dumps, 1, 'POST', '/v1/responses', ['Content-Type', 'application/json']);
  exchange.requestBody.add(request);
  exchange.writeRequest(NO_KEY);
  exchange.onResponseHead(200, ['Content-Type', 'application/json']);
  exchange.responseBody.add(response);
  exchange.end();
  assert.ok(await waitFor(() => files.length === 2, 5_000), 'both files written');
  assert.deepEqual(errors, []);
  return files;
}

/** Repeat `unit` to at most `size` bytes. */
const filled = (unit: string, size: number): Buffer =>
  Buffer.from(unit.repeat(Math.floor(size / Buffer.byteLength(unit))));

describe('dump files stay within dumpFileLimit', () => {
  // What the body parts may take: the limit less its allowance for the heads.
  const bodyBound = dumpFileLimit(LIMIT) - dumpFileLimit(0);

  const bodies: Array<[string, Buffer]> = [
    ['control characters, dumped as text (\\u0001 is six bytes)', filled('\u0001', LIMIT)],
    ['control characters past the limit, dumped as truncated text', filled('\u0001', 2 * LIMIT)],
    ['invalid UTF-8, each byte a replacement character', Buffer.alloc(LIMIT, 0xff)],
    [
      'numbers that print longer (1e20 is 21 digits), pretty-printed',
      Buffer.from(`[${'1e20,'.repeat(LIMIT / 5 - 1)}1e20]`),
    ],
    ['the widest pretty growth still dumped as JSON', Buffer.from(`[${'[],'.repeat(LIMIT / 3 - 1)}[]]`)],
  ];
  for (const [name, body] of bodies) {
    test(name, async (t) => {
      const files = await httpFiles(body, body);
      t.diagnostic(`body ${body.length} B: files ${files.map((f) => f.length).join(' and ')} B, bound ${bodyBound}`);
      for (const file of files) assert.ok(file.length <= bodyBound, `${file.length} bytes > ${bodyBound}`);
      assert.ok(files.some((f) => f.length > 2 * LIMIT) || body.length < LIMIT, 'the case grows the body');
    });
  }

  test('WebSocket: message data of control characters, and a flood of empty messages', async (t) => {
    for (const data of [filled('\u0001', LIMIT / 4 - 128), Buffer.alloc(0)]) {
      const { dumps, files } = collectingDumpWriter(LIMIT);
      const session = new WebSocketDump(dumps, 1, '/v1/responses', []);
      session.onResponseHead(101, []);
      const count = data.length === 0 ? 100_000 : 5;
      for (let i = 0; i < count; i++) session.clientMessage(data, false);
      session.closed('client_to_upstream', 4000, '\u0001'.repeat(123));
      session.writeRequest(NO_KEY);
      session.end();
      assert.ok(await waitFor(() => files.length === 2, 5_000));
      const size = (files[1] as Buffer).length;
      t.diagnostic(`${count} messages of ${data.length} B: response file ${size} B, bound ${bodyBound}`);
      assert.ok(size <= bodyBound, `${size} bytes > ${bodyBound}`);
      assert.ok(size > 2 * LIMIT || data.length === 0, 'the case grows the data');
    }
  });

  test('a file over the limit is not written, and said so (a forced case: the format cannot grow that much)', async () => {
    const { dumps, files, errors } = collectingDumpWriter(0);
    dumps.write(1, 'request', 0, { body: 'x'.repeat(dumpFileLimit(0)) });
    dumps.write(1, 'response', 0, { body: 'fits' });
    assert.ok(await waitFor(() => files.length === 1, 5_000));
    assert.match(files[0]?.toString() ?? '', /"fits"/);
    assert.deepEqual(errors, ['dump file over its limit; not written']);
  });
});
