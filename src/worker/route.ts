// The whole routing policy of the proxy. The request-target is compared as the
// exact bytes the client sent: no decoding, no normalisation, so every variant
// (query string, trailing slash, case, '//', dot segments, %-encoding, ';params',
// absolute-form) is simply "not equal" and therefore forbidden.

import { RESPONSES_PATH, SHUTDOWN_PATH } from '../shared/constants.js';

export type Route = 'forward' | 'shutdown' | 'forbidden';

export function routeRequest(method: string | undefined, target: string | undefined, httpShutdown: boolean): Route {
  if (method === 'POST' && target === RESPONSES_PATH) return 'forward';
  if (httpShutdown && method === 'GET' && target === SHUTDOWN_PATH) return 'shutdown';
  return 'forbidden';
}

/** With --websocket: exactly GET /v1/responses, asking for a WebSocket (ws checks the rest of the handshake). */
export function isWebSocketRoute(
  method: string | undefined,
  target: string | undefined,
  upgrade: string | undefined,
): boolean {
  return method === 'GET' && target === RESPONSES_PATH && upgrade?.toLowerCase() === 'websocket';
}
