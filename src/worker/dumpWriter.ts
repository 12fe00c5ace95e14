// --dump-dir: one request and one response JSON file per forwarded request, in
// the original's format (NNNNNN-<unix ms>-request.json / -response.json, pretty
// JSON). Written by the worker, so the privileged side stays small.
//
// Safe by construction: each file is written to a fresh temporary name created
// O_CREAT|O_EXCL|O_NOFOLLOW with mode 0600 (a planted file or symlink is refused,
// never followed) and renamed into place, so no reader sees half a dump; Authorization and
// every header whose name contains "cookie" are redacted; header values and
// bodies that the supervisor found to contain the key (REQUEST_SCANNED) are
// redacted; response bytes arrive already scrubbed by the supervisor. Bodies are
// kept up to maxBodyBytes; beyond that the dump says so and gives the length.

import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '../shared/errors.js';
import type { HeaderList, KeyScanResult } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';

const REDACTED = '[REDACTED]';
const KEY_REDACTED = '[REDACTED: contained the proxy API key]';
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
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

function parseBody(bytes: Buffer): unknown {
  const text = bytes.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
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

export class DumpWriter {
  private nextSequence: number;
  private failed = false;

  constructor(
    private readonly dir: string,
    readonly maxBodyBytes: number,
    firstSequence: number,
    private readonly log: Logger,
  ) {
    this.nextSequence = firstSequence;
  }

  /** Prove at startup that files can be created here; throws with the reason. */
  async probe(): Promise<void> {
    const path = join(this.dir, `.probe-${process.pid}`);
    const handle = await fs.open(path, CREATE_FLAGS, 0o600);
    await handle.close();
    await fs.unlink(path);
  }

  /** The shared file-name prefix for one exchange. */
  nextPrefix(): string {
    return `${String(this.nextSequence++).padStart(6, '0')}-${Date.now()}`;
  }

  request(prefix: string, dump: Record<string, unknown>): void {
    void this.write(`${prefix}-request.json`, dump);
  }

  response(prefix: string, dump: Record<string, unknown>): void {
    void this.write(`${prefix}-response.json`, dump);
  }

  redactedBody(): Record<string, unknown> {
    return { body: KEY_REDACTED };
  }

  private async write(name: string, dump: Record<string, unknown>): Promise<void> {
    const temporary = join(this.dir, `.${name}.${process.pid}.tmp`);
    try {
      const handle = await fs.open(temporary, CREATE_FLAGS, 0o600);
      try {
        await handle.writeFile(`${JSON.stringify(dump, null, 2)}\n`);
      } finally {
        await handle.close();
      }
      await fs.rename(temporary, join(this.dir, name));
    } catch (err) {
      // Disk full, directory removed...: say so once, keep proxying.
      if (this.failed) return;
      this.failed = true;
      this.log.error({ file: name, code: errnoCode(err) }, 'cannot write dump files; proxying continues without them');
    }
  }
}

/** The dump of one forwarded HTTP exchange: captures both bodies as they stream. */
export class HttpExchangeDump implements ExchangeDump {
  readonly requestBody: BodyCapture;
  readonly responseBody: BodyCapture;
  private readonly prefix: string;
  private status: number | null = null;
  private responseHeaders: HeaderList = [];
  private responseWritten = false;

  constructor(
    private readonly writer: DumpWriter,
    private readonly method: string,
    private readonly url: string,
    private readonly requestHeaders: HeaderList,
  ) {
    this.prefix = writer.nextPrefix();
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
    this.writer.request(this.prefix, { method: this.method, url: this.url, headers, ...body });
  }

  end(error?: string): void {
    if (this.responseWritten) return;
    this.responseWritten = true;
    const headers = dumpHeaders(this.responseHeaders);
    const outcome = error === undefined ? {} : { error };
    this.writer.response(this.prefix, { status: this.status, headers, ...this.responseBody.fields(), ...outcome });
  }
}

type Direction = 'client_to_upstream' | 'upstream_to_client';

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
 * was in what the client sent. Message data is kept up to maxBodyBytes in all.
 */
export class WebSocketDump implements ExchangeDump {
  /** A refused upgrade: the upstream's answer body instead of messages. */
  readonly refusalBody: BodyCapture;
  private readonly prefix: string;
  private status: number | null = null;
  private responseHeaders: HeaderList = [];
  private readonly messages: DumpedMessage[] = [];
  private kept = 0;
  private total = 0;
  private upstreamParts: Buffer[] = [];
  private upstreamLength = 0;
  private scan: KeyScanResult | null = null;
  private outcome: { error?: string } | null = null;

  constructor(
    private readonly writer: DumpWriter,
    private readonly url: string,
    private readonly requestHeaders: HeaderList,
  ) {
    this.prefix = writer.nextPrefix();
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
    this.writer.request(this.prefix, { method: 'GET', url: this.url, headers, body: '' });
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
    return this.kept === this.total && this.kept + length <= this.writer.maxBodyBytes;
  }

  private record(direction: Direction, binary: boolean, length: number, data: () => Buffer): void {
    if (this.fits(length)) {
      this.kept += length;
      this.messages.push({ direction, type: binary ? 'binary' : 'text', data: data() });
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
            ...(this.kept < this.total ? { body_truncated: true, body_length: this.total } : {}),
          };
    const headers = dumpHeaders(this.responseHeaders);
    this.writer.response(this.prefix, { status: this.status, headers, ...body, ...this.outcome });
  }
}
