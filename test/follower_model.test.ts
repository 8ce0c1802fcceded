// Followers against the writer's record: a random workload on a writer
// (creates, overwrites, truncates, renames, links, symlinks, removals,
// directories, modes, xattrs), replicated round after round; after each
// round a follower applies the log, and its whole namespace — names, types,
// modes, sizes, link counts, symlink targets, xattrs and every byte — must
// equal the writer's as it was when that round's log went up.
import c from 'node:constants';
import { createHash } from 'node:crypto';
import path from 'node:path';
import t from 'tap';
import { openFileSystem, restoreFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type FileSystem, type Ino } from '../src/fs/fs';
import { prepareFollower } from '../src/fs/follow';
import { parseMetaListing } from '../src/tier/replica_format';
import { defaultReplicationOptions, openObjectStore } from '../src/tier/tier';
import { formatScratch, openTiered, scratchDir } from './helpers/fs';

/** A small deterministic PRNG (xorshift32), seeded per run. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

interface Entry {
  path: string;
  mode: number;
  size: number;
  nlink: number;
  symlink?: string;
  xattrs: string;
  sha?: string;
}

async function readAllOf(fs: FileSystem, ino: Ino, size: number): Promise<Buffer> {
  const fh = await fs.open(ino, c.O_RDONLY, ROOT);
  try {
    const parts: Buffer[] = [];
    for (let at = 0; at < size; at += 1 << 20) parts.push(Buffer.from(await fs.read(fh, at, Math.min(1 << 20, size - at))));
    return Buffer.concat(parts);
  } finally {
    await fs.release(fh);
  }
}

/** The whole namespace, sorted by path; file contents hashed. */
async function namespace(fs: FileSystem): Promise<{ entries: Entry[]; files: Ino[] }> {
  const entries: Entry[] = [];
  const files: Ino[] = [];
  const walk = async (dir: Ino, prefix: string): Promise<void> => {
    for (const d of await fs.readdir(dir, 0, 100_000, ROOT)) {
      if (d.name === '.' || d.name === '..') continue;
      const attr = await fs.getattr(d.ino);
      const p = `${prefix}/${d.name}`;
      const names = (await fs.listxattr(d.ino, ROOT)).sort();
      const xattrs = JSON.stringify(await Promise.all(names.map(async (n) => [n, (await fs.getxattr(d.ino, n, ROOT)).toString('hex')])));
      const entry: Entry = { path: p, mode: attr.mode, size: attr.sizeBytes, nlink: attr.nlink, xattrs };
      if ((attr.mode & c.S_IFMT) === c.S_IFLNK) entry.symlink = await fs.readlink(d.ino);
      if ((attr.mode & c.S_IFMT) === c.S_IFREG) {
        entry.sha = createHash('sha256').update(await readAllOf(fs, d.ino, attr.sizeBytes)).digest('hex');
        files.push(d.ino);
      }
      entries.push(entry);
      if ((attr.mode & c.S_IFMT) === c.S_IFDIR) await walk(d.ino, p);
    }
  };
  await walk(ROOT_INO, '');
  return { entries: entries.sort((a, b) => (a.path < b.path ? -1 : 1)), files };
}

const seed = Number(process.env.TIERFS_FOLLOWER_SEED ?? 1 + Math.floor(Math.random() * 2 ** 31));
const rounds = Number(process.env.TIERFS_FOLLOWER_ROUNDS ?? 12);

t.test(`a follower equals the writer's record at every position it applies (seed ${seed})`, async (t) => {
  const random = prng(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const objectsUrl = `file://${scratchDir(t)}/objects`;
  const writerScratch = await formatScratch(t, 256 * 2 ** 20);
  const writer = await openTiered(t, writerScratch, { url: objectsUrl, replication: { ...defaultReplicationOptions, rpoMs: 1000 } });
  const wfs = writer.fs;
  await writer.tier.flushReplication();

  const dir = scratchDir(t, 'tierfs-follower-');
  const follower = { flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') };
  const store = openObjectStore(objectsUrl);
  await restoreFileSystem({ store, targetUrl: objectsUrl, flash: follower.flash, metaDir: follower.meta, follower: true, sizeBytes: 64 * 2 ** 20 });
  await store.close();
  const followed = await openFileSystem(follower.flash, follower.meta, {
    commitIntervalMs: 0,
    tier: { scanIntervalMs: 0, follow: { pollIntervalMs: 3_600_000, host: 'follower' } },
  });
  t.teardown(() => followed.close().catch(() => undefined));

  // The writer's namespace, kept by the workload: paths of files and directories (the root is '').
  const files = new Map<string, Ino>();
  const dirs = new Map<string, Ino>([['', ROOT_INO]]);
  const symlinks = new Set<string>();
  let counter = 0;
  const newName = () => `n${counter++}`;
  const parentOf = (p: string) => dirs.get(p.slice(0, p.lastIndexOf('/')))!;
  const baseOf = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(random() * 256)));

  let checks = 0;
  let staleCount = 0;
  for (let round = 0; round < rounds; round++) {
    for (let op = 0; op < 25; op++) {
      const roll = random();
      const fileList = [...files.keys()];
      const dirList = [...dirs.keys()];
      if (roll < 0.25 || fileList.length === 0) {
        const p = `${pick(dirList)}/${newName()}`;
        const { attr, fh } = await wfs.create(parentOf(p), baseOf(p), 0o644, c.O_RDWR, ROOT);
        const size = pick([0, 1, 4095, 4096, 5000, 70_000, 300_000]);
        if (size > 0) await wfs.write(fh, 0, bytes(size));
        await wfs.release(fh);
        files.set(p, attr.ino);
      } else if (roll < 0.4) {
        const p = pick(fileList);
        const fh = await wfs.open(files.get(p)!, c.O_RDWR, ROOT);
        const size = (await wfs.getattr(files.get(p)!)).sizeBytes;
        await wfs.write(fh, Math.floor(random() * (size + 8192)), bytes(1 + Math.floor(random() * 20_000)));
        await wfs.release(fh);
      } else if (roll < 0.48) {
        await wfs.setattr(files.get(pick(fileList))!, { sizeBytes: Math.floor(random() * 100_000) }, ROOT);
      } else if (roll < 0.56) {
        const from = pick(fileList);
        const to = `${pick(dirList)}/${newName()}`;
        await wfs.rename(parentOf(from), baseOf(from), parentOf(to), baseOf(to), 0, ROOT);
        files.set(to, files.get(from)!);
        files.delete(from);
      } else if (roll < 0.64) {
        const p = pick(fileList);
        await wfs.unlink(parentOf(p), baseOf(p), ROOT);
        files.delete(p);
      } else if (roll < 0.7) {
        const p = `${pick(dirList)}/${newName()}`;
        dirs.set(p, (await wfs.mkdir(parentOf(p), baseOf(p), 0o755, ROOT)).ino);
      } else if (roll < 0.75) {
        const empty = dirList.filter((d) => d !== '' && ![...files.keys(), ...dirs.keys(), ...symlinks].some((x) => x.startsWith(`${d}/`)));
        if (empty.length > 0) {
          const d = pick(empty);
          await wfs.rmdir(parentOf(d), baseOf(d), ROOT);
          dirs.delete(d);
        }
      } else if (roll < 0.8) {
        const target = pick(fileList);
        const p = `${pick(dirList)}/${newName()}`;
        await wfs.link(files.get(target)!, parentOf(p), baseOf(p), ROOT);
        files.set(p, files.get(target)!);
      } else if (roll < 0.85) {
        const p = `${pick(dirList)}/${newName()}`;
        await wfs.symlink(parentOf(p), baseOf(p), `target-${counter}`, ROOT);
        symlinks.add(p);
      } else if (roll < 0.92) {
        await wfs.setattr(files.get(pick(fileList))!, { mode: pick([0o600, 0o644, 0o755, 0o400]) }, ROOT);
      } else {
        await wfs.setxattr(files.get(pick(fileList))!, `user.k${Math.floor(random() * 3)}`, bytes(1 + Math.floor(random() * 40)), 0, ROOT);
      }
    }
    // The round's data to the bucket, then its log: the writer's record at this position.
    const record = await namespace(wfs);
    await writer.tier.destage({ inos: record.files });
    await wfs.fsync();
    await writer.tier.flushReplication();
    const position = writer.tier.replicationStatus()!.uploadedSeq;
    // Files held open on the follower across the apply: each read gives the bytes as they were at open, or a clear error.
    const held: { ino: Ino; fh: number; sha: string; size: number }[] = [];
    if (round > 0)
      for (const ino of (await namespace(followed.fs)).files.slice(0, 12)) {
        const size = (await followed.fs.getattr(ino)).sizeBytes;
        held.push({ ino, fh: await followed.fs.open(ino, c.O_RDONLY, ROOT), size, sha: createHash('sha256').update(await readAllOf(followed.fs, ino, size)).digest('hex') });
      }
    await followed.tier!.settle(); // what the follower recalled is on its own flash before the writer's changes arrive
    await followed.tier!.catchUp();
    for (const h of held) {
      try {
        const parts: Buffer[] = [];
        for (let at = 0; at < h.size; at += 1 << 20) parts.push(Buffer.from(await followed.fs.read(h.fh, at, Math.min(1 << 20, h.size - at))));
        t.equal(createHash('sha256').update(Buffer.concat(parts)).digest('hex'), h.sha, `round ${round}: inode ${h.ino} held open reads as it was at open`);
      } catch (error) {
        t.match(error, { code: /^(STALE|NOT_FOUND)$/ }, `round ${round}: inode ${h.ino} changed or removed under its reader: ${(error as Error).message}`);
        staleCount += 1;
      } finally {
        await followed.fs.release(h.fh);
      }
    }
    t.equal(followed.tier!.followerStatus()!.appliedSeq, position, `round ${round}: the follower applied change ${position}`);
    const seen = await namespace(followed.fs);
    t.same(seen.entries, record.entries, `round ${round}: the follower's namespace and bytes equal the writer's (${record.entries.length} entries)`);
    checks += 1;
  }
  t.equal(checks, rounds);
  t.ok(followed.tier!.counters.writtenBackBytes > 0, `the follower kept what it recalled on its own flash (${followed.tier!.counters.writtenBackBytes} bytes), and every later check read through those copies`);
  t.comment(`${staleCount} reads of files changed under an open handle answered STALE or NOT_FOUND`);
});

t.test('the writer\'s GC keeps the packs a lagging follower still reads (within the retention window)', async (t) => {
  const objectsUrl = `file://${scratchDir(t)}/objects`;
  const writer = await openTiered(t, await formatScratch(t, 128 * 2 ** 20), { url: objectsUrl, replication: { ...defaultReplicationOptions, rpoMs: 1000 } });
  const victim = Buffer.alloc(300_000, 7);
  const { attr, fh } = await writer.fs.create(ROOT_INO, 'victim', 0o644, c.O_RDWR, ROOT);
  await writer.fs.write(fh, 0, victim);
  await writer.fs.release(fh);
  await writer.tier.destage({ ino: attr.ino });
  await writer.fs.fsync();
  await writer.tier.flushReplication();

  const dir = scratchDir(t, 'tierfs-follower-');
  const store = openObjectStore(objectsUrl);
  t.teardown(() => store.close());
  await restoreFileSystem({ store, targetUrl: objectsUrl, flash: path.join(dir, 'flash'), metaDir: path.join(dir, 'meta'), follower: true, sizeBytes: 64 * 2 ** 20 });
  const followed = await openFileSystem(path.join(dir, 'flash'), path.join(dir, 'meta'), { commitIntervalMs: 0, tier: { scanIntervalMs: 0, follow: { pollIntervalMs: 3_600_000, host: 'f' } } });
  t.teardown(() => followed.close().catch(() => undefined));
  const seen = await followed.fs.lookup(ROOT_INO, 'victim', ROOT);
  const packsBefore: string[] = [];
  for await (const item of store.list(`${writer.tier.fsUuid}/packs/`)) packsBefore.push(item.key);

  // The writer removes the file and collects garbage while the follower has not applied that yet.
  await writer.fs.unlink(ROOT_INO, 'victim', ROOT);
  await writer.fs.fsync();
  await writer.tier.flushReplication();
  await writer.tier.collectGarbage();
  const packsAfter: string[] = [];
  for await (const item of store.list(`${writer.tier.fsUuid}/packs/`)) packsAfter.push(item.key);
  t.same(packsAfter, packsBefore, 'the dead pack stays: a restore point in the retention window (and so a follower at it) still reads it');
  t.ok((await readAllOf(followed.fs, seen.ino, seen.sizeBytes)).equals(victim), 'the lagging follower still reads the file its position shows');
  await followed.tier!.catchUp();
  await t.rejects(followed.fs.lookup(ROOT_INO, 'victim', ROOT), { code: 'NOT_FOUND' }, 'caught up, the file is gone there too');
});

t.test('a follower whose log is gone from the bucket starts over from the newest restore point by itself', async (t) => {
  const objectsUrl = `file://${scratchDir(t)}/objects`;
  // A snapshot after every log object: the log a stopped follower needs can then be pruned while the file system stays restorable.
  const writer = await openTiered(t, await formatScratch(t, 128 * 2 ** 20), { url: objectsUrl, replication: { ...defaultReplicationOptions, rpoMs: 1000, snapshotLogBytes: 1 } });
  const put = async (name: string, data: Buffer) => {
    const { attr, fh } = await writer.fs.create(ROOT_INO, name, 0o644, c.O_RDWR, ROOT);
    await writer.fs.write(fh, 0, data);
    await writer.fs.release(fh);
    await writer.tier.destage({ ino: attr.ino });
    await writer.fs.fsync();
    await writer.tier.flushReplication();
  };
  await put('a', Buffer.alloc(5000, 1));
  const dir = scratchDir(t, 'tierfs-follower-');
  const start = { flash: path.join(dir, 'flash'), metaDir: path.join(dir, 'meta'), targetUrl: objectsUrl };
  t.equal(await prepareFollower(start), 'restored');
  const openFollower = () => openFileSystem(start.flash, start.metaDir, { commitIntervalMs: 0, tier: { scanIntervalMs: 0, follow: { pollIntervalMs: 3_600_000, host: 'f' } } });
  let followed = await openFollower();
  const applied = followed.tier!.followerStatus()!.appliedSeq;
  await followed.close();
  t.equal(await prepareFollower(start), 'continues', 'nothing new: it continues');

  await put('b', Buffer.alloc(6000, 2));
  await put('c', Buffer.alloc(7000, 3));
  t.equal(await prepareFollower(start), 'continues', 'the log continues it: it continues');
  // The writer's retention prunes the log after the follower's position (as after a long stop).
  const store = openObjectStore(objectsUrl);
  t.teardown(() => store.close());
  const keys: string[] = [];
  for await (const item of store.list(`${writer.tier.fsUuid}/meta/`)) keys.push(item.key);
  const listing = parseMetaListing(writer.tier.fsUuid, keys.map((key) => ({ key, sizeBytes: 0 })));
  const newest = listing.snapshots.filter((s) => s.complete).pop()!;
  t.ok(newest.seq > applied, 'a snapshot past the follower\'s position');
  for (const l of listing.logs) if (l.lastSeq <= newest.seq) await store.delete(l.key);

  t.equal(await prepareFollower(start), 'resynchronised', 'it starts over');
  followed = await openFollower();
  t.teardown(() => followed.close().catch(() => undefined));
  for (const [name, byte, size] of [['a', 1, 5000], ['b', 2, 6000], ['c', 3, 7000]] as const) {
    const attr = await followed.fs.lookup(ROOT_INO, name, ROOT);
    t.ok((await readAllOf(followed.fs, attr.ino, size)).equals(Buffer.alloc(size, byte)), `${name} reads back after starting over`);
  }
  t.match(followed.tier!.followerStatus(), { state: 'following' });
});
