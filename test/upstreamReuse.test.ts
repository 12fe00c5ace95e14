// Upstream connections are reused: one client after another (c=1) needs one
// upstream connection, also after a pause as an agent takes between turns, and
// N clients at once need N (undici frees a connection only late in the turn
// its answer ended: src/supervisor/upstream.ts). Against a real upstream every
// new one is a TLS handshake.
//
// The upstream here answers as soon as the body has arrived, as real ones do
// (the worker's REQUEST_END frame may reach the supervisor after that answer),
// and, as many do, does not say how long it keeps an idle connection.

import assert from 'node:assert/strict';
import { Agent, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { send } from './helpers/httpClient.js';
import { ProxyProcess } from './helpers/proxyProcess.js';

const REPLY = JSON.stringify({ id: 'resp_1', object: 'response', status: 'completed' });

/** Counts the TCP connections it accepts; answers once a request's body is in; never closes an idle one. */
class CountingUpstream {
  connections = 0;
  private readonly sockets = new Set<Socket>();
  private readonly server: Server;

  constructor() {
    // keepAliveTimeout 0: no Keep-Alive header, no idle timeout.
    this.server = createServer({ keepAliveTimeout: 0 }, (req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(REPLY) });
        res.end(REPLY);
      });
    });
    this.server.on('connection', (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/responses`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('upstream connection reuse', () => {
  const upstream = new CountingUpstream();
  let proxy: ProxyProcess | undefined;
  before(async () => {
    proxy = await ProxyProcess.start({ args: ['--upstream-url', await upstream.listen(), '--log-level', 'warn'] });
  });
  after(async () => {
    await proxy?.stop();
    await upstream.close();
  });

  test('300 requests one after another open no new upstream connection', async () => {
    const port = (proxy as ProxyProcess).port;
    const body = JSON.stringify({ model: 'gpt-test', input: 'hi' });
    const post = async (i: number): Promise<void> => {
      const reply = await send(port, { headers: { 'content-type': 'application/json' }, body });
      assert.equal(reply.status, 200, `request ${i}: ${reply.body.toString()}`);
    };
    for (let i = 0; i < 5; i++) await post(i);
    const warm = upstream.connections;
    for (let i = 0; i < 300; i++) await post(i);
    assert.equal(upstream.connections - warm, 0, 'upstream connections opened for 300 sequential requests');
  });

  test(
    '32 clients at once, each sending 200 requests one after another, need 32 upstream connections',
    { timeout: 60_000 },
    async () => {
      const port = (proxy as ProxyProcess).port;
      const body = JSON.stringify({ model: 'gpt-test', input: 'hi' });
      const client = async (k: number): Promise<void> => {
        // One keep-alive connection per client, as an agent holds: the next
        // request follows its answer as closely as it can.
        const agent = new Agent({ keepAlive: true, maxSockets: 1 });
        try {
          for (let i = 0; i < 200; i++) {
            const reply = await send(port, { agent, headers: { 'content-type': 'application/json' }, body });
            assert.equal(reply.status, 200, `client ${k}, request ${i}: ${reply.body.toString()}`);
          }
        } finally {
          agent.destroy();
        }
      };
      const before = upstream.connections;
      await Promise.all(Array.from({ length: 32 }, (_, k) => client(k)));
      // The tests before leave one connection open, which this one may reuse.
      const opened = upstream.connections - before;
      assert.ok(opened <= 32, `${opened} upstream connections opened for 32 clients at once`);
    },
  );

  test('a request 5 s after the last one reuses its connection', async () => {
    const port = (proxy as ProxyProcess).port;
    const post = async (): Promise<void> => {
      const reply = await send(port, { headers: { 'content-type': 'application/json' }, body: '{"input":"hi"}' });
      assert.equal(reply.status, 200, reply.body.toString());
    };
    await post();
    const before = upstream.connections;
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    await post();
    assert.equal(upstream.connections - before, 0, 'a new upstream connection after 5 s idle');
  });
});
