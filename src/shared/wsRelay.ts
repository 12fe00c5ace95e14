// WebSocket messages over the IPC channel (--websocket), used by both sides.
//
// Each side terminates its own WebSocket (the worker the client's, the
// supervisor the upstream's); only messages and close codes cross the channel.
// A message goes out as WS_*_PART frames and one WS_*_END frame through the
// same credit sender as a body (flowControl.ts); the
// receiving side writes each part to its socket as a fragment of the same
// message as it arrives and returns credit once the socket has taken it. So a
// socket that stops reading pins one credit window, never a whole message.
//
// Closing: each side sends WS_CLOSE once, when it starts closing its socket
// (its own code) or when its socket closes (the code its peer sent), whichever
// comes first; the other side then closes its socket with that code.

import type WebSocket from 'ws';
import { ProtocolError } from './errors.js';
import { CreditReceiver, type CreditSender } from './flowControl.js';
import { MAX_CLOSE_REASON, MESSAGE_CREDIT, Msg, type FrameWriter, type MsgType } from './ipcProtocol.js';

/** No status code was present (RFC 6455 §7.4.1): close without one. */
export const CLOSE_NO_STATUS = 1005;
/** The connection dropped without a close frame: drop the other hop too. */
export const CLOSE_ABNORMAL = 1006;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_INTERNAL_ERROR = 1011;

export function isMessageFrame(type: number): boolean {
  return (
    type === Msg.WS_TEXT_PART || type === Msg.WS_TEXT_END || type === Msg.WS_BINARY_PART || type === Msg.WS_BINARY_END
  );
}

/** One whole message as part frames and an END, within the stream's credit (held in order while it is short). */
export function sendMessage(sender: CreditSender, data: Buffer, binary: boolean): void {
  if (binary) sender.send(data, Msg.WS_BINARY_PART, Msg.WS_BINARY_END);
  else sender.send(data, Msg.WS_TEXT_PART, Msg.WS_TEXT_END);
}

/** WS_CLOSE after every message held for credit (once); then `onSent`. */
export function sendClose(sender: CreditSender, code: number, reason: Buffer, onSent?: () => void): void {
  sender.end(Msg.WS_CLOSE, onSent, encodeClose(code, reason));
}

/** Where received parts go: one fragment of the current message; call `written` once the socket took it. */
export type FragmentSink = (data: Buffer, binary: boolean, fin: boolean, written: () => void) => void;

/**
 * The receiving half: checks credit and that a message keeps its kind until
 * its last part, passes each part on as a fragment, and returns credit as the
 * socket takes them.
 */
export class MessageReceiver {
  private readonly credit: CreditReceiver;
  /** Kind of the message whose parts are arriving (null between messages). */
  private binaryInProgress: boolean | null = null;
  private messageBytes = 0;

  /**
   * `maxMessageBytes`: a message that grows beyond it is a violation (the
   * peer's socket could not have received it).
   */
  constructor(
    writer: FrameWriter,
    private readonly streamId: number,
    private readonly sink: FragmentSink,
    private readonly maxMessageBytes = Infinity,
  ) {
    this.credit = new CreditReceiver(writer, streamId);
  }

  receive(type: MsgType, payload: Buffer): void {
    const fin = type === Msg.WS_TEXT_END || type === Msg.WS_BINARY_END;
    const cost = fin ? payload.length + MESSAGE_CREDIT : payload.length;
    this.credit.received(cost);
    const binary = type === Msg.WS_BINARY_PART || type === Msg.WS_BINARY_END;
    if (this.binaryInProgress !== null && this.binaryInProgress !== binary) {
      throw new ProtocolError(`message kind changed within a message on stream ${this.streamId}`);
    }
    this.messageBytes += payload.length;
    if (this.messageBytes > this.maxMessageBytes)
      throw new ProtocolError(`message of more than ${this.maxMessageBytes} bytes on stream ${this.streamId}`);
    if (fin) this.messageBytes = 0;
    this.binaryInProgress = fin ? null : binary;
    this.sink(payload, binary, fin, () => this.credit.consumed(cost));
  }
}

export function encodeClose(code: number, reason: Buffer): Buffer {
  const kept = reason.length > MAX_CLOSE_REASON ? reason.subarray(0, MAX_CLOSE_REASON) : reason;
  const payload = Buffer.allocUnsafe(2 + kept.length);
  payload.writeUInt16BE(code, 0);
  kept.copy(payload, 2);
  return payload;
}

export function decodeClose(payload: Buffer): { code: number; reason: Buffer } {
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2) };
}

/** Codes a close frame may carry (RFC 6455 §7.4); anything else drops the connection. */
function sendableCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== CLOSE_NO_STATUS && code !== CLOSE_ABNORMAL) ||
    (code >= 3000 && code <= 4999)
  );
}

/** Close `socket` the way its peer hop was closed. */
export function closeLike(socket: WebSocket, code: number, reason: Buffer): void {
  if (socket.readyState === socket.CLOSED) return;
  if (socket.readyState === socket.CONNECTING) return socket.terminate();
  if (code === CLOSE_NO_STATUS) return socket.close();
  if (!sendableCode(code)) return socket.terminate();
  socket.close(code, reason);
}

/** The close code ws sends when it fails a connection for this error. */
export function errorCloseCode(err: Error): number {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return 1009;
  if (code === 'WS_ERR_INVALID_UTF8') return 1007;
  if (code !== undefined && code.startsWith('WS_ERR_')) return 1002;
  return CLOSE_ABNORMAL;
}
