// The answers the proxy's own policies give (--client-token-file,
// --allow-model, --max-*), shaped like the OpenAI API's errors so that
// clients show the message; and the same as a WebSocket `error` event, the
// shape the Responses API uses on a WebSocket, for a refused message.

import { openAiError, type ProxyErrorResponse } from './openaiError.js';

export interface Refusal extends ProxyErrorResponse {
  /** The usage record's reason. */
  readonly reason: 'token' | 'model' | 'budget' | 'rate';
  /** Seconds, for Retry-After (rate only). */
  readonly retryAfter?: number;
}

export function invalidClientToken(): Refusal {
  const message =
    'Missing or incorrect client token: send "Authorization: Bearer <token>" with the token from --client-token-file.';
  return { reason: 'token', ...openAiError(401, message, 'invalid_request_error', 'invalid_api_key') };
}

export function quotaExhausted(what: string): Refusal {
  const message = `The proxy's ${what} is used up; no further requests are forwarded.`;
  return { reason: 'budget', ...openAiError(429, message, 'insufficient_quota', 'insufficient_quota') };
}

export function rateLimited(limit: number, retryAfter: number): Refusal {
  const requests = limit === 1 ? 'request' : 'requests';
  const message = `The proxy's limit of ${limit} ${requests} per minute is reached; retry in ${retryAfter} s.`;
  return { reason: 'rate', retryAfter, ...openAiError(429, message, 'rate_limit_error', 'rate_limit_exceeded') };
}

export function modelNotAllowed(model: string): Refusal {
  const shown = model.length > 200 ? `${model.slice(0, 200)}...` : model;
  const message = `The model ${JSON.stringify(shown)} is not allowed by this proxy (--allow-model).`;
  return { reason: 'model', ...openAiError(403, message, 'invalid_request_error', 'model_not_allowed') };
}

/** A body the model check cannot read the same way the upstream would. */
export function unreadableBody(why: string): Refusal {
  const message = `The proxy checks the model of every request (--allow-model): ${why}.`;
  return { reason: 'model', ...openAiError(400, message, 'invalid_request_error', 'invalid_request_body') };
}

/** Response headers for a refusal over HTTP, as a flat list (the body's length is added where it is framed). */
export function refusalHeaders(refusal: Refusal): string[] {
  const headers = ['content-type', 'application/json'];
  if (refusal.retryAfter !== undefined) headers.push('retry-after', String(refusal.retryAfter));
  return headers;
}

/** The refusal as a Responses API WebSocket `error` event (one text message). */
export function refusalEvent(refusal: Refusal): Buffer {
  const { error } = JSON.parse(refusal.body.toString('utf8')) as { error: Record<string, unknown> };
  return Buffer.from(JSON.stringify({ type: 'error', status: refusal.status, error }), 'utf8');
}
