/**
 * The flash tier on a regular file or a block device.
 *
 * It opens with O_DIRECT so that flash I/O bypasses the page cache (hot data
 * lives on flash, not twice in RAM), and falls back to buffered I/O where the
 * file system refuses O_DIRECT (ramfs, some overlays); the log says which.
 * Durability comes from fdatasync in both modes.
 *
 * Transfers go through io_uring where the kernel allows it (src/device/
 * uring.ts): queued, many in flight, completed on the event loop's thread.
 * Where it does not (kernel.io_uring_disabled, a seccomp filter that refuses
 * io_uring_setup, a kernel before 5.6), they are pread/pwrite in libuv's
 * thread pool, as before; the log and `tierfs status` say which, and why.
 * On an NVMe namespace they are NVMe commands on its generic character
 * device where the kernel and the device allow it (src/device/
 * nvme_passthrough.ts), past the block layer.
 *
 * Freed ranges are discarded on a block device, so the SSD learns what is
 * free.  In a file they are punched out only when asked (`discard`): a
 * punched hole must be allocated again by the host file system on the next
 * write, which costs ext4 about 40 % of sequential write speed (measured), so
 * by default a file-backed tier keeps its blocks once written.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { FlashDevice, FlashDeviceReport, FlashIo, FlashIoChoice } from './device';
import { native } from '../native';
import { NvmePassthrough } from './nvme_passthrough';
import { Ring } from './uring';

const { blockSizeBytes } = constants;

/** Buffers up to this size are registered with the ring (the pools' buffers); larger ones are transient or would pin memory they do not use yet. */
const REGISTER_BYTES_MAX = 8 * 1024 * 1024;

function ioError(op: string, path: string, error: unknown): TierfsError {
  return new TierfsError('IO', `${op} ${path}: ${(error as Error).message}`, { cause: error });
}

/** The error for a transfer that moved fewer bytes than asked, or undefined when it moved them all. */
function shortError(op: string, path: string, offsetBytes: number, done: number, wanted: number): TierfsError | undefined {
  return done === wanted ? undefined : new TierfsError('IO', `short ${op} of ${path} at ${offsetBytes}: ${done}/${wanted}`);
}

class FileDevice implements FlashDevice {
  private closed = false;
  readonly io: FlashIo;
  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly sizeBytes: number,
    readonly direct: boolean,
    private readonly block: boolean,
    private readonly discard: boolean,
    /** How transfers are made: see openEngine. */
    private readonly engine: Engine,
  ) {
    this.io = engine.passthrough ? 'nvme-passthrough' : engine.ring ? 'io_uring' : 'psync';
  }

  /** io_uring on the device itself (not with passthrough, which has a ring of its own). */
  private get ring(): Ring | null {
    return this.engine.ring;
  }

  report(): FlashDeviceReport {
    const { ring, passthrough, psyncReason, passthroughReason } = this.engine;
    const carrier = passthrough?.ring ?? ring;
    return {
      path: this.path,
      io: this.io,
      direct: this.direct,
      ...(psyncReason !== undefined && { psyncReason }),
      ...(passthroughReason !== undefined && { passthroughReason }),
      ...(passthrough && { passthrough: passthrough.report() }),
      ...(carrier && { ring: { ...carrier.counters, registeredBufferCount: carrier.registeredBufferCount, registeredBytes: carrier.registeredBytes } }),
    };
  }

  allocBuffer(bytes: number): Buffer {
    assert.ok(bytes > 0 && bytes % blockSizeBytes === 0, `buffer size ${bytes} not block aligned`);
    const buffer = Buffer.from(native.alignedBuffer(bytes));
    if (this.ring && bytes <= REGISTER_BYTES_MAX) this.ring.register(buffer);
    return buffer;
  }

  private checkRange(buffer: Buffer, offsetBytes: number): void {
    assert.ok(!this.closed, 'device is closed');
    assert.equal(offsetBytes % blockSizeBytes, 0, 'unaligned device offset');
    assert.equal(buffer.length % blockSizeBytes, 0, 'unaligned device length');
    assert.ok(offsetBytes + buffer.length <= this.sizeBytes, 'I/O past the end of the device');
  }

  read(buffer: Buffer, offsetBytes: number): Promise<void> {
    this.checkRange(buffer, offsetBytes);
    if (this.engine.passthrough) return this.passed('read', this.engine.passthrough.read(buffer, offsetBytes));
    if (this.ring) return this.ringTransfer('read', this.ring.read(this.fd, buffer, offsetBytes), offsetBytes, buffer.length);
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buffer, 0, buffer.length, offsetBytes, (error, bytesRead) => {
        const failure = error ? ioError('read', this.path, error) : shortError('read', this.path, offsetBytes, bytesRead, buffer.length);
        if (failure) reject(failure);
        else resolve();
      });
    });
  }

  readNow(buffer: Buffer, offsetBytes: number): void {
    this.checkRange(buffer, offsetBytes);
    let bytesRead: number;
    try {
      bytesRead = fs.readSync(this.fd, buffer, 0, buffer.length, offsetBytes);
    } catch (error) {
      throw ioError('read', this.path, error);
    }
    const failure = shortError('read', this.path, offsetBytes, bytesRead, buffer.length);
    if (failure) throw failure;
  }

  /** An outcome with nothing to count: TierfsErrors (NVMe statuses) stay as they are; an errno becomes an IO error. */
  private async passed(op: string, done: Promise<void>): Promise<void> {
    try {
      await done;
    } catch (error) {
      throw error instanceof TierfsError ? error : ioError(op, this.path, error);
    }
  }

  private async ringTransfer(op: string, transfer: Promise<number>, offsetBytes: number, wanted: number): Promise<void> {
    let done: number;
    try {
      done = await transfer;
    } catch (error) {
      throw ioError(op, this.path, error);
    }
    const failure = shortError(op, this.path, offsetBytes, done, wanted);
    if (failure) throw failure;
  }

  write(buffer: Buffer, offsetBytes: number): Promise<void> {
    this.checkRange(buffer, offsetBytes);
    if (this.engine.passthrough) return this.passed('write', this.engine.passthrough.write(buffer, offsetBytes));
    if (this.ring) return this.ringTransfer('write', this.ring.write(this.fd, buffer, offsetBytes), offsetBytes, buffer.length);
    return new Promise((resolve, reject) => {
      fs.write(this.fd, buffer, 0, buffer.length, offsetBytes, (error, written) => {
        const failure = error ? ioError('write', this.path, error) : shortError('write', this.path, offsetBytes, written, buffer.length);
        if (failure) reject(failure);
        else resolve();
      });
    });
  }

  async sync(): Promise<void> {
    if (this.engine.passthrough) return this.passed('flush', this.engine.passthrough.flush());
    if (this.ring) return this.passed('fdatasync', this.ring.datasync(this.fd));
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.fd, (error) => (error ? reject(ioError('fdatasync', this.path, error)) : resolve()));
    });
  }

  release(offsetBytes: number, lengthBytes: number): void {
    assert.ok(offsetBytes % blockSizeBytes === 0 && lengthBytes % blockSizeBytes === 0);
    if (!this.discard) return;
    try {
      if (this.engine.passthrough) this.engine.passthrough.deallocate(offsetBytes, lengthBytes);
      else if (this.block) native.discard(this.fd, offsetBytes, lengthBytes);
      else native.punchHole(this.fd, offsetBytes, lengthBytes);
    } catch (error) {
      // Not every medium can discard; the blocks are free in our allocator either way.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EOPNOTSUPP' && code !== 'ENOTTY') throw ioError('release', this.path, error);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.engine.passthrough?.close();
    await this.ring?.close();
    fs.closeSync(this.fd);
  }
}

/** Probe an O_DIRECT descriptor with one aligned read; some file systems accept the flag and fail I/O. */
function directWorks(fd: number): boolean {
  try {
    fs.readSync(fd, Buffer.from(native.alignedBuffer(blockSizeBytes)), 0, blockSizeBytes, 0);
    return true;
  } catch {
    return false;
  }
}

export interface OpenOptions {
  /** O_DIRECT where the file system allows it (default true). */
  direct?: boolean;
  /** Hand freed ranges back to the medium (default: on for block devices, off for files). */
  discard?: boolean;
  /** NVMe passthrough, io_uring or psync; 'auto' (the default) takes the first of them the kernel and the device allow. */
  io?: FlashIoChoice;
  /** How long to wait for another holder of the flash tier to let go (default constants.flashLockWaitMs). */
  lockWaitMs?: number;
}

/**
 * Take the flash tier's exclusive lock, waiting up to `waitMs` for its
 * holder: another tierfs on it, or a killed one whose last writes are still
 * in flight (see lockExclusive in src/device/native/device.c).  Synchronous:
 * opening happens before serving.
 */
function lockFlash(fd: number, path: string, waitMs: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + waitMs;
  while (!native.lockExclusive(fd)) {
    if (Date.now() >= deadline) throw new TierfsError('BUSY', `flash tier ${path} is in use by another process (a running tierfs, or one that died and has writes still in flight)`);
    Atomics.wait(pause, 0, 0, 20);
  }
}

/**
 * How a flash tier's transfers are made: NVMe passthrough (an NVMe
 * namespace's block device, where the kernel and the device allow it),
 * else io_uring on the device, else psync; each with why the faster one was
 * not taken.  A path asked for by name that cannot be had is an error.
 */
interface Engine {
  passthrough: NvmePassthrough | null;
  ring: Ring | null;
  /** Why not passthrough, for an NVMe block device on 'auto'. */
  passthroughReason?: string;
  /** Why psync: 'chosen', or io_uring's refusal. */
  psyncReason?: string;
}

function openEngine(path: string, fd: number, block: boolean, choice: FlashIoChoice): Engine {
  if (choice === 'psync') return { passthrough: null, ring: null, psyncReason: 'chosen' };
  let passthroughReason: string | undefined;
  if (choice === 'nvme-passthrough' || (choice === 'auto' && block)) {
    const opened = block ? NvmePassthrough.open(path, fd) : null;
    if (opened instanceof NvmePassthrough) return { passthrough: opened, ring: null };
    if (choice === 'nvme-passthrough')
      throw new TierfsError('NOT_SUPPORTED', `flash tier ${path}: NVMe passthrough was asked for and is unavailable: ${opened ?? 'not an NVMe namespace\'s block device'}`);
    if (opened !== null) passthroughReason = opened; // an NVMe namespace that refused it: worth saying; other disks are no news
  }
  try {
    return { passthrough: null, ring: new Ring(), ...(passthroughReason !== undefined && { passthroughReason }) };
  } catch (error) {
    const why = `${(error as Error).message}${(error as NodeJS.ErrnoException).code === 'EPERM' ? ' (kernel.io_uring_disabled or a seccomp filter)' : ''}`;
    if (choice === 'io_uring') throw new TierfsError('NOT_SUPPORTED', `flash tier ${path}: io_uring was asked for and is unavailable: ${why}`, { cause: error });
    return { passthrough: null, ring: null, psyncReason: why, ...(passthroughReason !== undefined && { passthroughReason }) };
  }
}

export function openFlashDevice(path: string, options: OpenOptions = {}): FlashDevice {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch (error) {
    throw new TierfsError('NOT_FOUND', `flash tier ${path} does not exist`, { cause: error });
  }
  const block = stat.isBlockDevice();
  if (!block && !stat.isFile())
    throw new TierfsError('NOT_OURS', `flash tier ${path} is neither a regular file nor a block device`);
  const wantDirect = options.direct ?? true;
  // O_EXCL on a block device: refused (EBUSY) while it is mounted or claimed by another owner.
  const exclusive = block ? fs.constants.O_EXCL : 0;
  let fd = -1;
  let direct = false;
  if (wantDirect) {
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_DIRECT | exclusive);
      direct = directWorks(fd);
      if (!direct) {
        fs.closeSync(fd);
        fd = -1;
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EBUSY') throw new TierfsError('BUSY', `${path} is in use (mounted or claimed by another program)`, { cause: error });
      if (code !== 'EINVAL') throw ioError('open', path, error);
    }
  }
  if (fd < 0) {
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR | exclusive);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EBUSY')
        throw new TierfsError('BUSY', `${path} is in use (mounted or claimed by another program)`, { cause: error });
      throw ioError('open', path, error);
    }
  }
  const rawBytes = block ? native.blockDeviceBytes(fd) : stat.size;
  const sizeBytes = rawBytes - (rawBytes % blockSizeBytes);
  const discard = options.discard ?? block;
  let engine: Engine;
  try {
    lockFlash(fd, path, options.lockWaitMs ?? constants.flashLockWaitMs);
    engine = openEngine(path, fd, block, options.io ?? 'auto');
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  log.info('flash tier opened', {
    path,
    kind: block ? 'block-device' : 'file',
    cache: direct ? 'direct' : wantDirect ? 'buffered (O_DIRECT refused here; fdatasync for durability)' : 'buffered',
    io: engine.passthrough
      ? `nvme-passthrough (${engine.passthrough.path}, namespace ${engine.passthrough.nsid}, ${engine.passthrough.lbaBytes}-byte blocks, ${engine.passthrough.maxTransferBytes / 1024} KiB a command)`
      : engine.ring
        ? 'io_uring'
        : `psync (${engine.psyncReason})`,
    ...(engine.passthroughReason !== undefined && { passthrough: `not used: ${engine.passthroughReason}` }),
    discard: discard ? (block ? 'discard' : 'punch-holes') : 'off',
    sizeBytes,
  });
  return new FileDevice(path, fd, sizeBytes, direct, block, discard, engine);
}

/** Create (or extend) a sparse file to hold a file-backed flash tier. */
export function createFlashFile(path: string, sizeBytes: number): void {
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  try {
    fs.ftruncateSync(fd, sizeBytes);
  } finally {
    fs.closeSync(fd);
  }
}
