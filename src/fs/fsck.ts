/**
 * fsck of a running file system: the metadata against the flash tier and
 * the object tier.
 *
 * Checks, in one pass over the extents and one listing of the pack prefix:
 * - every flash copy reads back and matches its checksums;
 * - every extent belongs to an inode (else: dangling);
 * - every pack reference names a live pack whose object exists with the
 *   recorded size;
 * - every pack object under the file system's prefix has a row (else: an
 *   orphan) and is a pack of ours (else: foreign, left alone);
 * - with `deep`, every pack copy is fetched and verified too.
 *
 * `repair` does only what loses nothing: a bad or missing pack copy of data
 * still good on flash is forgotten (the data is destaged again); a bad flash
 * copy of data with a good pack copy is dropped (recalls serve it); a
 * dangling extent is dropped; an orphan pack object is deleted.  Data whose
 * every copy is bad or gone is reported, never papered over: reads of it
 * keep answering EIO.
 *
 * It runs in turn with destage, eviction and GC (the engine's exclusive
 * queue), and re-checks an extent before it reports or repairs it, so
 * writes going on meanwhile are not mistaken for damage.
 */
import { residencyOf, type Extent, type Ino, type MetaStore } from '../meta/meta_store';
import { sameExtent, type FlashStore } from '../store/store';
import { packKey, type TieringEngine } from '../tier/tier';

export type ProblemKind =
  | 'flash-checksum'
  | 'pack-checksum'
  | 'dangling-extent'
  | 'missing-pack'
  | 'missing-pack-object'
  | 'orphan-pack-object'
  | 'foreign-object';

export interface Problem {
  kind: ProblemKind;
  detail: string;
  ino?: number;
  path?: string;
  fileOffsetBytes?: number;
  packId?: string;
  key?: string;
  /** The target an object is in. */
  target?: string;
  /** What repair did, or would do; absent when nothing safe can be done. */
  repair?: string;
  repaired: boolean;
}

export interface FsckReport {
  extentCount: number;
  checkedBytes: number;
  flashVerifiedBytes: number;
  packVerifiedBytes: number;
  packCount: number;
  /** Packs whose extents were verified by a sampling scrub. */
  sampledPackCount?: number;
  objectCount: number;
  /** Problems found (foreign objects are listed, not counted: they are not ours). */
  problemCount: number;
  problems: Problem[];
  /** Problems no safe repair can fix (data with no good copy left). */
  unrepairableCount: number;
  repairedCount: number;
}

export interface FsckOptions {
  repair: boolean;
  deep: boolean;
  /** Problems listed at most (the counts stay exact). */
  problemCountMax?: number;
  /** With deep: verify the extents of this many live packs picked at random, not all (a scrub). */
  samplePackCount?: number;
  random?: () => number;
}

const READ_BATCH_BYTES = 16 * 2 ** 20;

function current(meta: MetaStore, e: Extent): Extent | undefined {
  const now = meta.extentsInRange(e.ino, e.fileOffsetBytes, e.fileOffsetBytes + 1)[0];
  return sameExtent(e, now) ? now : undefined;
}

export async function checkFileSystem(
  opened: { meta: MetaStore; store: FlashStore; tier: TieringEngine | undefined },
  options: FsckOptions,
): Promise<FsckReport> {
  const run = () => fsck(opened, options);
  return opened.tier ? opened.tier.exclusive(run) : run();
}

async function fsck({ meta, store, tier }: { meta: MetaStore; store: FlashStore; tier: TieringEngine | undefined }, options: FsckOptions): Promise<FsckReport> {
  const report: FsckReport = {
    extentCount: 0,
    checkedBytes: 0,
    flashVerifiedBytes: 0,
    packVerifiedBytes: 0,
    packCount: 0,
    objectCount: 0,
    problemCount: 0,
    problems: [],
    unrepairableCount: 0,
    repairedCount: 0,
  };
  const listedMax = options.problemCountMax ?? 1000;
  const pathOf = (ino: Ino) => tier?.pathOf(ino);
  const note = (problem: Omit<Problem, 'repaired'>, repairIt?: () => boolean) => {
    let repaired = false;
    report.problemCount += 1;
    if (problem.repair === undefined) report.unrepairableCount += 1;
    else if (options.repair && repairIt) repaired = meta.mutate(repairIt);
    if (repaired) report.repairedCount += 1;
    if (report.problems.length < listedMax) report.problems.push({ ...problem, repaired });
  };

  // Objects first: which packs exist in which target, at what size (the engine's own listing; orphans go with --repair).
  const listing = tier ? await tier.listPackObjects({ deleteOrphans: options.repair, listedMax }) : undefined;
  const objectSizes = listing?.packSizes ?? new Map<string, number>();
  report.objectCount = listing?.objectCount ?? 0;
  for (const object of listing?.foreign ?? []) {
    // Not ours to repair, and no data of ours is at stake: listed, not counted as damage.
    if (report.problems.length < listedMax)
      report.problems.push({ kind: 'foreign-object', key: object.key, target: object.target, detail: `${object.key} is not a tierfs pack; left alone`, repaired: false });
  }
  const orphans = listing?.orphans ?? [];
  for (let i = 0; i < (listing?.orphanCount ?? 0); i++) {
    report.problemCount += 1;
    if (options.repair) report.repairedCount += 1;
    const orphan = orphans[i]; // the first listedMax of them
    if (orphan && report.problems.length < listedMax)
      report.problems.push({ kind: 'orphan-pack-object', key: orphan.key, packId: orphan.packId, target: orphan.target, detail: `pack object ${orphan.key} has no row in the metadata`, repair: 'delete the object', repaired: orphan.deleted });
  }

  // Then every extent.
  const flashBatch: Extent[] = [];
  let flashBatchBytes = 0;
  const verifyFlash = async () => {
    const results = await store.readExtents(flashBatch);
    for (let i = 0; i < flashBatch.length; i++) {
      const e = flashBatch[i];
      const result = results[i];
      if (!(result instanceof Error)) {
        report.flashVerifiedBytes += e.lengthBytes;
        continue;
      }
      const now = current(meta, e);
      if (!now || now.flashOffsetBytes === null) continue; // rewritten or evicted meanwhile: not damage
      let packGood = false;
      if (now.pack && tier) packGood = await tier.verifyPackCopy(now).then(() => true, () => false);
      note(
        {
          kind: 'flash-checksum',
          ino: e.ino,
          path: pathOf(e.ino),
          fileOffsetBytes: e.fileOffsetBytes,
          detail: `flash copy fails its checksum: ${result.message}${packGood ? '' : now.pack ? '; its pack copy is bad too' : '; no pack copy'}`,
          ...(packGood ? { repair: 'drop the flash copy; reads recall the pack copy' } : {}),
        },
        () => store.evict(now),
      );
    }
    flashBatch.length = 0;
    flashBatchBytes = 0;
  };

  const packStates = new Map<string, string | null>();
  let sample: Set<string> | undefined;
  if (options.deep && options.samplePackCount !== undefined) {
    const live = meta.packsInState('live').map((p) => p.packId as string);
    const random = options.random ?? Math.random;
    for (let i = live.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [live[i], live[j]] = [live[j], live[i]];
    }
    sample = new Set(live.slice(0, options.samplePackCount));
    report.sampledPackCount = sample.size;
  }
  for (const e of meta.everyExtent()) {
    report.extentCount += 1;
    report.checkedBytes += e.lengthBytes;
    if (meta.getInode(e.ino) === undefined) {
      note({ kind: 'dangling-extent', ino: e.ino, fileOffsetBytes: e.fileOffsetBytes, detail: `extent of inode ${e.ino}, which does not exist`, repair: 'drop the extent' }, () =>
        store.forget(e),
      );
      continue;
    }
    if (e.pack) {
      const packId = e.pack.packId;
      if (!packStates.has(packId)) {
        const row = meta.getPack(packId);
        let state: string | null = row ? row.state : null;
        if (row && tier && state === 'live') {
          const size = objectSizes.get(`${row.target}/${packId}`);
          if (size === undefined) state = `no object in target ${row.target}`;
          else if (size !== row.storedBytes) state = `object of ${size} bytes, recorded ${row.storedBytes}`;
        }
        packStates.set(packId, state);
      }
      const state = packStates.get(packId);
      let packProblem: string | undefined;
      if (state === null) packProblem = `pack ${packId} has no row`;
      else if (state !== 'live') packProblem = `pack ${packId} is ${state}`;
      if (packProblem !== undefined) {
        const kind = state === null || state === 'uploading' || state === 'deleting' ? 'missing-pack' : 'missing-pack-object';
        const onFlash = e.flashOffsetBytes !== null;
        note(
          {
            kind,
            ino: e.ino,
            path: pathOf(e.ino),
            fileOffsetBytes: e.fileOffsetBytes,
            packId,
            key: tier ? packKey(tier.fsUuid, packId) : undefined,
            detail: `${packProblem}${onFlash ? '' : '; the extent has no flash copy: its data is lost'}`,
            ...(onFlash ? { repair: 'forget the pack copy; the flash copy is destaged again' } : {}),
          },
          () => store.unpack(e),
        );
      } else if (options.deep && tier && (sample === undefined || sample.has(packId))) {
        try {
          await tier.verifyPackCopy(e);
          report.packVerifiedBytes += e.lengthBytes;
        } catch (error) {
          const now = current(meta, e);
          if (now?.pack) {
            const onFlash = residencyOf(now) === 'BOTH';
            note(
              {
                kind: 'pack-checksum',
                ino: e.ino,
                path: pathOf(e.ino),
                fileOffsetBytes: e.fileOffsetBytes,
                packId,
                detail: `pack copy fails verification: ${(error as Error).message}${onFlash ? '' : '; no flash copy'}`,
                ...(onFlash ? { repair: 'forget the pack copy; the flash copy is destaged again' } : {}),
              },
              () => store.unpack(now),
            );
          }
        }
      }
    }
    if (e.flashOffsetBytes !== null) {
      flashBatch.push(e);
      flashBatchBytes += e.lengthBytes;
      if (flashBatchBytes >= READ_BATCH_BYTES) await verifyFlash();
    }
  }
  if (flashBatch.length > 0) await verifyFlash();
  report.packCount = meta.packTotals().count;
  if (options.repair && report.repairedCount > 0) await store.commit();
  return report;
}
