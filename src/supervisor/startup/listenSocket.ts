// Binds the proxy's listening socket in the supervisor, as a bare descriptor.
//
// Node cannot bind a socket without also accepting on it, and the supervisor
// must never accept (all client bytes belong to the worker). So the socket is
// made with libc's socket/bind/listen (src/shared/libc.ts). The supervisor
// holds the descriptor for its whole life, never polls it, and hands it to each
// worker as fd 3; connections wait in the kernel backlog while none runs.
// Binding here, before any worker exists, also lets root use ports below 1024.

import { ProxyError } from '../../shared/errors.js';
import { LibcError, closeFd, listenTcp4 } from '../../shared/libc.js';

const BACKLOG = 511;

export interface ListenSocket {
  readonly fd: number;
  readonly port: number;
}

/** Bind and listen on 127.0.0.1:port (0 = ephemeral). Throws ProxyError (exit 1). */
export function bindLoopback(port: number): ListenSocket {
  try {
    return listenTcp4([127, 0, 0, 1], port, BACKLOG);
  } catch (err) {
    if (!(err instanceof LibcError)) throw err;
    let hint = `: ${err.message}`;
    if (err.errnoName === 'EADDRINUSE')
      hint = ': address already in use (choose another --port, or omit it for an ephemeral port)';
    else if (err.errnoName === 'EACCES') hint = ': permission denied (ports below 1024 need root)';
    throw new ProxyError('ERR_LISTEN', `cannot listen on 127.0.0.1:${port}${hint}`);
  }
}

export function closeDescriptor(fd: number): void {
  closeFd(fd);
}
