// --github-oidc end to end (issue 18), as root in a network namespace of its
// own where auth.openai.com and api.openai.com are HTTPS mocks on loopback
// and GitHub's ID token endpoint another (test/fixtures/oidcScenarios.ts): the
// requests the proxy makes, renewal under continuous load with tokens of a
// few seconds, a burst during a renewal, a failing and a hanging renewal, the
// first token failing in every way the original names, and where every
// credential lies in memory afterwards.
//
// In the soak suite: its tokens live seconds, so it runs alone rather than beside other suites.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { stackLines } from '../helpers/netProbe.js';
import { namespaceSkipReason, runScenario } from '../helpers/oidcNamespace.js';
import { AUDIENCE, GITHUB_HOST, GITHUB_PATH, IDENTITY_PROVIDER_ID, SERVICE_ACCOUNT_ID } from '../helpers/oidcWorld.js';

const skip = namespaceSkipReason();
const UNAVAILABLE_BODY = {
  error: {
    message: 'workload identity renewal temporarily unavailable; retry later',
    type: 'server_error',
    code: 'workload_identity_unavailable',
    param: null,
  },
};

interface Figures {
  readonly found: number;
  readonly tailFound: number;
  readonly unlocked: string[];
}
interface Scan {
  readonly bytesScanned: number;
  readonly secrets: Figures[];
}
type LogLine = Record<string, unknown> & { msg: string };

const mib = (scan: Scan): string => (scan.bytesScanned / 2 ** 20).toFixed(0);

// Every scenario runs side by side with the others (the describes below inherit the concurrency), each in a
// namespace of its own: about 40 s in all.
describe('--github-oidc in a namespace of its own', { skip, concurrency: true, timeout: 150_000 }, () => {
  describe('--github-oidc: requests, renewal under load, memory', { timeout: 150_000 }, () => {
    const REQUESTS =
      'the GitHub request, the exchange body; nothing listens or is written before the token; ' +
      'HTTP and WebSocket use it';
    test(REQUESTS, async () => {
      interface Result {
        requestToken: string;
        idTokens: string[];
        github: Array<{ method: string; url: string; rawHeaders: string[] }>;
        exchanges: Array<{ headers: Record<string, string>; body: string }>;
        accessTokens: string[];
        whileExchanging: { serverInfo: boolean; listening: boolean };
        http: { status: number };
        webSocket: { status: number };
        upstream: Array<{ kind: string; tokenIndex: number; valid: boolean }>;
        stderr: string;
      }
      const r = await runScenario<Result>('requests');
      assert.equal(r.github.length, 1);
      const github = r.github[0] as Result['github'][number];
      assert.equal(github.method, 'GET');
      assert.equal(
        github.url,
        `${GITHUB_PATH}&audience=${new URLSearchParams({ audience: AUDIENCE }).toString().slice('audience='.length)}`,
      );
      assert.equal(github.url.split('&audience=')[1], 'api%3A%2F%2Fopenai.example%2Fwif+audience%26x%3D1');
      const headers = Object.fromEntries(
        github.rawHeaders.flatMap((v, i, a) => (i % 2 === 0 ? [[v.toLowerCase(), a[i + 1]]] : [])),
      );
      assert.deepEqual(headers, {
        host: `${GITHUB_HOST}:8443`,
        authorization: `Bearer ${r.requestToken}`,
        accept: '*/*',
        connection: 'close',
      });

      assert.equal(r.exchanges.length, 1);
      const exchange = r.exchanges[0] as Result['exchanges'][number];
      assert.equal(exchange.headers['content-type'], 'application/json');
      assert.equal(exchange.headers.host, 'auth.openai.com');
      assert.equal(
        exchange.body,
        JSON.stringify({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          subject_token: r.idTokens[0],
          identity_provider_id: IDENTITY_PROVIDER_ID,
          service_account_id: SERVICE_ACCOUNT_ID,
        }),
      );
      assert.deepEqual(r.whileExchanging, { serverInfo: false, listening: false }, 'nothing before the first token');
      assert.equal(r.http.status, 200);
      assert.equal(r.webSocket.status, 101);
      assert.deepEqual(
        r.upstream.map((u) => [u.kind, u.tokenIndex, u.valid]),
        [
          ['http', 0, true],
          ['ws', 0, true],
        ],
      );
      for (const secret of [r.requestToken, ...r.idTokens, ...r.accessTokens])
        assert.ok(!r.stderr.includes(secret), 'a credential in the log');
    });

    const RENEWAL =
      'tokens of 10 s, 20 s of continuous POSTs, 7-s streams and WebSockets: renewed at 3/4, zero failures, ' +
      'each token valid when sent; then only locked supervisor memory holds credentials';
    test(RENEWAL, async (t) => {
      interface Result {
        started: number;
        counts: { posts: number; streams: number; webSockets: number; sessionTurns: number };
        failures: string[];
        upstream: { total: number; invalid: unknown[] };
        github: number[];
        exchanges: Array<{ at: number; answeredAt: number; status: number }>;
        tokens: Array<{ issuedAt: number; expiresAt: number }>;
        tokenUse: number[];
        echo: { status: number; body: string };
        memory: { supervisor: Scan; supervisorIdTokens: Scan; worker: Scan };
        log: LogLine[];
      }
      const r = await runScenario<Result>('renewal', {}, 110_000);
      const at = (ms: number): string => `${((ms - r.started) / 1000).toFixed(2)} s`;
      t.diagnostic(
        `timeline: ${r.exchanges
          .map((e, i) => `GitHub ${at(r.github[i] ?? 0)} → exchange ${at(e.at)}, token ${i} used ${r.tokenUse[i]}×`)
          .join('; ')}`,
      );
      t.diagnostic(`traffic: ${JSON.stringify(r.counts)}; upstream requests ${r.upstream.total}`);
      assert.deepEqual(r.failures, []);
      assert.ok(
        r.counts.posts >= 2_000 && r.counts.streams >= 4 && r.counts.webSockets >= 20 && r.counts.sessionTurns >= 15,
        JSON.stringify(r.counts),
      );
      assert.deepEqual(r.upstream.invalid, [], 'every upstream request carried a token valid when it arrived');
      // Startup, then at least two renewals in the 20 s; each renewal starts at 3/4 of the previous token's life,
      // counted (as the proxy counts it, to be safe) from when that token was asked for: its GitHub request.
      assert.ok(r.exchanges.length >= 3, `${r.exchanges.length} exchanges`);
      for (let i = 1; i < r.exchanges.length; i++) {
        const previous = r.tokens[i - 1] as Result['tokens'][number];
        const lifetime = previous.expiresAt - previous.issuedAt;
        const renewalStart = (r.github[i] as number) - (r.github[i - 1] as number);
        assert.ok(
          renewalStart > lifetime * 0.6 && renewalStart < lifetime * 0.9,
          `renewal ${i} began ${renewalStart} ms into a ${lifetime} ms token`,
        );
      }
      // The renewed tokens carry the traffic (the first may be renewed before a loaded machine starts sending).
      assert.ok(
        r.tokenUse.slice(1, 3).every((uses) => uses > 0),
        `tokens used: ${r.tokenUse}`,
      );
      const renewed = r.log.filter((l) => l.msg === 'workload identity token renewed');
      assert.equal(renewed.length, r.exchanges.length - 1);
      assert.deepEqual(
        r.log.filter((l) => l.msg !== 'workload identity token renewed'),
        [],
        'no failed renewal, no expiry',
      );

      // The scrubber masks the current and the previous token in what the upstream sends back.
      assert.equal(r.echo.status, 200);
      const echoed = (JSON.parse(r.echo.body) as { echoed: string[] }).echoed;
      assert.ok(echoed.length === 2 && echoed.every((s) => s.length > 500 && /^\*+$/.test(s)), `echoed: ${echoed}`);

      const { supervisor, supervisorIdTokens, worker } = r.memory;
      const [requestToken, ...accessTokens] = supervisor.secrets as [Figures, ...Figures[]];
      t.diagnostic(
        `memory: supervisor ${mib(supervisor)} MiB scanned: request token ${requestToken.found}×, ` +
          `access tokens ${accessTokens.map((f) => f.found).join('/')}× ` +
          `(tails ${accessTokens.map((f) => f.tailFound).join('/')}), all locked; ` +
          `GitHub ID tokens ${supervisorIdTokens.secrets.map((f) => f.tailFound).join('/')}×; ` +
          `worker ${mib(worker)} MiB: ${worker.secrets.reduce((n, f) => n + f.tailFound, 0)} occurrences`,
      );
      assert.ok(requestToken.found >= 1, 'the request token is found (the scan sees the supervisor)');
      assert.ok(
        accessTokens.slice(-2).every((f) => f.found >= 1),
        'the current and previous tokens are found',
      );
      assert.deepEqual(
        supervisor.secrets.flatMap((f) => f.unlocked),
        [],
        'only locked memory holds them',
      );
      assert.ok(
        accessTokens.slice(0, -2).every((f) => f.tailFound === 0),
        'tokens before the previous one are gone',
      );
      assert.ok(
        supervisorIdTokens.secrets.every((f) => f.tailFound === 0),
        'GitHub ID tokens never enter the supervisor',
      );
      assert.ok(
        worker.secrets.every((f) => f.tailFound === 0),
        'nothing of any credential in the worker',
      );
    });
  });

  describe('--github-oidc: bursts, failures, hanging endpoints, startup errors', { timeout: 150_000 }, () => {
    const BURST =
      'a burst of 100 POSTs and 5 WebSockets during a renewal: answered at once with the old token, one exchange';
    test(BURST, async () => {
      interface Result {
        warnings: string[];
        statuses: number[];
        failures: string[];
        answeredWhileHeld: number;
        during: { exchanges: number; githubRequests: number; tokensWhileHeld: number[]; tokens: number[] };
        after: { status: number; token: number };
        exchanges: number;
      }
      const r = await runScenario<Result>('burst');
      assert.deepEqual({ failures: r.failures, warnings: r.warnings }, { failures: [], warnings: [] });
      assert.deepEqual(r.statuses, [...Array(100).fill(200), ...Array(5).fill(101)]);
      assert.ok(
        r.answeredWhileHeld >= 1,
        `${r.answeredWhileHeld} answered while the exchange was held: requests do not wait for it`,
      );
      assert.deepEqual(r.during.tokensWhileHeld, [0]);
      assert.deepEqual(
        { exchanges: r.during.exchanges, githubRequests: r.during.githubRequests },
        { exchanges: 0, githubRequests: 0 },
      );
      assert.equal(r.exchanges, 2, 'startup and the one renewal');
      assert.deepEqual(r.after, { status: 200, token: 1 });
    });

    const FAILING =
      'a renewal that hangs, then fails: the old token until it expires, then 503 (the original message), ' +
      'then recovery by itself';
    test(FAILING, async (t) => {
      interface Result {
        t0: number;
        token: { issuedAt: number; expiresAt: number };
        events: Array<{ kind: string; status: number; body: string; at: number }>;
        github: number[];
        exchanges: Array<{ at: number; status: number }>;
        upstreamInvalid: number;
        log: LogLine[];
      }
      const r = await runScenario<Result>('failing');
      const rel = (ms: number): number => ms - r.t0;
      const summary: string[] = [];
      for (const e of r.events) {
        const last = summary.at(-1);
        const label = `${e.kind} ${e.status}`;
        if (last === undefined || !last.startsWith(label)) {
          summary.push(`${label} from ${(rel(e.at) / 1000).toFixed(1)} s`);
        }
      }
      t.diagnostic(
        `token 1 (from 0 s) valid until ${(rel(r.token.expiresAt) / 1000).toFixed(1)} s; ${summary.join(', ')}`,
      );
      t.diagnostic(
        `exchanges: ${r.exchanges.map((e) => `${(rel(e.at) / 1000).toFixed(1)} s → ${e.status}`).join(', ')}`,
      );
      assert.equal(r.upstreamInvalid, 0, 'no request went upstream with an expired token');
      for (const e of r.events) {
        assert.ok([200, 101, 503].includes(e.status), `${e.kind} ${e.status} ${e.body}`);
        if (e.status === 503) assert.deepEqual(JSON.parse(e.body), UNAVAILABLE_BODY);
      }
      const firstOutage = r.events.findIndex((e) => e.status === 503);
      const recovered = r.events.findLastIndex((e) => e.status === 503) + 1;
      assert.ok(firstOutage > 0 && recovered < r.events.length, 'served, then 503, then served again');
      assert.ok(r.events.slice(0, firstOutage).every((e) => e.status !== 503));
      assert.ok(r.events.slice(recovered).every((e) => e.status === 200 || e.status === 101));
      assert.ok(
        r.events.slice(firstOutage, recovered).some((e) => e.kind === 'ws'),
        'WebSocket handshakes get the 503 too',
      );
      const outageStart = rel((r.events[firstOutage] as { at: number }).at);
      // The renewal is due at 3/4 of the 8-s token's life; the token stays in use until its last tenth.
      const renewalDue = rel(r.token.issuedAt) + 6_000;
      assert.ok(outageStart > renewalDue, `503 from ${outageStart} ms, the renewal was due at ${renewalDue} ms`);
      assert.ok(
        rel((r.events[recovered] as { at: number }).at) < 15_000,
        'service resumed by itself after the exchange came back (at 9.5 s)',
      );

      const reasons = r.log.filter((l) => l.msg === 'workload identity token renewal failed').map((l) => l.reason);
      assert.equal(
        reasons[0],
        'GitHub OIDC token request failed: no complete answer within 1 s',
        'the hanging GitHub request is bounded',
      );
      assert.ok(reasons.slice(1).length >= 1);
      assert.ok(
        reasons
          .slice(1)
          .every((reason) => reason === 'OpenAI workload identity token request rejected (HTTP 500): exchange is down'),
      );
      const messages = r.log.map((l) => l.msg);
      assert.ok(messages.includes('workload identity token expired; requests get 503 until a renewal succeeds'));
      assert.ok(messages.includes('workload identity renewal recovered'));
      // Retries back off: 1 s, then 2 s between the failed attempts' starts (a little more with the hang).
      const gaps = r.github.slice(3, 5).map((at, i) => at - (r.github[i + 2] as number));
      assert.ok(
        gaps.every((gap, i) => gap >= 1_000 * 2 ** i),
        `retry gaps ${gaps}`,
      );
    });

    /** The first token cannot be had: exit 1, the original's message (plus the server's words), nothing opened. */
    const STARTUP_CASES = [
      {
        name: 'GitHub refuses',
        behaviour: { githubFailure: { status: 403, body: '{"message":"Bad credentials"}' } },
        message: 'GitHub OIDC token request rejected (HTTP 403): Bad credentials',
      },
      {
        name: 'GitHub hangs',
        behaviour: { githubFailure: 'hang' },
        message: 'GitHub OIDC token request failed: no complete answer within 2 s',
      },
      {
        name: 'GitHub answers no value',
        behaviour: { githubFailure: { status: 200, body: '{"count":1}' } },
        message: 'GitHub OIDC returned an invalid token response',
      },
      {
        name: 'GitHub answers a value that is no token',
        behaviour: { githubFailure: { status: 200, body: '{"value":"not a token"}' } },
        message: 'workload identity source returned an invalid subject token',
      },
      {
        name: 'the exchange refuses',
        behaviour: {
          exchangeFailure: {
            status: 401,
            body: '{"error":"invalid_grant","error_description":"subject token rejected"}',
          },
        },
        message: 'OpenAI workload identity token request rejected (HTTP 401): subject token rejected',
      },
      {
        name: 'the exchange refuses, echoing the ID token',
        behaviour: { exchangeFailure: { status: 400, body: '{"error":{"message":"bad subject {subject}"}}' } },
        message: /^OpenAI workload identity token request rejected \(HTTP 400\): bad subject \*{100,}$/,
      },
      {
        name: 'the exchange hangs',
        behaviour: { exchangeFailure: 'hang' },
        message: 'OpenAI workload identity token exchange failed: no complete answer within 2 s',
      },
      {
        name: 'the exchange answers no JSON',
        behaviour: { exchangeFailure: { status: 200, body: '<html>' } },
        message: 'OpenAI workload identity returned an invalid token response',
      },
      {
        name: 'a JWT instead of an access token',
        behaviour: { exchangeAnswer: { issued_token_type: 'urn:ietf:params:oauth:token-type:jwt' } },
        message: 'OpenAI returned an unsupported workload identity token type',
      },
      {
        name: 'a DPoP token',
        behaviour: { exchangeAnswer: { token_type: 'DPoP' } },
        message: 'OpenAI returned an unsupported workload identity token type',
      },
      {
        name: 'a lifetime of two hours',
        behaviour: { exchangeAnswer: { expires_in: 7200 } },
        message: 'OpenAI returned an invalid token lifetime',
      },
      {
        name: 'a lifetime of 0',
        behaviour: { exchangeAnswer: { expires_in: 0 } },
        message: 'OpenAI returned an expired workload identity token',
      },
      {
        name: 'expires_at in the past',
        behaviour: { exchangeAnswer: { expires_at: 1_000_000_000 } },
        message: 'OpenAI returned an expired workload identity token',
      },
      {
        name: 'an access token with a space',
        behaviour: { exchangeAnswer: { access_token: 'not a token' } },
        message: 'invalid workload identity bearer credential',
      },
    ] as const;

    const STARTUP = `the first token fails (${STARTUP_CASES.length} ways): exit 1, one line, nothing listens`;
    test(`${STARTUP}, no server-info, no credential printed`, async () => {
      interface Result {
        name: string;
        status: { code: number | null; signal: string | null } | null;
        seconds: number;
        stderr: string;
        stdout: string;
        serverInfo: boolean;
        port: string;
        secretsInOutput: number;
      }
      const results = await runScenario<Result[]>('startup', {
        cases: STARTUP_CASES.map(({ name, behaviour }) => ({ name, behaviour })),
      });
      for (const [i, c] of STARTUP_CASES.entries()) {
        const r = results[i] as Result;
        assert.deepEqual(r.status, { code: 1, signal: null }, `${c.name}: ${r.stderr}`);
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        assert.equal(lines.length, 1, `${c.name}: one line, got ${r.stderr}`);
        const message = (lines[0] as string).replace(/^Error: /, '');
        if (typeof c.message === 'string') assert.equal(message, c.message, c.name);
        else assert.match(message, c.message, c.name);
        assert.deepEqual(stackLines(r.stderr), [], c.name);
        assert.equal(r.stdout, '');
        assert.equal(r.serverInfo, false, `${c.name}: server-info written`);
        assert.equal(r.port, 'refused', `${c.name}: something listens`);
        assert.equal(r.secretsInOutput, 0, `${c.name}: a credential in the output`);
        assert.ok(r.seconds < 20, `${c.name}: took ${r.seconds} s`);
      }
    });
  });
});
