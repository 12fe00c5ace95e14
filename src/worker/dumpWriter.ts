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
import type { HeaderList, KeyScanResult } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';

const REDACTED = '[REDACTED]';
const KEY_REDACTED = '[REDACTED: contained the proxy API key]';
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A body captured up to a limit, counting what was not kept. */
export class BodyCapture {
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

export function dumpHeaders(headers: HeaderList, keyBearing: ReadonlySet<number> = new Set()): Array<{ name: string; value: string }> {
  const out: Array<{ name: string; value: string }> = [];
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
      this.log.error({ file: name, code: (err as NodeJS.ErrnoException).code }, 'cannot write dump files; proxying continues without them');
    }
  }
}

/** The dump of one forwarded exchange: captures both bodies as they stream. */
export class ExchangeDump {
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

  /** The supervisor has seen the whole request and says where the key was. */
  writeRequest(scan: KeyScanResult): void {
    const body = scan.bodyHasKey ? this.writer.redactedBody() : this.requestBody.fields();
    this.writer.request(this.prefix, { method: this.method, url: this.url, headers: dumpHeaders(this.requestHeaders, new Set(scan.headerIndexes)), ...body });
  }

  /** The response ended: completed (no error), failed or cut off. */
  writeResponse(error?: string): void {
    if (this.responseWritten) return;
    this.responseWritten = true;
    this.writer.response(this.prefix, { status: this.status, headers: dumpHeaders(this.responseHeaders), ...this.responseBody.fields(), ...(error === undefined ? {} : { error }) });
  }
}
