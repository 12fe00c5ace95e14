// --github-oidc's client: trade the runner's request token for a GitHub ID
// token (GET <request URL>&audience=...), then that ID token for a short-lived
// OpenAI access token (POST https://auth.openai.com/oauth/token, RFC 8693 token
// exchange). Requests, answers and messages are the original's; every secret
// stays in secure memory (secureHttps.ts, secureJson.ts). The exchange URL is
// fixed: no option or environment variable sends a credential anywhere else.

import { AUTH_SCHEME_PREFIX } from '../../shared/constants.js';
import { messageOf, WorkloadIdentityError } from '../../shared/errors.js';
import { maskKey } from '../keyScrubber.js';
import type { SecureBytes } from '../secureBytes.js';
import { BEARER_TOKEN_BYTES, onlyBytesOf } from './credential.js';
import { INVALID_CREDENTIAL, MAX_WORKLOAD_CREDENTIAL_BYTES } from './requestToken.js';
import { secureRequest, type SecureResponse } from './secureHttps.js';
import { readSecretJson } from './secureJson.js';

export const TOKEN_EXCHANGE_URL = new URL('https://auth.openai.com/oauth/token');
/** The original's bound on each GitHub request and exchange. */
export const MAX_CREDENTIAL_REQUEST_MS = 30_000;
/** The original refuses a token said to live longer than this. */
const MAX_LIFETIME_S = 3600;
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export interface WorkloadIdentitySettings {
  readonly audience: string;
  readonly identityProviderId: string;
  readonly serviceAccountId: string;
  /** The runner's ACTIONS_ID_TOKEN_REQUEST_URL (https, checked by the command line). */
  readonly requestUrl: URL;
}

export interface IssuedToken {
  /** "Bearer <access token>" in secure memory. */
  readonly header: SecureBytes;
  /** When the GitHub request was sent (ms): the lifetime counts from there. */
  readonly requestedAt: number;
  /** When the token stops being valid (ms, this clock). */
  readonly expiresAt: number;
}

/** Where the original's messages name each endpoint. */
const GITHUB = {
  request: 'GitHub OIDC token request',
  failed: 'GitHub OIDC token request failed',
  source: 'GitHub OIDC',
};
const OPENAI = {
  request: 'OpenAI workload identity token request',
  failed: 'OpenAI workload identity token exchange failed',
  source: 'OpenAI workload identity',
};

export class WorkloadIdentityClient {
  /** `requestToken`: "Bearer <request token>"; `timeoutMs` bounds each of the two requests. */
  constructor(
    private readonly settings: WorkloadIdentitySettings,
    private readonly requestToken: SecureBytes,
    private readonly timeoutMs: number,
  ) {}

  /** A fresh GitHub ID token, exchanged for an access token. Fails with a WorkloadIdentityError. */
  async issue(): Promise<IssuedToken> {
    const requestedAt = Date.now();
    const idToken = await this.gitHubIdToken();
    try {
      return await this.exchange(idToken, requestedAt);
    } finally {
      idToken.destroy();
    }
  }

  private async gitHubIdToken(): Promise<SecureBytes> {
    const url = new URL(this.settings.requestUrl);
    const audience = new URLSearchParams({ audience: this.settings.audience }).toString();
    url.search = url.search.length > 1 ? `${url.search}&${audience}` : `?${audience}`;
    const headers = [
      ['authorization', this.requestToken],
      ['accept', '*/*'],
    ] as const;
    const response = await this.send(GITHUB, { url, method: 'GET', headers, timeoutMs: this.timeoutMs });
    try {
      checkStatus(GITHUB, response, [this.requestToken]);
      const idToken = readAnswer(GITHUB, response, 'value', [], '').secret;
      if (idToken === null) throw new WorkloadIdentityError(`${GITHUB.source} returned an invalid token response`);
      if (idToken.length > MAX_WORKLOAD_CREDENTIAL_BYTES || !idToken.read((b) => onlyBytesOf(BEARER_TOKEN_BYTES, b))) {
        idToken.destroy();
        throw new WorkloadIdentityError('workload identity source returned an invalid subject token');
      }
      return idToken;
    } finally {
      response.body.destroy();
    }
  }

  private async exchange(idToken: SecureBytes, requestedAt: number): Promise<IssuedToken> {
    const { identityProviderId, serviceAccountId } = this.settings;
    const body = [
      '{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange",' +
        '"subject_token_type":"urn:ietf:params:oauth:token-type:jwt","subject_token":"',
      idToken,
      `","identity_provider_id":${JSON.stringify(identityProviderId)},` +
        `"service_account_id":${JSON.stringify(serviceAccountId)}}`,
    ];
    const headers = [
      ['content-type', 'application/json'],
      ['accept', '*/*'],
    ] as const;
    const request = { url: TOKEN_EXCHANGE_URL, method: 'POST', headers, body, timeoutMs: this.timeoutMs } as const;
    const response = await this.send(OPENAI, request);
    try {
      checkStatus(OPENAI, response, [this.requestToken, idToken]);
      return accessToken(response, requestedAt);
    } finally {
      response.body.destroy();
    }
  }

  private async send(endpoint: typeof GITHUB, request: Parameters<typeof secureRequest>[0]): Promise<SecureResponse> {
    try {
      return await secureRequest(request);
    } catch (err) {
      throw new WorkloadIdentityError(`${endpoint.failed}: ${messageOf(err)}`);
    }
  }
}

/** The exchange's answer, checked as the original checks it. */
function accessToken(response: SecureResponse, requestedAt: number): IssuedToken {
  const invalid = new WorkloadIdentityError(`${OPENAI.source} returned an invalid token response`);
  const { secret: header, fields } = readAnswer(
    OPENAI,
    response,
    'access_token',
    ['issued_token_type', 'token_type'],
    AUTH_SCHEME_PREFIX,
  );
  if (header === null) throw invalid;
  try {
    const {
      issued_token_type: issuedType,
      token_type: tokenType,
      expires_in: lifetime,
      expires_at: expiresAtS,
    } = fields;
    if (typeof issuedType !== 'string' || typeof tokenType !== 'string') throw invalid;
    if (!isWholeSeconds(lifetime) || (expiresAtS !== undefined && !isWholeSeconds(expiresAtS))) throw invalid;
    if (issuedType !== ACCESS_TOKEN_TYPE || tokenType.toLowerCase() !== 'bearer') {
      throw new WorkloadIdentityError('OpenAI returned an unsupported workload identity token type');
    }
    if (lifetime > MAX_LIFETIME_S) throw new WorkloadIdentityError('OpenAI returned an invalid token lifetime');
    const expiresAt = Math.min(requestedAt + lifetime * 1000, expiresAtS === undefined ? Infinity : expiresAtS * 1000);
    if (lifetime === 0 || expiresAt <= Date.now()) {
      throw new WorkloadIdentityError('OpenAI returned an expired workload identity token');
    }
    const token = (value: Buffer): Buffer => value.subarray(AUTH_SCHEME_PREFIX.length);
    const valid = header.read(
      (value) => token(value).length <= MAX_WORKLOAD_CREDENTIAL_BYTES && onlyBytesOf(BEARER_TOKEN_BYTES, token(value)),
    );
    if (!valid) throw new WorkloadIdentityError(INVALID_CREDENTIAL);
    return { header, requestedAt, expiresAt };
  } catch (err) {
    header.destroy();
    throw err;
  }
}

function isWholeSeconds(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function readAnswer(
  endpoint: typeof GITHUB,
  response: SecureResponse,
  field: string,
  publicFields: string[],
  prefix: string,
) {
  try {
    return response.body.read((json) => readSecretJson(json, field, publicFields, prefix));
  } catch {
    throw new WorkloadIdentityError(`${endpoint.source} returned an invalid token response`);
  }
}

/** A non-2xx answer: the original's message, the status, and the server's own message when it gives one. */
function checkStatus(endpoint: typeof GITHUB, response: SecureResponse, secrets: readonly SecureBytes[]): void {
  if (response.status >= 200 && response.status <= 299) return;
  const said = serverMessage(response.body, secrets);
  throw new WorkloadIdentityError(
    `${endpoint.request} rejected (HTTP ${response.status})${said === '' ? '' : `: ${said}`}`,
  );
}

/**
 * The message in an error answer ({"error_description"}, {"error": {"message"}},
 * {"message"}, {"error"}), or a short plain-text answer; any echo of a secret
 * masked before the answer becomes a string. At most 200 printable characters.
 */
function serverMessage(body: SecureBytes, secrets: readonly SecureBytes[]): string {
  const copy = body.read((bytes) => Buffer.from(bytes));
  try {
    for (const secret of secrets) {
      // The request token is held as "Bearer <token>": mask the token alone too.
      secret.read((bytes) =>
        [bytes, bytes.subarray(bytes.indexOf(' ') + 1)].forEach((s) => s.length > 0 && maskKey(copy, s)),
      );
    }
    const text = copy.toString('utf8');
    let said: unknown = null;
    try {
      const answer = JSON.parse(text) as Record<string, unknown>;
      const error = answer.error as Record<string, unknown> | string | undefined;
      said =
        answer.error_description ?? (typeof error === 'object' ? error?.message : undefined) ?? answer.message ?? error;
    } catch {
      said = text.length <= 200 ? text : null;
    }
    return typeof said === 'string'
      ? said
          .replace(/[^\x20-\x7e]+/g, ' ')
          .trim()
          .slice(0, 200)
      : '';
  } finally {
    copy.fill(0);
  }
}
