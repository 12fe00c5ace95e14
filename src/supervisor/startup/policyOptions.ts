// The client policy's flags (--client-token-file, --client-token-owner,
// --allow-model, --max-requests, --max-requests-per-minute, --max-tokens,
// --usage-file; declared in the flag table, shared/flags.ts) as the policy
// reads them. Each is off by default; without any of them the proxy behaves
// as the original.

import type { FlagValues } from '../../shared/flags.js';
import type { BudgetLimits } from '../budget.js';

export interface PolicyOptions {
  readonly clientTokenFile: string | null;
  /** USER|UID; undefined: the user running the proxy. */
  readonly clientTokenOwner: string | undefined;
  /** --allow-model patterns (enforced by the worker), or null. */
  readonly allowModels: readonly string[] | null;
  readonly limits: BudgetLimits;
  readonly usageFile: string | null;
}

type PolicyFlags = Pick<
  FlagValues,
  | 'clientTokenFile'
  | 'clientTokenOwner'
  | 'allowModels'
  | 'maxRequests'
  | 'maxRequestsPerMinute'
  | 'maxTokens'
  | 'usageFile'
>;

export function policyOptionsOf(flags: PolicyFlags): PolicyOptions {
  return {
    clientTokenFile: flags.clientTokenFile,
    clientTokenOwner: flags.clientTokenOwner ?? undefined,
    allowModels: flags.allowModels,
    limits: {
      maxRequests: flags.maxRequests,
      maxRequestsPerMinute: flags.maxRequestsPerMinute,
      maxTokens: flags.maxTokens,
    },
    usageFile: flags.usageFile,
  };
}

/** Whether the supervisor has anything to enforce or record. */
export function policyInForce(options: PolicyOptions): boolean {
  const { limits } = options;
  return (
    options.clientTokenFile !== null ||
    options.allowModels !== null ||
    options.usageFile !== null ||
    limits.maxRequests !== null ||
    limits.maxRequestsPerMinute !== null ||
    limits.maxTokens !== null
  );
}
