// A client request that is followed as it streams: the test can wait for the
// bytes received so far, cut the connection at a chosen moment (timestamped
// with performance.now()), and learn how the response ended: cleanly, cut, or
// not at all (bounded by a timeout).

import { request, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';

export type StreamOutcome = 'end' | 'cut' | 'request error' | 'timeout' | 'destroyed by test';

export interface StreamResult {
  readonly outcome: StreamOutcome;
  readonly detail: string;
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** performance.now() when the outcome was settled. */
  readonly at: number;
}

export interface StreamOptions {
  readonly path?: string;
  readonly method?: string;
  readonly headers?: Record<string, string>;
  /** Written and the request ended at once; omit to keep the body open (see `req`). */
  readonly body?: string | Buffer;
  readonly keepBodyOpen?: boolean;
  readonly timeoutMs?: number;
}

export class StreamClient {
  readonly done: Promise<StreamResult>;
  readonly req: ClientRequest;
  status = 0;
  headers: IncomingHttpHeaders = {};
  private chunks: Buffer[] = [];
  private receivedBytes = 0;
  private settled = false;
  private destroyedByTest = false;
  private waiters = new Set<() => void>();
  private settle: (outcome: StreamOutcome, detail?: string) => void = () => {};

  private constructor(port: number, options: StreamOptions) {
    let resolveDone: (r: StreamResult) => void = () => {};
    this.done = new Promise((resolve) => (resolveDone = resolve));
    this.settle = (outcome, detail = '') => {
      if (this.settled) return;
      this.settled = true;
      clearTimeout(timer);
      resolveDone({
        outcome: this.destroyedByTest ? 'destroyed by test' : outcome,
        detail,
        status: this.status,
        headers: this.headers,
        body: this.body,
        at: performance.now(),
      });
      this.wake();
    };
    this.req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'POST',
        path: options.path ?? '/v1/responses',
        agent: false,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...options.headers },
      },
      (res: IncomingMessage) => {
        this.status = res.statusCode ?? 0;
        this.headers = res.headers;
        this.wake();
        res.on('data', (c: Buffer) => {
          this.chunks.push(c);
          this.receivedBytes += c.length;
          this.wake();
        });
        res.on('end', () => this.settle('end'));
        res.on('aborted', () => this.settle('cut', 'aborted'));
        res.on('error', (err: NodeJS.ErrnoException) => this.settle('cut', err.code ?? err.message));
        res.on('close', () => this.settle(res.complete ? 'end' : 'cut', 'closed without end'));
      },
    );
    const timer = setTimeout(() => {
      this.settle('timeout');
      this.req.destroy();
    }, options.timeoutMs ?? 15_000);
    this.req.on('error', (err: NodeJS.ErrnoException) => this.settle('request error', err.code ?? err.message));
    if (options.keepBodyOpen) {
      if (options.body !== undefined) this.req.write(options.body);
      this.req.flushHeaders();
    } else {
      this.req.end(options.body ?? '{"model":"gpt-test","input":"hi","stream":true}');
    }
  }

  static open(port: number, options: StreamOptions = {}): StreamClient {
    return new StreamClient(port, options);
  }

  get body(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  get received(): number {
    return this.receivedBytes;
  }

  get isSettled(): boolean {
    return this.settled;
  }

  /** Wait (at most timeoutMs) until `check` holds or the stream settles; returns `check()`. */
  async waitFor(check: (c: StreamClient) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!check(this) && !this.settled) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return check(this);
  }

  /** Cut the connection now; returns performance.now() just before the socket is destroyed. */
  destroy(): number {
    this.destroyedByTest = true;
    const at = performance.now();
    this.req.destroy();
    return at;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const w of waiters) w();
  }
}
