// Reads what the upstream says a response used: the model it answered with,
// the response id and `usage`, from the final event of a stream
// (response.completed / response.incomplete / response.failed, as a
// server-sent event or a WebSocket message) or from a non-streaming JSON
// answer. These are upstream bytes, never a client's. Only a final event (or
// a JSON answer) is ever kept and parsed, and only up to MAX_FINAL_BYTES; the
// other events are passed over as they stream by.

export interface TokenCounts {
  input: number;
  cachedInput: number;
  output: number;
  reasoning: number;
  total: number;
}

export interface ResponseUsage {
  readonly model: string | null;
  readonly responseId: string | null;
  /** null when the upstream reported no usage. */
  readonly tokens: TokenCounts | null;
}

/** A final event or JSON answer larger than this is not read (logged as such). */
export const MAX_FINAL_BYTES = 16 * 1024 * 1024;
/** How much of an event's start tells whether it is a final one. */
const HEAD_BYTES = 160;
const FINAL_TYPES: ReadonlySet<unknown> = new Set(['response.completed', 'response.incomplete', 'response.failed']);
const FINAL_MARKS = ['response.completed', 'response.incomplete', 'response.failed'];
const LF = 0x0a;

function count(value: unknown): number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0;
}

function field(object: unknown, name: string): unknown {
  return object !== null && typeof object === 'object' ? (object as Record<string, unknown>)[name] : undefined;
}

/** The usage of a Responses API response object. */
export function usageOfResponse(response: unknown): ResponseUsage | null {
  if (response === null || typeof response !== 'object' || Array.isArray(response)) return null;
  const model = field(response, 'model');
  const id = field(response, 'id');
  const usage = field(response, 'usage');
  let tokens: TokenCounts | null = null;
  if (usage !== null && typeof usage === 'object') {
    const input = count(field(usage, 'input_tokens'));
    const output = count(field(usage, 'output_tokens'));
    tokens = {
      input,
      cachedInput: count(field(field(usage, 'input_tokens_details'), 'cached_tokens')),
      output,
      reasoning: count(field(field(usage, 'output_tokens_details'), 'reasoning_tokens')),
      total: typeof field(usage, 'total_tokens') === 'number' ? count(field(usage, 'total_tokens')) : input + output,
    };
  }
  return { model: typeof model === 'string' ? model : null, responseId: typeof id === 'string' ? id : null, tokens };
}

function looksFinal(head: string): boolean {
  return FINAL_MARKS.some((mark) => head.includes(mark));
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** A final event's usage, from one upstream WebSocket message (or an SSE event's data). */
export function finalEventUsage(message: Buffer | string): ResponseUsage | null {
  const head = typeof message === 'string' ? message.slice(0, HEAD_BYTES) : message.toString('latin1', 0, HEAD_BYTES);
  if (!looksFinal(head) || message.length > MAX_FINAL_BYTES) return null;
  const event = parseJson(typeof message === 'string' ? message : message.toString('utf8'));
  if (!FINAL_TYPES.has(field(event, 'type'))) return null;
  return usageOfResponse(field(event, 'response'));
}

/** Finds the usage in an HTTP response body as it streams by: SSE or JSON, by its content type. */
export class ResponseUsageScanner {
  private readonly sse: boolean;
  /** The current SSE event (or the JSON body) while it may matter. */
  private parts: Buffer[] = [];
  private bytes = 0;
  /** 'undecided' until HEAD_BYTES of the current event tell; 'skip' for the rest of a non-final one. */
  private state: 'undecided' | 'keep' | 'skip' = 'undecided';
  /** The previous chunk ended with a line feed (an event may end across chunks). */
  private endedWithLf = false;
  /** Something was too large to read. */
  oversize = false;
  result: ResponseUsage | null = null;

  constructor(contentType: string) {
    this.sse = contentType.startsWith('text/event-stream');
    // A JSON answer is kept whole (bounded); anything else is not read at all.
    this.state = this.sse ? 'undecided' : contentType.startsWith('application/json') ? 'keep' : 'skip';
  }

  push(chunk: Buffer): void {
    if (!this.sse) return this.append(chunk);
    let start = 0;
    while (start < chunk.length) {
      let end: number;
      if (this.endedWithLf && start === 0 && chunk[0] === LF) end = 1;
      else {
        const blank = chunk.indexOf('\n\n', start, 'latin1');
        end = blank === -1 ? -1 : blank + 2;
      }
      if (end === -1) {
        this.append(start === 0 ? chunk : chunk.subarray(start));
        this.endedWithLf = chunk[chunk.length - 1] === LF;
        return;
      }
      this.append(chunk.subarray(start, end));
      this.endOfEvent();
      start = end;
    }
    this.endedWithLf = false;
  }

  /** The body is complete: the usage found, or null. */
  end(): ResponseUsage | null {
    if (this.sse) {
      this.endOfEvent();
    } else if (this.state === 'keep') {
      this.result = usageOfResponse(parseJson(this.joined().toString('utf8')));
      this.parts = [];
    }
    return this.result;
  }

  /** The parts kept so far as one buffer (copied only if there are several). */
  private joined(): Buffer {
    return this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts, this.bytes);
  }

  private append(piece: Buffer): void {
    if (this.state === 'skip' || piece.length === 0) return;
    this.parts.push(piece);
    this.bytes += piece.length;
    if (this.bytes > MAX_FINAL_BYTES) {
      this.oversize = true;
      this.state = 'skip';
      this.parts = [];
    } else if (this.state === 'undecided' && this.bytes >= HEAD_BYTES) {
      this.decide();
    }
  }

  private decide(): void {
    const head = this.joined().toString('latin1', 0, HEAD_BYTES);
    if (looksFinal(head)) this.state = 'keep';
    else {
      this.state = 'skip';
      this.parts = [];
    }
  }

  private endOfEvent(): void {
    if (this.state === 'undecided') this.decide();
    if (this.state === 'keep') {
      const lines = this.joined().toString('utf8').split('\n');
      const data = lines
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(l.startsWith('data: ') ? 6 : 5).replace(/\r$/, ''));
      this.result = finalEventUsage(data.join('\n')) ?? this.result;
    }
    this.parts = [];
    this.bytes = 0;
    this.state = 'undecided';
  }
}
