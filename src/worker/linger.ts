// Lingering close (RFC 9112 §9.6) for requests answered before their body was
// read (413, 503). Closing a socket with unread input makes the kernel send a
// reset, and a client still writing its body then never reads our answer.
// Node ends a last response with socket.destroySoon(), which closes as soon as
// our side is written; for this socket it only sends our FIN, and the rest of
// the body is read and discarded until the client closes — within bounds,
// since nobody needs it.

import type { IncomingMessage } from 'node:http';

const LINGER_MAX_BYTES = 16 * 1024 * 1024;
const LINGER_MAX_MS = 5_000;

export function drainThenClose(req: IncomingMessage): void {
  if (req.complete) return;
  const socket = req.socket;
  let closing = false;
  socket.destroySoon = () => {
    closing = true;
    socket.end();
  };
  let drained = 0;
  const timer = setTimeout(() => socket.destroy(), LINGER_MAX_MS);
  timer.unref();
  req.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > LINGER_MAX_BYTES) socket.destroy();
  });
  // The whole body is read: nothing unread is left to cause a reset.
  req.once('end', () => {
    clearTimeout(timer);
    if (closing) socket.destroy();
  });
  socket.once('close', () => clearTimeout(timer));
  req.resume();
}
