// A real AF_UNIX stream socketpair, made with libc's socketpair(2) through
// koffi (as src/shared/libc.ts binds libc), both ends wrapped in net.Socket.
// This is the transport the supervisor and the worker talk over.

import { Socket } from 'node:net';
import koffi from 'koffi';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

type CFunction = ReturnType<ReturnType<typeof koffi.load>['func']>;
let bound: { socketpair: CFunction; close: CFunction } | null = null;

function libc(): { socketpair: CFunction; close: CFunction } {
  if (bound !== null) return bound;
  const lib = koffi.load('libc.so.6');
  bound = {
    // int sv[2] is written by the call: passed as an 8-byte out buffer.
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ uint8_t *sv)'),
    close: lib.func('int close(int fd)'),
  };
  return bound;
}

/** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0): the two descriptors. */
export function socketPairFds(): [number, number] {
  const sv = Buffer.alloc(8);
  const { socketpair } = libc();
  if ((socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) as number) !== 0) {
    throw new Error(`socketpair failed: errno ${koffi.errno()}`);
  }
  return [sv.readInt32LE(0), sv.readInt32LE(4)];
}

export interface SocketPair {
  /** One end, e.g. the supervisor's. */
  readonly a: Socket;
  /** The other end, e.g. the worker's. */
  readonly b: Socket;
  /** Destroy both ends (closes both descriptors). */
  destroy(): void;
}

/** A connected pair of net.Sockets over a fresh socketpair; each owns (and closes) its fd. */
export function socketPair(): SocketPair {
  const [fdA, fdB] = socketPairFds();
  let a: Socket;
  try {
    a = new Socket({ fd: fdA, readable: true, writable: true });
  } catch (err) {
    libc().close(fdA);
    libc().close(fdB);
    throw err;
  }
  let b: Socket;
  try {
    b = new Socket({ fd: fdB, readable: true, writable: true });
  } catch (err) {
    a.destroy();
    libc().close(fdB);
    throw err;
  }
  a.on('error', () => {});
  b.on('error', () => {});
  return {
    a,
    b,
    destroy: () => {
      a.destroy();
      b.destroy();
    },
  };
}
