// Issue 20, item 7: Codex-like agent sessions through each target, over HTTP
// and over the WebSocket mode, in every round. Eight agents (by default) run
// their sessions at once, each turn waiting for the previous one's answer,
// on one keep-alive connection or one WebSocket per session; what a turn
// sends and how the answer is spaced is sessionWorkload.ts, the same for every
// target. The WebSocket mode runs through the targets that carry it: the mock
// itself, ours (started with --websocket) and the floor (it relays bytes, so
// the upgrade passes through); the original has no WebSocket mode.
//
// Added time per turn. A turn's time is from just before the client writes
// the request to the arrival of its response.completed event; from it is
// taken the upstream's own time with the turn (request read in full to
// response.completed sent, stamped by the mock in that event on the same
// monotonic clock), so the seeded event spacing and the mock's timer lateness
// cancel out. The added time of a turn is that figure through the target less
// the same agent's same turn sent directly to the mock over the same
// transport in the same round; p50 and p99 are over every turn of the round.
// Proxy CPU per session: the CPU seconds of the target's whole process tree
// (/proc) while its sessions ran, divided by the sessions completed (turns
// completed over turns per session: all of them unless some failed).

import { fork } from 'node:child_process';
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { nowUs } from './common.js';
import { treeCpuSeconds } from './procTree.js';
import { percentile, type RoundResult, type TestFailures, type Values } from './report.js';
import { AgentSession, upstreamHeldUs, type SessionShape } from './sessionWorkload.js';
import { killTree, started, type Target, type TargetName } from './targets.js';

export type Transport = 'http' | 'websocket';
const TRANSPORTS: readonly Transport[] = ['http', 'websocket'];
/** Targets that carry the WebSocket mode. */
const WEBSOCKET_TARGETS: ReadonlySet<TargetName> = new Set<TargetName>(['direct', 'ours', 'floor']);

export interface SessionsUpstreamStats {
  readonly httpTurns: number;
  readonly webSocketTurns: number;
  /** Requests and handshakes without the key. */
  readonly refused: number;
  /** Turns that were not the one their agent was due to send. */
  readonly malformed: number;
}

/** The sessions' mock upstream (sessionsUpstream.ts), in its own process for the whole run. */
export class SessionsUpstream {
  private constructor(
    private readonly child: ReturnType<typeof fork>,
    readonly port: number,
    readonly shape: SessionShape,
  ) {}

  static async start(key: string, shape: SessionShape): Promise<SessionsUpstream> {
    const child = fork(fileURLToPath(new URL('./sessionsUpstream.js', import.meta.url)), [], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        BENCH_AUTH: `Bearer ${key}`,
        BENCH_SESSION_SHAPE: JSON.stringify(shape),
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    started.add(child);
    child.on('exit', () => started.delete(child));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        killTree(child, 'SIGKILL');
        reject(new Error('sessions upstream did not start within 10 s'));
      }, 10_000);
      child.once('message', (m: { port: number }) => {
        clearTimeout(timer);
        resolve(m.port);
      });
    });
    return new SessionsUpstream(child, port, shape);
  }

  stats(): Promise<SessionsUpstreamStats> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('sessions upstream did not answer within 10 s')), 10_000);
      this.child.once('message', (m: SessionsUpstreamStats) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.child.send({ type: 'stats' });
    });
  }
}

/** One turn's answer as it arrives: its events counted, response.completed's arrival stamped. */
class TurnReader {
  private events = 0;
  private arrivedUs = NaN;
  private heldUs = NaN;
  private sentUs = NaN;

  /** Called just before the request is written. */
  start(): void {
    this.sentUs = nowUs();
  }

  /** One event's JSON, arrived at `atUs`. */
  event(json: string, atUs: number): void {
    this.events++;
    if (json.startsWith('{"type":"error"')) throw new Error(`upstream error event: ${json.slice(0, 120)}`);
    if (!json.startsWith('{"type":"response.completed"')) return;
    this.arrivedUs = atUs;
    this.heldUs = upstreamHeldUs(JSON.parse(json) as Parameters<typeof upstreamHeldUs>[0]);
  }

  get completed(): boolean {
    return Number.isFinite(this.arrivedUs);
  }

  /** The turn's time less the upstream's, µs; throws unless the whole answer came. */
  overheadUs(events: number): number {
    if (!this.completed) throw new Error('turn ended without response.completed');
    if (this.events !== events) throw new Error(`turn got ${this.events} of ${events} events`);
    if (!Number.isFinite(this.heldUs)) throw new Error('response.completed without the upstream stamps');
    return this.arrivedUs - this.sentUs - this.heldUs;
  }
}

class TurnTimeout extends Error {}

function turnTimeoutMs(shape: SessionShape): number {
  return shape.events * shape.maxGapMs + 10_000;
}

/** One HTTP turn on the session's keep-alive connection; the turn's time less the upstream's, µs. */
function httpTurn(t: Target, agent: Agent, session: AgentSession, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const reader = new TurnReader();
    const req = request(
      {
        host: '127.0.0.1',
        port: t.port,
        method: 'POST',
        path: '/v1/responses',
        agent,
        headers: {
          ...t.headers,
          'content-type': 'application/json',
          accept: 'text/event-stream',
          'content-length': body.length,
        },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return reject(new Error(`HTTP turn answered ${res.statusCode}`));
        }
        let pending = '';
        res.setEncoding('utf8').on('data', (s: string) => {
          const atUs = nowUs();
          pending += s;
          try {
            for (let end = pending.indexOf('\n\n'); end !== -1; end = pending.indexOf('\n\n')) {
              const block = pending.slice(0, end);
              pending = pending.slice(end + 2);
              const data = block.indexOf('data: ');
              reader.event(data === -1 ? '' : block.slice(data + 6), atUs);
            }
          } catch (err) {
            req.destroy(err as Error);
          }
        });
        res.on('end', () => {
          try {
            resolve(reader.overheadUs(session.shape.events));
          } catch (err) {
            reject(err as Error);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    const timer = setTimeout(() => req.destroy(new TurnTimeout('turn timed out')), turnTimeoutMs(session.shape));
    req.on('close', () => clearTimeout(timer));
    reader.start();
    req.end(body);
  });
}

/** Called with each completed turn's time less the upstream's, µs. */
type OnTurn = (turn: number, overheadUs: number) => void;

/** A session over HTTP: every turn a POST of the whole history. */
async function httpSession(t: Target, session: AgentSession, turns: number, record: OnTurn): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let turn = 0; turn < turns; turn++) record(turn, await httpTurn(t, agent, session, session.httpBody(turn)));
  } finally {
    agent.destroy();
  }
}

/** A session over one WebSocket: every turn a response.create with previous_response_id and the new input. */
async function webSocketSession(t: Target, session: AgentSession, turns: number, record: OnTurn): Promise<void> {
  const socket = new WebSocket(`ws://127.0.0.1:${t.port}/v1/responses`, {
    headers: { ...t.headers, 'openai-beta': 'responses_websockets=2026-02-06' },
    perMessageDeflate: false,
    handshakeTimeout: 10_000,
  });
  let turn: { reader: TurnReader; done: (err?: Error) => void } | null = null;
  socket.on('message', (data: Buffer) => {
    const atUs = nowUs();
    if (turn === null) return;
    try {
      turn.reader.event(data.toString('utf8'), atUs);
      if (turn.reader.completed) turn.done();
    } catch (err) {
      turn.done(err as Error);
    }
  });
  socket.on('close', () => turn?.done(new Error('WebSocket closed mid-turn')));
  socket.on('error', (err) => turn?.done(err));
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
      socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`WebSocket upgrade answered ${res.statusCode}`)),
      );
    });
    for (let n = 0; n < turns; n++) {
      const message = session.webSocketMessage(n);
      const reader = new TurnReader();
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          clearTimeout(timer);
          turn = null;
          if (err) reject(err);
          else resolve();
        };
        const timer = setTimeout(() => done(new TurnTimeout('turn timed out')), turnTimeoutMs(session.shape));
        turn = { reader, done };
        reader.start();
        socket.send(message);
      });
      record(n, reader.overheadUs(session.shape.events));
    }
  } finally {
    socket.removeAllListeners('close');
    socket.terminate();
  }
}

interface VariantRun {
  /** "agent/turn" -> the turn's time less the upstream's, µs. */
  readonly overheadUs: Map<string, number>;
  readonly cpuSPerSession: number | null;
  readonly failures: TestFailures;
}

/** `agents` sessions of `turns` turns at once through one target over one transport. */
async function runVariant(
  t: Target,
  transport: Transport,
  shape: SessionShape,
  agents: readonly number[],
  turns: number,
  test: string,
): Promise<VariantRun> {
  const overheadUs = new Map<string, number>();
  const failures: TestFailures = { test, failed: 0, timeouts: 0, unserved: 0, byKind: {} };
  const cpu0 = t.pid === null ? 0 : treeCpuSeconds(t.pid);
  const run = transport === 'http' ? httpSession : webSocketSession;
  await Promise.all(
    agents.map(async (agent) => {
      let done = 0;
      try {
        await run(t, new AgentSession(shape, agent), turns, (turn, us) => {
          overheadUs.set(`${agent}/${turn}`, us);
          done++;
        });
      } catch (err) {
        // The turns a broken session did not complete are failed requests.
        const kind = err instanceof Error ? err.message : String(err);
        failures.failed += turns - done;
        if (err instanceof TurnTimeout) failures.timeouts += turns - done;
        failures.byKind[kind] = (failures.byKind[kind] ?? 0) + turns - done;
      }
    }),
  );
  // Per session completed: a target that leaves sessions unserved is not credited with their share.
  const sessions = overheadUs.size / turns;
  const cpuSPerSession = t.pid === null || sessions === 0 ? null : (treeCpuSeconds(t.pid) - cpu0) / sessions;
  return { overheadUs, cpuSPerSession, failures };
}

export interface SessionRound {
  readonly upstream: SessionsUpstream;
  /** Turns of the one untimed session per target and transport before the timed ones. */
  readonly warmupTurns: number;
  readonly names: readonly TargetName[];
  /** Start a target afresh in front of the sessions' upstream (ours with --websocket). */
  start(name: TargetName, upstreamPort: number): Promise<Target>;
  progress(message: string): void;
}

/**
 * One round of sessions: every target started afresh, every variant (target
 * and transport) warmed up, then run in an order rotating with the round;
 * figures and failures go into the round's result under `sessHttp*` / `sessWs*`.
 */
export async function runSessionRound(r: SessionRound, result: RoundResult): Promise<void> {
  const shape = r.upstream.shape;
  const targets = new Map<TargetName, Target>();
  const runs = new Map<string, VariantRun>();
  try {
    for (const name of r.names) {
      try {
        targets.set(name, await r.start(name, r.upstream.port));
      } catch (err) {
        (result.notes[name] ??= []).push(`sessions: ${err instanceof Error ? err.message : String(err)}`);
        (result.failures[name] ??= []).push({ test: 'sessions', failed: 1, timeouts: 0, unserved: 1, byKind: {} });
      }
    }
    const variants = [...targets.keys()].flatMap((name) =>
      (WEBSOCKET_TARGETS.has(name) ? TRANSPORTS : (['http'] as const)).map((transport) => ({ name, transport })),
    );
    const warmupAgent = shape.agents; // a prompt_cache_key of its own
    for (const { name, transport } of variants) {
      r.progress(`sessions warm-up / ${name} over ${transport}`);
      const t = targets.get(name) as Target;
      const warm = await runVariant(t, transport, shape, [warmupAgent], r.warmupTurns, `sessions warm-up ${transport}`);
      (result.failures[name] ??= []).push(warm.failures);
    }
    const agents = Array.from({ length: shape.agents }, (_, i) => i);
    for (let i = 0; i < variants.length; i++) {
      const { name, transport } = variants[(i + result.round - 1) % variants.length] as (typeof variants)[number];
      r.progress(`sessions / ${name} over ${transport}`);
      const t = targets.get(name) as Target;
      runs.set(
        `${name}/${transport}`,
        await runVariant(t, transport, shape, agents, shape.turns, `sessions ${transport}`),
      );
    }
  } finally {
    for (const t of targets.values()) await t.stop();
  }
  for (const [variant, run] of runs) {
    const [name, transport] = variant.split('/') as [TargetName, Transport];
    const direct = runs.get(`direct/${transport}`);
    const added = [...run.overheadUs]
      .flatMap(([turn, us]) => {
        const base = direct?.overheadUs.get(turn);
        return base === undefined ? [] : [(us - base) / 1000];
      })
      .sort((a, b) => a - b);
    const v = (result.values[name] ??= {}) as Values;
    const prefix = transport === 'http' ? 'sessHttp' : 'sessWs';
    v[`${prefix}AddP50Ms`] = added.length === 0 ? null : percentile(added, 50);
    v[`${prefix}AddP99Ms`] = added.length === 0 ? null : percentile(added, 99);
    v[`${prefix}CpuS`] = run.cpuSPerSession;
    (result.failures[name] ??= []).push(run.failures);
  }
}
