/**
 * Recall: reads of extents that are only in packs (OBJECT), the recall
 * command, and the one way every part of tierfs fetches a pack entry
 * (`fetchExtent`: reads, repack, fsck --deep).
 *
 * - A read fetches its extent's pack entry with a ranged GET, shared by
 *   concurrent readers and kept in a bounded cache.  A small random read of
 *   a plain entry fetches just its blocks (time to first byte).
 * - Sequential readers get the following entries fetched ahead, one GET
 *   where they lie together in the pack, up to three readahead spans ahead
 *   of a per-file frontier (every extent is looked up once, not per read).
 * - Random or repeated reads write the extent back to flash (BOTH); a
 *   sequential scan of a large file is served straight through, so one
 *   backup read does not flush the working set.  Write-backs wait for
 *   readers waiting on the object tier (at most readerQuietWaitMsMax).
 * - Every recalled block is verified against the extent's block checksums;
 *   bytes that fail get one fresh GET (damage in transit), then CHECKSUM.
 * - Degraded mode: a GET that does not answer within recallTimeoutMs is EIO
 *   (UNAVAILABLE for throttling and transient failures), and counted.
 */
import { LRUCache } from 'lru-cache';
import { firstBadBlock } from '../checksum';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import { residencyOf, type Extent, type Ino, type PackId } from '../meta/meta_store';
import { ObjectStoreError } from './object_store';
import { decodeEntry, packKey } from './pack';
import { LatencyWindow } from './stats';
import type { Target } from './target_set';
import { entryBytes, entryKey, errorText, extentBytesOf, type JobControl, type TierContext } from './tier_context';

const BS = constants.blockSizeBytes;

export class Recaller {
  /** Latency of recall GETs (status percentiles); `onLatency` lets metrics observe each one. */
  readonly latency = new LatencyWindow();
  onLatency: ((ms: number) => void) | undefined;
  private readonly cache = new LRUCache<string, Buffer>({
    maxSize: constants.recallCacheBytesMax,
    sizeCalculation: (value) => value.length,
  });
  private readonly fetches = new Map<string, Promise<Buffer>>();
  /** Entries a small random read is fetching a few blocks of. */
  private readonly smallFetches = new Set<string>();
  /** Reads waiting for the object tier right now (background fetches wait for them). */
  private readersWaiting = 0;
  private readonly readEnds = new LRUCache<number, number>({ max: constants.recallFileCountMax });
  /** Per file, how far a sequential reader's readahead has started fetches. */
  private readonly readAheadFrontiers = new LRUCache<number, number>({ max: constants.recallFileCountMax });
  private writeBacksInFlight = 0;
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

  /** Is this read the continuation of the last one of the same file? */
  private sequential(ino: Ino, startBytes: number, endBytes: number): boolean {
    const last = this.readEnds.get(ino);
    this.readEnds.set(ino, endBytes);
    return last !== undefined && Math.abs(startBytes - last) <= constants.sequentialSlackBytes;
  }

  /** Bytes [fromBytes, fromBytes + lengthBytes) of an OBJECT extent (relative, block aligned), verified. */
  async read(e: Extent, fromBytes: number, lengthBytes: number): Promise<Buffer> {
    this.readersWaiting += 1;
    try {
      return await this.readNow(e, fromBytes, lengthBytes);
    } finally {
      this.readersWaiting -= 1;
    }
  }

  private async readNow(e: Extent, fromBytes: number, lengthBytes: number): Promise<Buffer> {
    const ref = e.pack!;
    const at = e.fileOffsetBytes + fromBytes;
    const seq = this.sequential(e.ino, at, at + lengthBytes);
    if (!seq) this.readAheadFrontiers.delete(e.ino);
    const key = entryKey(ref);
    const cached = this.cache.get(key);
    let plain: Buffer;
    if (cached) {
      plain = cached;
      if (seq) this.readAhead(e);
    } else if (ref.encoding === 0 && !seq && lengthBytes * 4 <= e.lengthBytes && !this.fetches.has(key) && !this.smallFetches.has(key)) {
      // A small random read of a plain entry: fetch just its blocks (time to first byte), alone on the
      // wire; the write-back behind it then fetches the whole entry.  Readers of the same extent that
      // arrive meanwhile start (and share) that whole-entry fetch.
      this.smallFetches.add(key);
      let data: Buffer;
      try {
        data = await this.verifiedGet(e, ref.storedOffsetBytes + ref.skipBytes + fromBytes, lengthBytes, (bytes) => {
          this.verify(e, fromBytes, bytes);
          return bytes;
        });
      } finally {
        this.smallFetches.delete(key);
      }
      this.ctx.counters.recalledBytes += data.length;
      this.considerWriteBack(e, false);
      return data;
    } else {
      const fetching = this.fetchEntry(e, seq);
      if (seq) this.readAhead(e);
      plain = await fetching;
    }
    this.considerWriteBack(e, seq, plain);
    return entryBytes(ref, plain, ref.skipBytes + fromBytes, ref.skipBytes + fromBytes + lengthBytes);
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
    const plain = this.cache.get(key) ?? (await (this.fetches.get(key) ?? this.fetchGroup([e]).get(key)!));
    return Buffer.from(extentBytesOf(e, plain));
  }

  /** Recalled plain bytes of `e` from `fromBytes` (relative, block aligned) against the block checksums it was written with. */
  private verify(e: Extent, fromBytes: number, data: Buffer): void {
    const bad = firstBadBlock(data, e.checksums.subarray((fromBytes / BS) * 4, ((fromBytes + data.length) / BS) * 4));
    if (bad < 0 && data.length % BS === 0) return;
    throw new TierfsError('CHECKSUM', `checksum mismatch in inode ${e.ino} at offset ${e.fileOffsetBytes + fromBytes + Math.max(bad, 0) * BS} (recalled from pack ${e.pack?.packId})`);
  }

  /** One ranged GET of `e`'s pack, checked by `check`; bytes that fail it get one fresh GET (damage in transit). */
  private async verifiedGet<T>(e: Extent, offsetBytes: number, lengthBytes: number, check: (stored: Buffer) => T): Promise<T> {
    const packId = e.pack!.packId;
    const target = this.ctx.targets.get(this.packInfo(packId).target);
    for (let attempt = 0; ; attempt++) {
      const stored = await this.get(target, packKey(this.ctx.crypto.fsUuid, packId), offsetBytes, lengthBytes);
      try {
        return check(stored);
      } catch (error) {
        if (!(error instanceof TierfsError && error.code === 'CHECKSUM')) throw error;
        this.ctx.counters.recallChecksumErrorCount += 1;
        log.error('recalled bytes failed verification', { ino: e.ino, pack: packId, offsetBytes, lengthBytes, attempt, error: errorText(error) });
        if (attempt >= 1) throw error;
      }
    }
  }

  /** One ranged GET under the recall deadline; failures become EIO-mapped errors, counted. */
  private async get(target: Target, key: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const { clock, counters, options } = this.ctx;
    counters.recallGetCount += 1;
    const signal = clock.timeout(options.recallTimeoutMs);
    const startedMs = clock.monotonicMs();
    try {
      const data = await target.store.get(key, { offsetBytes, lengthBytes }, signal);
      target.lastError = undefined;
      const latencyMs = clock.monotonicMs() - startedMs;
      this.latency.record(latencyMs);
      this.onLatency?.(latencyMs);
      log.debug('recall GET', { key, offsetBytes, lengthBytes, ms: Math.round(latencyMs), readersWaiting: this.readersWaiting, fetching: this.fetches.size });
      return data;
    } catch (error) {
      counters.recallFailureCount += 1;
      const message = signal.aborted ? `the object tier did not answer within ${options.recallTimeoutMs} ms` : errorText(error);
      if (!(error instanceof ObjectStoreError && error.kind === 'NotFound')) target.lastError = message;
      log.error('recall failed', { target: target.name, key, offsetBytes, lengthBytes, error: message });
      if (error instanceof ObjectStoreError && (error.kind === 'Throttled' || error.kind === 'Transient'))
        throw new TierfsError('UNAVAILABLE', `recall: ${message}`, { cause: error });
      throw new TierfsError('IO', `recall of ${key}: ${message}`, { cause: error });
    }
  }

  /**
   * Plain bytes of `e`'s pack entry, shared with concurrent readers.  A
   * sequential reader's fetch takes the entries of the following extents
   * with it when they lie next to it in the same pack (one larger GET).
   */
  private fetchEntry(e: Extent, seq: boolean): Promise<Buffer> {
    const key = entryKey(e.pack!);
    const running = this.fetches.get(key);
    if (running) return running;
    const group = [e];
    if (seq) group.push(...this.followers(e, constants.recallReadaheadBytes));
    return this.fetchGroup(group).get(key)!;
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

  /** Start fetching the entries a sequential reader will want next. */
  private readAhead(e: Extent): void {
    // Keep up to three readahead spans in flight ahead of a sequential reader, a GET per span where
    // the pack allows, so it never waits for a GET that starts only when it arrives.  Each file
    // keeps a frontier (how far fetches were started): every extent is looked up once, not per read.
    const end = e.fileOffsetBytes + e.lengthBytes;
    const span = constants.recallReadaheadBytes;
    const frontier = Math.max(this.readAheadFrontiers.get(e.ino) ?? end, end);
    if (frontier >= end + 2 * span) return;
    let reached = frontier;
    const ahead = this.ctx.meta.extentsInRange(e.ino, frontier, end + 3 * span);
    for (let i = 0; i < ahead.length; i++) {
      const x = ahead[i];
      if (this.fetches.size * constants.extentSizeBytesMax >= constants.recallCacheBytesMax / 2) break;
      reached = x.fileOffsetBytes + x.lengthBytes;
      if (residencyOf(x) !== 'OBJECT' || this.cache.has(entryKey(x.pack!)) || this.fetches.has(entryKey(x.pack!))) continue;
      const group = [x, ...this.followers(x, span)];
      for (const promise of this.fetchGroup(group).values()) promise.catch(() => undefined); // a reader that wants it reports it
      const last = group[group.length - 1];
      reached = last.fileOffsetBytes + last.lengthBytes;
      i += group.length - 1;
    }
    if (ahead.length === 0) reached = end + 3 * span; // a hole or the end of the file: nothing to fetch there
    this.readAheadFrontiers.set(e.ino, reached);
  }

  /** Fetch the entries of contiguous extents of one pack with one GET; each is verified against its extent's checksums. */
  private fetchGroup(group: Extent[]): Map<string, Promise<Buffer>> {
    const first = group[0].pack!;
    const lastRef = group[group.length - 1].pack!;
    const offsetBytes = first.storedOffsetBytes;
    const lengthBytes = lastRef.storedOffsetBytes + lastRef.storedLengthBytes - offsetBytes;
    const { nonce } = this.packInfo(first.packId);
    const whole = this.verifiedGet(group[0], offsetBytes, lengthBytes, (stored) =>
      group.map((x) => {
        const ref = x.pack!;
        const part = stored.subarray(ref.storedOffsetBytes - offsetBytes, ref.storedOffsetBytes - offsetBytes + ref.storedLengthBytes);
        const plain = decodeEntry(this.ctx.crypto, ref.packId, nonce, ref, part, ref.skipBytes + x.lengthBytes);
        this.verify(x, 0, extentBytesOf(x, plain));
        return plain;
      }),
    );
    const result = new Map<string, Promise<Buffer>>();
    group.forEach((x, i) => {
      const key = entryKey(x.pack!);
      const promise = whole.then((plains) => {
        this.cache.set(key, plains[i]);
        return plains[i];
      });
      promise.catch(() => undefined);
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

  /** Resolves once no reader waits for the object tier (or after readerQuietWaitMsMax: background work must not starve). */
  private async quiet(): Promise<void> {
    for (let waitedMs = 0; this.readersWaiting > 0 && waitedMs < constants.readerQuietWaitMsMax; waitedMs += 5) await this.ctx.clock.sleep(5);
  }

  /** Write a recalled extent back to flash, unless a large sequential scan is passing through. */
  private considerWriteBack(e: Extent, seq: boolean, plain?: Buffer): void {
    const { ctx } = this;
    const size = ctx.meta.getInode(e.ino)?.sizeBytes ?? 0;
    if (seq && size >= constants.sequentialScanBytesMin) {
      ctx.counters.straightThroughBytes += e.lengthBytes;
      return;
    }
    if (ctx.stopped || this.writeBacksInFlight >= constants.writeBackCountMax || ctx.flash.usedBytes + e.lengthBytes > ctx.highBytes) return;
    this.writeBacksInFlight += 1;
    void (async () => {
      try {
        if (!plain) await this.quiet(); // background work: a reader waiting for a GET goes first
        const whole = plain ?? (await this.fetchEntry(e, false));
        if (await ctx.flash.writeBack(e, Buffer.from(extentBytesOf(e, whole)))) ctx.counters.writtenBackBytes += e.lengthBytes;
      } catch (error) {
        log.debug('write-back after recall skipped', { ino: e.ino, offset: e.fileOffsetBytes, error: errorText(error) });
      } finally {
        this.writeBacksInFlight -= 1;
      }
    })();
  }

  /** OBJECT → BOTH for every extent of a file (the recall command); makes room by evicting colder data if needed. */
  async recallFile(ino: Ino, { progress, signal }: JobControl = {}): Promise<number> {
    const { flash, counters } = this.ctx;
    const cold = this.ctx.meta.fileExtents(ino).filter((e) => residencyOf(e) === 'OBJECT');
    const totalBytes = cold.reduce((sum, e) => sum + e.lengthBytes, 0);
    let doneBytes = 0;
    for (let i = 0; i < cold.length && !signal?.aborted; ) {
      const group = [cold[i], ...this.followers(cold[i], constants.recallReadaheadBytes)];
      const groupBytes = group.reduce((sum, e) => sum + e.lengthBytes, 0);
      if (flash.freeBytes < groupBytes + (flash.capacityBytes - this.ctx.highBytes)) await this.makeRoom();
      if (flash.freeBytes < groupBytes)
        throw new TierfsError('NO_SPACE', `recall: flash is full of data that cannot leave it (${doneBytes} of ${totalBytes} bytes recalled)`);
      const fetched = this.fetchGroup(group);
      for (const e of group) {
        const plain = await fetched.get(entryKey(e.pack!))!;
        if (await flash.writeBack(e, Buffer.from(extentBytesOf(e, plain)))) counters.writtenBackBytes += e.lengthBytes;
        doneBytes += e.lengthBytes;
        progress?.({ doneBytes, totalBytes });
      }
      i += group.length;
    }
    await flash.commit();
    return doneBytes;
  }
}
