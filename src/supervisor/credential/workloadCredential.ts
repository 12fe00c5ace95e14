// The credential of --github-oidc: the current access token, sent while it is
// valid, and the previous one, still masked in answers (a stream that started
// with it may still be running). Both, and the runner's request token, live
// only here, in secure memory; the worker never sees any of them. Tokens are
// issued by short-lived child processes (issuerProcess.ts).

import { AUTH_SCHEME_PREFIX } from '../../shared/constants.js';
import { CredentialUnavailableError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { SecureBytes } from '../secureBytes.js';
import { BEARER_TOKEN_BYTES, type Credential } from './credential.js';
import { IssuerProcess } from './issuerProcess.js';
import { readRequestToken } from './requestToken.js';
import { TokenRenewal, usableUntil } from './tokenRenewal.js';
import type { IssuedToken, WorkloadIdentitySettings } from './workloadIdentity.js';

const withoutScheme = (value: Buffer): Buffer => value.subarray(AUTH_SCHEME_PREFIX.length);

export class WorkloadIdentityCredential implements Credential {
  readonly secretBytes = BEARER_TOKEN_BYTES;
  private current: IssuedToken;
  private previous: IssuedToken | null = null;
  private readonly renewal: TokenRenewal;

  constructor(
    private readonly issuer: IssuerProcess,
    first: IssuedToken,
    private readonly requestToken: SecureBytes,
    log: Logger,
  ) {
    this.current = first;
    this.renewal = new TokenRenewal(
      () => issuer.issue(),
      (token) => this.install(token),
      first,
      log,
    );
  }

  get shortestSecret(): number {
    const shortest = Math.min(this.current.header.length, this.previous?.header.length ?? Infinity);
    return shortest - AUTH_SCHEME_PREFIX.length;
  }

  withHeader<T>(use: (headerValue: Buffer) => T): T {
    if (Date.now() >= usableUntil(this.current)) throw new CredentialUnavailableError();
    return this.current.header.read(use);
  }

  withSecrets<T>(use: (secrets: readonly Buffer[]) => T): T {
    const previous = this.previous;
    return this.current.header.read((current) => {
      if (previous === null) return use([withoutScheme(current)]);
      return previous.header.read((earlier) => use([withoutScheme(current), withoutScheme(earlier)]));
    });
  }

  destroy(): void {
    this.renewal.stop();
    this.issuer.stop();
    this.current.header.destroy();
    this.previous?.header.destroy();
    this.requestToken.destroy();
  }

  private install(token: IssuedToken): void {
    this.previous?.header.destroy();
    this.previous = this.current;
    this.current = token;
  }
}

/**
 * Read the request token from stdin and get the first access token, before
 * anything listens; then keep renewing it. Fails with the original's message.
 */
export async function startWorkloadIdentity(
  settings: WorkloadIdentitySettings,
  limits: { readonly timeoutMs: number; readonly allowWeaker: boolean },
  log: Logger,
): Promise<Credential> {
  const requestToken = readRequestToken();
  try {
    const issuer = new IssuerProcess({ ...settings, requestUrl: settings.requestUrl.href, ...limits }, requestToken);
    return new WorkloadIdentityCredential(issuer, await issuer.issue(), requestToken, log);
  } catch (err) {
    requestToken.destroy();
    throw err;
  }
}
