// The `floor` baseline: what our two-process shape costs in Node before any
// proxy logic. Two Node processes relay bytes, nothing else: a front process
// (the worker's place) accepts the client on TCP and pipes each connection
// through its own unix socket to a back process (the supervisor's place), which
// pipes it to the upstream. No HTTP parsing, no framing, no credit, no key: the
// client sends Authorization itself, as for `direct`. A proxy of this shape
// cannot be faster than this; the gap between `ours` and `floor` is our code.
//
//   node relayFloor.js back <upstream port>   (root; starts the front itself)

import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Bytes both ways; when either side closes, the other is dropped (as the proxy does). */
function relay(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.on('close', () => b.destroy());
  b.on('close', () => a.destroy());
}

const [role, arg] = process.argv.slice(2);
if (role === 'back') {
  const upstreamPort = Number(arg);
  const path = join(tmpdir(), `rap-bench-floor-${process.pid}.sock`);
  rmSync(path, { force: true });
  createServer((front) => relay(front, createConnection(upstreamPort, '127.0.0.1'))).listen(path, () => {
    const front = spawn(process.execPath, [fileURLToPath(import.meta.url), 'front', path], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    front.on('exit', () => process.exit(0));
  });
  // The benchmark stops the tree by pid; take the socket file with us.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
  process.on('exit', () => rmSync(path, { force: true }));
} else if (role === 'front') {
  const server = createServer((client) => relay(client, createConnection(arg as string)));
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    // The line targets.ts waits for, as from our proxy.
    if (address !== null && typeof address === 'object')
      process.stderr.write(`responses-api-proxy listening on 127.0.0.1:${address.port}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
} else {
  process.stderr.write('usage: node relayFloor.js back <upstream port>\n');
  process.exit(2);
}
