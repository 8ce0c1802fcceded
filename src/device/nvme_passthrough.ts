/**
 * NVMe passthrough: the flash tier's reads, writes and flushes as NVMe
 * commands, submitted with io_uring's uring_cmd on the namespace's generic
 * character device (/dev/ngXnY, Linux 5.19+), past the block layer and the
 * file layer.
 *
 * It is taken only for a flash tier on an NVMe namespace's block device
 * (/dev/nvmeXnY), whose descriptor stays open beside it: that keeps the
 * namespace claimed (O_EXCL: nothing mounts it meanwhile), gives its size,
 * and holds the flash tier's lock.  Opening probes it: the first 4 KiB read
 * by passthrough must equal the same bytes read through the block device,
 * so a wrong namespace or block size is found before it can serve.  Any
 * refusal (no generic device, a kernel or device that refuses the command,
 * a probe that differs) leaves the block device to io_uring, with the reason
 * in the log and in `tierfs status`.
 *
 * What each command means: a write is complete when its completion arrives
 * and durable after the next flush (the NVMe Flush command, sent by sync());
 * no write is sent with FUA.  Freed ranges are deallocated with Dataset
 * Management, synchronously, like BLKDISCARD on the block path.  A
 * transfer larger than the namespace takes in one command (its
 * max_hw_sectors_kb and max_segments) is split, the pieces in flight
 * together.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TierfsError } from '../errors';
import { native } from '../native';
import { NVME_FLUSH, NVME_READ, NVME_WRITE, Ring } from './uring';

const PROBE_BYTES = 4096;

export interface PassthroughReport {
  path: string;
  nsid: number;
  lbaBytes: number;
  maxTransferBytes: number;
}

export class NvmePassthrough {
  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly nsid: number,
    readonly lbaBytes: number,
    readonly maxTransferBytes: number,
    readonly ring: Ring,
  ) {}

  /**
   * Passthrough for the NVMe block device `blockPath` (open as `blockFd`),
   * or why not; null when it is not an NVMe namespace at all.  `sysRoot` and
   * `devDir` are /sys and /dev but for tests.
   */
  static open(blockPath: string, blockFd: number, options: { sysRoot?: string; devDir?: string } = {}): NvmePassthrough | string | null {
    const name = path.basename(fs.realpathSync(blockPath));
    const match = /^nvme(\d+)n(\d+)$/.exec(name);
    if (!match) return null;
    const generic = path.join(options.devDir ?? '/dev', `ng${match[1]}n${match[2]}`);
    const queue = path.join(options.sysRoot ?? '/sys', 'block', name, 'queue');
    let fd = -1;
    let ring: Ring | undefined;
    try {
      if (!fs.statSync(generic, { throwIfNoEntry: false })?.isCharacterDevice()) return `no generic NVMe device ${generic} (Linux 5.19 or later makes one)`;
      const lbaBytes = Number(readSys(queue, 'logical_block_size'));
      const hwBytes = Number(readSys(queue, 'max_hw_sectors_kb')) * 1024;
      const segments = Number(readSys(queue, 'max_segments'));
      if (!(lbaBytes >= 512 && 4096 % lbaBytes === 0)) return `${name}: logical blocks of ${lbaBytes} bytes (tierfs needs 512-4096 dividing 4 KiB)`;
      // A command maps the buffer's pages one segment each, and no more bytes than the hardware takes.
      const maxTransferBytes = Math.min(hwBytes || 128 * 1024, (segments || 32) * 4096, 65536 * lbaBytes);
      const maxTransfer = maxTransferBytes - (maxTransferBytes % 4096);
      if (maxTransfer < 4096) return `${name}: commands of at most ${maxTransferBytes} bytes`;
      fd = fs.openSync(generic, fs.constants.O_RDWR);
      const nsid = native.nvmeNamespaceId(fd);
      if (nsid !== native.nvmeNamespaceId(blockFd)) throw new Error(`it is namespace ${nsid}, ${blockPath} is not`);
      ring = new Ring(128, 0, true);
      const why = probe(ring, fd, nsid, lbaBytes, blockFd);
      if (why) throw new Error(why);
      return new NvmePassthrough(generic, fd, nsid, lbaBytes, maxTransfer, ring);
    } catch (error) {
      void ring?.close(); // idle: closes at once
      if (fd >= 0) fs.closeSync(fd);
      return `${generic}: ${(error as Error).message}`;
    }
  }

  read(buffer: Buffer, offsetBytes: number): Promise<void> {
    return this.transfer(NVME_READ, buffer, offsetBytes);
  }

  write(buffer: Buffer, offsetBytes: number): Promise<void> {
    return this.transfer(NVME_WRITE, buffer, offsetBytes);
  }

  /** NVMe Flush: every completed write is in non-volatile media. */
  async flush(): Promise<void> {
    check('flush', 0, await this.ring.nvme(this.fd, NVME_FLUSH, this.nsid, null, 0, 0));
  }

  /** Dataset Management, deallocate, for [offsetBytes, +lengthBytes); ranges of at most 2^32-1 logical blocks. */
  deallocate(offsetBytes: number, lengthBytes: number): void {
    const maxBlocks = 2 ** 32 - 2 ** 12; // a whole number of 4 KiB in any logical block size
    let slba = offsetBytes / this.lbaBytes;
    let left = lengthBytes / this.lbaBytes;
    while (left > 0) {
      const count = Math.min(left, maxBlocks);
      native.nvmeDeallocate(this.fd, this.nsid, slba, count);
      slba += count;
      left -= count;
    }
  }

  report(): PassthroughReport {
    return { path: this.path, nsid: this.nsid, lbaBytes: this.lbaBytes, maxTransferBytes: this.maxTransferBytes };
  }

  async close(): Promise<void> {
    await this.ring.close();
    fs.closeSync(this.fd);
  }

  private async transfer(opcode: number, buffer: Buffer, offsetBytes: number): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = 0; at < buffer.length; at += this.maxTransferBytes) {
      const piece = buffer.subarray(at, Math.min(buffer.length, at + this.maxTransferBytes));
      const slba = (offsetBytes + at) / this.lbaBytes;
      parts.push(this.ring.nvme(this.fd, opcode, this.nsid, piece, slba, piece.length / this.lbaBytes).then((status) => check(opcode === NVME_READ ? 'read' : 'write', offsetBytes + at, status)));
    }
    await Promise.all(parts);
  }
}

/** Why passthrough cannot serve, or null: the first 4 KiB read by passthrough must equal those read through the block device. */
function probe(ring: Ring, fd: number, nsid: number, lbaBytes: number, blockFd: number): string | null {
  const mine = Buffer.from(native.alignedBuffer(PROBE_BYTES));
  const theirs = Buffer.from(native.alignedBuffer(PROBE_BYTES));
  let status: number;
  try {
    status = ring.nvmeNow(fd, NVME_READ, nsid, mine, 0, PROBE_BYTES / lbaBytes);
  } catch (error) {
    return `a passthrough read was refused: ${(error as Error).message}`;
  }
  if (status !== 0) return `a passthrough read answered NVMe status 0x${status.toString(16)}`;
  fs.readSync(blockFd, theirs, 0, PROBE_BYTES, 0);
  return mine.equals(theirs) ? null : 'a passthrough read returned other bytes than the block device';
}

function readSys(dir: string, name: string): string {
  try {
    return fs.readFileSync(path.join(dir, name), 'utf8').trim();
  } catch {
    return '';
  }
}

/** A non-zero NVMe status is a failed command: EIO above, with the status for the log. */
function check(op: string, offsetBytes: number, status: number): void {
  if (status !== 0) throw new TierfsError('IO', `NVMe ${op} at ${offsetBytes}: status 0x${status.toString(16)}`);
}
