// Raw HTTP/1.1 over TCP for tests that need exact bytes: a response parser
// (Content-Length, chunked, or read-until-close framing) and a connection that
// can carry several request/response exchanges (keep-alive framing checks).

import { connect, type Socket } from 'node:net';

export interface RawResponse {
  readonly statusLine: string;
  readonly status: number;
  /** [name, value] in the order received, names as sent. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
}

/** Every value of a header, case-insensitive. */
export function headerValues(response: RawResponse, name: string): string[] {
  const lower = name.toLowerCase();
  return response.headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

/** Every value of a header in a Node rawHeaders list, case-insensitive. */
export function rawHeaderValues(rawHeaders: readonly string[], name: string): string[] {
  const lower = name.toLowerCase();
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    if ((rawHeaders[i] as string).toLowerCase() === lower) values.push(rawHeaders[i + 1] as string);
  return values;
}

const CRLF2 = Buffer.from('\r\n\r\n');

/**
 * Parse one response from the start of `buf`. Returns null while incomplete;
 * `closed` says no more bytes will come (completes read-until-close bodies).
 */
export function parseResponse(buf: Buffer, closed: boolean): { response: RawResponse; consumed: number } | null {
  const headEnd = buf.indexOf(CRLF2);
  if (headEnd === -1) return null;
  const lines = buf.toString('latin1', 0, headEnd).split('\r\n');
  const statusLine = lines[0] ?? '';
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!match) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`);
  const status = Number(match[1]);
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`malformed header line: ${JSON.stringify(line)}`);
    headers.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
  }
  const bodyStart = headEnd + CRLF2.length;
  const partial: RawResponse = { statusLine, status, headers, body: Buffer.alloc(0) };
  if ((status >= 100 && status < 200) || status === 204 || status === 304)
    return { response: partial, consumed: bodyStart };
  const te = headerValues(partial, 'transfer-encoding').join(',').toLowerCase();
  if (te.includes('chunked')) {
    const chunks: Buffer[] = [];
    let offset = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', offset, 'latin1');
      if (lineEnd === -1) return null;
      const size = parseInt(buf.toString('latin1', offset, lineEnd).split(';')[0] as string, 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size');
      offset = lineEnd + 2;
      if (size === 0) {
        // Trailer section ends with an empty line.
        const trailerEnd = buf.indexOf('\r\n', offset, 'latin1');
        if (trailerEnd === -1) return null;
        if (trailerEnd === offset)
          return { response: { ...partial, body: Buffer.concat(chunks) }, consumed: offset + 2 };
        const end = buf.indexOf(CRLF2, offset);
        if (end === -1) return null;
        return { response: { ...partial, body: Buffer.concat(chunks) }, consumed: end + 4 };
      }
      if (buf.length < offset + size + 2) return null;
      chunks.push(buf.subarray(offset, offset + size));
      offset += size + 2;
    }
  }
  const lengths = headerValues(partial, 'content-length');
  if (lengths.length > 0) {
    const length = Number(lengths[0]);
    if (buf.length < bodyStart + length) return null;
    return {
      response: { ...partial, body: buf.subarray(bodyStart, bodyStart + length) },
      consumed: bodyStart + length,
    };
  }
  if (!closed) return null;
  return { response: { ...partial, body: buf.subarray(bodyStart) }, consumed: buf.length };
}

/** Every complete response in the bytes of a closed connection (e.g. sendRaw's result). */
export function parseAllResponses(raw: string | Buffer): { responses: RawResponse[]; rest: Buffer } {
  let buf = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  const responses: RawResponse[] = [];
  while (buf.length > 0) {
    const parsed = parseResponse(buf, true);
    if (parsed === null) break;
    responses.push(parsed.response);
    buf = buf.subarray(parsed.consumed);
  }
  return { responses, rest: buf };
}

/** One TCP connection carrying several exchanges; every wait is bounded. */
export class RawConnection {
  private buffered = Buffer.alloc(0);
  private closedFlag = false;
  private waiters: Array<() => void> = [];

  private constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, c]);
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closedFlag = true;
      this.wake();
    });
  }

  /** Stop reading: what the peer sends stays in the kernel's buffers, then in the peer. */
  pauseReading(): void {
    this.socket.pause();
  }

  /** Bytes written and not yet taken by the kernel (the peer has stopped reading). */
  get unsentBytes(): number {
    return this.socket.writableLength;
  }

  static open(port: number, timeoutMs = 5_000): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('connect timed out'));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new RawConnection(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  write(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** The next complete response (1xx included); rejects after timeoutMs or on close. */
  async readResponse(timeoutMs = 5_000): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parseResponse(this.buffered, this.closedFlag);
      if (parsed !== null) {
        this.buffered = this.buffered.subarray(parsed.consumed);
        return parsed.response;
      }
      if (this.closedFlag)
        throw new Error(
          `connection closed before a complete response; got ${JSON.stringify(this.buffered.toString('latin1'))}`,
        );
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no complete response within ${timeoutMs} ms; got ${JSON.stringify(this.buffered.toString('latin1'))}`,
        );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Bytes received and not yet returned as a response. */
  get pendingBytes(): Buffer {
    return this.buffered;
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
