// The benchmark's results by round, and their formatting: medians over
// rounds and per-round ratios.

import type { TargetName } from './targets.js';

/** One target's figures in one round, by metric key (null: not measured). */
export type Values = Record<string, number | null>;

export interface TestFailures {
  test: string;
  failed: number;
  timeouts: number;
  unserved: number;
  byKind: Record<string, number>;
}

export interface RoundResult {
  round: number;
  order: TargetName[];
  values: Record<string, Values>;
  failures: Record<string, TestFailures[]>;
  notes: Record<string, string[]>;
}

/** One figure of a target per round (NaN where not measured). */
export function valuesOf(rounds: readonly RoundResult[], target: TargetName, key: string): number[] {
  return rounds.map((r) => r.values[target]?.[key] ?? NaN).map((x) => (x === null ? NaN : x));
}

/** a/b per round. */
export function ratios(rounds: readonly RoundResult[], a: TargetName, b: TargetName, key: string): number[] {
  return rounds.map((r) => ratio(r.values[a]?.[key], r.values[b]?.[key]));
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

/** The p-th percentile of ascending `sorted` (nearest rank below; NaN if empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

export function fmt(x: number | null | undefined, digits?: number): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  const a = Math.abs(x);
  const d = digits ?? (a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
  return x.toFixed(d);
}

export function ratio(a: number | null | undefined, b: number | null | undefined): number {
  if (
    a === null ||
    a === undefined ||
    b === null ||
    b === undefined ||
    !Number.isFinite(a) ||
    !Number.isFinite(b) ||
    b === 0
  )
    return NaN;
  return a / b;
}

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
