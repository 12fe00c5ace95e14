// Issue 9, point 6: a 20-turn conversation through the proxy over WebSocket
// and over HTTP, in the same run. Each turn is what Codex does: over HTTP a
// POST whose body carries the whole conversation so far (it grows every turn)
// answered with server-sent events; over WebSocket one `response.create` with
// `previous_response_id` and only the new input, on one socket kept for the
// conversation, answered with the same events as messages. The mock upstream
// answers at once, so the figures are the transports' and the proxy's own
// cost. Conversations run in interleaved rounds against the mock directly and
// through `ours`; the median conversation time is reported per variant.

import { fork } from 'node:child_process';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { median } from './report.js';

export const TURNS = 20;
const DELTAS_PER_TURN = 30;
/** One turn's new input (a user message plus tool output, as a coding agent sends). */
const TURN_INPUT = { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'x'.repeat(1500) }] };

export interface TurnEvent {
  readonly type: string;
  readonly json: string;
}

/** The events of one turn: created, 30 text deltas, completed. */
export function turnEvents(id: string, turn: number): TurnEvent[] {
  const events: Array<Record<string, unknown>> = [
    { type: 'response.created', response: { id, object: 'response', status: 'in_progress' } },
  ];
  for (let i = 0; i < DELTAS_PER_TURN; i++)
    events.push({
      type: 'response.output_text.delta',
      item_id: `msg_${turn}`,
      output_index: 0,
      content_index: 0,
      delta: `word${i} `.repeat(8),
    });
  events.push({
    type: 'response.completed',
    response: {
      id,
      object: 'response',
      status: 'completed',
      usage: { input_tokens: 1000, output_tokens: 240, total_tokens: 1240 },
    },
  });
  return events.map((e) => ({ type: e.type as string, json: JSON.stringify(e) }));
}

export type Transport = 'http' | 'websocket';

/** One conversation over HTTP: TURNS POSTs on one keep-alive connection; ms. */
async function httpConversation(port: number, headers: Record<string, string>): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const history: unknown[] = [];
  const started = performance.now();
  try {
    for (let turn = 0; turn < TURNS; turn++) {
      history.push(TURN_INPUT);
      const body = Buffer.from(JSON.stringify({ model: 'bench', stream: true, input: history }));
      const text = await new Promise<string>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/v1/responses',
            agent,
            headers: { ...headers, 'content-type': 'application/json', 'content-length': body.length },
          },
          (res) => {
            let received = '';
            res.setEncoding('utf8').on('data', (s: string) => (received += s));
            res.on('end', () =>
              res.statusCode === 200 ? resolve(received) : reject(new Error(`HTTP turn answered ${res.statusCode}`)),
            );
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.setTimeout(10_000, () => req.destroy(new Error('HTTP turn timed out')));
        req.end(body);
      });
      if (!text.includes('event: response.completed')) throw new Error('HTTP turn ended without response.completed');
    }
    return performance.now() - started;
  } finally {
    agent.destroy();
  }
}

/** One conversation over one WebSocket: TURNS response.create messages; ms (the handshake included). */
async function webSocketConversation(port: number, headers: Record<string, string>): Promise<number> {
  const started = performance.now();
  const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/responses`, {
    headers: { ...headers, 'openai-beta': 'responses_websockets=2026-02-06' },
    handshakeTimeout: 10_000,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
      socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`WebSocket upgrade answered ${res.statusCode}`)),
      );
    });
    let previous: string | null = null;
    for (let turn = 0; turn < TURNS; turn++) {
      const completed = new Promise<string>((resolve, reject) => {
        const onClose = (): void => reject(new Error('WebSocket closed mid-turn'));
        const timer = setTimeout(() => reject(new Error('WebSocket turn timed out')), 10_000);
        const onMessage = (data: Buffer): void => {
          const event = JSON.parse(data.toString()) as { type: string; response?: { id: string } };
          if (event.type !== 'response.completed') return;
          clearTimeout(timer);
          socket.off('message', onMessage);
          socket.off('close', onClose);
          resolve(event.response?.id ?? '');
        };
        socket.on('message', onMessage);
        socket.once('close', onClose);
      });
      socket.send(
        JSON.stringify({
          type: 'response.create',
          model: 'bench',
          previous_response_id: previous,
          input: [TURN_INPUT],
        }),
      );
      previous = await completed;
    }
    return performance.now() - started;
  } finally {
    socket.removeAllListeners('close');
    socket.terminate();
  }
}

export interface ConversationResult {
  /** Median conversation ms per "<target>/<transport>". */
  readonly medians: Record<string, number>;
  /** ours over WebSocket / ours over HTTP, per round. */
  readonly wsOverHttp: number[];
  readonly failures: string[];
  readonly upstream: { httpTurns: number; webSocketTurns: number; refused: number };
}

interface ConversationTarget {
  readonly name: string;
  readonly port: number;
  readonly headers: Record<string, string>;
}

/**
 * Start the mock, let `startProxy` start ours against it (with --websocket),
 * run `rounds` rounds of the four variants in rotating order, stop both.
 */
export async function runConversations(
  key: string,
  rounds: number,
  startProxy: (upstreamUrl: string) => Promise<{ port: number; stop(): Promise<void> }>,
): Promise<ConversationResult> {
  const upstream = fork(fileURLToPath(new URL('./conversationUpstream.js', import.meta.url)), [], {
    env: { BENCH_AUTH: `Bearer ${key}` },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('conversation upstream did not start within 10 s')), 10_000);
    upstream.once('message', (m: { port: number }) => {
      clearTimeout(timer);
      resolve(m.port);
    });
  });
  const proxy = await startProxy(`http://127.0.0.1:${port}/v1/responses`);
  try {
    const targets: ConversationTarget[] = [
      { name: 'direct', port, headers: { authorization: `Bearer ${key}` } },
      { name: 'ours', port: proxy.port, headers: {} },
    ];
    const variants = targets.flatMap((t) =>
      (['http', 'websocket'] as const).map((transport) => ({ target: t, transport })),
    );
    const times: Record<string, number[]> = {};
    const failures: string[] = [];
    const wsOverHttp: number[] = [];
    // One untimed warm-up conversation per variant.
    for (let round = 0; round <= rounds; round++) {
      const ms: Record<string, number> = {};
      for (let i = 0; i < variants.length; i++) {
        const { target, transport } = variants[(i + round) % variants.length] as (typeof variants)[number];
        const label = `${target.name}/${transport}`;
        try {
          ms[label] =
            transport === 'http'
              ? await httpConversation(target.port, target.headers)
              : await webSocketConversation(target.port, target.headers);
        } catch (err) {
          failures.push(`${label}: ${err instanceof Error ? err.message : String(err)}`);
          continue;
        }
        if (round > 0) (times[label] ??= []).push(ms[label] as number);
      }
      if (round > 0 && ms['ours/http'] !== undefined && ms['ours/websocket'] !== undefined)
        wsOverHttp.push(ms['ours/websocket'] / ms['ours/http']);
    }
    const stats = await new Promise<ConversationResult['upstream']>((resolve) => {
      upstream.once('message', (m: ConversationResult['upstream']) => resolve(m));
      upstream.send({ type: 'stats' });
    });
    return {
      medians: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)])),
      wsOverHttp,
      failures,
      upstream: stats,
    };
  } finally {
    await proxy.stop();
    upstream.kill('SIGTERM');
  }
}
