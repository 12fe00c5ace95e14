// One --websocket session, seen from the supervisor: the upstream WebSocket,
// opened by the supervisor itself with the key spliced into its handshake (the
// same KeySplicer as HTTP, on the socket ws connects), relayed message by
// message to and from the worker (wsRelay.ts). The worker chooses neither the
// URL nor Authorization.
//
// The upstream's answer to the handshake goes back as RESPONSE_HEAD: 101 means
// open; any other status (401, 404, 426...) is a refusal, passed on with its
// body so the client can show it and fall back to HTTP.

import type { IncomingMessage } from 'node:http';
import { connect as netConnect, isIP, type NetConnectOpts } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type WebSocket from 'ws';
import { WEBSOCKET_CLOSE_TIMEOUT_MS } from '../shared/constants.js';
import { ProtocolError, errnoCode } from '../shared/errors.js';
import { encodeHead, MAX_DATA_PAYLOAD, type HeaderList, type MsgType } from '../shared/ipcProtocol.js';
import {
  CLOSE_ABNORMAL,
  CLOSE_GOING_AWAY,
  MessageReceiver,
  closeLike,
  decodeClose,
  errorCloseCode,
  sendClose,
  sendMessage,
} from '../shared/wsRelay.js';
import { refusalEvent } from '../shared/refusals.js';
import { MessageGate } from './clientPolicy.js';
import { acceptedHandshakeHeaders, upstreamHandshakeHeaders } from './headerRules.js';
import { UpstreamStream, type StreamContext } from './upstreamStream.js';

/** A refusal's body is an error message: only this much of it is passed on. */
const MAX_REFUSAL_BODY = MAX_DATA_PAYLOAD;
const NO_REASON = Buffer.alloc(0);

/** ws, imported only with --websocket (loadWebSocketClient): loading it costs memory, wasted when the mode is off. */
let WebSocketClient: typeof WebSocket | null = null;

/** Called at startup when --websocket is on, before any WS_OPEN can arrive. */
export async function loadWebSocketClient(): Promise<void> {
  WebSocketClient ??= (await import('ws')).default;
}

function handshakeTimeout(): Error {
  return Object.assign(new Error('no answer to the WebSocket handshake'), { code: 'ETIMEDOUT' });
}

export class UpstreamSocket extends UpstreamStream {
  protected readonly failureMessage = 'upstream WebSocket failed';
  private readonly socket: WebSocket;
  private readonly receiver: MessageReceiver;
  /** Budgets and rate, per client message (null without a client policy). */
  private readonly gate: MessageGate | null;
  /** The 101's head, sent once ws has checked the handshake and opened. */
  private acceptHead: Buffer | null = null;
  /** The upstream answered the handshake (opened or refused), or we answered for it. */
  private answered = false;
  private readonly handshakeTimer: NodeJS.Timeout;

  constructor(id: number, clientHeaders: HeaderList, ctx: StreamContext, maxMessageBytes: number) {
    super(id, clientHeaders, ctx);
    const { upstream } = ctx;
    const { headers, protocols } = upstreamHandshakeHeaders(clientHeaders, upstream.host);
    headers.authorization = upstream.authorizationPlaceholder;
    const secure = upstream.webSocketUrl.protocol === 'wss:';
    const connect = (options: NetConnectOpts & ConnectionOptions) => {
      const host = options.host ?? '';
      // `path` is the request's, never a Unix socket to connect to.
      const tcp = { ...options, path: undefined } as NetConnectOpts & ConnectionOptions;
      const servername = isIP(host) === 0 ? host : '';
      return upstream.splicer.wrap(secure ? tlsConnect({ ...tcp, servername }) : netConnect(tcp));
    };
    if (WebSocketClient === null) throw new Error('WebSocket session without loadWebSocketClient()');
    this.socket = new WebSocketClient(upstream.webSocketUrl, protocols, {
      headers,
      maxPayload: maxMessageBytes,
      followRedirects: false,
      createConnection: connect as WebSocket.ClientOptions['createConnection'],
      ...{ closeTimeout: WEBSOCKET_CLOSE_TIMEOUT_MS }, // ws 8.19+; not in @types/ws yet
    });
    this.gate = ctx.policy === null ? null : new MessageGate(ctx.policy, id);
    const toUpstream = (data: Buffer, binary: boolean, fin: boolean, written: () => void): void =>
      this.forwardFragment(data, binary, fin, written);
    this.receiver = new MessageReceiver(ctx.writer, id, toUpstream, maxMessageBytes);
    this.socket.on('upgrade', (res) => (this.acceptHead = encodeHead(acceptedHandshakeHeaders(res.rawHeaders), 101)));
    this.socket.on('open', () => this.onOpen());
    this.socket.on('unexpected-response', (_req, res) => this.onRefused(res));
    this.socket.on('message', (data: Buffer, isBinary) => this.onMessage(data, isBinary));
    this.socket.on('error', (err) => this.onError(err));
    this.socket.on('close', (code, reason) => this.onUpstreamClosed(code, reason));
    // Our own timer rather than ws's handshakeTimeout, whose error does not say it was a timeout: 504, as for HTTP.
    this.handshakeTimer = setTimeout(() => this.onError(handshakeTimeout()), upstream.timeoutMs);
  }

  /** WS_*_PART / WS_*_END from the worker: a client message on its way upstream. */
  onMessageFrame(type: MsgType, payload: Buffer): void {
    if (this.requestClosed) throw new ProtocolError(`message after WS_CLOSE on stream ${this.id}`);
    if (this.acceptHead === null || !this.answered) {
      throw new ProtocolError(`message before the handshake on stream ${this.id}`);
    }
    this.scanRequest(payload);
    // Once the upstream's socket is closing, ws fails the send and its callback still returns the credit.
    this.receiver.receive(type, payload);
  }

  /** WS_CLOSE from the worker: the client's socket is closing; close the upstream's the same way. */
  onWorkerClose(payload: Buffer): void {
    if (this.requestClosed) throw new ProtocolError(`WS_CLOSE twice on stream ${this.id}`);
    const { code, reason } = decodeClose(payload);
    this.closeRequest();
    this.sender.discard(); // the client's socket is closing: what waits for it will never be taken
    closeLike(this.socket, code, reason);
    // Our own WS_CLOSE follows when the upstream's socket has closed.
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Reset by the worker: drop the upstream's socket too; abandoned: close it "going away", saying why. */
  protected dropUpstream(why: string | null): void {
    clearTimeout(this.handshakeTimer);
    this.sender.discard(); // no credit will come: read the upstream's close reply instead
    if (why === null) closeLike(this.socket, CLOSE_ABNORMAL, NO_REASON);
    else closeLike(this.socket, CLOSE_GOING_AWAY, Buffer.from(why));
  }

  /** A complete non-101 answer (refusal or failure): the upstream's socket is done with. */
  protected override answer(head: Buffer, body: Buffer): void {
    clearTimeout(this.handshakeTimer);
    this.socket.terminate();
    this.answered = true;
    super.answer(head, body);
  }

  private onOpen(): void {
    clearTimeout(this.handshakeTimer);
    const head = this.acceptHead as Buffer;
    if (this.responseClosed) return;
    this.answered = true;
    this.sendHead(head);
  }

  private onRefused(res: IncomingMessage): void {
    clearTimeout(this.handshakeTimer);
    if (this.responseClosed) return void res.destroy();
    this.answered = true;
    const status = res.statusCode ?? 502;
    const chunks: Buffer[] = [];
    let kept = 0;
    res.on('data', (chunk: Buffer) => {
      if (kept >= MAX_REFUSAL_BODY) return;
      const piece = chunk.subarray(0, MAX_REFUSAL_BODY - kept);
      chunks.push(piece);
      kept += piece.length;
    });
    const answer = (): void => {
      if (this.responseClosed) return;
      const head = encodeHead(acceptedHandshakeHeaders(res.rawHeaders), status);
      const body = Buffer.concat(chunks, kept);
      this.scrubber.maskInPlace(head);
      this.scrubber.maskInPlace(body);
      this.answer(head, body);
    };
    res.on('end', answer);
    res.on('error', answer);
    this.ctx.log.info({ stream: this.id, status }, 'upstream refused the WebSocket upgrade');
  }

  /** A part of a client message: upstream, unless the policy refuses the message (answered with an `error` event). */
  private forwardFragment(data: Buffer, binary: boolean, fin: boolean, written: () => void): void {
    const refusal = this.gate?.check(fin) ?? null;
    if (refusal === null) return this.socket.send(data, { binary, fin }, written);
    written();
    if (fin) sendMessage(this.sender, refusalEvent(refusal), false);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.responseClosed) return;
    this.scrubber.maskInPlace(data);
    if (!isBinary) this.ctx.policy?.meterMessage(this.id, data);
    sendMessage(this.sender, data, isBinary);
  }

  private onError(err: Error): void {
    if (this.responseClosed) return;
    // No answer to the handshake: the worker answers the client 502/504 as for HTTP.
    if (!this.answered) return this.answerFailure(err);
    // ws closes the socket itself (1009 for an oversize message...); say so to the client at once.
    this.ctx.log.info({ stream: this.id, code: errnoCode(err) ?? 'UNKNOWN' }, 'upstream WebSocket failed');
    this.closeTowardsWorker(errorCloseCode(err), NO_REASON);
  }

  private onUpstreamClosed(code: number, reason: Buffer): void {
    if (this.responseClosed || !this.answered) return;
    this.scrubber.maskInPlace(reason); // a short key fits a close reason
    this.closeTowardsWorker(code, reason);
  }

  /** WS_CLOSE after the messages still waiting for credit; our half closes once it is sent. */
  private closeTowardsWorker(code: number, reason: Buffer): void {
    if (this.sender.ending) return;
    sendClose(this.sender, code, reason, () => this.closeResponse());
  }
}
