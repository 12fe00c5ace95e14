// Gives memory back once a burst is over, in either process. V8 collects only
// while JavaScript allocates, so the garbage of thousands of finished streams
// stays on the heap of a process that has gone quiet; and glibc keeps freed
// blocks for reuse instead of returning them. So, once no stream has been open
// for a whole check period after a burst (many streams open at a check or
// opened within one period, or the heap grown by GROWTH_BYTES since the last
// trim): one full collection, then malloc_trim(0). Nothing runs per request,
// nor after a single agent's turns.

import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mallocTrim } from './libc.js';

const CHECK_MS = 2_000;
const GROWTH_BYTES = 8 * 1024 * 1024;
/**
 * Streams that make a burst, open at one check or opened within one period (a
 * burst shorter than a period is never seen open); most of their memory is
 * sockets' and buffers', off the heap.
 */
const BURST_STREAMS = 64;

/** What the trim needs to know of the process's streams. */
export interface StreamActivity {
  readonly openStreams: number;
  /** Streams opened so far (only ever grows). */
  readonly streamsOpened: number;
}

/** V8's full collection, reachable without starting Node with --expose-gc; null where V8 refuses the flag. */
function fullCollection(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    return null;
  }
}

/** Starts the periodic check (unref'd: it never keeps the process alive). */
export function trimWhenIdle(activity: () => StreamActivity): NodeJS.Timeout {
  const collect = fullCollection();
  let baseline = getHeapStatistics().used_heap_size;
  let openedAtLastCheck = -1;
  /** The most streams open at one check, or opened within one period, since the last trim. */
  let busiest = 0;
  /** The collection's sweeping finishes after it returns: trim again at the next quiet check. */
  let trimAgain = false;
  const timer = setInterval(() => {
    const { openStreams, streamsOpened } = activity();
    const openedSince = streamsOpened - Math.max(0, openedAtLastCheck);
    const quiet = openStreams === 0 && streamsOpened === openedAtLastCheck;
    openedAtLastCheck = streamsOpened;
    busiest = Math.max(busiest, openStreams, openedSince);
    if (!quiet) return;
    if (trimAgain) {
      trimAgain = false;
      trimMalloc();
    }
    if (busiest < BURST_STREAMS && getHeapStatistics().used_heap_size - baseline < GROWTH_BYTES) return;
    busiest = 0;
    collect?.();
    trimMalloc();
    trimAgain = true;
    baseline = getHeapStatistics().used_heap_size;
  }, CHECK_MS);
  return timer.unref();
}

function trimMalloc(): void {
  try {
    mallocTrim();
  } catch {
    // Not glibc: the collection alone still helps.
  }
}
