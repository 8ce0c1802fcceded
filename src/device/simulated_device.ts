/**
 * A flash device in memory for deterministic tests.  Writes land in a
 * volatile layer until sync(); crash() drops whatever was not synced, the way
 * a drive cache does on power loss.  corrupt() flips bytes on request.
 */
import assert from 'node:assert/strict';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import type { FlashDevice, FlashDeviceReport } from './device';

const { blockSizeBytes } = constants;

export class SimulatedDevice implements FlashDevice {
  readonly direct = false;
  readonly io = 'memory';
  private durable = new Map<number, Buffer>();
  private volatile = new Map<number, Buffer>();
  /** Fail every I/O once this many more have succeeded (Infinity: never). */
  failAfterCount = Infinity;

  constructor(
    readonly sizeBytes: number,
    readonly path = 'simulated',
  ) {
    assert.equal(sizeBytes % blockSizeBytes, 0);
  }

  report(): FlashDeviceReport {
    return { path: this.path, io: this.io, direct: false };
  }

  allocBuffer(bytes: number): Buffer {
    assert.equal(bytes % blockSizeBytes, 0);
    return Buffer.alloc(bytes);
  }

  private tick(): void {
    if (this.failAfterCount <= 0) throw new TierfsError('IO', `${this.path}: injected I/O failure`);
    this.failAfterCount -= 1;
  }

  async read(buffer: Buffer, offsetBytes: number): Promise<void> {
    this.readNow(buffer, offsetBytes);
  }

  readNow(buffer: Buffer, offsetBytes: number): void {
    assert.equal(offsetBytes % blockSizeBytes, 0);
    assert.ok(offsetBytes + buffer.length <= this.sizeBytes);
    this.tick();
    for (let at = 0; at < buffer.length; at += blockSizeBytes) {
      const block = (offsetBytes + at) / blockSizeBytes;
      const data = this.volatile.get(block) ?? this.durable.get(block);
      if (data) data.copy(buffer, at);
      else buffer.fill(0, at, at + blockSizeBytes);
    }
  }

  async write(buffer: Buffer, offsetBytes: number): Promise<void> {
    assert.equal(offsetBytes % blockSizeBytes, 0);
    assert.ok(offsetBytes + buffer.length <= this.sizeBytes);
    this.tick();
    for (let at = 0; at < buffer.length; at += blockSizeBytes) {
      this.volatile.set((offsetBytes + at) / blockSizeBytes, Buffer.from(buffer.subarray(at, at + blockSizeBytes)));
    }
  }

  async sync(): Promise<void> {
    this.tick();
    for (const [block, data] of this.volatile) this.durable.set(block, data);
    this.volatile.clear();
  }

  release(offsetBytes: number, lengthBytes: number): void {
    for (let at = 0; at < lengthBytes; at += blockSizeBytes) {
      this.volatile.set((offsetBytes + at) / blockSizeBytes, Buffer.alloc(blockSizeBytes));
    }
  }

  async close(): Promise<void> {}

  /**
   * Power loss: the writes since the last sync() are gone — unless `survives`
   * says a block made it to the medium anyway (a drive flushes its cache in
   * any order: a write of several blocks may be torn).  Returns how many
   * unsynced blocks were dropped and kept.
   */
  crash(survives: (block: number) => boolean = () => false): { droppedBlockCount: number; keptBlockCount: number } {
    let droppedBlockCount = 0;
    let keptBlockCount = 0;
    for (const [block, data] of this.volatile) {
      if (survives(block)) {
        this.durable.set(block, data);
        keptBlockCount += 1;
      } else droppedBlockCount += 1;
    }
    this.volatile.clear();
    return { droppedBlockCount, keptBlockCount };
  }

  /** Flip one byte at `offsetBytes`, in whatever layer currently holds it. */
  corrupt(offsetBytes: number): void {
    const block = Math.floor(offsetBytes / blockSizeBytes);
    const data = this.volatile.get(block) ?? this.durable.get(block) ?? Buffer.alloc(blockSizeBytes);
    const copy = Buffer.from(data);
    copy[offsetBytes % blockSizeBytes] ^= 0xff;
    this.volatile.set(block, copy);
    this.durable.set(block, copy);
  }
}
