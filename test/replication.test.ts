// The bucket as the system of record: metadata replicated to the target,
// a file system rebuilt from its bucket alone (to the newest point or an
// earlier one), dead packs kept for restore points, an encrypted bucket with
// no name in plaintext, a blank flash tier adopted with its lost files
// listed, and every bad restore refused with nothing written.
import t from 'tap';
import type { Test } from 'tap';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO, listFileSystems, restoreFileSystem, type FileSystem, type Ino, type OpenFileSystem } from '../src/fs/fs';
import { openObjectStore, openTarget, type ObjectStore, type ReplicationOptions } from '../src/tier/tier';
import { decodeMetaObject, encodeMetaObject, logKey, metaPrefix } from '../src/tier/replica_format';
import { constants } from '../src/constants';
import { formatFlashPath } from '../src/fs/fs';
import { clockAt, code, openTiered, pattern, readFile, scratchDir, writeFile, type Scratch } from './helpers/fs';
import { startAzurite, startS3rver, testBucket } from './helpers/servers';

const MiB = 2 ** 20;
const day = 86_400_000;
const replication: ReplicationOptions = { rpoMs: 1000, retentionMs: 7 * day, snapshotLogBytes: 64 * MiB, snapshotIntervalMs: day };

async function formatWith(t: Test, url: string, encryptionKey?: Buffer): Promise<Scratch> {
  const dir = scratchDir(t);
  const scratch = { dir, flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') };
  await formatFlashPath(scratch.flash, scratch.meta, { sizeBytes: 128 * MiB, target: url, encryptionKey });
  return scratch;
}

/** Everything a walker sees of the namespace: per path, the inode's attributes, xattrs and symlink target. */
async function record(fs: FileSystem): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (ino: Ino, at: string): Promise<void> => {
    const attr = await fs.getattr(ino);
    const xattrs: Record<string, string> = {};
    for (const name of await fs.listxattr(ino, ROOT)) xattrs[name] = (await fs.getxattr(ino, name, ROOT)).toString('hex');
    const kind = attr.mode & 0o170000;
    const entry = {
      ino: attr.ino, mode: attr.mode, uid: attr.uid, gid: attr.gid, nlink: attr.nlink, size: attr.sizeBytes,
      atime: String(attr.atimeNs), mtime: String(attr.mtimeNs), ctime: String(attr.ctimeNs), btime: String(attr.btimeNs),
      xattrs, ...(kind === 0o120000 ? { link: await fs.readlink(ino) } : {}),
    };
    out.set(at, JSON.stringify(entry));
    if (kind !== 0o040000) return;
    for (let offset = 0; ; ) {
      const entries = await fs.readdir(ino, offset, 100, ROOT);
      if (entries.length === 0) break;
      for (const e of entries) if (e.name !== '.' && e.name !== '..') await walk(e.ino, `${at}/${e.name}`);
      offset = entries[entries.length - 1].nextOffset;
    }
  };
  await walk(ROOT_INO, '');
  return out;
}

/** A small namespace with every kind of thing the metadata holds. */
async function populate(fs: FileSystem, seed: number): Promise<Map<Ino, Buffer>> {
  const files = new Map<Ino, Buffer>();
  const dir = await fs.mkdir(ROOT_INO, `dir-${seed}`, 0o750, ROOT);
  for (let i = 0; i < 6; i++) {
    const data = pattern(seed * 100 + i, 1000 + i * 300_000);
    const { attr, fh } = await fs.create(dir.ino, `file-${i}`, 0o640, 2, ROOT);
    await fs.write(fh, 0, data);
    await fs.release(fh);
    files.set(attr.ino, data);
  }
  const [first] = files.keys();
  await fs.link(first, ROOT_INO, `hardlink-${seed}`, ROOT);
  await fs.symlink(dir.ino, 'symlink', `../elsewhere/${seed}`, ROOT);
  await fs.setxattr(first, 'user.note', Buffer.from(`note ${seed}`), 0, ROOT);
  await fs.setxattr(dir.ino, 'user.binary', Buffer.from([0, 1, 2, 255]), 0, ROOT);
  await fs.setattr(first, { uid: 1234, gid: 5678, mode: 0o100600, mtime: 1_600_000_000_123_456_789n, atime: 1_500_000_000_987_654_321n }, ROOT);
  return files;
}

/** The message a promise fails with ('succeeded' when it does not). */
async function messageOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(() => 'succeeded', (error: Error) => error.message);
}

async function objectKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const item of store.list(prefix)) keys.push(item.key);
  return keys.sort();
}

/**
 * A restored database read directly: restore applies the log with indexes and
 * kept figures set aside, so check they came back whole (the same indexes and
 * triggers as the source's, figures equal to a count of the rows), and that
 * the flash offsets it dropped were not logged (only the losses are).
 */
function checkRestoredDatabase(t: Test, sourceMeta: string, restoredMeta: string): void {
  const open = (dir: string) => new Database(path.join(dir, 'tierfs.db'), { readonly: true });
  const [source, restored] = [open(sourceMeta), open(restoredMeta)];
  try {
    const schema = (db: Database.Database) => db.prepare("SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') ORDER BY name").all();
    t.same(schema(restored), schema(source), 'every index and trigger of the source is in the restored database');
    const totals = restored.prepare('SELECT flash_only_bytes, both_bytes, object_only_bytes FROM residency_totals').get();
    const counted = restored
      .prepare(
        `SELECT coalesce(sum(CASE WHEN pack_id IS NULL THEN length END), 0) AS flash_only_bytes,
                coalesce(sum(CASE WHEN pack_id IS NOT NULL AND flash_offset IS NOT NULL THEN length END), 0) AS both_bytes,
                coalesce(sum(CASE WHEN flash_offset IS NULL THEN length END), 0) AS object_only_bytes FROM extents`,
      )
      .get() as { object_only_bytes: number };
    t.same(totals, counted, 'residency totals equal a count of the extents');
    t.ok(counted.object_only_bytes > 0, 'extents are read from packs');
    const packs = restored.prepare('SELECT id, live_bytes FROM packs ORDER BY id').all();
    const live = restored.prepare('SELECT p.id, coalesce(sum(e.length), 0) AS live_bytes FROM packs p LEFT JOIN extents e ON e.pack_id = p.id GROUP BY p.id ORDER BY p.id').all();
    t.ok(packs.length > 0, 'packs came back');
    t.same(packs, live, "each pack's live bytes equal its extents'");
    t.equal(restored.prepare('SELECT count(*) FROM extents WHERE flash_offset IS NOT NULL').pluck().get(), 0, 'no extent points at the old flash tier');
    const logged = restored.prepare("SELECT tbl, count(*) AS n FROM replica_log WHERE tbl NOT IN ('anchor', 'settings') GROUP BY tbl ORDER BY tbl").all();
    const lostCount = restored.prepare('SELECT count(*) FROM lost').pluck().get() as number;
    t.ok(lostCount > 0, 'ranges were lost');
    t.same(logged, [{ tbl: 'extents', n: lostCount }, { tbl: 'lost', n: lostCount }], 'the log holds the losses (an extent deleted, a range recorded), not the dropped flash offsets');
  } finally {
    source.close();
    restored.close();
  }
}

function restoreScratch(t: Test): Scratch {
  const dir = scratchDir(t, 'tierfs-restored-');
  return { dir, flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') };
}

/** Write, destage some, write more, replicate; restore from the bucket alone; compare. */
async function roundTrip(t: Test, url: string): Promise<void> {
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  const { fs, tier } = opened;
  const packed = await populate(fs, 1);
  await fs.fsync();
  await tier.destage({ inos: [...packed.keys()] });
  for (const ino of [...packed.keys()].slice(0, 3)) await tier.release(ino);
  await tier.putPolicy({ name: 'cold', pathGlob: '/dir-1/**', mode: 'auto', coolAfterMs: 3_600_000, sizeBytesMin: 0, target: 'default', compress: true, durable: 'flash' });
  await tier.pin([...packed.keys()][4], true);
  await tier.flushReplication();
  // The pinned file's inode changes in a later log object than its pin: applying it must keep the pin.
  await fs.setattr([...packed.keys()][4], { mtime: 1_700_000_000_000_000_001n }, ROOT);
  const share = { name: 'dir1', path: '/dir-1', readOnly: false, nfs: { clients: ['10.0.0.0/8'], rootSquash: true }, smb: { users: [] }, allowWorld: false, createdMs: 1234 };
  await fs.putShare(share);
  t.equal(fs.generation, 1, 'node ids of a new file system: generation 1');
  // Written after the last destage: only on flash at the restore point.
  const unpacked = await populate(fs, 2);
  const overwritten = [...packed.keys()][5];
  const fh = await fs.open(overwritten, 2, ROOT);
  await fs.write(fh, 4096, Buffer.alloc(8192, 7));
  await fs.release(fh);
  await fs.fsync();
  await tier.flushReplication();
  const status = tier.replicationStatus()!;
  t.equal(status.lagMs, 0, 'nothing waits once flushed');
  t.ok(status.snapshotSeq !== null && status.uploadedSeq === status.committedSeq, 'a snapshot and the log up to the last commit');
  const expected = await record(fs);
  await opened.close();

  const store = openTarget(url);
  t.teardown(() => store.close());
  const listed = await listFileSystems(store);
  t.equal(listed.length, 1, 'one file system in the target');
  t.equal(listed[0].fsUuid, tier.fsUuid);
  const target = restoreScratch(t);
  const result = await restoreFileSystem({ store, targetUrl: url, flash: target.flash, metaDir: target.meta, sizeBytes: 64 * MiB });
  t.equal(result.fsUuid, tier.fsUuid);
  checkRestoredDatabase(t, source.meta, target.meta);
  const restored = await openTiered(t, target, { url, replication });
  t.same(await record(restored.fs), expected, 'the namespace equals the one replicated: names, attributes, ns times, xattrs, links');
  t.same(restored.tier.listPolicies().map((p) => p.name), ['cold'], 'policies came back');
  t.ok(restored.tier.isPinned([...packed.keys()][4]), 'pins came back');
  t.same(restored.fs.shares(), [share], 'network shares came back');
  t.equal(restored.fs.generation, 2, 'a restore raises the generation of node ids: file handles from before do not reach files numbered again');
  for (const [ino, data] of packed) {
    if (ino === overwritten) continue;
    t.ok((await readFile(restored.fs, ino)).equals(data), `inode ${ino}: byte-identical from its pack`);
  }
  const lost = restored.fs.lostFiles(100);
  t.same(lost.files.map((f) => f.ino).sort((a, b) => a - b), [...unpacked.keys(), overwritten].sort((a, b) => a - b), 'exactly the files written after their last upload are lost');
  t.same(lost.files.find((f) => f.ino === overwritten)?.ranges, [{ fileOffsetBytes: 4096, lengthBytes: 8192 }], 'of the overwritten file, only the rewritten blocks');
  t.equal(await code(readFile(restored.fs, overwritten)), 'IO', 'a lost range reads as EIO, never zeros');
  const head = await restored.fs.open(overwritten, 0, ROOT);
  t.ok((await restored.fs.read(head, 0, 4096)).equals(packed.get(overwritten)!.subarray(0, 4096)), 'the rest of that file reads');
  await restored.fs.release(head);
}

t.test('replicate, then restore from a directory target alone', async (t) => {
  await roundTrip(t, `file://${scratchDir(t, 'tierfs-objects-')}`);
});

t.test('replicate, then restore from s3rver alone', async (t) => {
  const server = await startS3rver(t);
  await roundTrip(t, `s3://${testBucket}/fs?endpoint=${server.endpoint}&region=us-east-1`);
});

t.test('replicate, then restore from azurite alone', async (t) => {
  const server = await startAzurite(t);
  await roundTrip(t, `azure://${testBucket}/fs?endpoint=${server.endpoint}`);
});

t.test('point in time: three restores, each equal to its record', async (t) => {
  const url = `file://${scratchDir(t, 'tierfs-objects-')}`;
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  const points: { atMs: number; expected: Map<string, string> }[] = [];
  for (let phase = 1; phase <= 3; phase++) {
    await populate(opened.fs, phase);
    if (phase === 2) await opened.fs.rename(ROOT_INO, 'dir-1', ROOT_INO, 'renamed', 0, ROOT);
    if (phase === 3) await opened.fs.unlink(ROOT_INO, 'hardlink-2', ROOT);
    await opened.fs.fsync();
    await opened.tier.flushReplication();
    points.push({ atMs: Date.now(), expected: await record(opened.fs) });
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await opened.close();
  const store = openTarget(url);
  t.teardown(() => store.close());
  const target0 = restoreScratch(t);
  t.match(
    await messageOf(restoreFileSystem({ store, targetUrl: url, flash: target0.flash, metaDir: target0.meta, atMs: points[0].atMs })),
    /restore points are newer .* add --discard-later/,
    'an older point is refused while newer ones exist',
  );
  t.notOk(fs.existsSync(target0.meta) || fs.existsSync(target0.flash), 'and nothing was written');
  for (let i = 2; i >= 0; i--) {
    const target = restoreScratch(t);
    const result = await restoreFileSystem({ store, targetUrl: url, flash: target.flash, metaDir: target.meta, atMs: points[i].atMs, discardLater: true, sizeBytes: 32 * MiB });
    t.ok(result.point.timeMs <= points[i].atMs);
    const restored = await openTiered(t, target, { url });
    t.same(await record(restored.fs), points[i].expected, `restore to point ${i + 1} equals its record`);
    await restored.close();
  }
});

t.test('a log object holds each row changed once, as it is at the object\'s last change', async (t) => {
  const objects = scratchDir(t, 'tierfs-objects-');
  const url = `file://${objects}`;
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  await opened.tier.flushReplication();
  const dir = await opened.fs.mkdir(ROOT_INO, 'many', 0o755, ROOT);
  const inos: Ino[] = [];
  for (let i = 0; i < 300; i++) {
    const { attr, fh } = await opened.fs.create(dir.ino, `f${i}`, 0o644, 2, ROOT);
    await opened.fs.write(fh, 0, pattern(i, 1000));
    await opened.fs.release(fh);
    inos.push(attr.ino);
  }
  await opened.fs.unlink(dir.ino, 'f7', ROOT);
  await opened.fs.fsync();
  await opened.tier.flushReplication();
  const dirMtime = (await opened.fs.getattr(dir.ino)).mtimeNs;
  const uuid = opened.tier.fsUuid;
  await opened.close();
  const store = openObjectStore(url);
  const logs = (await objectKeys(store, metaPrefix(uuid))).filter((k) => k.includes('/log/'));
  const text = (await decodeMetaObject({ fsUuid: uuid, key: null }, logs[logs.length - 1], await fsp.readFile(path.join(objects, logs[logs.length - 1])))).toString();
  const lines = text.split('\n').slice(0, -1);
  t.match(lines[0], /^#tierfs-log 2 \d+$/, 'format 2, with its line count');
  t.equal(Number(lines[0].split(' ')[2]), lines.length - 1);
  const keyed = lines.slice(1).map((line) => line.split('\t'));
  const ofInode = (ino: Ino) => keyed.filter(([table, , json]) => table === 'inodes' && (JSON.parse(json) as number[])[0] === ino);
  t.equal(ofInode(dir.ino).length, 1, 'the directory, changed by 301 operations, is in it once');
  t.match(ofInode(dir.ino)[0][2], new RegExp(`,${dirMtime},`), 'as it is at the end (its mtime, from the last unlink)');
  t.equal(ofInode(inos[3]).length, 1, 'a file created and written: its inode once');
  t.same(ofInode(inos[7]).map(([, op]) => op), ['del'], 'a file created and removed in the window: its key, deleted');
  t.equal(keyed.filter(([table]) => table === 'inodes').length, 300 + 2, 'the 300 files, their directory and the root');
  t.notOk(keyed.some(([table, , json]) => table === 'settings' && json.startsWith('["replica')), 'no bookkeeping of the log itself');
});

t.test('changes committed while the log is read go up in that object, and nothing is shown waiting after it', async (t) => {
  const url = `file://${scratchDir(t, 'tierfs-objects-')}`;
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  await opened.tier.flushReplication();
  await writeFile(opened.fs, 'before', pattern(1, 100));
  const read = opened.meta.replicaLogText.bind(opened.meta);
  let late = false;
  opened.meta.replicaLogText = async (afterSeq) => {
    if (!late) {
      late = true; // a commit between the replicator taking its aim and the reader's transaction
      await writeFile(opened.fs, 'during', pattern(2, 100));
    }
    return read(afterSeq);
  };
  await opened.tier.flushReplication();
  t.ok(late);
  const status = opened.tier.replicationStatus()!;
  t.equal(status.uploadedSeq, status.committedSeq, 'the late commit is in the bucket');
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(opened.tier.replicationStatus()!.lagMs, 0, 'and no lag is shown for it');
});

t.test('a format-1 log object (one record per change) still restores', async (t) => {
  const objects = scratchDir(t, 'tierfs-objects-');
  const url = `file://${objects}`;
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  const ino = await writeFile(opened.fs, 'old', pattern(1, 5000));
  await opened.fs.fsync();
  await opened.tier.flushReplication();
  const uuid = opened.tier.fsUuid;
  const seq = opened.tier.replicationStatus()!.uploadedSeq;
  await opened.close();
  // What tierfs before format 2 uploaded: seq TAB table TAB put|del TAB json, one per change, no header.
  const records = [
    `${seq + 1}\tpolicies\tput\t["v1","/old/**","auto",3600000,0,"default",1,"flash"]`,
    `${seq + 2}\tinodes\tput\t[${ino},33188,0,0,1,5000,0,1,1600000000000000000,1,1]`,
    `${seq + 3}\tpolicies\tput\t["v1","/older/**","auto",3600000,0,"default",1,"flash"]`,
  ];
  const key = logKey(uuid, seq + 1, seq + 3, Date.now());
  const crypto = { fsUuid: uuid, key: null };
  fs.mkdirSync(path.dirname(path.join(objects, key)), { recursive: true });
  fs.writeFileSync(path.join(objects, key), Buffer.concat(await encodeMetaObject(crypto, key, Buffer.from(records.join('\n') + '\n'))));
  const target = restoreScratch(t);
  const result = await restoreFileSystem({ store: openObjectStore(url), targetUrl: url, flash: target.flash, metaDir: target.meta, sizeBytes: 32 * MiB });
  t.equal(result.point.seq, seq + 3, 'its end is the newest point');
  const restored = await openTiered(t, target, { url });
  t.same(restored.tier.listPolicies().map((p) => [p.name, p.pathGlob]), [['v1', '/older/**']], 'its records applied in order');
  t.equal((await restored.fs.getattr(ino)).mtimeNs, 1_600_000_000_000_000_000n);
});

t.test('GC keeps a dead pack while a restore point reads it, and lets it go once that point expires', async (t) => {
  const url = `file://${scratchDir(t, 'tierfs-objects-')}`;
  let now = Date.now();
  const clock = clockAt(() => now);
  const source = await formatWith(t, url);
  const { fs, tier } = await openTiered(t, source, { url, replication }, clock);
  const ino = await writeFile(fs, 'doomed', pattern(9, 3 * MiB));
  await tier.destage({ ino });
  await tier.flushReplication(); // a restore point with the pack live
  const packKeys = async () => (await objectKeys(openObjectStore(url), `${tier.fsUuid}/packs/`)).length;
  t.equal(await packKeys(), 1);
  await fs.unlink(ROOT_INO, 'doomed', ROOT);
  await fs.fsync();
  now += 60_000;
  await tier.collectGarbage();
  t.equal(await packKeys(), 1, 'the dead pack stays: the point before its death still reads it');
  t.ok(tier.replicationStatus()!.heldForRetentionBytes > 0, 'status shows the bytes kept for retention');
  now += 8 * day; // a snapshot after the death, the first point now outside the window
  await tier.flushReplication();
  await tier.collectGarbage();
  t.equal(await packKeys(), 1, 'kept while a point in the window (from the old snapshot on) still precedes its death');
  now += 8 * day; // that snapshot too is before the window now: it becomes the oldest point
  await tier.flushReplication();
  await tier.collectGarbage();
  t.equal(await packKeys(), 0, 'gone once no point kept reads it');
  t.equal(tier.replicationStatus()!.heldForRetentionBytes, 0);
  const listing = await objectKeys(openObjectStore(url), metaPrefix(tier.fsUuid));
  t.notOk(listing.some((k) => k.includes('/snap/') && k.endsWith('manifest') && Number(k.split('/snap/')[1].split('-')[1].split('/')[0]) < now - 9 * day), 'snapshots past retention are deleted');
  t.equal(ino > 0, true);
});

t.test('encrypted: no name, path or attribute in plaintext in the bucket; restore needs the key', async (t) => {
  const objects = scratchDir(t, 'tierfs-objects-');
  const url = `file://${objects}`;
  const key = Buffer.alloc(32, 42);
  const source = await formatWith(t, url, key);
  const opened = await openTiered(t, source, { url, replication, encryptionKey: key });
  const names = ['Quarterly-Secret-Plans.xlsx', 'VeryPrivateFolder', 'user.SecretAttributeName', 'SymlinkTargetHidden'];
  const dir = await opened.fs.mkdir(ROOT_INO, names[1], 0o755, ROOT);
  const ino = await writeFile(opened.fs, names[0], pattern(3, 100_000));
  await opened.fs.setxattr(ino, names[2], Buffer.from('AttributeValueHidden'), 0, ROOT);
  await opened.fs.symlink(dir.ino, 'link', names[3], ROOT);
  await opened.tier.destage({ ino });
  await opened.tier.flushReplication();
  const uuid = opened.tier.fsUuid;
  await opened.close();
  const store = openObjectStore(url);
  const keys = await objectKeys(store, '');
  t.ok(keys.some((k) => k.startsWith(metaPrefix(uuid))), 'metadata objects are there');
  for (const k of keys) {
    const body = await fsp.readFile(path.join(objects, k));
    for (const name of [...names, 'AttributeValueHidden']) t.notOk(body.includes(Buffer.from(name)), `${name} is not in ${k}`);
  }
  const noKey = restoreScratch(t);
  t.match(await messageOf(restoreFileSystem({ store, targetUrl: url, flash: noKey.flash, metaDir: noKey.meta })), /encrypted: give the file system's key/);
  t.match(
    await messageOf(restoreFileSystem({ store, targetUrl: url, flash: noKey.flash, metaDir: noKey.meta, encryptionKey: Buffer.alloc(32, 1) })),
    /authentication failed/,
  );
  t.notOk(fs.existsSync(noKey.meta) || fs.existsSync(noKey.flash), 'refused restores wrote nothing');
  const target = restoreScratch(t);
  await restoreFileSystem({ store, targetUrl: url, flash: target.flash, metaDir: target.meta, encryptionKey: key, sizeBytes: 32 * MiB });
  const restored = await openTiered(t, target, { url, encryptionKey: key });
  t.ok((await readFile(restored.fs, ino)).equals(pattern(3, 100_000)), 'and with it, the file reads back');
});

t.test('bad restores: one clear error, nothing written anywhere', async (t) => {
  const objects = scratchDir(t, 'tierfs-objects-');
  const url = `file://${objects}`;
  const source = await formatWith(t, url);
  const opened = await openTiered(t, source, { url, replication });
  for (let i = 0; i < 5; i++) {
    await writeFile(opened.fs, `f${i}`, pattern(i, 5000));
    await opened.tier.flushReplication();
  }
  const uuid = opened.tier.fsUuid;
  await opened.close();
  const store = openObjectStore(url);
  const metaKeys = await objectKeys(store, metaPrefix(uuid));
  const logs = metaKeys.filter((k) => k.includes('/log/'));
  t.ok(logs.length >= 3, 'a log object per flush');
  const attempt = async (what: string, pattern: RegExp, prepare: (target: Scratch) => void = () => undefined, extra: object = {}) => {
    const target = restoreScratch(t);
    prepare(target);
    const before = (p: string) => (fs.existsSync(p) ? fs.statSync(p).isDirectory() ? fs.readdirSync(p).join(',') : fs.readFileSync(p).toString('hex') : null);
    const state = [before(target.meta), before(target.flash)];
    const error = await restoreFileSystem({ store, targetUrl: url, flash: target.flash, metaDir: target.meta, ...extra }).catch((e: Error) => e);
    t.match(error instanceof Error ? error.message : 'succeeded', pattern, what);
    t.same([before(target.meta), before(target.flash)], state, `${what}: nothing changed`);
  };
  await attempt('a metadata directory in use', /is not empty/, (s) => {
    fs.mkdirSync(s.meta);
    fs.writeFileSync(path.join(s.meta, 'something'), 'x');
  });
  await attempt('a flash tier holding data', /is not blank/, (s) => fs.writeFileSync(s.flash, Buffer.alloc(32 * MiB, 1)));
  await attempt('a flash tier holding another tierfs', /is not blank/, (s) => fs.copyFileSync(source.flash, s.flash));
  await attempt('a file system not in the target', /not a file-system UUID/, undefined, { fsUuid: 'nope' });
  // Damage, one object at a time (each restored after).
  const damage = async (key: string, how: 'flip' | 'remove', what: string, pattern: RegExp) => {
    const file = path.join(objects, key);
    const saved = fs.readFileSync(file);
    if (how === 'flip') {
      const copy = Buffer.from(saved);
      copy[copy.length - 3] ^= 0x40;
      fs.writeFileSync(file, copy);
    } else fs.rmSync(file);
    await attempt(what, pattern);
    fs.writeFileSync(file, saved);
  };
  await damage(logs[logs.length - 1], 'flip', 'a corrupt log object', /checksum mismatch|does not inflate/);
  await damage(logs[logs.length - 2], 'remove', 'a log with a gap', /cannot be applied \(a gap/);
  const part = metaKeys.find((k) => k.includes('/part-'))!;
  await damage(part, 'flip', 'a corrupt snapshot part', /checksum mismatch|does not inflate/);
  await damage(part, 'remove', 'a missing snapshot part', /is missing from the target/);
  fs.writeFileSync(path.join(objects, metaPrefix(uuid), 'stray'), 'not ours');
  await attempt('a foreign object under meta/', /not written by tierfs/);
  fs.rmSync(path.join(objects, metaPrefix(uuid), 'stray'));
  // Two file systems in one target: the UUID must be named.
  const second = await formatWith(t, url);
  const other = await openTiered(t, second, { url, replication });
  await other.tier.flushReplication();
  await other.close();
  await attempt('a target holding two file systems', /holds 2 file systems .* --uuid/);
  const target = restoreScratch(t);
  await restoreFileSystem({ store, targetUrl: url, flash: target.flash, metaDir: target.meta, fsUuid: uuid, sizeBytes: 32 * MiB });
  t.pass('with --uuid it restores');
  // A snapshot a crash cut short (parts, no manifest) after the newest point is debris, not history.
  const debris = `${metaPrefix(uuid)}snap/${String(999_999).padStart(16, '0')}-${String(Date.now()).padStart(13, '0')}/part-00000`;
  fs.mkdirSync(path.dirname(path.join(objects, debris)), { recursive: true });
  fs.copyFileSync(path.join(objects, part), path.join(objects, debris));
  const again = restoreScratch(t);
  await restoreFileSystem({ store, targetUrl: url, flash: again.flash, metaDir: again.meta, fsUuid: uuid, sizeBytes: 32 * MiB });
  t.pass('an unfinished snapshot after the newest point does not stop a restore');
});

t.test('a blank flash tier in place of the old one: adopted, its lost files listed, reads of them EIO', async (t) => {
  const url = `file://${scratchDir(t, 'tierfs-objects-')}`;
  const source = await formatWith(t, url);
  let opened: OpenFileSystem = await openTiered(t, source, { url });
  const safe = pattern(5, 2 * MiB + 100);
  const safeIno = await writeFile(opened.fs, 'safe', safe);
  await opened.tier!.destage({ ino: safeIno });
  const lostIno = await writeFile(opened.fs, 'only-on-flash', pattern(6, 300_000));
  await opened.close();
  // Only the superblock zeroed, the data still there: not a new disk, refused (fsck's business).
  const saved = fs.readFileSync(source.flash);
  const handle = fs.openSync(source.flash, 'r+');
  fs.writeSync(handle, Buffer.alloc(constants.superblockSizeBytes), 0, constants.superblockSizeBytes, 0);
  fs.closeSync(handle);
  t.match(await messageOf(openTiered(t, source, { url })), /no superblock/, 'a damaged superblock is not a blank disk');
  t.equal(Buffer.compare(fs.readFileSync(source.flash).subarray(constants.superblockSizeBytes), saved.subarray(constants.superblockSizeBytes)), 0, 'and nothing was written to it');
  fs.rmSync(source.flash);
  fs.writeFileSync(source.flash, Buffer.alloc(0));
  fs.truncateSync(source.flash, 64 * MiB); // a new, blank disk (another size)
  opened = await openTiered(t, source, { url });
  t.same(opened.fs.lostTotals(), { fileCount: 1, bytes: 300_000 + 4096 - (300_000 % 4096) }, 'one file lost, its blocks counted');
  t.same(opened.fs.lostFiles(10).files.map((f) => f.path), ['/only-on-flash']);
  t.ok((await readFile(opened.fs, safeIno)).equals(safe), 'destaged data reads back from its pack');
  t.equal(await code(readFile(opened.fs, lostIno)), 'IO', 'the lost file reads as EIO');
  await opened.fs.setattr(lostIno, { sizeBytes: 0 }, ROOT);
  t.same(opened.fs.lostTotals(), { fileCount: 0, bytes: 0 }, 'truncating it ends the loss');
  t.equal((await readFile(opened.fs, lostIno)).length, 0);
  await opened.close();
  // A device holding anything else is still refused.
  fs.writeFileSync(source.flash, Buffer.alloc(32 * MiB, 9));
  t.equal(await code(openTiered(t, source, { url })), 'NOT_OURS');
});

t.test('--durable object: fsync returns once the bytes are in a pack and the change in the log; concurrent fsyncs share one upload', async (t) => {
  const objects = scratchDir(t, 'tierfs-objects-');
  const url = `file://${objects}`;
  const source = await formatWith(t, url);
  const { fs: files, tier } = await openTiered(t, source, { url, replication });
  const durable = { name: 'ledger', pathGlob: '/ledger/**', mode: 'auto' as const, coolAfterMs: 3_600_000, sizeBytesMin: 0, target: 'default', compress: false, durable: 'object' as const };
  await tier.putPolicy(durable);
  await t.rejects(tier.putPolicy({ ...durable, name: 'bad', mode: 'pin' }), /--durable object does not apply/);
  await t.rejects(tier.putPolicy({ ...durable, name: 'bad', sizeBytesMin: 10 }), /--min-size does not apply/);
  const dir = await files.mkdir(ROOT_INO, 'ledger', 0o755, ROOT);
  const flashOnly = await writeFile(files, 'scratch', pattern(20, 100_000)); // another policy: fsync means flash
  t.equal(tier.fileResidency(flashOnly).flashOnlyBytes > 0, true, 'a file of the default policy stays on flash at fsync');
  const before = tier.status().packs.count;
  const written = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const { attr, fh } = await files.create(dir.ino, `entry-${i}`, 0o644, 2, ROOT);
      await files.write(fh, 0, pattern(30 + i, 50_000 + i));
      await files.fsync(fh);
      t.equal(tier.fileResidency(attr.ino).flashOnlyBytes, 0, `entry-${i}: in a pack when fsync returned`);
      await files.release(fh);
      return attr.ino;
    }),
  );
  const status = tier.replicationStatus()!;
  t.equal(status.uploadedSeq, status.committedSeq, 'and the metadata in the bucket');
  t.ok(tier.status().packs.count - before <= 3, `eight concurrent fsyncs shared ${tier.status().packs.count - before} pack upload(s)`);
  t.ok(tier.counters.durableBatchCount <= 3 && tier.counters.durableFileCount === 8);
  // The appliance is lost now, without a clean stop: the bucket alone has them.
  const copy = scratchDir(t, 'tierfs-objects-copy-');
  fs.cpSync(objects, copy, { recursive: true });
  const target = restoreScratch(t);
  await restoreFileSystem({ store: openObjectStore(`file://${copy}`), targetUrl: `file://${copy}`, flash: target.flash, metaDir: target.meta, sizeBytes: 32 * MiB });
  const restored = await openTiered(t, target, { url: `file://${copy}` });
  for (const [i, ino] of written.entries()) t.ok((await readFile(restored.fs, ino)).equals(pattern(30 + i, 50_000 + i)), `entry-${i} restored byte-identical`);
  t.same(restored.fs.lostFiles(10).files.map((f) => f.path), ['/scratch'], 'only the file of the flash policy is lost');
});

t.test('restore and --list need nothing but the target; a target without file systems says so', async (t) => {
  const store = openObjectStore(`file://${scratchDir(t, 'tierfs-objects-')}`);
  t.same(await listFileSystems(store), []);
  const target = restoreScratch(t);
  t.match(await messageOf(restoreFileSystem({ store, targetUrl: 'file:///x', flash: target.flash, metaDir: target.meta })), /holds no file system/);
  t.equal(constants.metadataRpoMsDefault, 10_000, 'the documented default bound');
});
