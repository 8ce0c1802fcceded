/**
 * The flash tier as the layers above see it: a fixed-size range of bytes,
 * read and written in whole, aligned blocks, made durable by sync(), with
 * freed ranges handed back to the medium by release().
 *
 * Buffers passed to read() and write() must come from allocBuffer(): with
 * O_DIRECT their memory must be aligned, which Node's own Buffers are not.
 */
export interface FlashDevice {
  readonly path: string;
  readonly sizeBytes: number;
  /** True when I/O bypasses the page cache (O_DIRECT). */
  readonly direct: boolean;
  /**
   * How transfers reach the medium: 'nvme-passthrough' (NVMe commands on the
   * namespace's generic device through io_uring, past the block layer),
   * 'io_uring' (queued, many in flight, no thread per request), 'psync'
   * (pread/pwrite in libuv's thread pool, or on the caller's thread for
   * readNow), 'memory' (a simulated device).
   */
  readonly io: FlashIo;
  /** An aligned, zero-filled buffer of `bytes` (a multiple of the block size). */
  allocBuffer(bytes: number): Buffer;
  /** Fill `buffer` from `offsetBytes`; both aligned to the block size. */
  read(buffer: Buffer, offsetBytes: number): Promise<void>;
  /** read(), but synchronous: for small reads where a thread-pool round trip costs more than the I/O (psync; io_uring has no such round trip). */
  readNow(buffer: Buffer, offsetBytes: number): void;
  /** Write all of `buffer` at `offsetBytes`; both aligned to the block size. */
  write(buffer: Buffer, offsetBytes: number): Promise<void>;
  /** Make every completed write durable (fdatasync, which also flushes the drive cache). */
  sync(): Promise<void>;
  /**
   * Tell the medium a range holds nothing (punch a hole in a file, discard on
   * a device).  Synchronous: the range must be released before it can be
   * allocated again, or a late discard would wipe new data.
   */
  release(offsetBytes: number, lengthBytes: number): void;
  /** What `tierfs status` shows of the device: its path, how I/O reaches it and what that path has done. */
  report(): FlashDeviceReport;
  close(): Promise<void>;
}

export interface FlashDeviceReport {
  path: string;
  io: FlashIo;
  /** Why the path is psync when io_uring was not used ('chosen': --flash-io psync). */
  psyncReason?: string;
  /** An NVMe namespace not on passthrough: why. */
  passthroughReason?: string;
  /** NVMe passthrough: the generic device, namespace, logical block size and largest command. */
  passthrough?: PassthroughReport;
  direct: boolean;
  /** io_uring only: operations made, io_uring_enter calls that submitted them, and those whose buffer was registered. */
  ring?: { operationCount: number; submitCount: number; fixedBufferOperationCount: number; registeredBufferCount: number; registeredBytes: number };
}

import type { PassthroughReport } from './nvme_passthrough';

export type FlashIo = 'nvme-passthrough' | 'io_uring' | 'psync' | 'memory';

/**
 * Which path a flash tier opened on a file or device takes: 'auto' is NVMe
 * passthrough on an NVMe namespace where the kernel and the device allow it,
 * else io_uring where the kernel allows it, else psync.
 */
export type FlashIoChoice = 'auto' | 'nvme-passthrough' | 'io_uring' | 'psync';
export const flashIoChoices: readonly FlashIoChoice[] = ['auto', 'nvme-passthrough', 'io_uring', 'psync'];

export { openFlashDevice, createFlashFile, type OpenOptions } from './file_device';
export { SimulatedDevice } from './simulated_device';
