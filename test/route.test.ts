// The routing rules as pure functions, without a process: only exactly
// "POST /v1/responses" is forwarded, "GET /shutdown" only with --http-shutdown,
// and with --websocket only exactly "GET /v1/responses" asking for a WebSocket.
// Every other method or request-target, however close (the original's 403
// rules), is forbidden. routing.test.ts checks the same through the proxy.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isWebSocketRoute, routeRequest, type Route } from '../src/worker/route.js';

/** Request-targets a lenient server would take for /v1/responses; each is not it, byte for byte. */
const NEAR_RESPONSES = [
  // query strings, the bare '?' included; a fragment
  '/v1/responses?',
  '/v1/responses?a=1',
  '/v1/responses?stream=true',
  '/v1/responses#x',
  // trailing slash
  '/v1/responses/',
  '/v1/responses//',
  // case
  '/V1/responses',
  '/v1/Responses',
  '/V1/RESPONSES',
  // '//'
  '//v1/responses',
  '/v1//responses',
  // dot segments
  '/./v1/responses',
  '/v1/./responses',
  '/v1/x/../responses',
  '/v1/responses/.',
  '/v1/responses/..',
  // percent-encodings
  '/v1/%72esponses',
  '/v1/response%73',
  '/%76%31/responses',
  '/v1%2Fresponses',
  '/v1%2fresponses',
  '%2Fv1%2Fresponses',
  // ';params'
  '/v1/responses;x',
  '/v1/responses;',
  '/v1;v=1/responses',
  // absolute-form and authority-like targets
  'http://127.0.0.1:8080/v1/responses',
  'https://api.openai.com/v1/responses',
  'HTTP://localhost/v1/responses',
  '//127.0.0.1/v1/responses',
  // whitespace, NUL, prefixes and extensions
  ' /v1/responses',
  '/v1/responses ',
  '/v1/responses\0',
  '/v1/response',
  '/v1/responsesx',
  '/v1',
  '/',
  '*',
  '',
];

/** The same for /shutdown. */
const NEAR_SHUTDOWN = [
  '/shutdown?',
  '/shutdown?now=1',
  '/shutdown/',
  '/Shutdown',
  '/SHUTDOWN',
  '//shutdown',
  '/./shutdown',
  '/x/../shutdown',
  '/%73hutdown',
  '%2Fshutdown',
  '/shutdown;x',
  'http://127.0.0.1:8080/shutdown',
  ' /shutdown',
  '/shutdown ',
  '/shutdow',
  '/shutdownx',
];

describe('routeRequest', () => {
  test('exactly POST /v1/responses is forwarded, with or without --http-shutdown', () => {
    assert.equal(routeRequest('POST', '/v1/responses', false), 'forward');
    assert.equal(routeRequest('POST', '/v1/responses', true), 'forward');
  });

  test('exactly GET /shutdown shuts down, only with --http-shutdown', () => {
    assert.equal(routeRequest('GET', '/shutdown', true), 'shutdown');
    assert.equal(routeRequest('GET', '/shutdown', false), 'forbidden');
  });

  const otherMethods = ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE', 'post', 'Post', ''];
  for (const method of [...otherMethods, undefined]) {
    test(`${String(method)} /v1/responses is forbidden`, () => {
      const routes = [routeRequest(method, '/v1/responses', false), routeRequest(method, '/v1/responses', true)];
      assert.deepEqual(routes, ['forbidden', 'forbidden']);
    });
  }

  for (const method of ['POST', 'HEAD', 'PUT', 'DELETE', 'get', undefined]) {
    test(`${String(method)} /shutdown is forbidden even with --http-shutdown`, () => {
      assert.equal(routeRequest(method, '/shutdown', true), 'forbidden');
    });
  }

  test('a missing request-target is forbidden', () => {
    assert.equal(routeRequest('POST', undefined, true), 'forbidden');
    assert.equal(routeRequest('GET', undefined, true), 'forbidden');
  });

  const cases: Array<[string, string]> = [
    ...NEAR_RESPONSES.map((target): [string, string] => ['POST', target]),
    ...NEAR_SHUTDOWN.map((target): [string, string] => ['GET', target]),
  ];
  for (const [method, target] of cases) {
    test(`${method} ${JSON.stringify(target)} is forbidden`, () => {
      const routes: Route[] = [routeRequest(method, target, true), routeRequest(method, target, false)];
      assert.deepEqual(routes, ['forbidden', 'forbidden']);
    });
  }
});

describe('isWebSocketRoute', () => {
  test('GET /v1/responses with Upgrade: websocket, in any case', () => {
    for (const upgrade of ['websocket', 'WebSocket', 'WEBSOCKET']) {
      assert.equal(isWebSocketRoute('GET', '/v1/responses', upgrade), true, upgrade);
    }
  });

  test('not without an Upgrade asking for a WebSocket alone', () => {
    for (const upgrade of [undefined, '', 'h2c', 'websocket, h2c', 'websocket/13', ' websocket']) {
      assert.equal(isWebSocketRoute('GET', '/v1/responses', upgrade), false, String(upgrade));
    }
  });

  test('not with any other method', () => {
    for (const method of ['POST', 'HEAD', 'PUT', 'OPTIONS', 'CONNECT', 'get', undefined]) {
      assert.equal(isWebSocketRoute(method, '/v1/responses', 'websocket'), false, String(method));
    }
  });

  test('not with any other request-target', () => {
    for (const target of [...NEAR_RESPONSES, '/shutdown', undefined]) {
      assert.equal(isWebSocketRoute('GET', target, 'websocket'), false, JSON.stringify(target));
    }
  });
});
