// The conversation benchmark's mock upstream (forked by conversation.ts): one
// Responses API turn, answered the same over both transports —
//   POST /v1/responses          the turn's events as server-sent events;
//   WebSocket /v1/responses     each `response.create` message answered with
//                               the same events, one text message each.
// Every handshake and request must carry BENCH_AUTH; anything else is refused
// (401) and counted, so a proxy that loses the key cannot look fast.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { turnEvents } from './conversation.js';

const expectedAuth = process.env.BENCH_AUTH ?? '';
let httpTurns = 0;
let webSocketTurns = 0;
let refused = 0;

const server = createServer((req, res) => {
  if (req.headers.authorization !== expectedAuth) {
    refused++;
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"bad key"}}');
    return;
  }
  let turn = 0;
  req.on('data', () => {});
  req.on('end', () => {
    httpTurns++;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const event of turnEvents(`resp_${httpTurns}`, turn++))
      res.write(`event: ${event.type}\ndata: ${event.json}\n\n`);
    res.end();
  });
});
const webSockets = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  if (req.headers.authorization !== expectedAuth) {
    refused++;
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  webSockets.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => {
      const request = JSON.parse(data.toString()) as { type?: string };
      if (request.type !== 'response.create') return ws.close(1003, 'expected response.create');
      webSocketTurns++;
      for (const event of turnEvents(`resp_ws_${webSocketTurns}`, 0)) ws.send(event.json);
    });
  });
});
server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
process.on('message', (m: { type: string }) => {
  if (m.type === 'stats') process.send?.({ type: 'stats', httpTurns, webSocketTurns, refused });
});
process.on('disconnect', () => process.exit(0));
