/**
 * The flash tier's io_uring: reads, writes and fdatasync as promises, many in
 * flight at once, on the event loop's own thread; on a ring made forNvme,
 * NVMe commands through uring_cmd instead (src/device/nvme_passthrough.ts).
 *
 * Operations asked for while JavaScript runs are queued in the ring and
 * handed to the kernel together by one io_uring_enter once it is done
 * (queueMicrotask: the FUSE binding dispatches every request it has read
 * before microtasks run), so requests that arrive together reach the disk
 * together, at their real queue depth, for one system call.  Completions
 * come back through an eventfd that libuv watches with everything else
 * (src/device/native/uring.c): no thread per request, nothing spins when
 * idle.  A lone small read (nothing else in flight or queued) is submitted
 * and waited for in the same io_uring_enter instead: one system call, as a
 * pread, where the eventfd's wake-up and read would add two; at depth 1
 * that was 11-13.5k reads a second through src/fs against 13.7-16.9k for
 * pread.  Beyond `depthMax` operations in flight the rest wait here, so the
 * completion queue can never overflow.
 *
 * Buffers the pools keep are registered with the ring (fixed buffers: the
 * kernel need not pin their pages for every transfer); `register` says
 * whether that worked, and a buffer that is not registered works the same.
 */
import { getSystemErrorMap } from 'node:util';
import { native } from '../native';
import type { RingHandle } from '../native';

const enum Op {
  Read = 0,
  Write = 1,
  Datasync = 2,
  Nvme = 3,
}

const OP_NAMES = ['read', 'write', 'fdatasync', 'nvme'];

interface Pending {
  op: Op;
  fd: number;
  buffer: Buffer | null;
  /** Read and write: the byte offset.  NVMe: the starting logical block. */
  offsetBytes: number;
  /** NVMe only: the command's opcode, namespace and logical block count. */
  nvme?: { opcode: number; nsid: number; blockCount: number };
  resolve: (result: number) => void;
  reject: (error: Error) => void;
}

/** NVMe I/O command opcodes (NVM command set). */
export const NVME_FLUSH = 0x00;
export const NVME_WRITE = 0x01;
export const NVME_READ = 0x02;

/** Completions copied out per call into JavaScript, at most. */
const RESULT_PAIRS = 256;

/** A read up to this size with nothing else in flight is submitted and waited for at once (see above). */
const LONE_READ_BYTES_MAX = 64 * 1024;

export interface RingCounters {
  submitCount: number;
  operationCount: number;
  /** Lone small reads submitted and waited for in one system call. */
  waitedReadCount: number;
  fixedBufferOperationCount: number;
}

export class Ring {
  private readonly handle: RingHandle;
  private readonly results = new Int32Array(2 * RESULT_PAIRS);
  /** By tag: the operation in flight under it. */
  private readonly pending: (Pending | undefined)[] = [];
  private readonly freeTags: number[] = [];
  private readonly waiting: Pending[] = [];
  private readonly slots = new WeakMap<ArrayBuffer, number>();
  /** Tags prepared in the ring and not yet handed to the kernel, oldest first. */
  private unsubmitted: number[] = [];
  private inFlight = 0;
  /** Set when the kernel refused a submission for good: what was not submitted failed with it, and so does everything after. */
  private broken: Error | null = null;
  private submitScheduled = false;
  private closed = false;
  private idle: (() => void) | null = null;
  /** Buffers registered now, and their bytes (a collected buffer leaves the table and these counts). */
  registeredBufferCount = 0;
  registeredBytes = 0;
  private readonly collected = new FinalizationRegistry<number>((bytes) => {
    this.registeredBufferCount -= 1;
    this.registeredBytes -= bytes;
  });
  readonly counters: RingCounters = { submitCount: 0, operationCount: 0, waitedReadCount: 0, fixedBufferOperationCount: 0 };

  /** Throws (with the errno's code) where io_uring is unavailable: kernel.io_uring_disabled, a seccomp filter, an old kernel. */
  constructor(
    readonly depthMax = 128,
    private readonly registerBytesMax = 256 * 1024 * 1024,
    /** A ring for NVMe passthrough commands (128-byte submissions, 32-byte completions). */
    readonly forNvme = false,
  ) {
    this.handle = native.ringOpen(2 * depthMax, this.results, (count) => this.complete(count), forNvme);
  }

  read(fd: number, buffer: Buffer, offsetBytes: number): Promise<number> {
    return this.queue(Op.Read, fd, buffer, offsetBytes);
  }

  write(fd: number, buffer: Buffer, offsetBytes: number): Promise<number> {
    return this.queue(Op.Write, fd, buffer, offsetBytes);
  }

  /** fdatasync of `fd`, ordered after nothing: the caller awaits the writes it must cover first. */
  async datasync(fd: number): Promise<void> {
    await this.queue(Op.Datasync, fd, null, 0);
  }

  /**
   * An NVMe I/O command on a generic NVMe device (/dev/ngXnY), on a ring made
   * forNvme; resolves with the NVMe status (0: success), rejects with an
   * errno.  Buffers go by address: fixed buffers are not used here.
   */
  nvme(fd: number, opcode: number, nsid: number, buffer: Buffer | null, slba: number, blockCount: number): Promise<number> {
    return this.queue(Op.Nvme, fd, buffer, slba, { opcode, nsid, blockCount });
  }

  /** nvme(), submitted and waited for on the spot, on a ring with nothing else in flight (the probe at open); throws the errno. */
  nvmeNow(fd: number, opcode: number, nsid: number, buffer: Buffer | null, slba: number, blockCount: number): number {
    return native.ringNvmeNow(this.handle, fd, opcode, nsid, buffer, slba, blockCount, 0);
  }

  /** Enter a long-lived buffer in the ring's fixed-buffer table (until it is garbage collected); false when the table or the byte budget is full or the kernel refused. */
  register(buffer: Buffer): boolean {
    const memory = buffer.buffer as ArrayBuffer;
    if (this.closed || this.slots.has(memory)) return this.slots.has(memory);
    if (this.registeredBytes + memory.byteLength > this.registerBytesMax) return false;
    const slot = native.ringRegister(this.handle, memory);
    if (slot < 0) return false;
    this.slots.set(memory, slot);
    this.registeredBufferCount += 1;
    this.registeredBytes += memory.byteLength;
    this.collected.register(memory, memory.byteLength); // the native side frees its slot then too
    return true;
  }

  /** Waits for every operation in flight, then tears the ring down. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.inFlight > 0 || this.waiting.length > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    this.closed = true;
    native.ringClose(this.handle);
  }

  private queue(op: Op, fd: number, buffer: Buffer | null, offsetBytes: number, nvme?: Pending['nvme']): Promise<number> {
    if (this.closed) return Promise.reject(new Error('io_uring: the ring is closed'));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      const p: Pending = { op, fd, buffer, offsetBytes, nvme, resolve, reject };
      if (this.inFlight < this.depthMax) this.prep(p);
      else this.waiting.push(p);
    });
  }

  private prep(p: Pending): void {
    const tag = this.freeTags.pop() ?? this.pending.length;
    const slot = p.buffer && p.op !== Op.Nvme ? (this.slots.get(p.buffer.buffer as ArrayBuffer) ?? -1) : -1;
    const flushed = p.nvme
      ? native.ringPrepNvme(this.handle, p.fd, p.nvme.opcode, p.nvme.nsid, p.buffer, p.offsetBytes, p.nvme.blockCount, tag)
      : native.ringPrep(this.handle, p.op as 0 | 1 | 2, p.fd, p.buffer, p.offsetBytes, tag, slot);
    this.unsubmitted.splice(0, flushed);
    this.pending[tag] = p;
    this.inFlight += 1;
    this.unsubmitted.push(tag);
    this.counters.operationCount += 1;
    if (slot >= 0) this.counters.fixedBufferOperationCount += 1;
    if (!this.submitScheduled) {
      this.submitScheduled = true;
      queueMicrotask(() => this.submit());
    }
  }

  private submit(): void {
    this.submitScheduled = false;
    if (this.unsubmitted.length === 0 || this.closed || this.broken) return;
    this.counters.submitCount += 1;
    const lone = this.unsubmitted.length === 1 && this.inFlight === 1 ? this.pending[this.unsubmitted[0]]! : undefined;
    const wait = lone !== undefined && lone.op === Op.Read && lone.buffer!.length <= LONE_READ_BYTES_MAX;
    let taken: number;
    try {
      taken = wait ? native.ringSubmitWait(this.handle) : native.ringSubmit(this.handle);
    } catch (error) {
      this.fail(error as NodeJS.ErrnoException);
      return;
    }
    this.unsubmitted.splice(0, taken);
    if (wait && taken === 1) {
      this.counters.waitedReadCount += 1;
      this.complete(native.ringReap(this.handle)); // none yet (interrupted): the eventfd brings it
    }
    if (this.unsubmitted.length > 0 && !this.submitScheduled) {
      this.submitScheduled = true; // EAGAIN, EBUSY or EINTR (answered as 0 taken): the kernel takes the rest on the next turn
      setImmediate(() => this.submit());
    }
  }

  /**
   * The kernel refused a submission with an error that retrying cannot cure:
   * what it never took fails (the kernel will never touch those buffers, as
   * the ring is never entered again), as does everything after; what it took
   * completes as usual.
   */
  private fail(error: NodeJS.ErrnoException): void {
    const failure: NodeJS.ErrnoException = new Error(`io_uring: ${error.message}`);
    failure.code = error.code;
    this.broken = failure;
    for (const tag of this.unsubmitted.splice(0)) this.settle(tag, -(error.errno ?? 5));
    for (const p of this.waiting.splice(0)) p.reject(failure);
    this.whenIdle();
  }

  private complete(count: number): void {
    for (let i = 0; i < count; i++) this.settle(this.results[2 * i], this.results[2 * i + 1]);
    while (this.inFlight < this.depthMax && this.waiting.length > 0 && !this.broken) this.prep(this.waiting.shift()!);
    this.whenIdle();
  }

  private settle(tag: number, result: number): void {
    const p = this.pending[tag];
    if (!p) return; // failed when its submission was refused
    this.pending[tag] = undefined;
    this.freeTags.push(tag);
    this.inFlight -= 1;
    if (result < 0) p.reject(errnoError(OP_NAMES[p.op], -result));
    else p.resolve(result);
  }

  private whenIdle(): void {
    if (this.inFlight > 0 || !this.idle) return;
    this.idle();
    this.idle = null;
  }
}

const systemErrors = getSystemErrorMap();

/** An Error like Node's own fs errors: `code` the errno's name, `errno` positive. */
function errnoError(op: string, errno: number): NodeJS.ErrnoException {
  const [name, message] = systemErrors.get(-errno) ?? [`E${errno}`, `error ${errno}`];
  const error: NodeJS.ErrnoException = new Error(`${name}: ${message}, ${op}`);
  error.code = name;
  error.errno = errno;
  error.syscall = op;
  return error;
}
