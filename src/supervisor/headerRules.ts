// The request header rules, applied by the supervisor whatever the worker sent:
// every client header is forwarded except Authorization (any case, every copy),
// Host, Expect (100-continue is the worker's business) and hop-by-hop fields;
// then exactly one Host (the upstream's). The caller appends Authorization.

import { ProtocolError } from '../shared/errors.js';
import { withoutHopByHop } from '../shared/hopByHop.js';
import type { HeaderList } from '../shared/ipcProtocol.js';

const DROPPED = new Set(['authorization', 'host', 'expect']);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export function upstreamRequestHeaders(clientHeaders: HeaderList, upstreamHost: string): HeaderList {
  checkFields(clientHeaders);
  const out = withoutHopByHop(clientHeaders, DROPPED);
  out.push('host', upstreamHost);
  return out;
}

/** The worker is untrusted: a field its HTTP parser could not have produced is a violation. */
function checkFields(clientHeaders: HeaderList): void {
  if (clientHeaders.length % 2 !== 0) throw new ProtocolError('odd header list');
  for (let i = 0; i < clientHeaders.length; i += 2) {
    if (!TOKEN.test(clientHeaders[i] as string) || !FIELD_VALUE.test(clientHeaders[i + 1] as string)) {
      throw new ProtocolError('invalid header field from the worker');
    }
  }
}

// A WebSocket handshake follows the same rules; the Sec-WebSocket-* fields
// belong to one hop (ws makes its own), except the offered subprotocols, which
// are offered upstream in turn.
const HANDSHAKE_DROPPED = new Set([
  ...DROPPED,
  'content-length',
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-accept',
  'sec-websocket-protocol',
]);
/** What of the upstream's 101 reaches the client (ws writes the client's own Sec-WebSocket-* fields). */
const ACCEPT_DROPPED = new Set(['sec-websocket-accept', 'sec-websocket-extensions', 'content-length']);

export interface UpstreamHandshake {
  /** For ws (an object; repeated fields joined as RFC 9110 allows). */
  readonly headers: Record<string, string>;
  readonly protocols: string[];
}

export function upstreamHandshakeHeaders(clientHeaders: HeaderList, upstreamHost: string): UpstreamHandshake {
  checkFields(clientHeaders);
  const protocols: string[] = [];
  for (let i = 0; i < clientHeaders.length; i += 2) {
    if ((clientHeaders[i] as string).toLowerCase() !== 'sec-websocket-protocol') continue;
    for (const p of (clientHeaders[i + 1] as string).split(',')) if (p.trim() !== '') protocols.push(p.trim());
  }
  const kept = withoutHopByHop(clientHeaders, HANDSHAKE_DROPPED);
  const headers = Object.create(null) as Record<string, string>;
  for (let i = 0; i < kept.length; i += 2) {
    const name = (kept[i] as string).toLowerCase();
    const value = kept[i + 1] as string;
    const earlier = headers[name];
    headers[name] = earlier === undefined ? value : `${earlier}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  headers.host = upstreamHost;
  return { headers, protocols };
}

export function acceptedHandshakeHeaders(upstreamRawHeaders: HeaderList): HeaderList {
  return withoutHopByHop(upstreamRawHeaders, ACCEPT_DROPPED);
}

/** undici's parsed response headers as a flat list (names lower-case, repeats kept). */
export function flattenHeaders(headers: Record<string, string | string[] | undefined>): HeaderList {
  const out: HeaderList = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  return out;
}
