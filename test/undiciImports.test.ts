// The supervisor imports two of undici's own files rather than its index
// (upstream.ts says why): they must still hold what the index exports.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as undici from 'undici';
import buildConnector from 'undici/lib/core/connect.js';
import Pool from 'undici/lib/dispatcher/pool.js';

test("undici's pool.js and connect.js are its public Pool and buildConnector", () => {
  assert.equal(Pool, undici.Pool);
  assert.equal(buildConnector, undici.buildConnector);
});
