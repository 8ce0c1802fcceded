/**
 * The tiering engine: destage, evict, recall, heat, policies and garbage
 * collection of packs, over the flash store and one object target.
 *
 * - Destage (FLASH → BOTH): the coldest eligible extents are read from flash
 *   (verified), written into a pack, and the pack's row is committed as
 *   `uploading` BEFORE the upload starts, so a crash at any point leaves
 *   either nothing or a row that names the object to delete at the next
 *   start.  After the upload (and a HEAD that checks its size) one metadata
 *   mutation marks each extent BOTH — only if it is still exactly the extent
 *   that was read: one rewritten, truncated or merged during the upload
 *   stays FLASH and its bytes in the pack are garbage from the start.
 * - Evict (BOTH → OBJECT): metadata only; the flash blocks are freed after
 *   the commit (and after older reads), like any overwrite.  It runs when use
 *   passes the high watermark, coldest first, until below the low one; if
 *   that is not enough, urgent destage of the coldest FLASH extents follows
 *   (pin and never excepted).  A writer short of flash waits for this
 *   (backpressure) and sees ENOSPC only when nothing more can be freed.
 * - Recall: a read of an OBJECT extent fetches its pack entry with a ranged
 *   GET (a small random read of a plain entry fetches just its blocks),
 *   shared by concurrent readers and kept in a bounded cache.  Sequential
 *   readers get the following entries fetched ahead in one GET where they lie
 *   together in the pack.  Random or repeated reads write the extent back to
 *   flash (BOTH); a sequential scan of a large file is served straight
 *   through, so one backup read does not flush the working set.  Every
 *   recalled block is verified against the extent's block checksums.
 * - Degraded mode: with the target unreachable, flash-resident data is
 *   served and written as usual; a read that needs the object tier answers
 *   EIO after recallTimeoutMs, and is counted.
 * - GC: packs whose live bytes (kept by SQLite triggers) reach zero are
 *   marked `deleting`, committed, then deleted; packs below
 *   repackLiveFractionMax are repacked (their live extents move to a new
 *   pack).  At start the engine finishes interrupted uploads and deletions,
 *   then lists the target's pack prefix: a pack object with no row is an
 *   orphan and is deleted; an object that is not a pack of ours is counted
 *   and left alone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { firstBadBlock } from '../checksum';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import {
  ROOT_INO,
  residencyOf,
  type Extent,
  type Ino,
  type MetaStore,
  type PackId,
  type PackRef,
  type PolicyRecord,
} from '../meta/meta_store';
import type { FlashStore } from '../store/store';
import { HeatTracker } from './heat';
import { ObjectStoreError, type ObjectStore } from './object_store';
import { decodeEntry, packIdOfKey, packKey, packKeyPrefix, PackWriter, type PackCrypto } from './pack';
import { checkWatermarks, PolicySet, validatePolicy } from './policy';
import { Simulation, type Prices, type SimulationResult } from './simulate';
import { LatencyWindow, RateMeter } from './stats';

const BS = constants.blockSizeBytes;

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
  /** A partial pack of cold data goes up once its oldest extent has waited this long. */
  packWaitMsMax: number;
  recallTimeoutMs: number;
  /** Packs uploading at once in a destage (each with its parts in parallel). */
  uploadCountMax: number;
  /** 0: no background work (tests drive the engine by calling its passes). */
  scanIntervalMs: number;
  clock: () => number;
}

export const defaultTieringOptions = {
  compress: false,
  coolAfterMs: constants.coolAfterMsDefault,
  watermarkHighPercent: constants.watermarkHighPercentDefault,
  watermarkLowPercent: constants.watermarkLowPercentDefault,
  packSizeBytesTarget: constants.packSizeBytesTarget,
  packWaitMsMax: 60_000,
  recallTimeoutMs: constants.recallTimeoutMsDefault,
  uploadCountMax: constants.destageUploadCountMax,
  scanIntervalMs: constants.tierScanIntervalMs,
  clock: Date.now,
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
}

export interface FileResidency {
  size: number;
  flashBytes: number;
  objectBytes: number;
  flashOnlyBytes: number;
  bothBytes: number;
  objectOnlyBytes: number;
  extentCount: number;
  policy: string;
  mode: string;
  heat: { accessedMs: number; count: number };
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

interface PackItem {
  extent: Extent;
  data: Buffer;
  compress: boolean;
}

interface BuiltPack {
  /** The buffer its raw entries are views of, reused once the pack is up. */
  buffer?: Buffer;
  target: Target;
  writer: PackWriter;
  body: Buffer[];
  storedBytes: number;
  packed: { extent: Extent; ref: PackRef }[];
}

interface PlannedExtent {
  extent: Extent;
  compress: boolean;
  target: string;
  /** When its policy let it go (ms). */
  eligibleMs: number;
}

/** One object target: its store, and the last failure talking to it (cleared by the next success). */
export interface Target {
  name: string;
  url: string;
  store: ObjectStore;
  lastError?: string;
}

const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The key of one pack entry in the recall cache and the map of fetches in flight. */
function entryKey(ref: PackRef): string {
  return `${ref.packId}:${ref.entryIndex}`;
}

/** Write, read back and delete a probe object under the file system's prefix (never in the pack prefix); each step timed. */
export async function probeStore(store: ObjectStore, fsUuid: string): Promise<{ url: string; ok: boolean; error?: string; steps: { step: string; ms: number }[] }> {
  const key = `${fsUuid}/probe/${randomBytes(8).toString('hex')}`;
  const body = randomBytes(4096);
  const steps: { step: string; ms: number }[] = [];
  const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
    const startedMs = performance.now();
    try {
      return await fn();
    } finally {
      steps.push({ step, ms: Math.round((performance.now() - startedMs) * 100) / 100 });
    }
  };
  try {
    await timed('put', () => store.put(key, [body]));
    const back = await timed('get', () => store.get(key));
    if (!back.equals(body)) throw new Error('the probe object read back differently');
    await timed('delete', () => store.delete(key));
    return { url: store.description, ok: true, steps };
  } catch (error) {
    await store.delete(key).catch(() => undefined);
    return { url: store.description, ok: false, error: errorText(error).split('\n')[0], steps };
  }
}

/** Let I/O callbacks run between pages of a long synchronous scan (SQLite calls block the loop). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function roundMs(ms: number | null): number | null {
  return ms === null ? null : Math.round(ms * 100) / 100;
}

function errorText(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

export class TieringEngine {
  readonly counters: TierCounters = {
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
  };
  /** The targets by name: "default" first. */
  private readonly targets = new Map<string, Target>();
  /** Latency of recall GETs (status percentiles); `onRecallLatency` lets metrics observe each one. */
  readonly recallLatency = new LatencyWindow();
  onRecallLatency: ((ms: number) => void) | undefined;
  private readonly destageRate: RateMeter;
  private readonly recallRate: RateMeter;
  readonly heat: HeatTracker;
  private readonly crypto: PackCrypto;
  private policies: PolicySet;
  private readonly meta: MetaStore;
  private readonly clock: () => number;
  private work: Promise<unknown> = Promise.resolve();
  private readonly cache = new LRUCache<string, Buffer>({
    maxSize: constants.recallCacheBytesMax,
    sizeCalculation: (value) => value.length,
  });
  private readonly fetches = new Map<string, Promise<Buffer>>();
  /** Entries a small random read is fetching a few blocks of. */
  private readonly smallFetches = new Set<string>();
  /** Reads waiting for the object tier right now (background fetches wait for them). */
  private readersWaiting = 0;
  /** Foreground bytes read and written as of the last destage step (see yieldToForeground). */
  private foregroundBytes = 0;
  private readonly readEnds = new LRUCache<number, number>({ max: 4096 });
  /** Per file, how far a sequential reader's readahead has started fetches. */
  private readonly readAheadFrontiers = new LRUCache<number, number>({ max: 4096 });
  private writeBacksInFlight = 0;
  private readonly packInfos = new LRUCache<string, { nonce: Buffer | null; target: string }>({ max: 4096 });
  private timer: NodeJS.Timeout | undefined;
  private heatTimer: NodeJS.Timeout | undefined;
  private makingRoom: Promise<number> | undefined;
  /** Pack buffers of the destage running now (reading into them pays page faults only once); dropped after it. */
  private packBuffers: Buffer[] = [];
  private stopped = false;
  /** The background pass running now (passes never overlap). */
  private ticking: Promise<unknown> | undefined;
  private failedTickCount = 0;
  private backoffUntilMs = 0;
  private background: Promise<void> | undefined;

  constructor(
    readonly flash: FlashStore,
    readonly options: TieringOptions,
  ) {
    this.meta = flash.meta;
    this.targets.set('default', { name: 'default', url: options.objects.description, store: options.objects });
    for (const row of this.meta.targets()) {
      if (options.openStore) this.targets.set(row.name, { name: row.name, url: row.url, store: options.openStore(row.url) });
      else log.warn('target not opened (no opener given)', { target: row.name });
    }
    this.clock = options.clock;
    this.heat = new HeatTracker(options.clock);
    this.destageRate = new RateMeter(options.clock);
    this.recallRate = new RateMeter(options.clock);
    const uuid = this.meta.setting('uuid');
    assert.ok(uuid);
    this.crypto = { fsUuid: uuid, key: options.encryptionKey };
    this.policies = this.loadPolicies();
  }

  get fsUuid(): string {
    return this.crypto.fsUuid;
  }

  get encrypted(): boolean {
    return this.crypto.key !== null;
  }

  /** The last failure talking to any target (cleared by the next success there). */
  get lastError(): string | undefined {
    for (const target of this.targets.values()) if (target.lastError !== undefined) return target.lastError;
    return undefined;
  }

  /** The targets, "default" first (reports and fsck read them; writes go through the engine). */
  listTargets(): Target[] {
    return [...this.targets.values()];
  }

  /** A target by name; an unknown one is EIO-mapped (a pack in a target this daemon cannot open). */
  targetOf(name: string): Target {
    const target = this.targets.get(name);
    if (!target) throw new TierfsError('IO', `object target ${name} is not open (recorded in the metadata, but not known to this daemon)`);
    return target;
  }

  /**
   * Add a target (tierfs target add): the name and URL checked, a probe object
   * written, read back and deleted, then the target recorded.  Policies can
   * then send files there (their \`target\`).
   */
  async addTarget(name: string, url: string): Promise<void> {
    if (!TARGET_NAME.test(name)) throw new TierfsError('USAGE', `target name ${JSON.stringify(name)}: letters, digits, _ . - (at most 64, starting with a letter or digit)`);
    if (this.targets.has(name)) throw new TierfsError('BUSY', `a target named ${name} exists`);
    if (!this.options.openStore) throw new TierfsError('INVALID', 'this daemon cannot open more targets');
    const store = this.options.openStore(url); // refuses a bad URL with one line
    const same = [...this.targets.values()].find((t) => t.url === store.description || t.url === url);
    if (same) {
      await store.close();
      throw new TierfsError('USAGE', `target ${same.name} is already ${url}: two targets must not share a place`);
    }
    const probe = await probeStore(store, this.fsUuid);
    if (!probe.ok) {
      await store.close();
      throw new TierfsError('USAGE', `target ${name}: cannot store objects at ${url}: ${probe.error}`);
    }
    this.meta.mutate(() => this.meta.putTarget(name, url, this.clock()));
    await this.flash.commit();
    this.targets.set(name, { name, url, store });
    log.info('target added', { target: name, url: store.description });
  }

  /** Remove a target no policy names and no pack is in. */
  async removeTarget(name: string): Promise<void> {
    if (name === 'default') throw new TierfsError('USAGE', 'the default target (the one given to format) cannot be removed');
    const target = this.targets.get(name);
    if (!target) throw new TierfsError('NOT_FOUND', `no target named ${name}`);
    const users = this.meta.policies().filter((p) => p.target === name);
    if (users.length > 0) throw new TierfsError('BUSY', `target ${name} is named by polic${users.length === 1 ? 'y' : 'ies'} ${users.map((p) => p.name).join(', ')}; change or remove them first`);
    const packs = this.meta.packsOfTarget(name);
    if (packs.count > 0) throw new TierfsError('BUSY', `target ${name} holds ${packs.count} pack(s), ${packs.storedBytes} bytes, that files still use`);
    this.meta.mutate(() => this.meta.deleteTarget(name));
    await this.flash.commit();
    this.targets.delete(name);
    await target.store.close();
  }

  /** Write, read back and delete a probe object beside the packs of a target; each step timed. */
  testTarget(name: string): ReturnType<typeof probeStore> {
    const target = this.targets.get(name);
    if (!target) throw new TierfsError('NOT_FOUND', `no target named ${name} (tierfs target list)`);
    return probeStore(target.store, this.fsUuid);
  }

  /** Attach to the flash store, finish what a crash interrupted, and start the background loop. */
  async start(): Promise<void> {
    await this.recover();
    this.flash.tier = {
      readFromPack: (e, from, length) => this.readFromPack(e, from, length),
      extentRead: (e) => this.recordRead(e),
      spaceWanted: (blockCount) => this.spaceWanted(blockCount),
    };
    if (this.options.scanIntervalMs > 0) {
      this.timer = setInterval(() => this.tick(), this.options.scanIntervalMs);
      this.timer.unref();
    }
    this.heatTimer = setInterval(() => this.flushHeat(), constants.heatFlushIntervalMs);
    this.heatTimer.unref();
    this.background = this.reconcile().then(() => undefined, (error: unknown) => log.warn('listing the target for orphan packs failed', { error: errorText(error) }));
  }

  /** Stop background work, wait for the running pass, write pending heat. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.heatTimer);
    await this.ticking;
    await this.makingRoom?.catch(() => undefined);
    await this.work.catch(() => undefined);
    await this.background;
    await this.settle();
    this.flushHeat();
    this.flash.tier = undefined;
    for (const target of this.targets.values()) if (target.name !== 'default') await target.store.close(); // the default is its opener's
  }

  /** Resolves once the start-up listing of the targets (orphans, foreign objects) is done. */
  async listed(): Promise<void> {
    await this.background;
  }

  /** Resolves once no write-back after a recall is running. */
  async settle(): Promise<void> {
    while (this.writeBacksInFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  /** Run `fn` after every pass before it (destage, evict, GC and the commands take turns). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.work.catch(() => undefined).then(fn);
    this.work = result.catch(() => undefined);
    return result;
  }

  private tick(): void {
    this.sampleRates();
    if (this.stopped || this.ticking || Date.now() < this.backoffUntilMs) return;
    const run = async () => {
      await this.destage({ background: true });
      if (this.flash.usedBytes > this.highBytes) await this.makeRoom();
      await this.collectGarbage();
    };
    this.ticking = run()
      .then(
        () => (this.failedTickCount = 0),
        (error: unknown) => {
          // An unreachable target: back off (2 s, 4 s, ... a minute) instead of failing every second.
          this.failedTickCount += 1;
          this.backoffUntilMs = Date.now() + Math.min(60_000, 1000 * 2 ** this.failedTickCount);
          log.warn('tiering pass failed; retried later', { error: errorText(error), retryInMs: this.backoffUntilMs - Date.now() });
        },
      )
      .finally(() => (this.ticking = undefined));
  }

  get highBytes(): number {
    return Math.floor((this.flash.capacityBytes * this.options.watermarkHighPercent) / 100);
  }

  get lowBytes(): number {
    return Math.floor((this.flash.capacityBytes * this.options.watermarkLowPercent) / 100);
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
    validatePolicy(policy);
    if (!this.targets.has(policy.target))
      throw new TierfsError('USAGE', `policy target ${JSON.stringify(policy.target)}: no such target (${[...this.targets.keys()].join(', ')}; tierfs target add)`);
    this.meta.mutate(() => this.meta.putPolicy(policy));
    await this.flash.commit();
    this.policies = this.loadPolicies();
  }

  async deletePolicy(name: string): Promise<void> {
    if (!this.meta.mutate(() => this.meta.deletePolicy(name))) throw new TierfsError('NOT_FOUND', `no policy named ${name}`);
    await this.flash.commit();
    this.policies = this.loadPolicies();
  }

  /** The path of an inode from the root (its first link), or undefined when it has no name left. */
  pathOf(ino: Ino): string | undefined {
    const names: string[] = [];
    let at = ino;
    for (let depth = 0; at !== ROOT_INO; depth++) {
      if (depth > 4096) return undefined;
      const link = this.meta.firstLink(at);
      if (!link) return undefined;
      names.push(link.name);
      at = link.parent;
    }
    return `/${names.reverse().join('/')}`;
  }

  policyOf(ino: Ino): PolicyRecord {
    if (this.meta.isPinned(ino)) return { ...this.policies.defaultPolicy, name: 'pinned', pathGlob: '', mode: 'pin' };
    const path = this.pathOf(ino);
    return path === undefined ? this.policies.defaultPolicy : this.policies.match(path);
  }

  /** The policies matching a path, the one that applies first (policy explain). */
  explainPath(path: string): { matches: PolicyRecord[]; applies: PolicyRecord } {
    const matches = this.policies.matches(path);
    return { matches, applies: matches[0] ?? this.policies.defaultPolicy };
  }

  /** Set or clear an administrator's pin on one file; pinning does not recall (the caller does). */
  async pin(ino: Ino, pinned: boolean): Promise<boolean> {
    const changed = this.meta.mutate(() => this.meta.setPinned(ino, pinned, this.clock()));
    if (changed) await this.flash.commit();
    return changed;
  }

  /** New watermarks for the running engine, kept in the metadata for later starts. */
  async setWatermarks(highPercent: number, lowPercent: number): Promise<void> {
    checkWatermarks(highPercent, lowPercent);
    this.meta.mutate(() => {
      this.meta.setSetting('watermarkHighPercent', String(highPercent));
      this.meta.setSetting('watermarkLowPercent', String(lowPercent));
    });
    await this.flash.commit();
    this.options.watermarkHighPercent = highPercent;
    this.options.watermarkLowPercent = lowPercent;
    if (this.flash.usedBytes > this.highBytes) void this.makeRoom().catch((error) => log.warn('eviction after a watermark change failed', { error: errorText(error) }));
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

  // ---- destage ----

  /**
   * Destage eligible FLASH extents.  `ino`: only that file, regardless of
   * its cooling period (the destage command).  `urgent`: the coldest of any
   * policy but pin and never, up to `bytesMax`.  Background passes upload a
   * partial pack only once its oldest extent has waited packWaitMsMax.
   */
  destage(request: { ino?: Ino; inos?: Ino[]; urgent?: boolean; bytesMax?: number; background?: boolean } & JobControl): Promise<number> {
    return this.exclusive(() => this.destageNow(request));
  }

  private async destageNow(request: {
    ino?: Ino;
    inos?: Ino[];
    urgent?: boolean;
    bytesMax?: number;
    background?: boolean;
  } & JobControl): Promise<number> {
    if (this.stopped) return 0;
    const now = this.clock();
    const inos = request.inos ?? (request.ino === undefined ? undefined : [request.ino]);
    const planned = inos !== undefined ? inos.flatMap((ino) => this.planFile(ino)) : this.planCold(now, request.urgent ?? false, request.bytesMax ?? Infinity);
    if (planned.length === 0) return 0;
    const totalBytes = planned.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
    let batches: PlannedExtent[][] = [[]];
    let batchBytes = 0;
    // A pack goes to one target: extents are grouped by target (a stable sort keeps coldest first within one).
    planned.sort((a, b) => (a.target === b.target ? 0 : a.target < b.target ? -1 : 1));
    for (const p of planned) {
      const current = batches[batches.length - 1];
      if ((batchBytes + p.extent.lengthBytes > this.options.packSizeBytesTarget && batchBytes > 0) || (current.length > 0 && current[0].target !== p.target)) {
        batches.push([]);
        batchBytes = 0;
      }
      batches[batches.length - 1].push(p);
      batchBytes += p.extent.lengthBytes;
    }
    if (request.background) {
      // The last pack of each target waits for more to fill it, unless its oldest extent has waited long enough.
      const waiting = batches.filter((batch, i) => {
        if (batches[i + 1]?.[0].target === batch[0].target) return false;
        const bytes = batch.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
        return bytes < constants.packSizeBytesMin && now - Math.min(...batch.map((p) => p.eligibleMs)) < this.options.packWaitMsMax;
      });
      batches = batches.filter((batch) => !waiting.includes(batch));
      if (batches.length === 0) return 0;
    }
    // A pipeline: the next pack is read and built while earlier ones upload (at most
    // uploadCountMax at once, each with its parts in parallel).
    let doneBytes = 0;
    if (!request.urgent) {
      // A look at the foreground before the first pack, too: a busy file system gets its pause first.
      this.foregroundBytes = this.flash.counters.readBytes + this.flash.counters.writtenBytes;
      await new Promise((resolve) => setTimeout(resolve, 50));
      await this.yieldToForeground(50);
    }
    let building = this.readAndBuild(batches[0]);
    const uploads: Promise<number>[] = [];
    try {
      let busySinceMs = this.clock();
      for (let i = 0; i < batches.length && !this.stopped && !request.signal?.aborted; i++) {
        const built = await building;
        while (uploads.length >= this.options.uploadCountMax) doneBytes += await uploads.shift()!;
        if (!request.urgent) {
          await this.yieldToForeground(this.clock() - busySinceMs);
          busySinceMs = this.clock();
        }
        if (i + 1 < batches.length) building = this.readAndBuild(batches[i + 1]);
        request.progress?.({ doneBytes, totalBytes });
        if (built)
          uploads.push(
            this.uploadPack(built).then((bytes) => {
              this.counters.destagedPackCount += 1;
              return bytes;
            }).finally(() => {
              if (built.buffer && this.packBuffers.length <= this.options.uploadCountMax) this.packBuffers.push(built.buffer);
            }),
          );
      }
      while (uploads.length > 0) doneBytes += await uploads.shift()!;
    } finally {
      await building.catch(() => undefined);
      await Promise.allSettled(uploads);
      this.packBuffers = [];
    }
    this.counters.destagedBytes += doneBytes;
    request.progress?.({ doneBytes, totalBytes });
    return doneBytes;
  }

  /**
   * Tiering gives way to the file system's own I/O: when reads or writes went
   * on since the last pack, a non-urgent destage pauses four times as long as
   * it just worked (at most two seconds), so under load it takes about a
   * fifth of the time.  Urgent destage (flash short) never waits.
   */
  private async yieldToForeground(busyMs: number): Promise<void> {
    const c = this.flash.counters;
    const active = c.readBytes + c.writtenBytes !== this.foregroundBytes;
    if (active && busyMs > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(4 * busyMs, 2000)));
    this.foregroundBytes = c.readBytes + c.writtenBytes;
  }

  /** Every FLASH extent of one file; refused when its policy keeps it on flash. */
  private planFile(ino: Ino): PlannedExtent[] {
    const policy = this.policyOf(ino);
    if (policy.mode === 'pin' || policy.mode === 'never')
      throw new TierfsError('INVALID', `policy ${policy.name} (${policy.mode}) keeps ${this.pathOf(ino) ?? `inode ${ino}`} on flash`);
    return this.meta
      .fileExtents(ino)
      .filter((e) => e.pack === null)
      .map((extent) => ({ extent, compress: policy.compress, target: policy.target, eligibleMs: 0 }));
  }

  /** The coldest FLASH extents whose policy lets them go now, oldest first. */
  private planCold(now: number, urgent: boolean, bytesMax: number, limit = Math.min(bytesMax, constants.packSizeBytesMax * (constants.destageUploadCountMax + 1) * 4)): PlannedExtent[] {
    const decided = new Map<Ino, PolicyRecord | null>();
    const planned: PlannedExtent[] = [];
    let bytes = 0;
    for (const e of this.coldPages('flash', now)) {
      if (bytes >= limit) break;
      let policy = decided.get(e.ino);
      if (policy === undefined) {
        const p = this.policyOf(e.ino);
        const size = this.meta.getInode(e.ino)?.sizeBytes ?? 0;
        policy = p.mode === 'pin' || p.mode === 'never' || size < p.sizeBytesMin ? null : p;
        decided.set(e.ino, policy);
      }
      if (policy === null) continue;
      const eligibleMs = this.heat.heatOf(e).accessedMs + (policy.mode === 'auto' ? policy.coolAfterMs : 0);
      if (!urgent && eligibleMs > now) continue;
      planned.push({ extent: e, compress: policy.compress, target: policy.target, eligibleMs });
      bytes += e.lengthBytes;
    }
    return planned;
  }

  /**
   * Extents by coldness, page after page (pinned or never data at the cold end
   * must not hide everything behind it), at most tierScanPageCountMax pages a pass.
   */
  private *coldPages(kind: 'flash' | 'both', now: number): Iterable<Extent> {
    let after: Extent | undefined;
    for (let page = 0; page < constants.tierScanPageCountMax; page++) {
      const extents = this.meta.coldExtents(kind, now + 1, constants.tierScanCountMax, after);
      yield* extents;
      if (extents.length < constants.tierScanCountMax) return;
      after = extents[extents.length - 1];
    }
  }

  /** Read a batch from flash (verified) into a pack buffer and build its pack from views of it. */
  private async readAndBuild(batch: PlannedExtent[]): Promise<BuiltPack | undefined> {
    const bytes = batch.reduce((sum, p) => sum + p.extent.lengthBytes, 0);
    const buffer = this.packBuffers.pop() ?? this.flash.device.allocBuffer(Math.max(bytes, this.options.packSizeBytesTarget + constants.extentSizeBytesMax));
    if (buffer.length < bytes) throw new Error(`pack buffer of ${buffer.length} bytes for a batch of ${bytes}`);
    const datas = await this.flash.readExtents(batch.map((p) => p.extent), buffer);
    const items: PackItem[] = [];
    batch.forEach((p, i) => {
      const data = datas[i];
      if (data instanceof Error) log.warn('extent not destaged: flash read failed', { ino: p.extent.ino, offset: p.extent.fileOffsetBytes, error: data.message });
      else items.push({ extent: p.extent, data, compress: p.compress });
    });
    const built = await this.buildPack(items, this.targetOf(batch[0].target));
    if (built) built.buffer = buffer;
    else this.packBuffers.push(buffer);
    return built;
  }

  /**
   * Build a pack in memory and commit its row (state uploading) before any
   * byte of it goes up: a crash from here on leaves a row naming the object
   * to delete at the next start, never an orphan.
   */
  private async buildPack(items: PackItem[], target: Target): Promise<BuiltPack | undefined> {
    if (items.length === 0) return undefined;
    const writer = new PackWriter(this.crypto, this.clock());
    const packed = items.map(({ extent, data, compress }) => ({ extent, ref: writer.add(extent.ino, extent.fileOffsetBytes, data, extent.checksums, compress) }));
    const body = writer.finish();
    const storedBytes = body.reduce((sum, part) => sum + part.length, 0);
    const nonce = this.encrypted ? writer.nonce : null;
    this.meta.mutate(() =>
      this.meta.putPack({ packId: writer.packId, state: 'uploading', storedBytes, logicalBytes: writer.logicalBytes, liveBytes: 0, createdMs: writer.createdMs, nonce, target: target.name }),
    );
    await this.flash.commit();
    return { writer, body, storedBytes, packed, target };
  }

  /**
   * Upload a built pack and point its extents at it: after the upload a HEAD
   * checks the size, then one mutation repoints every extent that is still
   * exactly what was read.  Returns the bytes repointed.
   */
  private async uploadPack(built: BuiltPack): Promise<number> {
    const { writer, body, storedBytes, packed, target } = built;
    const nonce = this.encrypted ? writer.nonce : null;
    const key = packKey(this.fsUuid, writer.packId);
    try {
      await target.store.put(key, body);
      const head = await target.store.head(key);
      if (head?.sizeBytes !== storedBytes)
        throw new ObjectStoreError('Corrupt', `put ${key}: the target holds ${head?.sizeBytes ?? 'nothing'} bytes, ${storedBytes} were sent`);
    } catch (error) {
      this.counters.destageFailureCount += 1;
      target.lastError = errorText(error);
      log.warn('pack upload failed; its extents stay where they were', { pack: writer.packId, target: target.name, error: target.lastError });
      this.meta.mutate(() => this.meta.setPackState(writer.packId, 'deleting'));
      throw new TierfsError('UNAVAILABLE', `pack upload to ${target.name}: ${target.lastError}`, { cause: error });
    }
    target.lastError = undefined;
    let bytes = 0;
    this.meta.mutate(() => {
      for (const { extent, ref } of packed) {
        if (this.flash.markPacked(extent, ref)) bytes += extent.lengthBytes;
        else this.counters.destageRacedCount += 1;
      }
      this.meta.setPackState(writer.packId, 'live');
    });
    this.packInfos.set(writer.packId, { nonce, target: target.name });
    log.debug('pack uploaded', { pack: writer.packId, extents: packed.length, bytes, storedBytes });
    return bytes;
  }

  // ---- evict ----

  /** BOTH → OBJECT for the coldest clean extents (pinned files excepted) until use is at most `toBytes`. */
  private evictTo(toBytes: number): number {
    let freed = 0;
    const decided = new Map<Ino, boolean>();
    const now = this.clock();
    this.meta.mutate(() => {
      for (const e of this.coldPages('both', now)) {
        if (this.flash.usedBytes - freed <= toBytes) break;
        let pinned = decided.get(e.ino);
        if (pinned === undefined) {
          pinned = this.policyOf(e.ino).mode === 'pin';
          decided.set(e.ino, pinned);
        }
        if (!pinned && this.flash.evict(e)) freed += e.lengthBytes;
      }
    });
    this.counters.evictedBytes += freed;
    return freed;
  }

  /** Drop the flash copy of every extent of `ino` that is already in a pack. */
  async release(ino: Ino): Promise<{ releasedBytes: number; flashOnlyBytes: number }> {
    return this.exclusive(async () => {
      const policy = this.policyOf(ino);
      if (policy.mode === 'pin') throw new TierfsError('INVALID', `policy ${policy.name} pins ${this.pathOf(ino) ?? `inode ${ino}`} to flash`);
      let releasedBytes = 0;
      let flashOnlyBytes = 0;
      this.meta.mutate(() => {
        for (const e of this.meta.fileExtents(ino)) {
          if (e.pack === null) flashOnlyBytes += e.lengthBytes;
          else if (this.flash.evict(e)) releasedBytes += e.lengthBytes;
        }
      });
      await this.flash.commit();
      this.counters.evictedBytes += releasedBytes;
      return { releasedBytes, flashOnlyBytes };
    });
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
      let freed = this.evictTo(this.lowBytes);
      const short = this.flash.usedBytes - freed - this.lowBytes;
      if (short > 0) {
        try {
          await this.destageNow({ urgent: true, bytesMax: short });
        } catch (error) {
          log.warn('urgent destage failed', { error: errorText(error) });
        }
        freed += this.evictTo(this.lowBytes);
      }
      await this.flash.commit();
      return freed;
    })().finally(() => (this.makingRoom = undefined));
    return this.makingRoom;
  }

  /** Backpressure: a writer is short of flash.  True when room was made, false when none can be. */
  private async spaceWanted(blockCount: number): Promise<boolean> {
    const deadline = this.clock() + constants.spaceWaitMsMax;
    while (this.clock() < deadline && !this.stopped) {
      const freed = await this.makeRoom();
      await this.flash.commit();
      if (this.flash.freeBytes >= blockCount * BS) return true;
      if (freed === 0) return false;
    }
    return false;
  }

  // ---- recall ----

  /** A pack's nonce prefix and target, from a small cache in front of the metadata. */
  private packInfo(packId: PackId): { nonce: Buffer | null; target: string } {
    let known = this.packInfos.get(packId);
    if (!known) {
      const row = this.meta.getPack(packId);
      known = { nonce: row?.nonce ?? null, target: row?.target ?? 'default' };
      this.packInfos.set(packId, known);
    }
    return known;
  }

  /** Is this read the continuation of the last one of the same file? */
  private sequential(ino: Ino, startBytes: number, endBytes: number): boolean {
    const last = this.readEnds.get(ino);
    this.readEnds.set(ino, endBytes);
    const slackBytes = 128 * 1024; // the kernel and the readahead windows may issue neighbouring reads out of order
    return last !== undefined && Math.abs(startBytes - last) <= slackBytes;
  }

  private async readFromPack(e: Extent, fromBytes: number, lengthBytes: number): Promise<Buffer> {
    this.readersWaiting += 1;
    try {
      return await this.readFromPackNow(e, fromBytes, lengthBytes);
    } finally {
      this.readersWaiting -= 1;
    }
  }

  private async readFromPackNow(e: Extent, fromBytes: number, lengthBytes: number): Promise<Buffer> {
    const ref = e.pack!;
    const at = e.fileOffsetBytes + fromBytes;
    const seq = this.sequential(e.ino, at, at + lengthBytes);
    if (!seq) this.readAheadFrontiers.delete(e.ino);
    const cached = this.cache.get(entryKey(ref));
    let plain: Buffer;
    if (cached) {
      plain = cached;
      if (seq) this.readAhead(e);
    }
    else if (ref.encoding === 0 && !seq && lengthBytes * 4 <= e.lengthBytes && !this.fetches.has(entryKey(ref)) && !this.smallFetches.has(entryKey(ref))) {
      // A small random read of a plain entry: fetch just its blocks (time to first byte), alone on the
      // wire; the write-back behind it then fetches the whole entry.  Readers of the same extent that
      // arrive meanwhile start (and share) that whole-entry fetch.
      this.smallFetches.add(entryKey(ref));
      let data: Buffer;
      try {
        for (let attempt = 0; ; attempt++) {
          data = await this.fetch(this.targetOf(this.packInfo(ref.packId).target), packKey(this.fsUuid, ref.packId), ref.storedOffsetBytes + ref.skipBytes + fromBytes, lengthBytes);
          try {
            this.verifyRecalled(e, fromBytes, data);
            break;
          } catch (error) {
            this.counters.recallChecksumErrorCount += 1;
            log.error('recalled bytes failed verification', { ino: e.ino, offset: e.fileOffsetBytes + fromBytes, attempt, error: errorText(error) });
            if (attempt >= 1) throw error; // one fresh GET, for bytes damaged in transit
          }
        }
      } finally {
        this.smallFetches.delete(entryKey(ref));
      }
      this.counters.recalledBytes += data.length;
      this.considerWriteBack(e, false);
      return data;
    } else {
      const fetching = this.fetchEntries(e, seq);
      if (seq) this.readAhead(e);
      plain = await fetching;
    }
    this.considerWriteBack(e, seq, plain);
    return plain.subarray(ref.skipBytes + fromBytes, ref.skipBytes + fromBytes + lengthBytes);
  }

  /** Recalled plain bytes of `e` from `fromBytes` (relative, block aligned) against the block checksums it was written with. */
  private verifyRecalled(e: Extent, fromBytes: number, data: Buffer): void {
    const bad = firstBadBlock(data, e.checksums.subarray((fromBytes / BS) * 4, ((fromBytes + data.length) / BS) * 4));
    if (bad < 0 && data.length % BS === 0) return;
    throw new TierfsError('CHECKSUM', `checksum mismatch in inode ${e.ino} at offset ${e.fileOffsetBytes + fromBytes + Math.max(bad, 0) * BS} (recalled from pack ${e.pack?.packId})`);
  }

  /** One ranged GET under the recall deadline; failures become EIO-mapped errors, counted. */
  private async fetch(target: Target, key: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.counters.recallGetCount += 1;
    const signal = AbortSignal.timeout(this.options.recallTimeoutMs);
    const startedMs = performance.now();
    try {
      const data = await target.store.get(key, { offsetBytes, lengthBytes }, signal);
      target.lastError = undefined;
      const latencyMs = performance.now() - startedMs;
      this.recallLatency.record(latencyMs);
      this.onRecallLatency?.(latencyMs);
      log.debug('recall GET', { key, offsetBytes, lengthBytes, ms: Math.round(performance.now() - startedMs), readersWaiting: this.readersWaiting, fetching: this.fetches.size });
      return data;
    } catch (error) {
      this.counters.recallFailureCount += 1;
      const message = signal.aborted ? `the object tier did not answer within ${this.options.recallTimeoutMs} ms` : errorText(error);
      if (!(error instanceof ObjectStoreError && error.kind === 'NotFound')) target.lastError = message;
      log.error('recall failed', { target: target.name, key, offsetBytes, lengthBytes, error: message });
      if (error instanceof ObjectStoreError && (error.kind === 'Throttled' || error.kind === 'Transient'))
        throw new TierfsError('UNAVAILABLE', `recall: ${message}`, { cause: error });
      throw new TierfsError('IO', `recall of ${key}: ${message}`, { cause: error });
    }
  }

  /**
   * Plain bytes of `e`'s pack entry, shared with concurrent readers.  A
   * sequential reader's fetch takes the entries of the following extents
   * with it when they lie next to it in the same pack (one larger GET).
   */
  private fetchEntries(e: Extent, seq: boolean): Promise<Buffer> {
    const key = entryKey(e.pack!);
    const running = this.fetches.get(key);
    if (running) return running;
    const group = [e];
    if (seq) group.push(...this.followers(e, constants.recallReadaheadBytes));
    const fetched = this.fetchGroup(group);
    return fetched.get(key)!;
  }

  /** OBJECT extents after `e` in its file, whose entries follow e's in the same pack, not cached or fetching. */
  private followers(e: Extent, bytesMax: number): Extent[] {
    const out: Extent[] = [];
    let prev = e;
    const end = e.fileOffsetBytes + e.lengthBytes;
    let bytes = e.pack!.storedLengthBytes;
    for (const next of this.meta.extentsInRange(e.ino, end, end + bytesMax)) {
      const ref = next.pack;
      if (
        next.fileOffsetBytes !== prev.fileOffsetBytes + prev.lengthBytes ||
        residencyOf(next) !== 'OBJECT' ||
        ref!.packId !== prev.pack!.packId ||
        ref!.storedOffsetBytes !== prev.pack!.storedOffsetBytes + prev.pack!.storedLengthBytes ||
        ref!.skipBytes !== 0 ||
        bytes + ref!.storedLengthBytes > bytesMax ||
        this.cache.has(entryKey(ref!)) ||
        this.fetches.has(entryKey(ref!))
      )
        break;
      out.push(next);
      bytes += ref!.storedLengthBytes;
      prev = next;
    }
    return out;
  }

  /** Start fetching the entries a sequential reader will want next. */
  private readAhead(e: Extent): void {
    // Keep up to three readahead spans in flight ahead of a sequential reader, a GET per span where
    // the pack allows, so it never waits for a GET that starts only when it arrives.  Each file
    // keeps a frontier (how far fetches were started): every extent is looked up once, not per read.
    const end = e.fileOffsetBytes + e.lengthBytes;
    const span = constants.recallReadaheadBytes;
    const frontier = Math.max(this.readAheadFrontiers.get(e.ino) ?? end, end);
    if (frontier >= end + 2 * span) return;
    let reached = frontier;
    const ahead = this.meta.extentsInRange(e.ino, frontier, end + 3 * span);
    for (let i = 0; i < ahead.length; i++) {
      const x = ahead[i];
      if (this.fetches.size * constants.extentSizeBytesMax >= constants.recallCacheBytesMax / 2) break;
      reached = x.fileOffsetBytes + x.lengthBytes;
      if (residencyOf(x) !== 'OBJECT' || this.cache.has(entryKey(x.pack!)) || this.fetches.has(entryKey(x.pack!))) continue;
      const group = [x, ...this.followers(x, span)];
      for (const promise of this.fetchGroup(group).values()) promise.catch(() => undefined); // a reader that wants it reports it
      const last = group[group.length - 1];
      reached = last.fileOffsetBytes + last.lengthBytes;
      i += group.length - 1;
    }
    if (ahead.length === 0) reached = end + 3 * span; // a hole or the end of the file: nothing to fetch there
    this.readAheadFrontiers.set(e.ino, reached);
  }

  /** Fetch the entries of contiguous extents of one pack with one GET; each is verified against its extent's checksums. */
  private fetchGroup(group: Extent[]): Map<string, Promise<Buffer>> {
    const first = group[0].pack!;
    const lastRef = group[group.length - 1].pack!;
    const offsetBytes = first.storedOffsetBytes;
    const lengthBytes = lastRef.storedOffsetBytes + lastRef.storedLengthBytes - offsetBytes;
    const whole = (async () => {
      const { nonce, target } = this.packInfo(first.packId);
      for (let attempt = 0; ; attempt++) {
        const stored = await this.fetch(this.targetOf(target), packKey(this.fsUuid, first.packId), offsetBytes, lengthBytes);
        try {
          return group.map((x) => {
            const ref = x.pack!;
            const part = stored.subarray(ref.storedOffsetBytes - offsetBytes, ref.storedOffsetBytes - offsetBytes + ref.storedLengthBytes);
            const plain = decodeEntry(this.crypto, ref.packId, nonce, ref, part, ref.skipBytes + x.lengthBytes);
            this.verifyRecalled(x, 0, plain.subarray(ref.skipBytes, ref.skipBytes + x.lengthBytes));
            return plain;
          });
        } catch (error) {
          if (!(error instanceof TierfsError && error.code === 'CHECKSUM')) throw error;
          this.counters.recallChecksumErrorCount += 1;
          log.error('recalled bytes failed verification', { pack: first.packId, offsetBytes, lengthBytes, attempt, error: errorText(error) });
          if (attempt >= 1) throw error; // one fresh GET, for bytes damaged in transit
        }
      }
    })();
    const result = new Map<string, Promise<Buffer>>();
    group.forEach((x, i) => {
      const key = entryKey(x.pack!);
      const promise = whole.then((plains) => {
        this.cache.set(key, plains[i]);
        return plains[i];
      });
      promise.catch(() => undefined);
      const tracked = promise.finally(() => {
        if (this.fetches.get(key) === promise) this.fetches.delete(key); // not a newer fetch of the same entry
      });
      tracked.catch(() => undefined);
      this.fetches.set(key, promise);
      result.set(key, promise);
    });
    void whole.then(
      (plains) => (this.counters.recalledBytes += plains.reduce((sum, p) => sum + p.length, 0)),
      () => undefined,
    );
    return result;
  }

  /** Resolves once no reader waits for the object tier (or after half a second: background work must not starve). */
  private async quiet(): Promise<void> {
    for (let waitedMs = 0; this.readersWaiting > 0 && waitedMs < 500; waitedMs += 5) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  /** Write a recalled extent back to flash, unless a large sequential scan is passing through. */
  private considerWriteBack(e: Extent, seq: boolean, plain?: Buffer): void {
    const size = this.meta.getInode(e.ino)?.sizeBytes ?? 0;
    if (seq && size >= constants.sequentialScanBytesMin) {
      this.counters.straightThroughBytes += e.lengthBytes;
      return;
    }
    if (this.stopped || this.writeBacksInFlight >= 4 || this.flash.usedBytes + e.lengthBytes > this.highBytes) return;
    this.writeBacksInFlight += 1;
    void (async () => {
      try {
        if (!plain) await this.quiet(); // background work: a reader waiting for a GET goes first
        const whole = plain ?? (await this.fetchEntries(e, false));
        const mine = whole.subarray(e.pack!.skipBytes, e.pack!.skipBytes + e.lengthBytes);
        if (await this.flash.writeBack(e, Buffer.from(mine))) this.counters.writtenBackBytes += e.lengthBytes;
      } catch (error) {
        log.debug('write-back after recall skipped', { ino: e.ino, offset: e.fileOffsetBytes, error: errorText(error) });
      } finally {
        this.writeBacksInFlight -= 1;
      }
    })();
  }

  /** OBJECT → BOTH for every extent of a file (the recall command); makes room by evicting colder data if needed. */
  async recallFile(ino: Ino, { progress, signal }: JobControl = {}): Promise<number> {
    const cold = this.meta.fileExtents(ino).filter((e) => residencyOf(e) === 'OBJECT');
    const totalBytes = cold.reduce((sum, e) => sum + e.lengthBytes, 0);
    let doneBytes = 0;
    for (let i = 0; i < cold.length && !signal?.aborted; ) {
      const group = [cold[i], ...this.followers(cold[i], constants.recallReadaheadBytes)];
      const groupBytes = group.reduce((sum, e) => sum + e.lengthBytes, 0);
      if (this.flash.freeBytes < groupBytes + (this.flash.capacityBytes - this.highBytes)) await this.makeRoom();
      if (this.flash.freeBytes < groupBytes)
        throw new TierfsError('NO_SPACE', `recall: flash is full of data that cannot leave it (${doneBytes} of ${totalBytes} bytes recalled)`);
      const fetched = this.fetchGroup(group);
      for (const e of group) {
        const plain = await fetched.get(entryKey(e.pack!))!;
        const mine = Buffer.from(plain.subarray(e.pack!.skipBytes, e.pack!.skipBytes + e.lengthBytes));
        if (await this.flash.writeBack(e, mine)) this.counters.writtenBackBytes += e.lengthBytes;
        doneBytes += e.lengthBytes;
        progress?.({ doneBytes, totalBytes });
      }
      i += group.length;
    }
    await this.flash.commit();
    return doneBytes;
  }

  // ---- garbage collection ----

  /** Delete packs nothing references; repack sparse ones.  Returns the packs deleted. */
  collectGarbage(): Promise<number> {
    return this.exclusive(async () => {
      const dead = this.meta.sparsePacks(0, 1000).filter((p) => p.liveBytes === 0);
      if (dead.length > 0) {
        this.meta.mutate(() => dead.forEach((p) => this.meta.setPackState(p.packId, 'deleting')));
      }
      let deleted = 0;
      const doomed = this.meta.packsInState('deleting');
      if (doomed.length > 0) await this.flash.commit(); // no object goes before the commit that lets it go
      for (const p of doomed) {
        const target = this.targets.get(p.target);
        if (!target) continue; // a target this daemon cannot open: its packs wait
        try {
          await target.store.delete(packKey(this.fsUuid, p.packId));
        } catch (error) {
          target.lastError = errorText(error);
          log.warn('pack deletion failed; retried later', { pack: p.packId, target: target.name, error: target.lastError });
          continue;
        }
        this.meta.mutate(() => this.meta.deletePack(p.packId));
        this.packInfos.delete(p.packId);
        deleted += 1;
      }
      this.counters.gcDeletedPackCount += deleted;
      await this.repack();
      return deleted;
    });
  }

  /** Move the live extents of sparse packs into a new pack; the old ones become dead and go at the next pass. */
  private async repack(): Promise<void> {
    const candidates = this.meta.sparsePacks(constants.repackLiveFractionMax, 64).filter((p) => p.liveBytes > 0 && this.targets.has(p.target));
    const sparse = candidates.filter((p) => p.target === candidates[0]?.target); // a new pack goes where the old ones were
    const extents: Extent[] = [];
    let bytes = 0;
    const packs = new Set<PackId>();
    for (const p of sparse) {
      if (bytes >= this.options.packSizeBytesTarget) break;
      for (const e of this.meta.extentsOfPack(p.packId)) {
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
          const [read] = await this.flash.readExtents([e]);
          if (read instanceof Error) throw read;
          data = read;
        } else {
          const plain = await this.fetchGroup([e]).get(entryKey(e.pack!))!;
          data = Buffer.from(plain.subarray(e.pack!.skipBytes, e.pack!.skipBytes + e.lengthBytes));
        }
        items.push({ extent: e, data, compress: this.policyOf(e.ino).compress });
      } catch (error) {
        log.warn('repack skipped an extent', { ino: e.ino, offset: e.fileOffsetBytes, error: errorText(error) });
      }
    }
    const built = await this.buildPack(items, this.targetOf(sparse[0].target));
    if (!built) return;
    try {
      await this.uploadPack(built);
    } catch {
      return; // logged; the old packs stay live and are tried again at the next pass
    }
    this.counters.repackedPackCount += packs.size;
    log.info('packs repacked', { from: packs.size, to: built.writer.packId, extents: items.length });
  }

  // ---- start-up ----

  /** Finish what a crash interrupted: uploads that never committed, deletions that never finished. */
  private async recover(): Promise<void> {
    const unfinished = [...this.meta.packsInState('uploading'), ...this.meta.packsInState('deleting')];
    for (const p of unfinished) {
      const target = this.targets.get(p.target);
      try {
        if (!target) throw new Error(`target ${p.target} is not open`);
        await target.store.delete(packKey(this.fsUuid, p.packId));
        this.meta.mutate(() => this.meta.deletePack(p.packId));
        this.counters.orphanPackCount += p.state === 'uploading' ? 1 : 0;
      } catch (error) {
        if (target) target.lastError = errorText(error);
        this.meta.mutate(() => this.meta.setPackState(p.packId, 'deleting')); // GC retries it
        log.warn('could not delete an unfinished pack yet', { pack: p.packId, target: p.target, error: errorText(error) });
      }
    }
    if (unfinished.length > 0) {
      await this.flash.commit();
      log.info('unfinished packs from before a restart deleted', { count: unfinished.length });
    }
  }

  /**
   * List the pack prefix of every target: delete pack objects with no row
   * (orphans), count foreign objects.  A pack object whose row names another
   * target is left alone (never delete what a row still names).
   */
  async reconcile(): Promise<{ orphanCount: number; foreignCount: number }> {
    let orphanCount = 0;
    let foreignCount = 0;
    for (const target of [...this.targets.values()]) {
      for await (const item of target.store.list(packKeyPrefix(this.fsUuid))) {
        if (this.stopped) break;
        const packId = packIdOfKey(this.fsUuid, item.key);
        if (packId === undefined) {
          foreignCount += 1;
          log.warn('object in the pack prefix is not a tierfs pack; left alone', { target: target.name, key: item.key });
          continue;
        }
        if (this.meta.getPack(packId)) continue;
        await target.store.delete(item.key);
        orphanCount += 1;
        log.warn('orphan pack deleted', { target: target.name, key: item.key });
      }
    }
    this.counters.orphanPackCount += orphanCount;
    this.counters.foreignObjectCount = foreignCount;
    return { orphanCount, foreignCount };
  }

  // ---- reports ----

  /** Bytes only on flash whose policy lets them go now (the destage queue), as far as one scan sees. */
  destageBacklogBytes(): number {
    return this.planCold(this.clock(), false, Infinity, Infinity).reduce((sum, p) => sum + p.extent.lengthBytes, 0);
  }

  private sampleRates(): void {
    this.destageRate.sample(this.counters.destagedBytes);
    this.recallRate.sample(this.counters.recalledBytes);
  }

  /**
   * What-if from the recorded heat (tierfs policy simulate): another flash
   * size, and optionally another set of policies instead of the current ones.
   */
  async simulate(request: { flashSizeBytes: number; policies?: PolicyRecord[]; prices: Prices }): Promise<SimulationResult> {
    const policies = request.policies ? new PolicySet(request.policies, this.policies.defaultPolicy) : this.policies;
    const now = this.clock();
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

  /** Read an extent's copy in its pack and verify it against the extent's checksums (fsck --deep). */
  async verifyPackCopy(e: Extent): Promise<void> {
    assert.ok(e.pack !== null);
    this.cache.delete(entryKey(e.pack)); // the bucket's bytes, not a copy recalled earlier
    const plain = await this.fetchGroup([e]).get(entryKey(e.pack))!;
    this.verifyRecalled(e, 0, plain.subarray(e.pack.skipBytes, e.pack.skipBytes + e.lengthBytes));
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
      mode: '',
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
      target: this.targetStatus(this.targets.get('default')!),
      targets: [...this.targets.values()].map((t) => ({ name: t.name, ...this.targetStatus(t), ...this.meta.packsOfTarget(t.name) })),
      destage: {
        queueBytes: this.destageBacklogBytes(),
        bytesPerSecond: Math.round(this.destageRate.perSecond(this.counters.destagedBytes)),
      },
      recall: {
        bytesPerSecond: Math.round(this.recallRate.perSecond(this.counters.recalledBytes)),
        getCount: this.counters.recallGetCount,
        latencyMsP50: roundMs(this.recallLatency.percentile(50)),
        latencyMsP99: roundMs(this.recallLatency.percentile(99)),
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
