/**
 * What the parts of the tiering engine share: its options, its counters,
 * and a context through which a part reaches the flash store, the
 * metadata, the targets, the heat, the policies and the time.  The parts
 * (destage, eviction, recall, GC, targets) each hold one; the scheduler
 * (tiering.ts) builds it and owns the mutual exclusion between them.
 */
import { randomBytes } from 'node:crypto';
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import assert from 'node:assert/strict';
import { PACK_ENCODING, type Extent, type Ino, type MetaStore, type PackRef, type PolicyRecord } from '../meta/meta_store';
import type { FlashStore } from '../store/store';
import type { HeatTracker } from './heat';
import type { ObjectStore } from './object_store';
import type { PackCrypto } from './pack';
import type { ReplicationOptions } from './replication';
import type { TargetSet } from './target_set';

export interface TieringOptions {
  /** The default target (the one given to format). */
  objects: ObjectStore;
  /** Opens the targets added later (tierfs target add), recorded in the metadata by URL. */
  openStore?: (url: string) => ObjectStore;
  encryptionKey: Buffer | null;
  /** Compress entries of files under the default policy. */
  compress: boolean;
  coolAfterMs: number;
  watermarkHighPercent: number;
  watermarkLowPercent: number;
  packSizeBytesTarget: number;
  /** A partial pack of cold data goes up once its oldest extent has waited this long (serve's packWait). */
  packWaitMsMax: number;
  recallTimeoutMs: number;
  /** Packs uploading at once in a destage, each with its parts in parallel (serve's uploadConcurrency). */
  uploadCountMax: number;
  /** 0: no background work (tests drive the engine by calling its passes). */
  scanIntervalMs: number;
  clock: Clock;
  /** Random bytes for pack ids and nonces (default: the system's CSPRNG; the simulation's is seeded). */
  randomBytes: (bytes: number) => Buffer;
  /** Replicate the metadata to the default target (null: not at all; serve turns it on by default). */
  replication: ReplicationOptions | null;
  /**
   * Write the bucket only while holding its writer lease (lease.ts); null:
   * no lease (tests and tools that open one file system alone).  Serve
   * takes it whenever metadata replication is on.
   */
  writerLease: { ttlMs: number; waitMs: number; host: string } | null;
  /**
   * Follow the writer's metadata log instead of writing (serve --follow):
   * read-only, nothing written to the bucket, recalled bytes served from
   * memory (follower.ts).  null: a writer.
   */
  follow: { pollIntervalMs: number; host: string } | null;
  /** This appliance cannot write the bucket (the lease went to another, or this copy is behind it): the file system turns read-only. */
  onReadOnly?: (reason: string) => void;
}

export const defaultTieringOptions = {
  compress: false,
  coolAfterMs: constants.coolAfterMsDefault,
  watermarkHighPercent: constants.watermarkHighPercentDefault,
  watermarkLowPercent: constants.watermarkLowPercentDefault,
  packSizeBytesTarget: constants.packSizeBytesTarget,
  packWaitMsMax: constants.packWaitMsDefault,
  recallTimeoutMs: constants.recallTimeoutMsDefault,
  uploadCountMax: constants.uploadCountMaxDefault,
  scanIntervalMs: constants.tierScanIntervalMs,
  clock: systemClock,
  randomBytes,
  replication: null,
  writerLease: null,
  follow: null,
} satisfies Partial<TieringOptions>;

export interface TierCounters {
  destagedBytes: number;
  destagedPackCount: number;
  destageFailureCount: number;
  /** Extents read into a pack but rewritten before it was committed (their pack bytes are garbage). */
  destageRacedCount: number;
  evictedBytes: number;
  recallGetCount: number;
  recalledBytes: number;
  writtenBackBytes: number;
  straightThroughBytes: number;
  recallFailureCount: number;
  recallChecksumErrorCount: number;
  gcDeletedPackCount: number;
  repackedPackCount: number;
  orphanPackCount: number;
  foreignObjectCount: number;
  /** fsyncs of files durable in the bucket: batches (each one pack upload and one log PUT) and the files they took. */
  durableBatchCount: number;
  durableFileCount: number;
}

export function newCounters(): TierCounters {
  return {
    destagedBytes: 0,
    destagedPackCount: 0,
    destageFailureCount: 0,
    destageRacedCount: 0,
    evictedBytes: 0,
    recallGetCount: 0,
    recalledBytes: 0,
    writtenBackBytes: 0,
    straightThroughBytes: 0,
    recallFailureCount: 0,
    recallChecksumErrorCount: 0,
    gcDeletedPackCount: 0,
    repackedPackCount: 0,
    orphanPackCount: 0,
    foreignObjectCount: 0,
    durableBatchCount: 0,
    durableFileCount: 0,
  };
}

export interface ProgressReport {
  doneBytes: number;
  totalBytes: number;
}

/** What a command asks of a long operation: progress reports, and a signal that stops it between steps. */
export interface JobControl {
  progress?: (p: ProgressReport) => void;
  signal?: AbortSignal;
}

/** What every part of the engine reaches through. */
export interface TierContext {
  readonly flash: FlashStore;
  readonly meta: MetaStore;
  readonly options: TieringOptions;
  readonly clock: Clock;
  readonly crypto: PackCrypto;
  readonly counters: TierCounters;
  readonly targets: TargetSet;
  readonly heat: HeatTracker;
  /** The rule that applies to a file now (an administrator's pin first). */
  policyOf(ino: Ino): PolicyRecord;
  /** The path of an inode from the root, or undefined when it has no name left. */
  pathOf(ino: Ino): string | undefined;
  /** Whether a pack marked dead at `deadSeq` must stay in the bucket for a restore point kept (replication's retention). */
  holdsPack(deadSeq: number | null): boolean;
  /** True once the engine is stopping: long loops end at their next step. */
  readonly stopped: boolean;
  /** Flash use above which eviction runs, and the use it brings it down to. */
  readonly highBytes: number;
  readonly lowBytes: number;
}

/** The key of one pack entry in the recall cache and the map of fetches in flight. */
export function entryKey(ref: PackRef): string {
  return `${ref.packId}:${ref.entryIndex}`;
}

/**
 * Bytes [from, to) of a decoded pack entry, relative to the entry.  An entry
 * stored without its zero tail decodes to only as much as the extent that
 * fetched it needed; another extent of the same entry (the head of an
 * overwritten one) may need more of it: those bytes are zeros.
 */
export function entryBytes(ref: PackRef, plain: Buffer, from: number, to: number): Buffer {
  if (plain.length >= to) return plain.subarray(from, to);
  assert.ok(ref.encoding & PACK_ENCODING.zeroTail, `pack ${ref.packId} entry ${ref.entryIndex}: decoded to ${plain.length} bytes, ${to} needed`);
  const whole = Buffer.alloc(to - from);
  if (plain.length > from) plain.copy(whole, 0, from);
  return whole;
}

/** The plain bytes of `e` inside its decoded pack entry. */
export function extentBytesOf(e: Extent, plain: Buffer): Buffer {
  return entryBytes(e.pack!, plain, e.pack!.skipBytes, e.pack!.skipBytes + e.lengthBytes);
}

/** Let I/O callbacks run between pages of a long synchronous scan (SQLite calls block the loop). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function errorText(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}
