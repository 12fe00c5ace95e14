// The proxy's startup, in the one order that is safe: usage errors before
// stdin is touched; the supervisor hardened (not dumpable, no core) before the
// key is read; key errors before any port is opened; nothing listens until the
// key is valid and the worker's sandbox is in place.

import { readFileSync } from 'node:fs';
import { PROGRAM_NAME } from '../../shared/constants.js';
import { messageOf, ProxyError } from '../../shared/errors.js';
import { workerConfigFor } from '../../shared/workerConfig.js';
import { createLogger, writeStderr, type Logger } from '../../shared/logger.js';
import { readAuthHeader, type AuthHeader } from '../authHeader.js';
import { parseCommandLine, USAGE, type ProxyOptions } from './cli.js';
import type { Credential } from '../credential/credential.js';
import { MAX_CREDENTIAL_REQUEST_MS } from '../credential/workloadIdentity.js';
import { startWorkloadIdentity } from '../credential/workloadCredential.js';
import { ClientPolicy } from '../clientPolicy.js';
import { DumpDirectory } from '../dumpFiles.js';
import { hardenSupervisor } from './hardening.js';
import { settleStreamLimit } from './openFileLimit.js';
import { policyOptionsOf } from './policyOptions.js';
import { bindLoopback } from './listenSocket.js';
import { ProxySupervisor } from '../proxySupervisor.js';
import { formatReport, reportFields, sandboxReport } from './sandboxReport.js';
import { ServerInfoFile } from './serverInfo.js';
import { loadWebSocketClient } from '../upstreamSocket.js';
import { findUnreadablePath, resolveWorkerIdentity, unreadableMessage } from './workerIdentity.js';
import {
  DEFAULT_WORKER_ENTRY,
  denyIoUringToWorker,
  workerPermissionFlags,
  workerProgramPaths,
  workerReadPaths,
} from '../workerProcess.js';
import { landlockSupport } from '../../shared/landlock.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/**
 * Run the proxy from a command line. `workerEntry` is for tests that start a
 * misbehaving worker; the CLI always uses the real one.
 */
export function runCommandLine(argv: readonly string[], workerEntry = DEFAULT_WORKER_ENTRY): void {
  process.on('uncaughtException', fail);
  try {
    const command = parseCommandLine(argv);
    if (command.kind === 'help') return void process.stdout.write(USAGE);
    if (command.kind === 'version') return void process.stdout.write(`${PROGRAM_NAME} ${version()}\n`);
    startProxy(command.options, workerEntry).catch(fail);
  } catch (err) {
    fail(err);
  }
}

async function startProxy(options: ProxyOptions, workerEntry: string): Promise<void> {
  const log = createLogger('supervisor', options.logLevel);

  const hardening = hardenSupervisor({ allowWeaker: options.allowWeakerSandbox });
  const streamLimit = settleStreamLimit(options.maxOpenStreams);
  const identity = resolveWorkerIdentity({ uid: options.uid ?? undefined, gid: options.gid ?? undefined });
  if (identity.switchUser) {
    const unreadable = findUnreadablePath(workerProgramPaths(workerEntry), identity.uid, identity.gid);
    if (unreadable !== null) throw new ProxyError('ERR_WORKER_FILES', unreadableMessage(identity, unreadable));
  }

  const limits = {
    timeoutMs: Math.min(options.upstreamTimeoutMs, MAX_CREDENTIAL_REQUEST_MS),
    allowWeaker: options.allowWeakerSandbox,
  };
  const auth: Credential = options.checkSandbox
    ? placeholderAuth()
    : options.workloadIdentity !== null
      ? await startWorkloadIdentity(options.workloadIdentity, limits, log)
      : readAuthHeader();
  // The token file (and the first usage record) exist before the server-info file; removed at exit.
  const policy = options.checkSandbox ? null : ClientPolicy.create(policyOptionsOf(options), log);
  const dumpDirectory =
    options.dumpDir === null || options.checkSandbox ? null : DumpDirectory.open(options.dumpDir, log);
  const serverInfo =
    options.serverInfo === null || options.checkSandbox
      ? null
      : await ServerInfoFile.claim(options.serverInfo, (err) =>
          log.error({ err: err.message }, 'server-info lock compromised'),
        );
  let listen;
  try {
    listen = bindLoopback(options.checkSandbox ? 0 : options.port);
  } catch (err) {
    serverInfo?.remove();
    throw err;
  }
  const permission = workerPermissionFlags(workerEntry);
  if (options.webSocket !== null) await loadWebSocketClient();
  // Said only now, so that a startup failure stays a single line.
  for (const { layer, reason } of hardening.missing)
    log.warn({ layer, reason }, 'supervisor hardening layer missing (--allow-weaker-sandbox)');
  for (const note of identity.notes) log.info(note);
  const derived = options.maxOpenStreams === null ? ' (derived from the open-file limit)' : '';
  log.info({ ...streamLimit }, `at most ${streamLimit.maxOpenStreams} concurrent requests and WebSockets${derived}`);
  for (const warning of identity.warnings) log.warn(warning);
  if (!permission.supported)
    log.warn({ reason: permission.reason }, 'the worker runs without the Node permission model');
  const landlock = landlockSupport();
  const ioUring = denyIoUringToWorker();
  if (ioUring !== null) {
    log.warn({ reason: ioUring }, 'cannot deny io_uring to the worker: it refuses to start where libuv opened one');
  }

  const supervisor: ProxySupervisor = new ProxySupervisor({
    auth,
    listen,
    upstreamUrl: options.upstreamUrl,
    upstreamTimeoutMs: options.upstreamTimeoutMs,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    serverInfo,
    policy,
    dumpDirectory,
    workerConfig: workerConfigFor(
      { ...options, maxOpenStreams: streamLimit.maxOpenStreams },
      {
        dumpDir: dumpDirectory?.path ?? null,
        allowCapabilities: identity.uid === 0,
        readPaths: workerReadPaths(workerEntry),
      },
    ),
    worker: {
      entry: workerEntry,
      nodeFlags: permission.flags,
      ...(identity.switchUser ? { uid: identity.uid, gid: identity.gid } : {}),
    },
    log,
    onServing: (workerPid) => {
      const report = sandboxReport({
        workerPid,
        expectedUid: identity.uid,
        expectedGid: identity.gid,
        switchedUser: identity.switchUser,
        permissionModel: {
          inForce: permission.supported,
          detail: permission.supported ? permission.reason : `off: ${permission.reason}`,
        },
        landlock,
        allowWeaker: options.allowWeakerSandbox,
        hardening,
      });
      if (options.checkSandbox) {
        process.stdout.write(formatReport(report));
        return supervisor.stop(
          report.complete ? 0 : 1,
          report.complete ? 'sandbox check passed' : 'sandbox check: some layers are missing',
          true,
        );
      }
      logReport(log, report.complete, reportFields(report));
    },
  });
  process.on('SIGTERM', () => supervisor.shutdown('received SIGTERM'));
  let interrupted = false;
  process.on('SIGINT', () => {
    if (interrupted) return supervisor.stop(0, 'received a second SIGINT');
    interrupted = true;
    supervisor.shutdown('received SIGINT');
  });
  // From here on a bug in one request must not take the proxy down: log it, keep serving.
  process.removeListener('uncaughtException', fail);
  const survive = (err: unknown): void =>
    log.error(
      { err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) },
      'unexpected error',
    );
  process.on('uncaughtException', survive);
  process.on('unhandledRejection', survive);
  supervisor.start();
}

function logReport(log: Logger, complete: boolean, fields: Record<string, string>): void {
  if (complete) log.info(fields, 'sandbox: every layer in force');
  else log.warn(fields, 'sandbox: some layers are missing');
}

/** --check-sandbox reads no key; the worker it starts is stopped before any request. */
function placeholderAuth(): AuthHeader {
  const placeholder = Buffer.from('check-sandbox-no-key\n');
  let given = false;
  return readAuthHeader((buffer, offset) => {
    if (given) return 0;
    given = true;
    return placeholder.copy(buffer, offset);
  });
}

/** Expected failures: one line, the right exit code, no stack. */
function fail(err: unknown): never {
  if (err instanceof ProxyError) {
    writeStderr(err.exitCode === 2 ? `error: ${err.message}\n` : `Error: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  writeStderr(`Error: internal error: ${messageOf(err)}\n`);
  process.exit(1);
}
