// The benchmark's mock upstream, run in its own process (forked by run.ts with
// an IPC channel): node:http on 127.0.0.1, as cheap as it can be. What it
// answers is chosen by request headers (see common.ts):
//   small  a fixed small JSON reply (Content-Length);
//   sse    N events of a fixed size, the first at once, then one every delay ms
//          (a few ms for the time-to-first-byte test, 500 ms for slow streams);
//   large  N bytes streamed as fast as the reader takes them (64 KiB writes).
// Every request's Authorization is checked against BENCH_AUTH; a mismatch is
// counted, a sample kept, and answered 401 (so the client counts it too).

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  H_BYTES,
  H_DELAY,
  H_EVENTS,
  H_EVENT_SIZE,
  H_ID,
  H_MODE,
  SMALL_REPLY,
  nowUs,
  sseEvent,
  type FromMock,
  type StreamTimes,
  type ToMock,
} from './common.js';

const expectedAuth = process.env.BENCH_AUTH ?? '';
const LARGE_CHUNK = Buffer.alloc(64 * 1024, 0x61);
const MAX_SAMPLES = 5;

let requests = 0;
/** TCP connections accepted: a proxy that reuses its upstream connections opens few. */
let connections = 0;
let authMismatches = 0;
const mismatchSamples: string[] = [];
let open = 0;
let aborted = 0;
/** Streams that carry an x-bench-id: when they opened and closed. */
const times = new Map<string, { openedUs: number; closedUs: number | null; finished: boolean }>();

function send(msg: FromMock): void {
  process.send?.(msg);
}

function intHeader(req: IncomingMessage, name: string, fallback: number): number {
  const v = Number(req.headers[name]);
  return Number.isFinite(v) && v >= 0 ? v : fallback;
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  requests++;
  const auth = req.headers.authorization;
  if (auth !== expectedAuth) {
    authMismatches++;
    if (mismatchSamples.length < MAX_SAMPLES) mismatchSamples.push(JSON.stringify(auth ?? null).slice(0, 80));
    req.resume();
    res.writeHead(401, { 'content-type': 'application/json', 'content-length': '2' });
    res.end('{}');
    return;
  }
  const id = req.headers[H_ID];
  if (typeof id === 'string') times.set(id, { openedUs: nowUs(), closedUs: null, finished: false });
  open++;
  let done = false;
  res.on('close', () => {
    open--;
    if (!res.writableFinished) aborted++;
    done = true;
    if (typeof id === 'string') {
      const t = times.get(id);
      if (t) {
        t.closedUs = nowUs();
        t.finished = res.writableFinished;
      }
    }
  });
  // Answer once the request body has arrived, as a real upstream does.
  req.resume();
  req.on('end', () => {
    if (done) return;
    const mode = req.headers[H_MODE] ?? 'small';
    if (mode === 'sse') return sse(req, res, () => done);
    if (mode === 'large') return large(res, intHeader(req, H_BYTES, 1024 * 1024), () => done);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(SMALL_REPLY.length) });
    res.end(SMALL_REPLY);
  });
}

function sse(req: IncomingMessage, res: ServerResponse, isDone: () => boolean): void {
  const events = Math.max(1, intHeader(req, H_EVENTS, 5));
  const delay = intHeader(req, H_DELAY, 10);
  const size = Math.max(16, intHeader(req, H_EVENT_SIZE, 64));
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let n = 0;
  const next = (): void => {
    if (isDone()) return;
    res.write(sseEvent(n, size));
    n++;
    if (n >= events) res.end();
    else setTimeout(next, delay);
  };
  next();
}

function large(res: ServerResponse, total: number, isDone: () => boolean): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  let left = total;
  const pump = (): void => {
    while (left > 0 && !isDone()) {
      const n = Math.min(left, LARGE_CHUNK.length);
      left -= n;
      const more = res.write(n === LARGE_CHUNK.length ? LARGE_CHUNK : LARGE_CHUNK.subarray(0, n));
      if (left === 0) break;
      if (!more) {
        res.once('drain', pump);
        return;
      }
    }
    if (left === 0 && !isDone()) res.end();
  };
  pump();
}

// keepAliveTimeout 0: as many real upstreams, no Keep-Alive header saying how
// long an idle connection is kept (so the proxy's own idle timeout shows), and
// the mock never closes one itself.
const server = createServer({ keepAliveTimeout: 0, headersTimeout: 60_000, requestTimeout: 0 }, handle);
server.maxRequestsPerSocket = 0;
server.on('connection', () => connections++);
server.on('clientError', (_err, socket) => socket.destroy());

process.on('message', (raw: unknown) => {
  const msg = raw as ToMock;
  if (msg.type === 'stats') {
    send({
      type: 'stats',
      seq: msg.seq,
      stats: { requests, connections, authMismatches, mismatchSamples: [...mismatchSamples], open, aborted },
    });
  } else if (msg.type === 'times') {
    const out: StreamTimes[] = [];
    for (const id of msg.ids) {
      const t = times.get(id);
      if (t) out.push({ id, ...t });
    }
    send({ type: 'times', seq: msg.seq, times: out });
  }
});
// The harness going away (its IPC channel closing) ends the mock too.
process.on('disconnect', () => process.exit(0));

server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  send({ type: 'ready', port: (server.address() as AddressInfo).port });
});
