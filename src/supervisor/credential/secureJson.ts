// Reads a JSON object that carries a secret (GitHub's {"value": "<ID token>"},
// the exchange's {"access_token": ...}) without the secret ever becoming a
// JavaScript string. The document is scanned as bytes for its strings; the
// secret field's value is decoded straight into secure memory; every other
// string value is blanked except the named public fields, and only that
// redacted copy goes through JSON.parse (which also checks the syntax). So an
// unexpected field (a refresh token, an echo of the request) never becomes a
// string either.

import sodium from 'sodium-native';
import { SecureBytes } from '../secureBytes.js';

export interface SecretJson {
  /** `prefix` + the secret field's string value, in secure memory; null when the field is absent or not a string. */
  readonly secret: SecureBytes | null;
  /** The document with every string value blanked except those of the public fields. */
  readonly fields: Readonly<Record<string, unknown>>;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const ESCAPED: Readonly<Record<number, number>> = {
  0x22: 0x22,
  0x5c: 0x5c,
  0x2f: 0x2f,
  0x62: 8,
  0x66: 12,
  0x6e: 10,
  0x72: 13,
  0x74: 9,
};
/** Stands for a \u escape outside ASCII: no credential alphabet contains it, so such a secret is refused. */
const NOT_ASCII = 0xff;

interface JsonString {
  /** Just after the opening quote. */
  readonly start: number;
  /** At the closing quote. */
  readonly end: number;
  /** Nesting depth: 1 inside the top-level object. */
  readonly depth: number;
  readonly isKey: boolean;
}

/**
 * Read the JSON object in `json`: `secretField` into secure memory, `publicFields` as values.
 * Throws SyntaxError when `json` is not one JSON object or names one of those fields twice.
 */
export function readSecretJson(
  json: Buffer,
  secretField: string,
  publicFields: readonly string[],
  prefix = '',
): SecretJson {
  const strings = scanStrings(json);
  let secretValue: JsonString | null = null;
  const blanked: JsonString[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < strings.length; i++) {
    const s = strings[i] as JsonString;
    if (s.isKey) continue;
    const key = topLevelKeyOf(json, strings[i - 1], s);
    if (key === secretField) secretValue = s;
    if (key === null || !publicFields.includes(key)) blanked.push(s);
  }
  for (const s of strings) {
    if (!s.isKey || s.depth !== 1) continue;
    const key = keyText(json, s);
    if ((key === secretField || publicFields.includes(key)) && seen.has(key)) {
      throw new SyntaxError(`"${key}" given twice`);
    }
    seen.add(key);
  }
  const fields: unknown = JSON.parse(withoutStrings(json, blanked));
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
    throw new SyntaxError('not a JSON object');
  }
  const record = fields as Record<string, unknown>;
  const secret = secretValue !== null && record[secretField] === '' ? decodeSecret(json, secretValue, prefix) : null;
  return { secret, fields: record };
}

/** Every string in the document, in order, with its depth and whether a ':' follows it. */
function scanStrings(json: Buffer): JsonString[] {
  const strings: JsonString[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i] as number;
    if (c === QUOTE) {
      const end = closingQuote(json, i + 1);
      let next = end + 1;
      while (next < json.length && isSpace(json[next] as number)) next++;
      strings.push({ start: i + 1, end, depth, isKey: json[next] === COLON });
      i = end;
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return strings;
}

function closingQuote(json: Buffer, from: number): number {
  for (let i = from; i < json.length; i++) {
    const c = json[i] as number;
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) return i;
    else if (c < 0x20) throw new SyntaxError('control character in a JSON string');
  }
  throw new SyntaxError('unterminated JSON string');
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** The key whose value `value` is, when it is a value of the top-level object; else null. */
function topLevelKeyOf(json: Buffer, previous: JsonString | undefined, value: JsonString): string | null {
  if (value.depth !== 1 || previous === undefined || !previous.isKey || previous.depth !== 1) return null;
  for (let i = previous.end + 1; i < value.start - 1; i++) {
    const c = json[i] as number;
    if (c !== COLON && !isSpace(c)) return null;
  }
  return keyText(json, previous);
}

/** Keys are never secret: JSON.parse decodes their escapes. */
function keyText(json: Buffer, key: JsonString): string {
  return JSON.parse(json.toString('utf8', key.start - 1, key.end + 1)) as string;
}

/** The document with the contents of `blanked` removed (each becomes ""). */
function withoutStrings(json: Buffer, blanked: readonly JsonString[]): string {
  const parts: Buffer[] = [];
  let at = 0;
  for (const s of blanked) {
    parts.push(json.subarray(at, s.start));
    at = s.end;
  }
  parts.push(json.subarray(at));
  return Buffer.concat(parts).toString('utf8');
}

/** `prefix` + the string's decoded bytes, decoded byte by byte straight into secure memory. */
function decodeSecret(json: Buffer, s: JsonString, prefix: string): SecureBytes {
  const out = sodium.sodium_malloc(Math.max(1, prefix.length + s.end - s.start));
  try {
    let at = out.write(prefix, 0, 'latin1');
    for (let i = s.start; i < s.end; i++) {
      let c = json[i] as number;
      if (c === BACKSLASH) {
        const escape = json[++i] as number;
        if (escape === 0x75) {
          c = hexCode(json, i + 1);
          i += 4;
        } else {
          const decoded = ESCAPED[escape];
          if (decoded === undefined) throw new SyntaxError('invalid escape in a JSON string');
          c = decoded;
        }
      }
      out[at++] = c;
    }
    return new SecureBytes(out, at);
  } catch (err) {
    sodium.sodium_free(out);
    throw err;
  }
}

/** The character of a \uXXXX escape when it is ASCII, else NOT_ASCII; read from bytes, not a string. */
function hexCode(json: Buffer, at: number): number {
  let code = 0;
  for (let i = at; i < at + 4; i++) {
    const c = json[i] ?? 0;
    const digit = c >= 0x30 && c <= 0x39 ? c - 0x30 : (c | 0x20) >= 0x61 && (c | 0x20) <= 0x66 ? (c | 0x20) - 0x57 : -1;
    if (digit === -1) throw new SyntaxError('invalid \\u escape in a JSON string');
    code = code * 16 + digit;
  }
  return code < 0x80 ? code : NOT_ASCII;
}
