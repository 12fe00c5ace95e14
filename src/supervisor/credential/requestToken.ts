// --github-oidc: stdin's first line is the runner's ACTIONS_ID_TOKEN_REQUEST_TOKEN,
// read straight into secure memory as the header value "Bearer <token>" that
// every GitHub ID token request carries. The rules and messages are the
// original's: at most 16 KiB, b64token characters only, one trailing "\n" and
// then one "\r" trimmed, no waiting for EOF.

import { WorkloadIdentityError } from '../../shared/errors.js';
import { readBearerLine, readStdin, type ReadFn } from '../authHeader.js';
import { SecureBytes } from '../secureBytes.js';
import { BEARER_TOKEN_BYTES, onlyBytesOf } from './credential.js';

/** The longest request token (and GitHub ID token) accepted, as in the original. */
export const MAX_WORKLOAD_CREDENTIAL_BYTES = 16 * 1024;

/** The original's messages. */
export const INVALID_CREDENTIAL = 'invalid workload identity bearer credential';
const TOO_LARGE = 'GitHub OIDC request credential too large';
const UNREADABLE = 'could not read GitHub OIDC request credential from stdin';

/** The request token as "Bearer <token>" in secure memory. */
export function readRequestToken(read: ReadFn = readStdin): SecureBytes {
  const { buffer, end } = readBearerLine(read, {
    // Room for the longest token and its "\r\n": a full buffer without a "\n" is too large.
    capacity: MAX_WORKLOAD_CREDENTIAL_BYTES + 2,
    crAtEof: true,
    tooLarge: () => new WorkloadIdentityError(TOO_LARGE),
    unreadable: () => new WorkloadIdentityError(UNREADABLE),
    check(token) {
      if (
        token.length === 0 ||
        token.length > MAX_WORKLOAD_CREDENTIAL_BYTES ||
        !onlyBytesOf(BEARER_TOKEN_BYTES, token)
      ) {
        throw new WorkloadIdentityError(INVALID_CREDENTIAL);
      }
    },
  });
  return new SecureBytes(buffer, end);
}
