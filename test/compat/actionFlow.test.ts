// The Codex GitHub Action's flow, scripted as the action runs it, with the
// proxy installed from `npm pack` into an empty directory: root starts it in
// the background of one "step" whose stdout/stderr pipes then close; the
// unprivileged user nobody reads the port, makes a request, and shuts it down.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MockUpstream } from '../helpers/mockUpstream.js';
import { TEST_KEY, isAlive, waitFor } from '../helpers/proxyProcess.js';
import { tryConnect } from '../helpers/netProbe.js';
import { packProxy, tarballEntries } from '../helpers/packedProxy.js';
const asRoot = process.getuid?.() === 0;

/** Run a bash script; resolves with its exit code and output. Killed after timeoutMs. */
function bash(
  script: string,
  env: NodeJS.ProcessEnv,
  uid?: number,
  timeoutMs = 30_000,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-euo', 'pipefail', '-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      ...(uid === undefined ? {} : { uid, gid: uid }),
      cwd: '/',
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe(
  'GitHub Action flow with the packed and installed proxy',
  { timeout: 300_000, skip: !asRoot && 'needs root: the flow switches to the user nobody' },
  () => {
    let work: string;
    let tarball: string;
    let bin: string;
    let upstream: MockUpstream;

    before(() => {
      work = mkdtempSync(join(tmpdir(), 'rap-action-'));
      chmodSync(work, 0o755); // nobody reads the server-info file below it
      tarball = packProxy(work);
      const install = join(work, 'install');
      execFileSync('mkdir', ['-p', install]);
      execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
        cwd: install,
        timeout: 180_000,
        stdio: 'ignore',
      });
      bin = join(install, 'node_modules', '.bin', 'codex-responses-api-proxy');
    });
    after(async () => {
      await upstream?.close();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    test('the tarball holds only what runs', () => {
      const entries = tarballEntries(tarball);
      const outside = entries.filter((e) => !/^package\/(dist\/src\/.+\.js|README\.md|LICENSE|package\.json)$/.test(e));
      assert.deepEqual(outside, []);
      assert.ok(entries.includes('package/dist/src/supervisor/main.js'));
      assert.ok(entries.includes('package/dist/src/worker/main.js'));
    });

    test('root starts it, the step ends, nobody uses it and shuts it down', async () => {
      upstream = await MockUpstream.start((req, res) => {
        const ok = req.headers.authorization === `Bearer ${TEST_KEY}`;
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok }));
      });
      const info = join(work, 'server-info.json');
      // Step 1 (root): exactly the action's command, in the background. The
      // subshell records the proxy's exit code; the step's pipes close when it ends.
      const step = await bash(
        `( printenv KEY | env -u KEY "$BIN" --http-shutdown --server-info "$INFO" --upstream-url "$UPSTREAM"; echo $? > "$WORK/exit-code" ) &
       for i in $(seq 1 100); do [ -s "$INFO" ] && break; sleep 0.1; done
       [ -s "$INFO" ]
       chmod 444 "$INFO"
       chown root "$INFO"`,
        { KEY: TEST_KEY, BIN: bin, INFO: info, WORK: work, UPSTREAM: upstream.url() },
      );
      assert.equal(step.code, 0, step.err);
      const { port, pid } = JSON.parse(readFileSync(info, 'utf8')) as { port: number; pid: number };
      assert.ok(isAlive(pid), 'the proxy outlives its step and its closed pipes');
      assert.ok(
        !readFileSync(`/proc/${pid}/environ`, 'latin1').includes(TEST_KEY),
        'env -u KEY: not in its environment',
      );

      // Step 2 (nobody): read the port, use the proxy, shut it down.
      const user = await bash(
        `PROXY_PORT=$(jq .port "$INFO")
       curl --fail --silent --show-error -X POST -H 'content-type: application/json' -d '{"input":"hi"}' "http://127.0.0.1:\${PROXY_PORT}/v1/responses"
       echo
       curl --fail --silent --show-error "http://127.0.0.1:\${PROXY_PORT}/shutdown"`,
        { INFO: info },
        65534,
      );
      assert.equal(user.code, 0, user.err);
      assert.equal(user.out.trim(), '{"ok":true}');

      assert.ok(await waitFor(() => existsSync(join(work, 'exit-code')), 5_000), 'the proxy exited');
      assert.equal(readFileSync(join(work, 'exit-code'), 'utf8').trim(), '0');
      assert.equal(await tryConnect(port), 'refused', 'nothing listens on the port');
      assert.ok(!existsSync(info), 'server-info removed');
    });
  },
);
