// The flash store: superblock refusals, checksums on every read, space accounting,
// copy-on-write reuse of space, and the allocator.
import t from 'tap';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import c from 'node:constants';
import fs from 'node:fs';
import path from 'node:path';
import { constants } from '../src/constants';
import { createFlashFile, openFlashDevice, SimulatedDevice } from '../src/device/device';
import Database from 'better-sqlite3';
import { formatFileSystem, formatFlashPath, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type Ino } from '../src/fs/fs';
import { schemaVersion, SqliteMetaStore } from '../src/meta/sqlite_meta_store';
import type { Extent, PackId } from '../src/meta/meta_store';
import { Allocator } from '../src/store/allocator';
import { encodeSuperblock, formatVersion, newSuperblock } from '../src/store/superblock';
import { clockAt, code, formatScratch, openScratch, pattern, prng, scratchDir, seedFromEnv } from './helpers/fs';

function writeAt(file: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
}

t.test('format refuses what is not free to take, and open refuses what is not ours', async (t) => {
  const dir = scratchDir(t);
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  createFlashFile(flash, 32 * 2 ** 20);
  writeAt(flash, 0, Buffer.from('ext4 or something else'));
  let device = openFlashDevice(flash);
  t.equal(await code(formatFileSystem(device, meta)), 'NOT_OURS', 'foreign data is refused');
  t.notOk(fs.existsSync(path.join(meta, 'tierfs.db')), 'nothing written');
  t.equal(await code(formatFileSystem(device, meta, { force: true })), 'ok', '--force takes it');
  t.equal(await code(formatFileSystem(device, meta)), 'EXISTS', 'double format is refused');
  await device.close();

  const other = path.join(dir, 'other');
  createFlashFile(other, 32 * 2 ** 20);
  device = openFlashDevice(other);
  await formatFileSystem(device, path.join(dir, 'meta2'));
  await device.close();
  t.equal(await code(openFileSystem(other, meta)), 'NOT_OURS', 'flash and metadata of different file systems');

  const header = Buffer.alloc(constants.superblockSizeBytes);
  fs.readSync(fs.openSync(flash, 'r'), header, 0, header.length, 0);
  const flipped = Buffer.from(header);
  flipped[20] ^= 1;
  writeAt(flash, 0, flipped);
  t.equal(await code(openFileSystem(flash, meta)), 'CORRUPT', 'a corrupt superblock');
  const newer = newSuperblock(32 * 2 ** 20, 0);
  const block = Buffer.alloc(constants.superblockSizeBytes);
  encodeSuperblock({ ...newer, formatVersion: formatVersion + 1 }, block);
  writeAt(flash, 0, block);
  t.equal(await code(openFileSystem(flash, meta)), 'VERSION', 'a newer format');
  writeAt(flash, 0, Buffer.from('ext4 or something else'));
  t.equal(await code(openFileSystem(flash, meta)), 'NOT_OURS', 'no superblock, something else there');
  writeAt(flash, 0, Buffer.alloc(constants.superblockSizeBytes));
  t.equal(await code(openFileSystem(flash, meta).then((o) => o.close())), 'ok', 'all zeros with no data mapped there: a new disk, adopted (replication.test.ts checks more)');
  t.equal(await code(openFileSystem(flash, path.join(dir, 'nothing'))), 'NOT_FOUND', 'missing metadata');

  const tiny = path.join(dir, 'tiny');
  createFlashFile(tiny, 1 * 2 ** 20);
  device = openFlashDevice(tiny);
  t.equal(await code(formatFileSystem(device, path.join(dir, 'meta3'))), 'INVALID', 'too small');
  await device.close();
  t.throws(() => openFlashDevice(path.join(dir, 'absent')), { code: 'NOT_FOUND' });
  t.throws(() => openFlashDevice(dir), { code: 'NOT_OURS' }, 'a directory is not a flash tier');
});

t.test('a corrupted block reads as EIO, is counted, and fsck names it', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openScratch(t, scratch);
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const data = pattern(1, 3 * 2 ** 20);
  await opened.fs.write(fh, 0, data);
  await opened.fs.fsync(fh);
  const [extent] = opened.meta.extentsInRange(attr.ino, 2 ** 20 + 5000, 2 ** 20 + 5001);
  assert.ok(extent.flashOffsetBytes !== null);
  const victim = extent.flashOffsetBytes + (2 ** 20 + 5000 - extent.fileOffsetBytes);
  const original = Buffer.alloc(1);
  fs.readSync(fs.openSync(scratch.flash, 'r'), original, 0, 1, victim);
  writeAt(scratch.flash, victim, Buffer.from([original[0] ^ 0x40]));
  t.equal(await code(opened.fs.read(fh, 2 ** 20, 2 ** 20)), 'CHECKSUM', 'the damaged range fails');
  t.equal(opened.store.counters.checksumErrorCount, 1, 'and is counted');
  t.same(await opened.fs.read(fh, 0, 4096), data.subarray(0, 4096), 'other blocks still read');
  t.same(await opened.fs.read(fh, 2 ** 20 + 8192, 4096), data.subarray(2 ** 20 + 8192, 2 ** 20 + 12288), 'even in the same extent');
  const report = await opened.store.verifyAll();
  t.equal(report.checksumErrors.length, 1, 'fsck finds exactly the damaged extent');
  t.equal(report.checksumErrors[0].ino, attr.ino);
  await opened.fs.write(fh, 2 ** 20, data.subarray(2 ** 20, 2 ** 21));
  t.same(await opened.fs.read(fh, 2 ** 20, 2 ** 20), data.subarray(2 ** 20, 2 ** 21), 'rewriting the range heals it');
  await opened.fs.release(fh);
});

t.test('the extents of a range in a fragmented, sparse file: every one overlapping it, from the one across its start', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openScratch(t, scratch);
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const KiB = 1024;
  // 1 MiB extents with holes between them, then 4 KiB rewrites and writes of 12 KiB astride their edges.
  for (let mib = 0; mib < 6; mib += 2) await opened.fs.write(fh, mib * 2 ** 20, pattern(mib, 2 ** 20));
  let seed = 0x9e3779b9;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % 2 ** 31;
  };
  for (let i = 0; i < 300; i++) await opened.fs.write(fh, (next() % (6 * 256)) * 4 * KiB, Buffer.alloc(i % 3 === 0 ? 12 * KiB : 4 * KiB, i));
  await opened.fs.fsync(fh);
  const all = opened.meta.fileExtents(attr.ino);
  t.ok(all.length > 100, `fragmented: ${all.length} extents (at most extentsPerSlotMax a MiB)`);
  let checked = 0;
  for (let i = 0; i < 2000; i++) {
    const start = next() % (7 * 2 ** 20);
    const end = start + 1 + (next() % (3 * 64 * KiB));
    const expected = all.filter((e) => e.fileOffsetBytes < end && e.fileOffsetBytes + e.lengthBytes > start).map((e) => e.fileOffsetBytes);
    const got = opened.meta.extentsInRange(attr.ino, start, end).map((e) => e.fileOffsetBytes);
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      t.same(got, expected, `extents of [${start}, ${end})`);
      break;
    }
    checked += 1;
  }
  t.equal(checked, 2000, 'every range: the extents a scan of the whole file finds, in order');
  await opened.fs.release(fh);
});

t.test('a write-out slice mapped at once makes the rows, frees and totals that mapping its pieces one by one makes', async (t) => {
  // Two file systems, the same extents seeded in each (flash only, in a pack and on flash, in a pack only);
  // random pieces mapped one by one (mapRange) in one and as a slice (mapPieces) in the other.
  const BS = constants.blockSizeBytes;
  const perSlot = constants.extentSizeBytesMax / BS;
  const seed = seedFromEnv();
  t.comment(`seed ${seed} (TIERFS_SEED replays it)`);
  const random = prng(seed);
  const below = (n: number) => Math.floor(random() * n);
  const clock = clockAt(() => 1_700_000_000_000);
  interface Internals {
    mapRange(ino: Ino, first: number, runs: { startBlock: number; blockCount: number }[], checksums: Buffer): void;
    mapPieces(ino: Ino, pieces: { place: number; firstBlock: number; blockCount: number; startBlock: number }[], checksums: Buffer): void;
    pendingFree: { flashOffsetBytes: number; lengthBytes: number }[];
  }
  const one = await openScratch(t, await formatScratch(t), clock);
  const sliced = await openScratch(t, await formatScratch(t), clock);
  for (const opened of [one, sliced]) {
    opened.meta.mutate(() => opened.meta.putPack({
      packId: 'p1' as PackId, state: 'live', storedBytes: 1 << 24, logicalBytes: 1 << 24, liveBytes: 0, createdMs: 1, nonce: null, target: 'default', deadSeq: null,
    }));
  }
  let differences = 0;
  const rounds = 150;
  for (let round = 0; round < rounds && differences === 0; round++) {
    const slots = 1 + below(4);
    // Seeded extents: runs of blocks inside each slot, with holes, of every residency.
    const seeded: Extent[] = [];
    let flashBlock = 10_000 + round * 4096;
    for (let slot = 0; slot < slots; slot++) {
      for (let b = slot * perSlot + below(3); b < (slot + 1) * perSlot; ) {
        const length = Math.min(1 + below(perSlot / 2), (slot + 1) * perSlot - b);
        const kind = below(4);
        const checksums = Buffer.alloc(length * 4);
        for (let i = 0; i < checksums.length; i++) checksums[i] = below(256);
        seeded.push({
          ino: 0 as Ino, fileOffsetBytes: b * BS, lengthBytes: length * BS, flashOffsetBytes: kind === 3 ? null : (flashBlock += length + below(2)) * BS,
          checksums, accessedMs: 1000 + below(1000), heatCount: below(5),
          pack: kind >= 2 ? { packId: 'p1' as PackId, entryIndex: below(100), storedOffsetBytes: below(1 << 20), storedLengthBytes: 1 << 16, encoding: below(4), skipBytes: below(8) * BS } : null,
        });
        b += length + (below(3) === 0 ? below(8) : 0);
      }
    }
    // Pieces: by offset, inside a slot, apart or touching (on other flash, or across a slot's edge); some on the
    // flash right after the extent or piece they follow (they extend it, but not across a slot's edge).
    const pieces: { place: number; firstBlock: number; blockCount: number; startBlock: number }[] = [];
    let place = 0;
    for (let b = below(4); b < slots * perSlot; b += below(3) === 0 ? 0 : 2 + below(perSlot / 4)) {
      const blockCount = Math.min(1 + (below(4) === 0 ? below(20) : 0), perSlot - (b % perSlot));
      const last = pieces[pieces.length - 1];
      const ending = seeded.find((e) => e.fileOffsetBytes + e.lengthBytes === b * BS && e.pack === null && e.flashOffsetBytes !== null);
      const after = last && last.firstBlock + last.blockCount === b ? last.startBlock + last.blockCount : ending && (ending.flashOffsetBytes! + ending.lengthBytes) / BS;
      const startBlock = after !== undefined && below(2) === 0 ? after : 1_000_000 + round * 4096 + 2 * place;
      pieces.push({ place, firstBlock: b, blockCount, startBlock });
      place += blockCount;
      b += blockCount;
    }
    const checksums = Buffer.alloc(place * 4);
    for (let i = 0; i < checksums.length; i++) checksums[i] = below(256);
    const outcomes = [one, sliced].map((opened, which) => {
      const store = opened.store as unknown as Internals;
      let ino!: Ino;
      opened.meta.mutate(() => {
        ino = opened.meta.createInode({ mode: 0o100644, uid: 0, gid: 0, nlink: 1, sizeBytes: slots * constants.extentSizeBytesMax, rdev: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n, btimeNs: 0n });
        for (const e of seeded) opened.meta.putExtent({ ...e, ino });
      });
      store.pendingFree.length = 0;
      opened.meta.mutate(() => {
        if (which === 0) {
          for (const p of pieces) store.mapRange(ino, p.firstBlock * BS, [{ startBlock: p.startBlock, blockCount: p.blockCount }], checksums.subarray(p.place * 4, (p.place + p.blockCount) * 4));
        } else store.mapPieces(ino, pieces, checksums);
      });
      const freed = store.pendingFree.map((r) => `${r.flashOffsetBytes}+${r.lengthBytes}`).sort();
      store.pendingFree.length = 0;
      const rows = opened.meta.fileExtents(ino).map((e) => ({ ...e, ino: 0, checksums: e.checksums.toString('hex') }));
      return { rows, freed, totals: opened.meta.residencyTotals(), scanned: opened.meta.residencyTotalsScanned(), live: opened.meta.getPack('p1' as PackId)!.liveBytes };
    });
    const [a, b] = outcomes;
    if (JSON.stringify(a.rows) !== JSON.stringify(b.rows)) {
      differences += 1;
      t.same(b.rows, a.rows, `round ${round}: the same extents`);
    }
    if (JSON.stringify(a.freed) !== JSON.stringify(b.freed)) {
      differences += 1;
      t.same(b.freed, a.freed, `round ${round}: the same flash freed`);
    }
    if (JSON.stringify([a.totals, a.live]) !== JSON.stringify([b.totals, b.live]) || JSON.stringify(b.totals) !== JSON.stringify(b.scanned)) {
      differences += 1;
      t.same([b.totals, b.live, b.scanned], [a.totals, a.live, a.totals], `round ${round}: the same residency totals and pack bytes, as a scan counts them`);
    }
  }
  t.equal(differences, 0, `${rounds} rounds of random extents and pieces: the same outcome either way`);
});

t.test('extent lookups inside one extent are answered from memory, and never stale: a change, a rolled-back change, a full cache', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openScratch(t, scratch);
  const meta = opened.meta as SqliteMetaStore;
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  for (let mib = 0; mib < 3; mib++) await opened.fs.write(fh, mib * 2 ** 20, pattern(mib, 2 ** 20));
  await opened.fs.fsync(fh);
  const ino = attr.ino;
  const at = (offset: number) => meta.extentsInRange(ino, offset, offset + 4096);
  const first = at(4096)[0];
  const before = meta.extentCacheCounts();
  t.equal(at(8192)[0], first, 'a second read inside the same extent gets the same (cached) extent');
  t.equal(meta.extentCacheCounts().hitCount, before.hitCount + 1, 'counted as a hit');
  t.throws(() => {
    (first as { flashOffsetBytes: number | null }).flashOffsetBytes = 0;
  }, TypeError, 'a shared extent cannot be changed by one caller');
  t.same(meta.extentsInRange(ino, 2 ** 20 - 4096, 2 ** 20 + 4096).map((e) => e.fileOffsetBytes), [0, 2 ** 20], 'a range across a boundary: both extents');

  // A change through the store: the next lookup sees it.
  meta.mutate(() => meta.putExtent({ ...first, heatCount: first.heatCount + 7 }));
  t.equal(at(4096)[0].heatCount, first.heatCount + 7, 'after a change the lookup reads the new row');

  // A change inside a mutation that is rolled back, looked up inside it: after the rollback, the old row again.
  const now = at(4096)[0];
  t.throws(() =>
    meta.mutate(() => {
      meta.putExtent({ ...now, heatCount: 999 });
      t.equal(at(4096)[0].heatCount, 999, 'inside the mutation the change is visible');
      throw new Error('roll back');
    }),
  );
  t.equal(at(4096)[0].heatCount, now.heatCount, 'after the rollback the row as it was, not the undone one');

  // More extents than the cache holds: it is refilled, stays bounded, answers right.
  const many = await opened.fs.create(ROOT_INO, 'many', 0o644, c.O_RDWR, ROOT);
  const count = constants.metaExtentCacheCountMax + 100;
  for (let i = 0; i < count; i += 1) await opened.fs.write(many.fh, i * 2 ** 20, pattern(i, 4096)); // one block a MiB: one extent each
  await opened.fs.fsync(many.fh);
  for (let i = 0; i < count; i += 1) {
    const got = meta.extentsInRange(many.attr.ino, i * 2 ** 20, i * 2 ** 20 + 4096);
    if (got.length !== 1 || got[0].fileOffsetBytes !== i * 2 ** 20) {
      t.fail(`block ${i}: ${JSON.stringify(got.map((e) => e.fileOffsetBytes))}`);
      break;
    }
  }
  t.ok(meta.extentCacheCounts().extentCount <= constants.metaExtentCacheCountMax, `bounded: ${meta.extentCacheCounts().extentCount} extents held`);
  t.same(meta.extentsInRange(many.attr.ino, 4096, 8192), [], 'a hole between cached extents reads as a hole');
  const buffer = Buffer.alloc(4096);
  await opened.fs.read(fh, 4096, 4096, buffer);
  t.ok(buffer.equals(pattern(0, 2 ** 20).subarray(4096, 8192)), 'and the file reads back through it');
  await opened.fs.release(many.fh);
  await opened.fs.release(fh);
});

t.test('a full flash tier answers NO_SPACE, and overwrites reuse space after commit', async (t) => {
  const scratch = await formatScratch(t, 16 * 2 ** 20);
  const opened = await openScratch(t, scratch);
  const { fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const chunk = Buffer.alloc(2 ** 20, 3);
  let written = 0;
  let failure = 'ok';
  while (failure === 'ok' && written < 32 * 2 ** 20) {
    failure = await code(opened.fs.write(fh, written, chunk));
    if (failure === 'ok') written += chunk.length;
  }
  t.equal(failure, 'NO_SPACE', 'writes past capacity fail cleanly');
  t.ok(written >= 14 * 2 ** 20, `most of the tier was usable (${written} bytes)`);
  await opened.fs.setattr((await opened.fs.lookupPath('/f', ROOT)).ino, { sizeBytes: 4 * 2 ** 20 }, ROOT);
  for (let i = 0; i < 40; i++) await opened.fs.write(fh, (i % 4) * 2 ** 20, chunk);
  t.pass('forty overwrites of a 4 MiB file fit in a 16 MiB tier: freed blocks come back');
  await opened.fs.release(fh);
});

t.test('writes never half-apply when the device fails', async (t) => {
  const device = new SimulatedDevice(32 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(device, meta);
  const opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await opened.fs.write(fh, 0, Buffer.alloc(8192, 1));
  await opened.fs.fsync(fh); // on flash: the next small write reads its edge block from there
  const free = opened.store.freeBytes;
  device.failAfterCount = 1; // the read-modify-write read succeeds, the write-out fails
  t.equal(await code(opened.fs.write(fh, 100, Buffer.alloc(10, 2))), 'ok', 'write-behind: acknowledged before the device answers');
  t.equal(await code(opened.fs.flush(fh)), 'IO', 'the failure is reported by the next close');
  t.equal(await code(opened.fs.flush(fh)), 'ok', 'once');
  device.failAfterCount = Infinity;
  t.equal(opened.store.freeBytes, free, 'no block leaked');
  t.same(await opened.fs.read(fh, 0, 8192), Buffer.alloc(8192, 1), 'old contents intact');
  t.equal((await opened.fs.getattr(attr.ino)).sizeBytes, 8192);
  device.failAfterCount = 0;
  t.equal(await code(opened.fs.fsync(fh)), 'IO', 'a failed device sync fails fsync');
  device.failAfterCount = Infinity;
  t.equal(await code(opened.fs.fsync(fh)), 'ok', 'and the next one commits');
  await opened.fs.release(fh);
});

t.test('power loss on the simulated device loses only unsynced data', async (t) => {
  const device = new SimulatedDevice(32 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(device, meta);
  let opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await opened.fs.write(fh, 0, Buffer.alloc(10000, 5));
  await opened.fs.fsync(fh);
  await opened.fs.write(fh, 0, Buffer.alloc(10000, 6)); // not synced
  opened.meta.crash();
  device.crash();
  opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  const fh2 = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
  t.same(await opened.fs.read(fh2, 0, 10000), Buffer.alloc(10000, 5), 'the fsynced bytes, verified');
  await opened.fs.release(fh2);
});

t.test('coalesced small writes: many requests, few device writes and mutations; visible at once, durable at fsync, a prefix after a crash', async (t) => {
  const device = new SimulatedDevice(64 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(device, meta);
  let opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  let deviceWrites = 0;
  const write = device.write.bind(device);
  device.write = (buffer, offsetBytes) => ((deviceWrites += 1), write(buffer, offsetBytes));
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const fileBytes = 4 * 2 ** 20;
  let model = Buffer.alloc(fileBytes, 9);
  await opened.fs.write(fh, 0, model); // 4 MiB on flash, not coalesced
  await opened.fs.fsync(fh);
  let seed = 12345;
  const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const writesBefore = deviceWrites;
  const mutationsBefore = opened.store.counters.commitCount;
  let ok = true;
  for (let i = 0; i < 2000 && ok; i++) {
    // 4 KiB aligned and unaligned pieces, some across a block edge, some past the end
    const length = random(3) === 0 ? 1 + random(9000) : 4096;
    const at = random(3) === 0 ? random(fileBytes + 8192) : random(fileBytes / 4096) * 4096;
    const data = Buffer.alloc(length, 1 + (i % 250));
    t.equal(await opened.fs.write(fh, at, data), length);
    if (at + length > model.length) {
      const grown = Buffer.alloc(at + length);
      model.copy(grown);
      model = grown;
    }
    data.copy(model, at);
    if (i % 97 === 0) {
      const from = random(model.length);
      const got = await opened.fs.read(fh, from, 8192);
      ok = t.same(got, model.subarray(from, from + 8192), `read ${i} sees every acknowledged write`);
    }
    if (i % 500 === 0) ok &&= t.equal((await opened.fs.getattr(attr.ino)).sizeBytes, model.length, 'stat shows the size');
  }
  t.ok(deviceWrites - writesBefore < 200, `2000 small writes took ${deviceWrites - writesBefore} device writes (no fsync)`);
  t.equal(opened.store.counters.commitCount, mutationsBefore, 'and no commit');
  await opened.fs.fsync(fh);
  t.equal(opened.store.dirtyBytes, 0, 'nothing held after fsync');
  const synced = Buffer.from(model);
  t.same(await opened.fs.read(fh, 0, synced.length), synced, 'every byte as written');
  // Every MiB in few extents: random rewrites did not fragment the file without bound.
  for (let mib = 0; mib * 2 ** 20 < synced.length; mib++) {
    const count = opened.meta.extentsInRange(attr.ino, mib * 2 ** 20, (mib + 1) * 2 ** 20).length;
    t.ok(count <= constants.extentsPerSlotMax, `MiB ${mib}: ${count} extents`);
  }
  await opened.fs.write(fh, 100, Buffer.alloc(5000, 0xab)); // not synced: lost whole with the crash
  opened.meta.crash();
  device.crash();
  opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  const fh2 = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
  t.same(await opened.fs.read(fh2, 0, synced.length), synced, 'after a crash: the file as at its fsync');
  await opened.fs.release(fh2);
});

t.test('a write-out mapped in slices is committed whole: a commit that starts between its slices waits for the last', async (t) => {
  const device = new SimulatedDevice(64 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(device, meta);
  let opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await opened.fs.write(fh, 0, Buffer.alloc(8 * 2 ** 20, 1));
  await opened.fs.fsync(fh);
  // One block in ten: as many pieces, three slices (sparse enough that no MiB is rewritten whole)
  const blocks = 3 * constants.mappingSlicePieces;
  for (let i = 0; i < blocks; i++) await opened.fs.write(fh, i * 10 * 4096, Buffer.alloc(4096, 2));
  let commitDuring: Promise<void> | undefined;
  let slices = 0;
  const mutate = opened.meta.mutate.bind(opened.meta);
  opened.meta.mutate = <T>(fn: () => T): T => {
    const result = mutate(fn);
    if ((slices += 1) === 1) commitDuring = opened.store.commit(); // after the first slice
    return result;
  };
  const writeOut = opened.store.whenMapped(attr.ino);
  await writeOut;
  t.ok(commitDuring, 'a commit started while the write-out was mapped');
  t.equal(slices, 3, `in three slices (${slices})`);
  await commitDuring;
  opened.meta.crash();
  device.crash();
  opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  const fh2 = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
  const data = await opened.fs.read(fh2, 0, blocks * 10 * 4096);
  let written = 0;
  for (let i = 0; i < blocks; i++) if (data[i * 10 * 4096] === 2) written += 1;
  t.equal(written, blocks, 'after a crash that followed that commit: every block of the write-out');
  await opened.fs.release(fh2);
});

t.test('coalesced small writes: flash for them is reserved at write(), so ENOSPC comes there and nothing acknowledged is lost', async (t) => {
  const device = new SimulatedDevice(16 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(device, meta);
  const opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  const { fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  let acknowledged = 0;
  let failure = 'ok';
  for (let i = 0; i < 8192 && failure === 'ok'; i++) {
    failure = await code(opened.fs.write(fh, i * 4096, Buffer.alloc(4096, 1 + (i % 200))));
    if (failure === 'ok') acknowledged = i + 1;
  }
  t.equal(failure, 'NO_SPACE', 'write() answers ENOSPC');
  t.ok(acknowledged * 4096 > 12 * 2 ** 20, `${acknowledged} blocks taken first`);
  t.equal(await code(opened.fs.fsync(fh)), 'ok', 'the write-out of what was acknowledged finds its flash');
  for (let i = 0; i < acknowledged; i += 37) t.same(await opened.fs.read(fh, i * 4096, 4096), Buffer.alloc(4096, 1 + (i % 200)));
  t.same(await opened.fs.read(fh, (acknowledged - 1) * 4096, 4096), Buffer.alloc(4096, 1 + ((acknowledged - 1) % 200)), 'the last one too');
});

t.test('coalesced small writes keep their order with large writes, truncates and unlinks of the same file', async (t) => {
  const { fs: tfs, store } = await openScratch(t, await formatScratch(t));
  const { attr, fh } = await tfs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await tfs.write(fh, 0, Buffer.alloc(4096, 1));
  await tfs.write(fh, 0, Buffer.alloc(512 * 1024, 2)); // large, after the small one: wins
  await tfs.write(fh, 8192, Buffer.alloc(100, 3)); // small, after the large one: wins
  t.same(await tfs.read(fh, 0, 4096), Buffer.alloc(4096, 2));
  t.same(await tfs.read(fh, 8190, 104), Buffer.concat([Buffer.alloc(2, 2), Buffer.alloc(100, 3), Buffer.alloc(2, 2)]));
  await tfs.write(fh, 600 * 1024, Buffer.alloc(10, 4)); // past the end, held
  await tfs.setattr(attr.ino, { sizeBytes: 300 * 1024 }, ROOT); // cut below it
  t.equal((await tfs.getattr(attr.ino)).sizeBytes, 300 * 1024);
  await tfs.setattr(attr.ino, { sizeBytes: 700 * 1024 }, ROOT);
  t.same(await tfs.read(fh, 600 * 1024, 10), Buffer.alloc(10), 'a held write cut by truncate does not come back');
  const { attr: gone, fh: fh2 } = await tfs.create(ROOT_INO, 'g', 0o644, c.O_RDWR, ROOT);
  await tfs.write(fh2, 0, Buffer.alloc(4096, 5));
  await tfs.unlink(ROOT_INO, 'g', ROOT);
  await tfs.release(fh2);
  t.equal(await code(tfs.getattr(gone.ino)), 'NOT_FOUND');
  await tfs.fsync(fh);
  t.equal(store.dirtyBytes, 0);
  await tfs.release(fh);
});

t.test('allocator', async (t) => {
  const a = new Allocator(1, 100);
  t.equal(a.freeCount, 99);
  const r1 = a.allocate(10)!;
  t.same(r1, { startBlock: 1, blockCount: 10 });
  const r2 = a.allocate(10)!;
  t.equal(r2.startBlock, 11, 'next fit: contiguous for a sequential writer');
  a.free(r1);
  t.equal(a.freeCount, 89);
  const r3 = a.allocate(200)!;
  t.same(r3, { startBlock: 21, blockCount: 79 }, 'a run stops at the end of the device');
  const r4 = a.allocate(20)!;
  t.same(r4, { startBlock: 1, blockCount: 10 }, 'wraps to free space at the start');
  t.equal(a.allocate(1), undefined, 'full');
  t.notOk(a.markUsed({ startBlock: 5, blockCount: 1 }), 'a block cannot be used twice');
  t.notOk(a.markUsed({ startBlock: 0, blockCount: 1 }), 'the superblock is not allocatable');
  a.free({ startBlock: 1, blockCount: 1 });
  t.throws(() => a.free({ startBlock: 1, blockCount: 1 }), 'double free is a programmer error');
  const big = new Allocator(1, 10000);
  big.markUsed({ startBlock: 1, blockCount: 9000 });
  t.equal(big.allocate(5)!.startBlock, 9001, 'skips whole used words quickly');
});

t.test('a file system that refuses O_DIRECT (ramfs): buffered I/O, and the log says so', async (t) => {
  // tmpfs accepts O_DIRECT since Linux 6.6; ramfs still refuses it.
  const dir = scratchDir(t);
  execFileSync('mount', ['-t', 'ramfs', 'tierfs-test', dir]);
  t.teardown(() => void spawnSync('umount', [dir]));
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  await formatFlashPath(flash, meta, { sizeBytes: 32 * 2 ** 20 });
  let logged = '';
  const write = process.stderr.write.bind(process.stderr);
  const level = process.env.TIERFS_LOG;
  process.env.TIERFS_LOG = 'info';
  process.stderr.write = ((chunk: string) => ((logged += chunk), true)) as typeof process.stderr.write;
  let device;
  try {
    device = openFlashDevice(flash);
  } finally {
    process.stderr.write = write;
    process.env.TIERFS_LOG = level;
  }
  t.notOk(device.direct, 'buffered');
  t.match(logged, /O_DIRECT refused here; fdatasync for durability/, 'the log says which');
  await device.close();
  const opened = await openFileSystem(flash, meta, { commitIntervalMs: 0 });
  const { fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await opened.fs.write(fh, 123, Buffer.from('buffered but checked'));
  await opened.fs.fsync(fh);
  t.equal((await opened.fs.read(fh, 123, 100)).toString(), 'buffered but checked');
  await opened.fs.release(fh);
  await opened.close();
});

t.test('metadata that is not ours, or from a newer tierfs, is refused with one clear error', async (t) => {
  const scratch = await formatScratch(t);
  const db = new Database(path.join(scratch.meta, 'tierfs.db'));
  db.pragma('user_version = 99');
  db.close();
  const newer = await openFileSystem(scratch.flash, scratch.meta).catch((error: Error) => error);
  t.match(newer, { code: 'VERSION', message: new RegExp(`schema version 99; this tierfs knows up to ${schemaVersion}`) });
  const garbage = scratchDir(t);
  fs.writeFileSync(path.join(garbage, 'tierfs.db'), 'this is not a database'.repeat(100));
  const corrupt = await openFileSystem(scratch.flash, garbage).catch((error: Error) => error);
  t.match(corrupt, { code: 'CORRUPT', message: /cannot be opened/ });
});

t.test('schema 7: a replicated log of rows (schema 6) becomes a log of keys, continuous, its seqs kept', async (t) => {
  const scratch = await formatScratch(t);
  const db = new Database(path.join(scratch.meta, 'tierfs.db'));
  const tables = ['settings', 'inodes', 'dirents', 'extents', 'xattrs', 'symlinks', 'packs', 'policies', 'targets', 'pins', 'lost', 'shares'];
  db.exec(`DROP TABLE replica_log;
    CREATE TABLE replica_log (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, row TEXT NOT NULL);
    INSERT INTO replica_log VALUES (5, 'inodes', 'put', '[1,16877,0,0,2,0,0,1,2,3,4]'), (6, 'extents', 'del', '[7,4096]'),
      (7, 'xattrs', 'put', '[7,"user.a","00ff"]'), (8, 'anchor', 'anchor', '{}');`);
  // Replication was on: schema 6 had its triggers (their bodies do not matter to the migration).
  for (const table of tables) for (const kind of ['insert', 'update', 'delete']) db.exec(`CREATE TRIGGER replica_${table}_${kind} AFTER INSERT ON ${table} BEGIN SELECT 1; END`);
  db.pragma('user_version = 6');
  db.close();
  const migrated = new SqliteMetaStore(scratch.meta, { create: false }); // the metadata alone: a serve without replication turns the log off
  const dir = { ino: 4242 as Ino };
  migrated.mutate(() => migrated.setSymlink(dir.ino, 'after'));
  migrated.close();
  const check = new Database(path.join(scratch.meta, 'tierfs.db'), { readonly: true });
  t.teardown(() => check.close());
  const rows = check.prepare('SELECT seq, tbl, k1, k2 FROM replica_log ORDER BY seq').all() as { seq: number; tbl: string; k1: unknown; k2: unknown }[];
  t.same(rows.slice(0, 4), [
    { seq: 5, tbl: 'inodes', k1: 1, k2: null },
    { seq: 6, tbl: 'extents', k1: 7, k2: 4096 },
    { seq: 7, tbl: 'xattrs', k1: 7, k2: 'user.a' },
    { seq: 8, tbl: 'anchor', k1: null, k2: null },
  ], 'the records not yet uploaded are keys now, under their seqs');
  t.ok(rows.slice(4).some((r) => r.seq > 8 && r.tbl === 'symlinks' && r.k1 === dir.ino), 'the triggers were made again: a change after the migration logs its keys after them');
  const bodies = check.prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'replica\\_%' ESCAPE '\\'").pluck().all() as string[];
  t.equal(bodies.length, tables.length * 3);
  t.ok(bodies.every((sql) => /INSERT INTO replica_log \(tbl, k1/.test(sql)), 'every trigger is the new one');
});

t.test('schema 8: extents become a rowid table with the same rows, indexes and triggers, and reads stop paying for overflow pages', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'big', 0o644, c.O_RDWR, ROOT);
  const data = pattern(8, 6 * 2 ** 20);
  await opened.fs.write(fh, 0, data);
  await opened.fs.release(fh);
  await opened.close();
  // Back to schema 7: the same table WITHOUT ROWID, its indexes and triggers made again from their definitions.
  const db = new Database(path.join(scratch.meta, 'tierfs.db'));
  const schemaOf = () =>
    db.prepare("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'extents' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name").all();
  const dependents = schemaOf() as { sql: string }[];
  const table = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'extents'").pluck().get() as string;
  t.notMatch(table, /WITHOUT ROWID/, 'a new file system has the rowid table');
  const rows = db.prepare('SELECT * FROM extents ORDER BY ino, file_offset').all();
  db.exec(`CREATE TABLE old_extents AS SELECT * FROM extents; DROP TABLE extents; ${table.replace(/\)\s*$/, ') WITHOUT ROWID')};
    INSERT INTO extents SELECT * FROM old_extents; DROP TABLE old_extents;`);
  for (const { sql } of dependents) db.exec(sql);
  db.pragma('user_version = 7');
  t.match(db.prepare("SELECT sql FROM sqlite_master WHERE name = 'extents'").pluck().get(), /WITHOUT ROWID/);
  db.close();
  t.ok(rows.length >= 6, `${rows.length} extents`);
  const migrated = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
  t.teardown(() => migrated.close());
  const check = new Database(path.join(scratch.meta, 'tierfs.db'), { readonly: true });
  t.teardown(() => check.close());
  t.notMatch(check.prepare("SELECT sql FROM sqlite_master WHERE name = 'extents'").pluck().get(), /WITHOUT ROWID/, 'a rowid table now');
  t.same(check.prepare('SELECT * FROM extents ORDER BY ino, file_offset').all(), rows, 'the same rows');
  t.same(
    check.prepare("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'extents' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name").all(),
    dependents.map((d) => d),
    'the same indexes and triggers',
  );
  t.match(check.prepare('EXPLAIN QUERY PLAN SELECT * FROM extents WHERE ino = 2 AND file_offset = 0').all(), [{ detail: /USING INDEX sqlite_autoindex_extents_1/ }], 'the key is a unique index');
  t.same(migrated.meta.residencyTotals(), migrated.meta.residencyTotalsScanned(), 'the totals triggers still count');
  const readFh = await migrated.fs.open(attr.ino, c.O_RDWR, ROOT);
  t.ok((await migrated.fs.read(readFh, 0, data.length)).equals(data), 'the file reads back');
  await migrated.fs.write(readFh, 2 ** 20, Buffer.alloc(4096, 1)); // a replace: the delete and insert triggers fire on the new table
  await migrated.fs.fsync(readFh);
  await migrated.fs.release(readFh);
  t.same(migrated.meta.residencyTotals(), migrated.meta.residencyTotalsScanned(), 'and go on counting after a rewrite');
});

t.test('a file system from schema 1 (before the object tier) migrates: its extents stay readable, on flash', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'old', 0o644, c.O_RDWR, ROOT);
  const data = Buffer.alloc(3 * 2 ** 20 + 100, 'v1 data ');
  await opened.fs.write(fh, 0, data);
  await opened.fs.release(fh);
  await opened.close();
  // Rewrite the database the way schema 1 kept it: the extents table without residency or heat.
  const db = new Database(path.join(scratch.meta, 'tierfs.db'));
  const rows = db.prepare('SELECT ino, file_offset, length, flash_offset, checksums FROM extents').all();
  db.exec(`DROP TRIGGER extents_pack_insert; DROP TRIGGER extents_pack_delete; DROP TRIGGER extents_pack_update;
    DROP TRIGGER extents_totals_insert; DROP TRIGGER extents_totals_delete; DROP TRIGGER extents_totals_update; DROP TABLE residency_totals;
    DROP TABLE extents; DROP TABLE packs; DROP TABLE policies; DROP TRIGGER inodes_pin_delete; DROP TABLE pins; DROP TABLE targets;
    DROP TABLE replica_log; DROP TABLE lost; DROP TABLE shares;
    CREATE TABLE extents (ino INTEGER NOT NULL, file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
      flash_offset INTEGER NOT NULL, checksums BLOB NOT NULL, PRIMARY KEY (ino, file_offset)) WITHOUT ROWID;
    CREATE INDEX extents_flash ON extents (flash_offset);`);
  const insert = db.prepare('INSERT INTO extents VALUES (@ino, @file_offset, @length, @flash_offset, @checksums)');
  for (const row of rows) insert.run(row);
  db.pragma('user_version = 1');
  db.close();
  t.equal(rows.length, 4);
  const migrated = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
  t.teardown(() => migrated.close());
  const extents = migrated.meta.fileExtents(attr.ino);
  t.equal(extents.length, 4);
  t.ok(extents.every((e) => e.pack === null && e.flashOffsetBytes !== null && e.accessedMs > 0), 'FLASH, with a time');
  t.same(migrated.meta.residencyTotals(), { flashOnlyBytes: 3 * 2 ** 20 + 4096, bothBytes: 0, objectOnlyBytes: 0 }, 'schema 4 counted the residency totals of what was there');
  t.same(migrated.meta.residencyTotals(), migrated.meta.residencyTotalsScanned());
  const readFh = await migrated.fs.open(attr.ino, c.O_RDONLY, ROOT);
  t.ok((await migrated.fs.read(readFh, 0, data.length)).equals(data));
  await migrated.fs.release(readFh);
});
