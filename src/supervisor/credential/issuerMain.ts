// The short-lived issuer process (see issuerProcess.ts): asks GitHub for an ID
// token and exchanges it, once, then exits, taking with it whatever its TLS
// reads left behind. Its settings (public) come as argv[2]; stdin brings a
// one-time key and then the request token, read into secure memory; stdout
// gets one line: "ok <requestedAt> <expiresAt> <nonce> <sealed token>" (hex,
// the token sealed with the one-time key) or "error <message>".

import { writeSync } from 'node:fs';
import sodium from 'sodium-native';
import { AUTH_SCHEME_PREFIX } from '../../shared/constants.js';
import { errnoCode, messageOf, WorkloadIdentityError } from '../../shared/errors.js';
import { readStdin } from '../authHeader.js';
import { hardenSupervisor } from '../startup/hardening.js';
import { SecureBytes } from '../secureBytes.js';
import { readRequestToken } from './requestToken.js';
import { WorkloadIdentityClient, type IssuedToken, type WorkloadIdentitySettings } from './workloadIdentity.js';

/** What the supervisor passes on the command line; none of it is secret. */
export interface IssuerSettings extends Omit<WorkloadIdentitySettings, 'requestUrl'> {
  readonly requestUrl: string;
  readonly timeoutMs: number;
  readonly allowWeaker: boolean;
}

function readKey(): SecureBytes {
  const key = sodium.sodium_malloc(sodium.crypto_secretbox_KEYBYTES);
  let received = 0;
  while (received < key.length) {
    const n = readStdin(key, received, key.length - received);
    if (n === 0) throw new Error('stdin ended before the one-time key');
    received += n;
  }
  return new SecureBytes(key, key.length);
}

/** The token sealed with `key`, as "<nonce> <ciphertext>" in hex (which is safe in ordinary memory). */
function seal(token: IssuedToken, key: SecureBytes): string {
  const nonce = Buffer.alloc(sodium.crypto_secretbox_NONCEBYTES);
  sodium.randombytes_buf(nonce);
  const sealed = Buffer.alloc(token.header.length - AUTH_SCHEME_PREFIX.length + sodium.crypto_secretbox_MACBYTES);
  token.header.read((value) =>
    key.read((k) => sodium.crypto_secretbox_easy(sealed, value.subarray(AUTH_SCHEME_PREFIX.length), nonce, k)),
  );
  return `${nonce.toString('hex')} ${sealed.toString('hex')}`;
}

function writeLine(line: string): void {
  const bytes = Buffer.from(`${line}\n`);
  for (let at = 0; at < bytes.length;) {
    try {
      at += writeSync(1, bytes, at);
    } catch (err) {
      if (errnoCode(err) !== 'EAGAIN') throw err;
    }
  }
}

async function main(): Promise<void> {
  let line: string;
  try {
    const settings = JSON.parse(process.argv[2] ?? '') as IssuerSettings;
    hardenSupervisor({ allowWeaker: settings.allowWeaker });
    const key = readKey();
    const requestToken = readRequestToken();
    const client = new WorkloadIdentityClient(
      { ...settings, requestUrl: new URL(settings.requestUrl) },
      requestToken,
      settings.timeoutMs,
    );
    const token = await client.issue();
    line = `ok ${token.requestedAt} ${token.expiresAt} ${seal(token, key)}`;
  } catch (err) {
    const message = messageOf(err);
    const known = err instanceof WorkloadIdentityError;
    line = `error ${known ? message : `could not start workload identity HTTP runtime: ${message}`}`;
  }
  writeLine(line.replace(/[\r\n]+/g, ' '));
  process.exit(0);
}

void main();
