// The usual suite setup: a mock upstream and the proxy in front of it, started
// before the describe block's tests and stopped (by pid) after them.

import { after, before } from 'node:test';
import { MockUpstream } from './mockUpstream.js';
import { ProxyProcess } from './proxyProcess.js';

export interface ProxyFixture {
  readonly upstream: MockUpstream;
  readonly proxy: ProxyProcess;
}

/** Call inside describe(); `upstreamPath` is the path+query of --upstream-url. */
export function proxyWithUpstream(upstreamPath = '/v1/responses', extraArgs: readonly string[] = []): ProxyFixture {
  let upstream: MockUpstream | undefined;
  let proxy: ProxyProcess | undefined;
  before(async () => {
    upstream = await MockUpstream.start();
    proxy = await ProxyProcess.start({ args: ['--upstream-url', upstream.url(upstreamPath), ...extraArgs] });
  });
  after(async () => {
    await proxy?.stop();
    await upstream?.close();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the fixture has not started (use it inside a test)');
    return value;
  };
  return {
    get upstream() {
      return started(upstream);
    },
    get proxy() {
      return started(proxy);
    },
  };
}
