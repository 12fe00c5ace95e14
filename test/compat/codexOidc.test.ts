// The real Codex CLI (pinned @openai/codex) completes a turn through a proxy in
// --github-oidc mode, as root in a network namespace where auth.openai.com and
// api.openai.com are loopback mocks (test/fixtures/oidcScenarios.ts): every
// request it caused reached api.openai.com with the exchanged access token.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { namespaceSkipReason, runScenario } from '../helpers/oidcNamespace.js';
import { CODEX_ANSWER } from '../helpers/oidcWorld.js';

describe('Codex CLI through a --github-oidc proxy', { skip: namespaceSkipReason(), timeout: 180_000 }, () => {
  test('codex exec prints the answer; each upstream request carried the access token', async () => {
    interface Result {
      run: { code: number | null; stdout: string; stderr: string };
      upstream: Array<{ kind: string; tokenIndex: number; valid: boolean }>;
      exchanges: number;
    }
    const r = await runScenario<Result>('codex', {}, 150_000);
    assert.equal(r.run.code, 0, r.run.stderr);
    assert.equal(r.run.stdout.trim(), CODEX_ANSWER);
    assert.ok(r.upstream.length >= 1);
    assert.deepEqual(
      r.upstream.map((u) => [u.tokenIndex, u.valid]),
      r.upstream.map(() => [0, true]),
    );
    assert.equal(r.exchanges, 1);
  });
});
