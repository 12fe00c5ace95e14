// A lean HTTP/1.1 client connection for the load generator: raw net, one
// request at a time (keep-alive, no pipelining), a small incremental response
// parser (Content-Length, chunked, or until close). It counts body bytes
// without copying them and reports the first body byte's time.

import { connect, type Socket } from 'node:net';
import { nowUs } from './common.js';

export interface Exchange {
  /** Called once per response with the outcome. */
  readonly onDone: (r: ExchangeResult) => void;
  /** Called for every slice of decoded body bytes (optional). */
  readonly onBody?: (bytes: number, atUs: number) => void;
}

export interface ExchangeResult {
  readonly ok: boolean;
  /** Why it failed ('' when ok): connect, closed, timeout, status, length, parse. */
  readonly error: string;
  readonly status: number;
  readonly bodyBytes: number;
  readonly startUs: number;
  /** The response's first byte (its head), and its body's first byte. */
  readonly responseStartUs: number | null;
  readonly firstByteUs: number | null;
  readonly endUs: number;
  /** No response byte at all arrived. */
  readonly unserved: boolean;
}

const enum State {
  Idle,
  Head,
  Fixed,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
}

const CRLF_CRLF = Buffer.from('\r\n\r\n');

export class HttpConn {
  private socket: Socket | null = null;
  private connected = false;
  private state = State.Idle;
  private head: Buffer | null = null;
  private line = '';
  private remaining = 0;
  private status = 0;
  private bodyBytes = 0;
  private expectStatus = 200;
  private expectLength = -1;
  private keepAlive = true;
  private startUs = 0;
  private firstByteUs: number | null = null;
  private responseStartUs: number | null = null;
  private exchange: Exchange | null = null;
  private pending: Buffer | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Connections opened over this object's life. */
  opened = 0;

  constructor(private readonly port: number) {}

  /**
   * Send `request` (a complete request: head and body) and parse the reply.
   * The result is failed unless the status is `expectStatus` and the body
   * length is `expectLength` (-1: any).
   */
  send(request: Buffer, expectStatus: number, expectLength: number, timeoutMs: number, exchange: Exchange): void {
    this.exchange = exchange;
    this.expectStatus = expectStatus;
    this.expectLength = expectLength;
    this.status = 0;
    this.bodyBytes = 0;
    this.head = null;
    this.firstByteUs = null;
    this.responseStartUs = null;
    this.keepAlive = true;
    this.state = State.Head;
    this.startUs = nowUs();
    if (timeoutMs > 0) this.timer = setTimeout(() => this.fail('timeout'), timeoutMs);
    if (this.socket === null) this.open();
    if (this.connected) (this.socket as Socket).write(request);
    else this.pending = request;
  }

  /** Stop reading (a reader that stalls): the socket's receive buffer fills up. */
  pause(): void {
    this.socket?.pause();
  }

  /** Drop the connection; an exchange in progress fails with `reason`. */
  destroy(reason = 'closed'): void {
    if (this.exchange !== null) this.fail(reason);
    else this.dropSocket();
  }

  private open(): void {
    this.opened++;
    const socket = connect({ host: '127.0.0.1', port: this.port, noDelay: true });
    this.socket = socket;
    this.connected = false;
    socket.on('connect', () => {
      if (this.socket !== socket) return;
      this.connected = true;
      if (this.pending !== null) {
        socket.write(this.pending);
        this.pending = null;
      }
    });
    socket.on('data', (data: Buffer) => {
      if (this.socket === socket) this.onData(data);
    });
    socket.on('error', () => {
      if (this.socket === socket) this.fail(this.connected ? 'closed' : 'connect');
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      if (this.state === State.UntilClose) return this.finish();
      if (this.exchange !== null) this.fail(this.connected ? 'closed' : 'connect');
      else this.dropSocket();
    });
  }

  private dropSocket(): void {
    const s = this.socket;
    this.socket = null;
    this.connected = false;
    this.pending = null;
    this.state = State.Idle;
    s?.destroy();
  }

  private fail(error: string): void {
    const ex = this.exchange;
    this.dropSocket();
    this.complete(ex, error);
  }

  private complete(ex: Exchange | null, error: string): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.exchange = null;
    if (ex === null) return;
    ex.onDone({
      ok: error === '',
      error,
      status: this.status,
      bodyBytes: this.bodyBytes,
      startUs: this.startUs,
      responseStartUs: this.responseStartUs,
      firstByteUs: this.firstByteUs,
      endUs: nowUs(),
      unserved: this.responseStartUs === null,
    });
  }

  private finish(): void {
    const ex = this.exchange;
    let error = '';
    if (this.status !== this.expectStatus) error = 'status';
    else if (this.expectLength >= 0 && this.bodyBytes !== this.expectLength) error = 'length';
    this.state = State.Idle;
    if (!this.keepAlive || error !== '') this.dropSocket();
    this.complete(ex, error);
  }

  private body(n: number): void {
    if (n === 0) return;
    const at = nowUs();
    if (this.firstByteUs === null) this.firstByteUs = at;
    this.bodyBytes += n;
    this.exchange?.onBody?.(n, at);
  }

  private onData(data: Buffer): void {
    if (this.exchange === null) return; // bytes outside an exchange: ignored (the next one fails on them)
    this.responseStartUs ??= nowUs();
    let off = 0;
    while (off < data.length && this.exchange !== null) {
      switch (this.state) {
        case State.Head: {
          const buf = this.head === null ? data.subarray(off) : Buffer.concat([this.head, data.subarray(off)]);
          const end = buf.indexOf(CRLF_CRLF);
          if (end === -1) {
            if (buf.length > 64 * 1024) return this.fail('parse');
            this.head = buf;
            return;
          }
          const consumedFromData = end + 4 - (this.head === null ? 0 : this.head.length);
          this.head = null;
          if (!this.parseHead(buf.toString('latin1', 0, end))) return this.fail('parse');
          off += consumedFromData;
          if ((this.state as State) === State.Fixed && this.remaining === 0) return this.finish();
          break;
        }
        case State.Fixed: {
          const n = Math.min(this.remaining, data.length - off);
          this.remaining -= n;
          off += n;
          this.body(n);
          if (this.remaining === 0) return this.finish();
          break;
        }
        case State.UntilClose: {
          this.body(data.length - off);
          off = data.length;
          break;
        }
        case State.ChunkSize:
        case State.ChunkDataEnd:
        case State.Trailers: {
          const nl = data.indexOf(0x0a, off);
          const piece = data.toString('latin1', off, nl === -1 ? data.length : nl + 1);
          this.line += piece;
          if (this.line.length > 4096) return this.fail('parse');
          if (nl === -1) return;
          off = nl + 1;
          const line = this.line.replace(/\r?\n$/, '');
          this.line = '';
          if (this.state === State.ChunkDataEnd) {
            if (line !== '') return this.fail('parse');
            this.state = State.ChunkSize;
          } else if (this.state === State.Trailers) {
            if (line === '') return this.finish();
          } else {
            const size = parseInt(line, 16);
            if (!Number.isFinite(size) || size < 0) return this.fail('parse');
            if (size === 0) this.state = State.Trailers;
            else {
              this.remaining = size;
              this.state = State.ChunkData;
            }
          }
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.remaining, data.length - off);
          this.remaining -= n;
          off += n;
          this.body(n);
          if (this.remaining === 0) this.state = State.ChunkDataEnd;
          break;
        }
        default:
          return this.fail('parse');
      }
    }
  }

  private parseHead(head: string): boolean {
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (m === null) return false;
    this.status = Number(m[1]);
    if (this.status === 100) {
      // Interim response: keep waiting for the final head.
      this.state = State.Head;
      return true;
    }
    let length = -1;
    let chunked = false;
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i] as string;
      const colon = l.indexOf(':');
      if (colon === -1) continue;
      const name = l.slice(0, colon).trim().toLowerCase();
      const value = l
        .slice(colon + 1)
        .trim()
        .toLowerCase();
      if (name === 'content-length') length = Number(value);
      else if (name === 'transfer-encoding') chunked = value.includes('chunked');
      else if (name === 'connection' && value.includes('close')) this.keepAlive = false;
    }
    if (chunked) {
      this.state = State.ChunkSize;
      this.line = '';
    } else if (length >= 0) {
      this.state = State.Fixed;
      this.remaining = length;
    } else {
      this.state = State.UntilClose;
      this.keepAlive = false;
    }
    return true;
  }
}

/** A request head + body as one buffer. */
export function buildRequest(port: number, headers: Record<string, string>, body: Buffer): Buffer {
  let head = `POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  return Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), body]);
}
