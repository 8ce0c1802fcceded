/**
 * What-if: given the recorded heat of every extent, a flash tier of another
 * size and other policies, where would the data live, what share of reads
 * would flash serve, and what would the object tier cost a month?
 *
 * The model, stated so its answers can be checked:
 * - An extent's read rate is estimated from its decayed heat count c (an
 *   access adds one, the count halves every half-life H): a steady rate r
 *   settles at c = r·H/ln 2, so r = c·ln 2 / H, as of now.
 * - Files under `pin` or `never`, and files below their policy's minimum
 *   size, stay on flash with no pack copy.  Extents under `all`, and `auto`
 *   extents idle longer than their cooling period, have a pack copy.
 * - Flash holds data up to the high watermark (eviction starts there): the
 *   data that must stay first, then the rest hottest first.  What does not
 *   fit is only in packs (urgent destage puts it there).  Kept-on-flash data
 *   larger than the flash tier is reported as overflowBytes.
 * - Hit rate: the share of expected read bytes whose extent is on flash;
 *   null when nothing was read.
 * - Cost a month: pack bytes at the storage price, one GET per expected read
 *   of an extent not on flash, its bytes at the egress price.  Compression,
 *   pack garbage and the PUTs of new data are left out (they depend on what
 *   is written next, which heat does not record).
 *
 * Memory is bounded by the number of heat buckets (logarithmic, 1/8 of a
 * doubling wide), not by the number of extents: extents are added one by
 * one into buckets, and the last bucket that fits partly is split in
 * proportion.
 */
import type { PolicyRecord } from '../meta/meta_store';

export interface Prices {
  currency: string;
  storagePerGiBMonth: number;
  getPer1000: number;
  egressPerGiB: number;
}

/** S3 Standard list prices in us-east-1; egress 0: an appliance in the bucket's region pays none. */
export const defaultPrices: Prices = { currency: 'USD', storagePerGiBMonth: 0.023, getPer1000: 0.0004, egressPerGiB: 0 };

export interface SimulatedExtent {
  lengthBytes: number;
  /** Time since its last access. */
  idleMs: number;
  /** Its heat count decayed to now. */
  countNow: number;
  fileSizeBytes: number;
  policy: PolicyRecord;
}

export interface SimulationResult {
  flashSizeBytes: number;
  /** Bytes on flash in steady state (at most the high watermark, unless kept-on-flash data overflows). */
  flashBytes: number;
  /** Bytes with a copy in a pack (BOTH + OBJECT). */
  objectBytes: number;
  flashOnlyBytes: number;
  bothBytes: number;
  objectOnlyBytes: number;
  /** Data that pin, never or a minimum size keeps on flash beyond its size. */
  overflowBytes: number;
  /** Share of expected read bytes served by flash (0..1), null with no reads recorded. */
  hitRate: number | null;
  readBytesPerMonth: number;
  missBytesPerMonth: number;
  getsPerMonth: number;
  cost: { currency: string; storage: number; requests: number; egress: number; total: number };
}

const MONTH_MS = 30 * 86_400_000;
const GIB = 2 ** 30;
const BUCKETS_PER_DOUBLING = 8;

interface Bucket {
  bytes: number;
  /** Σ rate × length: expected read bytes per ms. */
  readBytesPerMs: number;
  /** Σ rate: expected reads (GETs when missed) per ms. */
  readsPerMs: number;
  /** Bytes of this bucket that have a pack copy whatever flash holds. */
  packedBytes: number;
}

function emptyBucket(): Bucket {
  return { bytes: 0, readBytesPerMs: 0, readsPerMs: 0, packedBytes: 0 };
}

function add(into: Bucket, from: Bucket, fraction = 1): void {
  into.bytes += from.bytes * fraction;
  into.readBytesPerMs += from.readBytesPerMs * fraction;
  into.readsPerMs += from.readsPerMs * fraction;
  into.packedBytes += from.packedBytes * fraction;
}

export class Simulation {
  /** Data that stays on flash whatever its heat. */
  private readonly kept = emptyBucket();
  /** The rest, by heat bucket (higher index = hotter); -Infinity holds extents never read. */
  private readonly byHeat = new Map<number, Bucket>();

  constructor(
    private readonly options: { halfLifeMs: number; flashSizeBytes: number; watermarkHighPercent: number; prices: Prices },
  ) {}

  addExtent(e: SimulatedExtent): void {
    const { policy } = e;
    const count = e.countNow;
    const ratePerMs = (count * Math.LN2) / this.options.halfLifeMs;
    const contribution: Bucket = { bytes: e.lengthBytes, readBytesPerMs: ratePerMs * e.lengthBytes, readsPerMs: ratePerMs, packedBytes: 0 };
    if (policy.mode === 'pin' || policy.mode === 'never' || e.fileSizeBytes < policy.sizeBytesMin) {
      add(this.kept, contribution);
      return;
    }
    if (policy.mode === 'all' || e.idleMs >= policy.coolAfterMs) contribution.packedBytes = e.lengthBytes;
    const index = count > 0 ? Math.floor(Math.log2(count) * BUCKETS_PER_DOUBLING) : -Infinity;
    let bucket = this.byHeat.get(index);
    if (!bucket) this.byHeat.set(index, (bucket = emptyBucket()));
    add(bucket, contribution);
  }

  result(): SimulationResult {
    const { flashSizeBytes, watermarkHighPercent, prices } = this.options;
    const capacityBytes = Math.floor((flashSizeBytes * watermarkHighPercent) / 100);
    const onFlash = emptyBucket();
    add(onFlash, this.kept);
    const overflowBytes = Math.max(0, this.kept.bytes - flashSizeBytes);
    const evicted = emptyBucket();
    let roomBytes = Math.max(0, capacityBytes - this.kept.bytes);
    for (const index of [...this.byHeat.keys()].sort((a, b) => b - a)) {
      const bucket = this.byHeat.get(index)!;
      const fraction = bucket.bytes === 0 ? 1 : Math.min(1, roomBytes / bucket.bytes);
      add(onFlash, bucket, fraction);
      add(evicted, bucket, 1 - fraction);
      roomBytes = Math.max(0, roomBytes - bucket.bytes);
    }
    const total = emptyBucket();
    add(total, onFlash);
    add(total, evicted);
    // Evicted data is only in packs; data on flash has a pack copy when its policy destaged it.
    const bothBytes = onFlash.packedBytes;
    const objectOnlyBytes = evicted.bytes;
    const objectBytes = bothBytes + objectOnlyBytes;
    const readBytesPerMonth = total.readBytesPerMs * MONTH_MS;
    const missBytesPerMonth = evicted.readBytesPerMs * MONTH_MS;
    const getsPerMonth = evicted.readsPerMs * MONTH_MS;
    const storage = (objectBytes / GIB) * prices.storagePerGiBMonth;
    const requests = (getsPerMonth / 1000) * prices.getPer1000;
    const egress = (missBytesPerMonth / GIB) * prices.egressPerGiB;
    const round = (n: number) => Math.round(n);
    return {
      flashSizeBytes,
      flashBytes: round(onFlash.bytes),
      objectBytes: round(objectBytes),
      flashOnlyBytes: round(onFlash.bytes - bothBytes),
      bothBytes: round(bothBytes),
      objectOnlyBytes: round(objectOnlyBytes),
      overflowBytes,
      hitRate: total.readBytesPerMs > 0 ? onFlash.readBytesPerMs / total.readBytesPerMs : null,
      readBytesPerMonth: round(readBytesPerMonth),
      missBytesPerMonth: round(missBytesPerMonth),
      getsPerMonth: round(getsPerMonth),
      cost: { currency: prices.currency, storage, requests, egress, total: storage + requests + egress },
    };
  }
}

/** Prices from a config value: a JSON object with the fields of Prices, each optional; throws a message on a bad one. */
export function parsePrices(value: unknown): Prices {
  if (value === undefined) return defaultPrices;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('"prices" must be an object');
  const prices = { ...defaultPrices };
  for (const [key, v] of Object.entries(value)) {
    if (key === 'currency') {
      if (typeof v !== 'string' || !/^[A-Z]{3}$/.test(v)) throw new Error('"prices.currency" must be a three-letter code such as USD');
      prices.currency = v;
    } else if (key === 'storagePerGiBMonth' || key === 'getPer1000' || key === 'egressPerGiB') {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`"prices.${key}" must be a number >= 0`);
      prices[key] = v;
    } else throw new Error(`"prices.${key}" is not a price (known: currency, storagePerGiBMonth, getPer1000, egressPerGiB)`);
  }
  return prices;
}
