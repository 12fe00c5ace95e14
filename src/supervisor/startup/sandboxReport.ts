// What protects the key and the conversations, layer by layer, as seen from
// the supervisor: its own hardening, and the worker's identity and sandbox
// read from outside the worker (/proc/<pid>/status, the owner of its /proc
// files, every other process's ids), not from anything the worker says.
// Landlock leaves no trace there: its row gives the kernel's ABI, which the
// worker enforces or refuses to start. Logged once at startup and printed as a
// table by --check-sandbox.

import { statSync } from 'node:fs';
import { readProcStatus } from '../../shared/procStatus.js';
import { allowedSyscalls } from '../../shared/seccompFilter.js';
import type { HardeningReport } from './hardening.js';
import { processIds } from './workerIdLease.js';

export interface SandboxReport {
  readonly rows: ReadonlyArray<{ readonly layer: string; readonly value: string; readonly ok: boolean }>;
  /** Every layer is in force. */
  readonly complete: boolean;
}

export interface ReportInputs {
  readonly workerPid: number;
  readonly expectedUid: number;
  readonly expectedGid: number;
  /** Root started the worker under another identity (so its groups were cleared). */
  readonly switchedUser: boolean;
  /** The permission-model flag passed to the worker, or why there is none. */
  readonly permissionModel: { readonly inForce: boolean; readonly detail: string };
  /** The kernel's Landlock ABI (0: none, with the reason) and what the worker may write. */
  readonly landlock: { readonly abi: number; readonly reason?: string };
  readonly dumpDir: string | null;
  /** --allow-weaker-sandbox: the worker may run without a layer it could not install (it logs which). */
  readonly allowWeaker: boolean;
  readonly hardening: HardeningReport;
}

/** Whether any process but the worker holds its uid or gid (as real, effective, saved or fs id, or a group). */
function ownUid(workerPid: number, uid: number, gid: number): { value: string; ok: boolean } {
  if (uid === 0) return { value: 'uid 0: root', ok: false };
  if (uid === process.getuid?.()) return { value: `uid ${uid}: the proxy's own (not started as root)`, ok: false };
  let others = 0;
  for (const [pid, ids] of processIds()) if (pid !== workerPid && (ids.has(uid) || ids.has(gid))) others++;
  if (others === 0) return { value: `uid ${uid}, gid ${gid}: no other process`, ok: true };
  return { value: `uid ${uid}, gid ${gid}: shared with ${others} other process${others === 1 ? '' : 'es'}`, ok: false };
}

/** Not dumpable, seen from outside: the kernel gives a non-dumpable process's /proc files to root. */
function dumpable(workerPid: number, euid: number): { value: string; ok: boolean } {
  if (euid === 0) return { value: 'unknown: the worker runs as root', ok: false };
  let owner: number;
  try {
    owner = statSync(`/proc/${workerPid}/environ`).uid; // not the directory itself: the kernel keeps that the task's
  } catch {
    return { value: 'unknown', ok: false };
  }
  if (owner === 0) return { value: "0 (its /proc files are root's)", ok: true };
  return { value: `1 (its /proc files are uid ${owner}'s)`, ok: false };
}

function allowlistSize(): string {
  try {
    return String(allowedSyscalls(process.arch).length);
  } catch {
    return 'no'; // an architecture without a table: the worker could not install a filter
  }
}

function landlockRow(inputs: ReportInputs): { value: string; ok: boolean } {
  const { abi, reason } = inputs.landlock;
  if (abi === 0) return { value: `not available: ${reason ?? 'unknown'}`, ok: false };
  const writes = inputs.dumpDir === null ? 'writes nothing' : `writes only ${inputs.dumpDir}`;
  const weaker = inputs.allowWeaker ? ' (--allow-weaker-sandbox: the worker logs it if it could not)' : '';
  return { value: `ABI ${abi}: reads its code, ${writes}${weaker}`, ok: true };
}

export function sandboxReport(inputs: ReportInputs): SandboxReport {
  const worker = readProcStatus(inputs.workerPid);
  const own = readProcStatus('self');
  const field = (status: ReadonlyMap<string, string>, name: string): string =>
    (status.get(name) ?? 'unknown').replace(/\s+/g, ' ');
  const uids = field(worker, 'Uid').split(/\s+/);
  const gids = field(worker, 'Gid').split(/\s+/);
  const groups = field(worker, 'Groups');
  const lockedKb = Number.parseInt(field(own, 'VmLck'), 10);
  const seccomp = field(worker, 'Seccomp');
  const rows = [
    { layer: 'worker uid', value: field(worker, 'Uid'), ok: uids.every((id) => Number(id) === inputs.expectedUid) },
    { layer: 'worker gid', value: field(worker, 'Gid'), ok: gids.every((id) => Number(id) === inputs.expectedGid) },
    { layer: 'worker uid of its own', ...ownUid(inputs.workerPid, inputs.expectedUid, inputs.expectedGid) },
    {
      layer: 'worker supplementary groups',
      value: groups === '' ? 'none' : groups,
      ok: groups === '' || !inputs.switchedUser,
    },
    { layer: 'worker no_new_privs', value: field(worker, 'NoNewPrivs'), ok: field(worker, 'NoNewPrivs') === '1' },
    { layer: 'worker dumpable', ...dumpable(inputs.workerPid, Number(uids[1])) },
    {
      layer: 'worker seccomp filter',
      value: `Seccomp: ${seccomp}, allowlist of ${allowlistSize()} calls (${process.arch})`,
      ok: seccomp === '2',
    },
    { layer: 'worker landlock', ...landlockRow(inputs) },
    {
      layer: 'worker capabilities',
      value: `CapEff ${field(worker, 'CapEff')}`,
      ok: /^0+$/.test(field(worker, 'CapEff')),
    },
    { layer: 'worker permission model', value: inputs.permissionModel.detail, ok: inputs.permissionModel.inForce },
    {
      layer: 'supervisor dumpable',
      value: String(inputs.hardening.dumpable ?? 'unknown'),
      ok: inputs.hardening.dumpable === 0,
    },
    {
      layer: 'supervisor core limit',
      value: `${inputs.hardening.coreLimitSoft}/${inputs.hardening.coreLimitHard}`,
      ok: inputs.hardening.coreLimitSoft === '0' && inputs.hardening.coreLimitHard === '0',
    },
    {
      layer: 'key memory locked',
      value: `VmLck ${Number.isNaN(lockedKb) ? 'unknown' : `${lockedKb} kB`}`,
      ok: lockedKb > 0,
    },
  ];
  return { rows, complete: rows.every((row) => row.ok) };
}

/** Fields for the one startup log line. */
export function reportFields(report: SandboxReport): Record<string, string> {
  return Object.fromEntries(
    report.rows.map((row) => [row.layer.replaceAll(' ', '_'), `${row.ok ? 'ok' : 'MISSING'}: ${row.value}`]),
  );
}

export function formatReport(report: SandboxReport): string {
  const width = Math.max(...report.rows.map((row) => row.layer.length));
  const lines = report.rows.map((row) => `${row.ok ? 'ok     ' : 'MISSING'}  ${row.layer.padEnd(width)}  ${row.value}`);
  lines.push(report.complete ? 'every layer is in force' : 'some layers are missing');
  return `${lines.join('\n')}\n`;
}
