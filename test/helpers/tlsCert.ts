// A throwaway certificate for 127.0.0.1, made with openssl, for https:// and
// wss:// upstreams in tests. The supervisor trusts it through
// NODE_EXTRA_CA_CERTS (`trustingEnv`).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export class TestCertificate {
  private constructor(
    private readonly dir: string,
    readonly key: Buffer,
    readonly cert: Buffer,
  ) {}

  static create(): TestCertificate {
    const dir = mkdtempSync(join(tmpdir(), 'rap-tls-'));
    const args = [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ];
    execFileSync('openssl', [...args, '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], {
      stdio: 'ignore',
      timeout: 10_000,
    });
    return new TestCertificate(dir, readFileSync(join(dir, 'key.pem')), readFileSync(join(dir, 'cert.pem')));
  }

  /** An environment for the proxy in which this certificate is trusted. */
  trustingEnv(): NodeJS.ProcessEnv {
    return { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_EXTRA_CA_CERTS: join(this.dir, 'cert.pem') };
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
