// Per-stream credit-based flow control, as HTTP/2 does it: a sender may have at
// most `window` unacknowledged bytes in flight; the receiver returns credit
// (WINDOW frames) as it hands bytes on to their destination. One stalled stream
// therefore pins at most one window of memory and never blocks the others.

import { INITIAL_STREAM_WINDOW, MAX_DATA_PAYLOAD, type FrameWriter, type MsgType } from './ipcProtocol.js';
import { ProtocolError } from './errors.js';

/** Largest credit a receiver may ever hold out (guards the u32 arithmetic). */
const MAX_WINDOW = 0x7fffffff;

/** Where a sender's bytes come from: it is paused while credit is exhausted. */
export interface PausableSource {
  pause(): unknown;
  resume(): unknown;
}

/**
 * Sends one stream's body as DATA frames within the peer's credit, splitting
 * chunks with subarray (never copying) and pausing the source when credit runs
 * out. Only one chunk is ever held back.
 */
export class StreamSender {
  private credit = INITIAL_STREAM_WINDOW;
  private held: Buffer | null = null;
  private ended = false;
  private endFrame: MsgType | null = null;
  private onEnded: (() => void) | null = null;

  constructor(
    private readonly writer: FrameWriter,
    private readonly dataType: MsgType,
    private readonly streamId: number,
    private readonly source: PausableSource,
  ) {}

  write(chunk: Buffer): void {
    if (this.held !== null) {
      // The source should be paused; tolerate one extra chunk by joining it.
      this.held = Buffer.concat([this.held, chunk]);
      return;
    }
    const rest = this.sendWithinCredit(chunk);
    if (rest !== null) {
      this.held = rest;
      this.source.pause();
    }
  }

  /** Send `endType` once every held byte has gone out, then call `onEnded`. */
  end(endType: MsgType, onEnded?: () => void): void {
    this.ended = true;
    this.endFrame = endType;
    this.onEnded = onEnded ?? null;
    if (this.held === null) this.sendEnd();
  }

  /** Credit returned by the peer. Throws ProtocolError if it overflows. */
  grant(increment: number): void {
    if (this.credit + increment > MAX_WINDOW) throw new ProtocolError(`window overflow on stream ${this.streamId}`);
    this.credit += increment;
    if (this.held === null) return;
    const rest = this.sendWithinCredit(this.held);
    this.held = rest;
    if (rest !== null) return;
    if (this.ended) this.sendEnd();
    else this.source.resume();
  }

  private sendEnd(): void {
    if (this.endFrame === null) return;
    this.writer.send(this.endFrame, this.streamId);
    this.endFrame = null;
    this.onEnded?.();
  }

  get heldBytes(): number {
    return this.held === null ? 0 : this.held.length;
  }

  private sendWithinCredit(chunk: Buffer): Buffer | null {
    let offset = 0;
    while (offset < chunk.length && this.credit > 0) {
      const n = Math.min(chunk.length - offset, this.credit, MAX_DATA_PAYLOAD);
      this.writer.send(this.dataType, this.streamId, offset === 0 && n === chunk.length ? chunk : chunk.subarray(offset, offset + n));
      this.credit -= n;
      offset += n;
    }
    return offset === chunk.length ? null : chunk.subarray(offset);
  }
}

/**
 * The receiving half: checks the peer stays inside its credit and returns
 * credit for bytes the destination has taken. Credit is batched (one WINDOW
 * frame per `batch` bytes) unless the caller flushes.
 */
export class CreditReceiver {
  private outstanding = 0; // received, not yet returned
  private consumedUnreturned = 0;

  constructor(
    private readonly writer: FrameWriter,
    private readonly streamId: number,
    private readonly batch = INITIAL_STREAM_WINDOW / 4,
  ) {}

  /** Account for an arriving DATA payload. Throws if the peer overran its credit. */
  received(bytes: number): void {
    const outstanding = this.outstanding + bytes;
    if (outstanding > INITIAL_STREAM_WINDOW) {
      throw new ProtocolError(`stream ${this.streamId} sent ${outstanding} bytes beyond its ${INITIAL_STREAM_WINDOW}-byte window`);
    }
    this.outstanding = outstanding;
  }

  /** The destination took `bytes`; return credit when a batch is complete. */
  consumed(bytes: number, flush = false): void {
    this.consumedUnreturned += bytes;
    if (this.consumedUnreturned === 0) return;
    if (!flush && this.consumedUnreturned < this.batch) return;
    this.writer.sendWindow(this.streamId, this.consumedUnreturned);
    this.outstanding -= this.consumedUnreturned;
    this.consumedUnreturned = 0;
  }
}
