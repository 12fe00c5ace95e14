// What the request path asks for the secret that authorises upstream calls.
// Two implementations: the API key read once from stdin (AuthHeader), and the
// short-lived access token of --github-oidc, renewed in the background
// (WorkloadIdentityCredential). The splicer copies the current header value
// into each request head; the scrubber and the dump detector look for every
// secret the upstream might echo.

export interface Credential {
  /** A byte table (1 = may occur in a secret): the scrubber skips chunks with no long enough run of such bytes. */
  readonly secretBytes: Uint8Array;
  /** Length of the shortest secret `withSecrets` passes. */
  readonly shortestSecret: number;
  /**
   * Run `use` with the header value to send now ("Bearer <secret>") readable;
   * throws CredentialUnavailableError, without calling it, when no valid secret is held.
   */
  withHeader<T>(use: (headerValue: Buffer) => T): T;
  /** Run `use` with every secret (without the scheme) that must be masked or detected, readable. */
  withSecrets<T>(use: (secrets: readonly Buffer[]) => T): T;
  /** Zero and release everything (at exit). */
  destroy(): void;
}

function byteTable(chars: string): Uint8Array {
  const table = new Uint8Array(256);
  for (const c of chars) table[c.charCodeAt(0)] = 1;
  return table;
}

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** The original's rule for API keys: ASCII letters, digits, '-' and '_'. */
export const API_KEY_BYTES = byteTable(`${ALPHANUMERIC}-_`);
/** RFC 6750's b64token characters: what the original accepts in workload identity credentials. */
export const BEARER_TOKEN_BYTES = byteTable(`${ALPHANUMERIC}-._~+/=`);

/** Every byte of `bytes` is in `table` (and there is at least one). */
export function onlyBytesOf(table: Uint8Array, bytes: Buffer): boolean {
  if (bytes.length === 0) return false;
  for (const b of bytes) if (table[b] !== 1) return false;
  return true;
}
