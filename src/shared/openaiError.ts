// Error bodies the proxy itself produces, shaped like the OpenAI API's own so
// clients (the Codex CLI, the SDKs) show the message instead of a parse error.

export interface ProxyErrorResponse {
  readonly status: number;
  readonly body: Buffer;
}

export function openAiError(status: number, message: string, type: string, code: string): ProxyErrorResponse {
  const body = Buffer.from(JSON.stringify({ error: { message, type, code, param: null } }), 'utf8');
  return { status, body };
}

export function bodyTooLarge(limit: number): ProxyErrorResponse {
  return openAiError(
    413,
    `The request body exceeds the proxy's limit of ${limit} bytes.`,
    'invalid_request_error',
    'request_too_large',
  );
}
