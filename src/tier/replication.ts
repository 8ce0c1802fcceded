/**
 * Continuous replication of the metadata to the default target (see
 * replica_format.ts for what lies in the bucket).
 *
 * Every committed change leaves the keys of the rows it changed in the
 * metadata's log (written by triggers in the change's own transaction).  The
 * replicator uploads the changes committed since its last upload as one log
 * object (the state of each row they changed, as of the last of them) once
 * the oldest has waited half the RPO, so every change is in the bucket within
 * the RPO while a busy file system makes at most one log PUT per half RPO
 * (720 an hour at the default 10 s), and an idle one none.  Uploaded keys are
 * pruned from the local log.  A snapshot (an online copy of the database,
 * made off the event loop, in parts) is taken at start when the log is not
 * continuous since the last one, once the log since the last snapshot passes
 * snapshotLogBytes, when more changes wait than a log object should hold
 * (metadataLogChangesMax: the bucket was away), and daily while anything
 * changed.  Restore points older
 * than the retention window are deleted, keeping the newest snapshot before
 * the window so that every moment of the window stays restorable; the oldest
 * snapshot kept is the oldest restore point, and a pack that died after it
 * is kept by GC (holdsPack).
 */
import fs from 'node:fs';
import path from 'node:path';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import { schemaVersion, type MetaStore } from '../meta/meta_store';
import type { Clock, Timer } from '../clock';
import type { ObjectStore } from './object_store';
import type { PackCrypto } from './pack';
import {
  encodeMetaObject, logKey, logObjectText, metaPrefix, parseMetaListing, restorePoints, sha256, snapshotManifestKey, snapshotPartBytesMax,
  snapshotPartKey, type SnapshotManifest,
} from './replica_format';
import { errorText } from './tier_context';

export interface ReplicationOptions {
  /** Every committed change is in the bucket within this (metadataRpo). */
  rpoMs: number;
  /** Restore points are kept this long (metadataRetention). */
  retentionMs: number;
  /** A new snapshot once the log since the last one holds this many bytes. */
  snapshotLogBytes: number;
  /** And at least this often while anything changes. */
  snapshotIntervalMs: number;
}

export const defaultReplicationOptions: ReplicationOptions = {
  rpoMs: constants.metadataRpoMsDefault,
  retentionMs: constants.metadataRetentionMsDefault,
  snapshotLogBytes: constants.snapshotLogBytesDefault,
  snapshotIntervalMs: constants.snapshotIntervalMsDefault,
};

export interface ReplicationStatus {
  rpoMs: number;
  retentionMs: number;
  /** How long the oldest change not yet in the bucket has waited (0: everything is there). */
  lagMs: number;
  committedSeq: number;
  uploadedSeq: number;
  snapshotSeq: number | null;
  snapshotMs: number | null;
  /** The oldest restore point kept (seq and time), if any. */
  oldestPointSeq: number | null;
  oldestPointMs: number | null;
  putCount: number;
  putsLastHour: number;
  /** PUTs an hour at most for log objects (snapshots come on top, one per snapshotLogBytes of log). */
  logPutsPerHourMax: number;
  lastError: string | null;
}

const setting = {
  uploaded: 'replicaUploadedSeq',
  snapshotSeq: 'replicaSnapshotSeq',
  snapshotMs: 'replicaSnapshotMs',
  logBytes: 'replicaLogBytesSinceSnapshot',
  oldestSeq: 'replicaOldestSeq',
  oldestMs: 'replicaOldestMs',
} as const;

export class Replicator {
  private committedSeq: number;
  private uploadedSeq: number;
  /** When the oldest change not yet uploaded was committed. */
  private pendingSinceMs: number | undefined;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failureCount = 0;
  private retryAtMs = 0;
  private lastPruneMs = 0;
  private lastError: string | null = null;
  private putCount = 0;
  private readonly putTimes: number[] = [];

  constructor(
    private readonly meta: MetaStore,
    private readonly store: () => ObjectStore,
    private readonly crypto: PackCrypto,
    private readonly clock: Clock,
    readonly options: ReplicationOptions,
    /** Make pending metadata changes durable (the flash store's group commit). */
    private readonly commit: () => Promise<void>,
  ) {
    this.uploadedSeq = this.numberSetting(setting.uploaded) ?? 0;
    this.committedSeq = this.uploadedSeq;
  }

  private numberSetting(key: string): number | undefined {
    const value = this.meta.setting(key);
    return value === undefined ? undefined : Number(value);
  }

  /** The last change in the bucket. */
  get uploadedThrough(): number {
    return this.uploadedSeq;
  }

  /** Stop for good without a last upload: this appliance may no longer write the bucket. */
  halt(): void {
    this.stopped = true;
    this.timer?.stop();
  }

  /** Turn the log on, and start uploading (the first snapshot at once when the log is not continuous). */
  async start(): Promise<void> {
    const continuous = this.meta.setReplicated(true);
    if (!continuous) this.meta.mutate(() => this.meta.setSetting(setting.snapshotSeq, '')); // the log has a hole: a snapshot first
    this.meta.afterCommit = (seq) => {
      if (seq <= this.committedSeq) return;
      this.committedSeq = seq;
      this.pendingSinceMs ??= this.clock.nowMs();
    };
    await this.commit();
    this.committedSeq = Math.max(this.committedSeq, this.meta.replicaSeq());
    if (this.committedSeq > this.uploadedSeq) this.pendingSinceMs ??= this.clock.nowMs();
    const tickMs = Math.max(100, Math.min(1000, Math.floor(this.options.rpoMs / 4)));
    this.timer = this.clock.every(tickMs, () => this.tick());
  }

  /** Upload what is committed (a clean stop leaves the bucket current), then stop. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.stop();
    await this.running;
    // A failing bucket does not hold the stop up: the records stay in the local log for the next start.
    if (this.committedSeq > this.uploadedSeq && !this.snapshotMissing() && this.failureCount === 0) {
      await this.uploadLog().catch((error: unknown) => log.warn('metadata log upload at stop failed; it goes at the next start', { error: errorText(error) }));
    }
    this.meta.afterCommit = undefined;
  }

  /** Run a round now (what is due, and the log whatever its age) until every change committed so far is in the bucket. */
  async flush(): Promise<void> {
    await this.commit();
    do {
      await this.running;
      this.running = this.step(true);
      await this.running;
      this.running = undefined;
      if (this.failureCount > 0) throw new TierfsError('UNAVAILABLE', `metadata replication: ${this.lastError}`);
    } while (this.committedSeq > this.uploadedSeq || this.snapshotMissing());
  }

  private snapshotMissing(): boolean {
    return !this.meta.setting(setting.snapshotSeq);
  }

  private tick(): void {
    if (this.stopped || this.running || this.clock.nowMs() < this.retryAtMs) return;
    this.running = this.step(false).finally(() => (this.running = undefined));
  }

  /** One round: a snapshot when due, else the log when due, then pruning when due. */
  private async step(now: boolean): Promise<void> {
    try {
      const nowMs = this.clock.nowMs();
      const snapshotMs = this.numberSetting(setting.snapshotMs) ?? 0;
      const logBytes = this.numberSetting(setting.logBytes) ?? 0;
      const changedSinceSnapshot = this.committedSeq > (this.numberSetting(setting.snapshotSeq) || 0);
      if (
        this.snapshotMissing() ||
        logBytes >= this.options.snapshotLogBytes ||
        this.committedSeq - this.uploadedSeq > constants.metadataLogChangesMax || // a backlog (the bucket was away): a snapshot is the smaller copy
        (changedSinceSnapshot && nowMs - snapshotMs >= this.options.snapshotIntervalMs)
      ) {
        await this.snapshot();
      } else if (this.committedSeq > this.uploadedSeq && (now || nowMs - (this.pendingSinceMs ?? nowMs) >= this.options.rpoMs / 2)) {
        await this.uploadLog();
      }
      if (nowMs - this.lastPruneMs >= constants.metadataPruneIntervalMs) await this.prune();
      this.failureCount = 0;
      this.lastError = null;
    } catch (error) {
      this.failureCount += 1;
      this.lastError = errorText(error);
      this.retryAtMs = this.clock.nowMs() + Math.min(constants.tierBackoffMsMax, 1000 * 2 ** this.failureCount);
      log.warn('metadata replication failed; retried later', { error: this.lastError });
    }
  }

  private async put(key: string, body: Buffer[]): Promise<void> {
    await this.store().put(key, body);
    this.putCount += 1;
    const now = this.clock.nowMs();
    this.putTimes.push(now);
    while (this.putTimes.length > 0 && this.putTimes[0] <= now - 3_600_000) this.putTimes.shift();
  }

  /** What is committed and not yet uploaded, as one log object: the state at its last change of every row it changed. */
  private async uploadLog(): Promise<void> {
    const through = this.committedSeq;
    const since = this.pendingSinceMs;
    this.pendingSinceMs = undefined; // commits from now on start a new wait
    try {
      const first = this.uploadedSeq + 1;
      const { text, lastSeq: last, bytes, lineCount } = await this.meta.replicaLogText(this.uploadedSeq);
      if (last < through) throw new Error(`metadata log records ${last + 1}..${through} are missing from the local log`);
      const key = logKey(this.crypto.fsUuid, first, last, this.clock.nowMs());
      await this.put(key, await encodeMetaObject(this.crypto, key, logObjectText(text, lineCount)));
      this.uploadedSeq = last;
      // The reader takes every commit it sees, so commits made while it read may be in the object too.
      if (this.committedSeq <= last) this.pendingSinceMs = undefined;
      const logBytes = (this.numberSetting(setting.logBytes) ?? 0) + bytes;
      this.meta.mutate(() => {
        this.meta.pruneReplicaLog(last);
        this.meta.setSetting(setting.uploaded, String(last));
        this.meta.setSetting(setting.logBytes, String(logBytes));
      });
    } catch (error) {
      if (since !== undefined) this.pendingSinceMs = Math.min(since, this.pendingSinceMs ?? since);
      throw error;
    }
  }

  private async snapshot(): Promise<void> {
    await this.commit(); // the copy holds what is committed: make it all
    const file = path.join(path.dirname(this.meta.path), 'tierfs.snapshot.tmp');
    const startedMs = this.clock.nowMs();
    try {
      const seq = await this.meta.snapshotInto(file);
      const parts: SnapshotManifest['parts'] = [];
      const handle = fs.openSync(file, 'r');
      try {
        const size = fs.fstatSync(handle).size;
        for (let offset = 0, n = 0; offset < size; offset += snapshotPartBytesMax, n++) {
          const plain = Buffer.allocUnsafe(Math.min(snapshotPartBytesMax, size - offset));
          fs.readSync(handle, plain, 0, plain.length, offset);
          const key = snapshotPartKey(this.crypto.fsUuid, seq, startedMs, n);
          await this.put(key, await encodeMetaObject(this.crypto, key, plain));
          parts.push({ bytes: plain.length, sha256: sha256(plain) });
        }
      } finally {
        fs.closeSync(handle);
      }
      const manifest: SnapshotManifest = { format: 1, fsUuid: this.crypto.fsUuid, seq, timeMs: startedMs, schemaVersion, parts };
      const key = snapshotManifestKey(this.crypto.fsUuid, seq, startedMs);
      await this.put(key, await encodeMetaObject(this.crypto, key, Buffer.from(JSON.stringify(manifest))));
      this.uploadedSeq = Math.max(this.uploadedSeq, seq);
      const first = this.meta.setting(setting.oldestSeq) === undefined;
      this.meta.mutate(() => {
        this.meta.pruneReplicaLog(this.uploadedSeq);
        this.meta.setSetting(setting.uploaded, String(this.uploadedSeq));
        this.meta.setSetting(setting.snapshotSeq, String(seq));
        this.meta.setSetting(setting.snapshotMs, String(startedMs));
        this.meta.setSetting(setting.logBytes, '0');
        if (first) {
          this.meta.setSetting(setting.oldestSeq, String(seq));
          this.meta.setSetting(setting.oldestMs, String(startedMs));
        }
      });
      if (this.committedSeq <= this.uploadedSeq) this.pendingSinceMs = undefined;
      this.lastPruneMs = 0; // prune after each snapshot
      log.info('metadata snapshot uploaded', { seq, parts: parts.length, bytes: parts.reduce((s, p) => s + p.bytes, 0) });
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /**
   * Delete what no restore point in the window needs: snapshots before the
   * newest one that is older than the window, and log objects up to it.
   * Snapshots left incomplete by a crash go once a newer one is complete or
   * an hour has passed.
   */
  private async prune(): Promise<void> {
    this.lastPruneMs = this.clock.nowMs();
    const keys: { key: string; sizeBytes: number }[] = [];
    for await (const item of this.store().list(metaPrefix(this.crypto.fsUuid))) keys.push(item);
    const listing = parseMetaListing(this.crypto.fsUuid, keys);
    const points = restorePoints(listing);
    if (points.length === 0) return;
    const windowStartMs = this.clock.nowMs() - this.options.retentionMs;
    const complete = listing.snapshots.filter((s) => s.complete);
    const base = [...complete].reverse().find((s) => s.timeMs <= windowStartMs) ?? complete[0];
    const doomed: string[] = [];
    const staleMs = this.clock.nowMs() - constants.metadataPruneIntervalMs;
    for (const s of listing.snapshots) {
      const debris = !s.complete && (s.seq < complete[complete.length - 1].seq || s.timeMs < staleMs); // an upload a crash cut short
      if (s.seq < base.seq || debris) doomed.push(...s.keys);
    }
    for (const l of listing.logs) if (l.lastSeq <= base.seq) doomed.push(l.key);
    this.meta.mutate(() => {
      this.meta.setSetting(setting.oldestSeq, String(base.seq));
      this.meta.setSetting(setting.oldestMs, String(base.timeMs));
    });
    await this.commit(); // GC may let packs go by the new oldest point only once it is durable here
    for (const key of doomed) await this.store().delete(key);
    if (doomed.length > 0) log.info('metadata restore points past retention deleted', { objects: doomed.length, oldestSeq: base.seq });
  }

  /** Whether a pack marked dead at `deadSeq` may still be read by a restore point kept (GC must keep its object). */
  holdsPack(deadSeq: number | null): boolean {
    if (deadSeq === null) return false; // never referenced by a committed extent (an upload that did not finish)
    const oldest = this.numberSetting(setting.oldestSeq);
    return oldest === undefined || deadSeq > oldest;
  }

  status(): ReplicationStatus {
    const now = this.clock.nowMs();
    while (this.putTimes.length > 0 && this.putTimes[0] <= now - 3_600_000) this.putTimes.shift();
    const snapshotSeq = this.meta.setting(setting.snapshotSeq);
    return {
      rpoMs: this.options.rpoMs,
      retentionMs: this.options.retentionMs,
      lagMs: this.pendingSinceMs === undefined ? 0 : now - this.pendingSinceMs,
      committedSeq: this.committedSeq,
      uploadedSeq: this.uploadedSeq,
      snapshotSeq: snapshotSeq ? Number(snapshotSeq) : null,
      snapshotMs: snapshotSeq ? (this.numberSetting(setting.snapshotMs) ?? null) : null,
      oldestPointSeq: this.numberSetting(setting.oldestSeq) ?? null,
      oldestPointMs: this.numberSetting(setting.oldestMs) ?? null,
      putCount: this.putCount,
      putsLastHour: this.putTimes.length,
      logPutsPerHourMax: Math.ceil(3_600_000 / (this.options.rpoMs / 2)),
      lastError: this.lastError,
    };
  }
}
