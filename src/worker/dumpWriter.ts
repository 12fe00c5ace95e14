// --dump-dir: one request and one response JSON file per forwarded request, in
// the original's format (pretty JSON). Formatted here, where every client and
// upstream byte is parsed; the supervisor writes the bytes into files it names
// and creates itself (supervisor/dumpFiles.ts), so the worker writes no file.
//
// Authorization and every header whose name contains "cookie" are redacted;
// header values and bodies that the supervisor found to contain the key
// (REQUEST_SCANNED) are redacted; response bytes arrive already scrubbed by the
// supervisor. Bodies are kept up to maxBodyBytes; beyond that the dump says so
// and gives the length.

import {
  DUMP_WINDOW_BYTES,
  MAX_DATA_PAYLOAD,
  Msg,
  dumpFileLimit,
  encodeDumpFile,
  type DumpKind,
  type FrameWriter,
  type HeaderList,
  type KeyScanResult,
} from '../shared/ipcProtocol.js';
import { MAX_WINDOW } from '../shared/flowControl.js';
import { ProtocolError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { prettyLayout } from './jsonText.js';

const REDACTED = '[REDACTED]';
const KEY_REDACTED = '[REDACTED: contained the proxy API key]';
const NONE: ReadonlySet<number> = new Set();

interface DumpedHeader {
  readonly name: string;
  readonly value: string;
}

/** The dump of one client exchange, whatever its kind (the frontend and ClientExchange see only this). */
export interface ExchangeDump {
  onResponseHead(status: number, headers: HeaderList): void;
  /** The supervisor has seen all the client sent (REQUEST_SCANNED) and says where the key was. */
  writeRequest(scan: KeyScanResult): void;
  /** The exchange ended: completed (no error), failed or cut off. */
  end(error?: string): void;
}

/** A body captured up to a limit, counting what was not kept. */
class BodyCapture {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  total = 0;

  constructor(private readonly limit: number) {}

  add(chunk: Buffer): void {
    this.total += chunk.length;
    const room = this.limit - this.kept;
    if (room <= 0) return;
    const piece = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.chunks.push(piece);
    this.kept += piece.length;
  }

  /** Forget the last `n` bytes counted (they were never sent on). */
  dropTail(n: number): void {
    this.total -= n;
    let excess = this.kept - Math.min(this.kept, this.total);
    while (excess > 0) {
      const last = this.chunks.pop() as Buffer;
      const cut = Math.min(excess, last.length);
      if (cut < last.length) this.chunks.push(last.subarray(0, last.length - cut));
      this.kept -= cut;
      excess -= cut;
    }
  }

  /** Dump fields: parsed JSON when it parses, else UTF-8 text; truncation noted. */
  fields(): Record<string, unknown> {
    const bytes = Buffer.concat(this.chunks, this.kept);
    if (this.kept < this.total) return { body: bytes.toString('utf8'), body_truncated: true, body_length: this.total };
    return { body: parseBody(bytes) };
  }
}

/** serde_json, the original's parser, refuses JSON nested deeper; such a body is dumped as text there, and here. */
const MAX_NESTING = 127;
/**
 * A body whose pretty form would grow by more than this many times its length
 * (plus PRETTY_SLACK) is dumped as text: a client's few kilobytes of nested
 * brackets must not become megabytes on disk.
 */
const MAX_PRETTY_GROWTH = 4;
const PRETTY_SLACK = 4096;

function parseBody(bytes: Buffer): unknown {
  const text = bytes.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    return text;
  }
  const { depth, added } = prettyLayout(text);
  return depth > MAX_NESTING || added > MAX_PRETTY_GROWTH * text.length + PRETTY_SLACK ? text : value;
}

/**
 * Header fields as dumped: Authorization and every field whose name contains
 * "cookie" redacted, whatever their case; so is each field whose index (in
 * pairs) is in `keyBearing`, where the supervisor found the key.
 */
export function dumpHeaders(headers: HeaderList, keyBearing: ReadonlySet<number> = NONE): DumpedHeader[] {
  const out: DumpedHeader[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    const lower = name.toLowerCase();
    let value = headers[i + 1] as string;
    if (lower === 'authorization' || lower.includes('cookie')) value = REDACTED;
    else if (keyBearing.has(i / 2)) value = KEY_REDACTED;
    out.push({ name, value });
  }
  return out;
}

interface QueuedFile {
  readonly streamId: number;
  readonly head: Buffer;
  readonly bytes: Buffer;
  /** Bytes already sent; -1 before DUMP_FILE went. */
  sent: number;
}

/**
 * Hands dump files to the supervisor, one at a time and within its dump
 * credit (DUMP_WINDOW): what the credit does not cover waits here, in order.
 */
export class DumpWriter {
  private credit = DUMP_WINDOW_BYTES;
  private readonly queue: QueuedFile[] = [];
  private readonly maxFileBytes: number;

  constructor(
    private readonly writer: FrameWriter,
    readonly maxBodyBytes: number,
    private readonly log: Logger,
  ) {
    this.maxFileBytes = dumpFileLimit(maxBodyBytes);
  }

  /** The file of `kind` for the exchange on `streamId`, which started at `startedAtMs`. */
  write(streamId: number, kind: DumpKind, startedAtMs: number, dump: Record<string, unknown>): void {
    const bytes = Buffer.from(`${JSON.stringify(dump, null, 2)}\n`);
    // Not expected (the limit covers what the format can grow to); the supervisor would end this worker.
    if (bytes.length > this.maxFileBytes) {
      this.log.error({ stream: streamId, kind, bytes: bytes.length }, 'dump file over its limit; not written');
      return;
    }
    this.queue.push({ streamId, head: encodeDumpFile(kind, startedAtMs), bytes, sent: -1 });
    if (this.queue.length === 1) this.pump();
  }

  /** DUMP_WINDOW: credit returned as the supervisor wrote bytes. */
  grant(increment: number): void {
    if (increment === 0 || this.credit + increment > MAX_WINDOW) throw new ProtocolError('DUMP_WINDOW out of range');
    this.credit += increment;
    this.pump();
  }

  redactedBody(): Record<string, unknown> {
    return { body: KEY_REDACTED };
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const file = this.queue[0] as QueuedFile;
      if (file.sent < 0) {
        this.writer.send(Msg.DUMP_FILE, file.streamId, file.head);
        file.sent = 0;
      }
      while (file.sent < file.bytes.length) {
        const n = Math.min(file.bytes.length - file.sent, MAX_DATA_PAYLOAD, this.credit);
        if (n === 0) return;
        this.writer.send(Msg.DUMP_DATA, file.streamId, file.bytes.subarray(file.sent, file.sent + n));
        file.sent += n;
        this.credit -= n;
      }
      this.writer.send(Msg.DUMP_END, file.streamId);
      this.queue.shift();
    }
  }
}

/** The dump of one forwarded HTTP exchange: captures both bodies as they stream. */
export class HttpExchangeDump implements ExchangeDump {
  readonly requestBody: BodyCapture;
  readonly responseBody: BodyCapture;
  private readonly startedAt = Date.now();
  private status: number | null = null;
  private responseHeaders: HeaderList = [];
  private responseWritten = false;

  constructor(
    private readonly writer: DumpWriter,
    private readonly streamId: number,
    private readonly method: string,
    private readonly url: string,
    private readonly requestHeaders: HeaderList,
  ) {
    this.requestBody = new BodyCapture(writer.maxBodyBytes);
    this.responseBody = new BodyCapture(writer.maxBodyBytes);
  }

  onResponseHead(status: number, headers: HeaderList): void {
    this.status = status;
    this.responseHeaders = headers;
  }

  writeRequest(scan: KeyScanResult): void {
    const body = scan.bodyHasKey ? this.writer.redactedBody() : this.requestBody.fields();
    const headers = dumpHeaders(this.requestHeaders, new Set(scan.headerIndexes));
    const dump = { method: this.method, url: this.url, headers, ...body };
    this.writer.write(this.streamId, 'request', this.startedAt, dump);
  }

  end(error?: string): void {
    if (this.responseWritten) return;
    this.responseWritten = true;
    const headers = dumpHeaders(this.responseHeaders);
    const outcome = error === undefined ? {} : { error };
    const dump = { status: this.status, headers, ...this.responseBody.fields(), ...outcome };
    this.writer.write(this.streamId, 'response', this.startedAt, dump);
  }
}

type Direction = 'client_to_upstream' | 'upstream_to_client';

/**
 * About what one message adds to a dump beyond its data (its pretty-printed
 * entry), counted against --dump-max-bytes: empty messages cost a client
 * nothing to send, and must not grow a dump (or the worker) without bound.
 */
const DUMPED_MESSAGE_COST = 128;

interface DumpedMessage {
  readonly direction: Direction;
  readonly type: 'text' | 'binary' | 'close';
  readonly data?: Buffer;
  readonly code?: number;
  readonly reason?: string;
}

/**
 * The dump of one WebSocket session (--websocket): the handshake as the
 * request file; the upstream's answer and every message (direction, type,
 * data: text as is, binary as base64) and close as the response file, both
 * written when the session ends and the supervisor has said whether the key
 * was in what the client sent. Message data is kept up to maxBodyBytes in all,
 * each message counting DUMPED_MESSAGE_COST more.
 */
export class WebSocketDump implements ExchangeDump {
  /** A refused upgrade: the upstream's answer body instead of messages. */
  readonly refusalBody: BodyCapture;
  private readonly startedAt = Date.now();
  private status: number | null = null;
  private responseHeaders: HeaderList = [];
  private readonly messages: DumpedMessage[] = [];
  /** Message data kept, plus DUMPED_MESSAGE_COST per message: within maxBodyBytes. */
  private charged = 0;
  /** A message was not kept (every later one is not either). */
  private truncated = false;
  /** Message data seen, kept or not. */
  private total = 0;
  private upstreamParts: Buffer[] = [];
  private upstreamLength = 0;
  private scan: KeyScanResult | null = null;
  private outcome: { error?: string } | null = null;

  constructor(
    private readonly writer: DumpWriter,
    private readonly streamId: number,
    private readonly url: string,
    private readonly requestHeaders: HeaderList,
  ) {
    this.refusalBody = new BodyCapture(writer.maxBodyBytes);
  }

  onResponseHead(status: number, headers: HeaderList): void {
    this.status = status;
    this.responseHeaders = headers;
  }

  clientMessage(data: Buffer, binary: boolean): void {
    this.record('client_to_upstream', binary, data.length, () => data);
  }

  /** One fragment of a message from the upstream, as relayed. */
  upstreamFragment(data: Buffer, binary: boolean, fin: boolean): void {
    this.upstreamLength += data.length;
    if (this.fits(this.upstreamLength)) this.upstreamParts.push(data);
    if (!fin) return;
    const parts = this.upstreamParts;
    this.record('upstream_to_client', binary, this.upstreamLength, () => Buffer.concat(parts));
    this.upstreamParts = [];
    this.upstreamLength = 0;
  }

  closed(direction: Direction, code: number, reason: string): void {
    this.messages.push({ direction, type: 'close', code, reason });
  }

  writeRequest(scan: KeyScanResult): void {
    this.scan = scan;
    const headers = dumpHeaders(this.requestHeaders, new Set(scan.headerIndexes));
    this.writer.write(this.streamId, 'request', this.startedAt, { method: 'GET', url: this.url, headers, body: '' });
    if (this.outcome !== null) this.writeResponse();
  }

  /** The response file follows once the scan is known. */
  end(error?: string): void {
    if (this.outcome !== null) return;
    this.outcome = error === undefined ? {} : { error };
    if (this.scan !== null) this.writeResponse();
  }

  /** Whether a message of `length` bytes would still be kept (none is, after the first that was not). */
  private fits(length: number): boolean {
    return !this.truncated && this.charged + length + DUMPED_MESSAGE_COST <= this.writer.maxBodyBytes;
  }

  private record(direction: Direction, binary: boolean, length: number, data: () => Buffer): void {
    if (this.fits(length)) {
      this.charged += length + DUMPED_MESSAGE_COST;
      this.messages.push({ direction, type: binary ? 'binary' : 'text', data: data() });
    } else {
      this.truncated = true;
    }
    this.total += length;
  }

  private writeResponse(): void {
    const clientSentKey = this.scan?.bodyHasKey === true;
    const body =
      this.status !== 101
        ? this.refusalBody.fields()
        : {
            body: this.messages.map(({ direction, type, data, code, reason }) => {
              if (type === 'close') return { direction, type, code, reason };
              if (clientSentKey && direction === 'client_to_upstream') return { direction, type, data: KEY_REDACTED };
              return { direction, type, data: (data as Buffer).toString(type === 'text' ? 'utf8' : 'base64') };
            }),
            ...(this.truncated ? { body_truncated: true, body_length: this.total } : {}),
          };
    const headers = dumpHeaders(this.responseHeaders);
    this.writer.write(this.streamId, 'response', this.startedAt, {
      status: this.status,
      headers,
      ...body,
      ...this.outcome,
    });
  }
}
