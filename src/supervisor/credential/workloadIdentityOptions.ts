// The command line of --github-oidc, with the original's rules and messages:
// the five flags go together (a usage error, exit 2, names the missing ones);
// then, exit 1: no custom --upstream-url, no empty value, an https request URL
// without user info or fragment.

import { DEFAULT_UPSTREAM_URL } from '../../shared/constants.js';
import { UsageError, WorkloadIdentityError } from '../../shared/errors.js';
import type { WorkloadIdentitySettings } from './workloadIdentity.js';

/** The value flags, in the order the original names them. */
export const WORKLOAD_IDENTITY_FLAGS = [
  'oidc-audience',
  'identity-provider-id',
  'service-account-id',
  'github-oidc-request-url',
] as const;
const PLACEHOLDERS = ['<AUDIENCE>', '<ID>', '<ID>', '<URL>'] as const;

export const WORKLOAD_IDENTITY_USAGE = [
  '  --github-oidc          Authenticate with GitHub Actions workload identity: stdin',
  "                         carries the runner's ACTIONS_ID_TOKEN_REQUEST_TOKEN, traded",
  '                         for short-lived OpenAI access tokens, renewed in the',
  '                         background (needs the four flags below)',
  '  --oidc-audience <AUDIENCE>',
  '                         Audience configured on the OpenAI workload identity provider',
  '  --identity-provider-id <ID>',
  '                         OpenAI workload identity provider ID',
  '  --service-account-id <ID>',
  '                         OpenAI service account ID selected by the provider mapping',
  '  --github-oidc-request-url <URL>',
  "                         The runner's ACTIONS_ID_TOKEN_REQUEST_URL (https); take it",
  "                         from the runner's environment, never from workflow input",
  '',
].join('\n');

/**
 * --github-oidc's settings from mri's parsed arguments, or null when none of
 * its flags is given. `upstreamUrl` is --upstream-url as typed.
 */
export function parseWorkloadIdentity(
  args: Readonly<Record<string, unknown>>,
  upstreamUrl: string | undefined,
): WorkloadIdentitySettings | null {
  const values = WORKLOAD_IDENTITY_FLAGS.map((flag) => {
    const value = args[flag];
    if (Array.isArray(value)) throw new UsageError(`--${flag} was given more than once`);
    return value === undefined ? undefined : String(value);
  });
  const enabled = args['github-oidc'] === true;
  if (!enabled && values.every((value) => value === undefined)) return null;
  const missing = WORKLOAD_IDENTITY_FLAGS.flatMap((flag, i) =>
    values[i] === undefined ? [`--${flag} ${PLACEHOLDERS[i]}`] : [],
  );
  if (!enabled) missing.push('--github-oidc');
  if (missing.length > 0) {
    throw new UsageError(`the following required arguments were not provided: ${missing.join(', ')}`);
  }

  if (upstreamUrl !== undefined && upstreamUrl !== DEFAULT_UPSTREAM_URL) {
    throw new WorkloadIdentityError('workload identity requires the default OpenAI Responses endpoint');
  }
  WORKLOAD_IDENTITY_FLAGS.forEach((flag, i) => {
    if ((values[i] as string).trim() === '') {
      throw new WorkloadIdentityError(`workload identity requires a nonempty --${flag}`);
    }
  });
  const [audience, identityProviderId, serviceAccountId, requestUrlText] = values as string[];
  return {
    audience: audience as string,
    identityProviderId: identityProviderId as string,
    serviceAccountId: serviceAccountId as string,
    requestUrl: parseRequestUrl(requestUrlText as string),
  };
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
