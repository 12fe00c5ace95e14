// One --websocket session, seen from the worker: the client's WebSocket, which
// the worker terminates with ws, relayed to the supervisor's upstream socket
// message by message (wsRelay.ts). The client's handshake is answered only
// once the upstream has answered: a 101 completes it here too (ws writes the
// client's own Sec-WebSocket-* fields); a refusal goes back with the
// upstream's status and body, so a client such as Codex shows the message and
// falls back to HTTP.

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { WEBSOCKET_CLOSE_TIMEOUT_MS } from '../shared/constants.js';
import { errnoCode } from '../shared/errors.js';
import { CreditSender } from '../shared/flowControl.js';
import { withoutHopByHop } from '../shared/hopByHop.js';
import { Msg, type FrameWriter, type HeaderList, type MsgType } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import {
  CLOSE_ABNORMAL,
  CLOSE_GOING_AWAY,
  CLOSE_INTERNAL_ERROR,
  MessageReceiver,
  closeLike,
  decodeClose,
  errorCloseCode,
  sendClose,
  sendMessage,
} from '../shared/wsRelay.js';
import { answerOnSocket, headerLines } from './answer.js';
import { refusalEvent, type Refusal } from '../shared/refusals.js';
import type { WebSocketDump } from './dumpWriter.js';
import type { MessageBudget, MessageHolder } from './messageBudget.js';
import type { ModelPolicy } from './modelPolicy.js';
import { ClientExchange } from './exchange.js';

const NOT_MIRRORED = new Set(['content-length', 'sec-websocket-protocol']);
const NOT_MIRRORED_IN_REFUSAL = new Set(['content-length']);
/** Refusals a client may leave unread before its socket is no longer read. */
const UNREAD_REFUSAL_BYTES = 64 * 1024;

type Phase = 'handshake' | 'refusing' | 'open' | 'closing' | 'done';

export class ClientSocket extends ClientExchange<WebSocketDump> implements MessageHolder {
  private phase: Phase = 'handshake';
  private socket: WebSocket | null = null;
  private sender: CreditSender | null = null;
  private readonly receiver: MessageReceiver;
  /** ws's verifyClient callback, once ws has found the handshake valid. */
  private accept: ((ok: boolean) => void) | null = null;
  private upstreamHead: HeaderList = [];
  private readonly refusalBody: Buffer[] = [];
  private openSent = false;
  private clientClosed = false;
  /** A close asked for before the socket opened (draining). */
  private closeWhenOpen: { code: number; reason: string } | null = null;
  private lastActivity = Date.now();
  private closingSince = 0;
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.rawSocket.uncork();
  };
  /** Why the client's socket is not read: no credit upstream, refusals unread, or enough messages held. */
  private readonly readingHeldBy = new Set<'credit' | 'refusals' | 'budget'>();
  /**
   * Bytes read from the client and not yet passed on or refused; within a
   * chunk, as the rest of one that ends a message is not counted.
   */
  private unsent = 0;
  private chunkEndedMessage = false;
  /** A message ended while held for credit: it is passed on once the credit resumes reading. */
  private passOnWhenResumed = false;

  constructor(
    id: number,
    req: IncomingMessage,
    private readonly rawSocket: Duplex,
    writer: FrameWriter,
    log: Logger,
    dump: WebSocketDump | null,
    onClosed: (session: ClientExchange) => void,
    private readonly messages: MessageBudget,
    /** --allow-model: each client message is checked before it is relayed. */
    private readonly models: ModelPolicy | null = null,
  ) {
    super(id, req, writer, log, dump, onClosed, true);
    this.receiver = new MessageReceiver(writer, id, (data, binary, fin, written) => {
      this.toClient(data, binary, fin, written);
    });
    // Gone before the handshake finished: abandon the upstream's.
    rawSocket.once('close', () => {
      if (this.phase !== 'handshake' && this.phase !== 'refusing') return;
      this.abandon(this.openSent ? 'client disconnected during the handshake' : 'invalid WebSocket handshake');
    });
  }

  /** Let ws check the handshake; it calls `verified` (its verifyClient) if valid, else answers 400 itself. */
  start(server: WebSocketServer, head: Buffer): void {
    server.handleUpgrade(this.req, this.rawSocket, head, (socket) => this.onOpen(socket));
  }

  /** ws found the handshake valid: ask the supervisor to open the upstream's. */
  verified(accept: (ok: boolean) => void): void {
    this.accept = accept;
    this.openSent = true;
    this.open(Msg.WS_OPEN);
  }

  /** The subprotocol the upstream chose, if the client offered it. */
  selectProtocol(offered: Set<string>): string | false {
    const head = this.upstreamHead;
    for (let i = 0; i < head.length; i += 2) {
      const value = head[i + 1] as string;
      if ((head[i] as string).toLowerCase() === 'sec-websocket-protocol' && offered.has(value)) return value;
    }
    return false;
  }

  /** Fields of the upstream's 101 for the client's 101 (ws adds the handshake's own). */
  mirroredHeaderLines(): string[] {
    return headerLines(withoutHopByHop(this.upstreamHead, NOT_MIRRORED));
  }

  onResponseHead(status: number, headers: HeaderList): void {
    if (this.phase !== 'handshake') return;
    this.record.status = status;
    this.upstreamHead = headers;
    this.dump?.onResponseHead(status, headers);
    if (status !== 101) {
      this.phase = 'refusing';
      return;
    }
    const accept = this.accept;
    this.accept = null;
    accept?.(true); // ws writes the 101 and calls onOpen, unless the client has gone
  }

  /** The body of a refusal (or of the proxy's own 502/504). */
  onResponseData(payload: Buffer): void {
    if (this.phase !== 'refusing') return;
    this.refusalBody.push(payload);
    this.dump?.refusalBody.add(payload);
  }

  onResponseEnd(): void {
    if (this.phase !== 'refusing') return;
    const body = Buffer.concat(this.refusalBody);
    this.record.bytesOut = body.length;
    const fields = withoutHopByHop(this.upstreamHead, NOT_MIRRORED_IN_REFUSAL);
    if (this.rawSocket.writable) answerOnSocket(this.rawSocket, this.record.status, fields, body);
    this.sendReset();
    this.finish();
  }

  onMessageFrame(type: MsgType, payload: Buffer): void {
    this.receiver.receive(type, payload);
  }

  /** The upstream's socket is closing: close the client's the same way. */
  onCloseFrame(payload: Buffer): void {
    const { code, reason } = decodeClose(payload);
    this.dump?.closed('upstream_to_client', code, reason.toString('utf8'));
    if (this.socket === null) return this.abandon('upstream closed during the handshake');
    this.beginClosing();
    this.sender?.discard(); // the upstream's socket is closing: what waits for it will never be taken
    closeLike(this.socket, code, reason);
  }

  onWindow(increment: number): void {
    this.sender?.grant(increment);
  }

  onReset(): void {
    this.abandon('upstream socket abandoned');
  }

  /** Tell the client as well as we can. */
  abort(reason: string): void {
    if (this.socket !== null) closeLike(this.socket, CLOSE_INTERNAL_ERROR, Buffer.from('proxy worker failed'));
    this.abandon(reason);
  }

  /** Close both hops with `code` (idle timeout, shutdown). */
  close(code: number, reason: string): void {
    if (this.socket === null) {
      this.closeWhenOpen = { code, reason };
      return;
    }
    if (this.phase !== 'open') return;
    this.beginClosing();
    this.dump?.closed('client_to_upstream', code, reason);
    if (this.sender !== null) sendClose(this.sender, code, Buffer.from(reason), () => this.finishIfClosed());
    this.socket.close(code, reason);
  }

  /** Closed as "going away". */
  override drain(): void {
    this.close(CLOSE_GOING_AWAY, 'proxy shutting down');
  }

  /** Idle sockets are closed; closings that hang are abandoned. */
  override sweep(now: number, idleTimeoutMs: number): void {
    if (this.phase === 'open' && now - this.lastActivity >= idleTimeoutMs) {
      this.close(CLOSE_GOING_AWAY, 'idle timeout');
    } else if (this.phase === 'closing' && now - this.closingSince >= WEBSOCKET_CLOSE_TIMEOUT_MS) {
      this.abandon('closing handshake timed out');
    }
  }

  private onOpen(socket: WebSocket): void {
    this.socket = socket;
    this.phase = 'open';
    const source = {
      pause: () => this.holdReading('credit', true),
      resume: () => {
        this.holdReading('credit', false);
        if (this.passOnWhenResumed) this.passedOn();
      },
    };
    const sender = new CreditSender(this.writer, this.id, source);
    this.sender = sender;
    socket.on('message', (data: Buffer, isBinary) => {
      this.lastActivity = Date.now();
      this.record.bytesIn += data.length;
      this.dump?.clientMessage(data, isBinary);
      const refusal = this.models?.checkMessage(data, isBinary) ?? null;
      if (refusal !== null) this.refuse(socket, refusal);
      else sendMessage(sender, data, isBinary);
      this.chunkEndedMessage = true;
      if (this.readingHeldBy.has('credit')) this.passOnWhenResumed = true;
      else this.passedOn();
    });
    // After ws's own listener: the messages this chunk completed have been emitted.
    this.rawSocket.on('data', (chunk: Buffer) => this.onClientBytes(chunk.length));
    this.rawSocket.once('close', () => this.messages.hold(this, 0));
    // ws closes the client itself (1009 for an oversize message...): say so upstream at once.
    socket.on('error', (err) => {
      this.log.debug({ stream: this.id, code: errnoCode(err) }, 'client WebSocket failed');
      this.closeTowardsUpstream(errorCloseCode(err), Buffer.alloc(0));
    });
    socket.on('close', (code, reason) => {
      this.clientClosed = true;
      this.record.closeCode = code;
      this.closeTowardsUpstream(code, reason);
      this.finishIfClosed();
    });
    if (this.closeWhenOpen !== null) this.close(this.closeWhenOpen.code, this.closeWhenOpen.reason);
  }

  /**
   * A refused message is answered on the socket. A client that leaves the
   * answers unread is not read either: each costs it a few bytes to send and
   * the worker a few hundred to hold.
   */
  private refuse(socket: WebSocket, refusal: Refusal): void {
    socket.send(refusalEvent(refusal), { binary: false }, () => {
      if (socket.bufferedAmount <= UNREAD_REFUSAL_BYTES) this.holdReading('refusals', false);
    });
    if (socket.bufferedAmount > UNREAD_REFUSAL_BYTES) this.holdReading('refusals', true);
  }

  /** The message budget has room again. */
  readOn(): void {
    this.holdReading('budget', false);
  }

  private onClientBytes(bytes: number): void {
    if (this.chunkEndedMessage) {
      this.chunkEndedMessage = false;
      return;
    }
    this.unsent += bytes;
    if (!this.messages.hold(this, this.unsent)) this.holdReading('budget', true);
  }

  private passedOn(): void {
    this.passOnWhenResumed = false;
    this.unsent = 0;
    this.messages.hold(this, 0);
  }

  private holdReading(reason: 'credit' | 'refusals' | 'budget', held: boolean): void {
    const wasHeld = this.readingHeldBy.size > 0;
    if (held) this.readingHeldBy.add(reason);
    else this.readingHeldBy.delete(reason);
    const isHeld = this.readingHeldBy.size > 0;
    if (isHeld === wasHeld) return;
    if (isHeld) this.socket?.pause();
    else this.socket?.resume();
  }

  private toClient(data: Buffer, binary: boolean, fin: boolean, written: () => void): void {
    if (this.socket === null) return written();
    this.lastActivity = Date.now();
    this.record.bytesOut += data.length;
    this.dump?.upstreamFragment(data, binary, fin);
    // The messages relayed in one tick leave in one write (an answer is dozens of small events).
    if (!this.corked) {
      this.corked = true;
      this.rawSocket.cork();
      process.nextTick(this.uncork);
    }
    // On a closing socket ws fails the send, and still calls back: the credit returns either way.
    this.socket.send(data, { binary, fin }, written);
  }

  private closeTowardsUpstream(code: number, reason: Buffer): void {
    const sender = this.sender as CreditSender;
    if (sender.ending || this.resetSent) return;
    this.beginClosing();
    this.dump?.closed('client_to_upstream', code, reason.toString('utf8'));
    // The client dropped: the upstream goes at once, whatever is still queued.
    if (code === CLOSE_ABNORMAL) this.sendReset();
    else sendClose(sender, code, reason, () => this.finishIfClosed());
  }

  /** Done once the client's socket has closed and the supervisor has been told. */
  private finishIfClosed(): void {
    if (this.clientClosed && (this.resetSent || this.sender?.ended === true)) this.finish();
  }

  private beginClosing(): void {
    if (this.phase !== 'open') return;
    this.phase = 'closing';
    this.closingSince = Date.now();
  }

  private abandon(outcome: string): void {
    if (this.phase === 'done') return;
    this.socket?.terminate();
    if (this.socket === null) this.rawSocket.destroy();
    this.sendReset();
    this.finish(outcome);
  }

  /** Not if the supervisor never heard of the session, or has been told it closed. */
  protected override sendReset(): void {
    if (!this.openSent || this.sender?.ended === true) return;
    super.sendReset();
  }

  protected override finish(outcome?: string): void {
    this.phase = 'done';
    super.finish(outcome);
  }
}
