// How the worker writes a response head of its own: through http's
// ServerResponse for a request, or as bytes on the bare socket where there is
// none (a malformed request, an upgrade) and the connection then closes. The
// body is always whole, so its length is always declared.

import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { HeaderList } from '../shared/ipcProtocol.js';

export const NO_FIELDS: HeaderList = [];
export const NO_BODY = Buffer.alloc(0);

const JSON_FIELDS: HeaderList = ['content-type', 'application/json'];
/** A 503 (draining, at the limit of open streams) may be retried after a second. */
const JSON_RETRY_FIELDS: HeaderList = [...JSON_FIELDS, 'retry-after', '1'];

/** The fields of an error the worker answers itself (413, 503) with an OpenAI-shaped JSON body. */
export function errorFields(status: number): HeaderList {
  return status === 503 ? JSON_RETRY_FIELDS : JSON_FIELDS;
}

/** `name: value` lines of a header list (ws takes extra lines for its 101 in this form). */
export function headerLines(fields: HeaderList): string[] {
  const lines: string[] = [];
  for (let i = 0; i < fields.length; i += 2) lines.push(`${fields[i] as string}: ${fields[i + 1] as string}`);
  return lines;
}

export function answerOnResponse(res: ServerResponse, status: number, fields: HeaderList, body: Buffer): void {
  res.writeHead(status, [...fields, 'content-length', String(body.length)]);
  res.end(body);
}

export function answerOnSocket(socket: Duplex, status: number, fields: HeaderList, body: Buffer): void {
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`, ...headerLines(fields)];
  lines.push(`content-length: ${body.length}`, 'connection: close', '', '');
  socket.end(Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), body]));
}
