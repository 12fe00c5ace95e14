// The supervisor's own hardening (the original's process_hardening), done
// before the key is read so no copy of it can ever land in a core file or be
// read by another process of the same user:
//   - PR_SET_DUMPABLE 0: no core dumps, no ptrace attach by non-root, and the
//     kernel makes /proc/<pid>/{mem,environ,maps,...} owned by root;
//   - RLIMIT_CORE {0, 0}: no core file even if something made us dumpable
//     again (the hard limit 0 cannot be raised without CAP_SYS_RESOURCE; the
//     worker inherits it too).
// Both are read back (PR_GET_DUMPABLE, getrlimit) so the report states what is
// in force, not what was asked for.

import { LayerMissingError, messageOf } from '../../shared/errors.js';
import { RLIMIT_CORE, formatRlimitValue, getDumpable, getrlimit, setDumpable, setrlimit } from '../../shared/libc.js';

export type HardeningLayer = 'not_dumpable' | 'no_core';

export interface HardeningOptions {
  /** Record a layer that cannot be applied instead of throwing (--allow-weaker-sandbox). */
  readonly allowWeaker?: boolean;
}

export interface HardeningReport {
  /** PR_GET_DUMPABLE after hardening (0 = not dumpable), null when it could not be read. */
  readonly dumpable: number | null;
  /** RLIMIT_CORE after hardening, as /proc/<pid>/limits prints it ("0", "unlimited"), or "unknown". */
  readonly coreLimitSoft: string;
  readonly coreLimitHard: string;
  /** Layers not in force (only ever non-empty with allowWeaker). */
  readonly missing: readonly { readonly layer: HardeningLayer; readonly reason: string }[];
}

export class HardeningError extends LayerMissingError<HardeningLayer> {
  constructor(layer: HardeningLayer, reason: string) {
    super('ERR_HARDENING', 'supervisor hardening', layer, reason);
    this.name = 'HardeningError';
  }
}

/** Make this process non-dumpable with a zero core limit; call before reading the key. */
export function hardenSupervisor(options: HardeningOptions = {}): HardeningReport {
  const missing: { layer: HardeningLayer; reason: string }[] = [];
  const fail = (layer: HardeningLayer, reason: string): void => {
    if (options.allowWeaker !== true) throw new HardeningError(layer, reason);
    missing.push({ layer, reason });
  };
  if (process.platform !== 'linux') {
    fail('not_dumpable', `not available on ${process.platform}`);
    fail('no_core', `not available on ${process.platform}`);
    return { dumpable: null, coreLimitSoft: 'unknown', coreLimitHard: 'unknown', missing };
  }

  let dumpable: number | null = null;
  try {
    setDumpable(0);
    dumpable = getDumpable();
    if (dumpable !== 0) fail('not_dumpable', `PR_GET_DUMPABLE still reads ${dumpable}`);
  } catch (err) {
    if (err instanceof HardeningError) throw err;
    fail('not_dumpable', messageOf(err));
  }

  let coreLimitSoft = 'unknown';
  let coreLimitHard = 'unknown';
  try {
    setrlimit(RLIMIT_CORE, { soft: 0n, hard: 0n }, 'setrlimit(RLIMIT_CORE)');
    const limit = getrlimit(RLIMIT_CORE, 'getrlimit(RLIMIT_CORE)');
    coreLimitSoft = formatRlimitValue(limit.soft);
    coreLimitHard = formatRlimitValue(limit.hard);
    if (limit.soft !== 0n || limit.hard !== 0n) fail('no_core', `RLIMIT_CORE reads ${coreLimitSoft}/${coreLimitHard}`);
  } catch (err) {
    if (err instanceof HardeningError) throw err;
    fail('no_core', messageOf(err));
  }

  return { dumpable, coreLimitSoft, coreLimitHard, missing };
}
