// TCP ports on 127.0.0.1 that misbehave deterministically, made with libc
// through koffi (Node cannot bind without listening, nor listen without
// accepting):
// - reserveClosedPort: bound, not listening: every connect gets ECONNREFUSED
//   at once, and no other process can take the port while it is held;
// - listenWithoutAccepting: listening with a tiny backlog that nobody drains:
//   once the accept queue is full, further SYNs are dropped and connects hang
//   (what a connect timeout needs).

import koffi from 'koffi';

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

type CFunction = ReturnType<ReturnType<typeof koffi.load>['func']>;
interface Libc {
  socket: CFunction;
  bind: CFunction;
  getsockname: CFunction;
  listen: CFunction;
  close: CFunction;
}
let bound: Libc | null = null;

function libc(): Libc {
  if (bound !== null) return bound;
  const lib = koffi.load('libc.so.6');
  bound = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
    getsockname: lib.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)'),
    listen: lib.func('int listen(int fd, int backlog)'),
    close: lib.func('int close(int fd)'),
  };
  return bound;
}

export interface ClosedPort {
  readonly port: number;
  release(): void;
}

export function reserveClosedPort(): ClosedPort {
  return boundSocket(null);
}

/** Listening on 127.0.0.1 with `backlog`, never accepting. */
export function listenWithoutAccepting(backlog = 0): ClosedPort {
  return boundSocket(backlog);
}

function boundSocket(listenBacklog: number | null): ClosedPort {
  const c = libc();
  const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`socket failed: errno ${koffi.errno()}`);
  const addr = Buffer.alloc(16); // struct sockaddr_in, 127.0.0.1:0
  addr.writeUInt16LE(AF_INET, 0);
  addr.writeUInt16BE(0, 2);
  addr.set([127, 0, 0, 1], 4);
  if ((c.bind(fd, addr, addr.length) as number) !== 0) {
    const errno = koffi.errno();
    c.close(fd);
    throw new Error(`bind failed: errno ${errno}`);
  }
  const out = Buffer.alloc(16);
  if ((c.getsockname(fd, out, [out.length]) as number) !== 0) {
    const errno = koffi.errno();
    c.close(fd);
    throw new Error(`getsockname failed: errno ${errno}`);
  }
  if (listenBacklog !== null && (c.listen(fd, listenBacklog) as number) !== 0) {
    const errno = koffi.errno();
    c.close(fd);
    throw new Error(`listen failed: errno ${errno}`);
  }
  let released = false;
  return {
    port: out.readUInt16BE(2),
    release: () => {
      if (released) return;
      released = true;
      c.close(fd);
    },
  };
}
