/**
 * Destage (FLASH → BOTH): plan, build, upload.
 *
 * - Plan: the coldest FLASH extents whose policy lets them go now (or every
 *   FLASH extent of the files a command names), grouped by target, cut into
 *   packs of packSizeBytesTarget.  A background pass holds back the last,
 *   small pack of each target until its oldest extent has waited
 *   packWaitMsMax, so packs are not tiny.
 * - Build: the extents are read from flash (verified) into a pack buffer and
 *   the pack is built from views of it; its row is committed as `uploading`
 *   BEFORE the upload starts, so a crash at any point leaves either nothing
 *   or a row that names the object to delete at the next start.
 * - Upload: at most uploadCountMax packs go up at once while the next one is
 *   built.  After the upload (and a HEAD that checks its size) one metadata
 *   mutation marks each extent BOTH — only if it is still exactly the extent
 *   that was read: one rewritten, truncated or merged during the upload
 *   stays FLASH, its bytes in the pack are garbage from the start, and the
 *   race is counted (destageRacedCount).
 * - Destage gives way to the file system's own I/O (yieldToForeground);
 *   urgent destage (flash short) never waits.
 *
 * The queue status shows (bytes a destage would take now) is counted by a
 * background pass at most every destageQueueRefreshMs and lowered by every
 * destage; status never scans the extents itself.
 */
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { Extent, Ino, MetaStore, PackId, PackRef, PolicyRecord } from '../meta/meta_store';
import { ObjectStoreError } from './object_store';
import { packKey, PackWriter } from './pack';
import type { Target } from './target_set';
import { errorText, type JobControl, type TierContext } from './tier_context';

export interface PackItem {
  extent: Extent;
  data: Buffer;
  compress: boolean;
}

export interface BuiltPack {
  /** The buffer its raw entries are views of, reused once the pack is up. */
  buffer?: Buffer;
  target: Target;
  writer: PackWriter;
  body: Buffer[];
  storedBytes: number;
  packed: { extent: Extent; ref: PackRef }[];
}

interface PlannedExtent {
  extent: Extent;
  compress: boolean;
  target: string;
  /** When its policy let it go (ms). */
  eligibleMs: number;
}

export interface DestageRequest extends JobControl {
  /** Only these files, whatever their cooling period (the destage command). */
  inos?: Ino[];
  /** The coldest of any policy but pin and never, up to bytesMax, without pauses (flash is short). */
  urgent?: boolean;
  bytesMax?: number;
  /** A background pass: the last small pack of each target waits for more. */
  background?: boolean;
}

/**
 * Extents by coldness, page after page (pinned or never data at the cold end
 * must not hide everything behind it), at most tierScanPageCountMax pages.
 */
export function* coldExtents(meta: MetaStore, kind: 'flash' | 'both', nowMs: number): Iterable<Extent> {
  let after: Extent | undefined;
  for (let page = 0; page < constants.tierScanPageCountMax; page++) {
    const extents = meta.coldExtents(kind, nowMs + 1, constants.tierScanCountMax, after);
    yield* extents;
    if (extents.length < constants.tierScanCountMax) return;
    after = extents[extents.length - 1];
  }
}

/** A policy that never lets a file's data leave flash (or a file below its policy's size). */
export function keepsOnFlash(policy: PolicyRecord, sizeBytes: number): boolean {
  return policy.mode === 'pin' || policy.mode === 'never' || sizeBytes < policy.sizeBytesMin;
}

export class Destager {
  /** Foreground bytes read and written as of the last destage step (see yieldToForeground). */
  private foregroundBytes = 0;
  /** Pack buffers of the destage running now (reading into them pays page faults only once); dropped after it. */
  private packBuffers: Buffer[] = [];
  /** The destage queue as last counted, and when. */
  private queue = { bytes: 0, countedMs: -Infinity };

  constructor(
    private readonly ctx: TierContext,
    /** Told of every pack that went live (recall caches its nonce and target). */
    private readonly packLive: (packId: PackId, info: { nonce: Buffer | null; target: string }) => void,
  ) {}

  /** Bytes only on flash whose policy lets them go now, as last counted (see countQueue), and when. */
  get queueBytes(): number {
    return this.queue.bytes;
  }

  get queueCountedMs(): number {
    return this.queue.countedMs;
  }

  /** Count the destage queue again (a scan of up to tierScanPageCountMax pages of extents). */
  countQueue(): number {
    const now = this.ctx.clock.nowMs();
    this.queue = { bytes: this.planCold(now, false, Infinity, Infinity).reduce((sum, p) => sum + p.extent.lengthBytes, 0), countedMs: now };
    return this.queue.bytes;
  }

  /** Count the queue again if the last count is older than destageQueueRefreshMs (background passes). */
  refreshQueue(): void {
    if (this.ctx.clock.nowMs() - this.queue.countedMs >= constants.destageQueueRefreshMs) this.countQueue();
  }

  /** Destage what `request` asks for; returns the bytes that became BOTH.  The scheduler runs it in turn with the other passes. */
  async destage(request: DestageRequest): Promise<number> {
    const { ctx } = this;
    if (ctx.stopped) return 0;
    const now = ctx.clock.nowMs();
    const planned = request.inos !== undefined ? request.inos.flatMap((ino) => this.planFile(ino)) : this.planCold(now, request.urgent ?? false, request.bytesMax ?? Infinity);
    if (planned.length === 0) return 0;
    const totalBytes = planned.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
    let batches: PlannedExtent[][] = [[]];
    let batchBytes = 0;
    // A pack goes to one target: extents are grouped by target (a stable sort keeps coldest first within one).
    planned.sort((a, b) => (a.target === b.target ? 0 : a.target < b.target ? -1 : 1));
    for (const p of planned) {
      const current = batches[batches.length - 1];
      if ((batchBytes + p.extent.lengthBytes > ctx.options.packSizeBytesTarget && batchBytes > 0) || (current.length > 0 && current[0].target !== p.target)) {
        batches.push([]);
        batchBytes = 0;
      }
      batches[batches.length - 1].push(p);
      batchBytes += p.extent.lengthBytes;
    }
    if (request.background) {
      // The last pack of each target waits for more to fill it, unless its oldest extent has waited long enough.
      const waiting = batches.filter((batch, i) => {
        if (batches[i + 1]?.[0].target === batch[0].target) return false;
        const bytes = batch.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
        return bytes < constants.packSizeBytesMin && now - Math.min(...batch.map((p) => p.eligibleMs)) < ctx.options.packWaitMsMax;
      });
      batches = batches.filter((batch) => !waiting.includes(batch));
      if (batches.length === 0) return 0;
    }
    // A pipeline: the next pack is read and built while earlier ones upload (at most
    // uploadCountMax at once, each with its parts in parallel).
    let doneBytes = 0;
    if (!request.urgent) {
      // A look at the foreground before the first pack, too: a busy file system gets its pause first.
      this.foregroundBytes = ctx.flash.counters.readBytes + ctx.flash.counters.writtenBytes;
      await ctx.clock.sleep(constants.destagePauseMs);
      await this.yieldToForeground(constants.destagePauseMs);
    }
    let building = this.readAndBuild(batches[0]);
    const uploads: Promise<number>[] = [];
    try {
      let busySinceMs = ctx.clock.monotonicMs();
      for (let i = 0; i < batches.length && !ctx.stopped && !request.signal?.aborted; i++) {
        const built = await building;
        while (uploads.length >= ctx.options.uploadCountMax) doneBytes += await uploads.shift()!;
        if (!request.urgent) {
          await this.yieldToForeground(ctx.clock.monotonicMs() - busySinceMs);
          busySinceMs = ctx.clock.monotonicMs();
        }
        if (i + 1 < batches.length) building = this.readAndBuild(batches[i + 1]);
        request.progress?.({ doneBytes, totalBytes });
        if (built)
          uploads.push(
            this.uploadPack(built)
              .then((bytes) => {
                ctx.counters.destagedPackCount += 1;
                return bytes;
              })
              .finally(() => {
                if (built.buffer && this.packBuffers.length <= ctx.options.uploadCountMax) this.packBuffers.push(built.buffer);
              }),
          );
      }
      while (uploads.length > 0) doneBytes += await uploads.shift()!;
    } finally {
      await building.catch(() => undefined);
      await Promise.allSettled(uploads);
      this.packBuffers = [];
    }
    ctx.counters.destagedBytes += doneBytes;
    this.queue.bytes = Math.max(0, this.queue.bytes - doneBytes);
    request.progress?.({ doneBytes, totalBytes });
    return doneBytes;
  }

  /**
   * Tiering gives way to the file system's own I/O: when reads or writes went
   * on since the last pack, a non-urgent destage pauses destageYieldFactor
   * times as long as it just worked (at most destageYieldMsMax), so under
   * load it takes about a fifth of the time.
   */
  private async yieldToForeground(busyMs: number): Promise<void> {
    const c = this.ctx.flash.counters;
    const active = c.readBytes + c.writtenBytes !== this.foregroundBytes;
    if (active && busyMs > 0) await this.ctx.clock.sleep(Math.min(constants.destageYieldFactor * busyMs, constants.destageYieldMsMax));
    this.foregroundBytes = c.readBytes + c.writtenBytes;
  }

  /** Every FLASH extent of one file; refused when its policy keeps it on flash. */
  private planFile(ino: Ino): PlannedExtent[] {
    const policy = this.ctx.policyOf(ino);
    if (keepsOnFlash(policy, Infinity))
      throw new TierfsError('INVALID', `policy ${policy.name} (${policy.mode}) keeps ${this.ctx.pathOf(ino) ?? `inode ${ino}`} on flash`);
    return this.ctx.meta
      .fileExtents(ino)
      .filter((e) => e.pack === null)
      .map((extent) => ({ extent, compress: policy.compress, target: policy.target, eligibleMs: 0 }));
  }

  /** The coldest FLASH extents whose policy lets them go now, oldest first. */
  private planCold(now: number, urgent: boolean, bytesMax: number, limit = Math.min(bytesMax, constants.packSizeBytesMax * (constants.uploadCountMaxDefault + 1) * 4)): PlannedExtent[] {
    const decided = new Map<Ino, PolicyRecord | null>();
    const planned: PlannedExtent[] = [];
    let bytes = 0;
    for (const e of coldExtents(this.ctx.meta, 'flash', now)) {
      if (bytes >= limit) break;
      let policy = decided.get(e.ino);
      if (policy === undefined) {
        const p = this.ctx.policyOf(e.ino);
        policy = keepsOnFlash(p, this.ctx.meta.getInode(e.ino)?.sizeBytes ?? 0) ? null : p;
        decided.set(e.ino, policy);
      }
      if (policy === null) continue;
      const eligibleMs = this.ctx.heat.heatOf(e).accessedMs + (policy.mode === 'auto' ? policy.coolAfterMs : 0);
      if (!urgent && eligibleMs > now) continue;
      planned.push({ extent: e, compress: policy.compress, target: policy.target, eligibleMs });
      bytes += e.lengthBytes;
    }
    return planned;
  }

  /** Read a batch from flash (verified) into a pack buffer and build its pack from views of it. */
  private async readAndBuild(batch: PlannedExtent[]): Promise<BuiltPack | undefined> {
    const { flash, options } = this.ctx;
    const bytes = batch.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
    const buffer = this.packBuffers.pop() ?? flash.device.allocBuffer(Math.max(bytes, options.packSizeBytesTarget + constants.extentSizeBytesMax));
    if (buffer.length < bytes) throw new Error(`pack buffer of ${buffer.length} bytes for a batch of ${bytes}`);
    const datas = await flash.readExtents(batch.map((p) => p.extent), buffer);
    const items: PackItem[] = [];
    batch.forEach((p, i) => {
      const data = datas[i];
      if (data instanceof Error) log.warn('extent not destaged: flash read failed', { ino: p.extent.ino, offset: p.extent.fileOffsetBytes, error: data.message });
      else items.push({ extent: p.extent, data, compress: p.compress });
    });
    const built = await this.buildPack(items, this.ctx.targets.get(batch[0].target));
    if (built) built.buffer = buffer;
    else this.packBuffers.push(buffer);
    return built;
  }

  /**
   * Build a pack in memory and commit its row (state uploading) before any
   * byte of it goes up: a crash from here on leaves a row naming the object
   * to delete at the next start, never an orphan.
   */
  async buildPack(items: PackItem[], target: Target): Promise<BuiltPack | undefined> {
    if (items.length === 0) return undefined;
    const { meta, crypto, clock, flash } = this.ctx;
    const writer = new PackWriter(crypto, clock.nowMs(), this.ctx.options.randomBytes);
    const packed = items.map(({ extent, data, compress }) => ({ extent, ref: writer.add(extent.ino, extent.fileOffsetBytes, data, extent.checksums, compress) }));
    const body = writer.finish();
    const storedBytes = body.reduce((sum, part) => sum + part.length, 0);
    const nonce = crypto.key !== null ? writer.nonce : null;
    meta.mutate(() =>
      meta.putPack({ packId: writer.packId, state: 'uploading', storedBytes, logicalBytes: writer.logicalBytes, liveBytes: 0, createdMs: writer.createdMs, nonce, target: target.name, deadSeq: null }),
    );
    await flash.commit();
    return { writer, body, storedBytes, packed, target };
  }

  /**
   * Upload a built pack and point its extents at it: after the upload a HEAD
   * checks the size, then one mutation repoints every extent that is still
   * exactly what was read.  Returns the bytes repointed.
   */
  async uploadPack(built: BuiltPack): Promise<number> {
    const { writer, body, storedBytes, packed, target } = built;
    const { meta, crypto, counters, flash } = this.ctx;
    const nonce = crypto.key !== null ? writer.nonce : null;
    const key = packKey(crypto.fsUuid, writer.packId);
    try {
      await target.store.put(key, body);
      const head = await target.store.head(key);
      if (head?.sizeBytes !== storedBytes)
        throw new ObjectStoreError('Corrupt', `put ${key}: the target holds ${head?.sizeBytes ?? 'nothing'} bytes, ${storedBytes} were sent`);
    } catch (error) {
      counters.destageFailureCount += 1;
      target.lastError = errorText(error);
      log.warn('pack upload failed; its extents stay where they were', { pack: writer.packId, target: target.name, error: target.lastError });
      meta.mutate(() => meta.setPackState(writer.packId, 'deleting'));
      throw new TierfsError('UNAVAILABLE', `pack upload to ${target.name}: ${target.lastError}`, { cause: error });
    }
    target.lastError = undefined;
    let bytes = 0;
    meta.mutate(() => {
      for (const { extent, ref } of packed) {
        if (flash.markPacked(extent, ref)) bytes += extent.lengthBytes;
        else counters.destageRacedCount += 1;
      }
      meta.setPackState(writer.packId, 'live');
    });
    this.packLive(writer.packId, { nonce, target: target.name });
    log.debug('pack uploaded', { pack: writer.packId, extents: packed.length, bytes, storedBytes });
    return bytes;
  }
}
