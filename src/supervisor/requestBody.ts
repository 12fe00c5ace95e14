// A request body as undici consumes it: an async iterable fed by REQUEST_DATA
// frames. undici pulls the next chunk only once it has written the previous one
// (and waited for the socket to drain), so that is the moment to return credit
// to the worker. Holds at most one credit window of chunks.

export class RequestBodyQueue implements AsyncIterable<Buffer> {
  private chunks: Buffer[] = [];
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private iterated = false;

  /** `onTaken(bytes, drained)`: undici has taken a chunk; `drained` when none is queued. */
  constructor(private readonly onTaken: (bytes: number, drained: boolean) => void) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.wakeConsumer();
  }

  end(): void {
    this.ended = true;
    this.wakeConsumer();
  }

  /** The whole body as one buffer, if it is complete and none of it was taken yet; else null. */
  whole(): Buffer | null {
    if (!this.ended || this.failure !== null || this.iterated) return null;
    const whole = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    this.chunks = [];
    return whole;
  }

  /** Stop the body: undici's write fails and the request is abandoned. */
  destroy(reason: Error): void {
    this.failure = reason;
    this.chunks = [];
    this.wakeConsumer();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    this.iterated = true;
    for (;;) {
      if (this.failure !== null) throw this.failure;
      const chunk = this.chunks.shift();
      if (chunk !== undefined) {
        yield chunk;
        this.onTaken(chunk.length, this.chunks.length === 0);
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private wakeConsumer(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
