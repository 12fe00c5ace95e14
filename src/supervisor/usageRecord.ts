// --usage-file: what the proxy forwarded, refused and what the upstream says
// it used, overall and per model, with the limits and what is left. It holds
// no secret. Rewritten after each finished exchange and at exit, always
// atomically (a new temporary file in the same directory, renamed over the
// old one), so a reader polling it only ever sees a complete JSON document.
// Writes while the proxy serves are asynchronous and coalesce: at most one is
// in flight, and changes made meanwhile go out in the next, WRITE_SPACING_MS
// after it, so a busy proxy rewrites the file a few times a second rather
// than back to back; the first change after a quiet spell goes out at once.

import { closeSync, fchmodSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ProxyError, errnoCode } from '../shared/errors.js';
import type { Refusal } from '../shared/refusals.js';
import type { Budget } from './budget.js';
import type { ResponseUsage, TokenCounts } from './usageScan.js';

/** The least time between the end of one write and the start of the next. */
const WRITE_SPACING_MS = 100;

const zero = (): TokenCounts => ({ input: 0, cachedInput: 0, output: 0, reasoning: 0, total: 0 });

function add(into: TokenCounts, from: TokenCounts): void {
  into.input += from.input;
  into.cachedInput += from.cachedInput;
  into.output += from.output;
  into.reasoning += from.reasoning;
  into.total += from.total;
}

interface ModelUsage {
  responses: number;
  tokens: TokenCounts;
}

export class UsageRecord {
  private readonly startedAt = new Date().toISOString();
  readonly forwarded = { http: 0, webSocketMessages: 0 };
  readonly refusals: Record<Refusal['reason'], number> = { token: 0, model: 0, budget: 0, rate: 0 };
  /** Final events (or JSON answers) read, and how many of them carried no usage. */
  responses = 0;
  responsesWithoutUsage = 0;
  readonly tokens = zero();
  private readonly models = new Map<string, ModelUsage>();

  constructor(private readonly budget: Budget) {}

  addResponse(usage: ResponseUsage): void {
    this.responses++;
    if (usage.tokens === null) {
      this.responsesWithoutUsage++;
      return;
    }
    add(this.tokens, usage.tokens);
    const name = usage.model ?? '(unknown)';
    let model = this.models.get(name);
    if (model === undefined) {
      model = { responses: 0, tokens: zero() };
      this.models.set(name, model);
    }
    model.responses++;
    add(model.tokens, usage.tokens);
  }

  toJSON(): Record<string, unknown> {
    const { limits } = this.budget;
    return {
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      requests: { forwarded: this.forwarded.http + this.forwarded.webSocketMessages, ...this.forwarded },
      refusals: { ...this.refusals },
      responses: { read: this.responses, withoutUsage: this.responsesWithoutUsage },
      tokens: { ...this.tokens },
      models: Object.fromEntries(
        [...this.models].map(([name, m]) => [name, { responses: m.responses, tokens: { ...m.tokens } }]),
      ),
      limits: { ...limits },
      remaining: this.budget.remaining(),
    };
  }
}

export class UsageFile {
  readonly path: string;
  private writing = false;
  private dirty = false;
  private sequence = 0;
  /** The temporary file of the write in flight, removed if the process exits first. */
  private inFlight: string | null = null;

  /** Create the directory and write the first version now, so a path that cannot be written fails at startup. */
  constructor(
    path: string,
    private readonly record: UsageRecord,
    private readonly onError: (message: string) => void,
  ) {
    this.path = resolve(path);
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o755 });
      this.writeNow();
    } catch (err) {
      const code = errnoCode(err) ?? String(err);
      throw new ProxyError('ERR_USAGE_FILE', `cannot write --usage-file ${this.path}: ${code}`);
    }
  }

  /** Write soon; writes requested while one is in flight become one. */
  update(): void {
    this.dirty = true;
    if (!this.writing) void this.flush();
  }

  /** Write at once, synchronously (at exit). */
  writeNow(): void {
    if (this.inFlight !== null) {
      try {
        unlinkSync(this.inFlight);
      } catch {
        // renamed or never created
      }
    }
    const temporary = this.temporaryPath();
    const fd = openSync(temporary, 'wx', 0o644);
    try {
      fchmodSync(fd, 0o644);
      writeSync(fd, this.text());
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
  }

  private async flush(): Promise<void> {
    this.writing = true;
    while (this.dirty) {
      this.dirty = false;
      const temporary = this.temporaryPath();
      this.inFlight = temporary;
      try {
        const handle = await open(temporary, 'wx', 0o644);
        try {
          await handle.chmod(0o644);
          await handle.writeFile(this.text());
        } finally {
          await handle.close();
        }
        await rename(temporary, this.path);
      } catch (err) {
        this.onError(errnoCode(err) ?? String(err));
        await unlink(temporary).catch(() => {});
      }
      this.inFlight = null;
      if (this.dirty) await new Promise((resolve) => setTimeout(resolve, WRITE_SPACING_MS).unref());
    }
    this.writing = false;
  }

  private temporaryPath(): string {
    return `${this.path}.${process.pid}.${++this.sequence}.tmp`;
  }

  private text(): string {
    return `${JSON.stringify(this.record, null, 2)}\n`;
  }
}
