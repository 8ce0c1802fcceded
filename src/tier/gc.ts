/**
 * Garbage collection of packs, recovery after a crash, and reconciliation
 * of the metadata with what the targets hold.
 *
 * - Collect: packs whose live bytes (kept by SQLite triggers) reach zero are
 *   marked `deleting`, committed, then deleted once no restore point kept by
 *   metadata replication can still read them (TierContext.holdsPack); packs with at most
 *   repackLiveFractionMax of their bytes live are repacked (their live
 *   extents move to a new pack; the old ones die and go at the next pass).
 * - Recover (at start): uploads that never committed and deletions that
 *   never finished are deleted; one that cannot be yet waits as `deleting`.
 * - Reconcile: one listing of every target's pack prefix.  A pack object
 *   with no row is an orphan (deleted when asked: always at start, with
 *   --repair in fsck); an object that is not a pack of ours is counted and
 *   left alone; a pack object whose row names another target is left alone
 *   (never delete what a row still names).  fsck reads the same listing for
 *   the sizes of the pack objects.
 */
import { constants } from '../constants';
import { log } from '../log';
import type { Extent, PackId } from '../meta/meta_store';
import type { Destager, PackItem } from './destage';
import { packIdOfKey, packKey, packKeyPrefix } from './pack';
import type { Recaller } from './recall';
import { errorText, type TierContext } from './tier_context';

export interface PackObject {
  target: string;
  key: string;
  packId?: PackId;
  sizeBytes: number;
}

export interface ReconcileReport {
  objectCount: number;
  /** Sizes of the pack objects of ours, by `target/packId`. */
  packSizes: Map<string, number>;
  orphanCount: number;
  foreignCount: number;
  /** The first orphans and foreign objects found (the counts are exact); `deleted` for orphans removed. */
  orphans: (PackObject & { deleted: boolean })[];
  foreign: PackObject[];
}

export class GarbageCollector {
  constructor(
    private readonly ctx: TierContext,
    private readonly destager: Destager,
    private readonly recaller: Recaller,
  ) {}

  /** Delete packs nothing references; repack sparse ones.  Returns the packs deleted. */
  async collect(): Promise<number> {
    const { meta, flash, targets, counters, crypto } = this.ctx;
    const dead = meta.sparsePacks(0, constants.gcPackCountMax).filter((p) => p.liveBytes === 0);
    if (dead.length > 0) meta.mutate(() => dead.forEach((p) => meta.markPackDead(p.packId)));
    let deleted = 0;
    const doomed = meta.packsInState('deleting').filter((p) => !this.ctx.holdsPack(p.deadSeq));
    if (doomed.length > 0) await flash.commit(); // no object goes before the commit that lets it go
    for (const p of doomed) {
      const target = targets.find(p.target);
      if (!target) continue; // a target this daemon cannot open: its packs wait
      try {
        await target.store.delete(packKey(crypto.fsUuid, p.packId));
      } catch (error) {
        target.lastError = errorText(error);
        log.warn('pack deletion failed; retried later', { pack: p.packId, target: target.name, error: target.lastError });
        continue;
      }
      meta.mutate(() => meta.deletePack(p.packId));
      this.recaller.forgetPack(p.packId);
      deleted += 1;
    }
    counters.gcDeletedPackCount += deleted;
    await this.repack();
    return deleted;
  }

  /** Move the live extents of sparse packs into a new pack; the old ones become dead and go at the next pass. */
  private async repack(): Promise<void> {
    const { meta, flash, targets } = this.ctx;
    const candidates = meta.sparsePacks(constants.repackLiveFractionMax, constants.repackPackCountMax).filter((p) => p.liveBytes > 0 && targets.has(p.target));
    const sparse = candidates.filter((p) => p.target === candidates[0]?.target); // a new pack goes where the old ones were
    const extents: Extent[] = [];
    let bytes = 0;
    const packs = new Set<PackId>();
    for (const p of sparse) {
      if (bytes >= this.ctx.options.packSizeBytesTarget) break;
      for (const e of meta.extentsOfPack(p.packId)) {
        extents.push(e);
        bytes += e.lengthBytes;
      }
      packs.add(p.packId);
    }
    if (extents.length === 0) return;
    const items: PackItem[] = [];
    for (const e of extents) {
      try {
        let data: Buffer;
        if (e.flashOffsetBytes !== null) {
          const [read] = await flash.readExtents([e]);
          if (read instanceof Error) throw read;
          data = read;
        } else {
          data = await this.recaller.fetchExtent(e, { fresh: false });
        }
        items.push({ extent: e, data, compress: this.ctx.policyOf(e.ino).compress });
      } catch (error) {
        log.warn('repack skipped an extent', { ino: e.ino, offset: e.fileOffsetBytes, error: errorText(error) });
      }
    }
    const built = await this.destager.buildPack(items, targets.get(sparse[0].target));
    if (!built) return;
    try {
      await this.destager.uploadPack(built);
    } catch {
      return; // logged; the old packs stay live and are tried again at the next pass
    }
    this.ctx.counters.repackedPackCount += packs.size;
    log.info('packs repacked', { from: packs.size, to: built.writer.packId, extents: items.length });
  }

  /** Finish what a crash interrupted: uploads that never committed, deletions that never finished. */
  async recover(): Promise<void> {
    const { meta, flash, targets, counters, crypto } = this.ctx;
    const unfinished = [...meta.packsInState('uploading'), ...meta.packsInState('deleting').filter((p) => !this.ctx.holdsPack(p.deadSeq))];
    for (const p of unfinished) {
      const target = targets.find(p.target);
      try {
        if (!target) throw new Error(`target ${p.target} is not open`);
        await target.store.delete(packKey(crypto.fsUuid, p.packId));
        meta.mutate(() => meta.deletePack(p.packId));
        counters.orphanPackCount += p.state === 'uploading' ? 1 : 0;
      } catch (error) {
        if (target) target.lastError = errorText(error);
        if (p.state === 'uploading') meta.mutate(() => meta.setPackState(p.packId, 'deleting')); // GC retries it
        log.warn('could not delete an unfinished pack yet', { pack: p.packId, target: p.target, error: errorText(error) });
      }
    }
    if (unfinished.length > 0) {
      await flash.commit();
      log.info('unfinished packs from before a restart deleted', { count: unfinished.length });
    }
  }

  /**
   * List the pack prefix of every target: pack objects with their sizes,
   * orphans (deleted when `deleteOrphans`), foreign objects (left alone).
   * `listedMax` bounds the objects listed by name, not the counts.
   */
  async reconcile({ deleteOrphans, listedMax = constants.fsckProblemCountMax }: { deleteOrphans: boolean; listedMax?: number }): Promise<ReconcileReport> {
    const { meta, targets, crypto, counters } = this.ctx;
    const report: ReconcileReport = { objectCount: 0, packSizes: new Map(), orphanCount: 0, foreignCount: 0, orphans: [], foreign: [] };
    for (const target of targets.list()) {
      for await (const item of target.store.list(packKeyPrefix(crypto.fsUuid))) {
        if (this.ctx.stopped) break;
        report.objectCount += 1;
        const packId = packIdOfKey(crypto.fsUuid, item.key);
        const object: PackObject = { target: target.name, key: item.key, sizeBytes: item.sizeBytes, ...(packId ? { packId } : {}) };
        if (packId === undefined) {
          report.foreignCount += 1;
          if (report.foreign.length < listedMax) report.foreign.push(object);
          log.warn('object in the pack prefix is not a tierfs pack; left alone', { target: target.name, key: item.key });
          continue;
        }
        report.packSizes.set(`${target.name}/${packId}`, item.sizeBytes);
        if (meta.getPack(packId)) continue;
        report.orphanCount += 1;
        if (deleteOrphans) {
          await target.store.delete(item.key);
          log.warn('orphan pack deleted', { target: target.name, key: item.key });
        }
        if (report.orphans.length < listedMax) report.orphans.push({ ...object, deleted: deleteOrphans });
      }
    }
    if (deleteOrphans) counters.orphanPackCount += report.orphanCount;
    counters.foreignObjectCount = report.foreignCount;
    return report;
  }
}
