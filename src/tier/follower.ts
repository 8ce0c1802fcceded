/**
 * A follower: another appliance serving the same file system read-only from
 * the bucket, its metadata kept current by applying the writer's metadata
 * log (replication.ts writes it; replica_format.ts reads it).
 *
 * - Every pollIntervalMs it asks for the log object that continues what it
 *   applied: one LIST of the prefix `log/<applied + 1>-`, which names at most
 *   that object.  An upload the writer repeated after a crash starts where
 *   the last applied object started (its states at a later change apply on
 *   top of an earlier one), so an empty answer asks that prefix too: two
 *   small LISTs a poll while the writer is idle, never a listing of the
 *   whole log.
 * - Each object is applied in one metadata transaction with the change it
 *   reaches, so a crash leaves the follower at a whole object (applying one
 *   again changes nothing: it holds states, not steps).
 * - The writer's flash is not the follower's: the writer's flash offsets
 *   are dropped, and an extent that is only on the writer's flash (not yet
 *   in a pack) is kept out and marked "not in the bucket yet" (the lost
 *   table): reading it is EIO with that message until the writer destages
 *   it and the log brings its pack.  What the follower recalled is written
 *   back to its own flash (in one run, one row under the writer's key); when
 *   the log changes such an extent the copy is kept if the new state is the
 *   same bytes (same pack entry, length and checksums), else freed.
 * - Once a minute while nothing new comes, it lists the snapshots: one newer
 *   than what it applied, while the log does not continue it, means the log
 *   it needs is gone (pruned, or the writer restarted its log): it must be
 *   resynchronised (status says so; serve --follow starts over from the
 *   newest restore point when it starts).
 * - It writes one object of its own and nothing else: its position,
 *   `<fs-uuid>/followers/<id>` (the change applied, its host, when), after
 *   an object applied at most every publishIntervalMs and at least every
 *   heartbeatMs while idle, and at a clean stop.  `tierfs followers` on the
 *   writer lists them.  The writer's retention window is what keeps the
 *   log and packs a follower needs: one further behind must resynchronise.
 */
import type { Clock, Timer } from '../clock';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { Extent, Ino, MetaStore } from '../meta/meta_store';
import type { ObjectStore } from './object_store';
import type { PackCrypto } from './pack';
import { decodeMetaObject, logKeyPrefix, metaPrefix, parseLogObject, parseMetaListing, type LogObject } from './replica_format';
import { errorText } from './tier_context';

/** The setting holding the last change applied (the same one a writer keeps its uploads in). */
export const appliedSetting = 'replicaUploadedSeq';
/** Marks metadata that follows a writer (serve --follow refuses any other, and serve refuses this). */
export const followerSetting = 'follower';

/** Where followers publish their positions. */
export function followersPrefix(fsUuid: string): string {
  return `${fsUuid}/followers/`;
}

/** A follower's published position. */
export interface FollowerPosition {
  format: 'tierfs-follower';
  version: 1;
  id: string;
  host: string;
  appliedSeq: number;
  /** The follower's wall clock when published (for people: clocks differ). */
  publishedAt: string;
  state: FollowerStatus['state'];
}

async function listed(store: ObjectStore, prefix: string): Promise<{ key: string; sizeBytes: number }[]> {
  const keys: { key: string; sizeBytes: number }[] = [];
  for await (const item of store.list(prefix)) keys.push(item);
  return keys;
}

/** The log objects that start at `firstSeq` (one LIST of their prefix). */
export async function logObjectsStartingAt(store: ObjectStore, fsUuid: string, firstSeq: number): Promise<LogObject[]> {
  return parseMetaListing(fsUuid, await listed(store, logKeyPrefix(fsUuid, firstSeq))).logs;
}

/** Whether the bucket holds a complete snapshot past change `seq` (a log that does not continue `seq` then means it is gone). */
export async function snapshotPast(store: ObjectStore, fsUuid: string, seq: number): Promise<boolean> {
  return parseMetaListing(fsUuid, await listed(store, `${metaPrefix(fsUuid)}snap/`)).snapshots.some((s) => s.complete && s.seq > seq);
}

export function parsePosition(body: Buffer): FollowerPosition | undefined {
  try {
    const p = JSON.parse(body.toString('utf8')) as FollowerPosition;
    return p?.format === 'tierfs-follower' && p.version === 1 && typeof p.appliedSeq === 'number' ? p : undefined;
  } catch {
    return undefined;
  }
}

export interface FollowerStatus {
  state: 'following' | 'resync needed';
  appliedSeq: number;
  /** When the writer uploaded the newest log object applied (its clock, from the key); null: none since the restore. */
  writerLogMs: number | null;
  /** Since the last poll that found nothing newer (null: not caught up yet). */
  caughtUpAgoMs: number | null;
  pollIntervalMs: number;
  appliedObjectCount: number;
  listCount: number;
  /** Positions put in the bucket. */
  publishCount: number;
  lastError: string | null;
}

export class Follower {
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private applied: number;
  /** First seq of the newest log object applied (a repeated upload starts there). */
  private lastFirstSeq: number | undefined;
  private writerLogMs: number | null = null;
  private caughtUpMs: number | undefined;
  private lastSnapshotCheckMs = Number.NEGATIVE_INFINITY;
  private resyncNeeded = false;
  private appliedObjectCount = 0;
  private listCount = 0;
  private lastError: string | null = null;
  private publishedMs = Number.NEGATIVE_INFINITY;
  private publishedSeq = -1;
  private publishCount = 0;

  constructor(
    private readonly meta: MetaStore,
    private readonly store: () => ObjectStore,
    private readonly crypto: PackCrypto,
    private readonly clock: Clock,
    readonly pollIntervalMs: number,
    /** Makes an applied object durable (the flash store's commit). */
    private readonly commit: () => Promise<void>,
    /** Where its position goes (undefined: not published, as promote applies the log). */
    private readonly publishing?: { store: () => ObjectStore; id: string; host: string },
    /** Its own flash copies of extents the log changes: kept when the writer's new state is the same bytes, else freed (inside the apply's mutation). */
    private readonly adoptCopy?: (old: Extent) => void,
  ) {
    this.applied = Number(meta.setting(appliedSetting) ?? 0);
  }

  start(): void {
    this.timer = this.clock.every(this.pollIntervalMs, () => {
      if (!this.running && !this.stopped) this.running = this.poll().finally(() => (this.running = undefined));
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.stop();
    await this.running;
    await this.publish(true).catch((error: unknown) => log.warn('publishing the follower position at stop failed', { error: errorText(error) }));
  }

  /** Put this follower's position in the bucket when it moved (at most every publishIntervalMs) or for a heartbeat. */
  private async publish(now = false): Promise<void> {
    if (!this.publishing) return;
    const sinceMs = this.clock.monotonicMs() - this.publishedMs;
    const moved = this.applied !== this.publishedSeq;
    if (!now && !(moved && sinceMs >= constants.followerPublishIntervalMs) && sinceMs < constants.followerHeartbeatMs) return;
    const position: FollowerPosition = {
      format: 'tierfs-follower', version: 1, id: this.publishing.id, host: this.publishing.host, appliedSeq: this.applied,
      publishedAt: new Date(this.clock.nowMs()).toISOString(), state: this.status().state,
    };
    await this.publishing.store().put(`${followersPrefix(this.crypto.fsUuid)}${this.publishing.id}`, [Buffer.from(`${JSON.stringify(position)}\n`)]);
    this.publishedMs = this.clock.monotonicMs();
    this.publishedSeq = this.applied;
    this.publishCount += 1;
  }

  /** Apply everything the bucket holds past what is applied now (tests and the first poll). */
  async catchUp(): Promise<void> {
    await this.running;
    this.running = this.poll();
    await this.running;
    this.running = undefined;
    if (this.lastError) throw new TierfsError('UNAVAILABLE', `following the writer: ${this.lastError}`);
  }

  private async listLog(firstSeq: number): Promise<LogObject[]> {
    this.listCount += 1;
    return (await logObjectsStartingAt(this.store(), this.crypto.fsUuid, firstSeq)).filter((l) => l.firstSeq <= this.applied + 1 && l.lastSeq > this.applied);
  }

  /** The object that continues what is applied, if the bucket holds one. */
  private async next(): Promise<LogObject | undefined> {
    const found = await this.listLog(this.applied + 1);
    if (found.length === 0 && this.lastFirstSeq !== undefined) found.push(...(await this.listLog(this.lastFirstSeq)));
    return found.sort((a, b) => b.lastSeq - a.lastSeq)[0];
  }

  private async poll(): Promise<void> {
    try {
      for (;;) {
        if (this.stopped) return;
        const object = await this.next();
        if (!object) break;
        await this.apply(object);
      }
      this.caughtUpMs = this.clock.monotonicMs();
      if (this.clock.monotonicMs() - this.lastSnapshotCheckMs >= 60_000) await this.checkContinuity();
      await this.publish();
      this.lastError = null;
    } catch (error) {
      this.lastError = errorText(error);
      log.warn('following the writer failed; retried at the next poll', { error: this.lastError });
    }
  }

  private async apply(object: LogObject): Promise<void> {
    const stored = await this.store().get(object.key);
    const lines = parseLogObject(object, await decodeMetaObject(this.crypto, object.key, stored), this.applied);
    const keys = extentKeys(lines);
    // This follower's own flash copies under the keys the log changes (each is one row under the writer's key: recall.ts writes back whole).
    const copies: Extent[] = [];
    if (this.adoptCopy)
      for (const [ino, offset] of keys) {
        const e = this.meta.extentsInRange(ino as Ino, offset, offset + 1)[0];
        if (e && e.fileOffsetBytes === offset && e.flashOffsetBytes !== null) copies.push(e);
      }
    this.meta.mutate(() => {
      this.meta.replay(lines);
      this.meta.adoptFollowedExtents(keys);
      for (const copy of copies) this.adoptCopy!(copy);
      this.meta.setSetting(appliedSetting, String(object.lastSeq));
    });
    await this.commit();
    this.applied = object.lastSeq;
    this.lastFirstSeq = object.firstSeq;
    this.writerLogMs = object.timeMs;
    this.appliedObjectCount += 1;
    this.resyncNeeded = false;
    log.debug('applied the writer\'s log', { key: object.key, lines: lines.length });
  }

  /** A complete snapshot past what is applied while the log does not continue it: the log this follower needs is gone. */
  private async checkContinuity(): Promise<void> {
    this.lastSnapshotCheckMs = this.clock.monotonicMs();
    this.listCount += 1;
    if ((await snapshotPast(this.store(), this.crypto.fsUuid, this.applied)) && !(await this.next())) {
      if (!this.resyncNeeded) log.error('this follower cannot continue: the log after the change it applied is gone from the bucket; restart serve --follow to start over from the newest restore point', { appliedSeq: this.applied });
      this.resyncNeeded = true;
    }
  }

  status(): FollowerStatus {
    return {
      state: this.resyncNeeded ? 'resync needed' : 'following',
      appliedSeq: this.applied,
      writerLogMs: this.writerLogMs,
      caughtUpAgoMs: this.caughtUpMs === undefined ? null : this.clock.monotonicMs() - this.caughtUpMs,
      pollIntervalMs: this.pollIntervalMs,
      appliedObjectCount: this.appliedObjectCount,
      listCount: this.listCount,
      publishCount: this.publishCount,
      lastError: this.lastError,
    };
  }
}

/** The (ino, file offset) of every extent a log object puts or deletes. */
function extentKeys(lines: string[]): [number, number][] {
  const keys: [number, number][] = [];
  for (const line of lines) {
    if (!line.startsWith('extents\t')) continue;
    const json = line.slice(line.indexOf('\t', 8) + 1);
    const match = /^\[(-?\d+),(-?\d+)/.exec(json);
    if (match) keys.push([Number(match[1]), Number(match[2])]);
  }
  return keys;
}
