// Binds the proxy's listening socket in the supervisor, as a bare descriptor.
//
// Node cannot bind a socket without also accepting on it, and the supervisor
// must never accept (all client bytes belong to the worker). So the socket is
// made with the libc calls themselves (koffi): socket, bind, listen. The
// supervisor holds the descriptor for its whole life, never polls it, and hands
// it to the worker as fd 3; connections wait in the kernel backlog meanwhile.
// Binding here, before any worker exists, also lets root use ports below 1024.

import { constants as osConstants } from 'node:os';
import koffi from 'koffi';
import { ProxyError } from '../shared/errors.js';

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const BACKLOG = 511;

const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const setsockoptFn = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');
const bindFn = libc.func('int bind(int fd, const void *addr, uint32_t len)');
const listenFn = libc.func('int listen(int fd, int backlog)');
const getsocknameFn = libc.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)');
const closeFn = libc.func('int close(int fd)');

export interface ListenSocket {
  readonly fd: number;
  readonly port: number;
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** Bind and listen on 127.0.0.1:port (0 = ephemeral). Throws ProxyError (exit 1). */
export function bindLoopback(port: number): ListenSocket {
  const fd = socketFn(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new ProxyError('ERR_LISTEN', `cannot create a socket: ${errnoName(koffi.errno())}`);
  const fail = (what: string): never => {
    const name = errnoName(koffi.errno());
    closeFn(fd);
    let hint = '';
    if (name === 'EADDRINUSE') hint = ': address already in use (choose another --port, or omit it for an ephemeral port)';
    else if (name === 'EACCES') hint = ': permission denied (ports below 1024 need root)';
    else hint = `: ${name}`;
    throw new ProxyError('ERR_LISTEN', `cannot ${what} 127.0.0.1:${port}${hint}`);
  };
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  if ((setsockoptFn(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) as number) !== 0) fail('configure');
  const addr = Buffer.alloc(16); // struct sockaddr_in
  addr.writeUInt16LE(AF_INET, 0);
  addr.writeUInt16BE(port, 2);
  addr.set([127, 0, 0, 1], 4);
  if ((bindFn(fd, addr, addr.length) as number) !== 0) fail('bind');
  if ((listenFn(fd, BACKLOG) as number) !== 0) fail('listen on');
  const bound = Buffer.alloc(16);
  const length = [bound.length];
  if ((getsocknameFn(fd, bound, length) as number) !== 0) fail('read the address of');
  return { fd, port: bound.readUInt16BE(2) };
}

export function closeDescriptor(fd: number): void {
  closeFn(fd);
}
