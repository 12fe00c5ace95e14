// Header rules, applied by the supervisor whatever the worker sent.
//
// Request: every client header is forwarded except Authorization (any case,
// every copy), Host, Expect (100-continue is answered by the worker), and the
// hop-by-hop headers of RFC 9110 §7.6.1 including the names the client listed
// in Connection. Then exactly one Host (the upstream's) and one Authorization.
// Response: mirrored except hop-by-hop headers; the body is re-framed.

import { ProtocolError } from '../shared/errors.js';
import type { HeaderList } from '../shared/ipcProtocol.js';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate'];
const REQUEST_DROPPED = new Set([...HOP_BY_HOP, 'authorization', 'host', 'expect']);
const RESPONSE_DROPPED = new Set([...HOP_BY_HOP, 'content-length']);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function connectionListed(headers: HeaderList): Set<string> {
  const listed = new Set<string>();
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== 'connection') continue;
    for (const name of (headers[i + 1] as string).split(',')) listed.add(name.trim().toLowerCase());
  }
  return listed;
}

/**
 * The header list sent upstream, from the client's raw headers. The worker is
 * untrusted: a header the HTTP parser could not have produced is a protocol
 * violation. `authorization` is appended last by the caller.
 */
export function upstreamRequestHeaders(clientHeaders: HeaderList, upstreamHost: string): HeaderList {
  if (clientHeaders.length % 2 !== 0) throw new ProtocolError('odd header list');
  const listed = connectionListed(clientHeaders);
  const out: HeaderList = [];
  for (let i = 0; i < clientHeaders.length; i += 2) {
    const name = clientHeaders[i] as string;
    const value = clientHeaders[i + 1] as string;
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) throw new ProtocolError('invalid header field from worker');
    const lower = name.toLowerCase();
    if (REQUEST_DROPPED.has(lower) || listed.has(lower)) continue;
    out.push(name, value);
  }
  out.push('host', upstreamHost);
  return out;
}

/** The header list returned to the client, from undici's parsed response headers. */
export function clientResponseHeaders(upstreamHeaders: Record<string, string | string[] | undefined>): HeaderList {
  const listed = new Set<string>();
  const connection = upstreamHeaders['connection'];
  for (const value of [connection ?? []].flat()) for (const name of value.split(',')) listed.add(name.trim().toLowerCase());
  const out: HeaderList = [];
  for (const [name, value] of Object.entries(upstreamHeaders)) {
    if (value === undefined || RESPONSE_DROPPED.has(name) || listed.has(name)) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  return out;
}
