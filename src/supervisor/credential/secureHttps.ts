// One HTTPS/1.1 request whose secrets never leave secure memory: the GitHub ID
// token request (the request token in its Authorization header) and the token
// exchange (GitHub's ID token in its body; the access token in the answer).
//
// undici is not used for these: its parser copies every response body into
// WebAssembly memory that cannot be zeroed. Here the whole request is assembled
// in one secure buffer and written once the TLS handshake is done (Node then
// encrypts a single buffer from where it lies; before the handshake it would
// copy it). Each chunk of the answer is copied into a secure buffer and zeroed
// where Node delivered it, and OpenSSL is asked to cleanse the plaintext it
// decrypted. The answer is parsed in place: one request per connection
// ("connection: close"), Content-Length or chunked framing.

import { isIP } from 'node:net';
import { connect } from 'node:tls';
import sodium from 'sodium-native';
import { errnoCode } from '../../shared/errors.js';
import { SecureBytes } from '../secureBytes.js';

/** A piece of a request: public text, or secret bytes copied in while the request is assembled. */
export type RequestPart = string | SecureBytes;

export interface SecureRequest {
  /** An https: URL; its path and query are sent as given. */
  readonly url: URL;
  readonly method: 'GET' | 'POST';
  readonly headers: ReadonlyArray<readonly [string, RequestPart]>;
  /** Assembled in secure memory; Content-Length is added. */
  readonly body?: readonly RequestPart[];
  /** For the whole exchange: connection, TLS handshake, request and complete answer. */
  readonly timeoutMs: number;
}

export interface SecureResponse {
  readonly status: number;
  /** Lower-case names. */
  readonly headers: ReadonlyMap<string, string>;
  /** The body (de-chunked) in secure memory; the caller destroys it. */
  readonly body: SecureBytes;
}

/** Head and body of an answer: a token answer is a few KiB. */
export const MAX_ANSWER_BYTES = 64 * 1024;
/**
 * OpenSSL 3's SSL_OP_CLEANSE_PLAINTEXT (not among Node's crypto constants):
 * zero each decrypted record once it has been read, not when the buffer is reused.
 */
const SSL_OP_CLEANSE_PLAINTEXT = 0x2;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** Send the request; resolves with the complete answer, rejects with a one-line reason (never a secret). */
export function secureRequest(request: SecureRequest): Promise<SecureResponse> {
  const wire = assemble(request);
  const answer = sodium.sodium_malloc(MAX_ANSWER_BYTES);
  const host = request.url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    let received = 0;
    let settled = false;
    const socket = connect({
      host,
      port: Number(request.url.port || 443),
      servername: isIP(host) === 0 ? host : '',
      ALPNProtocols: ['http/1.1'],
      secureOptions: SSL_OP_CLEANSE_PLAINTEXT,
    });
    const finish = (failure: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      sodium.sodium_free(wire); // zeroes it; TLS encrypted it when it was written, or it was never sent
      try {
        if (failure !== null) throw new Error(failure);
        resolve(parseAnswer(answer, received));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      } finally {
        sodium.sodium_free(answer);
      }
    };
    const timer = setTimeout(
      () => finish(`no complete answer within ${request.timeoutMs / 1000} s`),
      request.timeoutMs,
    );
    socket.once('secureConnect', () => socket.write(wire));
    socket.on('data', (chunk: Buffer) => {
      if (settled) return void chunk.fill(0);
      if (received + chunk.length > MAX_ANSWER_BYTES) {
        chunk.fill(0);
        return finish(`the answer exceeds ${MAX_ANSWER_BYTES} bytes`);
      }
      chunk.copy(answer, received);
      received += chunk.length;
      chunk.fill(0);
      if (answerLength(answer, received) !== -1) finish(null);
    });
    socket.on('end', () => finish(null));
    socket.on('close', () => finish('the connection closed before an answer'));
    socket.on('error', (err) => finish(errnoCode(err) ?? err.message));
  });
}

/** The whole request, head and body, in one secure buffer of exactly its size. */
function assemble(request: SecureRequest): Buffer {
  const { url, method, headers, body } = request;
  const bodyLength = body === undefined ? 0 : partsLength(body);
  const lines: RequestPart[] = [`${method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`];
  for (const [name, value] of headers) lines.push(`${name}: `, value, '\r\n');
  if (body !== undefined) lines.push(`content-length: ${bodyLength}\r\n`);
  lines.push('connection: close\r\n\r\n', ...(body ?? []));
  const buffer = sodium.sodium_malloc(partsLength(lines));
  let at = 0;
  for (const part of lines)
    at += typeof part === 'string' ? buffer.write(part, at, 'utf8') : part.read((bytes) => bytes.copy(buffer, at));
  return buffer;
}

function partsLength(parts: readonly RequestPart[]): number {
  return parts.reduce(
    (sum, part) => sum + (typeof part === 'string' ? Buffer.byteLength(part, 'utf8') : part.length),
    0,
  );
}

interface Head {
  readonly status: number;
  readonly headers: Map<string, string>;
  readonly bodyStart: number;
}

/** The final (non-1xx) head, or null while it is incomplete. */
function parseHead(answer: Buffer, received: number): Head | null {
  let start = 0;
  for (;;) {
    const end = answer.subarray(0, received).indexOf(HEAD_END, start);
    if (end === -1) return null;
    const [statusLine = '', ...fields] = answer.toString('latin1', start, end).split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(statusLine);
    if (match === null) throw new Error('the answer is not HTTP/1.1');
    const status = Number(match[1]);
    if (status >= 100 && status < 200) {
      start = end + HEAD_END.length;
      continue;
    }
    const headers = new Map<string, string>();
    for (const field of fields) {
      const colon = field.indexOf(':');
      if (colon <= 0) throw new Error('the answer has a malformed header');
      const name = field.slice(0, colon).trim().toLowerCase();
      const value = field.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
    return { status, headers, bodyStart: end + HEAD_END.length };
  }
}

type Framing =
  { readonly kind: 'length'; readonly length: number } | { readonly kind: 'chunked' } | { readonly kind: 'close' };

function framing(head: Head): Framing {
  if (/(^|,)\s*chunked\s*$/i.test(head.headers.get('transfer-encoding') ?? '')) return { kind: 'chunked' };
  const length = head.headers.get('content-length');
  if (length !== undefined) {
    if (!/^\d{1,9}$/.test(length)) throw new Error('the answer has an invalid Content-Length');
    return { kind: 'length', length: Number(length) };
  }
  return head.status === 204 || head.status === 304 ? { kind: 'length', length: 0 } : { kind: 'close' };
}

/** How many bytes the complete answer takes, or -1 while more must come (or it ends at close). */
function answerLength(answer: Buffer, received: number): number {
  const head = parseHead(answer, received);
  if (head === null) return -1;
  const frame = framing(head);
  if (frame.kind === 'length') return received >= head.bodyStart + frame.length ? head.bodyStart + frame.length : -1;
  if (frame.kind === 'close') return -1;
  return dechunk(answer, head.bodyStart, received, null);
}

/**
 * Walk the chunks from `at`: returns where the chunked body (with its trailer)
 * ends, or -1 while it is incomplete. With `out`, copies the data there.
 */
function dechunk(answer: Buffer, at: number, received: number, out: { buffer: Buffer; length: number } | null): number {
  const data = answer.subarray(0, received);
  for (;;) {
    const lineEnd = data.indexOf(CRLF, at);
    if (lineEnd === -1) return -1;
    const sizeText = answer.toString('latin1', at, lineEnd).split(';')[0]?.trim() ?? '';
    if (!/^[0-9a-fA-F]{1,7}$/.test(sizeText)) throw new Error('the answer has invalid chunked framing');
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      // Trailer fields (usually none), then an empty line.
      if (data.indexOf(CRLF, lineEnd + 2) === lineEnd + 2) return lineEnd + 4;
      const end = data.indexOf(HEAD_END, lineEnd);
      return end === -1 ? -1 : end + HEAD_END.length;
    }
    const next = lineEnd + 2 + size + 2;
    if (next > received) return -1;
    if (out !== null) out.length += answer.copy(out.buffer, out.length, lineEnd + 2, lineEnd + 2 + size);
    at = next;
  }
}

function parseAnswer(answer: Buffer, received: number): SecureResponse {
  const head = parseHead(answer, received);
  if (head === null) throw new Error('the connection closed before a complete answer');
  const frame = framing(head);
  const out = { buffer: sodium.sodium_malloc(Math.max(1, received - head.bodyStart)), length: 0 };
  try {
    if (frame.kind === 'chunked') {
      if (dechunk(answer, head.bodyStart, received, out) === -1) {
        throw new Error('the connection closed before a complete answer');
      }
    } else {
      const end = frame.kind === 'length' ? head.bodyStart + frame.length : received;
      if (end > received) throw new Error('the connection closed before a complete answer');
      out.length = answer.copy(out.buffer, 0, head.bodyStart, end);
    }
  } catch (err) {
    sodium.sodium_free(out.buffer);
    throw err;
  }
  return { status: head.status, headers: head.headers, body: new SecureBytes(out.buffer, out.length) };
}
