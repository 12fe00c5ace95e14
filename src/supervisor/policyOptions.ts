// The command-line flags of the client policy: --client-token-file,
// --client-token-owner, --allow-model, --max-requests,
// --max-requests-per-minute, --max-tokens, --usage-file. Each is off by
// default; without any of them the proxy behaves as the original.

import { UsageError } from '../shared/errors.js';
import type { BudgetLimits } from './budget.js';

export interface PolicyOptions {
  readonly clientTokenFile: string | null;
  /** USER|UID; undefined: the user running the proxy. */
  readonly clientTokenOwner: string | undefined;
  /** --allow-model patterns (enforced by the worker), or null. */
  readonly allowModels: readonly string[] | null;
  readonly limits: BudgetLimits;
  readonly usageFile: string | null;
}

export const POLICY_STRING_FLAGS = [
  'client-token-file',
  'client-token-owner',
  'allow-model',
  'max-requests',
  'max-requests-per-minute',
  'max-tokens',
  'usage-file',
] as const;

export const POLICY_USAGE = `  --client-token-file <FILE>
                         Make a random client token, write it to FILE (created
                         new, mode 0400) and require "Authorization: Bearer
                         <token>" of every request; FILE is removed at exit
  --client-token-owner <USER|UID>
                         Owner of the token file and its primary group
                         (default: the user running the proxy)
  --allow-model <PATTERN>
                         Forward only requests whose "model" matches PATTERN
                         (exact, or with * matching any run); repeatable
  --max-requests <N>     Answer 429 after N forwarded requests and WebSocket messages
  --max-requests-per-minute <N>
                         Answer 429 (Retry-After) beyond N requests in any 60 s
  --max-tokens <N>       Answer 429 once the upstream reported N tokens used
  --usage-file <FILE>    Keep a JSON record of requests, refusals and tokens in FILE
`;

const MAX_PATTERN = 256;

type FlagValue = (name: (typeof POLICY_STRING_FLAGS)[number]) => unknown;

export function parsePolicyOptions(value: FlagValue): PolicyOptions {
  const one = (name: (typeof POLICY_STRING_FLAGS)[number]): string | undefined => {
    const v = value(name);
    if (v === undefined) return undefined;
    if (Array.isArray(v)) throw new UsageError(`--${name} was given more than once`);
    if (String(v) === '') throw new UsageError(`--${name} needs a value; see --help`);
    return String(v);
  };
  const limit = (name: 'max-requests' | 'max-requests-per-minute' | 'max-tokens', max: number): number | null => {
    const text = one(name);
    if (text === undefined) return null;
    const n = /^\d{1,15}$/.test(text) ? Number(text) : NaN;
    if (!(n >= 1 && n <= max)) {
      throw new UsageError(`invalid value '${text}' for '--${name} <N>': expected a whole number from 1 to ${max}`);
    }
    return n;
  };
  const clientTokenFile = one('client-token-file') ?? null;
  const clientTokenOwner = one('client-token-owner');
  if (clientTokenOwner !== undefined && clientTokenFile === null) {
    throw new UsageError('--client-token-owner needs --client-token-file');
  }
  return {
    clientTokenFile,
    clientTokenOwner,
    allowModels: parsePatterns(value('allow-model')),
    limits: {
      maxRequests: limit('max-requests', Number.MAX_SAFE_INTEGER),
      // The window keeps one timestamp per request.
      maxRequestsPerMinute: limit('max-requests-per-minute', 1_000_000),
      maxTokens: limit('max-tokens', Number.MAX_SAFE_INTEGER),
    },
    usageFile: one('usage-file') ?? null,
  };
}

function parsePatterns(raw: unknown): string[] | null {
  if (raw === undefined) return null;
  const patterns = (Array.isArray(raw) ? raw : [raw]).map(String);
  for (const p of patterns) {
    if (p === '' || p.length > MAX_PATTERN || ![...p].every((ch) => ch >= ' ' && ch !== '\x7f')) {
      throw new UsageError(
        `invalid value '${p.slice(0, MAX_PATTERN)}' for '--allow-model <PATTERN>': ` +
          `expected a model name of 1 to ${MAX_PATTERN} printable characters, * matching any run`,
      );
    }
  }
  return patterns;
}

/** Whether the supervisor has anything to enforce or record. */
export function policyInForce(options: PolicyOptions): boolean {
  const { limits } = options;
  return (
    options.clientTokenFile !== null ||
    options.allowModels !== null ||
    options.usageFile !== null ||
    limits.maxRequests !== null ||
    limits.maxRequestsPerMinute !== null ||
    limits.maxTokens !== null
  );
}
