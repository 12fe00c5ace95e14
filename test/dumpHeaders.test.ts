// Header redaction in --dump-dir files, as a pure function: Authorization and
// every field whose name contains "cookie" are redacted whatever their case
// (the original's rule), and so is each field the supervisor found the key in
// (REQUEST_SCANNED gives their indexes, in pairs). dumps.test.ts checks the
// files a running proxy writes.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { dumpHeaders } from '../src/worker/dumpWriter.js';

const REDACTED = '[REDACTED]';
const KEY_REDACTED = '[REDACTED: contained the proxy API key]';
const SECRET = 'secret-value-1234';

function valueOf(name: string, keyBearing?: ReadonlySet<number>): string {
  const [field] = dumpHeaders([name, SECRET], keyBearing);
  return (field as { value: string }).value;
}

describe('dumpHeaders', () => {
  test('Authorization is redacted in any case', () => {
    for (const name of ['Authorization', 'authorization', 'AUTHORIZATION', 'aUtHoRiZaTiOn']) {
      assert.equal(valueOf(name), REDACTED, name);
    }
  });

  test('any field whose name contains "cookie" is redacted, in any case', () => {
    const names = ['Cookie', 'cookie', 'COOKIE', 'Set-Cookie', 'set-cookie', 'SET-COOKIE', 'Cookie2', 'Set-Cookie2'];
    names.push('X-Session-Cookie', 'xcookiex', 'X-COOKIE-jar', 'cOoKiE');
    for (const name of names) assert.equal(valueOf(name), REDACTED, name);
  });

  test('other fields are dumped in full, names as sent', () => {
    const names = ['Content-Type', 'x-request-id', 'OpenAI-Beta', 'Authorization-Hint', 'X-Authorization', 'Cooki'];
    names.push('Coo-kie', 'C-o-o-k-i-e');
    for (const name of names) assert.deepEqual(dumpHeaders([name, SECRET]), [{ name, value: SECRET }], name);
  });

  test('fields at key-bearing indexes (in pairs) are redacted as containing the key; the others are not', () => {
    const headers = ['Accept', 'text/event-stream', 'X-Custom', `Bearer ${SECRET}`];
    headers.push('User-Agent', 'codex', 'X-Other', SECRET);
    assert.deepEqual(dumpHeaders(headers, new Set([1, 3])), [
      { name: 'Accept', value: 'text/event-stream' },
      { name: 'X-Custom', value: KEY_REDACTED },
      { name: 'User-Agent', value: 'codex' },
      { name: 'X-Other', value: KEY_REDACTED },
    ]);
    assert.equal(valueOf('X-Custom', new Set([0])), KEY_REDACTED);
    assert.equal(valueOf('X-Custom', new Set([1])), SECRET, 'an index past the list changes nothing');
  });

  test('a key-bearing Authorization or cookie field is still redacted', () => {
    assert.equal(valueOf('authorization', new Set([0])), REDACTED);
    assert.equal(valueOf('Set-Cookie', new Set([0])), REDACTED);
  });

  test('repeated fields are each redacted; order and names are kept; no redacted value is left anywhere', () => {
    const headers = ['Set-Cookie', `a=${SECRET}`, 'Host', 'example'];
    headers.push('set-cookie', `b=${SECRET}`, 'AUTHORIZATION', SECRET);
    const dumped = dumpHeaders(headers);
    assert.deepEqual(dumped, [
      { name: 'Set-Cookie', value: REDACTED },
      { name: 'Host', value: 'example' },
      { name: 'set-cookie', value: REDACTED },
      { name: 'AUTHORIZATION', value: REDACTED },
    ]);
    assert.equal(JSON.stringify(dumped).includes(SECRET), false);
  });

  test('no fields, no dumped fields', () => {
    assert.deepEqual(dumpHeaders([]), []);
  });
});
