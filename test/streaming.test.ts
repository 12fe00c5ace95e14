// Streaming: each SSE event reaches the client while the upstream is still
// sending; an upstream that dies mid-stream is a failure the client can see;
// a client that leaves mid-stream ends the upstream request.

import assert from 'node:assert/strict';
import { request, type IncomingMessage } from 'node:http';
import { describe, test } from 'node:test';
import { proxyWithUpstream } from './helpers/proxyFixture.js';
import { waitFor } from './helpers/proxyProcess.js';

const BODY = '{"model":"gpt-test","input":"stream please","stream":true}';
const EVENT1 = 'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n';
const EVENT2 =
  'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"delta":"Hi"}\n\n';
const EVENT3 = 'event: response.completed\ndata: {"type":"response.completed","sequence_number":2}\n\n';

/** Resolves `signal()` once, or after timeoutMs; reports which happened. */
function boundedSignal(timeoutMs: number): { signal: () => void; outcome: Promise<'signalled' | 'timed out'> } {
  let signal = (): void => {};
  const outcome = new Promise<'signalled' | 'timed out'>((resolve) => {
    const timer = setTimeout(() => resolve('timed out'), timeoutMs);
    signal = () => {
      clearTimeout(timer);
      resolve('signalled');
    };
  });
  return { signal, outcome };
}

type Outcome = 'end' | 'aborted' | 'error' | 'closed without end' | 'request error' | 'timeout';

interface StreamedReply {
  outcome: Outcome;
  detail: string;
  status: number;
  complete: boolean;
  body: string;
}

/**
 * POST to the proxy and follow the response as it streams: `onData` sees the
 * text received so far. Settles on the first of end / aborted / error / close.
 */
function streamFromProxy(
  port: number,
  onData: (soFar: string, res: IncomingMessage, destroy: () => void) => void,
  timeoutMs = 10_000,
): Promise<StreamedReply> {
  return new Promise((resolve) => {
    let body = '';
    let status = 0;
    let response: IncomingMessage | null = null;
    let settled = false;
    const settle = (outcome: Outcome, detail = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ outcome, detail, status, complete: response?.complete ?? false, body });
    };
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/responses',
        agent: false,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      },
      (res) => {
        response = res;
        status = res.statusCode ?? 0;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
          onData(body, res, () => req.destroy());
        });
        res.on('end', () => settle('end'));
        res.on('aborted', () => settle('aborted'));
        res.on('error', (err: NodeJS.ErrnoException) => settle('error', err.code ?? err.message));
        res.on('close', () => settle(res.complete ? 'end' : 'closed without end'));
      },
    );
    const timer = setTimeout(() => {
      settle('timeout');
      req.destroy();
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => settle('request error', err.code ?? err.message));
    req.end(BODY);
  });
}

describe('streaming through the proxy', () => {
  const ctx = proxyWithUpstream();

  test('each SSE event reaches the client before the upstream sends the next one', { timeout: 20_000 }, async () => {
    const gotEvent1 = boundedSignal(5_000);
    const gotEvent2 = boundedSignal(5_000);
    const upstreamSaw: string[] = [];
    ctx.upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(EVENT1);
      void gotEvent1.outcome
        .then((o1) => {
          upstreamSaw.push(`event 1: ${o1}`);
          res.write(EVENT2);
          return gotEvent2.outcome;
        })
        .then((o2) => {
          upstreamSaw.push(`event 2: ${o2}`);
          res.end(EVENT3);
        });
    };
    const reply = await streamFromProxy(ctx.proxy.port, (soFar) => {
      if (soFar.includes(EVENT1)) gotEvent1.signal();
      if (soFar.includes(EVENT2)) gotEvent2.signal();
    });
    assert.deepEqual(
      upstreamSaw,
      ['event 1: signalled', 'event 2: signalled'],
      'each event reached the client while the upstream waited for it',
    );
    assert.equal(reply.outcome, 'end');
    assert.equal(reply.status, 200);
    assert.equal(reply.body, EVENT1 + EVENT2 + EVENT3);
  });

  test(
    'an upstream that dies mid-stream makes the client response fail, not end cleanly',
    { timeout: 20_000 },
    async () => {
      const gotBoth = boundedSignal(5_000);
      let upstreamSaw = '';
      ctx.upstream.handler = (req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(EVENT1);
        res.write(EVENT2);
        void gotBoth.outcome.then((o) => {
          upstreamSaw = o;
          req.socket.destroy();
        });
      };
      const reply = await streamFromProxy(ctx.proxy.port, (soFar) => {
        if (soFar.includes(EVENT1 + EVENT2)) gotBoth.signal();
      });
      assert.equal(upstreamSaw, 'signalled', 'both events reached the client before the upstream died');
      assert.equal(reply.status, 200);
      assert.equal(reply.body, EVENT1 + EVENT2);
      assert.notEqual(
        reply.outcome,
        'end',
        `truncated stream must not look complete (${reply.outcome} ${reply.detail})`,
      );
      assert.notEqual(reply.outcome, 'timeout', 'the client must learn of the failure, not hang');
      assert.equal(reply.complete, false);
    },
  );

  test(
    'a client that disconnects mid-stream closes the upstream response within 2 s',
    { timeout: 20_000 },
    async () => {
      const abortsBefore = ctx.upstream.clientAborts.length;
      let upstreamClosed = false;
      ctx.upstream.handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(EVENT1);
        // Then nothing more: the upstream must learn of the disconnect without writing.
        res.on('close', () => (upstreamClosed = true));
      };
      let disconnectedAt = 0;
      const reply = await streamFromProxy(ctx.proxy.port, (soFar, _res, destroy) => {
        if (soFar.includes(EVENT1) && disconnectedAt === 0) {
          disconnectedAt = Date.now();
          destroy();
        }
      });
      assert.notEqual(disconnectedAt, 0, `client received event 1 (outcome ${reply.outcome})`);
      const closed = await waitFor(() => upstreamClosed && ctx.upstream.clientAborts.length > abortsBefore, 2_000);
      assert.ok(closed, `upstream response still open ${Date.now() - disconnectedAt} ms after the client left`);
    },
  );

  test('the proxy still serves a stream after the failures above', { timeout: 15_000 }, async () => {
    ctx.upstream.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(EVENT1);
      res.end(EVENT3);
    };
    const reply = await streamFromProxy(ctx.proxy.port, () => {});
    assert.equal(reply.outcome, 'end');
    assert.equal(reply.body, EVENT1 + EVENT3);
    assert.equal(ctx.proxy.exitStatus, null);
  });
});
