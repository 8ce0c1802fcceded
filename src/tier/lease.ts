/**
 * The writer lease: at most one appliance writes a file system's bucket.
 *
 * Two appliances that both believe they serve the same file system (an
 * instance replaced while the old one still runs, a restore beside the
 * original) would both append to its metadata log and collect its packs:
 * the bucket could no longer rebuild either.  The lease is one small object,
 * `<fs-uuid>/writer-lease`, written only with conditional puts:
 *
 * - **Taking it**: absent (If-None-Match: *), ours from before a restart,
 *   released by a clean stop, or held by another appliance that has not
 *   renewed it for a whole TTL *as this appliance observes it* (the same
 *   version seen unchanged for ttlMs on our monotonic clock: no two clocks
 *   are compared).  Every take is If-Match on the version read.
 * - **A lineage that is behind is never a writer**: the lease records the
 *   metadata generation (a restore makes a new one) and the last change the
 *   holder put in the bucket.  An appliance with an older generation, or the
 *   same generation but fewer changes uploaded, would write from a past the
 *   bucket has left: it is refused.
 * - **Renewing** every ttlMs / 3, If-Match on our own version.  Anything
 *   that writes the bucket asks `held()` first: true only within ttlMs / 2 of
 *   the start of the last renewal that landed, so an upload that starts in
 *   time lands before any other appliance can take over.
 * - **Losing it**: a renewal refused because the object changed means
 *   another appliance took the role.  `onLost` is called once; the caller
 *   stops writing the bucket for good and turns the file system read-only.
 * - A renewal after a retry whose first attempt did land is refused by its
 *   own condition: each write carries a nonce, and finding ours in the
 *   object means the write landed.
 * - On a target that ignores conditions (s3rver; some S3-compatible
 *   servers) the lease is still written and read, which refuses a second
 *   appliance in all but a race, and status says it is not enforced.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, Timer } from '../clock';
import { TierfsError } from '../errors';
import { log } from '../log';
import {
  conditionalWritesWork, ObjectStoreError, type GetRange, type ObjectInfo, type ObjectStore, type PutCondition, type VersionedObject,
} from './object_store';
import { errorText } from './tier_context';

const FORMAT = 'tierfs-writer-lease';

export function leaseKey(fsUuid: string): string {
  return `${fsUuid}/writer-lease`;
}

/** A probe key of its own (appliances starting or promoting at once must not race on one). */
export function leaseProbeKey(fsUuid: string): string {
  return `${fsUuid}/writer-lease-probe-${randomBytes(8).toString('hex')}`;
}

/** The lease object's contents. */
export interface LeaseRecord {
  format: typeof FORMAT;
  version: 1;
  fsUuid: string;
  /** The holder's appliance id (a setting of its metadata, new at every restore). */
  holder: string;
  /** Its host name, for messages. */
  host: string;
  ttlMs: number;
  /** The holder's metadata generation and the last change it put in the bucket. */
  generation: number;
  logSeq: number;
  /** A clean stop gave it up. */
  released: boolean;
  nonce: string;
  /** The holder's wall clock when written (for people; never compared). */
  writtenAt: string;
}

export interface LeaseOptions {
  store: () => ObjectStore;
  fsUuid: string;
  writerId: string;
  host: string;
  clock: Clock;
  ttlMs: number;
  generation: number;
  /** The last metadata change this appliance put in the bucket. */
  logSeq: () => number;
}

export interface LeaseStatus {
  /** acquiring: waiting for another appliance's lease; held: the writer; lost: another appliance took it; released: stopped. */
  state: 'acquiring' | 'held' | 'lost' | 'released';
  /** The target refuses conditional puts that do not hold (false: written and read, but a race is not excluded). */
  enforced: boolean;
  ttlMs: number;
  /** Since the start of the last renewal that landed (null: none yet). */
  renewedAgoMs: number | null;
  /** What the lease object said last: who holds it. */
  holderHost: string | null;
  holderId: string | null;
  lostReason: string | null;
}

function parseRecord(body: Buffer, key: string, fsUuid: string): LeaseRecord {
  let record: LeaseRecord;
  try {
    record = JSON.parse(body.toString('utf8')) as LeaseRecord;
  } catch {
    throw new TierfsError('CORRUPT', `the writer lease ${key} is not JSON; if no appliance serves this file system, delete it`);
  }
  if (record?.format !== FORMAT || record.version !== 1 || typeof record.holder !== 'string' || typeof record.ttlMs !== 'number')
    throw new TierfsError('CORRUPT', `the writer lease ${key} is not a tierfs lease (version 1); if no appliance serves this file system, delete it`);
  if (record.fsUuid !== fsUuid) throw new TierfsError('CORRUPT', `the writer lease ${key} names file system ${record.fsUuid}`);
  return record;
}

export class WriterLease {
  onLost: ((reason: string) => void) | undefined;
  private state: LeaseStatus['state'] = 'acquiring';
  private enforced = false;
  private etag: string | undefined;
  /** Monotonic time at which the last landed renewal was sent. */
  private confirmedMs: number | undefined;
  private seen: LeaseRecord | undefined;
  private lostReason: string | null = null;
  private timer: Timer | undefined;
  private renewing: Promise<void> | undefined;
  private readonly key: string;

  constructor(private readonly options: LeaseOptions) {
    this.key = leaseKey(options.fsUuid);
  }

  /**
   * Become the writer, waiting up to `waitMs` for another appliance's lease
   * to expire or be released; then renew it in the background.  False (and
   * onLost called) when another appliance still renews it, or this
   * appliance's metadata is behind the bucket's: it must not write.
   * Failures to reach the target throw.
   */
  async acquire(waitMs: number, { onlyFromFirstHolder = false }: { onlyFromFirstHolder?: boolean } = {}): Promise<boolean> {
    try {
      await this.acquireOrThrow(waitMs, onlyFromFirstHolder);
      return true;
    } catch (error) {
      if (!(error instanceof TierfsError && (error.code === 'BUSY' || error.code === 'READ_ONLY'))) throw error;
      this.lose(error.message);
      return false;
    }
  }

  /** `onlyFromFirstHolder` (promote): a lease that passes to another appliance while we wait is not ours to take after it. */
  private async acquireOrThrow(waitMs: number, onlyFromFirstHolder: boolean): Promise<void> {
    const { clock, fsUuid } = this.options;
    this.enforced = await conditionalWritesWork(this.options.store(), leaseProbeKey(fsUuid));
    if (!this.enforced) log.warn('the target ignores conditional writes: the writer lease is written and read, but two appliances starting at once are not excluded', { target: this.options.store().description });
    const deadlineMs = clock.monotonicMs() + waitMs;
    let observed: { etag: string; sinceMs: number } | undefined;
    let firstHolder: string | null | undefined;
    let told = false;
    for (;;) {
      const current = await this.options.store().getVersioned(this.key);
      if (!current) {
        firstHolder ??= null;
        if (await this.take({ ifNoneMatch: '*' })) break;
        continue;
      }
      const record = parseRecord(current.body, this.key, fsUuid);
      this.seen = record;
      if (firstHolder === undefined) firstHolder = record.holder;
      else if (onlyFromFirstHolder && record.holder !== firstHolder && record.holder !== this.options.writerId)
        throw new TierfsError('BUSY', `${record.host} (appliance ${record.holder}) took the writer role meanwhile`);
      if (record.holder !== this.options.writerId) this.refuseIfBehind(record);
      const nowMs = clock.monotonicMs();
      if (observed?.etag !== current.etag) observed = { etag: current.etag, sinceMs: nowMs };
      const expired = nowMs - observed.sinceMs >= record.ttlMs;
      if (record.holder === this.options.writerId || record.released || expired) {
        if (expired && !record.released && record.holder !== this.options.writerId)
          log.warn('taking the writer lease: its holder did not renew it for a whole TTL', { holder: record.host, ttlMs: record.ttlMs });
        if (await this.take({ ifMatch: current.etag })) break;
        continue;
      }
      if (nowMs >= deadlineMs)
        throw new TierfsError(
          'BUSY',
          `this file system is served by ${record.host} (appliance ${record.holder}), which renews its writer lease; stop it, or wait ${Math.ceil(record.ttlMs / 1000)} s after it stops answering`,
        );
      if (!told) log.warn('waiting for the writer lease another appliance holds', { holder: record.host, ttlMs: record.ttlMs, waitMs });
      told = true;
      await clock.sleep(Math.max(10, Math.min(1000, Math.floor(record.ttlMs / 4))));
    }
    this.state = 'held';
    this.timer = clock.every(Math.max(10, Math.floor(this.options.ttlMs / 3)), () => {
      if (!this.renewing && this.state === 'held') this.renewing = this.renew().finally(() => (this.renewing = undefined));
    });
  }

  /** Refuse a lineage the bucket has left behind (older generation, or fewer changes uploaded). */
  private refuseIfBehind(record: LeaseRecord): void {
    const { generation } = this.options;
    const seq = this.options.logSeq();
    if (record.generation > generation || (record.generation === generation && record.logSeq > seq))
      throw new TierfsError(
        'READ_ONLY',
        `${record.host} has written this file system's bucket since this appliance's metadata (generation ${record.generation} change ${record.logSeq}; here generation ${generation} change ${seq}): this copy must not write; restore it from the bucket`,
      );
  }

  private record(released: boolean): LeaseRecord {
    return {
      format: FORMAT,
      version: 1,
      fsUuid: this.options.fsUuid,
      holder: this.options.writerId,
      host: this.options.host,
      ttlMs: this.options.ttlMs,
      generation: this.options.generation,
      logSeq: this.options.logSeq(),
      released,
      nonce: randomBytes(12).toString('hex'),
      writtenAt: new Date(this.options.clock.nowMs()).toISOString(),
    };
  }

  /** One conditional write of our record; true when it landed (or a retried attempt of it had), false when the condition failed. */
  private async take(condition: PutCondition, released = false): Promise<boolean> {
    const record = this.record(released);
    const body = Buffer.from(`${JSON.stringify(record)}\n`);
    const sentMs = this.options.clock.monotonicMs();
    const store = this.options.store();
    try {
      this.etag = this.enforced ? await store.putIf(this.key, body, condition) : await this.putUnconditionally(body);
    } catch (error) {
      if (!(error instanceof ObjectStoreError && error.kind === 'PreconditionFailed')) throw error;
      const current = await store.getVersioned(this.key);
      if (!current || parseRecord(current.body, this.key, this.options.fsUuid).nonce !== record.nonce) return false;
      this.etag = current.etag; // an earlier attempt of this very write landed
    }
    this.confirmedMs = sentMs;
    this.seen = record;
    return true;
  }

  /** Where conditions are ignored: write, then read back our own version. */
  private async putUnconditionally(body: Buffer): Promise<string> {
    const store = this.options.store();
    await store.put(this.key, [body]);
    const current = await store.getVersioned(this.key);
    if (!current) throw new ObjectStoreError('Transient', `put ${this.key}: not found right after it was written`);
    return current.etag;
  }

  private async renew(): Promise<void> {
    try {
      if (!this.enforced) {
        // Conditions are ignored here: look before writing, or a take-over would be written over unseen.
        const current = await this.options.store().getVersioned(this.key);
        if (current?.etag !== this.etag) {
          const other = current ? parseRecord(current.body, this.key, this.options.fsUuid) : undefined;
          if (other?.holder !== this.options.writerId || !current) return this.lose(other ? `${other.host} (appliance ${other.holder}) took the writer lease` : 'the writer lease object was deleted');
        }
      }
      if (await this.take({ ifMatch: this.etag! })) return;
      const current = await this.options.store().getVersioned(this.key);
      const other = current ? parseRecord(current.body, this.key, this.options.fsUuid) : undefined;
      this.lose(other ? `${other.host} (appliance ${other.holder}) took the writer lease` : 'the writer lease object was deleted');
    } catch (error) {
      // The target did not answer: held() turns false once the last renewal is too old, and uploads wait.
      log.warn('renewing the writer lease failed; retried', { error: errorText(error), renewedAgoMs: this.renewedAgoMs() });
    }
  }

  private lose(reason: string): void {
    if (this.state === 'lost') return;
    this.state = 'lost';
    this.lostReason = reason;
    this.timer?.stop();
    log.error('this appliance is no longer the writer: the file system is read-only from now on', { reason });
    this.onLost?.(reason);
  }

  private renewedAgoMs(): number | null {
    return this.confirmedMs === undefined ? null : this.options.clock.monotonicMs() - this.confirmedMs;
  }

  /** May this appliance write the bucket now?  Within ttlMs / 2 of the start of the last renewal that landed. */
  held(): boolean {
    const ago = this.renewedAgoMs();
    return this.state === 'held' && ago !== null && ago < this.options.ttlMs / 2;
  }

  /** This appliance's id in the lease. */
  get writerId(): string {
    return this.options.writerId;
  }

  get lost(): boolean {
    return this.state === 'lost';
  }

  /** The fence every write to a target passes (see FencedObjectStore). */
  readonly fence: Fence = () => {
    if (this.state === 'lost') return { reason: `this appliance is no longer the writer: ${this.lostReason}`, final: true };
    if (this.state !== 'held') return { reason: `the writer lease is ${this.state}`, final: this.state === 'released' };
    if (!this.held()) return { reason: `the writer lease was last renewed ${this.renewedAgoMs()} ms ago (more than half its ${this.options.ttlMs} ms TTL)`, final: false };
    return undefined;
  };

  /** Stop renewing and leave the lease as it is (promote hands it to the serve that follows, which retakes its own lease at once). */
  async detach(): Promise<void> {
    this.timer?.stop();
    await this.renewing;
  }

  /** Give the role up at a clean stop (recording the last change uploaded), so another appliance may take it at once. */
  async release(): Promise<void> {
    this.timer?.stop();
    await this.renewing;
    if (this.state !== 'held') return;
    this.state = 'released';
    try {
      if (!(await this.take({ ifMatch: this.etag! }, true))) log.warn('the writer lease changed before it was released');
    } catch (error) {
      log.warn('releasing the writer lease failed; another appliance can take it once it expires', { error: errorText(error) });
    }
  }

  status(): LeaseStatus {
    return {
      state: this.state,
      enforced: this.enforced,
      ttlMs: this.options.ttlMs,
      renewedAgoMs: this.renewedAgoMs(),
      holderHost: this.seen?.host ?? null,
      holderId: this.seen?.holder ?? null,
      lostReason: this.lostReason,
    };
  }
}

/** What a write to a target asks first: undefined when it may go, else why not (and whether that is for good). */
export type Fence = () => { reason: string; final: boolean } | undefined;

/**
 * A target whose writes (put, conditional put, delete) go only while the
 * fence allows: the one place every upload, log append and GC deletion of
 * the engine passes.  Reads and listings are never held.  A final refusal
 * (the lease went to another appliance) is Fatal, so nothing retries it; a
 * renewal that is late is Transient.
 */
export class FencedObjectStore implements ObjectStore {
  readonly description: string;

  constructor(
    private readonly inner: ObjectStore,
    private readonly fence: Fence,
  ) {
    this.description = inner.description;
  }

  private check(what: string): void {
    const refusal = this.fence();
    if (refusal) throw new ObjectStoreError(refusal.final ? 'Fatal' : 'Transient', `${what}: ${refusal.reason}`);
  }

  async put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    this.check(`put ${key}`);
    return this.inner.put(key, body, signal);
  }

  async putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    this.check(`put ${key}`);
    return this.inner.putIf(key, body, condition, signal);
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    this.check(`delete ${key}`);
    return this.inner.delete(key, signal);
  }

  get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    return this.inner.get(key, range, signal);
  }

  getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    return this.inner.getVersioned(key, signal);
  }

  head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.inner.head(key, signal);
  }

  list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix, signal);
  }

  listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    return this.inner.listNames(prefix, signal);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
