// Issue 8, point 4: what splicing the key in below undici costs. In its own
// process (forked by run.ts), the same small requests go to the mock upstream
// through two undici Pools, in interleaved trials:
//   plain   Authorization: Bearer <key> as an ordinary header string;
//   splice  the product's KeySplicer: a placeholder header, the key spliced
//           into the request head by the wrapped socket (keySplice.ts).
// Reported: requests/s and CPU µs per request of this process for each.

import { Pool } from 'undici';
import { readAuthHeader } from '../../src/supervisor/authHeader.js';
import { KeySplicer } from '../../src/supervisor/keySplice.js';
import { SMALL_REPLY, SMALL_REQUEST, nowUs } from './common.js';

export interface SpliceParams {
  readonly port: number;
  readonly key: string;
  readonly concurrency: number;
  readonly requests: number;
  readonly trials: number;
  readonly timeoutMs: number;
}

export interface SpliceTrial {
  readonly variant: 'plain' | 'splice';
  readonly ok: number;
  readonly failed: number;
  readonly rps: number;
  readonly cpuUsPerRequest: number;
}

async function trial(
  pool: Pool,
  variant: 'plain' | 'splice',
  authorization: string,
  p: SpliceParams,
): Promise<SpliceTrial> {
  const headers = { 'content-type': 'application/json', 'x-bench-mode': 'small', authorization };
  let issued = 0;
  let ok = 0;
  let failed = 0;
  const deadline = nowUs() + 60_000_000;
  const cpu0 = process.cpuUsage();
  const start = nowUs();
  const worker = async (): Promise<void> => {
    while (issued < p.requests && nowUs() < deadline) {
      issued++;
      try {
        const res = await pool.request({
          path: '/v1/responses',
          method: 'POST',
          headers,
          body: SMALL_REQUEST,
          headersTimeout: p.timeoutMs,
          bodyTimeout: p.timeoutMs,
        });
        const body = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode === 200 && body.length === SMALL_REPLY.length) ok++;
        else failed++;
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: p.concurrency }, worker));
  const elapsedUs = nowUs() - start;
  const cpu = process.cpuUsage(cpu0);
  return {
    variant,
    ok,
    failed,
    rps: ok / (elapsedUs / 1e6),
    cpuUsPerRequest: (cpu.user + cpu.system) / Math.max(1, ok + failed),
  };
}

async function main(p: SpliceParams): Promise<SpliceTrial[]> {
  const keyBytes = Buffer.from(`${p.key}\n`, 'latin1');
  let given = false;
  const auth = readAuthHeader((buffer, offset, length) => {
    if (given) return 0;
    given = true;
    return keyBytes.copy(buffer, offset, 0, Math.min(length, keyBytes.length));
  });
  keyBytes.fill(0);
  const splicer = new KeySplicer(auth);
  const origin = `http://127.0.0.1:${p.port}`;
  const plain = new Pool(origin, { connections: p.concurrency });
  const spliced = new Pool(origin, { connections: p.concurrency, connect: splicer.connector({}) });
  const plainValue = `Bearer ${p.key}`;
  const run = (v: 'plain' | 'splice', n?: number): Promise<SpliceTrial> =>
    v === 'plain'
      ? trial(plain, v, plainValue, n === undefined ? p : { ...p, requests: n })
      : trial(spliced, v, splicer.placeholder, n === undefined ? p : { ...p, requests: n });
  // Warm both (connections, JIT), then alternate ABBA so drift hits both alike.
  for (let i = 0; i < 3; i++) {
    await run('plain', 3000);
    await run('splice', 3000);
  }
  const out: SpliceTrial[] = [];
  for (let i = 0; i < p.trials; i++) {
    const order: ('plain' | 'splice')[] = i % 2 === 0 ? ['plain', 'splice'] : ['splice', 'plain'];
    for (const v of order) out.push(await run(v));
  }
  await plain.close();
  await spliced.close();
  auth.destroy();
  return out;
}

process.once('message', (raw: unknown) => {
  main(raw as SpliceParams).then(
    (trials) => process.send?.({ trials }, () => process.exit(0)),
    (err: unknown) => process.send?.({ error: err instanceof Error ? err.stack : String(err) }, () => process.exit(1)),
  );
});
process.on('disconnect', () => process.exit(0));
