// The --server-info file: {"port":N,"pid":N} and a newline, written once the
// worker serves. Pollers (the Codex GitHub Action waits until it is non-empty)
// must never see a partial line, so it is written to a fresh temporary file in
// the same directory (O_EXCL: a planted file or symlink is refused) and renamed
// into place. proper-lockfile guards it against a second live proxy; a lock
// left by a killed proxy is taken over. It is loaded only for --server-info:
// it patches fs (graceful-fs) and process exit and signal handling
// (signal-exit) as it loads, which the privileged process otherwise does
// without.

import { mkdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ProxyError, errnoCode } from '../../shared/errors.js';

type Lockfile = typeof import('proper-lockfile');

const LOCK_OPTIONS = { realpath: false, stale: 10_000, update: 5_000, retries: 0 } as const;

export class ServerInfoFile {
  private written = false;

  private constructor(
    readonly path: string,
    private readonly lockfile: Lockfile,
  ) {}

  /** Create parent directories and take the lock. Throws ProxyError (exit 1). */
  static async claim(path: string, onCompromised: (err: Error) => void): Promise<ServerInfoFile> {
    const absolute = resolve(path);
    try {
      mkdirSync(dirname(absolute), { recursive: true });
    } catch (err) {
      throw new ProxyError(
        'ERR_SERVER_INFO',
        `cannot create the directory for --server-info ${absolute}: ${errnoCode(err) ?? String(err)}`,
      );
    }
    const { default: lockfile } = await import('proper-lockfile');
    const lock = (): Promise<unknown> => lockfile.lock(absolute, { ...LOCK_OPTIONS, onCompromised });
    try {
      await lock();
    } catch (err) {
      if (errnoCode(err) !== 'ELOCKED') {
        throw new ProxyError(
          'ERR_SERVER_INFO',
          `cannot lock --server-info ${absolute}: ${errnoCode(err) ?? String(err)}`,
        );
      }
      const owner = ownerPid(absolute);
      if (owner === null || isAlive(owner)) {
        const who =
          owner === null
            ? 'another responses-api-proxy (a stale lock expires within 10 s)'
            : `another responses-api-proxy (pid ${owner})`;
        throw new ProxyError(
          'ERR_SERVER_INFO',
          `--server-info ${absolute} is in use by ${who}; stop it or choose another file`,
        );
      }
      // The owner is dead (killed before it could clean up): take the lock over.
      rmSync(`${absolute}.lock`, { recursive: true, force: true });
      await lock();
    }
    return new ServerInfoFile(absolute, lockfile);
  }

  write(port: number, pid: number): void {
    const temporary = `${this.path}.${pid}.${Date.now()}.tmp`;
    writeFileSync(temporary, `${JSON.stringify({ port, pid })}\n`, { flag: 'wx', mode: 0o644 });
    renameSync(temporary, this.path);
    this.written = true;
  }

  /** Remove the file and release the lock (synchronous: runs on the way out). */
  remove(): void {
    if (this.written) {
      try {
        unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
    try {
      this.lockfile.unlockSync(this.path, { realpath: false });
    } catch {
      // lock already released or taken over
    }
  }
}

function ownerPid(path: string): number | null {
  try {
    const { pid } = JSON.parse(readFileSync(path, 'utf8')) as { pid?: unknown };
    return typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}
