// The open-file limit decides how many streams the proxy can hold (see
// shared/openFileBudget.ts). The soft limit is raised to the hard one before
// the worker is spawned, so the worker inherits it too, and --max-concurrent is
// settled against it: derived from it when not given, refused at startup when
// it asks for more than the limit holds. Either way no stream is later refused
// for want of a descriptor, which a client would see only as a reset or a 503.

import { ProxyError } from '../../shared/errors.js';
import { RLIMIT_NOFILE, getrlimit, setrlimit } from '../../shared/libc.js';
import { MIN_STREAMS, openFilesFor, streamsFor } from '../../shared/openFileBudget.js';

/** Assumed where the limit cannot be read (not Linux): the usual soft limit. */
const USUAL_OPEN_FILE_LIMIT = 1024;

const RAISE = 'raise the hard limit (ulimit -Hn, or LimitNOFILE= in a systemd unit)';

export interface StreamLimit {
  /** --max-concurrent: as given, or derived from the limit. */
  readonly maxOpenStreams: number;
  /** The soft RLIMIT_NOFILE both processes run with, or null when it cannot be read. */
  readonly openFileLimit: number | null;
}

/** Raise the soft RLIMIT_NOFILE to the hard limit and settle --max-concurrent (`given`, or null) against it. */
export function settleStreamLimit(given: number | null): StreamLimit {
  const openFileLimit = process.platform === 'linux' ? raiseOpenFileLimit() : null;
  const holds = streamsFor(openFileLimit ?? USUAL_OPEN_FILE_LIMIT);
  if (openFileLimit !== null && given !== null && given > holds) {
    throw new ProxyError(
      'ERR_OPEN_FILE_LIMIT',
      `--max-concurrent ${given} needs an open-file limit of ${openFilesFor(given)}, ` +
        `but the hard limit is ${openFileLimit} (enough for ${holds}): ${RAISE}, or lower --max-concurrent`,
    );
  }
  if (openFileLimit !== null && given === null && holds < MIN_STREAMS) {
    throw new ProxyError(
      'ERR_OPEN_FILE_LIMIT',
      `the open-file limit is ${openFileLimit}, too low to serve ` +
        `(${MIN_STREAMS} concurrent requests need ${openFilesFor(MIN_STREAMS)}): ${RAISE}`,
    );
  }
  return { maxOpenStreams: given ?? holds, openFileLimit };
}

/** The soft limit, raised to the hard one; as a number (a larger one holds no more streams). */
function raiseOpenFileLimit(): number {
  const limit = getrlimit(RLIMIT_NOFILE, 'getrlimit(RLIMIT_NOFILE)');
  if (limit.soft < limit.hard) {
    setrlimit(RLIMIT_NOFILE, { soft: limit.hard, hard: limit.hard }, 'setrlimit(RLIMIT_NOFILE)');
  }
  const { soft } = getrlimit(RLIMIT_NOFILE, 'getrlimit(RLIMIT_NOFILE)');
  return Number(soft > BigInt(Number.MAX_SAFE_INTEGER) ? BigInt(Number.MAX_SAFE_INTEGER) : soft);
}
