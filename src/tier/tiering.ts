/**
 * The tiering engine: the scheduler over its parts, and what the layers
 * above ask of the object tier.
 *
 *   target_set.ts  the object targets (add, remove, probe)
 *   destage.ts     FLASH → BOTH: plan, build, upload
 *   eviction.ts    BOTH → OBJECT, making room, backpressure, release
 *   recall.ts      reads of OBJECT extents, the recall command, fetching one pack entry
 *   gc.ts          deleting and repacking packs, recovery at start, reconciling with the targets
 *   heat.ts, policy.ts, simulate.ts, stats.ts   heat, policies, the what-if simulator, rates
 *
 * This file owns the mutual exclusion between the parts: background passes
 * (destage, then eviction above the high watermark, then GC) and the
 * commands that change residency (destage, release, GC, fsck) run one at a
 * time through `exclusive`.  Reads (recall) and a writer's backpressure
 * (makeRoom) do not wait for them: every residency change re-checks the
 * extent it read, so a race only makes garbage, never a wrong mapping.
 *
 * A background pass that fails (an unreachable target) is tried again after
 * 2 s, 4 s, ... at most tierBackoffMsMax.  Degraded mode: with the target
 * unreachable, flash-resident data is served and written as usual; a read
 * that needs the object tier answers EIO after recallTimeoutMs.
 *
 * All time comes from options.clock (the real clock in the daemon, a
 * simulated one in tests and the simulation).
 */
import assert from 'node:assert/strict';
import type { Timer } from '../clock';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import { pathOfInode, ROOT_INO, residencyOf, type Extent, type Ino, type MetaStore, type PolicyMode, type PolicyRecord } from '../meta/meta_store';
import type { FlashStore } from '../store/store';
import { Destager, keepsOnFlash, type DestageRequest } from './destage';
import { Evictor, type ReleaseReport } from './eviction';
import { GarbageCollector, type ReconcileReport } from './gc';
import { HeatTracker } from './heat';
import type { PackCrypto } from './pack';
import { checkWatermarks, PolicySet, validatePolicy } from './policy';
import { Recaller } from './recall';
import { Follower, followerSetting, followersPrefix, parsePosition, type FollowerStatus } from './follower';
import { WriterLease, type LeaseStatus } from './lease';
import { Replicator, type ReplicationStatus } from './replication';
import { Simulation, type Prices, type SimulationResult } from './simulate';
import { RateMeter } from './stats';
import { TargetSet, type Target } from './target_set';
import { errorText, newCounters, yieldToEventLoop, type JobControl, type TierContext, type TierCounters, type TieringOptions } from './tier_context';

export { defaultTieringOptions, yieldToEventLoop, type JobControl, type ProgressReport, type TierCounters, type TieringOptions } from './tier_context';
export { probeStore, type Target } from './target_set';

/** One follower as `tierfs followers` shows it. */
export interface FollowerReport {
  id: string;
  host: string;
  appliedSeq: number;
  /** Changes between its position and this appliance's last one in the bucket. */
  behindChanges: number;
  publishedAt: string;
  state: 'following' | 'stale' | 'must resynchronise';
}

export interface FileResidency {
  size: number;
  /** Bytes of the file whose current data is on flash (FLASH + BOTH): a stable JSON field of stat. */
  flashBytes: number;
  /** Bytes of the file with a copy in a pack (BOTH + OBJECT): a stable JSON field of stat. */
  objectBytes: number;
  flashOnlyBytes: number;
  bothBytes: number;
  objectOnlyBytes: number;
  extentCount: number;
  policy: string;
  mode: PolicyMode;
  heat: { accessedMs: number; count: number };
}

function roundMs(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}

export class TieringEngine {
  readonly counters: TierCounters = newCounters();
  readonly heat: HeatTracker;
  private readonly targets: TargetSet;
  private readonly destager: Destager;
  private readonly evictor: Evictor;
  private readonly recaller: Recaller;
  private readonly gc: GarbageCollector;
  private readonly destageRate: RateMeter;
  private readonly recallRate: RateMeter;
  private readonly recallGetRate: RateMeter;
  private readonly crypto: PackCrypto;
  private readonly meta: MetaStore;
  private policies: PolicySet;
  private work: Promise<unknown> = Promise.resolve();
  private timer: Timer | undefined;
  private heatTimer: Timer | undefined;
  private stopped = false;
  /** The background pass running now (passes never overlap). */
  private ticking: Promise<unknown> | undefined;
  private failedTickCount = 0;
  private backoffUntilMs = 0;
  private background: Promise<void> | undefined;
  /** Metadata replication to the default target, when on. */
  private readonly replicator: Replicator | undefined;
  /** The bucket's writer lease, when asked for; and why this appliance may not write the bucket, once it may not. */
  private readonly lease: WriterLease | undefined;
  private readOnlyReason: string | undefined;
  /** Following a writer's metadata log (serve --follow), when asked. */
  private readonly follower: Follower | undefined;
  /** fsyncs of durable-in-the-bucket files: those waiting for the next batch, that batch, the one running. */
  private readonly durableWaiting = new Set<Ino>();
  private durableNext: Promise<void> | undefined;
  private durableRunning: Promise<void> = Promise.resolve();

  constructor(
    readonly flash: FlashStore,
    readonly options: TieringOptions,
  ) {
    this.meta = flash.meta;
    const uuid = this.meta.setting('uuid');
    assert.ok(uuid);
    this.crypto = { fsUuid: uuid, key: options.encryptionKey };
    const clock = options.clock;
    this.heat = new HeatTracker(() => clock.nowMs());
    this.destageRate = new RateMeter(() => clock.nowMs());
    this.recallRate = new RateMeter(() => clock.nowMs());
    this.recallGetRate = new RateMeter(() => clock.nowMs());
    const following = this.meta.setting(followerSetting) === '1';
    if (options.follow && !following)
      throw new TierfsError('USAGE', 'this metadata is a writer\'s, not a follower\'s: serve --follow needs its own empty metadata directory (it restores from the bucket)');
    if (!options.follow && following)
      throw new TierfsError('USAGE', 'this metadata follows a writer (serve --follow); it cannot serve as the writer');
    if (options.writerLease && !options.follow) {
      let writerId = this.meta.setting('writerId');
      if (!writerId) {
        writerId = options.randomBytes(16).toString('hex');
        this.meta.mutate(() => this.meta.setSetting('writerId', writerId!));
      }
      this.lease = new WriterLease({
        store: () => options.objects,
        fsUuid: uuid,
        writerId,
        host: options.writerLease.host,
        clock,
        ttlMs: options.writerLease.ttlMs,
        generation: Number(this.meta.setting('generation') ?? 1),
        logSeq: () => this.replicator?.uploadedThrough ?? 0,
      });
      this.lease.onLost = (reason) => this.turnReadOnly(reason);
    }
    const neverWrites = () => ({ reason: 'a follower never writes the bucket', final: true });
    this.targets = new TargetSet(this.meta, uuid, clock, options.objects, options.openStore, () => this.flash.commit(), options.follow ? neverWrites : this.lease?.fence);
    this.policies = this.loadPolicies();
    const engine = this;
    const ctx: TierContext = {
      flash,
      meta: this.meta,
      options,
      clock,
      crypto: this.crypto,
      counters: this.counters,
      targets: this.targets,
      heat: this.heat,
      policyOf: (ino) => this.policyOf(ino),
      holdsPack: (deadSeq) => this.replicator?.holdsPack(deadSeq) ?? false,
      pathOf: (ino) => this.pathOf(ino),
      get stopped() {
        return engine.stopped;
      },
      get highBytes() {
        return engine.highBytes;
      },
      get lowBytes() {
        return engine.lowBytes;
      },
    };
    this.destager = new Destager(ctx, (packId, info) => this.recaller.rememberPack(packId, info));
    this.evictor = new Evictor(ctx, (bytesMax) => this.destager.destage({ urgent: true, bytesMax }));
    this.recaller = new Recaller(ctx, () => this.evictor.makeRoom());
    this.gc = new GarbageCollector(ctx, this.destager, this.recaller);
    if (options.follow) {
      let followerId = this.meta.setting('followerId');
      if (!followerId) {
        followerId = options.randomBytes(8).toString('hex');
        this.meta.mutate(() => this.meta.setSetting('followerId', followerId!));
      }
      // Its position is the one object a follower writes: past the fence that keeps every other write out.
      const publishing = { store: () => options.objects, id: followerId, host: options.follow.host };
      this.follower = new Follower(this.meta, () => this.targets.get('default').store, this.crypto, clock, options.follow.pollIntervalMs, () => this.flash.commit(), publishing, (old) =>
        this.flash.adoptCopy(old),
      );
      this.flash.lostMeaning = 'are not readable from the bucket: the writer has not destaged them yet (or they were lost there: tierfs lost)';
      this.meta.setReplicated(false); // applied changes are the writer's, never logged again here
    } else if (options.replication) {
      this.replicator = new Replicator(this.meta, () => this.targets.get('default').store, this.crypto, clock, options.replication, () => this.flash.commit());
    } else if (this.meta.setReplicated(false)) {
      log.warn('metadata replication is off: the bucket no longer follows the metadata (a snapshot is taken when it is turned on again)');
    }
  }

  get fsUuid(): string {
    return this.crypto.fsUuid;
  }

  get encrypted(): boolean {
    return this.crypto.key !== null;
  }

  get highBytes(): number {
    return Math.floor((this.flash.capacityBytes * this.options.watermarkHighPercent) / 100);
  }

  get lowBytes(): number {
    return Math.floor((this.flash.capacityBytes * this.options.watermarkLowPercent) / 100);
  }

  // ---- lifecycle and scheduling ----

  /**
   * Take the bucket's writer lease (when asked for), attach to the flash
   * store, finish what a crash interrupted, and start the background loop.
   * Without the lease the file system is served read-only and nothing is
   * written to the bucket.
   */
  async start(): Promise<void> {
    if (this.follower) {
      this.turnReadOnly('a follower (serve --follow) serves the writer\'s file system read-only');
      // Its flash is a cache of what it recalled: its own heat, and eviction above the high watermark (nothing on it is only there).
      this.flash.tier = { ...this.readOnlyHooks(), extentRead: (e) => this.recordRead(e) };
      await this.follower.catchUp().catch((error: unknown) => log.warn('catching up with the writer failed; retried', { error: errorText(error) }));
      this.follower.start();
      if (this.options.scanIntervalMs > 0)
        this.timer = this.options.clock.every(this.options.scanIntervalMs, () => {
          if (this.stopped || this.ticking || this.flash.usedBytes <= this.highBytes) return;
          this.ticking = this.evictor.makeRoom().catch((error: unknown) => log.warn('eviction on the follower failed', { error: errorText(error) })).finally(() => (this.ticking = undefined));
        });
      this.heatTimer = this.options.clock.every(constants.heatFlushIntervalMs, () => this.flushHeat());
      return;
    }
    if (this.lease && !(await this.lease.acquire(this.options.writerLease!.waitMs))) {
      this.flash.tier = this.readOnlyHooks();
      return;
    }
    await this.gc.recover();
    await this.replicator?.start();
    this.flash.tier = {
      readFromPack: (e, from, length, dest, skip) => this.recaller.read(e, from, length, dest, skip),
      extentRead: (e) => this.recordRead(e),
      spaceWanted: (blockCount) => this.evictor.spaceWanted(blockCount),
      durable: (ino) => this.durable(ino),
    };
    if (this.options.scanIntervalMs > 0) this.timer = this.options.clock.every(this.options.scanIntervalMs, () => this.tick());
    this.heatTimer = this.options.clock.every(constants.heatFlushIntervalMs, () => this.flushHeat());
    this.background = this.reconcile().then(
      () => undefined,
      (error: unknown) => log.warn('listing the target for orphan packs failed', { error: errorText(error) }),
    );
  }

  /** What a read-only appliance's flash store may still ask: reads from packs, and nothing that writes. */
  private readOnlyHooks(): NonNullable<FlashStore['tier']> {
    return {
      readFromPack: (e, from, length, dest, skip) => this.recaller.read(e, from, length, dest, skip),
      extentRead: () => undefined,
      spaceWanted: (blockCount) => this.evictor.spaceWanted(blockCount),
      durable: async () => {
        throw new TierfsError('READ_ONLY', `this appliance may not write the bucket: ${this.readOnlyReason}`);
      },
    };
  }

  /** This appliance may no longer write the bucket: background work and replication stop for good, the file system turns read-only. */
  private turnReadOnly(reason: string): void {
    if (this.readOnlyReason !== undefined) return;
    this.readOnlyReason = reason;
    this.timer?.stop(); // a follower starts its own (eviction only) after this
    this.timer = undefined;
    this.replicator?.halt();
    this.options.onReadOnly?.(reason);
  }

  /** Commands that change what the bucket should hold are refused on an appliance that may not write it. */
  private writer(): void {
    if (this.readOnlyReason !== undefined) throw new TierfsError('READ_ONLY', `this appliance serves the file system read-only: ${this.readOnlyReason}`);
  }

  /** Why this appliance may not write the bucket (undefined: it may). */
  get readOnly(): string | undefined {
    return this.readOnlyReason;
  }

  /** Where following the writer stands (undefined: this appliance is not a follower). */
  followerStatus(): FollowerStatus | undefined {
    return this.follower?.status();
  }

  /**
   * The followers' published positions (tierfs followers), newest first:
   * how many changes each is behind this appliance's last, and whether it
   * is stale or behind the retention window (it must resynchronise).
   */
  async followers(): Promise<FollowerReport[]> {
    const store = this.targets.get('default').store;
    const last = this.replicator?.uploadedThrough ?? this.follower?.status().appliedSeq ?? 0;
    const oldest = Number(this.meta.setting('replicaOldestSeq') ?? 0);
    const reports: FollowerReport[] = [];
    for await (const item of store.list(followersPrefix(this.fsUuid))) {
      const got = await store.getVersioned(item.key);
      const p = got && parsePosition(got.body);
      if (!p) continue;
      const ageMs = this.options.clock.nowMs() - Date.parse(p.publishedAt);
      reports.push({
        id: p.id, host: p.host, appliedSeq: p.appliedSeq, behindChanges: Math.max(0, last - p.appliedSeq), publishedAt: p.publishedAt,
        state: p.state === 'resync needed' || (this.replicator !== undefined && p.appliedSeq < oldest) ? 'must resynchronise' : ageMs > constants.followerStaleMs ? 'stale' : 'following',
      });
    }
    return reports.sort((a, b) => b.publishedAt.localeCompare(a.publishedAt));
  }

  /** Apply what the writer's log holds now (tests; the poll does it every interval). */
  async catchUp(): Promise<void> {
    if (!this.follower) throw new TierfsError('USAGE', 'not a follower');
    await this.follower.catchUp();
  }

  /** The writer lease, when there is one. */
  leaseStatus(): LeaseStatus | undefined {
    return this.lease?.status();
  }

  /** Stop background work, wait for the running pass, write pending heat. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.stop();
    this.heatTimer?.stop();
    await this.ticking;
    await this.evictor.idle();
    await this.work.catch(() => undefined);
    await this.background;
    await this.recaller.settle();
    this.flushHeat();
    await this.follower?.stop();
    if (this.readOnlyReason === undefined) await this.replicator?.stop();
    await this.lease?.release();
    this.flash.tier = undefined;
    await this.targets.close();
  }

  /** Resolves once the start-up listing of the targets (orphans, foreign objects) is done. */
  async listed(): Promise<void> {
    await this.background;
  }

  /** Resolves once no write-back after a recall is running. */
  settle(): Promise<void> {
    return this.recaller.settle();
  }

  /** Run `fn` after every pass before it (destage, evict, GC and the commands take turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.work.catch(() => undefined).then(fn);
    this.work = result.catch(() => undefined);
    return result;
  }

  /** One background pass: destage what is due, evict above the high watermark, collect garbage. */
  private tick(): void {
    this.sampleRates();
    const now = this.options.clock.nowMs();
    if (this.stopped || this.ticking || now < this.backoffUntilMs) return;
    const run = async () => {
      this.destager.refreshQueue();
      await this.destage({ background: true });
      if (this.flash.usedBytes > this.highBytes) await this.evictor.makeRoom();
      await this.collectGarbage();
    };
    this.ticking = run()
      .then(
        () => (this.failedTickCount = 0),
        (error: unknown) => {
          this.failedTickCount += 1;
          const retryInMs = Math.min(constants.tierBackoffMsMax, 1000 * 2 ** this.failedTickCount);
          this.backoffUntilMs = this.options.clock.nowMs() + retryInMs;
          log.warn('tiering pass failed; retried later', { error: errorText(error), retryInMs });
        },
      )
      .finally(() => (this.ticking = undefined));
  }

  // ---- durability in the bucket (policy --durable object) ----

  /**
   * fsync of a file whose policy is durable in the bucket: its extents only
   * on flash go into a pack and the metadata log is uploaded before fsync
   * returns.  fsyncs arriving while a batch runs wait for the next one, which
   * takes them all: many files, one pack upload and one log PUT.
   */
  private durable(ino: Ino): Promise<void> {
    if (!this.policies.anyDurableObject || this.policyOf(ino).durable !== 'object') return Promise.resolve();
    this.durableWaiting.add(ino);
    this.durableNext ??= this.durableRunning.catch(() => undefined).then(() => this.runDurableBatch());
    return this.durableNext;
  }

  private async runDurableBatch(): Promise<void> {
    const inos = [...this.durableWaiting];
    this.durableWaiting.clear();
    this.durableNext = undefined;
    const run = async () => {
      for (let attempt = 0; ; attempt++) {
        await this.destage({ inos });
        const left = inos.filter((ino) => this.meta.getInode(ino) && this.meta.fileExtents(ino).some((e) => e.pack === null));
        if (left.length === 0) break;
        if (attempt >= 1)
          throw new TierfsError('UNAVAILABLE', `fsync: ${left.length} file(s) could not be put in the bucket${this.lastError ? `: ${this.lastError}` : ''}`);
      }
      if (this.replicator) await this.replicator.flush();
      this.counters.durableBatchCount += 1;
      this.counters.durableFileCount += inos.length;
    };
    this.durableRunning = run();
    await this.durableRunning;
  }

  // ---- metadata replication ----

  /** Where replication stands (undefined when it is off), with the pack bytes kept only for restore points. */
  replicationStatus(): (ReplicationStatus & { heldForRetentionBytes: number }) | undefined {
    if (!this.replicator) return undefined;
    const held = this.meta.packsInState('deleting').filter((p) => this.replicator!.holdsPack(p.deadSeq));
    return { ...this.replicator.status(), heldForRetentionBytes: held.reduce((sum, p) => sum + p.storedBytes, 0) };
  }

  /** Resolves once every change committed so far is in the bucket. */
  async flushReplication(): Promise<void> {
    if (!this.replicator) throw new TierfsError('USAGE', 'metadata replication is off');
    await this.replicator.flush();
  }

  // ---- targets ----

  /** The last failure talking to any target (cleared by the next success there). */
  get lastError(): string | undefined {
    return this.targets.lastError;
  }

  /** The targets, "default" first (reports and fsck read them; writes go through the engine). */
  listTargets(): Target[] {
    return this.targets.list();
  }

  async addTarget(name: string, url: string): Promise<void> {
    this.writer();
    return this.targets.add(name, url);
  }

  async removeTarget(name: string): Promise<void> {
    this.writer();
    return this.targets.remove(name);
  }

  testTarget(name: string): ReturnType<TargetSet['test']> {
    return this.targets.test(name);
  }

  // ---- policies ----

  private loadPolicies(): PolicySet {
    const fallback: PolicyRecord = {
      name: 'default',
      pathGlob: '**',
      mode: 'auto',
      coolAfterMs: this.options.coolAfterMs,
      sizeBytesMin: 0,
      target: 'default',
      compress: this.options.compress,
      durable: 'flash',
    };
    return new PolicySet(this.meta.policies(), fallback);
  }

  /** The rule that applies where no policy matches. */
  get defaultPolicy(): PolicyRecord {
    return this.policies.defaultPolicy;
  }

  listPolicies(): PolicyRecord[] {
    return this.meta.policies();
  }

  async putPolicy(policy: PolicyRecord): Promise<void> {
    this.writer();
    validatePolicy(policy);
    if (policy.durable === 'object' && !this.replicator)
      throw new TierfsError('USAGE', 'policy --durable object needs metadata replication (serve\'s metadataRpo is off)');
    if (!this.targets.has(policy.target))
      throw new TierfsError('USAGE', `policy target ${JSON.stringify(policy.target)}: no such target (${this.targets.names().join(', ')}; tierfs target add)`);
    const existing = this.meta.policies();
    if (existing.length >= constants.policyCountMax && !existing.some((p) => p.name === policy.name))
      throw new TierfsError('USAGE', `a file system holds at most ${constants.policyCountMax} policies`);
    this.meta.mutate(() => this.meta.putPolicy(policy));
    await this.flash.commit();
    this.policies = this.loadPolicies();
  }

  async deletePolicy(name: string): Promise<void> {
    this.writer();
    if (!this.meta.mutate(() => this.meta.deletePolicy(name))) throw new TierfsError('NOT_FOUND', `no policy named ${name}`);
    await this.flash.commit();
    this.policies = this.loadPolicies();
  }

  /** The path of an inode from the root (its first link), or undefined when it has no name left. */
  pathOf(ino: Ino): string | undefined {
    return pathOfInode(this.meta, ino);
  }

  policyOf(ino: Ino): PolicyRecord {
    if (this.meta.isPinned(ino)) return { ...this.policies.defaultPolicy, name: 'pinned', pathGlob: '', mode: 'pin' };
    const path = this.pathOf(ino);
    return path === undefined ? this.policies.defaultPolicy : this.policies.match(path);
  }

  /**
   * The files of a destage command that may go (`movable`) and those a pin
   * or never policy keeps on flash (`kept`, skipped); refused (INVALID) when
   * every file is kept.
   */
  filesToDestage(inos: Ino[]): { movable: Ino[]; kept: Ino[] } {
    const movable: Ino[] = [];
    const kept: Ino[] = [];
    for (const ino of inos) (keepsOnFlash(this.policyOf(ino), Infinity) ? kept : movable).push(ino);
    if (kept.length > 0 && movable.length === 0) {
      const policy = this.policyOf(kept[0]);
      throw new TierfsError('INVALID', `policy ${policy.name} (${policy.mode}) keeps ${this.pathOf(kept[0]) ?? 'the file'} on flash${kept.length > 1 ? ` (and ${kept.length - 1} more)` : ''}`);
    }
    return { movable, kept };
  }

  /** The policies matching a path, the one that applies first (policy explain). */
  explainPath(path: string): { matches: PolicyRecord[]; applies: PolicyRecord } {
    const matches = this.policies.matches(path);
    return { matches, applies: matches[0] ?? this.policies.defaultPolicy };
  }

  /** Whether an administrator pinned the file (tierfs pin). */
  isPinned(ino: Ino): boolean {
    return this.meta.isPinned(ino);
  }

  /** Set or clear an administrator's pin on one file; pinning does not recall (the caller does). */
  async pin(ino: Ino, pinned: boolean): Promise<boolean> {
    this.writer();
    const changed = this.meta.mutate(() => this.meta.setPinned(ino, pinned, this.options.clock.nowMs()));
    if (changed) await this.flash.commit();
    return changed;
  }

  /** New watermarks for the running engine, kept in the metadata for later starts. */
  async setWatermarks(highPercent: number, lowPercent: number): Promise<void> {
    this.writer();
    checkWatermarks(highPercent, lowPercent);
    this.meta.mutate(() => {
      this.meta.setSetting('watermarkHighPercent', String(highPercent));
      this.meta.setSetting('watermarkLowPercent', String(lowPercent));
    });
    await this.flash.commit();
    this.options.watermarkHighPercent = highPercent;
    this.options.watermarkLowPercent = lowPercent;
    if (this.flash.usedBytes > this.highBytes) void this.evictor.makeRoom().catch((error) => log.warn('eviction after a watermark change failed', { error: errorText(error) }));
  }

  // ---- heat ----

  private recordRead(e: Extent): void {
    this.heat.record(e);
    if (this.heat.pendingCount >= constants.heatPendingCountMax) this.flushHeat();
  }

  flushHeat(): void {
    try {
      this.heat.flush(this.meta);
    } catch (error) {
      log.warn('heat flush failed', { error: errorText(error) });
    }
  }

  // ---- the passes, in turn ----

  /**
   * Destage eligible FLASH extents.  `ino`/`inos`: only those files,
   * regardless of their cooling period (the destage command).  `urgent`: the
   * coldest of any policy but pin and never, up to `bytesMax`.  Background
   * passes upload a partial pack only once its oldest extent has waited
   * packWaitMsMax.
   */
  async destage(request: Omit<DestageRequest, 'inos'> & { ino?: Ino; inos?: Ino[] }): Promise<number> {
    this.writer();
    const inos = request.inos ?? (request.ino === undefined ? undefined : [request.ino]);
    return this.exclusive(() => this.destager.destage({ ...request, inos }));
  }

  /** Drop the flash copy of every extent of `ino` that is already in a pack. */
  async release(ino: Ino): Promise<{ releasedBytes: number; flashOnlyBytes: number }> {
    this.writer();
    return this.exclusive(() => this.evictor.release(ino));
  }

  /** release of many files in batches (the release command); pinned files are skipped and counted. */
  async releaseFiles(inos: Ino[], control: JobControl = {}): Promise<ReleaseReport> {
    this.writer();
    return this.exclusive(() => this.evictor.releaseFiles(inos, control, this.residencyBytesOf(inos, 'BOTH')));
  }

  /** BOTH → OBJECT for the coldest clean extents (pinned files excepted) until flash use is at most `toBytes`; returns the bytes freed. */
  evictTo(toBytes: number): Promise<number> {
    return this.exclusive(async () => {
      const freed = this.evictor.evictTo(toBytes);
      await this.flash.commit();
      return freed;
    });
  }

  /** Bring flash use under the low watermark (evict, then urgent destage).  Returns the bytes freed. */
  makeRoom(): Promise<number> {
    return this.evictor.makeRoom();
  }

  /** OBJECT → BOTH for every extent of a file (the recall command). */
  recallFile(ino: Ino, control: JobControl = {}): Promise<number> {
    return this.recaller.recallFile(ino, control);
  }

  /** Delete packs nothing references; repack sparse ones.  Returns the packs deleted. */
  async collectGarbage(): Promise<number> {
    this.writer();
    return this.exclusive(() => this.gc.collect());
  }

  /** List every target's pack prefix and delete orphan packs (at start; also a test's way to run it again). */
  async reconcile(): Promise<{ orphanCount: number; foreignCount: number }> {
    const { orphanCount, foreignCount } = await this.gc.reconcile({ deleteOrphans: true });
    return { orphanCount, foreignCount };
  }

  /** The same listing for fsck, which decides itself whether orphans go (call inside `exclusive`). */
  listPackObjects(options: { deleteOrphans: boolean; listedMax?: number }): Promise<ReconcileReport> {
    return this.gc.reconcile(options);
  }

  /** Fetch an extent's copy in its pack from the target and verify it (fsck --deep). */
  async verifyPackCopy(e: Extent): Promise<void> {
    await this.recaller.fetchExtent(e, { fresh: true });
  }

  /** Drop the recalled entries kept in memory (tests: the next read goes to the target). */
  dropRecallCache(): void {
    this.recaller.dropCache();
  }

  set onRecallLatency(observe: ((ms: number) => void) | undefined) {
    this.recaller.onLatency = observe;
  }

  // ---- reports ----

  /** Bytes of these files with a residency (what a job over them will move: its progress total). */
  residencyBytesOf(inos: Ino[], residency: 'FLASH' | 'BOTH' | 'OBJECT'): number {
    let bytes = 0;
    for (const ino of inos) for (const e of this.meta.fileExtents(ino)) if (residencyOf(e) === residency) bytes += e.lengthBytes;
    return bytes;
  }

  /**
   * Bytes by time since last access (tierfs heat), in `buckets` of age: of
   * the files `inos`, or of the whole file system (a walk of every extent
   * that lets the file system serve between pages).
   */
  async heatHistogram(buckets: { ageMsMax: number }[], inos?: Ino[]): Promise<{ nowMs: number; buckets: { bytes: number; flashBytes: number; extentCount: number }[] }> {
    const nowMs = this.options.clock.nowMs();
    const counts = buckets.map(() => ({ bytes: 0, flashBytes: 0, extentCount: 0 }));
    const add = (e: Extent) => {
      const ageMs = Math.max(0, nowMs - this.heat.heatOf(e).accessedMs);
      const bucket = counts[buckets.findIndex((b) => ageMs < b.ageMsMax)];
      bucket.bytes += e.lengthBytes;
      bucket.extentCount += 1;
      if (e.flashOffsetBytes !== null) bucket.flashBytes += e.lengthBytes;
    };
    let seen = 0;
    const extents = inos === undefined ? this.meta.everyExtent() : inos.flatMap((ino) => this.meta.fileExtents(ino));
    for (const e of extents) {
      if (++seen % constants.reportYieldCountMax === 0) await yieldToEventLoop(); // the file system keeps serving
      add(e);
    }
    return { nowMs, buckets: counts };
  }

  /** The destage queue counted now (a scan of up to tierScanPageCountMax pages of extents); status shows the last count. */
  countDestageQueue(): number {
    return this.destager.countQueue();
  }

  private sampleRates(): void {
    this.destageRate.sample(this.counters.destagedBytes);
    this.recallRate.sample(this.counters.recalledBytes);
    this.recallGetRate.sample(this.counters.recallGetCount);
  }

  /**
   * What-if from the recorded heat (tierfs policy simulate): another flash
   * size, and optionally another set of policies instead of the current ones.
   */
  async simulate(request: { flashSizeBytes: number; policies?: PolicyRecord[]; prices: Prices }): Promise<SimulationResult> {
    const policies = request.policies ? new PolicySet(request.policies, this.policies.defaultPolicy) : this.policies;
    const now = this.options.clock.nowMs();
    const simulation = new Simulation({
      halfLifeMs: constants.heatHalfLifeMs,
      flashSizeBytes: request.flashSizeBytes,
      watermarkHighPercent: this.options.watermarkHighPercent,
      prices: request.prices,
    });
    let ino: Ino | undefined;
    let policy = policies.defaultPolicy;
    let fileSizeBytes = 0;
    let seen = 0;
    for (const e of this.meta.everyExtent()) {
      if (++seen % constants.reportYieldCountMax === 0) await yieldToEventLoop(); // the file system keeps serving
      if (e.ino !== ino) {
        ino = e.ino;
        const path = this.pathOf(ino);
        policy = this.meta.isPinned(ino) ? { ...policies.defaultPolicy, mode: 'pin' } : path === undefined ? policies.defaultPolicy : policies.match(path);
        fileSizeBytes = this.meta.getInode(ino)?.sizeBytes ?? 0;
      }
      const heat = this.heat.heatOf(e);
      simulation.addExtent({ lengthBytes: e.lengthBytes, idleMs: Math.max(0, now - heat.accessedMs), countNow: heat.heatCount, fileSizeBytes, policy });
    }
    return simulation.result();
  }

  fileResidency(ino: Ino): FileResidency {
    const inode = this.meta.getInode(ino);
    if (!inode) throw new TierfsError('NOT_FOUND', `inode ${ino} does not exist`);
    const r: FileResidency = {
      size: inode.sizeBytes,
      flashBytes: 0,
      objectBytes: 0,
      flashOnlyBytes: 0,
      bothBytes: 0,
      objectOnlyBytes: 0,
      extentCount: 0,
      policy: '',
      mode: 'auto',
      heat: { accessedMs: 0, count: 0 },
    };
    for (const e of this.meta.fileExtents(ino)) {
      r.extentCount += 1;
      const residency = residencyOf(e);
      if (residency !== 'OBJECT') r.flashBytes += e.lengthBytes;
      if (residency !== 'FLASH') r.objectBytes += e.lengthBytes;
      if (residency === 'FLASH') r.flashOnlyBytes += e.lengthBytes;
      else if (residency === 'BOTH') r.bothBytes += e.lengthBytes;
      else r.objectOnlyBytes += e.lengthBytes;
      const heat = this.heat.heatOf(e);
      r.heat.accessedMs = Math.max(r.heat.accessedMs, heat.accessedMs);
      r.heat.count += heat.heatCount;
    }
    r.heat.count = r.extentCount === 0 ? 0 : Math.round((r.heat.count / r.extentCount) * 100) / 100; // the mean: times the file was read
    const policy = this.policyOf(ino);
    r.policy = policy.name;
    r.mode = policy.mode;
    return r;
  }

  private targetStatus(t: Target) {
    return {
      url: t.store.description,
      encrypted: this.encrypted,
      reachable: t.lastError === undefined,
      ...(t.lastError === undefined ? {} : { lastError: t.lastError }),
    };
  }

  status() {
    const now = this.options.clock.nowMs();
    const countedMs = this.destager.queueCountedMs;
    const recallBytesPerSecond = Math.round(this.recallRate.perSecond(this.counters.recalledBytes));
    return {
      flash: {
        capacityBytes: this.flash.capacityBytes,
        usedBytes: this.flash.usedBytes,
        highWatermarkBytes: this.highBytes,
        lowWatermarkBytes: this.lowBytes,
      },
      residency: this.meta.residencyTotals(),
      packs: this.meta.packTotals(),
      watermarks: { highPercent: this.options.watermarkHighPercent, lowPercent: this.options.watermarkLowPercent },
      target: this.targetStatus(this.targets.get('default')),
      targets: this.targets.list().map((t) => ({ name: t.name, ...this.targetStatus(t), ...this.meta.packsOfTarget(t.name) })),
      destage: {
        queueBytes: this.destager.queueBytes,
        /** How old the queue figure is (null: not counted yet). */
        queueAgeMs: Number.isFinite(countedMs) ? Math.max(0, now - countedMs) : null,
        bytesPerSecond: Math.round(this.destageRate.perSecond(this.counters.destagedBytes)),
      },
      recall: {
        bytesPerSecond: recallBytesPerSecond,
        getCount: this.counters.recallGetCount,
        getsPerGiB: getsPerGiB(this.counters.recallGetCount, this.counters.recalledBytes),
        getsPerGiBLastMinute: getsPerGiB(this.recallGetRate.perSecond(this.counters.recallGetCount), recallBytesPerSecond),
        prefetchedBytes: this.recaller.prefetchedBytes,
        receiveBufferBytes: this.recaller.receiveBufferBytes,
        latencyMsP50: roundMs(this.recaller.latency.percentile(50)),
        latencyMsP99: roundMs(this.recaller.latency.percentile(99)),
      },
      errors: {
        destageFailureCount: this.counters.destageFailureCount,
        recallFailureCount: this.counters.recallFailureCount,
        recallChecksumErrorCount: this.counters.recallChecksumErrorCount,
        flashChecksumErrorCount: this.flash.counters.checksumErrorCount,
      },
      policyCount: this.meta.policies().length,
      pinnedFileCount: this.meta.pinnedCount(),
      counters: { ...this.counters, ...this.flash.counters },
    };
  }
}

/** Requests per GiB of data, to one decimal (null when no data moved). */
function getsPerGiB(gets: number, bytes: number): number | null {
  return bytes > 0 ? Math.round((gets * 10 * 2 ** 30) / bytes) / 10 : null;
}
