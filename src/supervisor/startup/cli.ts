// Command line: the original's flags plus ours, parsed and listed in --help
// from the flag table (shared/flags.ts). Every mistake is a UsageError (exit 2)
// with one line saying what is wrong.

import mri from 'mri';
import { PROGRAM_NAME } from '../../shared/constants.js';
import { UsageError } from '../../shared/errors.js';
import { FLAG_ENTRIES, FLAG_LIST, isOption, isSection } from '../../shared/flags.js';
import type { FlagValues, Option, Section, Switch } from '../../shared/flags.js';
import type { WorkloadIdentitySettings } from '../credential/workloadIdentity.js';
import { workloadIdentitySettings } from '../credential/workloadIdentityOptions.js';

export type ProxyOptions = Omit<FlagValues, 'workloadIdentity'> & {
  /** --github-oidc and its settings, or null (an API key on stdin). */
  readonly workloadIdentity: WorkloadIdentitySettings | null;
};

export type Command =
  { readonly kind: 'run'; readonly options: ProxyOptions } | { readonly kind: 'help' } | { readonly kind: 'version' };

/** Flags that ask for something else than running the proxy; --help lists them last. */
const COMMANDS = [
  { flag: 'help', short: 'h', help: 'Print this help' },
  { flag: 'version', short: 'V', help: 'Print the version' },
] as const;

const VALUE_FLAGS = FLAG_LIST.filter(isOption).map((entry) => entry.flag);
const SWITCH_FLAGS = FLAG_LIST.filter((entry) => !isOption(entry)).map((entry) => entry.flag);

/** Where help text starts: after the flag, or on the next line when the flag is longer. */
const HELP_COLUMN = 25;

function helpLines(label: string, help: string): string {
  const [first, ...rest] = help.split('\n');
  const indent = ' '.repeat(HELP_COLUMN);
  const fits = label.length <= HELP_COLUMN - 3;
  const head = fits ? `  ${label.padEnd(HELP_COLUMN - 2)}${first}` : `  ${label}\n${indent}${first}`;
  return [head, ...rest.map((line) => indent + line)].join('\n') + '\n';
}

function flagHelp(entry: Switch | Option): string {
  if (!isOption(entry)) return helpLines(`--${entry.flag}`, entry.help);
  const shown = entry.derived ?? String(entry.default);
  return helpLines(`--${entry.flag} <${entry.arg}>`, entry.help.replace('{default}', shown));
}

export const USAGE = `Usage: ${PROGRAM_NAME} [OPTIONS] < key

Reads an API key from the first line of stdin and serves POST /v1/responses on
127.0.0.1, forwarding it upstream with "Authorization: Bearer <key>".
Every other request is answered 403.

Options:
${FLAG_LIST.map(flagHelp).join('')}${COMMANDS.map((c) => helpLines(`-${c.short}, --${c.flag}`, c.help)).join('')}`;

/** `--port -1` means the value -1, not a flag named 1: join such pairs before mri sees them. */
function joinDashValues(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const next = argv[i + 1];
    if (arg.startsWith('--') && VALUE_FLAGS.includes(arg.slice(2)) && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

export function parseCommandLine(argv: readonly string[]): Command {
  // mri reads `--no-dump-dir` as --dump-dir 'false'; no flag here has such a form.
  const negated = argv.find((arg) => /^-+no-/.test(arg));
  if (negated !== undefined) throw new UsageError(`unexpected argument '${negated}' found; see --help`);
  let unknown: string | null = null;
  const args = mri(joinDashValues(argv), {
    string: [...VALUE_FLAGS],
    boolean: [...SWITCH_FLAGS, ...COMMANDS.map((c) => c.flag)],
    // mri's strict mode knows a flag only by its alias entry, so list them all.
    alias: {
      ...Object.fromEntries(COMMANDS.map((c) => [c.flag, c.short])),
      ...Object.fromEntries([...VALUE_FLAGS, ...SWITCH_FLAGS].map((flag) => [flag, []])),
    },
    unknown: (flag) => {
      unknown = flag;
    },
  });
  if (unknown !== null) throw new UsageError(`unexpected argument '${unknown}' found; see --help`);
  if (args._.length > 0) throw new UsageError(`unexpected argument '${String(args._[0])}' found; see --help`);
  /** mri makes a switch given twice an array, which would read as off. */
  const on = (flag: string): boolean => {
    const value: unknown = args[flag];
    if (Array.isArray(value)) throw new UsageError(`--${flag} was given more than once`);
    return value === true;
  };
  if (on('help')) return { kind: 'help' };
  if (on('version')) return { kind: 'version' };

  /** The flag's text; `emptyAllowed` leaves an empty value to the flag's own rule. */
  const given = (flag: string, emptyAllowed = false): string | undefined => {
    const value: unknown = args[flag];
    if (value === undefined) return undefined;
    if (Array.isArray(value)) throw new UsageError(`--${flag} was given more than once`);
    const text = String(value);
    if (text === '' && !emptyAllowed) throw new UsageError(`--${flag} needs a value; see --help`);
    return text;
  };
  const valueOf = (option: Option, emptyAllowed = false): unknown => {
    if (option.repeatable !== undefined) return listOf(option);
    const text = given(option.flag, emptyAllowed) ?? (option.default === null ? undefined : String(option.default));
    return text === undefined ? null : option.kind.parse(text, option.flag);
  };
  const listOf = (option: Option & { repeatable?: number }): unknown[] | null => {
    const value: unknown = args[option.flag];
    if (value === undefined) return null;
    const texts = (Array.isArray(value) ? value : [value]).map(String);
    if (texts.length > (option.repeatable as number)) {
      throw new UsageError(`--${option.flag} was given more than ${option.repeatable} times`);
    }
    if (texts.includes('')) throw new UsageError(`--${option.flag} needs a value; see --help`);
    return texts.map((text) => option.kind.parse(text, option.flag));
  };
  const sectionValue = (section: Section): Record<string, unknown> | null => {
    const members = Object.entries(section.members);
    if (section.together === true) requireTogether(section);
    const values = Object.fromEntries(members.map(([key, option]) => [key, valueOf(option, section.together)]));
    if (on(section.flag)) return values;
    if (members.some(([, option]) => args[option.flag] !== undefined)) {
      throw new UsageError(`${members.map(([, option]) => `--${option.flag}`).join(' and ')} need --${section.flag}`);
    }
    return null;
  };
  /** Either none of the section's flags, or all of them (the original's message names the missing ones). */
  const requireTogether = (section: Section): void => {
    const members = Object.values(section.members);
    const missing = members.filter((option) => args[option.flag] === undefined).map((o) => `--${o.flag} <${o.arg}>`);
    if (!on(section.flag)) missing.push(`--${section.flag}`);
    if (missing.length > 0 && missing.length < members.length + 1) {
      throw new UsageError(`the following required arguments were not provided: ${missing.join(', ')}`);
    }
  };
  const values = Object.fromEntries(
    FLAG_ENTRIES.map(([key, entry]) => {
      if (isSection(entry)) return [key, sectionValue(entry)];
      return [key, isOption(entry) ? valueOf(entry) : on(entry.flag)];
    }),
  ) as FlagValues;
  for (const [key, entry] of FLAG_ENTRIES) {
    if (!isOption(entry) || entry.needs === undefined) continue;
    const needed = FLAG_ENTRIES.find(([other]) => other === entry.needs)?.[1];
    if (values[key] !== null && (values as Record<string, unknown>)[entry.needs] === null && needed !== undefined) {
      throw new UsageError(`--${entry.flag} needs --${needed.flag}`);
    }
  }
  const workloadIdentity = workloadIdentitySettings(values.workloadIdentity, given('upstream-url'));
  return { kind: 'run', options: { ...values, workloadIdentity } };
}
