// When the idle trim (src/shared/idleTrim.ts) collects, check by check, apart
// from its timer: after a burst, once a whole period has passed with no stream
// open or opened; never after one agent's turns. memoryTrim.test shows the
// memory coming back through the real proxy; this shows each trigger alone,
// and what one collection gives back.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getHeapSpaceStatistics } from 'node:v8';
import { IdleCheck, giveMemoryBack, type TrimStep } from '../src/shared/idleTrim.js';

const MiB = 1024 * 1024;

/** The steps of successive checks, each given [open, opened so far] and a heap size. */
function run(checks: readonly (readonly [number, number, number?])[]): TrimStep[] {
  const idle = new IdleCheck(10 * MiB);
  return checks.map(([openStreams, streamsOpened, heapMiB = 10]) => {
    const step = idle.check({ openStreams, streamsOpened }, heapMiB * MiB);
    if (step === 'collect') idle.collected(heapMiB * MiB); // the collection freed nothing here
    return step;
  });
}

test('a burst that opened and ended between two checks is collected once the next period is quiet', () => {
  // 800 streams opened and closed within one period: no check ever saw one open.
  assert.deepEqual(
    run([
      [0, 20],
      [0, 820],
      [0, 820],
      [0, 820],
      [0, 820],
    ]),
    ['none', 'none', 'collect', 'trim-again', 'none'],
  );
});

test('many streams open at a check are a burst: collected after the first quiet period', () => {
  assert.deepEqual(
    run([
      [0, 0],
      [100, 100],
      [0, 100],
      [0, 100],
    ]),
    ['none', 'none', 'collect', 'trim-again'],
  );
});

test('one agent, a stream at a time, never makes a burst, however many it opens', () => {
  const checks: [number, number][] = [];
  for (let i = 0; i < 200; i++) checks.push([i % 2, Math.ceil(i / 2)]); // a turn every other period
  assert.ok(run(checks).every((step) => step === 'none'));
});

test('heap growth of 8 MiB since the last collection is collected when quiet', () => {
  assert.deepEqual(
    run([
      [0, 0, 10],
      [0, 0, 17],
      [0, 0, 18],
      [0, 0, 18],
    ]),
    ['none', 'none', 'collect', 'trim-again'],
  );
});

test('nothing while streams are open or still opening', () => {
  assert.deepEqual(
    run([
      [0, 0],
      [70, 70],
      [1, 71],
      [0, 72],
      [0, 72],
    ]),
    ['none', 'none', 'none', 'none', 'collect'],
  );
});

test('giving memory back shrinks the young generation to its smallest, not only empties it', () => {
  const newSpace = (): number =>
    getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? 0;
  // Short-lived objects, as streams leave: V8 grows the young generation for them.
  let kept = 0;
  for (let i = 0; i < 400_000; i++) kept += [{ i, text: `item ${i}` }].length;
  assert.equal(kept, 400_000);
  const grown = newSpace();
  assert.ok(grown >= 2 * MiB, `the young generation grew to ${grown / MiB} MiB only: nothing to show`);
  giveMemoryBack();
  const after = newSpace();
  assert.ok(after <= MiB, `young generation ${(after / MiB).toFixed(2)} MiB after, ${(grown / MiB).toFixed(2)} before`);
});
