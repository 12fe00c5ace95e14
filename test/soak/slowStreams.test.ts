// Ten thousand slow SSE streams at once through the real proxy started with no
// flag but --upstream-url (issue 20, item 4): every one is served (no 503, no
// reset) and keeps making progress. The clients live in this process and the
// mock upstream in a child of its own, each holding a descriptor per stream:
// this process raises its open-file limit to the hard one first (the proxy and
// the upstream inherit it) and skips with the reason when that is too low. The
// proxy's --max-concurrent is what it derives from that limit.
// `npm run test:soak`.

import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { RLIMIT_NOFILE, getrlimit, setrlimit } from '../../src/shared/libc.js';
import { ProxyProcess, sleep } from '../helpers/proxyProcess.js';
import { SseStream } from '../helpers/slowSse.js';
import { StrayPids } from '../helpers/strayPids.js';

/** SOAK_SLOW_STREAMS overrides the count. */
const STREAMS = Number(process.env.SOAK_SLOW_STREAMS ?? 10_000);
/** The most any process here holds: a socket per stream, and room besides. */
const NEEDED_FDS = STREAMS + 1024;
/** Streams being opened (no response head yet) at any time: the listen backlogs stay short. */
const OPENING_AT_ONCE = 256;
const TICK_MS = 1_000;
/** Every stream has its first event within this time from the first connection. */
const OPEN_DEADLINE_MS = 55_000;
/** Then every stream receives this many more events within PROGRESS_DEADLINE_MS. */
const LATER_EVENTS = 2;
const PROGRESS_DEADLINE_MS = 20_000;

/** Raise this process's soft open-file limit to the hard one; the reason that is not enough, or null. */
function raiseOwnLimit(): string | null {
  if (process.platform !== 'linux') return `needs Linux (not ${process.platform})`;
  const { hard } = getrlimit(RLIMIT_NOFILE);
  setrlimit(RLIMIT_NOFILE, { soft: hard, hard });
  return hard >= BigInt(NEEDED_FDS) ? null : `needs an open-file limit of ${NEEDED_FDS}, the hard limit is ${hard}`;
}

/** The slow SSE upstream in a child process, and how to ask it how many streams it feeds. */
async function startUpstream(): Promise<{ child: ChildProcess; url: string; openStreams(): Promise<number> }> {
  const script = fileURLToPath(new URL('../fixtures/slowSseUpstream.js', import.meta.url));
  const child = fork(script, [String(TICK_MS)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [ready] = (await once(child, 'message')) as [{ url: string }];
  const openStreams = async (): Promise<number> => {
    child.send('count');
    const [answer] = (await once(child, 'message')) as [{ openStreams: number }];
    return answer.openStreams;
  };
  return { child, url: ready.url, openStreams };
}

const cannot = raiseOwnLimit();
if (cannot !== null) console.log(`# skipping the ${STREAMS} slow streams: ${cannot}`);

const bounded = { skip: cannot ?? false, timeout: 90_000 };

describe(`${STREAMS} concurrent slow SSE streams, no --max-concurrent`, bounded, () => {
  const strays = new StrayPids();
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let proxy: ProxyProcess;
  const streams: SseStream[] = [];

  before(async () => {
    upstream = await startUpstream();
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url] });
    strays.add(proxy.workerPid());
  });

  after(async () => {
    for (const stream of streams) stream.close();
    await strays.stopAll(proxy === undefined ? [] : [proxy]);
    if (upstream !== undefined && upstream.child.exitCode === null) {
      upstream.child.disconnect();
      await Promise.race([once(upstream.child, 'exit'), sleep(5_000)]);
      if (upstream.child.exitCode === null) upstream.child.kill('SIGKILL');
    }
  });

  test('every stream receives its first event and later ones', async (t) => {
    const startedAt = performance.now();
    const openBy = startedAt + OPEN_DEADLINE_MS;
    while (streams.length < STREAMS && performance.now() < openBy) {
      const opening = streams.filter((s) => s.status === 0 && s.failure === null).length;
      for (let i = opening; i < OPENING_AT_ONCE && streams.length < STREAMS; i++) {
        streams.push(new SseStream(proxy.port));
      }
      await sleep(10);
    }
    while (streams.some((s) => s.events < 1 && s.failure === null) && performance.now() < openBy) await sleep(50);
    const opened = performance.now();
    const refused = streams.filter((s) => s.status !== 200 || s.failure !== null);
    const first = refused[0];
    const example = first === undefined ? '' : `: ${first.status} ${first.failure} ${first.errorBody}`;
    assert.equal(refused.length, 0, `${refused.length} streams refused or failed${example}`);
    assert.equal(streams.length, STREAMS, `only ${streams.length} streams opened in ${OPEN_DEADLINE_MS} ms`);
    const waiting = streams.filter((s) => s.events < 1).length;
    assert.equal(waiting, 0, `${waiting} streams without their first event after ${OPEN_DEADLINE_MS} ms`);
    t.diagnostic(`${STREAMS} streams open, each with its first event, in ${Math.round(opened - startedAt)} ms`);

    const targets = streams.map((s) => s.events + LATER_EVENTS);
    const progressBy = performance.now() + PROGRESS_DEADLINE_MS;
    const behind = (): number => streams.filter((s, i) => s.events < (targets[i] as number)).length;
    while (behind() > 0 && performance.now() < progressBy) await sleep(100);
    assert.equal(behind(), 0, `${behind()} streams without ${LATER_EVENTS} more events in ${PROGRESS_DEADLINE_MS} ms`);
    assert.equal(streams.filter((s) => s.failure !== null).length, 0, 'no stream failed meanwhile');
    assert.equal(await upstream.openStreams(), STREAMS, 'the upstream feeds every stream');
    t.diagnostic(`each received ${LATER_EVENTS} more events in ${Math.round(performance.now() - opened)} ms`);
  });
});
