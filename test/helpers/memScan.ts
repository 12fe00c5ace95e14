// Search another process's memory for a byte string, as root, from outside:
// parse /proc/<pid>/maps, read each mapping through /proc/<pid>/mem with
// pread at the mapping's address, and look for the needle (also across chunk
// boundaries and across adjacent mappings). Used to prove that the key never
// reaches the worker, and (issue 8) where it lives in the supervisor.
//
// Reading another process's mem needs ptrace access (root, or the same uid
// and a dumpable target). Ranges the kernel refuses ([vvar] answers EIO,
// some device mappings EFAULT) are skipped and counted, never fatal.

import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

export interface Mapping {
  readonly start: bigint;
  readonly end: bigint;
  /** "r-xp", "rw-p", "---p" ... */
  readonly perms: string;
  /** Path, [heap], [stack], [anon:...] or '' for anonymous memory. */
  readonly name: string;
  /** The maps line, whitespace collapsed. */
  readonly line: string;
}

export interface Occurrence {
  readonly address: bigint;
  /** The maps line of the mapping the match starts in. */
  readonly mapping: string;
}

export interface ScanOptions {
  /** Stop after this many bytes (default 2 GiB); `truncated` then says so. */
  readonly maxBytes?: number;
  /**
   * Also read mappings without the r bit (PROT_NONE, e.g. libsodium's
   * sodium_mprotect_noaccess pages) when smaps shows resident pages in them:
   * /proc/<pid>/mem reads with FOLL_FORCE, so root can read them too.
   */
  readonly includeInaccessible?: boolean;
  /** Stop at this many occurrences (default 10,000). */
  readonly maxOccurrences?: number;
}

export interface ScanResult {
  readonly occurrences: Occurrence[];
  readonly bytesScanned: number;
  /** Mappings read at least in part. */
  readonly mappingsRead: number;
  /** Mappings (or their tails) the kernel refused, with the reason. */
  readonly skipped: Array<{ readonly mapping: string; readonly reason: string }>;
  /** maxBytes or maxOccurrences was reached before the end. */
  readonly truncated: boolean;
}

const CHUNK = 8 * 1024 * 1024;
const MAX_POSITION = (1n << 63n) - 1n; // pread's loff_t; [vsyscall] lies above

/** /proc/<pid>/maps, parsed. */
export function readMappings(pid: number): Mapping[] {
  const mappings: Mapping[] = [];
  for (const raw of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const match = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+\S+\s+\S+\s+\S+\s*(.*)$/.exec(raw);
    if (match === null) continue;
    mappings.push({
      start: BigInt(`0x${match[1]}`),
      end: BigInt(`0x${match[2]}`),
      perms: match[3] as string,
      name: (match[4] as string).trim(),
      line: raw.replace(/\s+/g, ' ').trim(),
    });
  }
  return mappings;
}

export interface SmapsEntry extends Mapping {
  /** Resident set in kB. */
  readonly rssKb: number;
  /** mlock'ed in kB. */
  readonly lockedKb: number;
}

/** /proc/<pid>/smaps: every mapping with its Rss and Locked sizes. */
export function readSmaps(pid: number): SmapsEntry[] {
  const entries: SmapsEntry[] = [];
  let current: { mapping: Mapping; rssKb: number; lockedKb: number } | null = null;
  const flush = (): void => {
    if (current !== null) entries.push({ ...current.mapping, rssKb: current.rssKb, lockedKb: current.lockedKb });
  };
  for (const raw of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+\S+\s+\S+\s+\S+\s*(.*)$/.exec(raw);
    if (header !== null) {
      flush();
      current = {
        mapping: {
          start: BigInt(`0x${header[1]}`),
          end: BigInt(`0x${header[2]}`),
          perms: header[3] as string,
          name: (header[4] as string).trim(),
          line: raw.replace(/\s+/g, ' ').trim(),
        },
        rssKb: 0,
        lockedKb: 0,
      };
      continue;
    }
    const field = /^(Rss|Locked):\s+(\d+) kB/.exec(raw);
    if (field !== null && current !== null) {
      if (field[1] === 'Rss') current.rssKb = Number(field[2]);
      else current.lockedKb = Number(field[2]);
    }
  }
  flush();
  return entries;
}

/** The smaps entry holding `address`, or null when no mapping does. */
export function mappingAt(pid: number, address: bigint): SmapsEntry | null {
  return readSmaps(pid).find((entry) => entry.start <= address && address < entry.end) ?? null;
}

/** Whether `address` lies in a mapping with locked pages (smaps "Locked:" > 0 kB). */
export function isInLockedMapping(pid: number, address: bigint): boolean {
  return (mappingAt(pid, address)?.lockedKb ?? 0) > 0;
}

function errorCode(err: unknown): string {
  return err !== null && typeof err === 'object' && 'code' in err ? String(err.code) : String(err);
}

/**
 * Every occurrence of `needle` in the memory of `pid`: each readable mapping
 * (and with includeInaccessible, each resident PROT_NONE one) is read through
 * /proc/<pid>/mem in 8 MiB chunks, the last needle.length - 1 bytes carried
 * over so a match across a chunk or across two adjacent mappings counts once.
 */
export function scanProcessMemory(pid: number, needle: Buffer, options: ScanOptions = {}): ScanResult {
  if (needle.length === 0) throw new Error('scanProcessMemory: empty needle');
  const maxBytes = options.maxBytes ?? 2 * 1024 * 1024 * 1024;
  const maxOccurrences = options.maxOccurrences ?? 10_000;
  const overlap = needle.length - 1;
  let mappings: Mapping[];
  if (options.includeInaccessible === true) {
    mappings = readSmaps(pid).filter((entry) => entry.perms[0] === 'r' || entry.rssKb > 0);
  } else {
    mappings = readMappings(pid).filter((mapping) => mapping.perms[0] === 'r');
  }

  const occurrences: Occurrence[] = [];
  const skipped: Array<{ mapping: string; reason: string }> = [];
  let bytesScanned = 0;
  let mappingsRead = 0;
  let truncated = false;
  const buffer = Buffer.allocUnsafe(CHUNK + overlap);
  // Bytes carried from the end of the previous read, and where they end.
  let carried = 0;
  let carriedEnd = -1n;
  // Which mapping each carried byte came from is the previous one; a match that
  // starts in the carry is attributed to it.
  let previousLine = '';

  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    scan: for (const mapping of mappings) {
      if (mapping.end - 1n > MAX_POSITION) {
        skipped.push({ mapping: mapping.line, reason: 'above the 63-bit file offset range' });
        carried = 0;
        continue;
      }
      if (carriedEnd !== mapping.start) carried = 0;
      let address = mapping.start;
      let readAny = false;
      while (address < mapping.end) {
        if (bytesScanned >= maxBytes) {
          truncated = true;
          break scan;
        }
        const want = Number(mapping.end - address < BigInt(CHUNK) ? mapping.end - address : BigInt(CHUNK));
        const room = Math.min(want, maxBytes - bytesScanned);
        let got: number;
        try {
          got = readSync(fd, buffer, carried, room, address);
        } catch (err) {
          skipped.push({ mapping: mapping.line, reason: `${errorCode(err)} at 0x${address.toString(16)}` });
          carried = 0;
          break;
        }
        if (got === 0) {
          skipped.push({ mapping: mapping.line, reason: `end of data at 0x${address.toString(16)}` });
          carried = 0;
          break;
        }
        readAny = true;
        bytesScanned += got;
        const view = buffer.subarray(0, carried + got);
        const base = address - BigInt(carried);
        for (let at = view.indexOf(needle); at !== -1; at = view.indexOf(needle, at + 1)) {
          occurrences.push({ address: base + BigInt(at), mapping: at < carried ? previousLine : mapping.line });
          if (occurrences.length >= maxOccurrences) {
            truncated = true;
            break scan;
          }
        }
        // Carry the tail (no full match fits in it, so nothing is counted twice).
        const keep = Math.min(overlap, view.length);
        view.copy(buffer, 0, view.length - keep);
        carried = keep;
        address += BigInt(got);
        carriedEnd = address;
        previousLine = mapping.line;
      }
      if (readAny) mappingsRead++;
    }
  } finally {
    closeSync(fd);
  }
  return { occurrences, bytesScanned, mappingsRead, skipped, truncated };
}
