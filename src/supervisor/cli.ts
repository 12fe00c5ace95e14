// Command line: the original's flags plus ours. Every mistake is a UsageError
// (exit 2) with one line saying what is wrong.

import mri from 'mri';
import { DEFAULT_UPSTREAM_URL, MAX_OPEN_STREAMS, PROGRAM_NAME } from '../shared/constants.js';
import { UsageError } from '../shared/errors.js';
import { LOG_LEVELS, type LogLevel } from '../shared/logger.js';
import type { WebSocketLimits } from '../shared/workerConfig.js';
import { POLICY_STRING_FLAGS, POLICY_USAGE, parsePolicyOptions, type PolicyOptions } from './policyOptions.js';

export interface ProxyOptions {
  /** 0 = let the kernel choose. */
  readonly port: number;
  readonly serverInfo: string | null;
  readonly httpShutdown: boolean;
  readonly upstreamUrl: URL;
  readonly logLevel: LogLevel;
  readonly dumpDir: string | null;
  readonly dumpMaxBytes: number;
  readonly maxBodyBytes: number;
  readonly maxConcurrent: number;
  readonly upstreamTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly uid: string | undefined;
  readonly gid: string | undefined;
  readonly allowWeakerSandbox: boolean;
  readonly checkSandbox: boolean;
  /** --websocket and its limits, or null. */
  readonly webSocket: WebSocketLimits | null;
  /** Client token, model allow-list, budgets, usage record (policyOptions.ts). */
  readonly policy: PolicyOptions;
}

export type Command = { readonly kind: 'run'; readonly options: ProxyOptions } | { readonly kind: 'help' } | { readonly kind: 'version' };

export const USAGE = `Usage: ${PROGRAM_NAME} [OPTIONS] < key

Reads an API key from the first line of stdin and serves POST /v1/responses on
127.0.0.1, forwarding it upstream with "Authorization: Bearer <key>".
Every other request is answered 403.

Options:
  --port <PORT>          Port to bind on 127.0.0.1 (default: ephemeral)
  --server-info <FILE>   Write {"port":<PORT>,"pid":<PID>} to FILE once listening
  --http-shutdown        Enable GET /shutdown to stop the proxy (exit 0)
  --upstream-url <URL>   Absolute http(s) URL to forward to
                         (default: ${DEFAULT_UPSTREAM_URL})
  --dump-dir <DIR>       Write each request/response pair as JSON files into DIR
  --dump-max-bytes <N>   Keep at most N bytes of each dumped body (default: 16777216)
  --max-body-bytes <N>   Answer 413 to request bodies over N bytes (default: 67108864)
  --max-concurrent <N>   Answer 503 beyond N open requests and WebSockets (default: 256)
  --websocket            Also relay the Responses API WebSocket mode: a GET
                         /v1/responses upgrade opens a WebSocket to the upstream
                         URL (ws/wss), the key injected the same way
  --ws-max-message-bytes <N>
                         Close a WebSocket (1009) whose peer sends a message over
                         N bytes (default: 67108864)
  --ws-idle-timeout <S>  Close a WebSocket (1001) after S seconds without a message
                         either way (default: 300)
  --upstream-timeout <S> Seconds to wait for the upstream's response headers, and
                         between body chunks (default: 300)
  --shutdown-timeout <S> Seconds in-flight requests may take to finish after
                         SIGTERM, SIGINT or GET /shutdown (default: 10)
  --uid <USER|UID>       Run the worker as this user (as root, default: nobody)
  --gid <GROUP|GID>      Run the worker with this group (default: the user's group)
  --allow-weaker-sandbox Start even if a sandbox layer cannot be installed (logged)
  --check-sandbox        Start a worker, print the sandbox layers in force, exit
                         0 if all are, 1 if not (no key is read)
${POLICY_USAGE}  --log-level <LEVEL>    ${LOG_LEVELS.join(', ')} (default: info)
  -h, --help             Print this help
  -V, --version          Print the version
`;

const STRING_FLAGS = [
  'port',
  'server-info',
  'upstream-url',
  'log-level',
  'dump-dir',
  'dump-max-bytes',
  'max-body-bytes',
  'max-concurrent',
  'upstream-timeout',
  'shutdown-timeout',
  'uid',
  'gid',
  'ws-max-message-bytes',
  'ws-idle-timeout',
  ...POLICY_STRING_FLAGS,
] as const;
const DEFAULT_DUMP_MAX_BYTES = 16 * 1024 * 1024;
const BOOLEAN_FLAGS = ['http-shutdown', 'allow-weaker-sandbox', 'check-sandbox', 'websocket', 'help', 'version'] as const;

/** `--port -1` means the value -1, not a flag named 1: join such pairs before mri sees them. */
function joinDashValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const next = argv[i + 1];
    if ((STRING_FLAGS as readonly string[]).includes(arg.slice(2)) && arg.startsWith('--') && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

export function parseCommandLine(argv: readonly string[]): Command {
  let unknown: string | null = null;
  const args = mri(joinDashValues(argv), {
    string: [...STRING_FLAGS],
    boolean: [...BOOLEAN_FLAGS],
    // mri's strict mode knows a flag only by its alias entry, so list them all.
    alias: { help: 'h', version: 'V', ...Object.fromEntries([...STRING_FLAGS, ...BOOLEAN_FLAGS.slice(0, 4)].map((f) => [f, []])) },
    unknown: (flag) => {
      unknown = flag;
    },
  });
  if (unknown !== null) throw new UsageError(`unexpected argument '${unknown}' found; see --help`);
  if (args._.length > 0) throw new UsageError(`unexpected argument '${String(args._[0])}' found; see --help`);
  if (args.help === true) return { kind: 'help' };
  if (args.version === true) return { kind: 'version' };

  const one = (name: (typeof STRING_FLAGS)[number]): string | undefined => {
    const value: unknown = args[name];
    if (value === undefined) return undefined;
    if (Array.isArray(value)) throw new UsageError(`--${name} was given more than once`);
    const text = String(value);
    if (text === '') throw new UsageError(`--${name} needs a value; see --help`);
    return text;
  };

  return {
    kind: 'run',
    options: {
      port: parsePort(one('port')),
      serverInfo: one('server-info') ?? null,
      httpShutdown: args['http-shutdown'] === true,
      upstreamUrl: parseUpstreamUrl(one('upstream-url') ?? DEFAULT_UPSTREAM_URL),
      logLevel: parseLogLevel(one('log-level') ?? 'info'),
      dumpDir: one('dump-dir') ?? null,
      dumpMaxBytes: parseCount('dump-max-bytes', one('dump-max-bytes'), DEFAULT_DUMP_MAX_BYTES, 0),
      maxBodyBytes: parseCount('max-body-bytes', one('max-body-bytes'), 64 * 1024 * 1024, 0),
      maxConcurrent: parseCount('max-concurrent', one('max-concurrent'), 256, 1, MAX_OPEN_STREAMS),
      upstreamTimeoutMs: parseSeconds('upstream-timeout', one('upstream-timeout'), 300),
      shutdownTimeoutMs: parseSeconds('shutdown-timeout', one('shutdown-timeout'), 10),
      uid: one('uid'),
      gid: one('gid'),
      allowWeakerSandbox: args['allow-weaker-sandbox'] === true,
      checkSandbox: args['check-sandbox'] === true,
      webSocket: parseWebSocket(args.websocket === true, one('ws-max-message-bytes'), one('ws-idle-timeout')),
      policy: parsePolicyOptions((name) => args[name] as unknown),
    },
  };
}

function parseWebSocket(enabled: boolean, maxMessageBytes: string | undefined, idleTimeout: string | undefined): WebSocketLimits | null {
  const limits = {
    maxMessageBytes: parseCount('ws-max-message-bytes', maxMessageBytes, 64 * 1024 * 1024, 1),
    idleTimeoutMs: parseSeconds('ws-idle-timeout', idleTimeout, 300),
  };
  if (enabled) return limits;
  if (maxMessageBytes !== undefined || idleTimeout !== undefined) throw new UsageError(`--ws-max-message-bytes and --ws-idle-timeout need --websocket`);
  return null;
}

function parsePort(text: string | undefined): number {
  if (text === undefined) return 0;
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`invalid value '${text}' for '--port <PORT>': expected a number from 0 to 65535`);
  return port;
}

function parseCount(flag: string, text: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (text === undefined) return fallback;
  const n = /^\d{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`invalid value '${text}' for '--${flag} <N>': expected a whole number from ${min} to ${max}`);
  return n;
}

function parseSeconds(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback * 1000;
  const seconds = /^\d{1,7}(\.\d{1,3})?$/.test(text) ? Number(text) : NaN;
  if (!(seconds > 0)) throw new UsageError(`invalid value '${text}' for '--${flag} <SECONDS>': expected a positive number of seconds`);
  return Math.round(seconds * 1000);
}

function parseUpstreamUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid value '${text}' for '--upstream-url <URL>': expected an absolute http:// or https:// URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid value '${text}' for '--upstream-url <URL>': scheme must be http or https, not ${url.protocol.slice(0, -1)}`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new UsageError(`invalid value for '--upstream-url <URL>': credentials in the URL are not allowed (the key comes from stdin)`);
  }
  url.hash = '';
  return url;
}

function parseLogLevel(text: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(text)) {
    throw new UsageError(`invalid value '${text}' for '--log-level <LEVEL>': expected one of ${LOG_LEVELS.join(', ')}`);
  }
  return text as LogLevel;
}
