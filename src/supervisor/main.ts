#!/usr/bin/env node
// Entry point (both bins): parse the command line, read the key, bind, run.
// Order matters: usage errors before stdin is touched; key errors before any
// port is opened; nothing listens until the key is valid.

import { mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { PROGRAM_NAME } from '../shared/constants.js';
import { ProxyError, errnoCode } from '../shared/errors.js';
import { createLogger, writeStderr } from '../shared/logger.js';
import { readAuthHeader } from './authHeader.js';
import { parseCommandLine, USAGE } from './cli.js';
import { bindLoopback } from './listenSocket.js';
import { ProxySupervisor } from './proxySupervisor.js';
import { ServerInfoFile } from './serverInfo.js';
import { DEFAULT_WORKER_ENTRY } from './workerProcess.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(): Promise<void> {
  const command = parseCommandLine(process.argv.slice(2));
  if (command.kind === 'help') return void process.stdout.write(USAGE);
  if (command.kind === 'version') return void process.stdout.write(`${PROGRAM_NAME} ${version()}\n`);
  const { options } = command;

  const auth = readAuthHeader();
  const dumpDir = options.dumpDir === null ? null : createDumpDir(options.dumpDir);
  const log = createLogger('supervisor', options.logLevel);
  const serverInfo = options.serverInfo === null ? null : await ServerInfoFile.claim(options.serverInfo, (err) => log.error({ err: err.message }, 'server-info lock compromised'));
  let listen;
  try {
    listen = bindLoopback(options.port);
  } catch (err) {
    serverInfo?.remove();
    throw err;
  }
  const supervisor = new ProxySupervisor({
    auth,
    listen,
    upstreamUrl: options.upstreamUrl,
    upstreamTimeoutMs: options.upstreamTimeoutMs,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    serverInfo,
    workerConfig: {
      httpShutdown: options.httpShutdown,
      logLevel: options.logLevel,
      maxOpenStreams: options.maxConcurrent,
      maxBodyBytes: options.maxBodyBytes,
      dumpDir,
      dumpMaxBytes: options.dumpMaxBytes,
      dumpSequenceStart: 1,
    },
    workerEntry: DEFAULT_WORKER_ENTRY,
    log,
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
  const survive = (err: unknown): void => log.error({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'unexpected error');
  process.on('uncaughtException', survive);
  process.on('unhandledRejection', survive);
  supervisor.start();
}

/** Create --dump-dir (mode 0700 when new); whether it is writable is the worker's to prove. */
function createDumpDir(dir: string): string {
  const absolute = resolve(dir);
  try {
    mkdirSync(absolute, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new ProxyError('ERR_DUMP_DIR', `cannot create --dump-dir ${absolute}: ${errnoCode(err) ?? String(err)}`);
  }
  return absolute;
}

function fail(err: unknown): never {
  if (err instanceof ProxyError) {
    writeStderr(err.exitCode === 2 ? `error: ${err.message}\n` : `Error: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  writeStderr(`Error: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

process.on('uncaughtException', fail);
main().catch(fail);
