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
