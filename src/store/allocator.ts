/**
 * Free-space map of the flash tier: one bit per block, in memory only.  It is
 * rebuilt at start-up from the committed extents, so blocks written but never
 * committed before a crash come back free by construction and no free list
 * can disagree with the metadata.  Allocation is next-fit from a cursor, so a
 * sequential writer gets contiguous blocks and its extents merge.
 */
import assert from 'node:assert/strict';

export interface Run {
  startBlock: number;
  blockCount: number;
}

export class Allocator {
  private readonly used: Uint32Array;
  private cursor: number;
  freeCount: number;

  /** Blocks [firstBlock, endBlock) are allocatable. */
  constructor(
    readonly firstBlock: number,
    readonly endBlock: number,
  ) {
    assert.ok(firstBlock >= 0 && endBlock > firstBlock);
    this.used = new Uint32Array(Math.ceil(endBlock / 32));
    this.cursor = firstBlock;
    this.freeCount = endBlock - firstBlock;
  }

  get blockCount(): number {
    return this.endBlock - this.firstBlock;
  }

  isUsed(block: number): boolean {
    return (this.used[block >>> 5] & (1 << (block & 31))) !== 0;
  }

  private set(block: number, value: boolean): void {
    if (value) this.used[block >>> 5] |= 1 << (block & 31);
    else this.used[block >>> 5] &= ~(1 << (block & 31));
  }

  /** Mark a run used at start-up; false when it is out of range or already used (corrupt metadata). */
  markUsed(run: Run): boolean {
    if (run.startBlock < this.firstBlock || run.startBlock + run.blockCount > this.endBlock) return false;
    for (let b = run.startBlock; b < run.startBlock + run.blockCount; b++) if (this.isUsed(b)) return false;
    for (let b = run.startBlock; b < run.startBlock + run.blockCount; b++) this.set(b, true);
    this.freeCount -= run.blockCount;
    return true;
  }

  /** The first free run at or after the cursor (wrapping), at most `blockCountMax` long. */
  allocate(blockCountMax: number): Run | undefined {
    assert.ok(blockCountMax > 0);
    if (this.freeCount === 0) return undefined;
    let block = this.findFree(this.cursor, this.endBlock) ?? this.findFree(this.firstBlock, this.cursor);
    assert.ok(block !== undefined, 'free count says a block is free but none is');
    const start = block;
    while (block < this.endBlock && block - start < blockCountMax && !this.isUsed(block)) {
      this.set(block, true);
      block += 1;
    }
    const run = { startBlock: start, blockCount: block - start };
    this.freeCount -= run.blockCount;
    this.cursor = block < this.endBlock ? block : this.firstBlock;
    return run;
  }

  private findFree(from: number, to: number): number | undefined {
    let block = from;
    while (block < to) {
      if ((block & 31) === 0 && this.used[block >>> 5] === 0xffffffff) {
        block += 32;
        continue;
      }
      if (!this.isUsed(block)) return block;
      block += 1;
    }
    return undefined;
  }

  free(run: Run): void {
    for (let b = run.startBlock; b < run.startBlock + run.blockCount; b++) {
      assert.ok(this.isUsed(b), `double free of block ${b}`);
      this.set(b, false);
    }
    this.freeCount += run.blockCount;
  }
}
