/**
 * The flash extent store: file bytes on the flash tier, mapped by extents in
 * the metadata store.
 *
 * - Copy-on-write: a write goes to newly allocated blocks; the mapping is
 *   switched in metadata afterwards; the blocks it replaced are freed only
 *   after the commit that drops them AND after every read that might still
 *   use them has finished (read epochs).  Until then a crash finds the old
 *   mapping with its old bytes intact.
 * - Checksums: one CRC-32C per 4 KiB block, kept in the extent, computed
 *   before the write and verified on every read.  A mismatch is EIO and a
 *   counted, logged event; wrong bytes are never returned.  Per-block (not
 *   per-extent) checksums let a 4 KiB random read verify 4 KiB, not 1 MiB.
 * - Group commit: commit() syncs the device, then commits metadata in one
 *   WAL flush, shared by every caller that arrives while one is running.
 *   Extent mappings that point at new blocks wait while a commit syncs the
 *   device, so a commit never references data written after its sync began
 *   (data before metadata, like ext4's data=ordered).
 * - Write-behind: startWrite() returns once the bytes are copied and their
 *   device write is issued; mappings of one inode run in issue order when
 *   the device confirms.  In-flight bytes are bounded (writeBehindBytesMax).
 * - Coalescing: a small write (below coalesceWriteBytesMax) is copied into
 *   the file's dirty blocks in memory and acknowledged; all of a file's dirty
 *   blocks are written out together (one allocation, one device write per
 *   run, one metadata mutation) when a read, fsync, truncate or larger write
 *   of the file needs them, when dirtyBytesMax is reached, or with the
 *   background commit.  A write-out always takes every dirty block of the
 *   file, so a crash shows the file as after some prefix of its writes.
 *   Flash for dirty blocks is reserved when they are written (ENOSPC comes
 *   from write(), never from the write-out).  A MiB that the write-out would
 *   leave in more than extentsPerSlotMax extents is rewritten as one piece
 *   with its flash-only blocks (fragmentation is bounded).
 * - Bytes of a file's last block beyond its size are always zero, so
 *   extending a file (truncate up, write past the end) reads zeros.
 *
 * One idea, kept in one file: the copy-on-write mapping and its epochs,
 * commit gate and quarantine only hold together when read side by side.
 */
import assert from 'node:assert/strict';
import { blockChecksums, firstBadBlock } from '../checksum';
import { constants } from '../constants';
import type { FlashDevice } from '../device/device';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { Extent, ExtentChange, Ino, MetaStore, PackRef } from '../meta/meta_store';
import { Allocator, type Run } from './allocator';
import { readSuperblock, type Superblock } from './superblock';

const { blockSizeBytes: BS, extentSizeBytesMax: SLOT } = constants;
const END_OF_FILE = Number.MAX_SAFE_INTEGER;
/** The largest write-out: the dirty limit, a write that found it just short, and the slots it may rewrite. */
const WRITE_OUT_BYTES_MAX = constants.dirtyBytesMax + constants.coalesceWriteBytesMax + constants.slotRewritesPerFlushMax * SLOT;

interface FlashRange {
  flashOffsetBytes: number;
  lengthBytes: number;
}

/** A piece of a write on its way to flash, not yet mapped. */
interface IssuedSlot {
  ino: Ino;
  first: number;
  lengthBytes: number;
  buffer: Buffer;
  runs: Run[];
  checksums: Buffer;
  written: Promise<unknown>;
}

/** The coalesced small writes of one file, held in memory until written out together. */
interface DirtyFile {
  /** Block index (file offset / BS) → the block's bytes as they are to be written. */
  blocks: Map<number, Buffer>;
  /** Run inside the mutation that maps the blocks, in the order the writes came. */
  inMutations: (() => void)[];
  /** Settles when the write-out that takes these blocks is mapped (or has failed). */
  mapped: Promise<void>;
  settle: (error?: unknown) => void;
}

/** One contiguous piece of a write-out: file blocks [firstBlock, firstBlock + blockCount) at flash block startBlock, from place `place` of its buffer. */
interface Piece {
  place: number;
  firstBlock: number;
  blockCount: number;
  startBlock: number;
}

/**
 * Block-sized buffers for dirty blocks, cut from 256 KiB slabs and reused:
 * a 4 KiB write allocates nothing once the pool has warmed up.
 */
class BlockPool {
  private readonly idle: Buffer[] = [];
  take(): Buffer {
    const block = this.idle.pop();
    if (block) return block;
    const slab = Buffer.allocUnsafeSlow(64 * BS);
    for (let i = 1; i < 64; i++) this.idle.push(slab.subarray(i * BS, (i + 1) * BS));
    return slab.subarray(0, BS);
  }
  give(block: Buffer): void {
    if (this.idle.length * BS < constants.dirtyBytesMax) this.idle.push(block);
  }
}

function roundDown(value: number): number {
  return value - (value % BS);
}

function roundUp(value: number): number {
  return Math.ceil(value / BS) * BS;
}

/** Ranges sorted and merged where they touch, so a device sees few large discards. */
function coalesce(ranges: FlashRange[]): FlashRange[] {
  const sorted = [...ranges].sort((a, b) => a.flashOffsetBytes - b.flashOffsetBytes);
  const merged: FlashRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last && last.flashOffsetBytes + last.lengthBytes === range.flashOffsetBytes) last.lengthBytes += range.lengthBytes;
    else merged.push({ ...range });
  }
  return merged;
}

/** Whether `extents` (by offset) leave any of [start, end) unmapped. */
function hasHole(extents: Extent[], start: number, end: number): boolean {
  let cursor = start;
  for (const e of extents) {
    if (e.fileOffsetBytes > cursor) return true;
    cursor = Math.max(cursor, e.fileOffsetBytes + e.lengthBytes);
  }
  return cursor < end;
}

/** A part of `e` from `fromBytes` (file offset, block aligned) for `lengthBytes`. */
function slice(e: Extent, fromBytes: number, lengthBytes: number): Extent {
  const skip = fromBytes - e.fileOffsetBytes;
  assert.ok(skip >= 0 && skip % BS === 0 && lengthBytes > 0 && skip + lengthBytes <= e.lengthBytes);
  return {
    ...e,
    fileOffsetBytes: fromBytes,
    lengthBytes,
    flashOffsetBytes: e.flashOffsetBytes === null ? null : e.flashOffsetBytes + skip,
    checksums: e.checksums.subarray((skip / BS) * 4, ((skip + lengthBytes) / BS) * 4),
    pack: e.pack && { ...e.pack, skipBytes: e.pack.skipBytes + skip },
  };
}

/** What is left of `e` around [from, to), its head and tail (either may be absent), and the part inside. */
function cutOut(e: Extent, from: number, to: number): { head: Extent | undefined; tail: Extent | undefined; cut: Extent } {
  const eEnd = e.fileOffsetBytes + e.lengthBytes;
  const cutFrom = Math.max(from, e.fileOffsetBytes);
  return {
    head: e.fileOffsetBytes < from ? slice(e, e.fileOffsetBytes, from - e.fileOffsetBytes) : undefined,
    tail: eEnd > to ? slice(e, to, eEnd - to) : undefined,
    cut: slice(e, cutFrom, Math.min(to, eEnd) - cutFrom),
  };
}

/**
 * New blocks at `at`, on flash at `flashOffsetBytes`, extend `before`: a
 * FLASH extent ending there, in the same slot, whose flash they continue (a
 * pack copy covers its old bytes, not the new ones).
 */
function continues(before: Extent | undefined, at: number, flashOffsetBytes: number): before is Extent {
  return (
    before !== undefined && at % SLOT !== 0 && before.fileOffsetBytes + before.lengthBytes === at && before.pack === null &&
    before.flashOffsetBytes !== null && before.flashOffsetBytes + before.lengthBytes === flashOffsetBytes
  );
}

/** `b` is `a` with another length (and so checksums): the same place, pack entry and heat. */
function sameButLength(a: Extent, b: Extent): boolean {
  return (
    a.fileOffsetBytes === b.fileOffsetBytes &&
    a.flashOffsetBytes === b.flashOffsetBytes &&
    a.accessedMs === b.accessedMs &&
    a.heatCount === b.heatCount &&
    (a.pack === b.pack ||
      (a.pack !== null && b.pack !== null && a.pack.packId === b.pack.packId && a.pack.entryIndex === b.pack.entryIndex &&
        a.pack.storedOffsetBytes === b.pack.storedOffsetBytes && a.pack.storedLengthBytes === b.pack.storedLengthBytes &&
        a.pack.encoding === b.pack.encoding && a.pack.skipBytes === b.pack.skipBytes))
  );
}

/**
 * The same extent, in the same place: nothing rewrote, moved, destaged or
 * evicted it meanwhile.  The checksums take part: a rewrite can land in the
 * very blocks the old bytes were freed from (same place, other bytes).
 */
export function sameExtent(a: Extent, b: Extent | undefined): boolean {
  return (
    b !== undefined &&
    a.ino === b.ino &&
    a.fileOffsetBytes === b.fileOffsetBytes &&
    a.lengthBytes === b.lengthBytes &&
    a.flashOffsetBytes === b.flashOffsetBytes &&
    a.pack?.packId === b.pack?.packId &&
    a.pack?.entryIndex === b.pack?.entryIndex &&
    a.pack?.skipBytes === b.pack?.skipBytes &&
    a.checksums.equals(b.checksums)
  );
}

/**
 * What the store needs from the tier above it (set by the tiering engine;
 * without one, every extent is on flash).
 */
export interface TierHooks {
  /**
   * Recall plain bytes [fromBytes, fromBytes + lengthBytes) of an extent
   * (relative to it, block aligned) from its pack, verified against the
   * extent's block checksums, and copy dest.length of them, from
   * `skipBytes` on, into `dest`.
   */
  readFromPack(e: Extent, fromBytes: number, lengthBytes: number, dest: Buffer, skipBytes: number): Promise<void>;
  /** An extent was read (heat); called for every read part, must be cheap. */
  extentRead(e: Extent): void;
  /** The flash tier is short of `blockCount` blocks: free some; resolves false when nothing more can be freed. */
  spaceWanted(blockCount: number): Promise<boolean>;
  /** After an fsync of `ino` on flash: resolves once what its policy's durability asks is done too (its bytes in the bucket). */
  durable(ino: Ino): Promise<void>;
}

/** The staging buffer size that holds `bytes`: a power of two of blocks, at most a slot. */
function stagingBytes(bytes: number): number {
  let size = BS;
  while (size < bytes && size < SLOT) size *= 2;
  return size;
}

/**
 * Aligned staging buffers, reused so the data path does not allocate; sized
 * to what they hold (a power of two of blocks, up to a slot).  When every
 * buffer was a slot, 4 KiB random writes beyond the idle ones allocated a
 * MiB each, and allocation and garbage collection took most of their time.
 */
class StagingPool {
  private readonly idle = new Map<number, Buffer[]>();
  private idleBytes = 0;
  constructor(private readonly device: FlashDevice) {}
  take(bytes: number): Buffer {
    const size = stagingBytes(bytes);
    const buffer = this.idle.get(size)?.pop();
    if (!buffer) return this.device.allocBuffer(size);
    this.idleBytes -= size;
    return buffer;
  }
  give(buffer: Buffer): void {
    if (this.idleBytes + buffer.length > constants.stagingPoolBytesMax) return;
    const list = this.idle.get(buffer.length) ?? [];
    list.push(buffer);
    this.idle.set(buffer.length, list);
    this.idleBytes += buffer.length;
  }
}

export interface StoreCounters {
  checksumErrorCount: number;
  /** Writers that waited for the tiering engine to free flash (backpressure). */
  spaceWaitCount: number;
  readBytes: number;
  writtenBytes: number;
  commitCount: number;
}

export interface FsckReport {
  extentCount: number;
  mappedBytes: number;
  checksumErrors: { ino: Ino; fileOffsetBytes: number }[];
}

export class FlashStore {
  readonly counters: StoreCounters = {
    checksumErrorCount: 0,
    spaceWaitCount: 0,
    readBytes: 0,
    writtenBytes: 0,
    commitCount: 0,
  };
  tier: TierHooks | undefined;
  private readonly staging: StagingPool;
  /** Ranges unmapped since the last commit: not free until it is durable. */
  private pendingFree: FlashRange[] = [];
  /** Ranges unmapped by a durable commit, waiting for reads of their epoch or older. */
  private quarantine: { epoch: number; ranges: FlashRange[] }[] = [];
  private epoch = 0;
  private readonly activeReads = new Map<number, number>();
  private deviceReadsInFlight = 0;
  /** Per inode, the mapping of its last started write; mappings run in order. */
  private readonly mapTails = new Map<Ino, Promise<void>>();
  /** Writes started and not yet mapped, and their bytes (bounded by writeBehindBytesMax). */
  private readonly inFlight = new Set<Promise<void>>();
  private inFlightBytes = 0;
  private committing: Promise<void> | undefined;
  private nextCommit: Promise<void> | undefined;
  /** What a lost range is, in a read's error (a follower's are mostly not in the bucket yet). */
  lostMeaning = 'were only on a lost flash tier (tierfs lost)';
  /** Coalesced small writes per file, not yet written out. */
  private readonly dirty = new Map<Ino, DirtyFile>();
  /** Blocks held dirty, and blocks of write-outs not yet allocated: both are reserved on flash. */
  private dirtyBlockCount = 0;
  private reservedBlockCount = 0;
  private readonly blockPool = new BlockPool();
  /** Idle buffers for write-outs larger than a slot (two at most: writeBehindBytesMax holds two write-outs). */
  private readonly writeOutBuffers: Buffer[] = [];
  /** Mappings part way through their slices: a commit waits for them. */
  private readonly openMappings = new Set<Promise<void>>();

  private constructor(
    readonly device: FlashDevice,
    readonly meta: MetaStore,
    readonly superblock: Superblock,
    private readonly allocator: Allocator,
    readonly clock: () => number,
  ) {
    this.staging = new StagingPool(device);
  }

  /** Open a formatted flash tier with its metadata; checks that the two belong together. */
  static async open(device: FlashDevice, meta: MetaStore, clock: () => number): Promise<FlashStore> {
    const probe = await readSuperblock(device);
    if (probe.kind !== 'tierfs')
      throw new TierfsError('NOT_OURS', `${device.path} is not a tierfs flash tier (${probe.kind === 'empty' ? 'no superblock' : 'foreign data'})`);
    const sb = probe.superblock;
    const metaUuid = meta.setting('uuid');
    if (metaUuid !== sb.uuid)
      throw new TierfsError('NOT_OURS', `${device.path} holds file system ${sb.uuid} but ${meta.path} describes ${metaUuid ?? 'none'}`);
    if (device.sizeBytes < sb.sizeBytes)
      throw new TierfsError('CORRUPT', `${device.path} is ${device.sizeBytes} bytes, smaller than the ${sb.sizeBytes} it was formatted with`);
    const allocator = new Allocator(constants.superblockSizeBytes / BS, sb.sizeBytes / BS);
    for (const e of meta.allExtents()) {
      assert.ok(e.flashOffsetBytes !== null);
      if (!allocator.markUsed({ startBlock: e.flashOffsetBytes / BS, blockCount: e.lengthBytes / BS }))
        throw new TierfsError('CORRUPT', `metadata maps flash offset ${e.flashOffsetBytes} (inode ${e.ino}) twice or out of range; run tierfs fsck`);
    }
    return new FlashStore(device, meta, sb, allocator, clock);
  }

  get capacityBytes(): number {
    return this.allocator.blockCount * BS;
  }

  get freeBytes(): number {
    return this.allocator.freeCount * BS;
  }

  /** Bytes in use on flash, counting blocks freed but not yet reusable (their commit or older reads pending). */
  get usedBytes(): number {
    return this.capacityBytes - this.freeBytes;
  }

  /** Free blocks not reserved for coalesced writes. */
  private get availableBlocks(): number {
    return this.allocator.freeCount - this.dirtyBlockCount - this.reservedBlockCount;
  }

  /** Bytes of coalesced small writes held in memory (all files). */
  get dirtyBytes(): number {
    return this.dirtyBlockCount * BS;
  }

  // ---- reads ----

  private enterRead(): number {
    const epoch = this.epoch;
    this.activeReads.set(epoch, (this.activeReads.get(epoch) ?? 0) + 1);
    return epoch;
  }

  private leaveRead(epoch: number): void {
    const count = (this.activeReads.get(epoch) ?? 0) - 1;
    if (count > 0) this.activeReads.set(epoch, count);
    else {
      this.activeReads.delete(epoch);
      this.drainQuarantine();
    }
  }

  /**
   * Bytes [offsetBytes, offsetBytes + lengthBytes) of a file; holes read as
   * zeros.  A speculative read (readahead) does not count as an access: it
   * hands the extents it read to `extentsOut`, and the caller reports the
   * access with touched() if the bytes are used.  The bytes go into `into`
   * when given (at least lengthBytes long), else into a new buffer.
   */
  async read(ino: Ino, offsetBytes: number, lengthBytes: number, speculative?: { extentsOut: Extent[] }, into?: Buffer): Promise<Buffer> {
    const end = offsetBytes + lengthBytes;
    const extents = this.meta.extentsInRange(ino, offsetBytes, end);
    if (hasHole(extents, offsetBytes, end)) {
      // A lost range is never mapped (a write over it ends the loss): only a hole can be one.
      const lost = this.meta.lostIn(ino, offsetBytes, end);
      if (lost.length > 0)
        throw new TierfsError('IO', `inode ${ino}: bytes ${lost[0].fileOffsetBytes}..${lost[0].fileOffsetBytes + lost[0].lengthBytes} ${this.lostMeaning}`);
    }
    assert.ok(!into || into.length >= lengthBytes);
    const result = into ? into.subarray(0, lengthBytes) : Buffer.allocUnsafe(lengthBytes);
    const only = extents.length === 1 ? extents[0] : undefined;
    if (only && only.flashOffsetBytes === null && only.fileOffsetBytes <= offsetBytes && end <= only.fileOffsetBytes + only.lengthBytes) {
      // Wholly within one extent in the object tier: no read epoch to enter (no flash blocks are read).
      speculative?.extentsOut.push(only);
      await this.readFromObjectTier(only, offsetBytes, end, !speculative, result);
      this.counters.readBytes += lengthBytes;
      return result;
    }
    const epoch = this.enterRead();
    try {
      const parts: Promise<void>[] = [];
      let cursor = offsetBytes;
      for (const e of extents) {
        const from = Math.max(e.fileOffsetBytes, offsetBytes);
        const to = Math.min(e.fileOffsetBytes + e.lengthBytes, end);
        if (from > cursor) result.fill(0, cursor - offsetBytes, from - offsetBytes);
        speculative?.extentsOut.push(e);
        parts.push(this.readPart(e, from, to, result, from - offsetBytes, !speculative));
        cursor = to;
      }
      if (cursor < end) result.fill(0, cursor - offsetBytes);
      await Promise.all(parts);
    } finally {
      this.leaveRead(epoch);
    }
    this.counters.readBytes += lengthBytes;
    return result;
  }

  /** Bytes of [from, to) of a speculative read were used after all: they count as accessed. */
  touched(extents: Extent[], from: number, to: number): void {
    if (!this.tier) return;
    for (const e of extents) if (e.fileOffsetBytes < to && e.fileOffsetBytes + e.lengthBytes > from) this.tier.extentRead(e);
  }

  private async readPart(e: Extent, from: number, to: number, dest: Buffer, destOffset: number, heat = true): Promise<void> {
    const firstBytes = roundDown(from - e.fileOffsetBytes);
    const lengthBytes = roundUp(to - e.fileOffsetBytes) - firstBytes;
    if (heat) this.tier?.extentRead(e);
    if (e.flashOffsetBytes === null) {
      await this.readFromObjectTier(e, from, to, false, dest.subarray(destOffset, destOffset + (to - from)));
      return;
    }
    const buffer = this.staging.take(lengthBytes);
    try {
      const view = buffer.subarray(0, lengthBytes);
      if ((this.device.io === 'psync' || this.device.io === 'memory') && lengthBytes <= constants.syncReadBytesMax && this.deviceReadsInFlight === 0) {
        this.device.readNow(view, e.flashOffsetBytes + firstBytes);
      } else {
        this.deviceReadsInFlight += 1;
        try {
          await this.device.read(view, e.flashOffsetBytes + firstBytes);
        } finally {
          this.deviceReadsInFlight -= 1;
        }
      }
      this.verify(e, firstBytes, view);
      view.copy(dest, destOffset, from - e.fileOffsetBytes - firstBytes, to - e.fileOffsetBytes - firstBytes);
    } finally {
      this.staging.give(buffer);
    }
  }

  /** Bytes [from, to) (file offsets) of an extent that is only in the object tier, verified, into `dest` (to - from long). */
  private async readFromObjectTier(e: Extent, from: number, to: number, heat: boolean, dest: Buffer): Promise<void> {
    assert.ok(this.tier && e.pack, `extent of inode ${e.ino} at ${e.fileOffsetBytes} is nowhere`);
    assert.equal(dest.length, to - from);
    if (heat) this.tier.extentRead(e);
    const firstBytes = roundDown(from - e.fileOffsetBytes);
    const lengthBytes = roundUp(to - e.fileOffsetBytes) - firstBytes;
    await this.tier.readFromPack(e, firstBytes, lengthBytes, dest, from - e.fileOffsetBytes - firstBytes);
  }

  /** Check plain bytes of `e` from `firstBytes` (relative, block aligned) read from flash against its block checksums. */
  private verify(e: Extent, firstBytes: number, view: Buffer): void {
    const bad = firstBadBlock(view, e.checksums.subarray((firstBytes / BS) * 4, ((firstBytes + view.length) / BS) * 4));
    if (bad < 0) return;
    this.counters.checksumErrorCount += 1;
    const fileOffsetBytes = e.fileOffsetBytes + firstBytes + bad * BS;
    log.error('checksum mismatch on flash', { ino: e.ino, fileOffsetBytes, flashOffsetBytes: e.flashOffsetBytes! + firstBytes + bad * BS });
    throw new TierfsError('CHECKSUM', `checksum mismatch in inode ${e.ino} at offset ${fileOffsetBytes}`);
  }

  /**
   * Whole extents, verified, for a pack (destage and repack), read straight
   * into one aligned buffer (`into`, from allocBuffer(), or a new one), back
   * to back: no per-extent buffers, no copies; a pack is built from views.  The read epoch is entered before the
   * first await, so blocks of an extent the caller has just looked up cannot
   * be freed and reused under it.  A failed extent is an Error in its place.
   */
  async readExtents(extents: Extent[], into?: Buffer): Promise<(Buffer | Error)[]> {
    const epoch = this.enterRead();
    try {
      const totalBytes = extents.reduce((sum, e) => sum + e.lengthBytes, 0);
      assert.ok(!into || into.length >= totalBytes);
      const buffer = into ?? this.device.allocBuffer(totalBytes);
      let at = 0;
      return await Promise.all(
        extents.map(async (e) => {
          const view = buffer.subarray(at, (at += e.lengthBytes));
          try {
            if (e.flashOffsetBytes === null) {
              await this.readPart(e, e.fileOffsetBytes, e.fileOffsetBytes + e.lengthBytes, view, 0, false);
              return view;
            }
            this.deviceReadsInFlight += 1;
            try {
              await this.device.read(view, e.flashOffsetBytes);
            } finally {
              this.deviceReadsInFlight -= 1;
            }
            this.verify(e, 0, view);
            return view;
          } catch (error) {
            return error as Error;
          }
        }),
      );
    } finally {
      this.leaveRead(epoch);
    }
  }

  /**
   * Residency changes, inside the caller's metadata mutation.  Each applies
   * only when the extent is still exactly `was` (an extent rewritten,
   * truncated or merged meanwhile keeps its new state); returns whether it did.
   */
  markPacked(was: Extent, pack: PackRef): boolean {
    const now = this.meta.extentsInRange(was.ino, was.fileOffsetBytes, was.fileOffsetBytes + 1)[0];
    if (!sameExtent(was, now)) return false;
    this.meta.putExtent({ ...now!, pack });
    return true;
  }

  /** BOTH → OBJECT: drop the flash copy (its blocks are free after the commit). */
  evict(was: Extent): boolean {
    const now = this.meta.extentsInRange(was.ino, was.fileOffsetBytes, was.fileOffsetBytes + 1)[0];
    if (!sameExtent(was, now) || now!.pack === null || now!.flashOffsetBytes === null) return false;
    this.meta.putExtent({ ...now!, flashOffsetBytes: null });
    this.pendingFree.push({ flashOffsetBytes: now!.flashOffsetBytes, lengthBytes: now!.lengthBytes });
    return true;
  }

  /**
   * A follower applied the writer's new state of an extent it kept a copy
   * of: keep the copy when the state is the same bytes (the same pack entry,
   * length and checksums), else free its blocks after the commit.  Inside
   * the caller's metadata mutation, after the new state was applied.
   */
  adoptCopy(old: Extent): void {
    assert.ok(old.flashOffsetBytes !== null);
    const now = this.meta.extentsInRange(old.ino, old.fileOffsetBytes, old.fileOffsetBytes + 1)[0];
    const same =
      now !== undefined && now.fileOffsetBytes === old.fileOffsetBytes && now.lengthBytes === old.lengthBytes && now.flashOffsetBytes === null &&
      now.pack !== null && old.pack !== null && now.pack.packId === old.pack.packId && now.pack.storedOffsetBytes === old.pack.storedOffsetBytes &&
      now.pack.storedLengthBytes === old.pack.storedLengthBytes && now.pack.skipBytes === old.pack.skipBytes && now.checksums.equals(old.checksums);
    if (same) this.meta.putExtent({ ...now!, flashOffsetBytes: old.flashOffsetBytes });
    else this.pendingFree.push({ flashOffsetBytes: old.flashOffsetBytes!, lengthBytes: old.lengthBytes });
  }

  /** BOTH → FLASH (fsck repair): forget a pack copy that is lost or bad; the extent is destaged again later. */
  unpack(was: Extent): boolean {
    const now = this.meta.extentsInRange(was.ino, was.fileOffsetBytes, was.fileOffsetBytes + 1)[0];
    if (!sameExtent(was, now) || now!.flashOffsetBytes === null) return false;
    this.meta.putExtent({ ...now!, pack: null });
    return true;
  }

  /** Drop an extent no inode owns (fsck repair); its flash blocks are free after the commit. */
  forget(was: Extent): boolean {
    const now = this.meta.extentsInRange(was.ino, was.fileOffsetBytes, was.fileOffsetBytes + 1)[0];
    if (!sameExtent(was, now) || this.meta.getInode(was.ino) !== undefined) return false;
    this.meta.deleteExtent(was.ino, was.fileOffsetBytes);
    if (now!.flashOffsetBytes !== null) this.pendingFree.push({ flashOffsetBytes: now!.flashOffsetBytes, lengthBytes: now!.lengthBytes });
    return true;
  }

  /**
   * OBJECT → BOTH: write recalled plain bytes of a whole extent back to flash
   * and map them, unless it changed meanwhile (`plain` is only read: copied
   * into a staging buffer, never kept).  With `wholeOnly` (a follower) only
   * into one run of blocks, so the copy stays one row under the writer's key.
   */
  async writeBack(was: Extent, plain: Buffer, { wholeOnly = false }: { wholeOnly?: boolean } = {}): Promise<boolean> {
    assert.ok(was.flashOffsetBytes === null && was.pack !== null && plain.length === was.lengthBytes);
    const blockCount = was.lengthBytes / BS;
    if (this.availableBlocks < blockCount) return false; // never make room for a recall by evicting
    const runs = await this.allocate(blockCount);
    if (wholeOnly && runs.length > 1) {
      for (const run of runs) this.allocator.free(run);
      return false;
    }
    const buffer = this.staging.take(was.lengthBytes);
    let mapped = false;
    try {
      plain.copy(buffer);
      await this.writeRuns(buffer, runs);
      await this.commitGate();
      this.meta.mutate(() => {
        const now = this.meta.extentsInRange(was.ino, was.fileOffsetBytes, was.fileOffsetBytes + 1)[0];
        if (!sameExtent(was, now)) return;
        let at = was.fileOffsetBytes;
        this.meta.deleteExtent(was.ino, was.fileOffsetBytes);
        for (const run of runs) {
          const piece = slice(now!, at, run.blockCount * BS);
          this.meta.putExtent({ ...piece, flashOffsetBytes: run.startBlock * BS });
          at += run.blockCount * BS;
        }
        mapped = true;
      });
      return mapped;
    } finally {
      this.staging.give(buffer);
      if (!mapped) for (const run of runs) this.allocator.free(run);
    }
  }

  // ---- writes ----

  /**
   * Start writing `data` at `offsetBytes` of a file; returns once the bytes
   * are copied and on their way to flash (write-behind), with `mapped`, which
   * settles when they are mapped (or rejects when the device failed, leaving
   * the old bytes mapped).  Mappings of one inode happen in the order writes
   * were started.  The caller serializes starts, writes and truncates of one
   * inode and keeps its size: `inMutation` runs inside the metadata mutation
   * that maps each piece (with the file offset the piece ends at), so a crash
   * never separates the mapping from the size.
   */
  async startWrite(ino: Ino, offsetBytes: number, data: Buffer, inMutation: (endBytes: number) => void): Promise<{ mapped: Promise<void> }> {
    if (data.length < constants.coalesceWriteBytesMax) return this.coalesce(ino, offsetBytes, data, inMutation);
    this.writeOut(ino); // the file's small writes before this one map first
    const pieces: Promise<void>[] = [];
    let done = 0;
    while (done < data.length) {
      const at = offsetBytes + done;
      const lengthBytes = Math.min(data.length - done, SLOT - (at % SLOT));
      const issued = await this.issueSlot(ino, at, data.subarray(done, done + lengthBytes));
      const previous = this.mapTails.get(ino) ?? Promise.resolve();
      const mapped = previous.then(() => this.mapSlot(issued, () => inMutation(at + lengthBytes)));
      const tail = mapped.catch(() => undefined);
      this.mapTails.set(ino, tail);
      this.inFlight.add(tail);
      void tail.then(() => {
        this.inFlight.delete(tail);
        this.inFlightBytes -= issued.buffer.length;
        if (this.mapTails.get(ino) === tail) this.mapTails.delete(ino);
      });
      pieces.push(mapped);
      done += lengthBytes;
    }
    this.counters.writtenBytes += data.length;
    const mapped = Promise.all(pieces).then(() => undefined);
    mapped.catch(() => undefined); // the caller may only look later
    return { mapped };
  }

  /** Settles when every write started on `ino` so far is mapped (or has failed); its coalesced writes are written out now. */
  whenMapped(ino: Ino): Promise<void> {
    this.writeOut(ino);
    return this.mapTails.get(ino) ?? Promise.resolve();
  }

  /**
   * Settles when a read of [from, to) of `ino` sees every write started so
   * far: the file's coalesced writes are written out only when they lie in
   * the range, or beyond it while the mapped size ends before it (they make
   * the range part of the file).
   */
  whenReadable(ino: Ino, from: number, to: number): Promise<void> {
    const file = this.dirty.get(ino);
    if (file) {
      const firstBlock = Math.floor(from / BS);
      const endBlock = Math.ceil(to / BS);
      const sizeBytes = this.meta.getInode(ino)?.sizeBytes ?? 0;
      for (const block of file.blocks.keys()) {
        if (block >= firstBlock && (block < endBlock || sizeBytes < to)) {
          this.writeOut(ino);
          break;
        }
      }
    }
    return this.mapTails.get(ino) ?? Promise.resolve();
  }

  /** Settles when every write started so far, on any inode, is mapped (or has failed). */
  async whenAllMapped(): Promise<void> {
    this.writeOutAll();
    await Promise.all([...this.inFlight]);
  }

  /** Write out every file's coalesced writes; settles when those are mapped (the background commit's first step). */
  async writeOutDirty(): Promise<void> {
    const inos = [...this.dirty.keys()];
    this.writeOutAll();
    await Promise.all(inos.map((ino) => this.mapTails.get(ino)));
  }

  private writeOutAll(): void {
    for (const ino of [...this.dirty.keys()]) this.writeOut(ino);
  }

  // ---- coalesced small writes ----

  /**
   * A small write: copied into the file's dirty blocks (the partial blocks
   * at its edges read first unless already dirty), flash reserved for the
   * blocks it adds.  Acknowledged without a device write or a metadata
   * change; `mapped` settles with the file's next write-out.
   */
  private async coalesce(ino: Ino, at: number, data: Buffer, inMutation: (endBytes: number) => void): Promise<{ mapped: Promise<void> }> {
    const end = at + data.length;
    const firstBlock = Math.floor(at / BS);
    const endBlock = Math.ceil(end / BS);
    if ((this.dirtyBlockCount + endBlock - firstBlock) * BS > constants.dirtyBytesMax) this.writeOutAll();
    while (this.inFlight.size > 0 && this.inFlightBytes > constants.writeBehindBytesMax) await Promise.race(this.inFlight);
    const edgeBlocks = [...new Set([at % BS !== 0 ? firstBlock : -1, end % BS !== 0 ? endBlock - 1 : -1])].filter((b) => b >= 0);
    const edges = new Map<number, Buffer>();
    try {
      // Until every condition holds at once: each wait below may let a write-out take blocks that were dirty.
      for (let attempt = 0; ; ) {
        const held = this.dirty.get(ino)?.blocks;
        let fresh = 0;
        for (let b = firstBlock; b < endBlock; b++) if (!held?.has(b)) fresh += 1;
        if (this.availableBlocks < fresh) {
          await this.makeRoom(fresh, attempt++);
          continue;
        }
        const unread = edgeBlocks.filter((b) => !held?.has(b) && !edges.has(b));
        if (unread.length === 0) break;
        await this.mapTails.get(ino); // the edge blocks must include writes in flight
        for (const b of unread) {
          const block = this.blockPool.take();
          (await this.read(ino, b * BS, BS)).copy(block);
          edges.set(b, block);
        }
      }
    } catch (error) {
      for (const block of edges.values()) this.blockPool.give(block);
      throw error;
    }
    let file = this.dirty.get(ino);
    if (!file) {
      let settle!: (error?: unknown) => void;
      const mapped = new Promise<void>((resolve, reject) => (settle = (error) => (error === undefined ? resolve() : reject(error))));
      mapped.catch(() => undefined); // callers may only look later
      file = { blocks: new Map(), inMutations: [], mapped, settle };
      this.dirty.set(ino, file);
    }
    for (let b = firstBlock; b < endBlock; b++) {
      let block = file.blocks.get(b);
      if (!block) {
        block = edges.get(b) ?? this.blockPool.take();
        edges.delete(b);
        file.blocks.set(b, block);
        this.dirtyBlockCount += 1;
      }
      const from = Math.max(at, b * BS);
      const to = Math.min(end, (b + 1) * BS);
      data.copy(block, from - b * BS, from - at, to - at);
    }
    for (const block of edges.values()) this.blockPool.give(block); // edges found dirty after all
    file.inMutations.push(() => inMutation(end));
    this.counters.writtenBytes += data.length;
    return { mapped: file.mapped };
  }

  /** Start writing out a file's dirty blocks: they leave memory now and are mapped after the file's earlier writes. */
  private writeOut(ino: Ino): void {
    const file = this.dirty.get(ino);
    if (!file) return;
    this.dirty.delete(ino);
    const blockCount = file.blocks.size;
    this.dirtyBlockCount -= blockCount;
    this.reservedBlockCount += blockCount;
    const held = { bytes: blockCount * BS };
    this.inFlightBytes += held.bytes;
    const previous = this.mapTails.get(ino) ?? Promise.resolve();
    this.writeDirty(ino, file, previous, held).then(
      () => file.settle(),
      (error: unknown) => file.settle(error),
    );
    // From the writes' own promise: whoever looked at it first (the file system records a failure) runs before waiters on the tail.
    const tail = file.mapped.catch(() => undefined);
    this.mapTails.set(ino, tail);
    this.inFlight.add(tail);
    void tail.then(() => {
      this.inFlight.delete(tail);
      this.inFlightBytes -= held.bytes;
      if (this.mapTails.get(ino) === tail) this.mapTails.delete(ino);
    });
  }

  /**
   * Once the file's earlier writes are mapped: choose the MiBs to rewrite
   * whole (too many extents), allocate, copy the dirty blocks and read the
   * clean ones of those MiBs into one buffer, write it, and map every piece
   * in one mutation with the writes' own changes (size, times).
   */
  private async writeDirty(ino: Ino, file: DirtyFile, previous: Promise<void>, held: { bytes: number }): Promise<void> {
    const dirtyCount = file.blocks.size;
    let reserved = true;
    let runs: Run[] = [];
    let buffer: Buffer | undefined;
    let unmapped: Piece[] | undefined;
    let order: number[] = [];
    let clean = new Map<number, Extent>();
    let keep = new Set<number>();
    try {
      await previous;
      clean = this.cleanBlocksToRewrite(ino, file.blocks);
      order = [...file.blocks.keys(), ...clean.keys()].sort((a, b) => a - b);
      this.reservedBlockCount -= dirtyCount;
      reserved = false;
      runs = this.allocateNow(order.length);
      held.bytes += clean.size * BS;
      this.inFlightBytes += clean.size * BS;
      const totalBytes = order.length * BS;
      buffer = totalBytes <= SLOT ? this.staging.take(totalBytes) : this.takeWriteOutBuffer(totalBytes);
      const view = buffer.subarray(0, totalBytes);
      order.forEach((b, i) => {
        const block = file.blocks.get(b);
        if (block) block.copy(view, i * BS);
      });
      for (const block of file.blocks.values()) this.blockPool.give(block);
      file.blocks.clear();
      keep = await this.readClean(clean, order, view);
      await this.writeRuns(view, runs);
      const checksums = blockChecksums(view);
      const pieces = this.piecesOf(order, runs, (b) => !clean.has(b) || keep.has(b));
      unmapped = pieces;
      await this.commitGate();
      await this.mapInSlices(pieces, (some) => this.mapPieces(ino, some, checksums), () => {
        for (const apply of file.inMutations) apply();
      }, (mappedCount) => (unmapped = pieces.slice(mappedCount)));
    } finally {
      if (reserved) this.reservedBlockCount -= dirtyCount;
      for (const block of file.blocks.values()) this.blockPool.give(block);
      file.blocks.clear();
      if (unmapped === undefined) {
        for (const run of runs) this.allocator.free(run); // nothing was mapped
      } else {
        // What was mapped belongs to the file now; free the pieces not mapped (all, on success: none) and clean blocks that failed to read.
        const notMapped = [...unmapped, ...this.piecesOf(order, runs, (b) => clean.has(b) && !keep.has(b))];
        for (const piece of notMapped) this.allocator.free({ startBlock: piece.startBlock, blockCount: piece.blockCount });
      }
      if (buffer && buffer.length <= SLOT) this.staging.give(buffer);
      else if (buffer) this.giveWriteOutBuffer(buffer);
    }
  }

  /**
   * A buffer for a write-out larger than a slot, reused: memory touched for
   * the first time costs a page fault a page (24 ms for 8 MiB measured here,
   * against 0.6 ms to copy into it again), so each write-out of a fresh one
   * cost more than its device write.  Sized for the largest write-out: the
   * dirty limit plus the slots it may rewrite.
   */
  private takeWriteOutBuffer(bytes: number): Buffer {
    if (bytes > WRITE_OUT_BYTES_MAX) return this.device.allocBuffer(bytes); // concurrent writers overshot the dirty limit: rare, not kept
    return this.writeOutBuffers.pop() ?? this.device.allocBuffer(WRITE_OUT_BYTES_MAX);
  }

  private giveWriteOutBuffer(buffer: Buffer): void {
    if (buffer.length === WRITE_OUT_BYTES_MAX && this.writeOutBuffers.length < 2) this.writeOutBuffers.push(buffer);
  }

  /**
   * Map `pieces` in metadata mutations of mappingSlicePieces each, yielding
   * to other work between them (a write-out of thousands of pieces must not
   * hold up every request for its whole mapping); `last` runs in the last
   * one.  A commit waits while a mapping is part way: it commits all of it or
   * none.  Slices after the first do not wait for a commit: their bytes were
   * on the device before the first slice, so before any commit that follows.
   */
  private async mapInSlices<T>(pieces: T[], map: (slice: T[]) => void, last: () => void, progress: (mappedCount: number) => void): Promise<void> {
    let done!: () => void;
    const open = new Promise<void>((resolve) => (done = resolve));
    try {
      for (let i = 0; ; ) {
        const end = Math.min(i + constants.mappingSlicePieces, pieces.length);
        this.meta.mutate(() => {
          map(pieces.slice(i, end));
          if (end === pieces.length) last();
        });
        progress((i = end));
        if (i === pieces.length) return;
        this.openMappings.add(open);
        await new Promise(setImmediate);
      }
    } finally {
      this.openMappings.delete(open);
      done();
    }
  }

  /**
   * Clean blocks to write with the dirty ones (block index → the extent
   * holding it): in each MiB the write-out would leave in more than
   * extentsPerSlotMax extents, the blocks of its flash-only extents, so the
   * MiB becomes a few pieces again.  The most fragmented MiBs first, while
   * flash allows, at most slotRewritesPerFlushMax of them.
   */
  private cleanBlocksToRewrite(ino: Ino, dirtyBlocks: Map<number, Buffer>): Map<number, Extent> {
    const perSlot = SLOT / BS;
    const dirtyRunsBySlot = new Map<number, number>();
    for (const b of dirtyBlocks.keys()) {
      if (dirtyBlocks.has(b - 1) && (b - 1) % perSlot !== perSlot - 1) continue; // counted with the run it continues
      const slot = Math.floor(b / perSlot);
      dirtyRunsBySlot.set(slot, (dirtyRunsBySlot.get(slot) ?? 0) + 1);
    }
    const fragmented: { slot: number; pieces: number }[] = [];
    for (const [slot, dirtyRuns] of dirtyRunsBySlot) {
      // Extents start at slot boundaries or inside a slot (none spans two), so a count by start is the slot's.
      const pieces = this.meta.extentCountFrom(ino, slot * SLOT, (slot + 1) * SLOT) + 2 * dirtyRuns; // at most: a run inside an extent leaves it as two pieces besides its own
      if (pieces > constants.extentsPerSlotMax) fragmented.push({ slot, pieces });
    }
    fragmented.sort((a, b) => b.pieces - a.pieces);
    const clean = new Map<number, Extent>();
    let rewrites = 0;
    for (const { slot } of fragmented) {
      if (rewrites >= constants.slotRewritesPerFlushMax) break;
      const blocks: [number, Extent][] = [];
      for (const e of this.meta.extentsInRange(ino, slot * SLOT, (slot + 1) * SLOT)) {
        if (e.pack !== null || e.flashOffsetBytes === null) continue; // a pack copy stays valid only for its own extent
        for (let b = e.fileOffsetBytes / BS; b < (e.fileOffsetBytes + e.lengthBytes) / BS; b++) if (!dirtyBlocks.has(b)) blocks.push([b, e]);
      }
      if (blocks.length === 0 || blocks.length > this.availableBlocks - clean.size) continue;
      for (const [b, e] of blocks) clean.set(b, e);
      rewrites += 1;
    }
    return clean;
  }

  /**
   * Read the clean blocks into their places in `view` (`order` lists the
   * block of each place), verified, in one read epoch; returns those read
   * intact.  A block that cannot be read is left out of the rewrite: it keeps
   * its old extent, and the dirty blocks are written all the same.
   */
  private async readClean(clean: Map<number, Extent>, order: number[], view: Buffer): Promise<Set<number>> {
    const intact = new Set<number>();
    if (clean.size === 0) return intact;
    const epoch = this.enterRead();
    try {
      const reads: Promise<void>[] = [];
      for (let i = 0; i < order.length; ) {
        const e = clean.get(order[i]);
        if (!e) {
          i += 1;
          continue;
        }
        // A run of places holding consecutive blocks of one extent: one device read.
        let n = 1;
        while (i + n < order.length && clean.get(order[i + n]) === e && order[i + n] === order[i] + n) n += 1;
        const firstBytes = order[i] * BS - e.fileOffsetBytes;
        const part = view.subarray(i * BS, (i + n) * BS);
        const blocks = order.slice(i, i + n);
        reads.push(
          this.device
            .read(part, e.flashOffsetBytes! + firstBytes)
            .then(() => {
              this.verify(e, firstBytes, part);
              for (const b of blocks) intact.add(b);
            })
            .catch(() => undefined), // unread or failing its checksums: left out of the rewrite
        );
        i += n;
      }
      await Promise.all(reads);
    } finally {
      this.leaveRead(epoch);
    }
    return intact;
  }

  /** The contiguous pieces of a write-out among the blocks `take` picks: consecutive in the file, within one MiB, consecutive on flash. */
  private piecesOf(order: number[], runs: Run[], take: (block: number) => boolean): Piece[] {
    const pieces: Piece[] = [];
    let runIndex = 0;
    let runUsed = 0;
    for (const [place, b] of order.entries()) {
      const startBlock = runs[runIndex].startBlock + runUsed;
      if (++runUsed === runs[runIndex].blockCount) {
        runIndex += 1;
        runUsed = 0;
      }
      if (!take(b)) continue;
      const last = pieces[pieces.length - 1];
      const continues =
        last && last.firstBlock + last.blockCount === b && last.startBlock + last.blockCount === startBlock && b % (SLOT / BS) !== 0;
      if (continues) last.blockCount += 1;
      else pieces.push({ place, firstBlock: b, blockCount: 1, startBlock });
    }
    return pieces;
  }

  /** Read-modify-write the edges, copy, allocate and start the device write of one piece within a slot. */
  private async issueSlot(ino: Ino, at: number, piece: Buffer): Promise<IssuedSlot> {
    const first = roundDown(at);
    const end = roundUp(at + piece.length);
    const lengthBytes = end - first;
    const held = stagingBytes(lengthBytes); // what the write holds until mapped: the bound is on memory
    while (this.inFlight.size > 0 && this.inFlightBytes + held > constants.writeBehindBytesMax) {
      await Promise.race(this.inFlight); // bounded: wait for the oldest writes to land
    }
    const readHead = at > first;
    const readTail = at + piece.length < end && !(readHead && end - BS === first);
    if (readHead || readTail) await this.whenMapped(ino); // the edge blocks must include earlier writes
    this.inFlightBytes += held;
    const buffer = this.staging.take(lengthBytes);
    try {
      const view = buffer.subarray(0, lengthBytes);
      if (readHead) (await this.read(ino, first, BS)).copy(view, 0);
      if (readTail) (await this.read(ino, end - BS, BS)).copy(view, lengthBytes - BS);
      piece.copy(view, at - first);
      const runs = await this.allocate(lengthBytes / BS);
      const written = this.writeRuns(view, runs);
      written.catch(() => undefined); // mapSlot reports it
      const checksums = blockChecksums(view); // while the device writes: the checksums go to metadata only
      return { ino, first, lengthBytes, buffer, runs, checksums, written };
    } catch (error) {
      this.inFlightBytes -= held;
      this.staging.give(buffer);
      throw error;
    }
  }

  /** Wait for a piece's device write, then map it (behind the commit gate); on failure free its blocks. */
  private async mapSlot(slot: IssuedSlot, inMutation: () => void): Promise<void> {
    try {
      try {
        await slot.written;
      } catch (error) {
        for (const run of slot.runs) this.allocator.free(run);
        throw error;
      }
      await this.commitGate();
      this.meta.mutate(() => {
        this.mapRange(slot.ino, slot.first, slot.runs, slot.checksums);
        inMutation();
      });
    } finally {
      this.staging.give(slot.buffer);
    }
  }

  /** One piece written and mapped before returning (truncate's zeroed tail). */
  private async writeWithinSlot(ino: Ino, at: number, piece: Buffer, inMutation: () => void): Promise<void> {
    await this.mapSlot(await this.issueSlot(ino, at, piece), inMutation);
  }

  /** Write `buffer`'s blocks, in order, to the flash runs allocated for them (one device write a run). */
  private writeRuns(buffer: Buffer, runs: Run[]): Promise<unknown> {
    let offset = 0;
    return Promise.all(
      runs.map((run) => {
        const part = buffer.subarray(offset, offset + run.blockCount * BS);
        offset += part.length;
        return this.device.write(part, run.startBlock * BS);
      }),
    );
  }

  /** Runs totalling `blockCount`; when short, waits for writes in flight and commits once to reclaim blocks overwrites hold. */
  private async allocate(blockCount: number): Promise<Run[]> {
    for (let attempt = 0; ; attempt++) {
      if (this.availableBlocks >= blockCount) return this.allocateNow(blockCount);
      await this.makeRoom(blockCount, attempt);
    }
  }

  /** Runs totalling `blockCount`, which the caller has made sure are free. */
  private allocateNow(blockCount: number): Run[] {
    const runs: Run[] = [];
    let remaining = blockCount;
    while (remaining > 0) {
      const run = this.allocator.allocate(remaining);
      assert.ok(run, `${blockCount} blocks wanted, ${this.allocator.freeCount} free`);
      runs.push(run);
      remaining -= run.blockCount;
    }
    return runs;
  }

  /** Flash is short of `blockCount` blocks: the first attempt reclaims what overwrites hold; later ones ask the tier (backpressure), ENOSPC when it cannot. */
  private async makeRoom(blockCount: number, attempt: number): Promise<void> {
    const reclaimable = this.pendingFree.length > 0 || this.quarantine.length > 0 || this.inFlight.size > 0 || this.dirty.size > 0;
    if (attempt === 0 && reclaimable) {
      // Near full: let the writes in flight land (their overwritten blocks become free at the commit), then commit.
      await this.whenAllMapped();
      await this.commit();
      return;
    }
    // Backpressure: the writer waits while the tiering engine destages and evicts; ENOSPC only when it cannot.
    this.counters.spaceWaitCount += 1;
    if (!this.tier || !(await this.tier.spaceWanted(blockCount)))
      throw new TierfsError('NO_SPACE', `flash tier full: ${blockCount} blocks wanted, ${this.availableBlocks} free`);
    await this.commit();
  }

  private unmap(e: Extent): void {
    this.meta.deleteExtent(e.ino, e.fileOffsetBytes);
    if (e.flashOffsetBytes !== null) this.pendingFree.push({ flashOffsetBytes: e.flashOffsetBytes, lengthBytes: e.lengthBytes });
  }

  /**
   * Remove the mapping of [from, to) (block aligned), keeping what lies
   * outside it, inside a metadata mutation; returns the extent that now ends
   * at `from`, if one does.  A head kept is resized in place and a piece cut
   * from the middle of one extent costs one update and one insert: this runs
   * once for every piece a write maps.
   */
  private unmapRange(ino: Ino, from: number, to: number): Extent | undefined {
    this.meta.clearLost(ino, from, to); // rewritten or cut: no longer lost
    let before: Extent | undefined;
    for (const e of this.meta.extentsInRange(ino, Math.max(from - 1, 0), to)) {
      const eEnd = e.fileOffsetBytes + e.lengthBytes;
      if (eEnd <= from) {
        before = e; // ends where the range begins: untouched
        continue;
      }
      const { head, tail, cut } = cutOut(e, from, to);
      if (head) {
        before = head;
        this.meta.resizeExtent(ino, head.fileOffsetBytes, head.lengthBytes, head.checksums);
      } else this.meta.deleteExtent(ino, e.fileOffsetBytes);
      if (tail) this.meta.putExtent(tail);
      if (cut.flashOffsetBytes !== null) this.pendingFree.push({ flashOffsetBytes: cut.flashOffsetBytes, lengthBytes: cut.lengthBytes });
    }
    return before;
  }

  /** Map new runs at `first` (inside a metadata mutation), merging with a contiguous predecessor. */
  private mapRange(ino: Ino, first: number, runs: Run[], checksums: Buffer): void {
    const totalBytes = (checksums.length / 4) * BS;
    let before = this.unmapRange(ino, first, first + totalBytes);
    let at = first;
    for (const run of runs) {
      const lengthBytes = run.blockCount * BS;
      const sums = checksums.subarray(((at - first) / BS) * 4, ((at - first + lengthBytes) / BS) * 4);
      let extent: Extent = {
        ino, fileOffsetBytes: at, lengthBytes, flashOffsetBytes: run.startBlock * BS, checksums: sums,
        pack: null, accessedMs: this.clock(), heatCount: 1,
      };
      if (continues(before, at, run.startBlock * BS)) {
        extent = { ...before, lengthBytes: before.lengthBytes + lengthBytes, checksums: Buffer.concat([before.checksums, sums]) };
        this.meta.resizeExtent(ino, extent.fileOffsetBytes, extent.lengthBytes, extent.checksums);
      } else this.meta.putExtent(extent);
      before = extent;
      at += lengthBytes;
    }
  }

  /**
   * Map a slice of a write-out's pieces (by offset, none overlapping)
   * inside a metadata mutation, into the rows mapRange would make of them
   * one at a time: the extents they cut or extend are read in one
   * statement, cut and joined here, and written back in at most three
   * (MetaStore.changeExtents).  One at a time, a 4 KiB piece inside an
   * extent took four statements, 33–35 µs in the daemon, a quarter of its
   * busy time during 4 KiB random writes through the mount.
   */
  private mapPieces(ino: Ino, pieces: readonly Piece[], checksums: Buffer): void {
    const ranges = pieces.map((p): [number, number] => [Math.max(p.firstBlock * BS - 1, 0), (p.firstBlock + p.blockCount) * BS]);
    for (const p of pieces) this.meta.clearLost(ino, p.firstBlock * BS, (p.firstBlock + p.blockCount) * BS);
    const found = this.meta.extentsAround(ino, ranges);
    const now = found.slice(); // by offset, as the pieces so far have left them: all that touches the next piece is here
    const freed: FlashRange[] = []; // freed once the rows are written: a statement that throws rolls the slice back
    let first = 0;
    for (const p of pieces) {
      const from = p.firstBlock * BS;
      const to = from + p.blockCount * BS;
      while (first < now.length && now[first].fileOffsetBytes + now[first].lengthBytes < from) first += 1;
      // As unmapRange: heads and tails kept, what lies in [from, to) freed.
      let before = -1; // where the extent ending at `from` is, if one does
      let at = first;
      while (at < now.length && now[at].fileOffsetBytes < to) {
        const e = now[at];
        const eEnd = e.fileOffsetBytes + e.lengthBytes;
        if (eEnd <= from) {
          before = at++;
          continue;
        }
        const { head, tail, cut } = cutOut(e, from, to);
        const kept = head && tail ? [head, tail] : head ? [head] : tail ? [tail] : [];
        if (cut.flashOffsetBytes !== null) freed.push({ flashOffsetBytes: cut.flashOffsetBytes, lengthBytes: cut.lengthBytes });
        now.splice(at, 1, ...kept);
        if (head) before = at;
        at += kept.length;
      }
      // As mapRange: the new blocks extend the extent before them or stand alone.
      const lengthBytes = to - from;
      const sums = checksums.subarray(p.place * 4, (p.place + p.blockCount) * 4);
      const b = before >= 0 ? now[before] : undefined;
      if (continues(b, from, p.startBlock * BS)) now[before] = { ...b, lengthBytes: b.lengthBytes + lengthBytes, checksums: Buffer.concat([b.checksums, sums]) };
      else {
        while (at > first && now[at - 1].fileOffsetBytes >= to) at -= 1; // before a tail just kept
        now.splice(at, 0, {
          ino, fileOffsetBytes: from, lengthBytes, flashOffsetBytes: p.startBlock * BS, checksums: sums, pack: null, accessedMs: this.clock(), heatCount: 1,
        });
      }
    }
    // What changed: an extent found and gone is deleted; one still where it was, only longer or shorter, resized; the rest put.
    const after = new Map(now.map((e) => [e.fileOffsetBytes, e]));
    const change: ExtentChange = { deleted: [], resized: [], put: [] };
    for (const e of found) {
      const kept = after.get(e.fileOffsetBytes);
      after.delete(e.fileOffsetBytes);
      if (kept === e) continue;
      if (kept !== undefined && sameButLength(e, kept)) change.resized.push(kept);
      else {
        change.deleted.push(e.fileOffsetBytes);
        if (kept !== undefined) change.put.push(kept);
      }
    }
    change.put.push(...after.values());
    this.meta.changeExtents(ino, change);
    this.pendingFree.push(...freed);
  }

  /**
   * Change a file's size: when it shrinks, zero the rest of its new last block
   * and unmap what lies beyond, in one metadata mutation with `inMutation`
   * (which records the new size).  Growing needs no data change: bytes past
   * the old end are zero already.
   */
  async truncate(ino: Ino, sizeBytes: number, oldSizeBytes: number, inMutation: () => void): Promise<void> {
    assert.ok(!this.dirty.has(ino), 'truncate with coalesced writes not written out (whenMapped first)');
    const apply = () => {
      if (sizeBytes < oldSizeBytes) this.unmapRange(ino, roundUp(sizeBytes), END_OF_FILE);
      inMutation();
    };
    const tail = sizeBytes % BS;
    if (sizeBytes < oldSizeBytes && tail !== 0 && this.meta.extentsInRange(ino, sizeBytes, sizeBytes + 1).length > 0) {
      await this.writeWithinSlot(ino, sizeBytes, Buffer.alloc(BS - tail), apply);
    } else {
      this.meta.mutate(apply);
    }
  }

  /** Unmap every extent of a file (inside the caller's metadata mutation that deletes it). */
  unmapFile(ino: Ino): void {
    const file = this.dirty.get(ino);
    if (file) {
      // Writes of a file being deleted: nobody can read them any more.
      this.dirty.delete(ino);
      this.dirtyBlockCount -= file.blocks.size;
      for (const block of file.blocks.values()) this.blockPool.give(block);
      file.settle();
    }
    for (const e of this.meta.extentsInRange(ino, 0, END_OF_FILE)) this.unmap(e);
  }

  // ---- commits ----

  private async commitGate(): Promise<void> {
    while (this.committing) await this.committing.catch(() => undefined);
  }

  /**
   * Make every change so far durable: device first, then metadata.  Callers
   * that arrive while a commit runs share the next one.
   */
  commit(): Promise<void> {
    if (!this.committing) return this.startCommit();
    this.nextCommit ??= this.committing
      .catch(() => undefined)
      .then(() => {
        this.nextCommit = undefined;
        return this.startCommit();
      });
    return this.nextCommit;
  }

  private startCommit(): Promise<void> {
    const run = async () => {
      try {
        await this.device.sync();
        while (this.openMappings.size > 0) await Promise.all([...this.openMappings]);
        this.meta.commit();
        this.counters.commitCount += 1;
        this.quarantine.push({ epoch: this.epoch, ranges: this.pendingFree });
        this.pendingFree = [];
        this.epoch += 1;
      } finally {
        this.committing = undefined;
      }
      this.drainQuarantine();
    };
    this.committing = run();
    return this.committing;
  }

  private drainQuarantine(): void {
    let oldestRead = Infinity;
    for (const epoch of this.activeReads.keys()) oldestRead = Math.min(oldestRead, epoch);
    const ranges: FlashRange[] = [];
    while (this.quarantine.length > 0 && this.quarantine[0].epoch < oldestRead) ranges.push(...this.quarantine.shift()!.ranges);
    for (const range of coalesce(ranges)) {
      try {
        this.device.release(range.flashOffsetBytes, range.lengthBytes);
      } catch (error) {
        log.warn('could not release flash range', { offset: range.flashOffsetBytes, error });
      }
      this.allocator.free({ startBlock: range.flashOffsetBytes / BS, blockCount: range.lengthBytes / BS });
    }
  }

  // ---- checks ----

  /** Read back every mapped block and verify it; the allocator was already checked against the mapping at open. */
  async verifyAll(): Promise<FsckReport> {
    const report: FsckReport = { extentCount: 0, mappedBytes: 0, checksumErrors: [] };
    for (const e of [...this.meta.allExtents()]) {
      report.extentCount += 1;
      report.mappedBytes += e.lengthBytes;
      try {
        await this.readPart(e, e.fileOffsetBytes, e.fileOffsetBytes + e.lengthBytes, Buffer.allocUnsafe(e.lengthBytes), 0, false);
      } catch (error) {
        if (!(error instanceof TierfsError && error.code === 'CHECKSUM')) throw error;
        report.checksumErrors.push({ ino: e.ino, fileOffsetBytes: e.fileOffsetBytes });
      }
    }
    return report;
  }
}
