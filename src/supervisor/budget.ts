// --max-requests, --max-requests-per-minute and --max-tokens, counted and
// enforced by the supervisor from what it forwards and what the upstream
// reports, so a compromised worker cannot get around them.
//
// A request is admitted or refused when it arrives; an admitted one always
// runs to its end. Requests are counted on admission, so the request budget
// holds exactly however many arrive at once; tokens are known only when a
// response ends, so when many requests run at once the token budget can be
// overrun by what the ones already running use, and no new one starts.

import { quotaExhausted, rateLimited, type Refusal } from '../shared/refusals.js';

export interface BudgetLimits {
  /** Forwarded requests plus client WebSocket messages over the proxy's life; null: no limit. */
  readonly maxRequests: number | null;
  /** Over any 60 s; null: no limit. */
  readonly maxRequestsPerMinute: number | null;
  /** usage.total_tokens reported by the upstream over the proxy's life; null: no limit. */
  readonly maxTokens: number | null;
}

const WINDOW_MS = 60_000;

export class Budget {
  requests = 0;
  tokens = 0;
  /** Admission times of the last maxRequestsPerMinute requests, oldest first (a ring). */
  private readonly recent: number[] = [];
  private oldest = 0;

  constructor(
    readonly limits: BudgetLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** A lifetime budget that is used up, or null. */
  exhausted(): Refusal | null {
    const { maxRequests, maxTokens } = this.limits;
    if (maxRequests !== null && this.requests >= maxRequests) {
      return quotaExhausted(`request budget (--max-requests ${maxRequests})`);
    }
    if (maxTokens !== null && this.tokens >= maxTokens) {
      return quotaExhausted(`token budget (--max-tokens ${maxTokens})`);
    }
    return null;
  }

  /** Count a new request, or say why it is refused. */
  admit(): Refusal | null {
    const exhausted = this.exhausted();
    if (exhausted !== null) return exhausted;
    const perMinute = this.limits.maxRequestsPerMinute;
    if (perMinute !== null) {
      const now = this.now();
      if (this.recent.length < perMinute) {
        this.recent.push(now);
      } else {
        const oldest = this.recent[this.oldest] as number;
        const wait = oldest + WINDOW_MS - now;
        if (wait > 0) return rateLimited(perMinute, Math.max(1, Math.ceil(wait / 1000)));
        this.recent[this.oldest] = now;
        this.oldest = (this.oldest + 1) % perMinute;
      }
    }
    this.requests++;
    return null;
  }

  addTokens(total: number): void {
    this.tokens += total;
  }

  /** What is left of each lifetime budget (null where there is none). */
  remaining(): { requests: number | null; tokens: number | null } {
    const { maxRequests, maxTokens } = this.limits;
    return {
      requests: maxRequests === null ? null : Math.max(0, maxRequests - this.requests),
      tokens: maxTokens === null ? null : Math.max(0, maxTokens - this.tokens),
    };
  }
}
