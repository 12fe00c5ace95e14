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
  if (clientHeaders.length % 2 !== 0) throw new ProtocolError('odd header list');
  // The worker is untrusted: a field its HTTP parser could not have produced is a violation.
  for (let i = 0; i < clientHeaders.length; i += 2) {
    if (!TOKEN.test(clientHeaders[i] as string) || !FIELD_VALUE.test(clientHeaders[i + 1] as string)) {
      throw new ProtocolError('invalid header field from the worker');
    }
  }
  const out = withoutHopByHop(clientHeaders, DROPPED);
  out.push('host', upstreamHost);
  return out;
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
