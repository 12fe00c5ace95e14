// Typed errors with stable codes. Expected failures carry a message meant for
// people and the exit code the CLI uses; nothing here ever prints a stack.

/** Every code an expected failure carries, and what it means: the one list. */
export const ERROR_CODES = {
  ERR_USAGE: 'bad command line (exit 2)',
  ERR_KEY_INTAKE: 'the key on stdin is missing or malformed',
  ERR_WORKLOAD_IDENTITY: '--github-oidc settings, request token, GitHub request or token exchange failed',
  ERR_CREDENTIAL_UNAVAILABLE: 'no valid workload identity token is held (a request gets 503)',
  ERR_IPC_PROTOCOL: 'the worker (or supervisor) broke the IPC contract',
  ERR_LIBC: 'a system call failed',
  ERR_HARDENING: "a layer of the supervisor's own hardening is not in force",
  ERR_SANDBOX: "a layer of the worker's sandbox is not in force",
  ERR_WORKER_IDENTITY: '--uid/--gid cannot be used for the worker',
  ERR_WORKER_ID_LEASE: 'no free uid of its own for the worker',
  ERR_WORKER_FILES: "the worker's uid cannot read its program",
  ERR_LISTEN: 'cannot listen on the port',
  ERR_OPEN_FILE_LIMIT: 'the open-file limit (RLIMIT_NOFILE) is too low for --max-concurrent',
  ERR_SERVER_INFO: 'the --server-info file cannot be claimed or written',
  ERR_DUMP_DIR: 'the --dump-dir cannot be created or used',
  ERR_CLIENT_TOKEN: 'the --client-token-file cannot be made',
  ERR_USAGE_FILE: 'the --usage-file cannot be written',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, exitCode = 1) {
    super(message);
    this.name = 'ProxyError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** Bad command line: exit 2, like the original's clap parser. */
export class UsageError extends ProxyError {
  constructor(message: string) {
    super('ERR_USAGE', message, 2);
    this.name = 'UsageError';
  }
}

/** Bad key on stdin: exit 1 with the original's message. */
export class KeyIntakeError extends ProxyError {
  constructor(message: string) {
    super('ERR_KEY_INTAKE', message, 1);
    this.name = 'KeyIntakeError';
  }
}

/** --github-oidc: bad settings or request token, a failed GitHub request or token exchange (exit 1). */
export class WorkloadIdentityError extends ProxyError {
  constructor(message: string) {
    super('ERR_WORKLOAD_IDENTITY', message, 1);
    this.name = 'WorkloadIdentityError';
  }
}

/** No valid workload identity token is held: the request is answered 503 (the original's message), sent nowhere. */
export class CredentialUnavailableError extends ProxyError {
  static readonly CODE = 'ERR_CREDENTIAL_UNAVAILABLE';
  constructor() {
    super(CredentialUnavailableError.CODE, 'workload identity renewal temporarily unavailable; retry later');
    this.name = 'CredentialUnavailableError';
  }
}

/** The worker broke the IPC contract; it is ended. */
export class ProtocolError extends ProxyError {
  constructor(message: string) {
    super('ERR_IPC_PROTOCOL', message, 1);
    this.name = 'ProtocolError';
  }
}

/** What went wrong, from anything thrown: its message, or the thing itself as text. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function errnoCode(err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** A protection layer (supervisor hardening, worker sandbox) is not in force: startup fails closed. */
export class LayerMissingError<Layer extends string> extends ProxyError {
  readonly layer: Layer;
  constructor(code: ErrorCode, what: string, layer: Layer, reason: string) {
    super(code, `${what}: ${layer} is not in force: ${reason} (pass --allow-weaker-sandbox to run without it)`);
    this.layer = layer;
  }
}
