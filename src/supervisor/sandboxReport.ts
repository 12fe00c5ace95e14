// What protects the key, layer by layer, as seen from the supervisor: its own
// hardening, and the worker's identity and sandbox read from the worker's
// /proc/<pid>/status (not from anything the worker says). Logged once at
// startup and printed as a table by --check-sandbox.

import { readProcStatus } from '../shared/procStatus.js';
import type { HardeningReport } from './hardening.js';

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
  readonly hardening: HardeningReport;
}

export function sandboxReport(inputs: ReportInputs): SandboxReport {
  const worker = readProcStatus(inputs.workerPid);
  const own = readProcStatus('self');
  const field = (status: ReadonlyMap<string, string>, name: string): string => (status.get(name) ?? 'unknown').replace(/\s+/g, ' ');
  const uids = field(worker, 'Uid').split(/\s+/);
  const gids = field(worker, 'Gid').split(/\s+/);
  const groups = field(worker, 'Groups');
  const lockedKb = Number.parseInt(field(own, 'VmLck'), 10);
  const rows = [
    { layer: 'worker uid', value: field(worker, 'Uid'), ok: uids.every((id) => Number(id) === inputs.expectedUid) },
    { layer: 'worker gid', value: field(worker, 'Gid'), ok: gids.every((id) => Number(id) === inputs.expectedGid) },
    { layer: 'worker supplementary groups', value: groups === '' ? 'none' : groups, ok: groups === '' || !inputs.switchedUser },
    { layer: 'worker no_new_privs', value: field(worker, 'NoNewPrivs'), ok: field(worker, 'NoNewPrivs') === '1' },
    { layer: 'worker seccomp filter', value: `Seccomp: ${field(worker, 'Seccomp')}`, ok: field(worker, 'Seccomp') === '2' },
    { layer: 'worker capabilities', value: `CapEff ${field(worker, 'CapEff')}`, ok: /^0+$/.test(field(worker, 'CapEff')) },
    { layer: 'worker permission model', value: inputs.permissionModel.detail, ok: inputs.permissionModel.inForce },
    { layer: 'supervisor dumpable', value: String(inputs.hardening.dumpable ?? 'unknown'), ok: inputs.hardening.dumpable === 0 },
    { layer: 'supervisor core limit', value: `${inputs.hardening.coreLimitSoft}/${inputs.hardening.coreLimitHard}`, ok: inputs.hardening.coreLimitSoft === '0' && inputs.hardening.coreLimitHard === '0' },
    { layer: 'key memory locked', value: `VmLck ${Number.isNaN(lockedKb) ? 'unknown' : `${lockedKb} kB`}`, ok: lockedKb > 0 },
  ];
  return { rows, complete: rows.every((row) => row.ok) };
}

/** Fields for the one startup log line. */
export function reportFields(report: SandboxReport): Record<string, string> {
  return Object.fromEntries(report.rows.map((row) => [row.layer.replaceAll(' ', '_'), `${row.ok ? 'ok' : 'MISSING'}: ${row.value}`]));
}

export function formatReport(report: SandboxReport): string {
  const width = Math.max(...report.rows.map((row) => row.layer.length));
  const lines = report.rows.map((row) => `${row.ok ? 'ok     ' : 'MISSING'}  ${row.layer.padEnd(width)}  ${row.value}`);
  lines.push(report.complete ? 'every layer is in force' : 'some layers are missing');
  return `${lines.join('\n')}\n`;
}
