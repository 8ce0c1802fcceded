/**
 * Recall: reads of extents that are only in packs (OBJECT), the recall
 * command, and the one way every part of tierfs fetches a pack entry
 * (`fetchExtent`: reads, repack, fsck --deep).
 *
 * - A read fetches its extent's pack entry with a ranged GET, shared by
 *   concurrent readers and kept in a bounded cache.  A small random read of
 *   a plain entry fetches just its blocks (time to first byte).
 * - The pipeline: each file read sequentially is a stream with a window
 *   fetched ahead of it.  The window starts small (recallWindowBytesMin)
 *   and doubles while requests are below their full size or the reader
 *   still waits for bytes in flight, up to recallWindowBytesMax; it is cut
 *   back when the reader jumps.  Each top-up issues requests of half the
 *   window (at most recallRequestBytesMax), one ranged GET each where
 *   the entries lie together in one pack, across entries and packs.  Bytes
 *   fetched ahead and not yet read are counted against one budget for all
 *   readers (recallPrefetchBytesMax), shared equally among the streams
 *   active lately, so one scan cannot starve the others.
 * - GETs have lanes: a reader's own and prefetch GETs go at once; a GET for
 *   a write-back (the whole entry behind a small read) waits until no
 *   reader waits and no foreground GET is in flight (at most
 *   readerQuietWaitMsMax), one at a time.
 * - Recalled extents go back to flash (BOTH) in the background, from the
 *   bytes already fetched: random reads while flash is below the high
 *   watermark; a sequential scan of a large file only into room below the
 *   low one (a scan never makes eviction run).  Otherwise the bytes are
 *   served straight through.
 * - Every recalled block is verified against the extent's block checksums;
 *   bytes that fail get one fresh GET (damage in transit), then CHECKSUM.
 *   Opening and inflating large entries run on the thread pool (pack.ts).
 * - Large GETs land in reused receive slabs (receive_buffers.ts), so a cold
 *   scan does not allocate and drop its size in memory.  Recalled bytes
 *   never leave this file as views: read() copies them into the caller's
 *   buffer in the turn it verifies them, and whatever keeps a view across
 *   an await (the cache, a write-back) holds a reference to its slab.
 * - Requests are counted (GETs per GiB recalled, in status and metrics).
 * - Degraded mode: a GET that does not answer within recallTimeoutMs is EIO
 *   (UNAVAILABLE for throttling and transient failures), and counted.
 */
import { LRUCache } from 'lru-cache';
import { firstBadBlock } from '../checksum';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import { residencyOf, type Extent, type Ino, type PackId } from '../meta/meta_store';
import { ObjectStoreError, type GetRange } from './object_store';
import { decodeEntry, packKey } from './pack';
import { ReceiveBuffers } from './receive_buffers';
import { LatencyWindow } from './stats';
import type { Target } from './target_set';
import { entryBytes, entryKey, errorText, extentBytesOf, type JobControl, type TierContext } from './tier_context';

const BS = constants.blockSizeBytes;

/** The first block of `data` (plain bytes of `e` from `fromBytes`) that fails e's checksums; 0 for a partial block; -1 when all match. */
function badBlock(e: Extent, fromBytes: number, data: Buffer): number {
  if (data.length % BS !== 0) return 0;
  return firstBadBlock(data, e.checksums.subarray((fromBytes / BS) * 4, ((fromBytes + data.length) / BS) * 4));
}

/** Who a GET is for: a reader waiting for it, a reader's window ahead, or a write-back in the background. */
type Lane = 'read' | 'prefetch' | 'background';

/** A file being read, as the pipeline sees it. */
interface Stream {
  /** Where the furthest read so far ended. */
  endBytes: number;
  /** How far fetches ahead were started. */
  frontierBytes: number;
  /** How far ahead of the reader fetches go. */
  windowBytes: number;
  /** The reader waited for bytes in flight since the window last grew: it is not far enough ahead. */
  waited: boolean;
  lastReadMs: number;
  /** Entries fetched ahead for it and not read yet, with their plain sizes (the shared budget). */
  ahead: Map<string, number>;
}

export class Recaller {
  /** Latency of recall GETs (status percentiles); `onLatency` lets metrics observe each one. */
  readonly latency = new LatencyWindow();
  onLatency: ((ms: number) => void) | undefined;
  private readonly slabs = new ReceiveBuffers(
    constants.recallRequestBytesMax,
    constants.extentSizeBytesMax,
    constants.recallSlabCountMax,
    constants.recallSlabFreeCountMax,
    constants.recallSlabIdleMs,
  );
  private readonly cache = new LRUCache<string, Buffer>({
    maxSize: constants.recallCacheBytesMax,
    sizeCalculation: (value) => value.length,
    dispose: (value, key) => {
      this.settleAhead(key); // fetched ahead and dropped unread: off the budget
      this.slabs.release(value);
    },
  });
  private readonly fetches = new Map<string, Promise<Buffer>>();
  /** Entries a small random read is fetching a few blocks of. */
  private readonly smallFetches = new Set<string>();
  /** Reads waiting for the object tier right now, and GETs in flight for them or their windows (background GETs wait for both). */
  private readersWaiting = 0;
  private foregroundGets = 0;
  private backgroundGets = 0;
  private readonly streams = new LRUCache<number, Stream>({
    max: constants.recallFileCountMax,
    dispose: (stream) => this.dropAhead(stream),
  });
  /** Streams with reads in the last recallStreamIdleMs or bytes fetched ahead (the budget's sharers). */
  private readonly activeStreams = new Set<Stream>();
  /** Entries fetched ahead and not read yet: whose window they belong to; and their bytes in all. */
  private readonly aheadOwners = new Map<string, Stream>();
  private aheadBytes = 0;
  /** Write-backs running; their entries; their bytes, flash they will take (counted before they take it). */
  private writeBacksInFlight = 0;
  private readonly writingBack = new Set<string>();
  private writeBackBytesPending = 0;
  private readonly packInfos = new LRUCache<string, { nonce: Buffer | null; target: string }>({ max: constants.packInfoCountMax });

  constructor(
    private readonly ctx: TierContext,
    /** Frees flash for the recall command (eviction, then urgent destage). */
    private readonly makeRoom: () => Promise<number>,
  ) {}

  /** Note a pack's nonce and target as it is committed (saves a metadata lookup at its first recall). */
  rememberPack(packId: PackId, info: { nonce: Buffer | null; target: string }): void {
    this.packInfos.set(packId, info);
  }

  forgetPack(packId: PackId): void {
    this.packInfos.delete(packId);
  }

  /** Drop every recalled entry kept in memory (the next reads GET again). */
  dropCache(): void {
    this.cache.clear();
  }

  /** Resolves once no write-back after a recall is running. */
  async settle(): Promise<void> {
    while (this.writeBacksInFlight > 0) await this.ctx.clock.sleep(5);
  }

  /** Bytes fetched ahead of readers and not read yet (at most recallPrefetchBytesMax). */
  get prefetchedBytes(): number {
    return this.aheadBytes;
  }

  /** Memory in receive slabs (in use or kept free). */
  get receiveBufferBytes(): number {
    return this.slabs.slabCount * this.slabs.slabBytes;
  }

  /** A pack's nonce prefix and target, from a small cache in front of the metadata. */
  private packInfo(packId: PackId): { nonce: Buffer | null; target: string } {
    let known = this.packInfos.get(packId);
    if (!known) {
      const row = this.ctx.meta.getPack(packId);
      known = { nonce: row?.nonce ?? null, target: row?.target ?? 'default' };
      this.packInfos.set(packId, known);
    }
    return known;
  }

  /**
   * Note a read of [startBytes, endBytes) of a file; true when it continues
   * the file's stream (starts within sequentialSlackBytes of where the
   * furthest read ended: the kernel and readahead reorder neighbours a
   * little); anything else starts the stream over with a small window.
   */
  private advance(stream: Stream, startBytes: number, endBytes: number): boolean {
    const seq = stream.lastReadMs >= 0 && Math.abs(startBytes - stream.endBytes) <= constants.sequentialSlackBytes;
    stream.lastReadMs = this.ctx.clock.monotonicMs();
    if (seq) {
      stream.endBytes = Math.max(stream.endBytes, endBytes);
      this.activeStreams.add(stream);
    } else {
      stream.endBytes = endBytes;
      stream.frontierBytes = endBytes;
      stream.windowBytes = constants.recallWindowBytesMin;
      stream.waited = false;
      this.dropAhead(stream);
    }
    return seq;
  }

  private streamOf(ino: Ino): Stream {
    let stream = this.streams.get(ino);
    if (!stream) {
      stream = { endBytes: 0, frontierBytes: 0, windowBytes: constants.recallWindowBytesMin, waited: false, lastReadMs: -1, ahead: new Map() };
      this.streams.set(ino, stream);
    }
    return stream;
  }

  /**
   * Recall bytes [fromBytes, fromBytes + lengthBytes) of an OBJECT extent
   * (relative, block aligned), verified, and copy those from `skipBytes` on
   * into `dest` (dest.length of them).
   */
  async read(e: Extent, fromBytes: number, lengthBytes: number, dest: Buffer, skipBytes: number): Promise<void> {
    this.readersWaiting += 1;
    try {
      await this.readNow(e, fromBytes, lengthBytes, dest, skipBytes);
    } finally {
      this.readersWaiting -= 1;
    }
  }

  private async readNow(e: Extent, fromBytes: number, lengthBytes: number, dest: Buffer, skipBytes: number): Promise<void> {
    const ref = e.pack!;
    const at = e.fileOffsetBytes + fromBytes;
    const stream = this.streamOf(e.ino);
    const seq = this.advance(stream, at, at + lengthBytes);
    const key = entryKey(ref);
    let plain = this.cache.get(key);
    if (!plain && ref.encoding === 0 && !seq && lengthBytes * 4 <= e.lengthBytes && !this.fetches.has(key) && !this.smallFetches.has(key)) {
      // A small random read of a plain entry: fetch just its blocks (time to first byte), alone on the
      // wire; the write-back behind it then fetches the whole entry.  Readers of the same extent that
      // arrive meanwhile start (and share) that whole-entry fetch.
      this.smallFetches.add(key);
      let data: Buffer;
      try {
        data = await this.verifiedGet(e, ref.storedOffsetBytes + ref.skipBytes + fromBytes, lengthBytes, 'read', undefined, (bytes) => {
          this.verify(e, fromBytes, bytes);
          return bytes;
        });
      } finally {
        this.smallFetches.delete(key);
      }
      data.copy(dest, 0, skipBytes, skipBytes + dest.length);
      this.ctx.counters.recalledBytes += data.length;
      this.considerWriteBack(e, false, false);
      return;
    }
    if (!plain) {
      const running = this.fetches.get(key);
      if (running && seq) stream.waited = true; // the window is not far enough ahead of this reader
      const fetching = running ?? this.fetchGroup(seq ? [e, ...this.followers(e, this.requestBytes(stream.windowBytes))] : [e], 'read').get(key)!;
      if (seq) this.prefetch(e.ino, stream);
      plain = await fetching;
    } else if (seq) this.prefetch(e.ino, stream);
    this.settleAhead(key);
    let bytes = entryBytes(ref, plain, ref.skipBytes + fromBytes, ref.skipBytes + fromBytes + lengthBytes);
    if (!this.matches(e, fromBytes, bytes)) {
      // Decoded for another extent of the same entry (a file overwritten in part), and damaged in
      // transit where that one did not look: fetch it again for this extent, verified whole.
      this.ctx.counters.recallChecksumErrorCount += 1;
      log.error('recalled bytes failed verification', { ino: e.ino, pack: ref.packId, fileOffsetBytes: e.fileOffsetBytes + fromBytes, cached: true });
      this.cache.delete(key);
      plain = await this.fetchGroup([e], 'read').get(key)!;
      bytes = entryBytes(ref, plain, ref.skipBytes + fromBytes, ref.skipBytes + fromBytes + lengthBytes);
    }
    bytes.copy(dest, 0, skipBytes, skipBytes + dest.length); // in the turn the bytes were verified: the slab cannot be reused meanwhile
    this.considerWriteBack(e, seq, fromBytes + lengthBytes >= e.lengthBytes, plain);
  }

  /**
   * Do recalled plain bytes of `e` from `fromBytes` match its block checksums?
   * Entries are cached and shared by key, and a fetch verifies only the
   * extents it was made for: the bytes another extent of the same entry
   * takes from it are checked again (CRC-32C, tens of GB/s).
   */
  private matches(e: Extent, fromBytes: number, data: Buffer): boolean {
    return badBlock(e, fromBytes, data) < 0;
  }

  /** The size of the requests that fill a window: half of it, whole extents, at most recallRequestBytesMax. */
  private requestBytes(windowBytes: number): number {
    const half = Math.floor(windowBytes / 2 / constants.extentSizeBytesMax) * constants.extentSizeBytesMax;
    return Math.min(constants.recallRequestBytesMax, Math.max(constants.extentSizeBytesMax, half));
  }

  /** A stream's share of the prefetch budget: equal among the streams active lately. */
  private shareBytes(): number {
    const nowMs = this.ctx.clock.monotonicMs();
    for (const s of this.activeStreams) {
      if (nowMs - s.lastReadMs <= constants.recallStreamIdleMs) continue;
      this.activeStreams.delete(s); // gone quiet: what it had fetched ahead stays cached, off the budget
      this.dropAhead(s);
    }
    return Math.max(constants.recallWindowBytesMin, Math.floor(constants.recallPrefetchBytesMax / Math.max(1, this.activeStreams.size)));
  }

  /**
   * Top up a sequential reader's window: requests from its frontier to
   * window bytes past where it reads, within the shared budget; then let the
   * window grow while requests are below full size or the reader waited.
   */
  private prefetch(ino: Ino, stream: Stream): void {
    const windowBytes = Math.min(stream.windowBytes, this.shareBytes());
    const request = this.requestBytes(windowBytes);
    const readEnd = stream.endBytes;
    const until = readEnd + windowBytes;
    let frontier = Math.max(stream.frontierBytes, readEnd);
    if (until - frontier < request) return; // less than a request of room: wait for the reader
    let short = false;
    const ahead = this.ctx.meta.extentsInRange(ino, frontier, until);
    for (let i = 0; i < ahead.length; i++) {
      const x = ahead[i];
      if (residencyOf(x) !== 'OBJECT' || this.cache.has(entryKey(x.pack!)) || this.fetches.has(entryKey(x.pack!))) {
        frontier = Math.max(frontier, x.fileOffsetBytes + x.lengthBytes);
        continue;
      }
      const group = [x, ...this.followers(x, request)];
      const bytes = group.reduce((sum, g) => sum + g.lengthBytes, 0);
      if (this.aheadBytes + bytes > constants.recallPrefetchBytesMax) {
        short = true;
        break;
      }
      for (const promise of this.fetchGroup(group, 'prefetch', stream).values()) promise.catch(() => undefined); // a reader that wants it reports it
      const last = group[group.length - 1];
      frontier = last.fileOffsetBytes + last.lengthBytes;
      i += group.length - 1;
    }
    stream.frontierBytes = short ? frontier : Math.max(frontier, until); // past the last extent: a hole or the end of the file
    if (!short && stream.windowBytes < constants.recallWindowBytesMax && (stream.waited || request < constants.recallRequestBytesMax)) {
      stream.windowBytes = Math.min(2 * stream.windowBytes, constants.recallWindowBytesMax);
      stream.waited = false;
    }
  }

  /** Cache a recalled entry; the cache holds a reference to its slab until it lets the entry go. */
  private keep(key: string, plain: Buffer): void {
    if (this.cache.peek(key) === plain) return;
    this.slabs.hold(plain);
    this.cache.set(key, plain);
    if (this.cache.peek(key) !== plain) this.slabs.release(plain); // not kept (too large for the cache)
  }

  /** An entry fetched ahead was read (or dropped): its bytes leave the budget. */
  private settleAhead(key: string): void {
    const owner = this.aheadOwners.get(key);
    if (!owner) return;
    this.aheadOwners.delete(key);
    this.aheadBytes -= owner.ahead.get(key) ?? 0;
    owner.ahead.delete(key);
  }

  /** Forget what a stream fetched ahead (it jumped, went quiet or was forgotten); the entries stay cached. */
  private dropAhead(stream: Stream): void {
    for (const key of [...stream.ahead.keys()]) this.settleAhead(key);
  }

  /**
   * The plain bytes of one extent's pack copy, verified: what repack moves
   * and fsck --deep checks (`fresh`: from the bucket, never from what was
   * recalled earlier).  A copy of its own (the caller may keep it).
   */
  async fetchExtent(e: Extent, { fresh }: { fresh: boolean }): Promise<Buffer> {
    if (e.pack === null) throw new TierfsError('INVALID', `inode ${e.ino} at ${e.fileOffsetBytes}: the extent has no pack copy`);
    const key = entryKey(e.pack);
    if (fresh) this.cache.delete(key);
    const plain = this.cache.get(key) ?? (await (this.fetches.get(key) ?? this.fetchGroup([e], 'background').get(key)!));
    if (this.matches(e, 0, extentBytesOf(e, plain))) return Buffer.from(extentBytesOf(e, plain));
    this.cache.delete(key); // decoded for another extent of the entry and damaged where that one did not look
    return Buffer.from(extentBytesOf(e, await this.fetchGroup([e], 'background').get(key)!));
  }

  /** Recalled plain bytes of `e` from `fromBytes` (relative, block aligned) against the block checksums it was written with. */
  private verify(e: Extent, fromBytes: number, data: Buffer): void {
    const bad = badBlock(e, fromBytes, data);
    if (bad < 0) return;
    throw new TierfsError('CHECKSUM', `checksum mismatch in inode ${e.ino} at offset ${e.fileOffsetBytes + fromBytes + Math.max(bad, 0) * BS} (recalled from pack ${e.pack?.packId})`);
  }

  /**
   * One ranged GET of `e`'s pack (received into `into` when given), checked
   * by `check`; bytes that fail it get one fresh GET (damage in transit).
   */
  private async verifiedGet<T>(
    e: Extent,
    offsetBytes: number,
    lengthBytes: number,
    lane: Lane,
    into: Buffer | undefined,
    check: (stored: Buffer) => T | Promise<T>,
  ): Promise<T> {
    const packId = e.pack!.packId;
    const target = this.ctx.targets.get(this.packInfo(packId).target);
    for (let attempt = 0; ; attempt++) {
      const stored = await this.get(target, packKey(this.ctx.crypto.fsUuid, packId), { offsetBytes, lengthBytes, into }, lane);
      try {
        return await check(stored);
      } catch (error) {
        if (!(error instanceof TierfsError && error.code === 'CHECKSUM')) throw error;
        this.ctx.counters.recallChecksumErrorCount += 1;
        log.error('recalled bytes failed verification', { ino: e.ino, pack: packId, offsetBytes, lengthBytes, attempt, error: errorText(error) });
        if (attempt >= 1) throw error;
      }
    }
  }

  /** A background GET's turn: once no reader waits and no foreground GET is in flight (or after readerQuietWaitMsMax), one at a time. */
  private async backgroundTurn(): Promise<void> {
    for (let waitedMs = 0; waitedMs < constants.readerQuietWaitMsMax; waitedMs += 5) {
      if (this.readersWaiting === 0 && this.foregroundGets === 0 && this.backgroundGets < constants.recallBackgroundGetCountMax) break;
      await this.ctx.clock.sleep(5);
    }
  }

  /** One ranged GET under the recall deadline; failures become EIO-mapped errors, counted. */
  private async get(target: Target, key: string, range: GetRange, lane: Lane): Promise<Buffer> {
    const { offsetBytes, lengthBytes } = range;
    const { clock, counters, options } = this.ctx;
    if (lane === 'background') await this.backgroundTurn();
    if (lane === 'background') this.backgroundGets += 1;
    else this.foregroundGets += 1;
    counters.recallGetCount += 1;
    const signal = clock.timeout(options.recallTimeoutMs);
    const startedMs = clock.monotonicMs();
    try {
      const data = await target.store.get(key, range, signal);
      target.lastError = undefined;
      const latencyMs = clock.monotonicMs() - startedMs;
      this.latency.record(latencyMs);
      this.onLatency?.(latencyMs);
      log.debug('recall GET', { key, offsetBytes, lengthBytes, lane, ms: Math.round(latencyMs), readersWaiting: this.readersWaiting, aheadBytes: this.aheadBytes });
      return data;
    } catch (error) {
      counters.recallFailureCount += 1;
      const message = signal.aborted ? `the object tier did not answer within ${options.recallTimeoutMs} ms` : errorText(error);
      if (!(error instanceof ObjectStoreError && error.kind === 'NotFound')) target.lastError = message;
      log.error('recall failed', { target: target.name, key, offsetBytes, lengthBytes, error: message });
      if (error instanceof ObjectStoreError && (error.kind === 'Throttled' || error.kind === 'Transient'))
        throw new TierfsError('UNAVAILABLE', `recall: ${message}`, { cause: error });
      throw new TierfsError('IO', `recall of ${key}: ${message}`, { cause: error });
    } finally {
      if (lane === 'background') this.backgroundGets -= 1;
      else this.foregroundGets -= 1;
    }
  }

  /** OBJECT extents after `e` in its file, whose entries follow e's in the same pack, not cached or fetching. */
  private followers(e: Extent, bytesMax: number): Extent[] {
    const out: Extent[] = [];
    let prev = e;
    const end = e.fileOffsetBytes + e.lengthBytes;
    let bytes = e.pack!.storedLengthBytes;
    for (const next of this.ctx.meta.extentsInRange(e.ino, end, end + bytesMax)) {
      const ref = next.pack;
      if (
        next.fileOffsetBytes !== prev.fileOffsetBytes + prev.lengthBytes ||
        residencyOf(next) !== 'OBJECT' ||
        ref!.packId !== prev.pack!.packId ||
        ref!.storedOffsetBytes !== prev.pack!.storedOffsetBytes + prev.pack!.storedLengthBytes ||
        ref!.skipBytes !== 0 ||
        bytes + ref!.storedLengthBytes > bytesMax ||
        this.cache.has(entryKey(ref!)) ||
        this.fetches.has(entryKey(ref!))
      )
        break;
      out.push(next);
      bytes += ref!.storedLengthBytes;
      prev = next;
    }
    return out;
  }

  /**
   * Fetch the entries of contiguous extents of one pack with one GET, into a
   * receive slab when it is large; each is verified against its extent's
   * checksums and kept in the cache.  For a prefetch, the entries join
   * `owner`'s window on the shared budget until read.  Whoever awaits an
   * entry's promise gets a view it must use in that turn or hold().
   */
  private fetchGroup(group: Extent[], lane: Lane, owner?: Stream): Map<string, Promise<Buffer>> {
    const first = group[0].pack!;
    const lastRef = group[group.length - 1].pack!;
    const offsetBytes = first.storedOffsetBytes;
    const lengthBytes = lastRef.storedOffsetBytes + lastRef.storedLengthBytes - offsetBytes;
    const { nonce } = this.packInfo(first.packId);
    const slab = this.slabs.take(lengthBytes);
    const whole = this.verifiedGet(group[0], offsetBytes, lengthBytes, lane, slab, async (stored) => {
      // Every decode settles before a failure is reported: a retry receives into the same slab.
      const decoded = await Promise.allSettled(
        group.map(async (x) => {
          const ref = x.pack!;
          const part = stored.subarray(ref.storedOffsetBytes - offsetBytes, ref.storedOffsetBytes - offsetBytes + ref.storedLengthBytes);
          const plain = await decodeEntry(this.ctx.crypto, ref.packId, nonce, ref, part, ref.skipBytes + x.lengthBytes);
          this.verify(x, 0, extentBytesOf(x, plain));
          return plain;
        }),
      );
      const failed = decoded.find((d) => d.status === 'rejected');
      if (failed) throw failed.reason;
      return decoded.map((d) => (d as PromiseFulfilledResult<Buffer>).value);
    })
      .then((plains) => {
        group.forEach((x, i) => this.keep(entryKey(x.pack!), plains[i]));
        return plains;
      })
      .finally(() => {
        if (slab) this.slabs.release(slab); // the fetch's own reference; cached entries hold theirs
      });
    const result = new Map<string, Promise<Buffer>>();
    group.forEach((x, i) => {
      const key = entryKey(x.pack!);
      if (owner) {
        owner.ahead.set(key, x.lengthBytes);
        this.aheadOwners.set(key, owner);
        this.aheadBytes += x.lengthBytes;
      }
      const promise = whole.then((plains) => plains[i]);
      promise.catch(() => this.settleAhead(key));
      const tracked = promise.finally(() => {
        if (this.fetches.get(key) === promise) this.fetches.delete(key); // not a newer fetch of the same entry
      });
      tracked.catch(() => undefined);
      this.fetches.set(key, promise);
      result.set(key, promise);
    });
    void whole.then(
      (plains) => (this.ctx.counters.recalledBytes += plains.reduce((sum, p) => sum + p.length, 0)),
      () => undefined,
    );
    return result;
  }

  /**
   * Write a recalled extent back to flash in the background: a random read
   * while flash stays below the high watermark, a sequential scan of a large
   * file only into room below the low one; otherwise (or when
   * writeBackCountMax already run) it is served straight through.
   * `endsExtent`: this read reaches the extent's end (a file read in small
   * pieces asks many times; straight-through bytes are counted once).
   */
  private considerWriteBack(e: Extent, seq: boolean, endsExtent: boolean, plain?: Buffer): void {
    const { ctx } = this;
    const key = entryKey(e.pack!);
    if (this.writingBack.has(key)) return;
    const scan = seq && (ctx.meta.getInode(e.ino)?.sizeBytes ?? 0) >= constants.sequentialScanBytesMin;
    const roomBytes = scan ? ctx.lowBytes : ctx.highBytes;
    if (ctx.stopped || this.writeBacksInFlight >= constants.writeBackCountMax || ctx.flash.usedBytes + this.writeBackBytesPending + e.lengthBytes > roomBytes) {
      if (scan && endsExtent) ctx.counters.straightThroughBytes += e.lengthBytes;
      return;
    }
    this.writingBack.add(key);
    this.writeBacksInFlight += 1;
    this.writeBackBytesPending += e.lengthBytes;
    void (async () => {
      let held: Buffer | undefined;
      try {
        const whole = plain ?? (await (this.fetches.get(key) ?? this.fetchGroup([e], 'background').get(key)!));
        this.slabs.hold(whole); // in the turn it was given (with `plain`, before this function's first await): kept across the write
        held = whole;
        const mine = extentBytesOf(e, whole);
        if (!this.matches(e, 0, mine)) {
          // The entry was verified for another of its extents; flash takes only bytes checked for this one.
          this.cache.delete(key);
          log.warn('write-back after recall skipped: the bytes do not match the extent', { ino: e.ino, offset: e.fileOffsetBytes });
          return;
        }
        // A follower's copy must stay one row under the writer's key (follower.ts adopts it as one).
        if (await ctx.flash.writeBack(e, mine, { wholeOnly: ctx.options.follow !== null })) ctx.counters.writtenBackBytes += e.lengthBytes; // it copies into its own buffer
      } catch (error) {
        log.debug('write-back after recall skipped', { ino: e.ino, offset: e.fileOffsetBytes, error: errorText(error) });
      } finally {
        if (held) this.slabs.release(held);
        this.writeBacksInFlight -= 1;
        this.writeBackBytesPending -= e.lengthBytes;
        this.writingBack.delete(key);
      }
    })();
  }

  /**
   * OBJECT → BOTH for every extent of a file (the recall command): requests
   * of recallRequestBytesMax, a window of them in flight, written back in
   * order; makes room by evicting colder data if needed.
   */
  async recallFile(ino: Ino, { progress, signal }: JobControl = {}): Promise<number> {
    const { flash, counters } = this.ctx;
    const cold = this.ctx.meta.fileExtents(ino).filter((e) => residencyOf(e) === 'OBJECT');
    const totalBytes = cold.reduce((sum, e) => sum + e.lengthBytes, 0);
    // Groups fetched and not written yet; each entry holds its slab from the turn it arrived until it is written.
    const inFlight: { group: Extent[]; held: Promise<Buffer>[] }[] = [];
    let doneBytes = 0;
    let next = 0;
    try {
      while ((next < cold.length || inFlight.length > 0) && !signal?.aborted) {
        while (next < cold.length && inFlight.length * constants.recallRequestBytesMax < constants.recallWindowBytesMax) {
          const group = [cold[next], ...this.followers(cold[next], constants.recallRequestBytesMax)];
          const fetched = this.fetchGroup(group, 'read');
          const held = group.map((e) => {
            const promise = fetched.get(entryKey(e.pack!))!.then((plain) => {
              this.slabs.hold(plain);
              return plain;
            });
            promise.catch(() => undefined); // reported when its turn comes, or by nobody after a stop
            return promise;
          });
          inFlight.push({ group, held });
          next += group.length;
        }
        const { group, held } = inFlight[0];
        const groupBytes = group.reduce((sum, e) => sum + e.lengthBytes, 0);
        if (flash.freeBytes < groupBytes + (flash.capacityBytes - this.ctx.highBytes)) await this.makeRoom();
        if (flash.freeBytes < groupBytes)
          throw new TierfsError('NO_SPACE', `recall: flash is full of data that cannot leave it (${doneBytes} of ${totalBytes} bytes recalled)`);
        for (const e of group) {
          const plain = await held.shift()!; // `group` itself stays whole: the fetch still reads it
          try {
            if (await flash.writeBack(e, extentBytesOf(e, plain), { wholeOnly: this.ctx.options.follow !== null })) counters.writtenBackBytes += e.lengthBytes;
          } finally {
            this.slabs.release(plain);
          }
          doneBytes += e.lengthBytes;
          progress?.({ doneBytes, totalBytes });
        }
        inFlight.shift();
      }
    } finally {
      for (const { held } of inFlight) for (const promise of held) promise.then((plain) => this.slabs.release(plain), () => undefined); // fetched ahead of a failure or a stop
    }
    await flash.commit();
    return doneBytes;
  }
}
