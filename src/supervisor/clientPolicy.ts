// What the supervisor enforces on clients and records, in one place for the
// monitor and the upstream streams to ask: the client token, the request and
// token budgets and the rate, and the usage record. The model allow-list is
// the worker's (it parses client bodies; the supervisor parses no client
// JSON); the worker only reports its refusals here, for the record.

import { messageOf, ProtocolError } from '../shared/errors.js';
import type { UsageFields } from '../shared/ipcProtocol.js';
import type { Logger } from '../shared/logger.js';
import { invalidClientToken, type Refusal } from '../shared/refusals.js';
import { Budget } from './budget.js';
import { ClientToken, resolveTokenOwner } from './clientToken.js';
import { policyInForce, type PolicyOptions } from './startup/policyOptions.js';
import { UsageFile, UsageRecord } from './usageRecord.js';
import { ResponseUsageScanner, finalEventUsage, type ResponseUsage } from './usageScan.js';

/** Watches one HTTP response from the upstream for its usage. */
export interface CallMeter {
  head(status: number, contentType: string): void;
  data(chunk: Buffer): void;
  /** The answer is complete: its usage is counted, and returned for the worker's log line of the request. */
  end(): UsageFields | null;
}

export class ClientPolicy {
  private readonly budget: Budget;
  private readonly record: UsageRecord;
  private readonly file: UsageFile | null;

  private constructor(
    private readonly token: ClientToken | null,
    private readonly allowModels: boolean,
    options: PolicyOptions,
    private readonly log: Logger,
  ) {
    this.budget = new Budget(options.limits);
    this.record = new UsageRecord(this.budget);
    const onError = (code: string): void => log.warn({ code }, 'cannot update --usage-file');
    this.file = options.usageFile === null ? null : new UsageFile(options.usageFile, this.record, onError);
  }

  /** null when no policy flag is given: then nothing is checked, counted or parsed. */
  static create(options: PolicyOptions, log: Logger): ClientPolicy | null {
    if (!policyInForce(options)) return null;
    const { clientTokenFile, clientTokenOwner } = options;
    const token =
      clientTokenFile === null ? null : ClientToken.create(clientTokenFile, resolveTokenOwner(clientTokenOwner));
    try {
      return new ClientPolicy(token, options.allowModels !== null, options, log);
    } catch (err) {
      token?.destroy();
      throw err;
    }
  }

  /**
   * A new HTTP request or WebSocket handshake (`authorizations`: the values of
   * its Authorization fields, as bytes): null to let it through, else the answer.
   */
  admitStream(streamId: number, authorizations: readonly Buffer[], webSocket: boolean): Refusal | null {
    let refusal: Refusal | null = null;
    if (this.token !== null && !this.token.matches(authorizations)) refusal = invalidClientToken();
    // A handshake is not a request: it is refused only once a lifetime budget is used up.
    else refusal = webSocket ? this.budget.exhausted() : this.budget.admit();
    if (refusal === null) {
      if (!webSocket) this.record.forwarded.http++;
      return null;
    }
    return this.refused(streamId, refusal);
  }

  /** A client WebSocket message, before any of it goes upstream. */
  admitMessage(streamId: number): Refusal | null {
    const refusal = this.budget.admit();
    if (refusal !== null) return this.refused(streamId, refusal);
    this.record.forwarded.webSocketMessages++;
    return null;
  }

  /** The worker refused a request for its model. */
  modelRefused(): void {
    if (!this.allowModels) throw new ProtocolError('MODEL_REFUSED without --allow-model');
    this.record.refusals.model++;
    this.file?.update();
  }

  meterCall(streamId: number): CallMeter {
    let scanner: ResponseUsageScanner | null = null;
    return {
      head: (_status, contentType) => {
        scanner = new ResponseUsageScanner(contentType);
      },
      data: (chunk) => scanner?.push(chunk),
      end: () => {
        if (scanner === null) return null;
        const usage = scanner.end();
        if (scanner.oversize) this.log.warn({ stream: streamId }, 'upstream answer too large to read its usage');
        this.account(usage);
        return usageFields(usage);
      },
    };
  }

  /**
   * One upstream WebSocket message: a final event's usage is counted and
   * logged here (the worker logs a session once, at its end).
   */
  meterMessage(streamId: number, message: Buffer): void {
    const usage = finalEventUsage(message);
    if (usage === null) return;
    this.account(usage);
    this.log.info({ stream: streamId, websocket: true, ...usageFields(usage) }, 'upstream usage');
  }

  /** At exit: the record written once more and a summary line. */
  close(): void {
    try {
      this.file?.writeNow();
    } catch (err) {
      this.log.warn({ err: messageOf(err) }, 'cannot write --usage-file at exit');
    }
    const { requests, refusals, tokens } = this.record.toJSON();
    this.log.info({ requests, refusals, tokens, remaining: this.budget.remaining() }, 'usage summary');
    this.token?.destroy();
  }

  private refused(streamId: number, refusal: Refusal): Refusal {
    this.record.refusals[refusal.reason]++;
    this.log.info({ stream: streamId, status: refusal.status, refused: refusal.reason }, 'request refused');
    this.file?.update();
    return refusal;
  }

  private account(usage: ResponseUsage | null): void {
    if (usage !== null) {
      this.record.addResponse(usage);
      if (usage.tokens !== null) this.budget.addTokens(usage.tokens.total);
    }
    this.file?.update();
  }
}

/** A response's usage as log fields. */
function usageFields(usage: ResponseUsage | null): UsageFields {
  const tokens = usage?.tokens ?? null;
  const named = { model: usage?.model ?? null, responseId: usage?.responseId ?? null };
  if (tokens === null) return named;
  return {
    ...named,
    inputTokens: tokens.input,
    cachedInputTokens: tokens.cachedInput,
    outputTokens: tokens.output,
    reasoningTokens: tokens.reasoning,
    totalTokens: tokens.total,
  };
}

/**
 * Decides once per client WebSocket message, at its first part, whether it is
 * forwarded; the rest of a refused message is dropped with it.
 */
export class MessageGate {
  private current: Refusal | null | undefined;

  constructor(
    private readonly policy: ClientPolicy,
    private readonly streamId: number,
  ) {}

  /** For each part of a message: null to forward it, else its message's refusal. */
  check(last: boolean): Refusal | null {
    if (this.current === undefined) this.current = this.policy.admitMessage(this.streamId);
    const verdict = this.current;
    if (last) this.current = undefined;
    return verdict;
  }
}
