// The proxy as users get it: `npm pack` of this checkout (already built by the
// suite's own script), into a directory every user can read.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** Packs the repository into `dir` and returns the tarball's path. */
export function packProxy(dir: string): string {
  const out = execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', dir], {
    cwd: REPO,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return join(dir, out.trim().split('\n').at(-1) as string);
}

/** The tarball's entries, as `tar -t` lists them. */
export function tarballEntries(tarball: string): string[] {
  return execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n');
}
