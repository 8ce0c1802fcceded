// The tiering engine over src/fs with a file target: destage, evict, recall,
// heat, policies, watermarks, GC, orphans and faults.
import t from 'tap';
import type { Test } from 'tap';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { SimulatedClock } from '../src/clock';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { FaultyObjectStore, openObjectStore, RetryingObjectStore, describePack, packKeyPrefix } from '../src/tier/tier';
import { decodeEntry, PackWriter } from '../src/tier/pack';
import { PACK_ENCODING, type Ino } from '../src/meta/meta_store';
import { constants } from '../src/constants';
import { code, formatScratch, openTiered, pattern, readFile, scratchDir, writeFile, clockAt } from './helpers/fs';

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
  await tier.settle(); // the reads wrote some extents back already
  const coldBytes = tier.fileResidency(ino).objectOnlyBytes;
  t.equal(await tier.recallFile(ino), coldBytes, 'recall brings back what was only in the pack');
  t.match(tier.fileResidency(ino), { objectOnlyBytes: 0, bothBytes: 5 * MiB + 16384 });
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

/** Run `work` on simulated time: advance the clock 10 ms at a time until it settles (at most a simulated hour). */
async function settled<T>(clock: SimulatedClock, work: Promise<T>): Promise<T> {
  let done = false;
  const result = work.finally(() => (done = true));
  for (let i = 0; i < 360_000 && !done; i++) await clock.advance(10);
  return result;
}

const hour = 3600_000;

t.test('heat: of a large file, only the hot head stays on flash', async (t) => {
  const scratch = await formatScratch(t, 256 * MiB);
  let now = 1_000_000_000;
  const { fs, tier, store } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 0 }, clockAt(() => now));
  const data = pattern(2, 40 * MiB);
  const ino = await writeFile(fs, 'video', data);
  now += 2 * hour;
  const fh = await fs.open(ino, 0, ROOT);
  for (let i = 0; i < 3; i++) {
    await fs.read(fh, 0, 4 * MiB); // the head is hot: three passes
    now += 2000;
  }
  await fs.release(fh);
  tier.flushHeat();
  await tier.destage({ background: true });
  const r = tier.fileResidency(ino);
  t.equal(r.flashOnlyBytes, 4 * MiB, 'the hot 4 MiB were not destaged');
  t.equal(r.bothBytes, 36 * MiB, 'the cold rest was');
  // Flash over the high watermark: the coldest clean extents go first, the hot head stays.
  const used = store.usedBytes;
  const freed = await tier.evictTo(used - 20 * MiB);
  t.equal(freed, 20 * MiB);
  await fs.fsync();
  const after = tier.fileResidency(ino);
  t.equal(after.objectOnlyBytes, 20 * MiB);
  t.equal(after.flashOnlyBytes, 4 * MiB, 'hot head still on flash only');
  const meta = tier.flash.meta;
  const evicted = meta.fileExtents(ino).filter((e) => e.flashOffsetBytes === null).map((e) => e.fileOffsetBytes);
  t.ok(evicted.every((offset) => offset >= 4 * MiB), 'nothing of the head evicted');
  t.ok((await readFile(fs, ino)).equals(data), 'every byte reads back');
  const head = tier.heat.heatOf(tier.flash.meta.fileExtents(ino)[0]).heatCount;
  t.ok(head >= 4 && head < 5, `each pass over the head (three, then the full read) counted once (${head.toFixed(2)})`);
  t.ok(tier.fileResidency(ino).heat.count < head, 'the file-wide count is the mean over its extents');
});

t.test('policies: pin, never, all, minimum size, most specific match', async (t) => {
  const scratch = await formatScratch(t, 256 * MiB);
  let now = 1_000_000_000;
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 0 }, clockAt(() => now));
  const policy = (name: string, pathGlob: string, mode: 'auto' | 'pin' | 'all' | 'never', extra = {}) =>
    tier.putPolicy({ name, pathGlob, mode, coolAfterMs: hour, sizeBytesMin: 0, target: 'default', compress: false, durable: 'flash', ...extra });
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
  await tier.putPolicy({ name: 'all-pinned', pathGlob: '**', mode: 'pin', coolAfterMs: 0, sizeBytesMin: 0, target: 'default', compress: false, durable: 'flash' });
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

/** A file target wrapped in fault injection (retries quick, for tests). */
function faultyTarget(t: Test) {
  const dir = scratchDir(t);
  const faulty = new FaultyObjectStore(openObjectStore(`file://${dir}`));
  const objects = new RetryingObjectStore(faulty, { deadlineMs: 400, attemptTimeoutMs: 200, baseDelayMs: 5, delayMsMax: 50 });
  return { dir, faulty, objects };
}

async function coldFile(t: Test, sizeBytes: number, tierOptions = {}) {
  const scratch = await formatScratch(t, 128 * MiB);
  const target = faultyTarget(t);
  const opened = await openTiered(t, scratch, { objects: target.objects, recallTimeoutMs: 1000, ...tierOptions });
  const data = pattern(sizeBytes, sizeBytes);
  const ino = await writeFile(opened.fs, 'cold', data);
  await opened.tier.destage({ ino });
  await opened.tier.release(ino);
  return { ...opened, ...target, scratch, data, ino };
}

t.test('faults: a failed or truncated upload leaves the extents on flash; the retry is safe', async (t) => {
  const scratch = await formatScratch(t);
  const { dir, faulty, objects } = faultyTarget(t);
  const { fs, tier } = await openTiered(t, scratch, { objects });
  const data = pattern(11, 3 * MiB);
  const ino = await writeFile(fs, 'f', data);
  faulty.inject({ op: 'put', kind: 'fail', count: Infinity });
  await t.rejects(tier.destage({ ino }), { code: 'UNAVAILABLE' });
  t.equal(tier.fileResidency(ino).flashOnlyBytes, 3 * MiB, 'still FLASH');
  t.ok(tier.status().target.reachable === false && tier.counters.destageFailureCount === 1);
  faulty.faults.length = 0;
  faulty.inject({ op: 'put', kind: 'truncate', count: 1 });
  await t.rejects(tier.destage({ ino }), { code: 'UNAVAILABLE', message: /were sent/ }, 'a short object is caught by the size check');
  t.equal(tier.fileResidency(ino).flashOnlyBytes, 3 * MiB);
  faulty.inject({ op: 'put', kind: 'throttle', count: 2 });
  t.equal(await tier.destage({ ino }), 3 * MiB, 'throttling is retried through');
  t.equal(tier.status().target.reachable, true);
  await tier.collectGarbage();
  const left: string[] = [];
  for await (const item of objects.list('')) left.push(item.key);
  t.equal(left.length, 1, 'the failed packs were deleted; one pack remains');
  t.equal(tier.status().packs.count, 1);
  await tier.release(ino);
  t.ok((await readFile(fs, ino)).equals(data));
});

t.test('faults: corrupted reads are EIO and counted; damage in transit is healed by one fresh GET', async (t) => {
  const { fs, tier, faulty, ino, data } = await coldFile(t, 2 * MiB);
  faulty.inject({ op: 'get', kind: 'corrupt', count: 1 });
  t.ok((await readFile(fs, ino)).equals(data), 'one bad response: fetched again, correct');
  t.equal(tier.counters.recallChecksumErrorCount, 1);
  await tier.settle();
  await tier.release(ino); // drop what the read wrote back
  tier.dropRecallCache();
  faulty.inject({ op: 'get', kind: 'corrupt', count: Infinity });
  const fh = await fs.open(ino, 0, ROOT);
  t.equal(await code(fs.read(fh, 0, MiB)), 'CHECKSUM', 'persistent corruption: EIO, never wrong bytes');
  t.equal(await code(fs.read(fh, 12288, 4096)), 'CHECKSUM', 'a small read of a plain entry is verified too');
  await fs.release(fh);
  t.ok(tier.counters.recallChecksumErrorCount >= 5, 'every failed verification counted');
});

t.test('degraded mode: flash keeps serving; a cold read answers EIO within the recall deadline', async (t) => {
  const { fs, tier, faulty, ino } = await coldFile(t, 2 * MiB, { recallTimeoutMs: 300 });
  const keepAlive = setInterval(() => undefined, 1000); // deadlines are unref'd timers; a daemon has its mount to keep it alive
  t.teardown(() => clearInterval(keepAlive));
  const hot = await writeFile(fs, 'hot', pattern(12, MiB));
  faulty.unreachable = true;
  const fh = await fs.open(ino, 0, ROOT);
  t.equal(await code(fs.read(fh, 0, 4096)), 'UNAVAILABLE', 'an unreachable target: EIO (how soon: the next test, on simulated time)');
  await fs.release(fh);
  t.ok(tier.counters.recallFailureCount >= 1);
  t.equal(tier.status().target.reachable, false);
  t.ok((await readFile(fs, hot)).equals(pattern(12, MiB)), 'flash-resident data is served');
  const more = await writeFile(fs, 'new', pattern(13, 3 * MiB));
  t.ok((await readFile(fs, more)).equals(pattern(13, 3 * MiB)), 'and written');
  faulty.inject({ op: 'get', kind: 'hang', count: Infinity });
  faulty.unreachable = false;
  const fh2 = await fs.open(ino, 0, ROOT);
  t.equal(await code(fs.read(fh2, MiB, 4096)), 'UNAVAILABLE', 'a target that never answers: EIO too');
  await fs.release(fh2);
});

t.test('degraded mode on simulated time: a read of cold data answers EIO exactly at the recall deadline, not before', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const faulty = new FaultyObjectStore(openObjectStore(`file://${scratchDir(t)}`));
  const clock = new SimulatedClock();
  const { fs, tier } = await openTiered(t, scratch, { objects: faulty, recallTimeoutMs: 30_000 }, clock);
  const ino = await writeFile(fs, 'cold', pattern(14, MiB));
  await settled(clock, tier.destage({ ino }));
  await tier.release(ino);
  faulty.inject({ op: 'get', kind: 'hang', count: Infinity }); // a target that takes requests and never answers
  const fh = await fs.open(ino, 0, ROOT);
  let answer: string | undefined;
  void code(fs.read(fh, 0, 4096)).then((c) => (answer = c));
  await clock.advance(29_999);
  t.equal(answer, undefined, 'no answer 1 ms before the deadline: the target could still answer');
  await clock.advance(1);
  t.equal(answer, 'UNAVAILABLE', 'EIO at the deadline');
  t.equal(tier.counters.recallFailureCount, 1, 'counted once');
  await fs.release(fh);
});

t.test('recall: concurrent reads share one fetch; random reads write back; a scan fills flash only below the low watermark', async (t) => {
  const { fs, tier, ino, data } = await coldFile(t, 4 * MiB);
  const fh = await fs.open(ino, 0, ROOT);
  const gets = tier.counters.recallGetCount;
  const at = [3, 0, 6, 12].map((i) => 2 * MiB + i * 65536); // not sequential: no readahead in the way
  const reads = await Promise.all(at.map((offset) => fs.read(fh, offset, 65536)));
  at.forEach((offset, i) => t.ok(reads[i].equals(data.subarray(offset, offset + 65536))));
  t.equal(tier.counters.recallGetCount - gets, 2, "one GET for the first reader's blocks, one whole-extent GET shared by the rest");
  await fs.release(fh);
  await tier.settle();
  t.ok(tier.counters.writtenBackBytes >= MiB, 'a random read writes its extent back to flash');
  t.ok(tier.fileResidency(ino).bothBytes >= MiB);

  const big = pattern(77, 72 * MiB);
  const bigIno = await writeFile(fs, 'backup.tar', big);
  await tier.destage({ ino: bigIno });
  await tier.release(bigIno);
  // Little room below the low watermark: the scan takes that room and no more; nothing is evicted for it.
  await tier.setWatermarks(60, 20);
  const evicted = tier.counters.evictedBytes;
  const before = tier.counters.writtenBackBytes;
  const getsBefore = tier.counters.recallGetCount;
  t.ok((await readFile(fs, bigIno, 128 * 1024)).equals(big), 'a sequential scan reads correct bytes');
  await tier.settle();
  const scanGets = tier.counters.recallGetCount - getsBefore;
  t.ok(scanGets <= 72 / 4, `the pipeline fetches several entries per GET: ${scanGets} GETs for 72 MiB`);
  t.ok(tier.flash.usedBytes <= tier.lowBytes, `flash use ${tier.flash.usedBytes} stays at or below the low watermark ${tier.lowBytes}`);
  t.ok(tier.counters.writtenBackBytes - before >= 8 * MiB, 'the room there is taken');
  t.ok(tier.counters.straightThroughBytes >= 40 * MiB, 'the rest is served straight through');
  t.equal(tier.counters.evictedBytes, evicted, 'a scan makes nothing leave flash');

  // Room for all of it: the whole file comes back to flash, and a second read costs no GET.
  await tier.release(bigIno);
  await tier.setWatermarks(95, 90);
  const writtenBefore = tier.counters.writtenBackBytes;
  t.ok((await readFile(fs, bigIno, MiB)).equals(big));
  await tier.settle();
  const left = tier.fileResidency(bigIno).objectOnlyBytes;
  t.ok(left < 72 * MiB, `the scan came back to flash as fast as flash took it (${left} bytes left in the bucket only)`);
  t.equal(tier.counters.writtenBackBytes - writtenBefore + left, 72 * MiB, 'every extent either written back or served straight through');
  const again = tier.counters.recallGetCount;
  t.ok((await readFile(fs, bigIno, MiB)).equals(big));
  t.ok(tier.counters.recallGetCount - again <= left / (4 * MiB) + 8, 'the second read costs GETs only for what stayed in the bucket');
});

t.test('an entry fetched for one extent of it is verified again for another (a file overwritten in part)', async (t) => {
  const { fs, tier, ino, data, faulty } = await coldFile(t, 2 * MiB);
  // Overwrite a block at 256 KiB: the first entry now backs two extents, [0, 256 KiB) and [260 KiB, 1 MiB).
  const fh = await fs.open(ino, 2, ROOT);
  const patch = pattern(5, 4096);
  await fs.write(fh, 256 * 1024, patch);
  await fs.fsync(fh);
  await tier.destage({ ino });
  await tier.release(ino);
  // The next GET comes back with a byte flipped in its middle (512 KiB into the entry): outside the first extent.
  faulty.inject({ op: 'get', kind: 'corrupt', count: 1 });
  const errors = tier.counters.recallChecksumErrorCount;
  const head = await fs.read(fh, 0, 256 * 1024);
  t.ok(head.equals(data.subarray(0, 256 * 1024)), 'the first extent reads correct bytes (the flip is not in it)');
  const middle = await fs.read(fh, 512 * 1024, 4096);
  t.ok(middle.equals(data.subarray(512 * 1024, 512 * 1024 + 4096)), 'the second extent never gets the damaged bytes the entry was cached with');
  t.equal(tier.counters.recallChecksumErrorCount, errors + 1, 'the damage is caught (by this read or the readahead before it) and counted once, then fetched again');
  await fs.release(fh);
  await tier.settle();
  const whole = await readFile(fs, ino);
  t.ok(whole.equals(Buffer.concat([data.subarray(0, 256 * 1024), patch, data.subarray(260 * 1024)])), 'and nothing damaged reached flash by write-back');
});

t.test('recall pipeline: concurrent scans share the prefetch budget, GETs per GiB stay bounded, status counts them', async (t) => {
  const scratch = await formatScratch(t, 512 * MiB);
  const target = faultyTarget(t);
  const { fs, tier } = await openTiered(t, scratch, { objects: target.objects, recallTimeoutMs: 5000 });
  const files = await Promise.all([0, 1, 2].map(async (i) => ({ data: pattern(90 + i, 80 * MiB), ino: await writeFile(fs, `scan${i}`, pattern(90 + i, 80 * MiB)) })));
  for (const f of files) {
    await tier.destage({ ino: f.ino });
    await tier.release(f.ino);
  }
  await tier.setWatermarks(60, 1); // no room below the low watermark: every byte of the scans comes from the bucket
  const getsBefore = tier.counters.recallGetCount;
  let aheadMax = 0;
  const scan = async ({ ino, data }: { ino: Ino; data: Buffer }) => {
    const fh = await fs.open(ino, 0, ROOT);
    for (let at = 0; at < data.length; at += MiB) {
      const got = await fs.read(fh, at, MiB);
      if (!got.equals(data.subarray(at, at + MiB))) throw new Error(`scan of inode ${ino}: wrong bytes at ${at}`);
      aheadMax = Math.max(aheadMax, tier.status().recall.prefetchedBytes);
    }
    await fs.release(fh);
  };
  await Promise.all(files.map(scan));
  t.pass('three concurrent scans read correct bytes');
  t.ok(aheadMax > 0 && aheadMax <= constants.recallPrefetchBytesMax, `bytes fetched ahead and unread at most the budget (peak ${aheadMax})`);
  const gets = tier.counters.recallGetCount - getsBefore;
  t.ok(gets <= (3 * 80) / 4, `at most one GET per 4 MiB once ramped up: ${gets} GETs for 240 MiB`);
  const recall = tier.status().recall;
  t.ok(recall.getsPerGiB !== null && recall.getsPerGiB <= 256, `status: ${recall.getsPerGiB} GETs per GiB recalled`);
  t.equal(recall.getCount, tier.counters.recallGetCount);
  // 240 MiB through a 160 MiB cache: entries left it while the scans ran, and their receive slabs were
  // handed to later GETs; every byte above was checked, so none was overwritten under a reader.
  t.ok(
    recall.receiveBufferBytes > 0 && recall.receiveBufferBytes <= constants.recallSlabCountMax * constants.recallRequestBytesMax,
    `receive slabs used, within their bound: ${recall.receiveBufferBytes / MiB} MiB`,
  );
});

t.test('recall lanes: the GET behind a write-back waits for the readers on the wire', async (t) => {
  const { fs, tier, ino, data, faulty } = await coldFile(t, 4 * MiB);
  const started: { lengthBytes: number; atMs: number }[] = [];
  const ended: { lengthBytes: number; atMs: number }[] = [];
  const inner = faulty.get.bind(faulty);
  faulty.get = async (key, range, signal) => {
    started.push({ lengthBytes: range?.lengthBytes ?? -1, atMs: performance.now() });
    try {
      return await inner(key, range, signal);
    } finally {
      ended.push({ lengthBytes: range?.lengthBytes ?? -1, atMs: performance.now() });
    }
  };
  faulty.inject({ op: 'get', kind: 'delay', delayMs: 10, count: 1 });
  faulty.inject({ op: 'get', kind: 'delay', delayMs: 150, count: 1 }); // under the retry's 200 ms attempt timeout
  const fh = await fs.open(ino, 0, ROOT);
  const [a, b] = await Promise.all([fs.read(fh, 8192, 4096), fs.read(fh, 2 * MiB + 8192, 4096)]);
  t.ok(a.equals(data.subarray(8192, 12288)) && b.equals(data.subarray(2 * MiB + 8192, 2 * MiB + 12288)));
  await fs.release(fh);
  await tier.settle();
  const slowReaderEnd = ended.find((g) => g.lengthBytes === 4096 && g.atMs - started[1].atMs >= 120);
  const writeBacks = started.filter((g) => g.lengthBytes === MiB);
  t.ok(slowReaderEnd, 'the second reader waited on a slow GET');
  t.ok(writeBacks.length >= 1, 'the first read was written back with a whole-entry GET');
  t.ok(writeBacks.every((g) => g.atMs >= slowReaderEnd!.atMs - 1), 'which went on the wire only after the reader waiting on a GET had its bytes');
});

t.test('garbage collection: dead packs deleted, sparse ones repacked, garbage visible', async (t) => {
  const scratch = await formatScratch(t, 128 * MiB);
  const dir = scratchDir(t);
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${dir}` });
  const a = await writeFile(fs, 'a', pattern(21, 4 * MiB));
  const b = await writeFile(fs, 'b', pattern(22, 4 * MiB));
  await tier.destage({ ino: a });
  await tier.destage({ ino: b });
  await tier.release(b);
  t.match(tier.status().packs, { count: 2, liveBytes: 8 * MiB, garbageBytes: 0 });
  // a: overwritten whole → its pack is dead.  b: 3 of 4 MiB overwritten → sparse.
  const fha = await fs.open(a, 2, ROOT);
  await fs.write(fha, 0, pattern(23, 4 * MiB));
  await fs.release(fha);
  const fhb = await fs.open(b, 2, ROOT);
  await fs.write(fhb, MiB, pattern(24, 3 * MiB));
  await fs.release(fhb);
  await fs.fsync();
  const mid = tier.status().packs;
  t.equal(mid.liveBytes, MiB);
  t.ok(mid.garbageBytes >= 6 * MiB, `garbage visible: ${mid.garbageBytes}`);
  await tier.collectGarbage(); // deletes a's pack, repacks b's live MiB
  await tier.collectGarbage(); // deletes b's old pack
  const end = tier.status().packs;
  t.match(end, { count: 1, liveBytes: MiB, garbageBytes: 0 });
  t.equal(tier.counters.gcDeletedPackCount, 2);
  t.equal(tier.counters.repackedPackCount, 1);
  const objects: string[] = [];
  for await (const item of openObjectStore(`file://${dir}`).list('')) objects.push(item.key);
  t.equal(objects.length, 1, 'the bucket holds exactly the live pack');
  const expectB = Buffer.concat([pattern(22, 4 * MiB).subarray(0, MiB), pattern(24, 3 * MiB)]);
  t.ok((await readFile(fs, b)).equals(expectB), 'b reads back from the new pack and flash');
  t.ok((await readFile(fs, a)).equals(pattern(23, 4 * MiB)));
});

t.test('orphans and foreign objects in the prefix; unfinished uploads after a crash', async (t) => {
  const scratch = await formatScratch(t, 128 * MiB);
  const dir = scratchDir(t);
  const first = await openTiered(t, scratch, { url: `file://${dir}` });
  const ino = await writeFile(first.fs, 'f', pattern(31, 2 * MiB));
  await first.tier.destage({ ino });
  const uuid = first.tier.fsUuid;
  // A crash between committing the row and the upload's end: the row says uploading.
  const ghost = '0123456789abcdef0123456789abcdef';
  first.meta.mutate(() =>
    first.meta.putPack({ packId: ghost as never, state: 'uploading', storedBytes: 10, logicalBytes: 10, liveBytes: 0, createdMs: 1, nonce: null, target: 'default', deadSeq: null }),
  );
  await first.store.commit();
  await first.close();
  const store = openObjectStore(`file://${dir}`);
  await store.put(`${uuid}/packs/01/${ghost}`, [Buffer.from('half a pack')]);
  await store.put(`${uuid}/packs/fe/fedcba9876543210fedcba9876543210`, [Buffer.from('no row: an orphan')]);
  await store.put(`${uuid}/packs/README.txt`, [Buffer.from('someone else put this here')]);
  const second = await openTiered(t, scratch, { url: `file://${dir}` });
  await second.tier.listed(); // the start-up listing (not raced by a second one: that made this test flaky)
  t.equal(second.tier.counters.orphanPackCount, 2, 'the unfinished upload and the orphan');
  t.equal(second.tier.counters.foreignObjectCount, 1);
  t.same(await second.tier.reconcile(), { orphanCount: 0, foreignCount: 1 }, 'a second listing finds nothing more to delete');
  t.equal(await store.head(`${uuid}/packs/01/${ghost}`), undefined, 'the unfinished upload was deleted at start');
  t.equal(await store.head(`${uuid}/packs/fe/fedcba9876543210fedcba9876543210`), undefined, 'the orphan was deleted');
  t.ok(await store.head(`${uuid}/packs/README.txt`), 'the foreign object was left alone');
  t.equal(second.tier.status().packs.count, 1);
  t.equal(second.tier.fileResidency(ino).bothBytes, 2 * MiB, 'the committed destage survived the restart');
});

t.test('encryption and compression: nothing readable in the bucket, everything readable through tierfs', async (t) => {
  const dir = scratchDir(t);
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  const key = Buffer.alloc(32, 7);
  const { formatFlashPath } = await import('../src/fs/fs');
  await formatFlashPath(flash, meta, { sizeBytes: 64 * MiB, target: `file://${dir}/objects`, encryptionKey: key });
  const scratch = { dir, flash, meta };
  const { fs, tier } = await openTiered(t, scratch, { encryptionKey: key, compress: true });
  const text = Buffer.from('a very compressible secret line of text\n'.repeat(80_000));
  const ino = await writeFile(fs, 'secret.txt', text);
  await tier.destage({ ino });
  await tier.release(ino);
  const status = tier.status();
  t.ok(status.packs.storedBytes < text.length / 4, `compressed: ${status.packs.storedBytes} stored for ${text.length}`);
  t.equal(status.target.encrypted, true);
  const objects: string[] = [];
  for await (const item of openObjectStore(`file://${dir}/objects`).list('')) objects.push(item.key);
  const raw = await fsp.readFile(path.join(dir, 'objects', objects[0]));
  t.notOk(raw.includes(Buffer.from('secret line')), 'no plaintext in the pack');
  t.throws(() => describePack(raw, { fsUuid: tier.fsUuid, key: null }), { message: /encrypted and no key/ });
  t.throws(() => describePack(raw, { fsUuid: tier.fsUuid, key: Buffer.alloc(32, 8) }), { code: 'CHECKSUM', message: /authentication failed/ });
  t.equal(describePack(raw, { fsUuid: tier.fsUuid, key }).entries.length, Math.ceil(text.length / MiB));
  t.ok((await readFile(fs, ino)).equals(text), 'decrypted and inflated on recall');
});

t.test('encryption keys: missing, wrong or unexpected keys are refused at open', async (t) => {
  const dir = scratchDir(t);
  const { formatFlashPath, openFileSystem } = await import('../src/fs/fs');
  const flash = path.join(dir, 'flash');
  await formatFlashPath(flash, path.join(dir, 'meta'), { sizeBytes: 32 * MiB, target: `file://${dir}/o`, encryptionKey: Buffer.alloc(32, 1) });
  await t.rejects(openFileSystem(flash, path.join(dir, 'meta')), { code: 'USAGE', message: /encrypts its object tier/ });
  await t.rejects(openFileSystem(flash, path.join(dir, 'meta'), { tier: { encryptionKey: Buffer.alloc(32, 2) } }), { message: /not the one/ });
  await t.rejects(openFileSystem(flash, path.join(dir, 'meta'), { tier: { url: `file://${dir}/other`, encryptionKey: Buffer.alloc(32, 1) } }), {
    message: /packs are in file:\/\/.*\/o; --target .* differs/,
  });
  const plain = path.join(dir, 'plain');
  await formatFlashPath(plain, path.join(dir, 'meta2'), { sizeBytes: 32 * MiB, target: `file://${dir}/p` });
  await t.rejects(openFileSystem(plain, path.join(dir, 'meta2'), { tier: { encryptionKey: Buffer.alloc(32, 1) } }), { message: /without encryption/ });
});

t.test('regression: an extent rewritten into the very blocks it was read from is not marked clean (ABA)', async (t) => {
  const scratch = await formatScratch(t);
  const { fs, store, meta } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}` });
  const ino = await writeFile(fs, 'f', pattern(61, MiB));
  const [read] = meta.fileExtents(ino);
  // The same place and length, other bytes: what a rewrite that reused the freed blocks leaves.
  meta.mutate(() => meta.putExtent({ ...read, checksums: Buffer.from(read.checksums).fill(0x5a, 0, 4) }));
  const ref = { packId: '0'.repeat(32) as never, entryIndex: 0, storedOffsetBytes: 64, storedLengthBytes: MiB, encoding: 0, skipBytes: 0 };
  t.equal(meta.mutate(() => store.markPacked(read, ref)), false, 'not the extent that was read');
  t.equal(meta.mutate(() => store.markPacked(meta.fileExtents(ino)[0], ref)), true, 'the extent as it is now');
});

t.test('a pack truncated at rest: reads of what it lost are EIO, the rest of the file reads', async (t) => {
  const scratch = await formatScratch(t);
  const dir = scratchDir(t);
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${dir}`, recallTimeoutMs: 2000 });
  const data = pattern(71, 4 * MiB);
  const ino = await writeFile(fs, 'f', data);
  await tier.destage({ ino });
  await tier.release(ino);
  const keys: string[] = [];
  for await (const item of openObjectStore(`file://${dir}`).list('')) keys.push(item.key);
  await fsp.truncate(path.join(dir, keys[0]), 2 * MiB + 100); // someone cut the object short
  const fh = await fs.open(ino, 0, ROOT);
  t.ok((await fs.read(fh, 0, MiB)).equals(data.subarray(0, MiB)), 'the first extent is still there');
  t.equal(await code(fs.read(fh, 3 * MiB, 4096)), 'IO', 'what was cut off is EIO');
  t.equal(await code(fs.read(fh, 3 * MiB, MiB)), 'IO');
  await fs.release(fh);
  t.ok(tier.counters.recallFailureCount >= 2, 'and counted');
});

t.test('regression: a background pass with too little cold data for a pack waits for more, without failing', async (t) => {
  const scratch = await formatScratch(t);
  let now = 1_000_000_000;
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}`, packWaitMsMax: 60_000, coolAfterMs: 1000 }, clockAt(() => now));
  const ino = await writeFile(fs, 'small', pattern(81, 2 * MiB));
  now += 2000; // cold, but a 2 MiB pack is not worth it yet
  t.equal(await tier.destage({ background: true }), 0, 'nothing uploaded yet');
  t.equal(tier.fileResidency(ino).objectBytes, 0);
  now += 61_000; // it has waited long enough
  t.equal(await tier.destage({ background: true }), 2 * MiB, 'then a small pack goes up');
});

t.test('small files at their size in packs: the zero tail of a last block is not stored, and comes back on recall', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const objectsDir = scratchDir(t);
  const { fs, tier, meta } = await openTiered(t, scratch, { url: `file://${objectsDir}` });
  const small = [];
  for (let i = 0; i < 100; i++) small.push({ ino: await writeFile(fs, `s${i}`, pattern(200 + i, 1000)), data: pattern(200 + i, 1000) });
  // A block whose own last bytes are zeros (they are data, and must come back), and an extent of nothing but zeros.
  const zeroEnded = Buffer.concat([pattern(300, 2000), Buffer.alloc(2096)]);
  const zeroEndedIno = await writeFile(fs, 'zero-ended', zeroEnded);
  const zerosIno = await writeFile(fs, 'zeros', Buffer.alloc(MiB));
  const inos = [...small.map((s) => s.ino), zeroEndedIno, zerosIno];
  t.equal(await tier.destage({ inos }), 101 * 4096 + MiB, 'every extent destaged (in whole blocks)');
  const packs = tier.status().packs;
  t.equal(packs.count, 1);
  t.ok(packs.storedBytes <= 1.1 * (100 * 1000 + 2000), `the pack holds about what the files hold: ${packs.storedBytes} bytes for ${100 * 1000 + 2000} (+ 1 MiB of zeros)`);
  t.ok(packs.storedBytes >= 100 * 1000 + 2000, 'and no less (every data byte is there)');
  const keys: string[] = [];
  for await (const item of openObjectStore(`file://${objectsDir}`).list(packKeyPrefix(tier.fsUuid))) keys.push(item.key);
  const described = describePack(await fsp.readFile(path.join(objectsDir, keys[0])), { fsUuid: tier.fsUuid, key: null });
  t.equal(described.version, 2, 'a pack of format 2');
  t.ok(described.entries.every((e) => e.lengthBytes % 4096 === 0 && e.storedLengthBytes < e.lengthBytes), 'the index keeps each plain length; each entry is stored shorter');
  for (const ino of inos) await tier.release(ino);
  tier.dropRecallCache();
  for (const [i, s] of small.entries()) t.ok((await readFile(fs, s.ino)).equals(s.data), `s${i} reads back from the pack`);
  t.ok((await readFile(fs, zeroEndedIno)).equals(zeroEnded), 'zeros that were data come back');
  t.ok((await readFile(fs, zerosIno)).equals(Buffer.alloc(MiB)), 'an extent of zeros comes back');
  for (const e of meta.fileExtents(zeroEndedIno)) await tier.verifyPackCopy(e); // fsck --deep's check: the restored block verifies
  t.equal(tier.counters.recallChecksumErrorCount, 0, 'every restored block verified');
});

t.test('regression (simulation seed 1045281952): two extents of one entry stored without its zero tail, the shorter one read first', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const { fs, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}` });
  const data = Buffer.concat([pattern(400, 8192 + 100), Buffer.alloc(4096 - 100)]); // three blocks, the last nearly all zeros
  const ino = await writeFile(fs, 'f', data);
  await tier.destage({ ino });
  await tier.release(ino);
  const fh = await fs.open(ino, 2 /* O_RDWR */, ROOT);
  const middle = pattern(401, 4096);
  await fs.write(fh, 4096, middle); // the entry's extent splits: its head and its tail stay in the pack
  await fs.fsync(fh);
  tier.dropRecallCache();
  // The head alone first (a read that is not sequential starts no readahead): its fetch decodes the entry as far as the head needs.
  t.ok((await fs.read(fh, 4096, 4096)).equals(middle));
  t.ok((await fs.read(fh, 0, 4096)).equals(data.subarray(0, 4096)), 'the head, decoded as far as it needs');
  t.ok((await fs.read(fh, 8192, 4096)).equals(data.subarray(8192)), 'the tail of the same cached entry reads its zeros back');
  await fs.release(fh);
  t.ok((await readFile(fs, ino)).equals(Buffer.concat([data.subarray(0, 4096), middle, data.subarray(8192)])));
});

t.test('an entry encoding this tierfs does not know is refused, not misread', async (t) => {
  const ref = { packId: 'ab'.repeat(16) as never, entryIndex: 0, storedOffsetBytes: 64, storedLengthBytes: 4096, encoding: 8, skipBytes: 0 };
  await t.rejects(decodeEntry({ fsUuid: '00000000-0000-0000-0000-000000000000', key: null }, ref.packId, null, ref, Buffer.alloc(4096), 4096), { code: 'VERSION', message: /encoding 8 is not one this tierfs knows/ });
  const trimmed = { ...ref, encoding: 4, storedLengthBytes: 3 };
  t.same(await decodeEntry({ fsUuid: '00000000-0000-0000-0000-000000000000', key: null }, ref.packId, null, trimmed, Buffer.from([1, 2, 3]), 4096), Buffer.concat([Buffer.from([1, 2, 3]), Buffer.alloc(4093)]), 'a zero tail comes back to the length asked for');
});

t.test('sealed and deflated entries decode the same on the event loop (small) and on the thread pool (large)', async (t) => {
  const crypto = { fsUuid: '11111111-2222-3333-4444-555555555555', key: Buffer.alloc(32, 7) };
  const writer = new PackWriter(crypto, 0);
  const text = (bytes: number) => Buffer.from('tierfs recalls sealed, deflated entries off the event loop. '.repeat(Math.ceil(bytes / 60)).slice(0, bytes));
  const small = text(16384);
  const large = Buffer.concat([text(512 * 1024), pattern(3, 512 * 1024)]);
  const sums = (b: Buffer) => Buffer.alloc((b.length / 4096) * 4);
  const refs = [writer.add(5 as Ino, 0, small, sums(small), true), writer.add(5 as Ino, small.length, large, sums(large), true)];
  const object = Buffer.concat(writer.finish());
  for (const [i, plain] of [small, large].entries()) {
    const ref = refs[i];
    t.ok(ref.encoding & PACK_ENCODING.deflate && ref.encoding & PACK_ENCODING.aes256gcm, `entry ${i} is deflated and sealed`);
    const stored = object.subarray(ref.storedOffsetBytes, ref.storedOffsetBytes + ref.storedLengthBytes);
    t.ok((await decodeEntry(crypto, writer.packId, writer.nonce, ref, stored, plain.length)).equals(plain), `entry ${i} (${stored.length} stored bytes) decodes to its plain bytes`);
    const damaged = Buffer.from(stored);
    damaged[damaged.length >> 1] ^= 1;
    await t.rejects(decodeEntry(crypto, writer.packId, writer.nonce, ref, damaged, plain.length), { code: 'CHECKSUM', message: /authentication failed/ }, `a flipped bit in entry ${i} is refused`);
    await t.rejects(decodeEntry({ ...crypto, key: Buffer.alloc(32, 8) }, writer.packId, writer.nonce, ref, stored, plain.length), { code: 'CHECKSUM' }, `entry ${i} under another key is refused`);
  }
});
