// The sessions' mock upstream (forked by sessions.ts): answers each turn of a
// Codex-like session (sessionWorkload.ts) the same over both transports —
//   POST /v1/responses          the turn's events as server-sent events;
//   WebSocket /v1/responses     each `response.create` answered with the same
//                               events, one text message each —
// each event at its seeded time after the request arrived, scheduled from
// that moment (not from the previous event) so timer lateness does not add up.
// Every handshake and request must carry BENCH_AUTH, and every turn must be
// the one its agent is due to send (history, previous_response_id, tool
// output): anything else is refused and counted, so a proxy that loses the
// key or mangles a body cannot look fast.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { nowUs } from './common.js';
import {
  agentOf,
  answer,
  callId,
  httpBodyBytes,
  turnAfter,
  type Answer,
  type SessionShape,
} from './sessionWorkload.js';

const expectedAuth = process.env.BENCH_AUTH ?? '';
const shape = JSON.parse(process.env.BENCH_SESSION_SHAPE ?? '{}') as SessionShape;
let httpTurns = 0;
let webSocketTurns = 0;
let refused = 0;
let malformed = 0;

/**
 * Which agent's which turn an HTTP body is, or null if it is not the one that
 * agent is due to send: its exact size tells the turn, its tail the agent, and
 * it must end its input with the previous call's output. Not a parse: the
 * mock stays cheap beside the proxies it measures.
 */
function httpSessionTurn(body: Buffer): { agent: number; turn: number } | null {
  const turn = Array.from({ length: shape.turns + 1 }, (_, t) => t).find(
    (t) => httpBodyBytes(shape, t) === body.length,
  );
  const tail = /"stream":true,.*"prompt_cache_key":"([^"]+)"\}$/.exec(
    body.toString('latin1', Math.max(0, body.length - 512)),
  );
  const agent = agentOf(tail?.[1]);
  if (turn === undefined || agent === null || !body.subarray(0, 9).equals(Buffer.from('{"model":'))) return null;
  const output = `{"type":"function_call_output","call_id":"${callId(agent, turn - 1)}"`;
  return turn === 0 || body.lastIndexOf(output) !== -1 ? { agent, turn } : null;
}

/** Which agent's which turn a WebSocket message is, or null if it is not the one that agent is due to send. */
function webSocketSessionTurn(text: string): { agent: number; turn: number } | null {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return null;
  }
  const agent = agentOf(r?.prompt_cache_key);
  const turn = agent === null || r.type !== 'response.create' ? null : turnAfter(r.previous_response_id, agent);
  const input = r?.input;
  if (agent === null || turn === null || !Array.isArray(input) || r.stream !== true) return null;
  const last = input[input.length - 1] as { type?: unknown; call_id?: unknown } | undefined;
  const lastOk =
    turn === 0
      ? input.length === 2 && last?.type === 'message'
      : input.length === 1 && last?.type === 'function_call_output' && last.call_id === callId(agent, turn - 1);
  return lastOk ? { agent, turn } : null;
}

/** Send the answer's events at their due times after `startMs`, response.completed stamped last. */
function play(
  a: Answer,
  receivedUs: number,
  startMs: number,
  send: (type: string, json: string) => void,
  end: () => void,
  gone: () => boolean,
): void {
  let i = 0;
  const tick = (): void => {
    if (gone()) return;
    const elapsed = performance.now() - startMs;
    for (; i < a.events.length && (a.dueMs[i] as number) <= elapsed; i++) {
      const e = a.events[i] as (typeof a.events)[number];
      send(e.type, e.json);
    }
    if (i === a.events.length && (a.dueMs[i] as number) <= elapsed) {
      send('response.completed', a.completed(receivedUs, nowUs()));
      return end();
    }
    setTimeout(tick, (a.dueMs[i] as number) - elapsed);
  };
  tick();
}

// As the main mock: no Keep-Alive timeout of its own, an idle connection is the proxy's to close.
const server = createServer({ keepAliveTimeout: 0, headersTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  if (req.headers.authorization !== expectedAuth) {
    refused++;
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":{"message":"bad key"}}');
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const receivedUs = nowUs();
    const startMs = performance.now();
    const t = httpSessionTurn(Buffer.concat(chunks));
    if (t === null) {
      malformed++;
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"message":"unexpected turn"}}');
      return;
    }
    httpTurns++;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    play(
      answer(shape, t.agent, t.turn),
      receivedUs,
      startMs,
      (type, json) => res.write(`event: ${type}\ndata: ${json}\n\n`),
      () => res.end(),
      () => res.destroyed,
    );
  });
});
const webSockets = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  if (req.headers.authorization !== expectedAuth) {
    refused++;
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    return;
  }
  webSockets.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data: Buffer) => {
      const receivedUs = nowUs();
      const startMs = performance.now();
      const t = webSocketSessionTurn(data.toString('utf8'));
      if (t === null) {
        malformed++;
        ws.send('{"type":"error","error":{"message":"unexpected turn"}}');
        return;
      }
      webSocketTurns++;
      play(
        answer(shape, t.agent, t.turn),
        receivedUs,
        startMs,
        (_type, json) => ws.send(json),
        () => {},
        () => ws.readyState !== WebSocket.OPEN,
      );
    });
  });
});
server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port }));
process.on('message', (m: { type: string }) => {
  if (m.type === 'stats') process.send?.({ type: 'stats', httpTurns, webSocketTurns, refused, malformed });
});
process.on('disconnect', () => process.exit(0));
