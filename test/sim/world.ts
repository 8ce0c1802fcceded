// The simulated world the whole stack runs in: a bucket and a flash device that
// outlive crashes, and, per incarnation of the daemon, a gate through which every
// I/O passes.  The gate counts I/O and, at the point a seed chose, freezes: the
// call that hit it and every later one never complete, as if the process died
// there.  Everything waits on simulated time (latency, hangs, retries), and every
// choice comes from one seeded PRNG.
import type { SimulatedClock } from '../../src/clock';
import { SimulatedDevice } from '../../src/device/device';
import type { FlashDevice, FlashDeviceReport } from '../../src/device/device';
import { namesBelow, ObjectStoreError, type GetRange, type ObjectInfo, type ObjectStore, type PutCondition, type VersionedObject } from '../../src/tier/object_store';

/** A promise that never settles (each one new, so that nothing keeps a dead incarnation alive). */
const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

/** Counts of what the simulation did to tierfs. */
export type FaultKind =
  | 'storeError'
  | 'storeThrottle'
  | 'storeHang'
  | 'storeCorruptBody'
  | 'storeShortBody'
  | 'listingLag'
  | 'crash'
  | 'crashDuringRecovery'
  | 'unsyncedWritesDropped'
  | 'tornWrites'
  | 'bitFlip';

export type FaultCounts = Record<FaultKind, number>;

export function noFaults(): FaultCounts {
  return {
    storeError: 0,
    storeThrottle: 0,
    storeHang: 0,
    storeCorruptBody: 0,
    storeShortBody: 0,
    listingLag: 0,
    crash: 0,
    crashDuringRecovery: 0,
    unsyncedWritesDropped: 0,
    tornWrites: 0,
    bitFlip: 0,
  };
}

/** Per incarnation: counts I/O, and freezes the world at the chosen count. */
export class Gate {
  ioCount = 0;
  frozen = false;

  constructor(public crashAtIoCount = Infinity) {}

  /** Every I/O calls this first; false once the process is dead (the caller must never complete). */
  pass(): boolean {
    if (this.frozen) return false;
    this.ioCount += 1;
    if (this.ioCount >= this.crashAtIoCount) {
      this.frozen = true;
      return false;
    }
    return true;
  }
}

/** The flash device as one incarnation sees it: every call through the gate. */
export class GatedDevice implements FlashDevice {
  readonly direct = false;
  readonly io = 'memory';

  constructor(
    readonly inner: SimulatedDevice,
    private readonly gate: Gate,
  ) {}

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  allocBuffer(bytes: number): Buffer {
    return this.inner.allocBuffer(bytes);
  }

  read(buffer: Buffer, offsetBytes: number): Promise<void> {
    return this.gate.pass() ? this.inner.read(buffer, offsetBytes) : never();
  }

  readNow(buffer: Buffer, offsetBytes: number): void {
    this.inner.readNow(buffer, offsetBytes); // no state changes; a dead process's last microtasks may still read
  }

  write(buffer: Buffer, offsetBytes: number): Promise<void> {
    return this.gate.pass() ? this.inner.write(buffer, offsetBytes) : never();
  }

  sync(): Promise<void> {
    return this.gate.pass() ? this.inner.sync() : never();
  }

  release(offsetBytes: number, lengthBytes: number): void {
    if (!this.gate.frozen) this.inner.release(offsetBytes, lengthBytes);
  }

  report(): FlashDeviceReport {
    return this.inner.report();
  }

  async close(): Promise<void> {}
}

interface StoredObject {
  data: Buffer;
  /** When listings start to show it (eventual consistency of listings). */
  listedFromMs: number;
}

/** The bucket: survives every crash. */
export class SimBucket {
  readonly objects = new Map<string, StoredObject>();
  /** Deleted keys listings still show until then. */
  readonly deletedUntilMs = new Map<string, number>();
}

/** How often each fault hits a call (0 to 1), changed by the workload between fault episodes. */
export interface StoreFaultRates {
  error: number;
  throttle: number;
  hang: number;
  corruptBody: number;
  shortBody: number;
  /** Chance that a new object, or a deletion, shows in listings only some seconds later. */
  listingLag: number;
}

export const healthyStore: StoreFaultRates = { error: 0, throttle: 0, hang: 0, corruptBody: 0, shortBody: 0, listingLag: 0 };

/** An object target in memory, with latency, errors, throttling, hangs, damaged bodies and lagging listings. */
export class SimObjectStore implements ObjectStore {
  readonly description = 'sim://bucket';
  private readonly etags = new WeakMap<object, string>();
  private versions = 0;

  constructor(
    private readonly bucket: SimBucket,
    private readonly clock: SimulatedClock,
    private readonly random: () => number,
    private readonly rates: () => StoreFaultRates,
    private readonly gate: Gate,
    private readonly faults: FaultCounts,
  ) {}

  /** The latency of one request, then the faults its rates draw; false when the process died meanwhile. */
  private async request(op: string, key: string, signal: AbortSignal | undefined): Promise<boolean> {
    if (!this.gate.pass()) return never();
    const latencyMs = 1 + Math.floor(this.random() * 15);
    try {
      await this.clock.sleep(latencyMs, signal);
    } catch {
      throw new ObjectStoreError('Transient', `${op} ${key}: aborted by the caller`);
    }
    const rates = this.rates();
    const roll = this.random();
    if (roll < rates.error) {
      this.faults.storeError += 1;
      throw new ObjectStoreError('Transient', `${op} ${key}: InternalError (HTTP 500, simulated)`);
    }
    if (roll < rates.error + rates.throttle) {
      this.faults.storeThrottle += 1;
      throw new ObjectStoreError('Throttled', `${op} ${key}: SlowDown (HTTP 503, simulated)`);
    }
    if (roll < rates.error + rates.throttle + rates.hang) {
      this.faults.storeHang += 1;
      // Hangs until the caller's deadline aborts it.
      await new Promise<void>((_resolve, reject) => {
        const fail = () => reject(new ObjectStoreError('Transient', `${op} ${key}: timed out (simulated hang)`));
        if (signal?.aborted) fail();
        signal?.addEventListener('abort', fail, { once: true });
      });
    }
    return true;
  }

  async put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    await this.request('put', key, signal);
    const lagMs = this.random() < this.rates().listingLag ? 1000 + Math.floor(this.random() * 4000) : 0;
    if (lagMs > 0) this.faults.listingLag += 1;
    this.bucket.objects.set(key, { data: Buffer.concat(body), listedFromMs: this.clock.nowMs() + lagMs });
    this.bucket.deletedUntilMs.delete(key);
  }

  async get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    await this.request('get', key, signal);
    const object = this.bucket.objects.get(key);
    if (!object) throw new ObjectStoreError('NotFound', `get ${key}: no such object`);
    const offsetBytes = range?.offsetBytes ?? 0;
    const lengthBytes = range?.lengthBytes ?? object.data.length - offsetBytes;
    if (offsetBytes + lengthBytes > object.data.length) throw new ObjectStoreError('Fatal', `get ${key}: range ${offsetBytes}+${lengthBytes} beyond its ${object.data.length} bytes`);
    // Received in place when asked, as the real backends do: the recall pipeline's slabs are reused, and
    // the simulation's bytes (and the corruption it injects) must land in them.
    const data = range?.into && range.into.length >= lengthBytes ? range.into.subarray(0, lengthBytes) : Buffer.allocUnsafe(lengthBytes);
    object.data.copy(data, 0, offsetBytes, offsetBytes + lengthBytes);
    const rates = this.rates();
    const roll = this.random();
    if (roll < rates.shortBody && data.length > 1) {
      this.faults.storeShortBody += 1;
      throw new ObjectStoreError('Transient', `get ${key}: ${data.length >> 1} bytes received, ${data.length} expected (simulated)`);
    }
    if (roll < rates.shortBody + rates.corruptBody && data.length > 0) {
      this.faults.storeCorruptBody += 1;
      data[Math.floor(this.random() * data.length)] ^= 1 << Math.floor(this.random() * 8);
    }
    return data;
  }

  /** Versions are the object's identity in memory: every put makes a new one. */
  private etagOf(object: { data: Buffer }): string {
    let tag = this.etags.get(object);
    if (tag === undefined) this.etags.set(object, (tag = `"v${++this.versions}"`));
    return tag;
  }

  async getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    await this.request('get', key, signal);
    const object = this.bucket.objects.get(key);
    return object ? { body: Buffer.from(object.data), etag: this.etagOf(object) } : undefined;
  }

  async putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    await this.request('put', key, signal);
    const current = this.bucket.objects.get(key);
    if ('ifMatch' in condition ? !current || this.etagOf(current) !== condition.ifMatch : current !== undefined)
      throw new ObjectStoreError('PreconditionFailed', `put ${key}: condition not met (HTTP 412, simulated)`);
    const object = { data: Buffer.from(body), listedFromMs: this.clock.nowMs() };
    this.bucket.objects.set(key, object);
    this.bucket.deletedUntilMs.delete(key);
    return this.etagOf(object);
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    await this.request('head', key, signal);
    const object = this.bucket.objects.get(key);
    return object ? { key, sizeBytes: object.data.length } : undefined;
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    await this.request('list', prefix, signal);
    const now = this.clock.nowMs();
    const items: ObjectInfo[] = [];
    for (const [key, object] of this.bucket.objects) if (key.startsWith(prefix) && object.listedFromMs <= now) items.push({ key, sizeBytes: object.data.length });
    for (const [key, untilMs] of this.bucket.deletedUntilMs) if (key.startsWith(prefix) && untilMs > now && !this.bucket.objects.has(key)) items.push({ key, sizeBytes: 0 });
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* items;
  }

  async listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    const keys: string[] = [];
    for await (const item of this.list(prefix, signal)) keys.push(item.key);
    return namesBelow(prefix, keys);
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    await this.request('delete', key, signal);
    if (this.bucket.objects.delete(key) && this.random() < this.rates().listingLag) {
      this.faults.listingLag += 1;
      this.bucket.deletedUntilMs.set(key, this.clock.nowMs() + 1000 + Math.floor(this.random() * 4000));
    }
  }

  async close(): Promise<void> {}
}
