/**
 * Eviction (BOTH → OBJECT) and backpressure.
 *
 * Eviction is metadata only: the flash blocks are freed after the commit
 * (and after older reads), like any overwrite.  It runs when use passes the
 * high watermark, coldest first, until below the low one; if that is not
 * enough, urgent destage of the coldest FLASH extents follows (pin and
 * never excepted).  A writer short of flash waits for this (backpressure)
 * and sees ENOSPC only when nothing more can be freed.  `release` drops the
 * flash copy of files' extents that are already in packs.
 */
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { Ino } from '../meta/meta_store';
import { coldExtents } from './destage';
import { errorText, type JobControl, type TierContext } from './tier_context';

export interface ReleaseReport {
  releasedBytes: number;
  flashOnlyBytes: number;
  skippedFileCount: number;
  stopped?: boolean;
}

const BS = constants.blockSizeBytes;

export class Evictor {
  private makingRoom: Promise<number> | undefined;

  constructor(
    private readonly ctx: TierContext,
    /** Urgent destage of up to `bytesMax` of the coldest data (flash is short). */
    private readonly destageUrgently: (bytesMax: number) => Promise<number>,
  ) {}

  /** Resolves once a running makeRoom is done. */
  async idle(): Promise<void> {
    await this.makingRoom?.catch(() => undefined);
  }

  /** BOTH → OBJECT for the coldest clean extents (pinned files excepted) until use is at most `toBytes`. */
  evictTo(toBytes: number): number {
    const { meta, flash, clock } = this.ctx;
    let freed = 0;
    const decided = new Map<Ino, boolean>();
    meta.mutate(() => {
      for (const e of coldExtents(meta, 'both', clock.nowMs())) {
        if (flash.usedBytes - freed <= toBytes) break;
        let pinned = decided.get(e.ino);
        if (pinned === undefined) {
          pinned = this.ctx.policyOf(e.ino).mode === 'pin';
          decided.set(e.ino, pinned);
        }
        if (!pinned && flash.evict(e)) freed += e.lengthBytes;
      }
    });
    this.ctx.counters.evictedBytes += freed;
    return freed;
  }

  /** Drop the flash copy of every extent of `ino` that is already in a pack (refused for a pinned file). */
  async release(ino: Ino): Promise<{ releasedBytes: number; flashOnlyBytes: number }> {
    const policy = this.ctx.policyOf(ino);
    if (policy.mode === 'pin') throw new TierfsError('INVALID', `policy ${policy.name} pins ${this.ctx.pathOf(ino) ?? `inode ${ino}`} to flash`);
    return this.releaseFiles([ino], {});
  }

  /**
   * release of many files, in batches: one metadata mutation and one commit
   * for releaseBatchFileCount files (a commit per file made releasing a
   * directory of small files ten times slower than destaging it).  Pinned
   * files are skipped and counted.  Progress in bytes released of
   * `totalBytes` (what was BOTH); a stop takes effect between batches.
   */
  async releaseFiles(inos: Ino[], control: JobControl, totalBytes = 0): Promise<ReleaseReport> {
    const { meta, flash } = this.ctx;
    const report: ReleaseReport = { releasedBytes: 0, flashOnlyBytes: 0, skippedFileCount: 0 };
    for (let first = 0; first < inos.length; first += constants.releaseBatchFileCount) {
      if (control.signal?.aborted) {
        report.stopped = true;
        break;
      }
      meta.mutate(() => {
        for (const ino of inos.slice(first, first + constants.releaseBatchFileCount)) {
          if (this.ctx.policyOf(ino).mode === 'pin') {
            report.skippedFileCount += 1;
            continue;
          }
          for (const e of meta.fileExtents(ino)) {
            if (e.pack === null) report.flashOnlyBytes += e.lengthBytes;
            else if (flash.evict(e)) report.releasedBytes += e.lengthBytes;
          }
        }
      });
      await flash.commit();
      control.progress?.({ doneBytes: report.releasedBytes, totalBytes: Math.max(totalBytes, report.releasedBytes) });
    }
    this.ctx.counters.evictedBytes += report.releasedBytes;
    return report;
  }

  /**
   * Bring use under the low watermark: evict, then urgent destage and evict
   * again.  Concurrent callers share one run.  Returns the bytes freed.
   */
  makeRoom(): Promise<number> {
    // Not behind the other passes: a writer waiting for flash must not wait for a long destage
    // that yields to it.  Safe alongside them: eviction touches only BOTH extents, and every
    // residency change re-checks the extent it read (a pack racing another one is just garbage).
    this.makingRoom ??= (async () => {
      const { flash } = this.ctx;
      let freed = this.evictTo(this.ctx.lowBytes);
      const short = flash.usedBytes - freed - this.ctx.lowBytes;
      if (short > 0) {
        try {
          await this.destageUrgently(short);
        } catch (error) {
          log.warn('urgent destage failed', { error: errorText(error) });
        }
        freed += this.evictTo(this.ctx.lowBytes);
      }
      await flash.commit();
      return freed;
    })().finally(() => (this.makingRoom = undefined));
    return this.makingRoom;
  }

  /** Backpressure: a writer is short of flash.  True when room was made, false when none can be. */
  async spaceWanted(blockCount: number): Promise<boolean> {
    const { flash, clock } = this.ctx;
    const deadline = clock.nowMs() + constants.spaceWaitMsMax;
    while (clock.nowMs() < deadline && !this.ctx.stopped) {
      const freed = await this.makeRoom();
      await flash.commit();
      if (flash.freeBytes >= blockCount * BS) return true;
      if (freed === 0) return false;
    }
    return false;
  }
}
