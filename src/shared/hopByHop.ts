// Hop-by-hop header fields (RFC 9110 §7.6.1): meaningful for one connection
// only, so a proxy drops them, together with every name listed in Connection.

import type { HeaderList } from './ipcProtocol.js';

export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

/** Lower-cased names listed in the Connection header(s) of a header list. */
export function connectionListed(headers: HeaderList): Set<string> {
  const listed = new Set<string>();
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== 'connection') continue;
    for (const name of (headers[i + 1] as string).split(',')) listed.add(name.trim().toLowerCase());
  }
  return listed;
}

/** Drop hop-by-hop fields, Connection-listed fields and any name in `alsoDrop`. */
export function withoutHopByHop(headers: HeaderList, alsoDrop: ReadonlySet<string>): HeaderList {
  const listed = connectionListed(headers);
  const out: HeaderList = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP_HEADERS.has(lower) || alsoDrop.has(lower) || listed.has(lower)) continue;
    out.push(name, headers[i + 1] as string);
  }
  return out;
}
