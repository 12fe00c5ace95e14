// What the benchmark's processes (harness, mock upstream, load client, splice
// micro-benchmark) agree on: how a request selects the mock's behaviour, and
// the messages they exchange over their IPC channels.

/** Request headers that select what the mock upstream answers. */
export const H_MODE = 'x-bench-mode';
export const H_EVENTS = 'x-bench-events';
export const H_DELAY = 'x-bench-delay-ms';
export const H_EVENT_SIZE = 'x-bench-event-size';
export const H_BYTES = 'x-bench-bytes';
/** Identifies a stream whose close time the mock reports (disconnect test). */
export const H_ID = 'x-bench-id';

export type MockMode = 'small' | 'sse' | 'large';

/** The model every request names and the mock answers with (the policy target's allow-list matches it). */
export const BENCH_MODEL = 'gpt-5-codex';

/**
 * The small JSON reply: a fixed body, so every reply's length can be checked;
 * with a usage, as the API's, for the policy target's token count and record.
 */
export const SMALL_REPLY = Buffer.from(
  JSON.stringify({
    id: 'resp_bench',
    object: 'response',
    model: BENCH_MODEL,
    status: 'completed',
    output: [{ type: 'message', content: [{ type: 'output_text', text: 'ok' }] }],
    usage: {
      input_tokens: 12,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 2,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 14,
    },
  }),
);

/** The small request body every load request sends. */
export const SMALL_REQUEST = Buffer.from(JSON.stringify({ model: BENCH_MODEL, input: 'hi', stream: false }));

/** One SSE event of exactly `size` bytes (at least 16): `data: {"n":…,"p":"xxx"}\n\n`. */
export function sseEvent(n: number, size: number): Buffer {
  const head = `data: {"n":${n},"p":"`;
  const tail = '"}\n\n';
  const pad = Math.max(0, size - head.length - tail.length);
  return Buffer.from(head + 'x'.repeat(pad) + tail, 'latin1');
}

export interface StreamSpec {
  readonly mode: MockMode;
  /** sse: number of events, the first sent at once, then one every delayMs. */
  readonly events?: number;
  readonly delayMs?: number;
  readonly eventSize?: number;
  /** large: total body bytes, written as fast as the reader takes them. */
  readonly bytes?: number;
}

/** Body length the client must receive for a spec. */
export function expectedLength(spec: StreamSpec): number {
  if (spec.mode === 'small') return SMALL_REPLY.length;
  if (spec.mode === 'sse') return (spec.events ?? 1) * (spec.eventSize ?? 64);
  return spec.bytes ?? 0;
}

export function specHeaders(spec: StreamSpec): Record<string, string> {
  const h: Record<string, string> = { [H_MODE]: spec.mode };
  if (spec.events !== undefined) h[H_EVENTS] = String(spec.events);
  if (spec.delayMs !== undefined) h[H_DELAY] = String(spec.delayMs);
  if (spec.eventSize !== undefined) h[H_EVENT_SIZE] = String(spec.eventSize);
  if (spec.bytes !== undefined) h[H_BYTES] = String(spec.bytes);
  return h;
}

/** Monotonic clock shared by every process on the machine (CLOCK_MONOTONIC), in µs. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ------------------------------------------------------------ mock upstream IPC

export interface MockStats {
  readonly requests: number;
  /** TCP connections the mock accepted so far. */
  readonly connections: number;
  readonly authMismatches: number;
  /** The first few wrong Authorization values seen (truncated), for the report. */
  readonly mismatchSamples: readonly string[];
  /** Responses currently being written. */
  readonly open: number;
  /** Responses whose connection closed before the mock finished them. */
  readonly aborted: number;
}

export interface StreamTimes {
  readonly id: string;
  readonly openedUs: number;
  /** When the mock saw the response's connection close, or null if still open. */
  readonly closedUs: number | null;
  readonly finished: boolean;
}

export type ToMock =
  | { readonly type: 'stats'; readonly seq: number }
  | { readonly type: 'times'; readonly seq: number; readonly ids: readonly string[] };
export type FromMock =
  | { readonly type: 'ready'; readonly port: number }
  | { readonly type: 'stats'; readonly seq: number; readonly stats: MockStats }
  | { readonly type: 'times'; readonly seq: number; readonly times: readonly StreamTimes[] };
