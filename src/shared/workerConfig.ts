// The worker's configuration, sent by the supervisor as the CONFIG frame: the
// values of the flags the worker reads (flags.ts) and what the supervisor
// works out at startup. The worker gets nothing from argv or its (empty)
// environment, and takes a CONFIG only if the flag table allows every field.

import { ProtocolError } from './errors.js';
import { BOOLEAN_RULE, WORKER_FLAG_ENTRIES, isOption, isSection } from './flags.js';
import type { ConfigRule, WorkerFlagValues } from './flags.js';
import { MESSAGE_SPECS, Msg } from './ipcProtocol.js';

/** What the supervisor adds to the flags' values. */
interface StartupFields {
  /** Capabilities are expected (--uid 0 was asked for explicitly). */
  readonly allowCapabilities: boolean;
  /** What the worker may read (its code and dependencies): Landlock's rules, as the permission model's flags. */
  readonly readPaths: readonly string[];
}

/** dumpDir is the absolute directory the supervisor opened, or null (the worker only learns that dumps are on). */
export type WorkerConfig = WorkerFlagValues & StartupFields;

type Rules = ReadonlyMap<string, ConfigRule<unknown>>;

const MAX_READ_PATHS = 8;
const PATH_MAX = 4096;

/** A few absolute paths, none with a character JSON escapes: so the widest CONFIG stays within its frame. */
const READ_PATHS: ConfigRule<readonly string[]> = {
  accepts: (value): value is readonly string[] =>
    Array.isArray(value) && value.length <= MAX_READ_PATHS && value.every(isPlainPath),
  widest: Array.from({ length: MAX_READ_PATHS }, () => '/'.padEnd(PATH_MAX, 'a')),
};

function isPlainPath(value: unknown): boolean {
  // eslint-disable-next-line no-control-regex
  return typeof value === 'string' && /^\/[^\x00-\x1f"\\\x7f]*$/.test(value) && Buffer.byteLength(value) <= PATH_MAX;
}

function nullable(rule: ConfigRule<unknown>): ConfigRule<unknown> {
  return { accepts: (value): value is unknown => value === null || rule.accepts(value), widest: rule.widest };
}

/** A list of at most `max` values the rule accepts. */
function listOf(rule: ConfigRule<unknown>, max: number): ConfigRule<unknown> {
  return {
    accepts: (value): value is unknown => Array.isArray(value) && value.length <= max && value.every(rule.accepts),
    widest: Array.from({ length: max }, () => rule.widest),
  };
}

/** An object holding exactly these fields, each one its rule accepts. */
function fields(rules: Rules): ConfigRule<unknown> {
  return { accepts: (value): value is unknown => faultIn(value, rules) === null, widest: widestOf(rules) };
}

/** The first field `value` has wrong ('' when it is not an object at all), or null if none. */
function faultIn(value: unknown, rules: Rules): string | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return '';
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) if (!rules.has(key)) return key;
  for (const [key, rule] of rules) if (!rule.accepts(record[key])) return key;
  return null;
}

function widestOf(rules: Rules): Record<string, unknown> {
  return Object.fromEntries([...rules].map(([key, rule]) => [key, rule.widest]));
}

const CONFIG_RULES: Rules = new Map<string, ConfigRule<unknown>>([
  ...WORKER_FLAG_ENTRIES.map(([key, entry]): [string, ConfigRule<unknown>] => {
    if (isSection(entry)) {
      const members = Object.entries(entry.members);
      return [key, nullable(fields(new Map(members.map(([member, option]) => [member, option.kind]))))];
    }
    if (isOption(entry) && entry.repeatable !== undefined) return [key, nullable(listOf(entry.kind, entry.repeatable))];
    if (isOption(entry)) {
      const optional = entry.default === null && entry.derived === undefined;
      return [key, optional ? nullable(entry.kind) : entry.kind];
    }
    return [key, BOOLEAN_RULE];
  }),
  ['allowCapabilities', BOOLEAN_RULE],
  ['readPaths', READ_PATHS],
]);

/** The longest CONFIG the flags' bounds allow; it must fit the frame the worker's decoder accepts. */
export const WIDEST_CONFIG_BYTES = Buffer.byteLength(JSON.stringify(widestOf(CONFIG_RULES)));
const configLimit = MESSAGE_SPECS.get(Msg.CONFIG)?.maxPayload ?? 0;
if (WIDEST_CONFIG_BYTES > configLimit) {
  throw new Error(`the flags allow a CONFIG of ${WIDEST_CONFIG_BYTES} bytes, over its frame limit of ${configLimit}`);
}

/** The CONFIG for these flags; `startup` holds what the supervisor worked out, dumpDir the directory it opened. */
export function workerConfigFor(
  flags: WorkerFlagValues,
  startup: StartupFields & Pick<WorkerConfig, 'dumpDir'>,
): WorkerConfig {
  const values = Object.fromEntries(WORKER_FLAG_ENTRIES.map(([key]) => [key, flags[key]])) as WorkerFlagValues;
  return { ...values, ...startup };
}

export function encodeWorkerConfig(config: WorkerConfig): Buffer {
  return Buffer.from(JSON.stringify(config), 'utf8');
}

export function decodeWorkerConfig(payload: Buffer): WorkerConfig {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError('CONFIG is not JSON');
  }
  const fault = faultIn(value, CONFIG_RULES);
  if (fault === '') throw new ProtocolError('CONFIG is not an object');
  if (fault !== null) throw new ProtocolError(`CONFIG.${fault} is missing, unknown or out of bounds`);
  return value as WorkerConfig;
}
