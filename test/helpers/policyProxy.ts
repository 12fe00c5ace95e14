// Setup shared by the client-policy suites (--client-token-file,
// --allow-model, --max-*, --usage-file): proxies started by pid and stopped
// after the file, an upstream that streams one response with usage, and one
// that holds every response until told to answer.

import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { after } from 'node:test';
import type { UpstreamHandler } from './mockUpstream.js';
import { ProxyProcess } from './proxyProcess.js';
import { encodeSse, responseEvents } from './responsesApi.js';
import { StrayPids } from './strayPids.js';

const proxies: ProxyProcess[] = [];
const strays = new StrayPids();
after(async () => {
  await strays.stopAll(proxies);
});

export async function startProxy(upstreamUrl: string, extra: readonly string[]): Promise<ProxyProcess> {
  const proxy = ProxyProcess.spawn({ args: ['--upstream-url', upstreamUrl, ...extra] });
  proxies.push(proxy);
  await proxy.waitForListening(15_000);
  strays.add(proxy.workerPid());
  return proxy;
}

/** A new directory, 0755 so that a worker running as nobody can reach a dump directory in it. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rap-policy-'));
  chmodSync(dir, 0o755);
  return dir;
}

/** Three words: 3 deltas, so usage.total_tokens is 12 + 3 = 15. */
export const ANSWER = 'one two three';
export const TOKENS_PER_ANSWER = 15;

export function writeAnswer(res: ServerResponse, id: string): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const event of responseEvents(ANSWER, id)) res.write(encodeSse(event));
  res.end();
}

let answered = 0;
/** Streams one response (model mock-model, usage total 15) as server-sent events. */
export const sseAnswer: UpstreamHandler = (_req, res) => writeAnswer(res, `resp_sse_${++answered}`);

/** Holds every response until `release()`; `held` counts the requests waiting. */
export class HoldingUpstream {
  private waiting: ServerResponse[] = [];
  private released = false;
  readonly handler: UpstreamHandler = (_req, res) => {
    if (this.released) return writeAnswer(res, `resp_held_${++answered}`);
    this.waiting.push(res);
  };

  get held(): number {
    return this.waiting.length;
  }

  release(): void {
    this.released = true;
    for (const res of this.waiting.splice(0)) writeAnswer(res, `resp_held_${++answered}`);
  }
}

export function errorOf(body: Buffer): { message: string; type: string; code: string; param: unknown } {
  return (
    JSON.parse(body.toString('utf8')) as { error: { message: string; type: string; code: string; param: unknown } }
  ).error;
}
