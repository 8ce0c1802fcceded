/**
 * Extents recently looked up, by inode, for reads that fall inside one
 * extent (a 4 KiB random read of a file of 1 MiB extents always does).
 *
 * Why: a lookup in SQLite costs about 6 µs even inside the open transaction
 * (the row's kilobyte of checksums is copied into a new Buffer each time);
 * a hit here costs a fraction of one.  At depth 16 that lookup was a third
 * of the daemon's time per read.
 *
 * Why it is never stale: the cache is stamped with the connection's
 * total_changes() when it is filled, and the store compares that count
 * before every lookup.  SQLite counts every row inserted, updated or
 * deleted on the connection, triggers included, and only the store's
 * connection writes (it holds the write transaction from open to close), so
 * an equal count means no extent has changed since.  A rolled-back
 * savepoint undoes rows without lowering the count: the store clears the
 * cache then.  Any change anywhere clears it, so a busy writer makes it a
 * miss, never wrong.
 *
 * What it refuses: answering a range that crosses an extent boundary or a
 * hole (the caller asks SQLite), and holding more than extentCountMax
 * extents (it is cleared and refilled).  Extents it hands out are frozen,
 * shared by every caller until the next change.
 */
import type { Extent, Ino } from './meta_store';

export class ExtentCache {
  private readonly byIno = new Map<Ino, Extent[]>();
  private stampChanges = -1;
  private extentCount = 0;
  hitCount = 0;
  missCount = 0;

  constructor(private readonly extentCountMax: number) {}

  /** Drop everything unless the connection's change count is still `changes`; from now on the cache holds state as of `changes`. */
  validate(changes: number): void {
    if (changes === this.stampChanges) return;
    this.clear();
    this.stampChanges = changes;
  }

  /** Forget everything (a rollback undid rows the count cannot show). */
  clear(): void {
    this.byIno.clear();
    this.extentCount = 0;
    this.stampChanges = -1;
  }

  /** The one extent holding all of [startBytes, endBytes), if it is here. */
  covering(ino: Ino, startBytes: number, endBytes: number): Extent | undefined {
    const list = this.byIno.get(ino);
    const e = list && list[lastAtOrBefore(list, startBytes)];
    if (e && startBytes < endBytes && endBytes <= e.fileOffsetBytes + e.lengthBytes) {
      this.hitCount += 1;
      return e;
    }
    this.missCount += 1;
    return undefined;
  }

  /** Keep extents of `ino` just read from the database (as of the stamp validate() set). */
  add(ino: Ino, extents: readonly Extent[]): void {
    if (this.stampChanges < 0 || extents.length === 0) return;
    if (this.extentCount + extents.length > this.extentCountMax) {
      const changes = this.stampChanges;
      this.clear();
      this.stampChanges = changes;
    }
    let list = this.byIno.get(ino);
    if (!list) this.byIno.set(ino, (list = []));
    for (const e of extents) {
      const at = lastAtOrBefore(list, e.fileOffsetBytes);
      if (at >= 0 && list[at].fileOffsetBytes === e.fileOffsetBytes) continue; // the same row, read again
      list.splice(at + 1, 0, e);
      this.extentCount += 1;
    }
  }

  get size(): number {
    return this.extentCount;
  }
}

/** Index of the last extent starting at or before `offsetBytes` (-1 if none); `list` is sorted by file offset. */
function lastAtOrBefore(list: readonly Extent[], offsetBytes: number): number {
  let low = 0;
  let high = list.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (list[middle].fileOffsetBytes <= offsetBytes) {
      found = middle;
      low = middle + 1;
    } else high = middle - 1;
  }
  return found;
}
