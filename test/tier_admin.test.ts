// The engine side of the admin commands: the what-if simulator against a
// scripted access history with a known answer, pins, watermarks at run time,
// and fsck finding and safely repairing damage planted in flash and bucket.
import t from 'tap';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { constants } from '../src/constants';
import { checkFileSystem } from '../src/fs/fsck';
import { ROOT_CREDENTIALS, ROOT_INO, type Ino } from '../src/fs/fs';
import { defaultPrices } from '../src/tier/tier';
import { newPackId, packKey, packKeyPrefix } from '../src/tier/pack';
import { Simulation } from '../src/tier/simulate';
import { RateMeter, LatencyWindow } from '../src/tier/stats';
import { formatScratch, openTiered, pattern, readFile, scratchDir, writeFile, clockAt } from './helpers/fs';

const MiB = 2 ** 20;
const H = constants.heatHalfLifeMs;
const decay = (ms: number) => 0.5 ** (ms / H);
const MONTH_MS = 30 * 86_400_000;

t.test('simulate: a scripted access history gives the answer worked out by hand', async (t) => {
  const t0 = 1_000_000_000_000;
  let now = t0;
  const scratch = await formatScratch(t);
  const { fs: files, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, watermarkHighPercent: 50, watermarkLowPercent: 40 }, clockAt(() => now));
  // All written at t0 (a write counts as one access): 1 MiB extents.
  const pinned = await writeFile(files, 'pinned.db', pattern(1, 2 * MiB));
  const hot = await writeFile(files, 'hot', pattern(2, 4 * MiB));
  const warm = await writeFile(files, 'warm', pattern(3, 4 * MiB));
  await writeFile(files, 'cold', pattern(4, 4 * MiB));
  t.ok(await tier.pin(pinned, true), 'pinned');
  t.notOk(await tier.pin(pinned, true), 'pinning twice changes nothing');
  // hot: read 8 times, 10 s apart; warm: once at 100 s; cold: never.
  let hotCount = 1;
  for (let i = 1; i <= 8; i++) {
    now = t0 + i * 10_000;
    await readFile(files, hot);
    hotCount = hotCount * decay(10_000) + 1;
  }
  now = t0 + 100_000;
  await readFile(files, warm);
  const warmCount = 1 * decay(100_000) + 1;
  now = t0 + 2 * H; // everything past the default cooling period (1 h)
  const hotNow = hotCount * decay(now - (t0 + 80_000));
  const warmNow = warmCount * decay(now - (t0 + 100_000));
  const coldNow = decay(now - t0); // 0.25
  tier.flushHeat();

  // 12 MiB of flash at a 50 % high watermark holds 6 MiB: the pinned file, then the hottest 4 MiB.
  const r = await tier.simulate({ flashSizeBytes: 12 * MiB, prices: defaultPrices });
  t.equal(r.flashBytes, 6 * MiB);
  t.equal(r.flashOnlyBytes, 2 * MiB, 'the pinned file: on flash, no pack copy');
  t.equal(r.bothBytes, 4 * MiB, 'hot: on flash and, cooled, in a pack');
  t.equal(r.objectOnlyBytes, 8 * MiB, 'warm and cold: only in packs');
  t.equal(r.objectBytes, 12 * MiB);
  t.equal(r.overflowBytes, 0);
  const served = 2 * coldNow + 4 * hotNow;
  const all = served + 4 * warmNow + 4 * coldNow;
  t.ok(Math.abs(r.hitRate! - served / all) < 1e-9, `hit rate ${r.hitRate} = ${served / all}`);
  const getsPerMonth = ((4 * warmNow + 4 * coldNow) * Math.LN2 * MONTH_MS) / H;
  t.equal(r.getsPerMonth, Math.round(getsPerMonth));
  t.ok(Math.abs(r.cost.storage - (12 / 1024) * 0.023) < 1e-12, 'storage priced per GiB-month');
  t.ok(Math.abs(r.cost.requests - (getsPerMonth / 1000) * 0.0004) < 1e-9);
  t.equal(r.cost.total, r.cost.storage + r.cost.requests + r.cost.egress);

  // A bigger flash keeps warm too; policies replaced by "never" on /warm keep it on flash with no copy.
  const bigger = await tier.simulate({ flashSizeBytes: 20 * MiB, prices: defaultPrices });
  t.match(bigger, { flashBytes: 10 * MiB, objectOnlyBytes: 4 * MiB, bothBytes: 8 * MiB });
  const never = await tier.simulate({
    flashSizeBytes: 12 * MiB,
    prices: defaultPrices,
    policies: [{ name: 'w', pathGlob: '/warm', mode: 'never', coolAfterMs: H, sizeBytesMin: 0, target: 'default', compress: false, durable: 'flash' }],
  });
  t.match(never, { flashBytes: 6 * MiB, flashOnlyBytes: 6 * MiB, bothBytes: 0, objectOnlyBytes: 8 * MiB, overflowBytes: 0 }, 'kept data first: pinned + warm fill the 6 MiB');
  const tiny = await tier.simulate({ flashSizeBytes: 4 * MiB, prices: defaultPrices, policies: [{ name: 'w', pathGlob: '/warm', mode: 'never', coolAfterMs: H, sizeBytesMin: 0, target: 'default', compress: false, durable: 'flash' }] });
  t.equal(tiny.overflowBytes, 2 * MiB, 'data that must stay on flash beyond its size is reported');
  t.equal(tier.policyOf(pinned).mode, 'pin', 'a pin overrides the default policy');
  t.ok(await tier.pin(pinned, false));
  t.equal(tier.policyOf(pinned).name, 'default');
});

t.test('simulate: nothing read means no hit rate, not a made-up one', async (t) => {
  const empty = new Simulation({ halfLifeMs: H, flashSizeBytes: MiB, watermarkHighPercent: 90, prices: defaultPrices });
  t.match(empty.result(), { flashBytes: 0, objectBytes: 0, hitRate: null, getsPerMonth: 0 });
});

t.test('rates and latency windows', async (t) => {
  let now = 0;
  const meter = new RateMeter(() => now, 60_000, 1000);
  meter.sample(0);
  now = 10_000;
  t.equal(meter.perSecond(10 * MiB), MiB, '10 MiB in 10 s');
  for (let i = 0; i < 200; i++) {
    now += 1000;
    meter.sample(10 * MiB);
  }
  t.equal(meter.perSecond(10 * MiB), 0, 'an idle minute forgets the old burst');
  const window = new LatencyWindow(4);
  t.equal(window.percentile(50), null);
  for (const ms of [100, 1, 2, 3, 4]) window.record(ms);
  t.equal(window.percentile(99), 4, 'the oldest fell out of the window');
  t.equal(window.percentile(50), 2);
  t.equal(window.count, 5);
});

t.test('watermarks at run time are checked, applied and kept for the next start', async (t) => {
  const scratch = await formatScratch(t);
  const url = `file://${scratchDir(t)}`;
  const opened = await openTiered(t, scratch, { url });
  await t.rejects(opened.tier.setWatermarks(70, 80), /low watermark \(80%\) must be below the high one/);
  await t.rejects(opened.tier.setWatermarks(100, 80), /between 0 and 100/);
  t.match(opened.tier.status().watermarks, { highPercent: 90, lowPercent: 80 }, 'a refused change changes nothing');
  await opened.tier.setWatermarks(60, 30);
  t.match(opened.tier.status().watermarks, { highPercent: 60, lowPercent: 30 });
  await opened.close();
  const again = await openTiered(t, scratch, { url });
  t.match(again.tier.status().watermarks, { highPercent: 60, lowPercent: 30 }, 'kept across a restart');
  await again.close();
  const overridden = await openTiered(t, scratch, { url, watermarkHighPercent: 95, watermarkLowPercent: 85 });
  t.match(overridden.tier.status().watermarks, { highPercent: 95, lowPercent: 85 }, 'serve settings override the stored ones');
});

t.test('fsck finds damage in flash and bucket and repairs only what loses nothing', async (t) => {
  const scratch = await formatScratch(t);
  const objectsDir = scratchDir(t);
  const opened = await openTiered(t, scratch, { url: `file://${objectsDir}` });
  const { fs: files, tier, meta } = opened;
  const KiB64 = 64 * 1024;
  const data = (seed: number) => pattern(seed, KiB64);
  const ino = {
    packLostKeepFlash: await writeFile(files, 'a', data(1)),
    packLostNoFlash: await writeFile(files, 'b', data(2)),
    flashBadPackGood: await writeFile(files, 'c', data(3)),
    flashBadOnly: await writeFile(files, 'd', data(4)),
    packBadKeepFlash: await writeFile(files, 'e', data(5)),
    fine: await writeFile(files, 'f', data(6)),
  };
  for (const name of ['packLostKeepFlash', 'packLostNoFlash', 'flashBadPackGood', 'packBadKeepFlash', 'fine'] as const) await tier.destage({ ino: ino[name] });
  await tier.release(ino.packLostNoFlash);
  const clean = await checkFileSystem(opened, { repair: false, deep: true });
  t.match(clean, { problemCount: 0, extentCount: 6, flashVerifiedBytes: 5 * KiB64, packVerifiedBytes: 5 * KiB64, packCount: 5, objectCount: 5 });
  const sampled = await checkFileSystem(opened, { repair: false, deep: true, samplePackCount: 2, random: () => 0.5 });
  t.match(sampled, { problemCount: 0, sampledPackCount: 2, packVerifiedBytes: 2 * KiB64, flashVerifiedBytes: 5 * KiB64 }, 'a scrub verifies a sample of packs');

  const keyOf = (i: typeof ino.fine) => path.join(objectsDir, packKey(tier.fsUuid, meta.fileExtents(i)[0].pack!.packId));
  fs.rmSync(keyOf(ino.packLostKeepFlash));
  fs.rmSync(keyOf(ino.packLostNoFlash));
  const packBad = keyOf(ino.packBadKeepFlash);
  const packBytes = fs.readFileSync(packBad);
  const entryAt = meta.fileExtents(ino.packBadKeepFlash)[0].pack!.storedOffsetBytes;
  packBytes[entryAt + 100] ^= 0xff; // same size: only --deep sees it
  fs.writeFileSync(packBad, packBytes);
  const corruptFlash = (i: typeof ino.fine) => {
    const fd = fs.openSync(scratch.flash, 'r+');
    fs.writeSync(fd, Buffer.alloc(512, 0x5a), 0, 512, meta.fileExtents(i)[0].flashOffsetBytes! + 4096);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  };
  corruptFlash(ino.flashBadPackGood);
  corruptFlash(ino.flashBadOnly);
  const orphan = path.join(objectsDir, packKey(tier.fsUuid, newPackId()));
  await fsp.mkdir(path.dirname(orphan), { recursive: true });
  fs.writeFileSync(orphan, 'left by a crash');
  const foreign = path.join(objectsDir, packKeyPrefix(tier.fsUuid), 'README');
  fs.writeFileSync(foreign, 'not ours');

  const found = await checkFileSystem(opened, { repair: false, deep: true });
  const kinds = (report: typeof found) => report.problems.map((p) => `${p.kind}:${p.path ?? p.key}`).sort();
  t.same(kinds(found), [
    `flash-checksum:/c`,
    `flash-checksum:/d`,
    `foreign-object:${tier.fsUuid}/packs/README`,
    `missing-pack-object:/a`,
    `missing-pack-object:/b`,
    `orphan-pack-object:${path.relative(objectsDir, orphan)}`,
    `pack-checksum:/e`,
  ]);
  t.match(found, { problemCount: 6, repairedCount: 0, unrepairableCount: 2 }, 'b (no flash copy) and d (no pack copy) have no good copy left');
  t.ok(fs.existsSync(orphan), 'a check changes nothing');
  t.equal(meta.fileExtents(ino.packLostKeepFlash)[0].pack?.packId !== undefined, true);

  const repaired = await checkFileSystem(opened, { repair: true, deep: true });
  t.match(repaired, { problemCount: 6, repairedCount: 4, unrepairableCount: 2 });
  t.notOk(fs.existsSync(orphan), 'the orphan is deleted');
  t.ok(fs.existsSync(foreign), 'the foreign object is left alone');
  t.match(tier.fileResidency(ino.packLostKeepFlash), { flashOnlyBytes: KiB64, objectBytes: 0 }, 'a: back to flash only, to be destaged again');
  t.match(tier.fileResidency(ino.packBadKeepFlash), { flashOnlyBytes: KiB64, objectBytes: 0 }, 'e: its bad pack copy forgotten');
  t.match(tier.fileResidency(ino.flashBadPackGood), { objectOnlyBytes: KiB64, flashBytes: 0 }, 'c: its bad flash copy dropped');
  t.ok((await readFile(files, ino.flashBadPackGood)).equals(data(3)), 'c reads back right from its pack');
  t.ok((await readFile(files, ino.packLostKeepFlash)).equals(data(1)));
  t.ok((await readFile(files, ino.fine)).equals(data(6)));

  const after = await checkFileSystem(opened, { repair: true, deep: true });
  t.same(kinds(after), [`flash-checksum:/d`, `foreign-object:${tier.fsUuid}/packs/README`, `missing-pack-object:/b`], 'what is left cannot be repaired');
  t.match(after, { problemCount: 2, repairedCount: 0, unrepairableCount: 2 });
  await tier.destage({ ino: ino.packLostKeepFlash });
  t.match(tier.fileResidency(ino.packLostKeepFlash), { bothBytes: KiB64 }, 'repaired data destages again');
});

t.test('several targets: packs go where the policy says, and come back from there, across a restart', async (t) => {
  const scratch = await formatScratch(t);
  const main = scratchDir(t);
  const second = scratchDir(t);
  const opened = await openTiered(t, scratch, { url: `file://${main}` });
  const { fs: files, tier } = opened;
  await t.rejects(tier.putPolicy({ name: 'x', pathGlob: '/x', mode: 'auto', coolAfterMs: 0, sizeBytesMin: 0, target: 'archive', compress: false, durable: 'flash' }), /no such target/);
  await t.rejects(tier.addTarget('archive', 'file://relative'), /file targets are file:\/\/\/absolute\/dir/);
  await t.rejects(tier.addTarget('twin', `file://${main}`), /target default is already/);
  await tier.addTarget('archive', `file://${second}`);
  await t.rejects(tier.addTarget('archive', `file://${second}-2`), /a target named archive exists/);
  await tier.putPolicy({ name: 'cold', pathGlob: 'cold*', mode: 'auto', coolAfterMs: 0, sizeBytesMin: 0, target: 'archive', compress: false, durable: 'flash' });
  const hot = await writeFile(files, 'hot', pattern(1, 3 * MiB));
  const cold = await writeFile(files, 'cold', pattern(2, 3 * MiB));
  t.equal(await tier.destage({ inos: [hot, cold] }), 6 * MiB, 'one destage, two targets');
  const packsIn = async (dir: string) => {
    const base = path.join(dir, tier.fsUuid, 'packs');
    return fs.existsSync(base) ? (await fsp.readdir(base, { recursive: true, withFileTypes: true })).filter((d) => d.isFile()).length : 0;
  };
  t.equal(await packsIn(main), 1);
  t.equal(await packsIn(second), 1);
  t.equal(opened.meta.getPack(opened.meta.fileExtents(cold)[0].pack!.packId)!.target, 'archive');
  t.match(tier.status().targets, [{ name: 'default', count: 1 }, { name: 'archive', count: 1, reachable: true }]);
  await tier.release(hot);
  await tier.release(cold);
  t.ok((await readFile(files, cold)).equals(pattern(2, 3 * MiB)), 'recalled from the second target');
  await opened.close();

  const again = await openTiered(t, scratch, { url: `file://${main}` });
  t.match(again.tier.listTargets().map((x) => x.name), ['default', 'archive'], 'reopened from the metadata');
  t.ok((await readFile(again.fs, cold)).equals(pattern(2, 3 * MiB)), 'and read from it after a restart');
  await again.tier.listed(); // the start-up listing must not race the orphan planted below
  // An orphan in the second target is found by the start-up listing and by fsck.
  const orphan = path.join(second, packKey(again.tier.fsUuid, newPackId()));
  await fsp.mkdir(path.dirname(orphan), { recursive: true });
  fs.writeFileSync(orphan, 'x');
  const report = await checkFileSystem(again, { repair: false, deep: true });
  t.match(report, { problemCount: 1, objectCount: 3, packVerifiedBytes: 6 * MiB });
  t.match(report.problems[0], { kind: 'orphan-pack-object', target: 'archive' });
  t.match(await again.tier.reconcile(), { orphanCount: 1 });
  t.notOk(fs.existsSync(orphan));
  // Overwritten, the cold file's pack is garbage and GC deletes it from the second target.
  const fh = await again.fs.open(cold, 2, { uid: 0, gid: 0, groups: [] });
  await again.fs.write(fh, 0, pattern(3, 3 * MiB));
  await again.fs.fsync(fh);
  await again.fs.release(fh);
  t.equal(await again.tier.collectGarbage(), 1);
  t.equal(await packsIn(second), 0, 'deleted where it was');
  await t.rejects(again.tier.removeTarget('archive'), /named by policy cold/);
  await again.tier.deletePolicy('cold');
  await again.tier.removeTarget('archive');
  await t.rejects(again.tier.removeTarget('default'), /cannot be removed/);
  t.same(again.tier.listTargets().map((x) => x.name), ['default']);
});

t.test('regression: with several targets, a background pass holds back the small last pack of every target, not only of the last one', async (t) => {
  let now = 1_000_000;
  const scratch = await formatScratch(t);
  const { fs: files, tier, meta } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 60_000, coolAfterMs: 1000 }, clockAt(() => now));
  await tier.addTarget('archive', `file://${scratchDir(t)}`);
  await tier.putPolicy({ name: 'cold', pathGlob: 'cold*', mode: 'auto', coolAfterMs: 1000, sizeBytesMin: 0, target: 'archive', compress: false, durable: 'flash' });
  await writeFile(files, 'cold', pattern(1, MiB));
  await writeFile(files, 'hot', pattern(2, MiB));
  now += 2000;
  t.equal(await tier.destage({ background: true }), 0, 'both packs too small and too young: nothing goes up');
  t.equal(meta.packTotals().count, 0);
  now += 61_000;
  t.equal(await tier.destage({ background: true }), 2 * MiB, 'once they waited long enough, both go');
  t.match(tier.status().targets, [{ name: 'default', count: 1 }, { name: 'archive', count: 1 }]);
});

t.test('the progress bar: redrawn in place on a terminal with bytes, rate and ETA; plain lines, sparingly, elsewhere', async (t) => {
  const { progressBar } = await import('../src/cli/client');
  const written: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => (written.push(chunk), true)) as typeof process.stderr.write;
  try {
    let now = 0;
    const bar = progressBar('recall', () => now, true);
    now = 2000;
    bar.update({ progress: { doneBytes: 10 * MiB, totalBytes: 40 * MiB } });
    bar.done();
    t.equal(written[0], `\rrecall [${'#'.repeat(8)}${'.'.repeat(22)}]  25% 10.0 MiB / 40.0 MiB, 5.0 MiB/s, ETA 0:06  `);
    t.equal(written[1], '\n');
    written.length = 0;
    now = 0;
    const plain = progressBar('recall', () => now, false);
    for (const [atMs, doneBytes] of [[1000, MiB], [2000, 2 * MiB], [6500, 3 * MiB], [7000, 4 * MiB], [7100, 4 * MiB]]) {
      now = atMs;
      plain.update({ progress: { doneBytes, totalBytes: 4 * MiB } });
    }
    plain.done();
    t.same(written, [
      'recall:  25% 1.0 MiB / 4.0 MiB, 1.0 MiB/s, ETA 0:03\n',
      'recall:  75% 3.0 MiB / 4.0 MiB, 472.6 KiB/s, ETA 0:02\n',
      'recall: 100% 4.0 MiB / 4.0 MiB, 585.1 KiB/s, ETA 0:00\n',
    ], 'at most one line in 5 s, and the last one once');
  } finally {
    process.stderr.write = write;
  }
});

t.test('release of many files: in batches, one commit each, pinned files skipped, progress, stoppable between batches', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openTiered(t, scratch, { url: `file://${scratchDir(t)}` });
  const { fs: files, tier } = opened;
  const count = 2 * constants.releaseBatchFileCount + 10; // three batches
  const inos: Ino[] = [];
  for (let i = 0; i < count; i++) {
    const { attr, fh } = await files.create(ROOT_INO, `f${i}`, 0o644, 2 /* O_RDWR */, ROOT_CREDENTIALS);
    await files.write(fh, 0, Buffer.alloc(1000, i % 251));
    await files.release(fh);
    inos.push(attr.ino);
  }
  await files.fsync();
  await tier.destage({ inos });
  t.ok(await tier.pin(inos[5], true), 'one pinned');
  const commitsBefore = opened.store.counters.commitCount;
  const progress: number[] = [];
  const report = await tier.releaseFiles(inos, { progress: (p) => progress.push(p.doneBytes) });
  t.equal(report.skippedFileCount, 1, 'the pinned file skipped');
  t.equal(report.releasedBytes, (count - 1) * 4096, 'every other file released (a block each)');
  t.equal(opened.store.counters.commitCount - commitsBefore, 3, 'one commit a batch, not one a file');
  t.same(progress.length, 3, 'progress after each batch');
  t.equal(progress[2], report.releasedBytes);
  t.equal(opened.meta.fileExtents(inos[5])[0].flashOffsetBytes !== null, true, 'the pinned file stays on flash');
  t.equal(opened.meta.fileExtents(inos[count - 1])[0].flashOffsetBytes, null);
  t.ok((await readFile(files, inos[7])).equals(Buffer.alloc(1000, 7)), 'a released file reads back');

  const again = inos.slice(0, 3 * 100);
  for (const ino of again) await tier.recallFile(ino);
  const stop = new AbortController();
  const stopped = await tier.releaseFiles(again, { signal: stop.signal, progress: () => stop.abort() });
  t.equal(stopped.stopped, true, 'stopped');
  t.equal(stopped.releasedBytes, (constants.releaseBatchFileCount - 1) * 4096, 'after the first batch (the pinned one skipped)');
  t.equal(opened.meta.fileExtents(again[again.length - 1])[0].flashOffsetBytes !== null, true, 'the rest stays on flash');
});
