// Each access token is issued by a fresh, short-lived child process
// (issuerMain.ts) rather than by the supervisor itself. The answers of GitHub
// and of the token exchange arrive over TLS, and Node decrypts every TLS read
// into a buffer on its own C stack (TLSWrap::ClearOut) that nothing zeroes: a
// supervisor doing these reads keeps pieces of ID and access tokens in
// ordinary memory until later reads happen to overwrite them. The child's
// memory goes away with it.
//
// The child gets a one-time key and the request token on stdin, written from
// secure memory; it returns the access token sealed with that key
// (crypto_secretbox), so the plaintext exists in the supervisor only where it
// is opened: in secure memory. The next child is started as soon as one is
// done and waits, holding nothing, until it is needed: starting Node takes
// seconds on a loaded machine, which must not delay a renewal.

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import sodium from 'sodium-native';
import { AUTH_SCHEME_PREFIX } from '../../shared/constants.js';
import { WorkloadIdentityError } from '../../shared/errors.js';
import { SecureBytes } from '../secureBytes.js';
import type { IssuerSettings } from './issuerMain.js';
import type { IssuedToken } from './workloadIdentity.js';

export const ISSUER_ENTRY = fileURLToPath(new URL('./issuerMain.js', import.meta.url));
/** The child's answer is one line; its stderr is only kept for a failure's message. */
const MAX_ANSWER_CHARS = 128 * 1024;
const MAX_STDERR_CHARS = 2 * 1024;
/** The child bounds each of its two requests by the timeout; this bounds the child, once it has its input. */
const ALLOWANCE_MS = 10_000;

export class IssuerProcess {
  private waiting: IssuerChild | null = null;
  private readonly working = new Set<IssuerChild>();
  private stopped = false;

  /** `requestToken`: "Bearer <request token>", sent to each child. */
  constructor(
    private readonly settings: IssuerSettings,
    private readonly requestToken: SecureBytes,
  ) {}

  /** One child, one token. Fails with a WorkloadIdentityError (the original's message when the child gave one). */
  async issue(): Promise<IssuedToken> {
    const child = this.waiting ?? new IssuerChild(this.settings);
    this.waiting = null;
    this.working.add(child);
    try {
      return await child.issue(this.requestToken, 2 * this.settings.timeoutMs + ALLOWANCE_MS);
    } finally {
      this.working.delete(child);
      if (!this.stopped) this.waiting = new IssuerChild(this.settings);
    }
  }

  /** End every child (the proxy is stopping). */
  stop(): void {
    this.stopped = true;
    this.waiting?.kill();
    for (const child of this.working) child.kill();
  }
}

class IssuerChild {
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly exited: Promise<string>;
  private answer = '';
  private stderr = '';

  constructor(settings: IssuerSettings) {
    this.child = spawn(process.execPath, ['--no-warnings', ISSUER_ENTRY, JSON.stringify(settings)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: '/',
    });
    const { stdin, stdout, stderr } = this.child;
    stdout
      .setEncoding('latin1')
      .on('data', (s: string) => (this.answer = (this.answer + s).slice(0, MAX_ANSWER_CHARS)));
    stderr.setEncoding('utf8').on('data', (s: string) => (this.stderr = (this.stderr + s).slice(0, MAX_STDERR_CHARS)));
    stdin.on('error', () => {}); // a child that died early: its exit says why
    this.child.on('error', () => {}); // a failed spawn also closes
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code, signal) => resolve(code === null ? `signal ${signal}` : `code ${code}`)),
    );
  }

  /** Give the child a one-time key and the request token; its answer, opened. */
  async issue(requestToken: SecureBytes, timeoutMs: number): Promise<IssuedToken> {
    const key = sodium.sodium_malloc(sodium.crypto_secretbox_KEYBYTES);
    sodium.randombytes_buf(key);
    const timer = setTimeout(() => this.kill(), timeoutMs);
    try {
      this.writeInput(key, requestToken);
      const exit = await this.exited;
      return open(this.answer, key, exit, this.stderr);
    } finally {
      clearTimeout(timer);
      sodium.sodium_free(key);
    }
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }

  /** The key, then the request token and "\n", from one secure buffer freed once written. */
  private writeInput(key: Buffer, requestToken: SecureBytes): void {
    const tokenLength = requestToken.length - AUTH_SCHEME_PREFIX.length;
    const input = sodium.sodium_malloc(key.length + tokenLength + 1);
    key.copy(input);
    requestToken.read((value) => value.copy(input, key.length, AUTH_SCHEME_PREFIX.length));
    input[input.length - 1] = 0x0a;
    let freed = false;
    const free = (): void => {
      if (freed) return;
      freed = true;
      sodium.sodium_free(input);
    };
    this.child.stdin.on('close', free);
    this.child.stdin.end(input, free);
  }
}

/** The child's answer: the token opened into secure memory as "Bearer <token>", or its error. */
function open(answer: string, key: Buffer, exit: string, stderr: string): IssuedToken {
  const line = answer.split('\n')[0] ?? '';
  if (line.startsWith('error ')) throw new WorkloadIdentityError(line.slice('error '.length));
  const match = /^ok (\d+) (\d+) ([0-9a-f]+) ([0-9a-f]+)$/.exec(line);
  if (match === null) {
    const detail = stderr.split('\n').find((l) => l.trim() !== '') ?? 'no output';
    throw new WorkloadIdentityError(
      `could not start workload identity HTTP runtime: the issuer exited (${exit}): ${detail}`,
    );
  }
  const nonce = Buffer.from(match[3] as string, 'hex');
  const sealed = Buffer.from(match[4] as string, 'hex');
  const length = sealed.length - sodium.crypto_secretbox_MACBYTES;
  const garbage = new WorkloadIdentityError(
    'could not start workload identity HTTP runtime: the issuer answered garbage',
  );
  if (nonce.length !== sodium.crypto_secretbox_NONCEBYTES || length <= 0) throw garbage;
  const header = sodium.sodium_malloc(AUTH_SCHEME_PREFIX.length + length);
  header.write(AUTH_SCHEME_PREFIX, 0, 'latin1');
  if (!sodium.crypto_secretbox_open_easy(header.subarray(AUTH_SCHEME_PREFIX.length), sealed, nonce, key)) {
    sodium.sodium_free(header);
    throw garbage;
  }
  return { header: new SecureBytes(header, header.length), requestedAt: Number(match[1]), expiresAt: Number(match[2]) };
}
