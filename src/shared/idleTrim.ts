// Gives memory back once a burst is over, in either process. V8 collects only
// while JavaScript allocates, so the garbage of thousands of finished streams
// stays on the heap of a process that has gone quiet; and glibc keeps freed
// blocks for reuse instead of returning them. So, once no stream has been open
// for a whole check period after a burst (many streams open at a check or
// opened within one period, or the heap grown by GROWTH_BYTES since the last
// trim): one full collection, then malloc_trim(0); and the same once when
// startup is done. Nothing runs per request, nor after a single agent's turns.

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

/**
 * V8's full collection, reachable without starting Node with --expose-gc; null
 * where V8 refuses the flag. The 'last-resort' flavour is V8's memory-reducing
 * one: it also shrinks the young generation back to its smallest and gives
 * the emptied pages back, which a plain full collection leaves grown (4 to 16
 * MiB per process after startup or a burst). V8s without the option ignore it.
 */
function fullCollection(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc !== 'function') return null;
    return () => (gc as (options: object) => void)({ type: 'major', flavor: 'last-resort' });
  } catch {
    return null;
  }
}

let collect: (() => void) | null | undefined;

/**
 * One full collection and malloc_trim(0), now. Also called once startup is
 * done: loading the modules grows the heap and its young generation, and that
 * garbage would otherwise stay until the first burst.
 */
export function giveMemoryBack(): void {
  if (collect === undefined) collect = fullCollection();
  collect?.();
  trimMalloc();
}

/** What one check does: nothing, a second malloc_trim after a collection, or a collection and a trim. */
export type TrimStep = 'none' | 'trim-again' | 'collect';

/**
 * The decision of each check, apart from the timer, V8 and glibc: when the
 * process has been quiet for a whole period after a burst.
 */
export class IdleCheck {
  private openedAtLastCheck = -1;
  /** The most streams open at one check, or opened within one period, since the last collection. */
  private busiest = 0;
  /** The collection's sweeping finishes after it returns: trim again at the next quiet check. */
  private trimAgain = false;

  constructor(private heapBaseline: number) {}

  /** `heapUsed`: the heap's used size now. Call `collected` after a 'collect'. */
  check({ openStreams, streamsOpened }: StreamActivity, heapUsed: number): TrimStep {
    const openedSince = streamsOpened - Math.max(0, this.openedAtLastCheck);
    const quiet = openStreams === 0 && streamsOpened === this.openedAtLastCheck;
    this.openedAtLastCheck = streamsOpened;
    this.busiest = Math.max(this.busiest, openStreams, openedSince);
    if (!quiet) return 'none';
    if (this.busiest >= BURST_STREAMS || heapUsed - this.heapBaseline >= GROWTH_BYTES) {
      this.busiest = 0;
      this.trimAgain = true;
      return 'collect';
    }
    if (!this.trimAgain) return 'none';
    this.trimAgain = false;
    return 'trim-again';
  }

  /** The heap's used size after a collection: growth is counted from here. */
  collected(heapUsed: number): void {
    this.heapBaseline = heapUsed;
  }
}

/** Starts the periodic check (unref'd: it never keeps the process alive). */
export function trimWhenIdle(activity: () => StreamActivity): NodeJS.Timeout {
  const heapUsed = (): number => getHeapStatistics().used_heap_size;
  const idle = new IdleCheck(heapUsed());
  const timer = setInterval(() => {
    const step = idle.check(activity(), heapUsed());
    if (step === 'trim-again') return trimMalloc();
    if (step === 'none') return;
    giveMemoryBack();
    idle.collected(heapUsed());
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
