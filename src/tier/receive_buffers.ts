/**
 * Receive buffers for recall GETs, reused.
 *
 * Every large ranged GET used to land in a buffer of its own: a GiB read
 * cold allocated and dropped a GiB of memory outside V8's heap, which set
 * off a major GC every few tens of MiB (20–30 % of the daemon's CPU on a
 * cold scan) and a page fault per fresh page.  A GET of a large range now
 * lands in a slab from this pool, and the slab is used again once nothing
 * refers to it.
 *
 * Who refers to a slab is counted, not guessed: the fetch that fills it
 * holds one reference; each recalled entry kept in the cache holds one;
 * anything that keeps a view past the turn of the event loop it got it in
 * (a write-back, the recall command's window) holds one.  A slab whose
 * count falls to zero is free again only from the next turn (setImmediate),
 * so a view handed to an awaiting reader stays intact until that reader
 * has copied it out, whatever else runs in the same turn.
 */
import assert from 'node:assert/strict';

export class ReceiveBuffers {
  private readonly free: Buffer[] = [];
  /** Slabs no longer referred to, free from the next turn. */
  private cooling: Buffer[] = [];
  private lastTakenMs = 0;
  private lastFreedMs = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  /** Slabs handed out again, and slabs allocated, since the start. */
  reusedCount = 0;
  allocatedCount = 0;
  /** References to each slab in use, by its memory. */
  private readonly refs = new Map<ArrayBufferLike, number>();

  constructor(
    /** Size of a slab: the largest GET that lands in one. */
    readonly slabBytes: number,
    /** GETs smaller than this get memory of their own (a small random read does not pin a slab). */
    private readonly minBytes: number,
    /** Slabs in existence at most (in use or free); beyond it GETs get memory of their own. */
    private readonly countMax: number,
    /** Free slabs kept for the next GETs; more are let go. */
    private readonly freeCountMax: number,
    /** Free slabs unused this long are let go (memory is not held for a scan that ended). */
    private readonly idleMs: number,
  ) {}

  /** Slabs in existence (in use or free): the pool's memory is this many slabBytes. */
  get slabCount(): number {
    return this.refs.size + this.cooling.length + this.free.length;
  }

  /** Slabs some fetch, cache entry or write-back refers to. */
  get inUseCount(): number {
    return this.refs.size;
  }


  /** A slab for a GET of `lengthBytes`, with one reference (the caller's); undefined when the GET should get memory of its own. */
  take(lengthBytes: number): Buffer | undefined {
    if (lengthBytes < this.minBytes || lengthBytes > this.slabBytes) return undefined;
    let slab = this.free.pop();
    if (slab) this.reusedCount += 1;
    else {
      if (this.slabCount >= this.countMax) return undefined;
      slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.allocatedCount += 1;
    }
    this.refs.set(slab.buffer, 1);
    this.lastTakenMs = performance.now();
    return slab;
  }

  /** One more reference to the slab `view` lies in; nothing for other memory. */
  hold(view: Buffer): void {
    const count = this.refs.get(view.buffer);
    if (count !== undefined) this.refs.set(view.buffer, count + 1);
    else assert.ok(![...this.free, ...this.cooling].some((slab) => slab.buffer === view.buffer), 'a reference taken to a slab that is free');
  }

  /** Drop a reference taken with take() or hold(); the slab is free once none is left. */
  release(view: Buffer): void {
    const count = this.refs.get(view.buffer);
    if (count === undefined) return;
    if (count > 1) {
      this.refs.set(view.buffer, count - 1);
      return;
    }
    this.refs.delete(view.buffer);
    if (this.cooling.length === 0) setImmediate(() => this.cool());
    this.cooling.push(Buffer.from(view.buffer, 0, this.slabBytes));
  }

  private cool(): void {
    for (const slab of this.cooling) if (this.free.length < this.freeCountMax) this.free.push(slab);
    this.cooling = [];
    this.lastFreedMs = performance.now();
    if (this.free.length > 0 && !this.idleTimer) this.idleTimer = setTimeout(() => this.trimIdle(), this.idleMs).unref();
  }

  /** Let the free slabs go once none was taken or freed for idleMs. */
  private trimIdle(): void {
    this.idleTimer = undefined;
    const quietMs = performance.now() - Math.max(this.lastFreedMs, this.lastTakenMs);
    if (quietMs >= this.idleMs) this.free.length = 0;
    else if (this.free.length > 0) this.idleTimer = setTimeout(() => this.trimIdle(), this.idleMs - quietMs).unref();
  }
}
