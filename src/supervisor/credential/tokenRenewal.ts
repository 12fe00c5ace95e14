// When workload identity tokens are renewed. Requests never wait for this: a
// renewal runs in the background at three quarters of the token's lifetime,
// one at a time however many requests are open; a failed one is retried with
// backoff while the old token stays in use; once it has expired requests are
// answered 503, until a renewal succeeds again by itself.

import type { Logger } from '../../shared/logger.js';
import type { IssuedToken } from './workloadIdentity.js';
import { messageOf } from '../../shared/errors.js';

/** Renew once this fraction of a token's lifetime has passed. */
const RENEW_AT = 3 / 4;
/** A token is not sent in the last tenth of its lifetime (at most this long): it would expire on the way. */
const MAX_EXPIRY_MARGIN_MS = 10_000;
/** Retries after a failed renewal wait 1 s, 2 s, 4 s ... up to this. */
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;
/** Renewals start at least this far apart, whatever the server says about lifetimes. */
const MIN_RENEWAL_INTERVAL_MS = 1_000;

/** Until when `token` is sent with requests (ms). */
export function usableUntil(token: IssuedToken): number {
  const lifetime = token.expiresAt - token.requestedAt;
  return token.expiresAt - Math.min(MAX_EXPIRY_MARGIN_MS, lifetime / 10);
}

function renewalDue(token: IssuedToken): number {
  return token.requestedAt + (token.expiresAt - token.requestedAt) * RENEW_AT;
}

const seconds = (ms: number): number => Math.round(ms / 100) / 10;

export class TokenRenewal {
  private timer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private expired = false;
  private stopped = false;
  private lastStart = 0;

  /**
   * `issue` gets a new token; `install` makes it the one requests use. The
   * first token is `current`; renewals start from it.
   */
  constructor(
    private readonly issue: () => Promise<IssuedToken>,
    private readonly install: (token: IssuedToken) => void,
    current: IssuedToken,
    private readonly log: Logger,
  ) {
    this.scheduleFor(current);
  }

  /** No more renewals; one in flight is discarded when it lands. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
  }

  private scheduleFor(token: IssuedToken): void {
    this.schedule(renewalDue(token) - Date.now());
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    // Said once per outage: from here on requests get 503 until a renewal succeeds.
    this.expiryTimer = setTimeout(
      () => {
        this.expired = true;
        this.log.error(
          { failedRenewals: this.failures },
          'workload identity token expired; requests get 503 until a renewal succeeds',
        );
      },
      usableUntil(token) - Date.now(),
    );
    this.expiryTimer.unref();
  }

  private schedule(delayMs: number): void {
    const earliest = this.lastStart + MIN_RENEWAL_INTERVAL_MS - Date.now();
    this.timer = setTimeout(() => void this.renew(), Math.max(delayMs, earliest, 0));
    this.timer.unref();
  }

  /** Only ever started by the timer, and the next timer is set when it ends: one renewal at a time. */
  private async renew(): Promise<void> {
    this.timer = null;
    this.lastStart = Date.now();
    let token: IssuedToken;
    try {
      token = await this.issue();
    } catch (err) {
      if (this.stopped) return;
      this.failures++;
      const retryMs = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (this.failures - 1));
      const reason = messageOf(err);
      this.log.warn({ reason, retryInS: seconds(retryMs) }, 'workload identity token renewal failed');
      return this.schedule(retryMs);
    }
    if (this.stopped) return token.header.destroy();
    this.install(token);
    const fields = {
      expiresInS: seconds(token.expiresAt - Date.now()),
      renewInS: seconds(renewalDue(token) - Date.now()),
    };
    if (this.expired || this.failures > 0) {
      this.log.info({ ...fields, failedRenewals: this.failures }, 'workload identity renewal recovered');
    } else {
      this.log.info(fields, 'workload identity token renewed');
    }
    this.failures = 0;
    this.expired = false;
    this.scheduleFor(token);
  }
}
