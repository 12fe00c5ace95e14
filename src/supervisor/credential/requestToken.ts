// --github-oidc: stdin's first line is the runner's ACTIONS_ID_TOKEN_REQUEST_TOKEN,
// read straight into secure memory as the header value "Bearer <token>" that
// every GitHub ID token request carries. The rules and messages are the
// original's: at most 16 KiB, b64token characters only, one trailing "\n" and
// then one "\r" trimmed, no waiting for EOF.

import sodium from 'sodium-native';
import { AUTH_SCHEME_PREFIX } from '../../shared/constants.js';
import { WorkloadIdentityError } from '../../shared/errors.js';
import { readFirstLine, readStdin, type ReadFn } from '../authHeader.js';
import { SecureBytes } from '../secureBytes.js';
import { BEARER_TOKEN_BYTES, onlyBytesOf } from './credential.js';

/** The longest request token (and GitHub ID token) accepted, as in the original. */
export const MAX_WORKLOAD_CREDENTIAL_BYTES = 16 * 1024;

/** The original's messages. */
export const INVALID_CREDENTIAL = 'invalid workload identity bearer credential';
const TOO_LARGE = 'GitHub OIDC request credential too large';
const UNREADABLE = 'could not read GitHub OIDC request credential from stdin';

const CR = 0x0d;

/** The request token as "Bearer <token>" in secure memory. */
export function readRequestToken(read: ReadFn = readStdin): SecureBytes {
  const prefixLength = AUTH_SCHEME_PREFIX.length;
  // Room for the longest token and its "\r\n": a full buffer without a "\n" is too large.
  const capacity = MAX_WORKLOAD_CREDENTIAL_BYTES + 2;
  const buffer = sodium.sodium_malloc(prefixLength + capacity);
  buffer.write(AUTH_SCHEME_PREFIX, 0, 'latin1');
  try {
    let line;
    try {
      line = readFirstLine(read, buffer, prefixLength, capacity);
    } catch {
      throw new WorkloadIdentityError(UNREADABLE);
    }
    if (line.newline === -1 && !line.eof) throw new WorkloadIdentityError(TOO_LARGE);
    let end = line.newline === -1 ? prefixLength + line.received : line.newline;
    if (end > prefixLength && buffer[end - 1] === CR) end -= 1;
    const token = buffer.subarray(prefixLength, end);
    if (token.length > MAX_WORKLOAD_CREDENTIAL_BYTES || !onlyBytesOf(BEARER_TOKEN_BYTES, token)) {
      throw new WorkloadIdentityError(INVALID_CREDENTIAL);
    }
    sodium.sodium_memzero(buffer.subarray(end));
    return new SecureBytes(buffer, end);
  } catch (err) {
    sodium.sodium_memzero(buffer);
    sodium.sodium_free(buffer);
    throw err;
  }
}
