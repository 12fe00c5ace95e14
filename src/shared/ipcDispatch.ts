// The receiving end of the IPC channel, the same on both sides: frames are
// decoded, checked against the protocol table (ipcProtocol.ts) and handed to
// the handlers the side binds to that table. A message's conditions are
// checked here and only here, before its handler runs: a handler may rely on
// them. Anything the table does not permit throws a ProtocolError, and nothing
// more is read after that.

import { ProtocolError } from './errors.js';
import {
  CONDITIONS,
  FrameDecoder,
  MESSAGE_SPECS,
  type ChannelConfig,
  type ChannelState,
  type ConditionRule,
  type MessageSpec,
  type MsgType,
  type SentBy,
  type Side,
} from './ipcProtocol.js';

export type MessageHandler = (streamId: number, payload: Buffer) => void;

/** One handler for each message `sender` may send: the receiving side's half of the table. */
export type MessageHandlers<Sender extends Side> = { readonly [K in SentBy<Sender>]: MessageHandler };

interface Route {
  readonly spec: MessageSpec;
  readonly rules: readonly ConditionRule[];
  readonly handler: MessageHandler;
}

export class IpcDispatcher<Sender extends Side> implements ChannelState {
  private readonly decoder: FrameDecoder;
  private readonly routes = new Map<number, Route>();
  private readonly passedTypes = new Set<number>();

  /**
   * Reads frames sent by `sender`. `config` is what the worker's configuration
   * enables (null on the worker until CONFIG arrives); `pieceTypes` go to the
   * decoder (body frames handed on as their bytes arrive).
   */
  constructor(
    sender: Sender,
    handlers: MessageHandlers<Sender>,
    private configuration: ChannelConfig | null,
    pieceTypes?: ReadonlySet<number>,
  ) {
    const byName = handlers as Readonly<Record<string, MessageHandler>>;
    for (const [type, spec] of MESSAGE_SPECS) {
      if (spec.from !== sender && spec.from !== 'either') continue;
      const handler = byName[spec.name];
      if (handler === undefined) throw new Error(`no handler for ${spec.name}`);
      this.routes.set(type, { spec, rules: spec.when.map((condition) => CONDITIONS[condition]), handler });
    }
    const onFrame = (type: MsgType, streamId: number, payload: Buffer): void => this.dispatch(type, streamId, payload);
    this.decoder = new FrameDecoder(sender, onFrame, pieceTypes);
  }

  get config(): ChannelConfig | null {
    return this.configuration;
  }

  get passed(): ReadonlySet<number> {
    return this.passedTypes;
  }

  /** Bytes from the peer. Throws ProtocolError (or what a handler threw); after that nothing more is read. */
  push(chunk: Buffer): void {
    this.decoder.push(chunk);
  }

  /** Stop reading (the peer is no longer trusted). */
  fail(): void {
    this.decoder.fail();
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.decoder.bufferedBytes;
  }

  /** The worker's configuration arrived (CONFIG): from now on the conditions read it. */
  configure(config: ChannelConfig): void {
    this.configuration = config;
  }

  /** A connection message this side sent (READY, DRAIN): from now on the conditions count it as passed. */
  sent(type: MsgType): void {
    this.passedTypes.add(type);
  }

  private dispatch(type: MsgType, streamId: number, payload: Buffer): void {
    const route = this.routes.get(type);
    // The decoder has already refused a type the sender may not send.
    if (route === undefined) throw new ProtocolError(`no handler for 0x${type.toString(16)}`);
    const { spec, rules, handler } = route;
    for (const rule of rules) if (!rule.holds(this, type)) throw new ProtocolError(`${spec.name} ${rule.denied}`);
    if (!spec.onStream) this.passedTypes.add(type);
    handler(streamId, payload);
  }
}
