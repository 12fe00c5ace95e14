// How much of their clients' WebSocket messages the worker holds at once,
// across sockets. ws keeps a message until it is whole (up to
// --ws-max-message-bytes) and a whole one may wait for credit, so without a
// bound a few clients each sending most of a large message would make the
// worker hold them all.

/** A client socket that can be told to read again. */
export interface MessageHolder {
  readOn(): void;
}

/**
 * Past the budget, only the socket that began holding first is read on; the
 * others wait until the total is back within it. That socket's message fits
 * the budget alone, so it always completes and the line moves.
 */
export class MessageBudget {
  private total = 0;
  /** Sockets holding bytes, in the order they began to. */
  private readonly holders = new Map<MessageHolder, number>();
  private readonly waiting = new Set<MessageHolder>();

  constructor(private readonly capacity: number) {}

  /** `holder` now holds `bytes` (0: none, or it closed). Returns whether it may read on. */
  hold(holder: MessageHolder, bytes: number): boolean {
    this.total += bytes - (this.holders.get(holder) ?? 0);
    if (bytes === 0) {
      this.holders.delete(holder);
      this.waiting.delete(holder);
    } else {
      this.holders.set(holder, bytes);
    }
    if (this.total <= this.capacity) {
      this.readOnAll();
      return true;
    }
    const first = this.holders.keys().next().value;
    if (first !== undefined && this.waiting.delete(first)) first.readOn(); // the line moved
    if (first === holder || bytes === 0) return true;
    this.waiting.add(holder);
    return false;
  }

  private readOnAll(): void {
    if (this.waiting.size === 0) return;
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const holder of waiting) holder.readOn();
  }
}
