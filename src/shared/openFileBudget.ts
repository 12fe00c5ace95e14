// How many open streams an open-file limit (RLIMIT_NOFILE) holds. Each open
// request or WebSocket holds a descriptor in each process: the worker its
// client's connection, the supervisor its upstream connection. Both processes
// have the same limit (the worker inherits it), so one budget serves both.

import { MAX_OPEN_STREAMS } from './constants.js';

/** What a process holds besides its streams: Node's own, stdio, IPC, the listening socket, log and dump files. */
export const RESERVED_FDS = 128;
/**
 * Counted per stream: its connection, and a quarter more for connections that
 * hold no stream (idle keep-alive ones, those answered 503, pooled upstream ones).
 */
export const FDS_PER_STREAM = 1.25;
/** A limit that holds fewer streams than this is refused at startup rather than served with. */
export const MIN_STREAMS = 16;

/** The most streams `openFiles` descriptors hold, at most MAX_OPEN_STREAMS (0 when too few). */
export function streamsFor(openFiles: number): number {
  return Math.max(0, Math.min(MAX_OPEN_STREAMS, Math.floor((openFiles - RESERVED_FDS) / FDS_PER_STREAM)));
}

/** The open-file limit that holds `streams` streams. */
export function openFilesFor(streams: number): number {
  return RESERVED_FDS + Math.ceil(streams * FDS_PER_STREAM);
}

/** How the default --max-concurrent is worked out, for --help. */
export const DERIVED_STREAMS_HELP =
  'from the open-file limit,\n' + `(ulimit -n - ${RESERVED_FDS}) / ${FDS_PER_STREAM}, at most ${MAX_OPEN_STREAMS}`;
