// Every command-line flag, declared once: its name, value, default, bounds,
// help text and which process reads it. The supervisor's parser and --help
// (supervisor/cli.ts) and the worker's CONFIG with its validation
// (workerConfig.ts) are made from this table: a flag is added here and nowhere
// else, besides the code that acts on it.

import { DEFAULT_UPSTREAM_URL, MAX_OPEN_STREAMS } from './constants.js';
import { UsageError } from './errors.js';
import { LOG_LEVELS, type LogLevel } from './logger.js';
import { DERIVED_STREAMS_HELP } from './openFileBudget.js';

/** How a flag's text becomes its value; a bad text is a UsageError naming `--flag`. */
interface Kind<T> {
  parse(text: string, flag: string): T;
}

/** How the worker re-checks a value it receives in CONFIG. */
export interface ConfigRule<T> {
  accepts(value: unknown): value is T;
  /** The value whose JSON is longest: CONFIG must fit its frame even with these. */
  readonly widest: T;
}

/** The kind of a value the worker reads: it travels in CONFIG. */
type ConfigKind<T> = Kind<T> & ConfigRule<T>;

/** Who reads a flag's value. The worker's (worker, both) travel in CONFIG. */
type Reader = 'supervisor' | 'worker' | 'both';

interface Described {
  /** The name after `--`. */
  readonly flag: string;
  /** --help text; a newline starts another help line, `{default}` shows the default. */
  readonly help: string;
}

/** A flag without a value: true when given. */
export type Switch = Described;

/** A flag with a value. */
export interface Option<K extends Kind<unknown> = Kind<unknown>> extends Described {
  /** Shown in --help as `<arg>`. */
  readonly arg: string;
  readonly kind: K;
  /** As it would be typed (a number for a number); null: no value unless given (or derived). */
  readonly default: string | number | null;
  /**
   * With default null: the supervisor works the value out at startup when it is
   * not given; this says how, for --help. The worker always gets a value.
   */
  readonly derived?: string;
  /** May be given up to this many times; its value is then the list (or null when not given). */
  readonly repeatable?: number;
  /** The key of another flag this one needs. */
  readonly needs?: string;
}

/** A switch with flags of its own: its value is theirs, or null when it is off (they need it). */
export interface Section<K extends Kind<unknown> = Kind<unknown>> extends Described {
  readonly members: Readonly<Record<string, Option<K>>>;
  /** The switch and every member go together: any of them without the rest is a usage error naming the rest. */
  readonly together?: true;
}

type Entry =
  | ((Switch | Option | Section) & { readonly reader: 'supervisor' })
  | ((Switch | Option<ConfigKind<unknown>> | Section<ConfigKind<unknown>>) & {
      readonly reader: Exclude<Reader, 'supervisor'>;
    });

/** The kernel refuses longer paths, so no text a flag carries to the worker (a path) is longer. */
const PATH_MAX = 4096;
/** Node's timers take at most this many milliseconds; a longer delay fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A bad value, named as `--flag <ARG>` in its one-line message. */
function invalid(value: string, label: string, expected: string): UsageError {
  return new UsageError(`invalid value '${value}' for '${label}': ${expected}`);
}

export const BOOLEAN_RULE: ConfigRule<boolean> = {
  accepts: (value): value is boolean => typeof value === 'boolean',
  widest: false,
};

const text: ConfigKind<string> = {
  parse: (value) => value,
  accepts: (value): value is string => typeof value === 'string' && Buffer.byteLength(value) <= PATH_MAX,
  // JSON writes a control character as six bytes.
  widest: '\u0001'.repeat(PATH_MAX),
};

/** A whole number from min to max. */
export function count(min: number, max = Number.MAX_SAFE_INTEGER): ConfigKind<number> {
  return {
    parse(value, flag) {
      const n = /^\d{1,16}$/.test(value) ? Number(value) : NaN;
      if (Number.isSafeInteger(n) && n >= min && n <= max) return n;
      throw invalid(value, `--${flag} <N>`, `expected a whole number from ${min} to ${max}`);
    },
    accepts: (value): value is number =>
      typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max,
    widest: max,
  };
}

const milliseconds = count(1, MAX_TIMER_MS);

/** Typed in seconds (up to three decimals), held in milliseconds. */
const seconds: ConfigKind<number> = {
  parse(value, flag) {
    const s = /^\d{1,7}(\.\d{1,3})?$/.test(value) ? Number(value) : NaN;
    if (!(s > 0)) throw invalid(value, `--${flag} <SECONDS>`, 'expected a positive number of seconds');
    const ms = Math.round(s * 1000);
    if (ms > MAX_TIMER_MS) throw invalid(value, `--${flag} <SECONDS>`, `at most ${MAX_TIMER_MS / 1000} seconds`);
    return ms;
  },
  accepts: milliseconds.accepts,
  widest: milliseconds.widest,
};

const port: Kind<number> = {
  parse(value, flag) {
    const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
    if (!(n >= 0 && n <= 65535)) throw invalid(value, `--${flag} <PORT>`, 'expected a number from 0 to 65535');
    return n;
  },
};

const httpUrl: Kind<URL> = {
  parse(value, flag) {
    const label = `--${flag} <URL>`;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw invalid(value, label, 'expected an absolute http:// or https:// URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw invalid(value, label, `scheme must be http or https, not ${url.protocol.slice(0, -1)}`);
    }
    if (url.username !== '' || url.password !== '') {
      // The text is not echoed: it holds a credential.
      const why = 'credentials in the URL are not allowed (the key comes from stdin)';
      throw new UsageError(`invalid value for '${label}': ${why}`);
    }
    url.hash = '';
    return url;
  },
};

const logLevel: ConfigKind<LogLevel> = {
  parse(value, flag) {
    if (!logLevel.accepts(value)) throw invalid(value, `--${flag} <LEVEL>`, `expected one of ${LOG_LEVELS.join(', ')}`);
    return value;
  },
  accepts: (value): value is LogLevel => (LOG_LEVELS as readonly unknown[]).includes(value),
  widest: LOG_LEVELS.reduce((a, b) => (b.length > a.length ? b : a)),
};

const MAX_PATTERN = 256;

/** A model name with `*` matching any run: printable characters only. */
const modelPattern: ConfigKind<string> = {
  parse(value, flag) {
    const text: string = value;
    if (modelPattern.accepts(value)) return value;
    const expected = `expected a model name of 1 to ${MAX_PATTERN} printable characters, * matching any run`;
    throw invalid(text.slice(0, MAX_PATTERN), `--${flag} <PATTERN>`, expected);
  },
  accepts: (value): value is string =>
    // eslint-disable-next-line no-control-regex
    typeof value === 'string' && value.length >= 1 && value.length <= MAX_PATTERN && /^[^\x00-\x1f\x7f]+$/.test(value),
  // JSON keeps a three-byte character as it is.
  widest: '\u20ac'.repeat(MAX_PATTERN),
};

/** Any text, even empty: what it must be is --github-oidc's rule (workloadIdentityOptions.ts), with its messages. */
const identityText: Kind<string> = { parse: (value) => value };

/** Keys are the names the values go by in both processes; --help lists the flags in this order. */
const FLAGS = {
  port: {
    flag: 'port',
    arg: 'PORT',
    kind: port,
    default: 0,
    reader: 'supervisor',
    help: 'Port to bind on 127.0.0.1 (default: ephemeral)',
  },
  serverInfo: {
    flag: 'server-info',
    arg: 'FILE',
    kind: text,
    default: null,
    reader: 'supervisor',
    help: 'Write {"port":<PORT>,"pid":<PID>} to FILE once listening',
  },
  httpShutdown: {
    flag: 'http-shutdown',
    reader: 'both',
    help: 'Enable GET /shutdown to stop the proxy (exit 0)',
  },
  upstreamUrl: {
    flag: 'upstream-url',
    arg: 'URL',
    kind: httpUrl,
    default: DEFAULT_UPSTREAM_URL,
    reader: 'supervisor',
    help: 'Absolute http(s) URL to forward to\n(default: {default})',
  },
  dumpDir: {
    flag: 'dump-dir',
    arg: 'DIR',
    kind: text,
    default: null,
    reader: 'both',
    help: 'Write each request/response pair as JSON files into DIR',
  },
  dumpMaxBytes: {
    flag: 'dump-max-bytes',
    arg: 'N',
    kind: count(0),
    default: 16 * 1024 * 1024,
    reader: 'worker',
    help: 'Keep at most N bytes of each dumped body (default: {default})',
  },
  maxBodyBytes: {
    flag: 'max-body-bytes',
    arg: 'N',
    kind: count(0),
    default: 64 * 1024 * 1024,
    reader: 'worker',
    help: 'Answer 413 to request bodies over N bytes (default: {default})',
  },
  maxOpenStreams: {
    flag: 'max-concurrent',
    arg: 'N',
    kind: count(1, MAX_OPEN_STREAMS),
    default: null,
    reader: 'worker',
    derived: DERIVED_STREAMS_HELP,
    help: 'Answer 503 beyond N open requests and WebSockets\n(default: {default})',
  },
  webSocket: {
    flag: 'websocket',
    reader: 'both',
    help:
      'Also relay the Responses API WebSocket mode: a GET\n' +
      '/v1/responses upgrade opens a WebSocket to the upstream\n' +
      'URL (ws/wss), the key injected the same way',
    members: {
      maxMessageBytes: {
        flag: 'ws-max-message-bytes',
        arg: 'N',
        kind: count(1),
        default: 64 * 1024 * 1024,
        help: 'Close a WebSocket (1009) whose peer sends a message over\nN bytes (default: {default})',
      },
      idleTimeoutMs: {
        flag: 'ws-idle-timeout',
        arg: 'S',
        kind: seconds,
        default: 300,
        help: 'Close a WebSocket (1001) after S seconds without a message\neither way (default: {default})',
      },
    },
  },
  upstreamTimeoutMs: {
    flag: 'upstream-timeout',
    arg: 'S',
    kind: seconds,
    default: 300,
    reader: 'supervisor',
    help: "Seconds to wait for the upstream's response headers, and\nbetween body chunks (default: {default})",
  },
  shutdownTimeoutMs: {
    flag: 'shutdown-timeout',
    arg: 'S',
    kind: seconds,
    default: 10,
    reader: 'supervisor',
    help: 'Seconds in-flight requests may take to finish after\nSIGTERM, SIGINT or GET /shutdown (default: {default})',
  },
  uid: {
    flag: 'uid',
    arg: 'USER|UID',
    kind: text,
    default: null,
    reader: 'supervisor',
    help: 'Run the worker as this user (as root, default: a leased uid of its own)',
  },
  gid: {
    flag: 'gid',
    arg: 'GROUP|GID',
    kind: text,
    default: null,
    reader: 'supervisor',
    help: "Run the worker with this group (default: the user's group)",
  },
  allowWeakerSandbox: {
    flag: 'allow-weaker-sandbox',
    reader: 'both',
    help: 'Start even if a sandbox layer cannot be installed (logged)',
  },
  checkSandbox: {
    flag: 'check-sandbox',
    reader: 'supervisor',
    help: 'Start a worker, print the sandbox layers in force, exit\n0 if all are, 1 if not (no key is read)',
  },
  workloadIdentity: {
    flag: 'github-oidc',
    reader: 'supervisor',
    together: true,
    help:
      'Authenticate with GitHub Actions workload identity: stdin\n' +
      "carries the runner's ACTIONS_ID_TOKEN_REQUEST_TOKEN, traded\n" +
      'for short-lived OpenAI access tokens, renewed in the\n' +
      'background (needs the four flags below)',
    members: {
      audience: {
        flag: 'oidc-audience',
        arg: 'AUDIENCE',
        kind: identityText,
        default: null,
        help: 'Audience configured on the OpenAI workload identity provider',
      },
      identityProviderId: {
        flag: 'identity-provider-id',
        arg: 'ID',
        kind: identityText,
        default: null,
        help: 'OpenAI workload identity provider ID',
      },
      serviceAccountId: {
        flag: 'service-account-id',
        arg: 'ID',
        kind: identityText,
        default: null,
        help: 'OpenAI service account ID selected by the provider mapping',
      },
      requestUrl: {
        flag: 'github-oidc-request-url',
        arg: 'URL',
        kind: identityText,
        default: null,
        help:
          "The runner's ACTIONS_ID_TOKEN_REQUEST_URL (https); take it\n" +
          "from the runner's environment, never from workflow input",
      },
    },
  },
  clientTokenFile: {
    flag: 'client-token-file',
    arg: 'FILE',
    kind: text,
    default: null,
    reader: 'supervisor',
    help:
      'Make a random client token, write it to FILE (created\n' +
      'new, mode 0400) and require "Authorization: Bearer\n' +
      '<token>" of every request; FILE is removed at exit',
  },
  clientTokenOwner: {
    flag: 'client-token-owner',
    arg: 'USER|UID',
    kind: text,
    default: null,
    reader: 'supervisor',
    needs: 'clientTokenFile',
    help: 'Owner of the token file and its primary group\n(default: the user running the proxy)',
  },
  allowModels: {
    flag: 'allow-model',
    arg: 'PATTERN',
    kind: modelPattern,
    default: null,
    reader: 'worker',
    repeatable: 32,
    help: 'Forward only requests whose "model" matches PATTERN\n(exact, or with * matching any run); repeatable',
  },
  maxRequests: {
    flag: 'max-requests',
    arg: 'N',
    kind: count(1),
    default: null,
    reader: 'supervisor',
    help: 'Answer 429 after N forwarded requests and WebSocket messages',
  },
  maxRequestsPerMinute: {
    // The window keeps one timestamp per request.
    flag: 'max-requests-per-minute',
    arg: 'N',
    kind: count(1, 1_000_000),
    default: null,
    reader: 'supervisor',
    help: 'Answer 429 (Retry-After) beyond N requests in any 60 s',
  },
  maxTokens: {
    flag: 'max-tokens',
    arg: 'N',
    kind: count(1),
    default: null,
    reader: 'supervisor',
    help: 'Answer 429 once the upstream reported N tokens used',
  },
  usageFile: {
    flag: 'usage-file',
    arg: 'FILE',
    kind: text,
    default: null,
    reader: 'supervisor',
    help: 'Keep a JSON record of requests, refusals and tokens in FILE',
  },
  logLevel: {
    flag: 'log-level',
    arg: 'LEVEL',
    kind: logLevel,
    default: 'info',
    reader: 'both',
    help: `${LOG_LEVELS.join(', ')} (default: {default})`,
  },
} as const satisfies Readonly<Record<string, Entry>>;

type Table = typeof FLAGS;

type ValueOf<E> = E extends { readonly members: infer M; readonly together: true }
  ? { readonly [K in keyof M]: M[K] extends { readonly kind: Kind<infer T> } ? T : never } | null
  : E extends { readonly members: infer M }
    ? { readonly [K in keyof M]: ValueOf<M[K]> } | null
    : E extends { readonly kind: Kind<infer T>; readonly repeatable: number }
      ? readonly T[] | null
      : E extends { readonly kind: Kind<infer T>; readonly default: infer D }
        ? T | (D extends null ? null : never)
        : boolean;

/** Every flag's value, as the command line gave it or its default. */
export type FlagValues = { readonly [K in keyof Table]: ValueOf<Table[K]> };

type WorkerFlagKey = { [K in keyof Table]: Table[K]['reader'] extends 'supervisor' ? never : K }[keyof Table];

/** Flags whose value the supervisor works out when it is not given. */
type DerivedKey = { [K in keyof Table]: Table[K] extends { readonly derived: string } ? K : never }[keyof Table];

/** The values of the flags the worker reads, the derived ones worked out. */
export type WorkerFlagValues = Omit<Pick<FlagValues, WorkerFlagKey>, DerivedKey> & {
  readonly [K in DerivedKey & WorkerFlagKey]: NonNullable<FlagValues[K]>;
};

/** The table's entries in --help order. */
export const FLAG_ENTRIES = Object.entries(FLAGS) as readonly (readonly [keyof Table, Entry])[];

type WorkerEntry = Exclude<Entry, { readonly reader: 'supervisor' }>;

/** The entries of the flags the worker reads. */
export const WORKER_FLAG_ENTRIES = FLAG_ENTRIES.filter(
  ([, entry]) => entry.reader !== 'supervisor',
) as readonly (readonly [WorkerFlagKey, WorkerEntry])[];

/** Every flag in --help order, a section's members after its switch. */
export const FLAG_LIST = FLAG_ENTRIES.flatMap(([, entry]): (Switch | Option)[] =>
  isSection(entry) ? [entry, ...Object.values(entry.members)] : [entry],
);

export function isOption(entry: Switch | Option | Section): entry is Option {
  return 'kind' in entry;
}

export function isSection(entry: Switch | Option | Section): entry is Section {
  return 'members' in entry;
}
