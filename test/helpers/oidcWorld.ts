// The outside world of --github-oidc, for a test process that runs as root in
// its own mount and network namespace (test/fixtures/oidcScenarios.ts): the
// loopback interface up, auth.openai.com and api.openai.com resolving to
// 127.0.0.1 through a hosts file bind-mounted over /etc/hosts, a throwaway CA
// the proxy trusts through NODE_EXTRA_CA_CERTS, and HTTPS mocks on 443 (the
// token exchange and the Responses API, by Host) and on 8443 (GitHub's ID
// token endpoint). The proxy has no switch to point it anywhere else: it is
// given these names as they are, as in production.
//
// Every token the mocks hand out is recorded with its lifetime, so a scenario
// can say whether each upstream request carried a token valid when it arrived.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { ProxyProcess, type StartOptions } from './proxyProcess.js';
import { encodeSse, responseEvents } from './responsesApi.js';
import { TestAuthority } from './testAuthority.js';

export const GITHUB_HOST = 'github-oidc.test';
export const GITHUB_PORT = 8443;
export const GITHUB_PATH = '/_apis/distributedtask/hubs/build/plans/p1/jobs/j1/idtoken?api-version=2.0';
export const REQUEST_URL = `https://${GITHUB_HOST}:${GITHUB_PORT}${GITHUB_PATH}`;
/** Spaces and punctuation, to check how the audience is encoded. */
export const AUDIENCE = 'api://openai.example/wif audience&x=1';
export const IDENTITY_PROVIDER_ID = 'wifp_0123456789abcdef';
export const SERVICE_ACCOUNT_ID = 'svcacct_fedcba9876543210';
/** What api.openai.com answers a streaming request (a Codex turn). */
export const CODEX_ANSWER = 'The proxy relayed this answer with a workload identity token.';

/** base64url of random bytes: the alphabet of a JWT segment. */
function segment(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

/** A token shaped like a JWT (header.payload.signature), unique and easy to search for. */
export function fakeJwt(label: string): string {
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: label })).toString('base64url');
  return `${header}.${segment(420)}.${segment(256)}`;
}

export interface GithubRecord {
  readonly at: number;
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
}

export interface ExchangeRecord {
  readonly at: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** When the answer was sent (0 while it is held). */
  answeredAt: number;
  status: number;
}

export interface IssuedToken {
  readonly token: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
}

export interface UpstreamRecord {
  readonly at: number;
  readonly kind: 'http' | 'ws';
  /** Index into accessTokens, or -1 for a token the mock never issued. */
  readonly tokenIndex: number;
  readonly valid: boolean;
}

/** A failure instead of an answer: a status and body, or no answer at all. */
export type Failure = { readonly status: number; readonly body: string } | 'hang';

/** How the mocks treat one proxy (one request token); changeable while it runs. */
export interface Behaviour {
  /** expires_in of the tokens the exchange issues. */
  lifetimeS: number;
  /** Set to make GitHub fail. */
  githubFailure: Failure | null;
  /** Set to make the exchange fail. */
  exchangeFailure: Failure | null;
  /** Fields added to (or replacing those of) the exchange's answer. */
  exchangeAnswer: Record<string, unknown>;
  /** Exchanges from this one on (0: the first) wait for releaseExchanges() to be answered. */
  holdFrom: number;
}

export class OidcWorld {
  /** The default proxy's request token and behaviour (see client() for more). */
  readonly requestToken = fakeJwt('request');
  readonly behaviour: Behaviour = {
    lifetimeS: 3600,
    githubFailure: null,
    exchangeFailure: null,
    exchangeAnswer: {},
    holdFrom: Infinity,
  };
  readonly githubRequests: GithubRecord[] = [];
  readonly idTokens: string[] = [];
  readonly exchanges: ExchangeRecord[] = [];
  readonly accessTokens: IssuedToken[] = [];
  readonly upstreamRequests: UpstreamRecord[] = [];
  private readonly behaviours = new Map<string, Behaviour>([[this.requestToken, this.behaviour]]);
  /** Which request token each ID token was issued for. */
  private readonly idTokenOwners = new Map<string, string>();
  private held: Array<() => void> = [];
  private readonly sockets = new Set<Socket>();
  private readonly servers: Server[] = [];
  private readonly proxies: ProxyProcess[] = [];

  private constructor(
    readonly authority: TestAuthority,
    private readonly dir: string,
  ) {}

  /**
   * Bring up loopback, map the names and start the mocks. Only in a fresh
   * network and mount namespace: it changes /etc/hosts for this namespace.
   */
  static async create(): Promise<OidcWorld> {
    const dir = mkdtempSync(join(tmpdir(), 'rap-oidc-'));
    execFileSync('ip', ['link', 'set', 'lo', 'up']);
    writeFileSync(join(dir, 'hosts'), `127.0.0.1 localhost auth.openai.com api.openai.com ${GITHUB_HOST}\n`);
    execFileSync('mount', ['--bind', join(dir, 'hosts'), '/etc/hosts']);
    const world = new OidcWorld(TestAuthority.create(['auth.openai.com', 'api.openai.com', GITHUB_HOST]), dir);
    await world.listen(443, (req, res, body) => world.onOpenAi(req, res, body));
    await world.listen(GITHUB_PORT, (req, res) => world.onGithub(req, res));
    return world;
  }

  /** Start the proxy in --github-oidc mode (the request token on stdin), trusting the test CA. */
  async startProxy(args: readonly string[] = [], options: StartOptions = {}): Promise<ProxyProcess> {
    // Two Node starts (the issuer, the worker) and two HTTPS requests before it listens: slow on a loaded machine.
    return this.track(await ProxyProcess.start({ startTimeoutMs: 30_000, ...this.proxyOptions(args), ...options }));
  }

  /** A proxy this world stops at the end. */
  track(proxy: ProxyProcess): ProxyProcess {
    this.proxies.push(proxy);
    return proxy;
  }

  /** Another proxy's request token, with its own behaviour (defaults: the default proxy's). */
  client(behaviour: Partial<Behaviour>): string {
    const requestToken = fakeJwt('request');
    this.behaviours.set(requestToken, { ...this.behaviour, exchangeAnswer: {}, ...behaviour });
    return requestToken;
  }

  /** Let every held exchange answer go. */
  releaseExchanges(): void {
    const held = this.held;
    this.held = [];
    for (const answer of held) answer();
  }

  /** The options of a --github-oidc proxy, for scenarios that spawn it themselves. */
  proxyOptions(args: readonly string[] = [], requestToken = this.requestToken): StartOptions {
    return {
      stdin: `${requestToken}\n`,
      args: [
        '--github-oidc',
        '--oidc-audience',
        AUDIENCE,
        '--identity-provider-id',
        IDENTITY_PROVIDER_ID,
        '--service-account-id',
        SERVICE_ACCOUNT_ID,
        '--github-oidc-request-url',
        REQUEST_URL,
        ...args,
      ],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: this.authority.caFile },
    };
  }

  /** Where the proxy may write files (server-info). */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** The token an Authorization value carries, as an index into accessTokens (-1: unknown). */
  tokenIndex(authorization: string | undefined): number {
    return this.accessTokens.findIndex((t) => authorization === `Bearer ${t.token}`);
  }

  async close(): Promise<void> {
    for (const proxy of this.proxies) await proxy.stop('SIGKILL', 2_000);
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(this.servers.map((server) => new Promise((resolve) => server.close(resolve))));
    this.authority.remove();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async listen(
    port: number,
    handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void,
  ): Promise<void> {
    const server = createServer({ key: this.authority.key, cert: this.authority.cert });
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => handler(req, res, Buffer.concat(chunks)));
    });
    if (port === 443) this.acceptWebSockets(server);
    this.servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  }

  private onGithub(req: IncomingMessage, res: ServerResponse): void {
    this.githubRequests.push({
      at: Date.now(),
      method: req.method ?? '',
      url: req.url ?? '',
      rawHeaders: req.rawHeaders,
    });
    const requestToken = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    const behaviour = this.behaviours.get(requestToken);
    if (behaviour === undefined) return void res.writeHead(401).end('{"message":"Bad credentials"}');
    const failure = behaviour.githubFailure;
    if (failure === 'hang') return;
    if (failure !== null) return void res.writeHead(failure.status).end(failure.body);
    const idToken = fakeJwt('github');
    this.idTokens.push(idToken);
    this.idTokenOwners.set(idToken, requestToken);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1, value: idToken }));
  }

  private onOpenAi(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    if (req.headers.host === 'auth.openai.com' && req.url === '/oauth/token') return this.onExchange(req, res, body);
    if (req.headers.host === 'api.openai.com' && req.url === '/v1/responses') return this.onResponses(req, res, body);
    res.writeHead(404).end();
  }

  private onExchange(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const record: ExchangeRecord = {
      at: Date.now(),
      headers: req.headers,
      body: body.toString('utf8'),
      answeredAt: 0,
      status: 0,
    };
    this.exchanges.push(record);
    let subjectToken = '';
    try {
      subjectToken = String((JSON.parse(record.body) as { subject_token?: unknown }).subject_token);
    } catch {
      // answered as an unknown subject below
    }
    const behaviour = this.behaviours.get(this.idTokenOwners.get(subjectToken) ?? '');
    const answer = (status: number, text: string): void => {
      record.answeredAt = Date.now();
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(text);
    };
    if (behaviour === undefined) {
      return answer(400, '{"error":"invalid_grant","error_description":"unknown subject token"}');
    }
    const failure = behaviour.exchangeFailure;
    if (failure === 'hang') return;
    const send = (): void => {
      // {subject} in a failure's body: an error answer that echoes the ID token it was given.
      if (failure !== null) return answer(failure.status, failure.body.replace('{subject}', subjectToken));
      const issuedAt = Date.now();
      // Valid until the whole second expires_at names: at least expires_in from now.
      const expiresAt = Math.ceil((issuedAt + behaviour.lifetimeS * 1000) / 1000) * 1000;
      const issued = { token: fakeJwt('access'), issuedAt, expiresAt };
      this.accessTokens.push(issued);
      answer(
        200,
        JSON.stringify({
          access_token: issued.token,
          issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          token_type: 'Bearer',
          expires_in: behaviour.lifetimeS,
          expires_at: expiresAt / 1000,
          ...behaviour.exchangeAnswer,
        }),
      );
    };
    if (this.exchanges.length - 1 >= behaviour.holdFrom) this.held.push(send);
    else send();
  }

  /** Record a request to api.openai.com: whether it carried a token valid now. */
  private recordUpstream(kind: UpstreamRecord['kind'], authorization: string | undefined): boolean {
    const at = Date.now();
    const tokenIndex = this.tokenIndex(authorization);
    const valid = tokenIndex !== -1 && at < (this.accessTokens[tokenIndex] as IssuedToken).expiresAt;
    this.upstreamRequests.push({ at, kind, tokenIndex, valid });
    return valid;
  }

  /** Records the token; answers JSON, or a stream of `stream_ms` (from the body) with an event every 100 ms. */
  private onResponses(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    if (!this.recordUpstream('http', req.headers.authorization)) {
      return void res
        .writeHead(401, { 'content-type': 'application/json' })
        .end('{"error":{"message":"invalid token"}}');
    }
    let request: { stream_ms?: number; echo?: boolean; stream?: boolean } = {};
    try {
      request = JSON.parse(body.toString('utf8')) as typeof request;
    } catch {
      // not JSON: a plain answer
    }
    if (request.echo === true) {
      // A misbehaving gateway that echoes credentials: the token this request carried and the one issued before
      // it (the proxy holds both; a token two renewals old it has let go), which must reach the client masked.
      const current = this.upstreamRequests.at(-1)?.tokenIndex as number;
      const echoed = [current, current - 1].map((i) => this.accessTokens[i]?.token ?? '');
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ echoed }));
    }
    if (request.stream === true && request.stream_ms === undefined) {
      // A Responses API stream, as the Codex CLI expects it.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      return void res.end(responseEvents(CODEX_ANSWER).map(encodeSse).join(''));
    }
    if (request.stream_ms === undefined) {
      return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const started = Date.now();
    const timer = setInterval(() => {
      if (Date.now() - started >= (request.stream_ms ?? 0)) {
        clearInterval(timer);
        return void res.end('data: {"type":"response.completed"}\n\n');
      }
      res.write('data: {"type":"response.output_text.delta","delta":"x"}\n\n');
    }, 100);
    res.on('close', () => clearInterval(timer));
  }

  /** WebSocket mode on api.openai.com: the handshake's token is checked and recorded; each message is answered. */
  private acceptWebSockets(server: Server): void {
    const webSockets = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (!this.recordUpstream('ws', req.headers.authorization) || req.headers.host !== 'api.openai.com') {
        return void socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
      }
      webSockets.handleUpgrade(req, socket, head, (ws) =>
        ws.on('message', () => ws.send(JSON.stringify({ type: 'response.completed' }))),
      );
    });
  }
}
