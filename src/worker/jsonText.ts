// Reading JSON text that JSON.parse has already accepted, for what the parsed
// value no longer shows: where the top-level keys are (modelPolicy.ts) and how
// the text would lay out pretty-printed (dumpWriter.ts).

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;

function opens(c: number): boolean {
  return c === 0x7b || c === 0x5b;
}

function closes(c: number): boolean {
  return c === 0x7d || c === 0x5d;
}

/** The index of the quote closing the string that opens at `open`. */
function closingQuote(json: string, open: number): number {
  // indexOf skips the text in native code; bodies are mostly strings.
  let at = json.indexOf('"', open + 1);
  while (at !== -1 && isEscaped(json, at)) at = json.indexOf('"', at + 1);
  return at === -1 ? json.length : at;
}

/** Whether the character at `at` follows an odd run of backslashes. */
function isEscaped(json: string, at: number): boolean {
  let backslashes = 0;
  while (json.charCodeAt(at - 1 - backslashes) === BACKSLASH) backslashes++;
  return backslashes % 2 === 1;
}

/**
 * Calls `onKey` with the offsets of the quotes around each top-level key of
 * `json`, a valid JSON object, until it returns true.
 */
export function scanTopLevelKeys(json: string, onKey: (open: number, close: number) => boolean): void {
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      const close = closingQuote(json, i);
      if (depth === 1 && expectKey) {
        if (onKey(i, close)) return;
        expectKey = false;
      }
      i = close;
    } else if (opens(c)) {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (closes(c)) {
      depth--;
    } else if (c === COMMA && depth === 1) {
      expectKey = true;
    }
  }
}

/**
 * Of valid JSON text: how deep its arrays and objects nest, and about how many
 * characters pretty-printing it two spaces a level would add (a line break and
 * indentation before each element and closing bracket, a space after each colon).
 */
export function prettyLayout(json: string): { depth: number; added: number } {
  let depth = 0;
  let deepest = 0;
  let added = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      i = closingQuote(json, i);
    } else if (opens(c)) {
      depth++;
      if (depth > deepest) deepest = depth;
      added += 1 + 2 * depth;
    } else if (closes(c)) {
      depth--;
      added += 1 + 2 * depth;
    } else if (c === COMMA) {
      added += 1 + 2 * depth;
    } else if (c === COLON) {
      added += 1;
    }
  }
  return { depth: deepest, added };
}
