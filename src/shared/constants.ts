// Facts both processes agree on. Values taken from the original proxy are marked.

export const PROGRAM_NAME = 'responses-api-proxy';

/** The original's default upstream. */
export const DEFAULT_UPSTREAM_URL = 'https://api.openai.com/v1/responses';

/** The only route that is forwarded (exact request-target, no query string). */
export const RESPONSES_PATH = '/v1/responses';
export const SHUTDOWN_PATH = '/shutdown';

/** Original: "Bearer " + key must fit a 1024-byte buffer with a byte to spare. */
export const AUTH_BUFFER_SIZE = 1024;
export const AUTH_SCHEME_PREFIX = 'Bearer ';

/** Where the worker finds its inherited descriptors (stdio indexes of the spawn). */
export const WORKER_LISTEN_FD = 3;
export const WORKER_IPC_FD = 4;

/**
 * Hard cap on concurrently open streams: --max-concurrent is at most this, and
 * the supervisor takes more open streams from the worker as a protocol violation.
 */
export const MAX_OPEN_STREAMS = 16384;

/**
 * What the worker's sandbox reads about itself before Landlock closes /proc:
 * its capabilities, and its descriptors (an io_uring instance must not be
 * among them). Allowed under Node's permission model and Landlock alike.
 */
export const WORKER_SANDBOX_READ_PATHS: readonly string[] = ['/proc/self/status', '/proc/self/fd'];

/** A WebSocket closing handshake not finished by then is abandoned (both hops: client and upstream). */
export const WEBSOCKET_CLOSE_TIMEOUT_MS = 5_000;

/**
 * V8 flags for both processes: full marking starts on the heap's own growth.
 * By default V8 also counts every off-heap buffer allocated since the last full
 * collection against the old generation's limit, so relaying bytes (each socket
 * read a new buffer) started a full collection after every few MB. Off-heap
 * memory still starts one through V8's own external-memory limit.
 */
export const MARKING_TRIGGER_FLAGS: readonly string[] = [
  '--incremental-marking-soft-trigger=50',
  '--incremental-marking-hard-trigger=80',
];
