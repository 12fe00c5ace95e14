// Masks the key in bytes travelling from the upstream towards the worker. An
// upstream that echoes the Authorization value (a misconfigured gateway, a
// debug endpoint) would otherwise hand the key to the worker and the client.
// "The key" is every secret the credential names: the API key, or the current
// and the previous workload identity token (a stream may outlive a renewal).
// Each occurrence is overwritten with '*' of the same length, so framing is
// unchanged; only a chunk's tail that could be the start of the key is held
// back until the next chunk (SSE chunks end in "\n", never a key byte).
//
// Reading the key costs two mprotect calls per secret (see SecureBytes.read). A
// small chunk is first checked without it: a secret is a run of at least
// shortestSecret bytes of the credential's alphabet (the intake's rule), so a
// chunk with no such run, and no run of those bytes at its very end that could
// be a secret's start, cannot need masking or holding back.

import type { KeyScanResult } from '../shared/ipcProtocol.js';
import type { Credential } from './credential/credential.js';

const MASK = 0x2a; // '*'
/** Larger chunks go straight to the key: scanning them here would cost more than reading it. */
const PREFILTER_MAX_BYTES = 4096;

export class KeyScrubber {
  private held: Buffer | null = null;

  constructor(private readonly credential: Credential) {}

  /** Mask in place every complete occurrence of the key in `buf`. */
  maskInPlace(buf: Buffer): void {
    if (!mayHoldKey(buf, this.credential, false)) return;
    this.credential.withSecrets((secrets) => {
      for (const key of secrets) maskKey(buf, key);
    });
  }

  /** The part of the stream so far that is safe to pass on (may be empty). */
  push(chunk: Buffer): Buffer {
    let data = chunk;
    if (this.held !== null) {
      data = Buffer.concat([this.held, chunk]);
      this.held.fill(0);
      this.held = null;
    }
    if (!mayHoldKey(data, this.credential, true)) return data;
    let keep = 0;
    this.credential.withSecrets((secrets) => {
      for (const key of secrets) maskKey(data, key);
      for (const key of secrets) keep = Math.max(keep, partialKeyTail(data, key));
    });
    if (keep === 0) return data;
    this.held = Buffer.from(data.subarray(data.length - keep));
    return data.subarray(0, data.length - keep);
  }

  /** End of stream: what was held back was not the key after all. */
  flush(): Buffer | null {
    const rest = this.held;
    this.held = null;
    return rest;
  }
}

/**
 * False only when `data` (small enough to scan) has no run of secret bytes as
 * long as the shortest secret, nor, with `orItsStart`, such a run at its end.
 */
function mayHoldKey(data: Buffer, credential: Credential, orItsStart: boolean): boolean {
  if (data.length > PREFILTER_MAX_BYTES) return true;
  const { secretBytes, shortestSecret } = credential;
  let run = 0;
  for (let i = 0; i < data.length; i++) {
    if (secretBytes[data[i] as number] === 1) {
      if (++run >= shortestSecret) return true;
    } else run = 0;
  }
  return orItsStart && run > 0;
}

/** Overwrite every occurrence of `key` in `data` with '*' (same length, so framing is kept). */
export function maskKey(data: Buffer, key: Buffer): void {
  for (let at = data.indexOf(key); at !== -1; at = data.indexOf(key, at + key.length))
    data.fill(MASK, at, at + key.length);
}

/** Length of the longest suffix of `data` that is a proper prefix of `key`. */
function partialKeyTail(data: Buffer, key: Buffer): number {
  const first = key[0];
  for (let n = Math.min(key.length - 1, data.length); n > 0; n--) {
    const start = data.length - n;
    if (data[start] === first && data.compare(key, 0, n, start) === 0) return n;
  }
  return 0;
}

/**
 * Finds the key in what a client sent (headers and a body seen in chunks), so
 * the worker can redact it from dump files. Detection only: request bytes go
 * upstream unchanged. Used only with --dump-dir.
 */
export class KeyDetector {
  private tail: Buffer = Buffer.alloc(0);
  private readonly headerIndexes: number[] = [];
  private bodyHasKey = false;

  /** Scans the request's header list at once; its body (or messages) as they pass. */
  constructor(
    private readonly credential: Credential,
    headers: readonly string[],
  ) {
    credential.withSecrets((secrets) => {
      for (let i = 1; i < headers.length; i += 2) {
        const value = Buffer.from(headers[i] as string, 'latin1');
        if (secrets.some((key) => value.indexOf(key) !== -1)) this.headerIndexes.push((i - 1) / 2);
      }
    });
  }

  /** Where the key was: the body, and the indexes (in name/value pairs) of the header fields. */
  get result(): KeyScanResult {
    return { bodyHasKey: this.bodyHasKey, headerIndexes: this.headerIndexes };
  }

  pushBody(chunk: Buffer): void {
    if (this.bodyHasKey) return;
    let overlap = 0;
    this.credential.withSecrets((secrets) => {
      overlap = Math.max(...secrets.map((key) => key.length)) - 1;
      const joint = this.tail.length > 0 ? Buffer.concat([this.tail, chunk.subarray(0, overlap)]) : null;
      for (const key of secrets) {
        if ((joint !== null && joint.indexOf(key) !== -1) || chunk.indexOf(key) !== -1) this.bodyHasKey = true;
      }
    });
    const carried =
      chunk.length >= overlap
        ? chunk.subarray(chunk.length - overlap)
        : Buffer.concat([this.tail, chunk]).subarray(-overlap);
    this.tail = Buffer.from(carried);
  }
}
