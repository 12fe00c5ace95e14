// Memory taken by a burst is given back once it is over (src/shared/idleTrim.ts):
// several hundred concurrent streams through the real proxy grow both processes'
// anonymous resident memory; within seconds of the last one ending, most of that growth
// is returned. The proxy's stderr (the worker's too) is kept for the failure message.
// The supervisor runs with --trace-gc, so its collections can be seen on stdout.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { sendCounted } from './helpers/httpClient.js';
import { ProxyProcess, sleep } from './helpers/proxyProcess.js';

const STREAMS = 800;
/** Each answer: this many SSE events of EVENT_BYTES, EVENT_GAP_MS apart. */
const EVENTS = 4;
const EVENT_BYTES = 16 * 1024;
const EVENT_GAP_MS = 150;
/** The growth must be this large for the test to prove anything. */
const MIN_GROWTH_MIB = 10;
const GIVE_BACK_DEADLINE_MS = 12_000;

/** Anonymous resident memory: what a process took, without the pages of its binary and libraries it touched. */
function anonMiB(pid: number): number {
  const match = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(match !== null, `no RssAnon for ${pid}`);
  return Number(match[1]) / 1024;
}

let upstream: Server;
let proxy: ProxyProcess;
let pids: number[];

before(async () => {
  const event = `data: ${'x'.repeat(EVENT_BYTES)}\n\n`;
  upstream = createServer({ keepAliveTimeout: 1_000 }, (req, res) => {
    req.resume();
    req.once('end', () => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let sent = 0;
      const tick = setInterval(() => {
        res.write(event);
        if (++sent === EVENTS) {
          clearInterval(tick);
          res.end();
        }
      }, EVENT_GAP_MS);
      res.once('close', () => clearInterval(tick));
    });
  });
  upstream.listen({ port: 0, host: '127.0.0.1', backlog: 2048 });
  await new Promise((resolve) => upstream.once('listening', resolve));
  const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1/responses`;
  proxy = await ProxyProcess.start({ nodeFlags: ['--trace-gc'], args: ['--upstream-url', url, '--log-level', 'warn'] });
  pids = [proxy.pid, proxy.workerPid()];
});

after(async () => {
  await proxy?.stop();
  upstream?.closeAllConnections();
  upstream?.close();
});

/** How V8 traces its memory-reducing collection (the one giveMemoryBack() asks for). */
const MEMORY_REDUCING_COLLECTION = /Mark-Compact \(reduce\)/;

test("the supervisor gives startup's memory back before it says it is listening", async () => {
  // Its trace line was written before the announcement, but comes on another pipe:
  // wait for it briefly. The idle trim's first check is a whole period (2 s) away.
  const deadline = Date.now() + 500;
  while (!MEMORY_REDUCING_COLLECTION.test(proxy.stdout) && Date.now() < deadline) await sleep(20);
  assert.match(proxy.stdout, MEMORY_REDUCING_COLLECTION);
});

/** One streamed request through the proxy, read to its end: its length. */
async function stream(agent: Agent): Promise<number> {
  const body = '{"model":"gpt-5","stream":true,"input":"hi"}';
  const reply = await sendCounted(proxy.port, {
    agent,
    headers: { 'content-type': 'application/json' },
    body,
    timeoutMs: 30_000,
  });
  return reply.bytes;
}

test(
  `after ${STREAMS} concurrent streams, both processes give at least a fifth of the memory they took back (none without the trim)`,
  { timeout: 60_000 },
  async () => {
    const agent = new Agent({ keepAlive: false, maxSockets: STREAMS });
    for (let i = 0; i < 20; i++) await stream(agent); // warm: code loaded and compiled
    await sleep(500);
    const total = (): number => pids.reduce((sum, pid) => sum + anonMiB(pid), 0);
    const idle = total();
    let peak = idle;
    const sampler = setInterval(() => (peak = Math.max(peak, total())), 50);
    let sizes: number[];
    try {
      sizes = await Promise.all(Array.from({ length: STREAMS }, () => stream(agent)));
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, total());
    assert.ok(
      sizes.every((n) => n >= EVENTS * EVENT_BYTES),
      'every stream arrived whole',
    );
    const growth = peak - idle;
    assert.ok(
      growth >= MIN_GROWTH_MIB,
      `the burst grew anonymous memory by only ${growth.toFixed(1)} MiB: it proves nothing`,
    );
    const goal = idle + growth * 0.8;
    const started = Date.now();
    let now = total();
    while (now > goal && Date.now() - started < GIVE_BACK_DEADLINE_MS) {
      await sleep(250);
      now = total();
    }
    const figures = `idle ${idle.toFixed(1)} MiB, peak ${peak.toFixed(1)}, ${((Date.now() - started) / 1000).toFixed(1)} s later ${now.toFixed(1)}`;
    console.log(`# anonymous resident memory of both processes: ${figures}`);
    assert.ok(now <= goal, `memory not given back: ${figures} (wanted ≤ ${goal.toFixed(1)})\n${proxy.stderr}`);
  },
);
