// readSecretJson: the secret field straight into secure memory, every other
// string blanked unless named public, the syntax checked by JSON.parse.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readSecretJson } from '../src/supervisor/credential/secureJson.js';

function read(json: string, publicFields: string[] = [], prefix = '') {
  const { secret, fields } = readSecretJson(Buffer.from(json), 'access_token', publicFields, prefix);
  const text = secret === null ? null : secret.read((bytes) => bytes.toString('latin1'));
  secret?.destroy();
  return { text, fields };
}

describe('readSecretJson', () => {
  test('the top-level field, with the prefix, its escapes decoded byte by byte', () => {
    assert.equal(read('{"access_token":"a\\/b\\u002ec\\"d"}', [], 'Bearer ').text, 'Bearer a/b.c"d');
    assert.equal(read(' { "x" : 1 , "access_token" :\n "tok" } ').text, 'tok');
  });

  test('only public fields keep their strings; the secret and everything else is blanked', () => {
    const { fields } = read(
      '{"access_token":"tok","token_type":"Bearer","refresh_token":"r","n":{"s":"deep"},"a":["x"],"expires_in":60}',
      ['token_type'],
    );
    assert.deepEqual(fields, {
      access_token: '',
      token_type: 'Bearer',
      refresh_token: '',
      n: { s: '' },
      a: [''],
      expires_in: 60,
    });
  });

  test('a nested field of that name is not the secret', () => {
    assert.equal(read('{"data":{"access_token":"nested"}}').text, null);
    assert.equal(read('{"data":{"access_token":"nested"},"access_token":"top"}').text, 'top');
  });

  test('absent or not a string: no secret', () => {
    assert.equal(read('{"other":"x"}').text, null);
    assert.equal(read('{"access_token":42}').text, null);
    assert.equal(read('{"access_token":null}').text, null);
  });

  test('a key spelt with escapes is the same key', () => {
    assert.equal(read('{"access\\u005ftoken":"tok"}').text, 'tok');
  });

  test('a \\u escape outside ASCII becomes a byte no credential alphabet has', () => {
    assert.equal(read('{"access_token":"a\\u00e9b"}').text, 'a\xffb');
  });

  test('malformed, not an object, or the field twice: SyntaxError', () => {
    for (const json of [
      '{"access_token":"tok"',
      '{"access_token":"tok" "x":1}',
      '["access_token"]',
      'null',
      '{"access_token":"a\nb"}',
      '{"access_token":"a","access_token":"b"}',
      '{"access_token":"\\q"}',
      '{"access_token":"\\u12"}',
    ]) {
      assert.throws(() => read(json), SyntaxError, json);
    }
  });
});
