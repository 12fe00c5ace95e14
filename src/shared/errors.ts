// Typed errors with stable codes. Expected failures carry a message meant for
// people and the exit code the CLI uses; nothing here ever prints a stack.

export class ProxyError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode = 1) {
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

export function errnoCode(err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** A protection layer (supervisor hardening, worker sandbox) is not in force: startup fails closed. */
export class LayerMissingError<Layer extends string> extends ProxyError {
  readonly layer: Layer;
  constructor(code: string, what: string, layer: Layer, reason: string) {
    super(code, `${what}: ${layer} is not in force: ${reason} (pass --allow-weaker-sandbox to run without it)`);
    this.layer = layer;
  }
}
