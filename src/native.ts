/**
 * Loads tierfs's native addons, built by node-gyp at `npm ci`:
 * src/device/native (device calls, io_uring, CRC-32C, sd_notify) and src/fuse/native
 * (the libfuse 3 low-level binding).
 */
import path from 'node:path';

export interface DeviceNative {
  alignedBuffer(bytes: number): ArrayBuffer;
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): void;
  discard(fd: number, offsetBytes: number, lengthBytes: number): void;
  blockDeviceBytes(fd: number): number;
  /** flock(LOCK_EX | LOCK_NB): false while another open file holds the lock. */
  lockExclusive(fd: number): boolean;
  /** The NVMe namespace id of an NVMe block or generic character device. */
  nvmeNamespaceId(fd: number): number;
  /** NVMe Dataset Management, deallocate: one range of logical blocks (synchronous). */
  nvmeDeallocate(fd: number, nsid: number, slba: number, blockCount: number): void;
  crc32cBlocks(data: Buffer, blockBytes: number, out: Buffer): void;
  crc32c(data: Buffer): number;
  /** One sd_notify datagram to $NOTIFY_SOCKET (a path or an @abstract name). */
  sdNotify(socketPath: string, message: string): void;
  /** An io_uring of `entries` whose completions land in `results` (tag, result pairs) before onComplete(count); throws with the errno's code where io_uring is unavailable. */
  ringOpen(entries: number, results: Int32Array, onComplete: (count: number) => void, nvme: boolean): RingHandle;
  /** Queue an operation (0 read, 1 write, 2 fdatasync: buffer null); `slot` is the buffer's registered index or -1. Answers how many operations queued before it a full submission queue made it submit first. */
  ringPrep(ring: RingHandle, op: 0 | 1 | 2, fd: number, buffer: Buffer | null, offsetBytes: number, tag: number, slot: number): number;
  /** Queue an NVMe I/O command (read 0x02, write 0x01, flush 0x00 with buffer null) for a generic NVMe device (/dev/ngXnY) on a ring opened for NVMe; its result is the NVMe status. Answers as ringPrep. */
  ringPrepNvme(ring: RingHandle, fd: number, opcode: number, nsid: number, buffer: Buffer | null, slba: number, blockCount: number, tag: number): number;
  /** ringPrepNvme, submitted and waited for at once on an idle ring (the probe at open); the NVMe status. */
  ringNvmeNow(ring: RingHandle, fd: number, opcode: number, nsid: number, buffer: Buffer | null, slba: number, blockCount: number, tag: number): number;
  /** Hand every queued operation to the kernel; how many it took. */
  ringSubmit(ring: RingHandle): number;
  /** ringSubmit, and wait in the same system call until a completion is posted. */
  ringSubmitWait(ring: RingHandle): number;
  /** Copy the completions posted so far into `results` without calling onComplete; how many. */
  ringReap(ring: RingHandle): number;
  /** Enter `memory` in the ring's table of fixed buffers until it is garbage collected; its slot, or -1. */
  ringRegister(ring: RingHandle, memory: ArrayBuffer): number;
  /** Tear the ring down; nothing may be in flight. */
  ringClose(ring: RingHandle): void;
}

/** An io_uring made by ringOpen. */
export type RingHandle = { readonly __ring: unique symbol };

/** The addon `target` built in src/<dir>/native, from src/ (tap) or dist/src. */
export function loadAddon<T>(dir: string, target: string): T {
  const candidates = [
    path.join(__dirname, dir, 'native', 'build', 'Release', `${target}.node`),
    path.join(__dirname, '..', '..', 'src', dir, 'native', 'build', 'Release', `${target}.node`),
  ];
  for (const candidate of candidates) {
    try {
      return require(candidate) as T;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  throw new Error(`tierfs addon ${target} not built (run make build); looked in ${candidates.join(', ')}`);
}

export const native: DeviceNative = loadAddon<DeviceNative>('device', 'tierfs_device');
