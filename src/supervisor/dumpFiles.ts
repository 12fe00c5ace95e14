// --dump-dir, the supervisor's half: it holds the directory open and writes the
// dump files the worker formats (the worker parses and formats every client
// and upstream byte; here they are opaque). The supervisor names each file
// itself, NNNNNN-<unix ms>-request.json / -response.json as the original does,
// from integers only: the sequence from the stream id, the time the worker
// gives. Each file is created relative to the directory's descriptor, mode
// 0600, without a name (O_TMPFILE) and named once complete (linkat), so no
// reader sees half a dump; where the filesystem has no O_TMPFILE it is created
// under its name with O_CREAT|O_EXCL|O_NOFOLLOW. Either way an existing name
// (file, symlink, anything) is never replaced or followed; that dump is skipped
// with one log line. The worker has at most DUMP_WINDOW_BYTES in flight: credit returns as
// bytes reach the disk, so a slow disk holds the worker back, never the
// supervisor's memory. A worker that sends more files, or larger ones, than it
// could honestly write is ended.

import { accessSync, close, constants, mkdirSync, openSync, write } from 'node:fs';
import { promisify } from 'node:util';
import { dirname, resolve } from 'node:path';
import { ProxyError, ProtocolError, errnoCode } from '../shared/errors.js';
import { DUMP_WINDOW_BYTES, Msg, decodeDumpFile, type FrameWriter } from '../shared/ipcProtocol.js';
import { LibcError, createFileAt, createUnnamedFileAt, linkFileAt } from '../shared/libc.js';
import type { Logger } from '../shared/logger.js';

const FILE_MODE = 0o600;
/** What openat(O_TMPFILE) says where the filesystem (or kernel) cannot make a file without a name. */
const NO_UNNAMED_FILES = new Set(['EOPNOTSUPP', 'EISDIR', 'EINVAL']);

/** A dump file being written; `unnamed` until it is complete (O_TMPFILE). */
export interface NewFile {
  readonly fd: number;
  readonly unnamed: boolean;
}

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

  /** A new file for writing, to be called `name`, or null when it cannot be had (logged). */
  create(name: string): NewFile | null {
    try {
      return { fd: createUnnamedFileAt(this.fd, FILE_MODE), unnamed: true };
    } catch (err) {
      if (!(err instanceof LibcError && NO_UNNAMED_FILES.has(err.errnoName))) return this.refused(name, err);
    }
    try {
      return { fd: createFileAt(this.fd, name, FILE_MODE), unnamed: false };
    } catch (err) {
      return this.refused(name, err);
    }
  }

  /** Name a complete unnamed file (nothing when the name exists: logged). */
  name(file: NewFile, name: string): void {
    try {
      linkFileAt(file.fd, this.fd, name);
    } catch (err) {
      this.refused(name, err);
    }
  }

  private refused(name: string, err: unknown): null {
    if (err instanceof LibcError && err.errnoName === 'EEXIST') {
      this.log.warn({ file: name }, 'a dump file of that name exists; not replaced, this dump is skipped');
    } else {
      this.writeFailed(name, err);
    }
    return null;
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
  readonly file: NewFile | null;
  /** A write failed: the file is not named. */
  failed: boolean;
  /** Bytes received for it. */
  size: number;
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
  /** DUMP_FILEs so far: a forwarded exchange has a request and a response file, so at most two per stream. */
  private files = 0;

  constructor(
    private readonly directory: DumpDirectory,
    private readonly writer: FrameWriter,
    private readonly sequenceBase: number,
    /** dumpFileLimit(--dump-max-bytes). */
    private readonly maxFileBytes: number,
  ) {}

  /** DUMP_FILE; `opened` is the highest stream id the worker has opened. */
  onFile(streamId: number, payload: Buffer, opened: number): void {
    if (this.open !== null) throw new ProtocolError(`DUMP_FILE on stream ${streamId} while another is open`);
    if (streamId > opened) throw new ProtocolError(`DUMP_FILE for stream ${streamId}, which was never opened`);
    const { kind, startedAtMs } = decodeDumpFile(payload);
    if (++this.files > 2 * opened) throw new ProtocolError(`more than 2 dump files per stream (${opened} opened)`);
    const name = `${String(this.sequenceBase + streamId).padStart(6, '0')}-${startedAtMs}-${kind}.json`;
    this.open = { streamId, name, file: this.directory.create(name), failed: false, size: 0 };
  }

  onData(streamId: number, payload: Buffer): void {
    const file = this.current(streamId, 'DUMP_DATA');
    if (this.inFlight + payload.length > DUMP_WINDOW_BYTES) {
      throw new ProtocolError(`dump data beyond its ${DUMP_WINDOW_BYTES}-byte window`);
    }
    file.size += payload.length;
    if (file.size > this.maxFileBytes) throw new ProtocolError(`a dump file of more than ${this.maxFileBytes} bytes`);
    this.inFlight += payload.length;
    if (file.file === null) return this.written(payload.length);
    const { fd } = file.file;
    this.queue = this.queue.then(async () => {
      if (!this.abandoned) await this.write(file, fd, payload);
      this.written(payload.length);
    });
  }

  onEnd(streamId: number): void {
    const open = this.current(streamId, 'DUMP_END');
    this.open = null;
    const { file } = open;
    if (file === null) return;
    this.queue = this.queue.then(async () => {
      if (file.unnamed && !open.failed && !this.abandoned) this.directory.name(file, open.name);
      await closeFd(file.fd).catch(() => {});
    });
  }

  /** The worker is gone: an unfinished file is dropped (one without a name), or left as it is. */
  abandon(): void {
    this.abandoned = true;
    const fd = this.open?.file?.fd;
    if (fd !== undefined) this.queue = this.queue.then(() => closeFd(fd).catch(() => {}));
    this.open = null;
  }

  private current(streamId: number, what: string): OpenFile {
    const file = this.open;
    if (file === null || file.streamId !== streamId)
      throw new ProtocolError(`${what} on stream ${streamId} without DUMP_FILE`);
    return file;
  }

  private async write(file: OpenFile, fd: number, bytes: Buffer): Promise<void> {
    try {
      for (let at = 0; at < bytes.length;) at += (await writeAt(fd, bytes, at, bytes.length - at, null)).bytesWritten;
    } catch (err) {
      file.failed = true;
      this.directory.writeFailed(file.name, err);
    }
  }

  private written(bytes: number): void {
    this.inFlight -= bytes;
    if (!this.abandoned) this.writer.send(Msg.DUMP_WINDOW, 0, windowPayload(bytes));
  }
}

const writeAt = promisify(write);
const closeFd = promisify(close);

function windowPayload(increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment, 0);
  return payload;
}
