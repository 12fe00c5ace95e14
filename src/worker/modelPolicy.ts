// --allow-model, enforced by the worker: it is the process that parses client
// bytes, and the supervisor parses no client JSON. (So a compromised worker
// can get around it; the token, budgets and rate are the supervisor's.)
//
// A request is forwarded only if its body is valid UTF-8 JSON, an object with
// a string `model` that matches a pattern, and names no top-level key twice:
// parsers disagree on which of two `model`s counts, and the proxy and the
// upstream must never read different models from one body. Patterns are
// case-sensitive and only `*` is special (any run of characters). Over a
// WebSocket, every client text message must be such an object, and each
// `response.create` must name an allowed model; a refused one is answered on
// the socket with an `error` event and not forwarded.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../shared/logger.js';
import { bodyTooLarge } from '../shared/openaiError.js';
import { modelNotAllowed, refusalHeaders, unreadableBody, type Refusal } from '../shared/refusals.js';
import { scanTopLevelKeys } from './jsonText.js';
import { drainThenClose } from './linger.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Whether `text` matches `pattern`, `*` matching any run (backtracking only to the last star: never exponential). */
export function globMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let resume = 0;
  while (t < text.length) {
    if (p < pattern.length && pattern[p] !== '*' && pattern[p] === text[t]) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      resume = t;
    } else if (star !== -1) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

/**
 * The first top-level key named twice in `json`, which must be a valid JSON
 * object; null if none. Keys are compared as decoded, so "model" and
 * "mod\u0065l" are the same key.
 */
export function duplicateTopLevelKey(json: string): string | null {
  const seen = new Set<string>();
  let twice: string | null = null;
  scanTopLevelKeys(json, (open, close) => {
    const key = JSON.parse(json.slice(open, close + 1)) as string;
    if (seen.has(key)) twice = key;
    seen.add(key);
    return twice !== null;
  });
  return twice;
}

/** Whether `json` names a top-level key twice, given the object JSON.parse made of it (which kept one of each). */
function namesAKeyTwice(json: string, object: object): boolean {
  let keys = 0;
  scanTopLevelKeys(json, () => {
    keys++;
    return false;
  });
  return keys !== Object.keys(object).length;
}

type Parsed = { object: Record<string, unknown> } | { refusal: Refusal };

function parseObject(bytes: Buffer, what: string): Parsed {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return { refusal: unreadableBody(`the ${what} is not valid UTF-8`) };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { refusal: unreadableBody(`the ${what} is not JSON`) };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { refusal: unreadableBody(`the ${what} is not a JSON object`) };
  }
  if (namesAKeyTwice(text, value)) {
    const twice = duplicateTopLevelKey(text) ?? '';
    return { refusal: unreadableBody(`the ${what} names ${JSON.stringify(twice.slice(0, 100))} more than once`) };
  }
  return { object: value as Record<string, unknown> };
}

export class ModelPolicy {
  constructor(
    private readonly patterns: readonly string[],
    /** Told of each refusal (the supervisor keeps the record). */
    private readonly onRefused: () => void,
  ) {}

  allows(model: string): boolean {
    return this.patterns.some((pattern) => globMatch(pattern, model));
  }

  /** An HTTP request body: null to forward it, else the answer. */
  checkBody(body: Buffer): Refusal | null {
    return this.verdict(this.checkObject(parseObject(body, 'request body'), 'request body'));
  }

  /** A client WebSocket message: null to forward it, else the `error` event's refusal. */
  checkMessage(data: Buffer, isBinary: boolean): Refusal | null {
    if (isBinary) return this.verdict(unreadableBody('a binary message cannot be checked'));
    const parsed = parseObject(data, 'message');
    if ('object' in parsed && parsed.object.type !== 'response.create') return null;
    return this.verdict(this.checkObject(parsed, 'response.create message'));
  }

  private checkObject(parsed: Parsed, what: string): Refusal | null {
    if ('refusal' in parsed) return parsed.refusal;
    const { model } = parsed.object;
    if (typeof model !== 'string') return unreadableBody(`the ${what} has no string "model"`);
    return this.allows(model) ? null : modelNotAllowed(model);
  }

  private verdict(refusal: Refusal | null): Refusal | null {
    if (refusal !== null) this.onRefused();
    return refusal;
  }
}

/**
 * How many body bytes the worker holds at once for the model check: each
 * request reserves its declared length (--max-body-bytes if chunked) before
 * any of its body is read, in arrival order, and gives it back once the body
 * has gone to the supervisor. Requests that do not fit wait unread in their
 * sockets, so clients sending many large bodies at once cannot make the worker
 * hold them all in memory. Every reservation fits the whole budget, so the
 * first in line always proceeds.
 */
export class ScreeningBudget {
  private free: number;
  private readonly waiting: Array<{ bytes: number; start: () => void }> = [];

  constructor(capacity: number) {
    this.free = capacity;
  }

  /**
   * Run `start` once `bytes` are reserved (at once if they are free and no one
   * waits). Returns the release: it gives the bytes back, or leaves the line;
   * calls after the first do nothing.
   */
  reserve(bytes: number, start: () => void): () => void {
    const entry = { bytes, start };
    let state: 'waiting' | 'held' | 'released' = 'waiting';
    entry.start = () => {
      state = 'held';
      start();
    };
    this.waiting.push(entry);
    this.admit();
    return () => {
      if (state === 'held') {
        this.free += bytes;
        this.admit();
      } else if (state === 'waiting') {
        this.waiting.splice(this.waiting.indexOf(entry), 1);
        this.admit();
      }
      state = 'released';
    };
  }

  private admit(): void {
    let next = this.waiting[0];
    while (next !== undefined && next.bytes <= this.free) {
      this.waiting.shift();
      this.free -= next.bytes;
      next.start();
      next = this.waiting[0];
    }
  }
}

/** A request body read whole for the model check; `release` gives its room in the budget back. */
export interface ScreenedBody {
  readonly body: Buffer;
  readonly release: () => void;
}

/**
 * Check a request's model before anything of it is forwarded: its whole body
 * is read first (up to --max-body-bytes, within the screening budget), then
 * handed to `forward`, which releases its room once the body is sent on, or
 * the client answered here.
 */
export function screenRequest(
  req: IncomingMessage,
  res: ServerResponse,
  policy: ModelPolicy,
  budget: ScreeningBudget,
  maxBodyBytes: number,
  log: Logger,
  forward: (screened: ScreenedBody) => void,
): void {
  const startedAt = process.hrtime.bigint();
  const declared = declaredLength(req);
  const release = budget.reserve(declared === -1 ? maxBodyBytes : Math.min(declared, maxBodyBytes), () =>
    readWholeBody(req, maxBodyBytes, (body) => {
      let refusal: Refusal | null = null;
      if (body === null) return release();
      if (body === 'too-large') {
        release();
        const { status, body: answer } = bodyTooLarge(maxBodyBytes);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': answer.length });
        res.end(answer);
        drainThenClose(req);
      } else {
        refusal = policy.checkBody(body);
        if (refusal === null) return forward({ body, release });
        release();
        res.writeHead(refusal.status, [...refusalHeaders(refusal), 'content-length', String(refusal.body.length)]);
        res.end(refusal.body);
      }
      const durationMs = Number(process.hrtime.bigint() - startedAt) / 1e6;
      const refused = refusal === null ? {} : { refused: refusal.reason };
      log.info({ method: req.method, path: req.url, status: res.statusCode, ...refused, durationMs }, 'request');
    }),
  );
  // Gone while waiting for room: leave the line.
  req.once('close', () => {
    if (!req.complete) release();
  });
}

/** The request's Content-Length, or -1 (chunked). */
export function declaredLength(req: IncomingMessage): number {
  return req.headers['content-length'] === undefined ? -1 : Number(req.headers['content-length']);
}

/**
 * Read a whole request body, up to `maxBytes`: the model is checked before
 * anything is forwarded. `done` gets the body (as soon as its declared length
 * is in, not a turn later at 'end'), 'too-large', or null if the client went
 * away first.
 */
export function readWholeBody(
  req: IncomingMessage,
  maxBytes: number,
  done: (body: Buffer | 'too-large' | null) => void,
): void {
  const declared = declaredLength(req);
  const chunks: Buffer[] = [];
  let bytes = 0;
  let finished = false;
  const finish = (body: Buffer | 'too-large' | null): void => {
    if (finished) return;
    finished = true;
    req.removeListener('data', onData);
    done(body);
  };
  const whole = (): Buffer => (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, bytes));
  const onData = (chunk: Buffer): void => {
    bytes += chunk.length;
    if (bytes > maxBytes) return finish('too-large');
    chunks.push(chunk);
    if (bytes === declared) finish(whole());
  };
  req.on('data', onData);
  req.once('end', () => finish(whole()));
  req.once('close', () => finish(null));
}
