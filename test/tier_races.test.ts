// The tiering engine where its passes meet the file system's own work: a write
// that lands while the pack holding the old bytes is uploading, eviction running
// beside a destage, and repack of encrypted, compressed packs.
import t from 'tap';
import path from 'node:path';
import { formatFlashPath, ROOT_CREDENTIALS as ROOT } from '../src/fs/fs';
import { openObjectStore, type ObjectStore } from '../src/tier/object_store';
import { formatScratch, openTiered, pattern, readFile, scratchDir, writeFile } from './helpers/fs';

const MiB = 2 ** 20;

/** An object store whose puts wait at a gate the test opens. */
function gatedStore(inner: ObjectStore): { store: ObjectStore; putStarted: Promise<void>; open: () => void; putCount: () => number } {
  let started!: () => void;
  const putStarted = new Promise<void>((resolve) => (started = resolve));
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let puts = 0;
  const store: ObjectStore = {
    description: inner.description,
    put: async (key, body, signal) => {
      puts += 1;
      started();
      await gate;
      return inner.put(key, body, signal);
    },
    get: (key, range, signal) => inner.get(key, range, signal),
    head: (key, signal) => inner.head(key, signal),
    getVersioned: (key, signal) => inner.getVersioned(key, signal),
    putIf: (key, body, condition, signal) => inner.putIf(key, body, condition, signal),
    list: (prefix, signal) => inner.list(prefix, signal),
    listNames: (prefix, signal) => inner.listNames(prefix, signal),
    delete: (key, signal) => inner.delete(key, signal),
    close: () => inner.close(),
  };
  return { store, putStarted, open, putCount: () => puts };
}

t.test('a write racing an upload in flight: the rewritten extents stay on flash, their pack bytes are garbage, the new bytes read back', async (t) => {
  const scratch = await formatScratch(t, 128 * MiB);
  const gated = gatedStore(openObjectStore(`file://${scratch.dir}/objects`));
  const { fs, tier } = await openTiered(t, scratch, { objects: gated.store });
  const original = pattern(1, 4 * MiB);
  const ino = await writeFile(fs, 'f', original);
  const destaging = tier.destage({ ino });
  await gated.putStarted; // the pack's row is committed and its upload has begun
  const rewritten = pattern(2, 2 * MiB);
  const fh = await fs.open(ino, 2 /* O_RDWR */, ROOT);
  await fs.write(fh, MiB, rewritten); // the second and third extents, while their old bytes upload
  await fs.fsync(fh);
  await fs.release(fh);
  gated.open();
  const destagedBytes = await destaging;
  t.equal(gated.putCount(), 1, 'one pack');
  t.equal(tier.counters.destageRacedCount, 2, 'the two rewritten extents were counted as raced');
  t.equal(destagedBytes, 2 * MiB, 'only the two untouched extents became BOTH');
  t.match(tier.fileResidency(ino), { bothBytes: 2 * MiB, flashOnlyBytes: 2 * MiB }, 'the rewritten ones stay only on flash');
  const expected = Buffer.concat([original.subarray(0, MiB), rewritten, original.subarray(3 * MiB)]);
  t.ok((await readFile(fs, ino)).equals(expected), 'the new bytes read back');
  const packs = tier.status().packs;
  t.equal(packs.liveBytes, 2 * MiB, 'the pack holds 2 MiB that files still use');
  t.ok(packs.garbageBytes > 0, `and the raced bytes as garbage (${packs.garbageBytes})`);
  await tier.release(ino);
  t.match(tier.fileResidency(ino), { objectOnlyBytes: 2 * MiB, flashOnlyBytes: 2 * MiB });
  t.ok((await readFile(fs, ino)).equals(expected), 'and again with the clean extents read from the pack');
});

t.test('eviction beside a destage: both finish, every byte reads back, totals equal a scan', async (t) => {
  const scratch = await formatScratch(t, 96 * MiB);
  const gated = gatedStore(openObjectStore(`file://${scratch.dir}/objects`));
  const opened = await openTiered(t, scratch, { objects: gated.store, watermarkHighPercent: 60, watermarkLowPercent: 40 });
  const { fs, tier } = opened;
  // Some data already in packs (BOTH), then more to destage while eviction runs.
  const cold = pattern(3, 24 * MiB);
  const hot = pattern(4, 24 * MiB);
  const coldIno = await writeFile(fs, 'cold', cold);
  gated.open();
  t.equal(await tier.destage({ ino: coldIno }), 24 * MiB);
  const hotIno = await writeFile(fs, 'hot', hot);
  const destaging = tier.destage({ ino: hotIno });
  const evicting = tier.makeRoom(); // not behind the destage: a writer short of flash must not wait for it
  const [destagedBytes, freedBytes] = await Promise.all([destaging, evicting]);
  t.equal(destagedBytes, 24 * MiB, 'the destage finished');
  t.ok(freedBytes > 0, `eviction freed ${freedBytes} bytes meanwhile`);
  t.ok(opened.store.usedBytes <= tier.highBytes, 'flash use is below the high watermark');
  t.ok((await readFile(fs, coldIno)).equals(cold), 'the evicted file reads back from its pack');
  t.ok((await readFile(fs, hotIno)).equals(hot), 'the destaged file reads back');
  t.same(opened.meta.residencyTotals(), opened.meta.residencyTotalsScanned(), 'the running totals equal a scan');
  t.same((await opened.store.verifyAll()).checksumErrors, []);
});

t.test('repack of encrypted, compressed packs: the live extents move to a new pack, readable; the old packs go', async (t) => {
  const dir = scratchDir(t);
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  const key = Buffer.alloc(32, 7);
  await formatFlashPath(flash, meta, { sizeBytes: 96 * MiB, target: `file://${dir}/objects`, encryptionKey: key });
  const { fs, tier } = await openTiered(t, { dir, flash, meta }, { encryptionKey: key, compress: true });
  const text = (seed: number) => {
    const line = `${seed}: a compressible line of text that repeats\n`;
    return Buffer.from(line.repeat(Math.ceil((4 * MiB) / line.length))).subarray(0, 4 * MiB);
  };
  const inos = [];
  for (let i = 0; i < 4; i++) inos.push(await writeFile(fs, `f${i}`, text(i)));
  for (const ino of inos) await tier.destage({ ino });
  const before = tier.status().packs;
  t.equal(before.count, 4, 'four packs');
  t.ok(before.storedBytes < 4 * MiB, `compressed: ${before.storedBytes} bytes stored for 16 MiB`);
  // Three of the four files go: their packs die; the fourth's pack stays live.  Half of a fifth's pack: sparse.
  const half = await writeFile(fs, 'half', text(9));
  await tier.destage({ ino: half });
  const fh = await fs.open(half, 2 /* O_RDWR */, ROOT);
  await fs.setattr(half, { sizeBytes: MiB }, ROOT, fh); // three quarters of its pack become garbage
  await fs.release(fh);
  await tier.release(half); // its live extent is now only in the sparse pack
  await fs.fsync();
  await tier.collectGarbage(); // repacks the sparse pack (its live extent fetched, decrypted, inflated)
  t.equal(tier.counters.repackedPackCount, 1, 'the sparse pack was repacked');
  await tier.collectGarbage(); // the old pack, now dead, goes
  const after = tier.status().packs;
  t.equal(after.count, 5, 'four originals and the new pack; the sparse one deleted');
  const halfInPacks = tier.fileResidency(half).objectBytes;
  t.ok(halfInPacks > 0, `what is left of the truncated file is in the new pack (${halfInPacks} bytes)`);
  t.equal(after.liveBytes, 4 * 4 * MiB + halfInPacks, `and every live byte of the packs is a byte of a file (${after.liveBytes})`);
  t.same(tier.fileResidency(half).flashOnlyBytes + halfInPacks, MiB);
  t.ok((await readFile(fs, half)).equals(text(9).subarray(0, MiB)), 'the repacked extent reads back');
  for (let i = 0; i < 4; i++) t.ok((await readFile(fs, inos[i])).equals(text(i)), `f${i} reads back`);
  tier.dropRecallCache();
  await tier.release(half);
  t.ok((await readFile(fs, half)).equals(text(9).subarray(0, MiB)), 'and again, recalled from the new pack');
});
