// --dump-dir, the supervisor's half: it holds the directory open and writes the
// dump files the worker formats (the worker parses and formats every client
// and upstream byte; here they are opaque). The supervisor names each file
// itself, NNNNNN-<unix ms>-request.json / -response.json as the original does,
// from integers only: the sequence from the stream id, the time the worker
// gives. Each file is created relative to the directory's descriptor with
// O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: an existing name (file, symlink,
// anything) is never replaced or followed; that dump is skipped with one log
// line. The worker has at most DUMP_WINDOW_BYTES in flight: credit returns as
// bytes reach the disk, so a slow disk holds the worker back, never the
// supervisor's memory.

import { accessSync, close, constants, mkdirSync, openSync, write } from 'node:fs';
import { promisify } from 'node:util';
import { dirname, resolve } from 'node:path';
import { ProxyError, ProtocolError, errnoCode } from '../shared/errors.js';
import { DUMP_WINDOW_BYTES, Msg, decodeDumpFile, type FrameWriter } from '../shared/ipcProtocol.js';
import { LibcError, createFileAt } from '../shared/libc.js';
import type { Logger } from '../shared/logger.js';

const FILE_MODE = 0o600;

/** The dump directory, open for the proxy's life. */
export class DumpDirectory {
  /** Said once: the directory has become unwritable (removed, disk full...). */
  private failed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    private readonly log: Logger,
  ) {}

  /**
   * Create --dump-dir if needed (missing parents 0755, the directory itself
   * 0700, owned by whoever started the proxy) and open it. An existing
   * directory is left as it is. Throws ProxyError ERR_DUMP_DIR with one line.
   */
  static open(dir: string, log: Logger): DumpDirectory {
    const absolute = resolve(dir);
    try {
      mkdirSync(dirname(absolute), { recursive: true, mode: 0o755 });
      mkdirSync(absolute, { recursive: true, mode: 0o700 });
    } catch (err) {
      const code = errnoCode(err) ?? String(err);
      const hint = code === 'EEXIST' || code === 'ENOTDIR' ? ' (a part of the path is a file, not a directory)' : '';
      throw new ProxyError('ERR_DUMP_DIR', `cannot create --dump-dir ${absolute}: ${code}${hint}`);
    }
    let fd: number;
    try {
      accessSync(absolute, constants.W_OK | constants.X_OK);
      fd = openSync(absolute, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (err) {
      throw new ProxyError('ERR_DUMP_DIR', `cannot write to --dump-dir ${absolute}: ${errnoCode(err) ?? String(err)}`);
    }
    return new DumpDirectory(absolute, fd, log);
  }

  /** A new file for writing, or null when it cannot be had (logged). */
  create(name: string): number | null {
    try {
      return createFileAt(this.fd, name, FILE_MODE);
    } catch (err) {
      if (err instanceof LibcError && err.errnoName === 'EEXIST') {
        this.log.warn({ file: name }, 'a dump file of that name exists; not replaced, this dump is skipped');
      } else {
        this.writeFailed(name, err);
      }
      return null;
    }
  }

  /** Disk full, directory removed...: said once, proxying continues. */
  writeFailed(name: string, err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    const code = err instanceof LibcError ? err.errnoName : errnoCode(err);
    this.log.error({ file: name, code }, 'cannot write dump files; proxying continues without them');
  }

}

interface OpenFile {
  readonly streamId: number;
  readonly name: string;
  /** Null when the file could not be created: its bytes are dropped, their credit returned. */
  readonly fd: number | null;
}

/**
 * One worker's dump files: one open at a time, written in order. `sequenceBase`
 * is the streams opened by earlier workers, so sequence numbers continue.
 */
export class DumpReceiver {
  private open: OpenFile | null = null;
  /** Bytes received and not yet written (or dropped): the worker's credit in use. */
  private inFlight = 0;
  /** Every write and close, in order. */
  private queue: Promise<void> = Promise.resolve();
  private abandoned = false;

  constructor(
    private readonly directory: DumpDirectory,
    private readonly writer: FrameWriter,
    private readonly sequenceBase: number,
  ) {}

  /** DUMP_FILE; `opened` is the highest stream id the worker has opened. */
  onFile(streamId: number, payload: Buffer, opened: number): void {
    if (this.open !== null) throw new ProtocolError(`DUMP_FILE on stream ${streamId} while another is open`);
    if (streamId > opened) throw new ProtocolError(`DUMP_FILE for stream ${streamId}, which was never opened`);
    const { kind, startedAtMs } = decodeDumpFile(payload);
    const name = `${String(this.sequenceBase + streamId).padStart(6, '0')}-${startedAtMs}-${kind}.json`;
    this.open = { streamId, name, fd: this.directory.create(name) };
  }

  onData(streamId: number, payload: Buffer): void {
    const file = this.current(streamId, 'DUMP_DATA');
    if (this.inFlight + payload.length > DUMP_WINDOW_BYTES) {
      throw new ProtocolError(`dump data beyond its ${DUMP_WINDOW_BYTES}-byte window`);
    }
    this.inFlight += payload.length;
    if (file.fd === null) return this.written(payload.length);
    const fd = file.fd;
    this.queue = this.queue.then(async () => {
      if (!this.abandoned) await this.write(file, fd, payload);
      this.written(payload.length);
    });
  }

  onEnd(streamId: number): void {
    const file = this.current(streamId, 'DUMP_END');
    this.open = null;
    if (file.fd !== null) this.closeLater(file.fd);
  }

  /** The worker is gone: close what is open (a partial file stays as it is). */
  abandon(): void {
    this.abandoned = true;
    const fd = this.open?.fd ?? null;
    if (fd !== null) this.closeLater(fd);
    this.open = null;
  }

  private current(streamId: number, what: string): OpenFile {
    const file = this.open;
    if (file === null || file.streamId !== streamId) throw new ProtocolError(`${what} on stream ${streamId} without DUMP_FILE`);
    return file;
  }

  private async write(file: OpenFile, fd: number, bytes: Buffer): Promise<void> {
    try {
      for (let at = 0; at < bytes.length; ) at += (await writeAt(fd, bytes, at, bytes.length - at, null)).bytesWritten;
    } catch (err) {
      this.directory.writeFailed(file.name, err);
    }
  }

  private written(bytes: number): void {
    this.inFlight -= bytes;
    if (!this.abandoned) this.writer.send(Msg.DUMP_WINDOW, 0, windowPayload(bytes));
  }

  private closeLater(fd: number): void {
    this.queue = this.queue.then(() => closeFd(fd).catch(() => {}));
  }
}

const writeAt = promisify(write);
const closeFd = promisify(close);

function windowPayload(increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment, 0);
  return payload;
}
