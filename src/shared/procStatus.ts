// /proc/<pid>/status as a map of its fields: how each process's sandbox is
// verified (the worker checks itself; the supervisor checks the worker from
// outside, without taking its word for anything).

import { readFileSync } from 'node:fs';

export function readProcStatus(pid: number | 'self'): ReadonlyMap<string, string> {
  const fields = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}
