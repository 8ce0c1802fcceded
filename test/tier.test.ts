// The tiering engine over src/fs with a file target: destage, evict, recall,
// heat, policies, watermarks, GC, orphans and faults.
import t from 'tap';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { FaultyObjectStore, openObjectStore, RetryingObjectStore, describePack, packKeyPrefix } from '../src/tier/tier';
import { code, formatScratch, openTiered, pattern, readFile, scratchDir, writeFile } from './helpers/fs';

const MiB = 2 ** 20;

t.test('destage, release and recall: the bytes come back identical', async (t) => {
  const scratch = await formatScratch(t);
  const objectsDir = scratchDir(t);
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${objectsDir}` });
  const data = pattern(1, 5 * MiB + 12345);
  const ino = await writeFile(fs, 'big', data);
  t.match(tier.fileResidency(ino), { flashOnlyBytes: 5 * MiB + 16384, objectBytes: 0 });
  const destaged = await tier.destage({ ino });
  t.equal(destaged, 5 * MiB + 16384, 'every extent destaged');
  t.match(tier.fileResidency(ino), { bothBytes: 5 * MiB + 16384, flashOnlyBytes: 0 });
  const released = await tier.release(ino);
  t.equal(released.releasedBytes, 5 * MiB + 16384);
  t.match(tier.fileResidency(ino), { flashBytes: 0, objectOnlyBytes: 5 * MiB + 16384 });
  t.ok((await readFile(fs, ino)).equals(data), 'read back byte-identical from the pack');
  t.ok(tier.counters.recalledBytes >= data.length);
  const recalled = await tier.recallFile(ino);
  t.ok(recalled >= 0);
  await fs.fsync();
  t.ok((await readFile(fs, ino)).equals(data), 'and again after recall');
  const status = tier.status();
  t.equal(status.packs.count, 1);
  t.equal(status.packs.liveBytes, 5 * MiB + 16384);
  // The bucket alone describes the data.
  const keys: string[] = [];
  for await (const item of openObjectStore(`file://${objectsDir}`).list(packKeyPrefix(tier.fsUuid))) keys.push(item.key);
  t.equal(keys.length, 1);
  const object = await fsp.readFile(path.join(objectsDir, keys[0]));
  const described = describePack(object, { fsUuid: tier.fsUuid, key: null });
  t.equal(described.entries.length, 6);
  t.equal(described.entries.reduce((s, e) => s + e.lengthBytes, 0), 5 * MiB + 16384);
});

const hour = 3600_000;

t.test('heat: of a large file, only the hot head stays on flash', async (t) => {
  const scratch = await formatScratch(t, 256 * MiB);
  let now = 1_000_000_000;
  const { fs, tier, store } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 0 }, () => now);
  const data = pattern(2, 40 * MiB);
  const ino = await writeFile(fs, 'video', data);
  now += 2 * hour;
  const fh = await fs.open(ino, 0, ROOT);
  for (let i = 0; i < 3; i++) await fs.read(fh, 0, 4 * MiB); // the head is hot
  await fs.release(fh);
  tier.flushHeat();
  await tier.destage({ background: true });
  const r = tier.fileResidency(ino);
  t.equal(r.flashOnlyBytes, 4 * MiB, 'the hot 4 MiB were not destaged');
  t.equal(r.bothBytes, 36 * MiB, 'the cold rest was');
  // Flash over the high watermark: the coldest clean extents go first, the hot head stays.
  const used = store.usedBytes;
  const freed = await (tier as unknown as { evictTo(bytes: number): number }).evictTo(used - 20 * MiB);
  t.equal(freed, 20 * MiB);
  await fs.fsync();
  const after = tier.fileResidency(ino);
  t.equal(after.objectOnlyBytes, 20 * MiB);
  t.equal(after.flashOnlyBytes, 4 * MiB, 'hot head still on flash only');
  const meta = tier.flash.meta;
  const evicted = meta.fileExtents(ino).filter((e) => e.flashOffsetBytes === null).map((e) => e.fileOffsetBytes);
  t.ok(evicted.every((offset) => offset >= 4 * MiB), 'nothing of the head evicted');
  t.ok((await readFile(fs, ino)).equals(data), 'every byte reads back');
  t.ok(tier.fileResidency(ino).heat.count > 3, 'heat is counted');
});

t.test('policies: pin, never, all, minimum size, most specific match', async (t) => {
  const scratch = await formatScratch(t, 256 * MiB);
  let now = 1_000_000_000;
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 0 }, () => now);
  const policy = (name: string, pathGlob: string, mode: 'auto' | 'pin' | 'all' | 'never', extra = {}) =>
    tier.putPolicy({ name, pathGlob, mode, coolAfterMs: hour, sizeBytesMin: 0, target: 'default', compress: false, ...extra });
  await policy('pinned', '/pinned*', 'pin');
  await policy('local', '*.tmp', 'never');
  await policy('archive', '/archive-*', 'all');
  await policy('small', '/sm*', 'auto', { sizeBytesMin: 2 * MiB });
  await t.rejects(policy('bad name!', '/x', 'pin'), { code: 'USAGE' });
  await t.rejects(policy('x', 'relative/path', 'pin'), { code: 'USAGE', message: /starts at the root/ });
  await t.rejects(policy('x', '/x', 'sometimes' as 'pin'), { code: 'USAGE', message: /one of auto, pin, all, never/ });
  await t.rejects(policy('default', '/x', 'pin'), { code: 'USAGE', message: /reserved/ });
  await t.rejects(tier.deletePolicy('nope'), { code: 'NOT_FOUND' });
  const inos = {
    pinned: await writeFile(fs, 'pinned.db', pattern(3, 2 * MiB)),
    never: await writeFile(fs, 'scratch.tmp', pattern(4, 2 * MiB)),
    archive: await writeFile(fs, 'archive-2026.tar', pattern(5, 2 * MiB)),
    small: await writeFile(fs, 'small.txt', pattern(6, 1 * MiB)),
    plain: await writeFile(fs, 'plain.bin', pattern(7, 2 * MiB)),
  };
  t.equal(tier.fileResidency(inos.pinned).policy, 'pinned');
  t.equal(tier.fileResidency(inos.plain).policy, 'default');
  await tier.destage({ background: true });
  t.equal(tier.fileResidency(inos.archive).bothBytes, 2 * MiB, '"all" goes without cooling');
  t.equal(tier.fileResidency(inos.plain).bothBytes, 0, 'auto waits for its cooling period');
  now += 2 * hour;
  await tier.destage({ background: true });
  t.equal(tier.fileResidency(inos.plain).bothBytes, 2 * MiB, 'auto, once cold');
  t.equal(tier.fileResidency(inos.pinned).objectBytes, 0, 'pin stays');
  t.equal(tier.fileResidency(inos.never).objectBytes, 0, 'never stays');
  t.equal(tier.fileResidency(inos.small).objectBytes, 0, 'below the minimum size stays');
  await t.rejects(tier.destage({ ino: inos.pinned }), { code: 'INVALID', message: /pinned \(pin\) keeps \/pinned.db on flash/ });
  await t.rejects(tier.destage({ ino: inos.never }), { code: 'INVALID' });
  // Urgent destage (flash short) still leaves pin and never alone.
  await tier.destage({ urgent: true });
  t.equal(tier.fileResidency(inos.pinned).objectBytes, 0);
  t.equal(tier.fileResidency(inos.never).objectBytes, 0);
  t.equal(tier.fileResidency(inos.small).objectBytes, 0);
  await tier.deletePolicy('small');
  t.same(tier.listPolicies().map((p) => p.name), ['archive', 'local', 'pinned']);
});

t.test('a write stream larger than the flash tier completes by destaging, and every byte reads back', async (t) => {
  const scratch = await formatScratch(t, 32 * MiB);
  const { fs, tier, store } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packSizeBytesTarget: 16 * MiB });
  const data = pattern(8, 80 * MiB);
  const ino = await writeFile(fs, 'stream', data);
  t.ok(store.counters.spaceWaitCount > 0, 'writers waited for room (backpressure)');
  t.ok(tier.counters.destagedBytes >= 48 * MiB && tier.counters.evictedBytes > 0);
  t.ok(store.usedBytes <= store.capacityBytes);
  t.ok((await readFile(fs, ino)).equals(data), 'all 80 MiB read back');
});

t.test('flash full of pinned data: ENOSPC, nothing lost', async (t) => {
  const scratch = await formatScratch(t, 32 * MiB);
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}` });
  await tier.putPolicy({ name: 'all-pinned', pathGlob: '**', mode: 'pin', coolAfterMs: 0, sizeBytesMin: 0, target: 'default', compress: false });
  const { attr, fh } = await fs.create(ROOT_INO, 'f', 0o644, 2, ROOT);
  let written = 0;
  let failure = 'ok';
  while (written < 64 * MiB && failure === 'ok') {
    failure = await code(fs.write(fh, written, pattern(written, MiB)));
    if (failure === 'ok') failure = await code(fs.fsync(fh));
    if (failure === 'ok') written += MiB;
  }
  t.equal(failure, 'NO_SPACE');
  t.ok(written >= 24 * MiB, `${written >> 20} MiB fitted`);
  await fs.release(fh).catch(() => undefined);
  const back = await readFile(fs, attr.ino);
  t.ok(back.subarray(0, written).equals(Buffer.concat(Array.from({ length: written / MiB }, (_, i) => pattern(i * MiB, MiB)))), 'acknowledged bytes intact');
});
