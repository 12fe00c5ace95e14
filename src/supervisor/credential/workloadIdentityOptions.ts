// The settings of --github-oidc, with the original's rules and messages. The
// flag table (shared/flags.ts) makes the five flags go together (a usage
// error, exit 2, names the missing ones); then, exit 1: no custom
// --upstream-url, no empty value, an https request URL without user info or
// fragment.

import { DEFAULT_UPSTREAM_URL } from '../../shared/constants.js';
import { WorkloadIdentityError } from '../../shared/errors.js';
import type { WorkloadIdentitySettings } from './workloadIdentity.js';

/** --github-oidc's flags as the command line gave them (all present: the flag table checks that). */
interface WorkloadIdentityFlags {
  readonly audience: string;
  readonly identityProviderId: string;
  readonly serviceAccountId: string;
  readonly requestUrl: string;
}

const FLAG_NAMES: Readonly<Record<keyof WorkloadIdentityFlags, string>> = {
  audience: 'oidc-audience',
  identityProviderId: 'identity-provider-id',
  serviceAccountId: 'service-account-id',
  requestUrl: 'github-oidc-request-url',
};

/**
 * --github-oidc's settings, or null when it is off. `upstreamUrl` is
 * --upstream-url as typed: even the default spelt differently is refused.
 */
export function workloadIdentitySettings(
  flags: WorkloadIdentityFlags | null,
  upstreamUrl: string | undefined,
): WorkloadIdentitySettings | null {
  if (flags === null) return null;
  if (upstreamUrl !== undefined && upstreamUrl !== DEFAULT_UPSTREAM_URL) {
    throw new WorkloadIdentityError('workload identity requires the default OpenAI Responses endpoint');
  }
  for (const [key, flag] of Object.entries(FLAG_NAMES)) {
    if (flags[key as keyof WorkloadIdentityFlags].trim() === '') {
      throw new WorkloadIdentityError(`workload identity requires a nonempty --${flag}`);
    }
  }
  return { ...flags, requestUrl: parseRequestUrl(flags.requestUrl) };
}

function parseRequestUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new WorkloadIdentityError('invalid GitHub OIDC request URL');
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || text.includes('#')) {
    throw new WorkloadIdentityError('GitHub OIDC request URL must be HTTPS without user info or fragment');
  }
  return url;
}
