/**
 * Heat: per-extent access recency and a decayed access count.
 *
 * Reads must not cost a metadata write each, so reads are recorded here, in
 * memory, and written to the extents table in one batch every
 * heatFlushIntervalMs (or once heatPendingCountMax extents wait — memory is
 * bounded by that count, not by the file system).  Writes need no record:
 * a written extent is new and carries the time it was written.
 *
 * The count halves every heatHalfLifeMs without access; an access adds one
 * (the many small reads of one pass over an extent are one access).
 * Per-file heat: the latest access of any extent, and the mean count.
 */
import { constants } from '../constants';
import type { Extent, HeatUpdate, MetaStore } from '../meta/meta_store';

export function decayedCount(count: number, sinceMs: number, nowMs: number): number {
  const elapsedMs = Math.max(0, nowMs - sinceMs);
  return count * 0.5 ** (elapsedMs / constants.heatHalfLifeMs);
}

export class HeatTracker {
  private pending = new Map<string, HeatUpdate>();

  constructor(private readonly clock: () => number) {}

  private static keyOf(e: { ino: number; fileOffsetBytes: number }): string {
    return `${e.ino}:${e.fileOffsetBytes}`;
  }

  /** An extent was read now.  Reads of it within accessBurstMs of the last count once (one pass of a reader is one access). */
  record(e: Extent): void {
    const now = this.clock();
    const key = HeatTracker.keyOf(e);
    const base = this.pending.get(key) ?? e;
    const sameBurst = now - base.accessedMs < constants.accessBurstMs;
    this.pending.set(key, {
      ino: e.ino,
      fileOffsetBytes: e.fileOffsetBytes,
      accessedMs: now,
      heatCount: sameBurst ? base.heatCount : decayedCount(base.heatCount, base.accessedMs, now) + 1,
    });
  }

  /** The extent's heat as of now, counting reads not yet written. */
  heatOf(e: Extent): { accessedMs: number; heatCount: number } {
    const base = this.pending.get(HeatTracker.keyOf(e)) ?? e;
    return { accessedMs: base.accessedMs, heatCount: decayedCount(base.heatCount, base.accessedMs, this.clock()) };
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Write what is pending in one metadata mutation (durable at the next commit). */
  flush(meta: MetaStore): void {
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()];
    this.pending = new Map();
    meta.mutate(() => meta.updateHeat(batch));
  }
}
