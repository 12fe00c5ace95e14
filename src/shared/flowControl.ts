// Per-stream credit-based flow control, as HTTP/2 does it: a sender may have at
// most `window` unacknowledged bytes in flight; the receiver returns credit
// (WINDOW frames) as it hands bytes on to their destination. One stalled stream
// therefore pins at most one window of memory and never blocks the others.

import {
  INITIAL_STREAM_WINDOW,
  MAX_DATA_PAYLOAD,
  MESSAGE_CREDIT,
  type FrameWriter,
  type MsgType,
} from './ipcProtocol.js';
import { ProtocolError } from './errors.js';

/** Largest credit a receiver may ever hold out (guards the u32 arithmetic). */
export const MAX_WINDOW = 0x7fffffff;

/** Where a sender's bytes come from: it is paused while credit is exhausted. */
export interface PausableSource {
  pause(): unknown;
  resume(): unknown;
}

/** Data held back for lack of credit, with the frame types it goes out as. */
interface Held {
  readonly data: Buffer;
  readonly partType: MsgType;
  readonly lastType: MsgType | null;
}

/**
 * Sends one stream's data within the peer's credit: body bytes, or WebSocket
 * messages as parts and an END. Data is split with subarray (never copied);
 * what the credit does not cover waits in order and the source is paused until
 * credit returns. One final frame (the body's END, a WS_CLOSE) follows the last
 * byte.
 */
export class CreditSender {
  private credit = INITIAL_STREAM_WINDOW;
  private readonly held: Held[] = [];
  /** Bytes of held[0] already sent. */
  private sentOfFirst = 0;
  private heldTotal = 0;
  private finalType: MsgType | null = null;
  private finalPayload: Buffer | undefined = undefined;
  private onFinalSent: (() => void) | null = null;
  private finalSent = false;
  /** After discard(): data is dropped as it comes. */
  private dropping = false;
  /** Only a source we paused is resumed (ws throws on resume() during a failed handshake). */
  private sourcePaused = false;

  constructor(
    private readonly writer: FrameWriter,
    private readonly streamId: number,
    private readonly source: PausableSource,
  ) {}

  /**
   * `data` as `partType` frames of at most MAX_DATA_PAYLOAD; with `lastType`,
   * its last part (empty for an empty message) goes as `lastType` instead.
   * Ignored once end() or discard() was called.
   */
  send(data: Buffer, partType: MsgType, lastType: MsgType | null = null): void {
    if (this.dropping || this.finalType !== null || this.finalSent) return;
    if (this.held.length === 0) {
      const sent = this.sendWithinCredit(data, 0, partType, lastType);
      if (sent < 0) return;
      this.sentOfFirst = sent;
      this.heldTotal = data.length - sent;
    } else {
      this.heldTotal += data.length;
    }
    this.held.push({ data, partType, lastType });
    this.sourcePaused = true;
    this.source.pause();
  }

  /** Send `type` (with `payload`) once, after every held byte; then call `onSent`. */
  end(type: MsgType, onSent?: () => void, payload?: Buffer): void {
    if (this.finalType !== null || this.finalSent) return;
    this.finalType = type;
    this.finalPayload = payload;
    this.onFinalSent = onSent ?? null;
    if (this.held.length === 0) this.sendFinal();
  }

  /** The final frame was asked for (it may still wait behind held data). */
  get ending(): boolean {
    return this.finalType !== null || this.finalSent;
  }

  /** The final frame has been sent. */
  get ended(): boolean {
    return this.finalSent;
  }

  /** Bytes held back for lack of credit. */
  get heldBytes(): number {
    return this.heldTotal;
  }

  /**
   * Nobody will take the data any more (the peer's socket is closing): drop
   * what is held and whatever follows, send a waiting final frame, and let the
   * source read again so that its own close is not stuck behind unread data.
   */
  discard(): void {
    this.dropping = true;
    this.held.length = 0;
    this.sentOfFirst = 0;
    this.heldTotal = 0;
    if (this.finalType !== null) this.sendFinal();
    this.resumeSource();
  }

  /** Credit returned by the peer. Throws ProtocolError if it overflows. */
  grant(increment: number): void {
    if (this.credit + increment > MAX_WINDOW) throw new ProtocolError(`window overflow on stream ${this.streamId}`);
    this.credit += increment;
    if (this.held.length === 0) return;
    while (this.held.length > 0) {
      const { data, partType, lastType } = this.held[0] as Held;
      const sent = this.sendWithinCredit(data, this.sentOfFirst, partType, lastType);
      if (sent >= 0) {
        this.heldTotal -= sent - this.sentOfFirst;
        this.sentOfFirst = sent;
        return;
      }
      this.heldTotal -= data.length - this.sentOfFirst;
      this.held.shift();
      this.sentOfFirst = 0;
    }
    if (this.finalType !== null) this.sendFinal();
    else this.resumeSource();
  }

  /**
   * Sends `data` from `offset` as far as credit goes: -1 when all of it went,
   * else how much has. A `lastType` frame carries the last bytes and costs
   * MESSAGE_CREDIT more.
   */
  private sendWithinCredit(data: Buffer, offset: number, partType: MsgType, lastType: MsgType | null): number {
    const endCost = lastType === null ? 0 : MESSAGE_CREDIT;
    let at = offset;
    for (;;) {
      const remaining = data.length - at;
      if (remaining <= MAX_DATA_PAYLOAD && remaining + endCost <= this.credit) {
        const rest = at === 0 ? data : data.subarray(at);
        if (lastType !== null) this.writer.send(lastType, this.streamId, rest);
        else if (remaining > 0) this.writer.send(partType, this.streamId, rest);
        this.credit -= remaining + endCost;
        return -1;
      }
      // Not all of it fits: what the credit covers, keeping a message's last byte for its END.
      const n = Math.min(remaining - (endCost > 0 ? 1 : 0), MAX_DATA_PAYLOAD, this.credit);
      if (n <= 0) return at;
      this.writer.send(partType, this.streamId, data.subarray(at, at + n));
      this.credit -= n;
      at += n;
    }
  }

  private resumeSource(): void {
    if (!this.sourcePaused) return;
    this.sourcePaused = false;
    this.source.resume();
  }

  private sendFinal(): void {
    const type = this.finalType as MsgType;
    this.finalType = null;
    this.finalSent = true;
    this.writer.send(type, this.streamId, this.finalPayload);
    this.finalPayload = undefined;
    this.onFinalSent?.();
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
      throw new ProtocolError(
        `stream ${this.streamId} sent ${outstanding} bytes beyond its ${INITIAL_STREAM_WINDOW}-byte window`,
      );
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
