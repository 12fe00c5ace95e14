// A throwaway certificate authority and one server certificate it signs for
// the given DNS names (and 127.0.0.1), made with openssl. Unlike tlsCert.ts's
// self-signed certificate this is a real chain, so clients that refuse a CA
// certificate as a server's (rustls, in the original) accept it too. The
// proxy trusts it through NODE_EXTRA_CA_CERTS (`caFile`).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export class TestAuthority {
  private constructor(
    private readonly dir: string,
    /** PEM of the CA certificate. */
    readonly caFile: string,
    readonly key: Buffer,
    /** The server certificate followed by the CA's. */
    readonly cert: Buffer,
  ) {}

  static create(names: readonly string[]): TestAuthority {
    const dir = mkdtempSync(join(tmpdir(), 'rap-ca-'));
    const file = (name: string): string => join(dir, name);
    const openssl = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore', timeout: 10_000 });
    openssl([
      'req',
      '-x509',
      ...EC,
      '-days',
      '1',
      '-subj',
      '/CN=rap test CA',
      '-keyout',
      file('ca.key'),
      '-out',
      file('ca.pem'),
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign',
    ]);
    openssl([
      'req',
      ...EC,
      '-subj',
      `/CN=${names[0] ?? 'localhost'}`,
      '-keyout',
      file('server.key'),
      '-out',
      file('server.csr'),
    ]);
    const altNames = [...names.map((n) => `DNS:${n}`), 'IP:127.0.0.1'].join(',');
    writeFileSync(
      file('ext.cnf'),
      `subjectAltName=${altNames}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`,
    );
    openssl([
      'x509',
      '-req',
      '-in',
      file('server.csr'),
      '-CA',
      file('ca.pem'),
      '-CAkey',
      file('ca.key'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      file('ext.cnf'),
      '-out',
      file('server.pem'),
    ]);
    const cert = Buffer.concat([readFileSync(file('server.pem')), readFileSync(file('ca.pem'))]);
    return new TestAuthority(dir, file('ca.pem'), readFileSync(file('server.key')), cert);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
