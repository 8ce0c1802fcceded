// POSIX rules of src/fs that the model does not cover: permissions for non-root
// callers, sticky and setgid directories, open-unlinked files, xattrs, readdir
// offsets, O_APPEND, holes, timestamps and name limits.
import t from 'tap';
import c from 'node:constants';
import path from 'node:path';
import {
  formatFileSystem, openFileSystem, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_CREDENTIALS as ROOT, ROOT_INO, XATTR_CREATE, XATTR_REPLACE, type Credentials,
} from '../src/fs/fs';
import { SimulatedClock } from '../src/clock';
import { code, formatScratch, heldDevice, openScratch, scratchDir } from './helpers/fs';
import { constants } from '../src/constants';

const alice: Credentials = { uid: 1000, gid: 1000, groups: [] };
const bob: Credentials = { uid: 1001, gid: 1001, groups: [50] };

t.test('permissions follow the mode bits for non-root callers', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const home = await fs.mkdir(ROOT_INO, 'home', 0o777, ROOT);
  const created = await fs.create(home.ino, 'secret', 0o600, c.O_RDWR, alice);
  t.equal(created.attr.uid, 1000, 'new files belong to the caller');
  t.equal(created.attr.gid, 1000);
  await fs.release(created.fh);
  t.equal(await code(fs.open(created.attr.ino, c.O_RDONLY, bob)), 'ACCESS', 'other users cannot read 0600');
  t.equal(await code(fs.open(created.attr.ino, c.O_RDONLY, ROOT)), 'ok', 'root can');
  t.equal(await code(fs.setattr(created.attr.ino, { mode: 0o644 }, bob)), 'NOT_PERMITTED', 'only the owner chmods');
  t.equal(await code(fs.setattr(created.attr.ino, { uid: 1001 }, alice)), 'NOT_PERMITTED', 'only root gives files away');
  t.equal(await code(fs.setattr(created.attr.ino, { gid: 50 }, alice)), 'NOT_PERMITTED', 'owner may not chgrp to a foreign group');
  t.equal(await code(fs.setattr(created.attr.ino, { mtime: 5n }, bob)), 'NOT_PERMITTED', 'only the owner sets times');
  t.equal(await code(fs.setattr(created.attr.ino, { mtime: 'now' }, bob)), 'ACCESS', 'touch needs write permission');
  const locked = await fs.mkdir(ROOT_INO, 'locked', 0o755, ROOT);
  t.equal(await code(fs.mkdir(locked.ino, 'x', 0o755, alice)), 'ACCESS', 'no write permission on the parent');
  const closed = await fs.mkdir(ROOT_INO, 'closed', 0o700, ROOT);
  await fs.mkdir(closed.ino, 'inner', 0o755, ROOT);
  t.equal(await code(fs.lookup(closed.ino, 'inner', alice)), 'ACCESS', 'lookup needs search permission');
  t.equal(await code(fs.readdir(closed.ino, 0, 10, alice)), 'ACCESS', 'readdir needs read permission');
  t.equal(await code(fs.access(created.attr.ino, 4, bob)), 'ACCESS');
  t.equal(await code(fs.access(created.attr.ino, 6, alice)), 'ok');
});

t.test('a size change through a handle open for writing needs no write permission (ftruncate of a mode-0 file)', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const home = await fs.mkdir(ROOT_INO, 'home', 0o777, ROOT);
  const { attr, fh } = await fs.create(home.ino, 'mode0', 0, c.O_RDWR, alice);
  t.equal(attr.mode & 0o7777, 0);
  t.equal(await code(fs.setattr(attr.ino, { sizeBytes: 4096 }, alice)), 'ACCESS', 'by name (truncate): the mode decides');
  t.equal((await fs.setattr(attr.ino, { sizeBytes: 4096 }, alice, fh)).sizeBytes, 4096, 'through the descriptor that created it (ftruncate)');
  await fs.write(fh, 4090, Buffer.from('abcdef'));
  t.equal((await fs.setattr(attr.ino, { sizeBytes: 4092 }, alice, fh)).sizeBytes, 4092);
  t.same(await fs.read(fh, 4088, 16), Buffer.from('\0\0ab'), 'the cut is where ftruncate put it');
  const other = await fs.create(home.ino, 'other', 0o666, c.O_RDWR, alice);
  t.equal(await code(fs.setattr(attr.ino, { sizeBytes: 0 }, alice, other.fh)), 'ACCESS', "another file's handle grants nothing");
  await fs.setattr(attr.ino, { mode: 0o444 }, ROOT);
  const readOnly = await fs.open(attr.ino, c.O_RDONLY, ROOT);
  t.equal(await code(fs.setattr(attr.ino, { sizeBytes: 0 }, alice, readOnly)), 'ACCESS', 'a handle open only for reading grants nothing');
  await Promise.all([fs.release(fh), fs.release(other.fh), fs.release(readOnly)]);
});

t.test('chown clears setuid and setgid; setgid directories pass on their group', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const f = await fs.create(ROOT_INO, 'prog', 0o6755, c.O_RDWR, ROOT);
  await fs.release(f.fh);
  const after = await fs.setattr(f.attr.ino, { uid: 1000, gid: 1000 }, ROOT);
  t.equal(after.mode & 0o7777, 0o755, 'setuid and setgid cleared by chown');
  const shared = await fs.mkdir(ROOT_INO, 'shared', 0o2777, ROOT);
  await fs.setattr(shared.ino, { gid: 50 }, ROOT);
  const sub = await fs.mkdir(shared.ino, 'sub', 0o755, alice);
  t.equal(sub.gid, 50, 'new directory takes the setgid directory group');
  t.equal(sub.mode & 0o2000, 0o2000, 'and keeps the setgid bit');
  const file = await fs.create(shared.ino, 'f', 0o644, c.O_RDWR, alice);
  t.equal(file.attr.gid, 50, 'new file takes the group too');
  await fs.release(file.fh);
  const open = await fs.mkdir(ROOT_INO, 'open', 0o777, ROOT);
  const mine = await fs.create(open.ino, 'mine', 0o644, c.O_RDWR, alice);
  await fs.release(mine.fh);
  const chmod = await fs.setattr(mine.attr.ino, { mode: 0o2755 }, bob).catch(() => undefined);
  t.equal(chmod, undefined, 'non-owner chmod refused');
  await fs.setattr(mine.attr.ino, { gid: 1000 }, alice);
  const withSgid = await fs.setattr(mine.attr.ino, { mode: 0o2755 }, { uid: 1000, gid: 7, groups: [] });
  t.equal(withSgid.mode & 0o2000, 0, 'setgid dropped when the owner is not in the file group');
});

t.test('sticky directories protect other users entries', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const tmp = await fs.mkdir(ROOT_INO, 'tmp', 0o1777, ROOT);
  const f = await fs.create(tmp.ino, 'alices', 0o666, c.O_RDWR, alice);
  await fs.release(f.fh);
  t.equal(await code(fs.unlink(tmp.ino, 'alices', bob)), 'NOT_PERMITTED');
  t.equal(await code(fs.rename(tmp.ino, 'alices', tmp.ino, 'bobs', 0, bob)), 'NOT_PERMITTED');
  t.equal(await code(fs.unlink(tmp.ino, 'alices', alice)), 'ok');
});

t.test('an unlinked open file keeps its data until the last release', async (t) => {
  const scratch = await formatScratch(t);
  const opened = await openScratch(t, scratch);
  const { fs } = opened;
  const { attr, fh } = await fs.create(ROOT_INO, 'doomed', 0o644, c.O_RDWR, ROOT);
  await fs.write(fh, 0, Buffer.alloc(100000, 9));
  await fs.unlink(ROOT_INO, 'doomed', ROOT);
  t.equal(await code(fs.lookup(ROOT_INO, 'doomed', ROOT)), 'NOT_FOUND', 'the name is gone');
  t.same(await fs.read(fh, 99990, 20), Buffer.alloc(10, 9), 'the data is still readable');
  await fs.write(fh, 100000, Buffer.from('more'));
  t.equal((await fs.getattr(attr.ino)).nlink, 0);
  const freeBefore = opened.store.freeBytes;
  await fs.release(fh);
  t.equal(await code(fs.getattr(attr.ino)), 'NOT_FOUND', 'inode freed at the last release');
  await fs.fsync();
  t.ok(opened.store.freeBytes > freeBefore, 'its blocks return to the allocator after the commit');
});

t.test('an orphan left by a crash is reclaimed at the next open', async (t) => {
  const scratch = await formatScratch(t);
  const first = await openScratch(t, scratch);
  const { attr, fh } = await first.fs.create(ROOT_INO, 'orphan', 0o644, c.O_RDWR, ROOT);
  await first.fs.write(fh, 0, Buffer.alloc(50000, 1));
  await first.fs.unlink(ROOT_INO, 'orphan', ROOT);
  await first.fs.fsync(fh);
  const freeWithOrphan = first.store.freeBytes;
  first.meta.crash(); // the handle dies with the process
  await first.device.close();
  const second = await openScratch(t, scratch);
  t.equal(await code(second.fs.getattr(attr.ino)), 'NOT_FOUND', 'orphan inode removed');
  t.ok(second.store.freeBytes > freeWithOrphan, 'and its blocks freed');
});

t.test('rename: errors POSIX demands, NOREPLACE, EXCHANGE, directories', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const a = await fs.mkdir(ROOT_INO, 'a', 0o755, ROOT);
  const inner = await fs.mkdir(a.ino, 'inner', 0o755, ROOT);
  const f = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await fs.release(f.fh);
  t.equal(await code(fs.rename(ROOT_INO, 'a', inner.ino, 'x', 0, ROOT)), 'INVALID', 'into its own subtree');
  t.equal(await code(fs.rename(ROOT_INO, 'a', ROOT_INO, 'f', 0, ROOT)), 'NOT_DIR', 'directory over a file');
  t.equal(await code(fs.rename(ROOT_INO, 'f', ROOT_INO, 'a', 0, ROOT)), 'IS_DIR', 'file over a directory');
  const b = await fs.mkdir(ROOT_INO, 'b', 0o755, ROOT);
  await fs.mkdir(b.ino, 'full', 0o755, ROOT);
  t.equal(await code(fs.rename(ROOT_INO, 'a', ROOT_INO, 'b', 0, ROOT)), 'NOT_EMPTY', 'over a non-empty directory');
  t.equal(await code(fs.rename(ROOT_INO, 'missing', ROOT_INO, 'z', 0, ROOT)), 'NOT_FOUND');
  const g = await fs.create(ROOT_INO, 'g', 0o644, c.O_RDWR, ROOT);
  await fs.release(g.fh);
  t.equal(await code(fs.rename(ROOT_INO, 'f', ROOT_INO, 'g', RENAME_NOREPLACE, ROOT)), 'EXISTS', 'NOREPLACE');
  await fs.rename(ROOT_INO, 'f', ROOT_INO, 'g', RENAME_EXCHANGE, ROOT);
  t.equal((await fs.lookup(ROOT_INO, 'g', ROOT)).ino, f.attr.ino, 'EXCHANGE swapped the names');
  t.equal((await fs.lookup(ROOT_INO, 'f', ROOT)).ino, g.attr.ino);
  const rootBefore = (await fs.getattr(ROOT_INO)).nlink;
  await fs.rename(a.ino, 'inner', b.ino, 'moved', 0, ROOT);
  t.equal((await fs.getattr(a.ino)).nlink, 2, 'old parent lost a subdirectory link');
  t.equal((await fs.getattr(b.ino)).nlink, 4, 'new parent gained one');
  t.equal((await fs.lookup(inner.ino, '..', ROOT)).ino, b.ino, '.. follows the move');
  await fs.rename(b.ino, 'full', ROOT_INO, 'a', 0, ROOT);
  t.equal((await fs.getattr(ROOT_INO)).nlink, rootBefore, 'a directory replacing an empty one: same count');
  t.equal((await fs.getattr(b.ino)).nlink, 3, 'its old parent lost a link');
  t.equal(await code(fs.getattr(a.ino)), 'NOT_FOUND', 'the replaced directory is gone');
  t.equal(await code(fs.rename(ROOT_INO, 'g', ROOT_INO, 'f', 3, ROOT)), 'INVALID', 'contradictory flags');
  const before = (await fs.getattr(ROOT_INO)).nlink;
  await fs.rename(ROOT_INO, 'a', ROOT_INO, 'g', RENAME_EXCHANGE, ROOT);
  t.equal((await fs.getattr(ROOT_INO)).nlink, before, 'EXCHANGE of a directory and a file in one directory keeps its link count');
  t.equal((await fs.lookup(ROOT_INO, 'g', ROOT)).mode & c.S_IFMT, c.S_IFDIR);
  const far = await fs.mkdir(ROOT_INO, 'far', 0o755, ROOT);
  await fs.mknod(far.ino, 'file', c.S_IFREG | 0o644, 0, ROOT);
  await fs.rename(ROOT_INO, 'g', far.ino, 'file', RENAME_EXCHANGE, ROOT);
  t.equal((await fs.getattr(far.ino)).nlink, 3, 'across directories the ".." link moves with the directory');
  t.equal((await fs.getattr(ROOT_INO)).nlink, before, 'root lost the directory and gained the far one');
});

t.test('hard links, symlinks and names', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const f = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await fs.write(f.fh, 0, Buffer.from('shared'));
  await fs.release(f.fh);
  const l = await fs.link(f.attr.ino, ROOT_INO, 'l', ROOT);
  t.equal(l.nlink, 2);
  t.equal(l.ino, f.attr.ino, 'same inode');
  await fs.unlink(ROOT_INO, 'f', ROOT);
  const fh = await fs.open(l.ino, c.O_RDONLY, ROOT);
  t.equal((await fs.read(fh, 0, 100)).toString(), 'shared');
  await fs.release(fh);
  const d = await fs.mkdir(ROOT_INO, 'd', 0o755, ROOT);
  t.equal(await code(fs.link(d.ino, ROOT_INO, 'dl', ROOT)), 'NOT_PERMITTED', 'no hard links to directories');
  const s = await fs.symlink(ROOT_INO, 's', '../somewhere/else', ROOT);
  t.equal(await fs.readlink(s.ino), '../somewhere/else');
  t.equal(s.sizeBytes, 17);
  t.equal(await code(fs.readlink(d.ino)), 'INVALID');
  t.equal(await code(fs.mkdir(ROOT_INO, 'x'.repeat(256), 0o755, ROOT)), 'NAME_TOO_LONG');
  t.equal(await code(fs.mkdir(ROOT_INO, 'é'.repeat(128), 0o755, ROOT)), 'NAME_TOO_LONG', 'the limit counts bytes');
  t.equal(await code(fs.mkdir(ROOT_INO, 'y'.repeat(255), 0o755, ROOT)), 'ok');
  t.equal(await code(fs.mkdir(ROOT_INO, 'a/b', 0o755, ROOT)), 'INVALID');
  t.equal(await code(fs.mkdir(ROOT_INO, 'd', 0o755, ROOT)), 'EXISTS');
  t.equal(await code(fs.rmdir(ROOT_INO, 'l', ROOT)), 'NOT_DIR');
  t.equal(await code(fs.unlink(ROOT_INO, 'd', ROOT)), 'IS_DIR');
  t.equal(await code(fs.lookup(ROOT_INO, 'nothing', ROOT)), 'NOT_FOUND');
  t.equal(await code(fs.mknod(ROOT_INO, 'dev', c.S_IFCHR | 0o600, 0x0101, alice)), 'NOT_PERMITTED', 'devices need root');
  const fifo = await fs.mknod(ROOT_INO, 'fifo', c.S_IFIFO | 0o644, 0, ROOT);
  t.equal(fifo.mode & c.S_IFMT, c.S_IFIFO);
});

t.test('readdir resumes from any offset and lists . and ..', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const d = await fs.mkdir(ROOT_INO, 'd', 0o755, ROOT);
  for (let i = 0; i < 50; i++) await fs.mknod(d.ino, `e${i}`, c.S_IFREG | 0o644, 0, ROOT);
  const seen: string[] = [];
  for (let offset = 0; ; ) {
    const page = await fs.readdir(d.ino, offset, 7, ROOT);
    if (page.length === 0) break;
    seen.push(...page.map((e) => e.name));
    offset = page[page.length - 1].nextOffset;
  }
  t.equal(seen.length, 52);
  t.same(seen.slice(0, 2), ['.', '..']);
  t.same(new Set(seen.slice(2)).size, 50, 'every entry exactly once');
  const page = await fs.readdir(d.ino, 10, 3, ROOT);
  await fs.unlink(d.ino, page[0].name, ROOT);
  const after = await fs.readdir(d.ino, page[0].nextOffset, 2, ROOT);
  t.same(after.map((e) => e.name), page.slice(1, 3).map((e) => e.name), 'offsets stay valid across removals');
});

t.test('data: holes, append, truncate, bounds, timestamps', async (t) => {
  const clock = new SimulatedClock();
  const scratch = await formatScratch(t);
  const { fs } = await openScratch(t, scratch, clock);
  const { attr, fh } = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await fs.write(fh, 5 * 2 ** 20, Buffer.from('tail'));
  t.equal((await fs.getattr(attr.ino)).sizeBytes, 5 * 2 ** 20 + 4);
  t.same(await fs.read(fh, 2 ** 20, 8), Buffer.alloc(8), 'holes read as zeros');
  await clock.advance(1000);
  await fs.setattr(attr.ino, { sizeBytes: 5 * 2 ** 20 + 2 }, ROOT);
  const truncated = await fs.getattr(attr.ino);
  t.equal(truncated.mtimeNs, clock.nowNs(), 'truncate updates mtime');
  await fs.setattr(attr.ino, { sizeBytes: 6 * 2 ** 20 }, ROOT);
  t.same(await fs.read(fh, 5 * 2 ** 20, 8), Buffer.from('ta\0\0\0\0\0\0'), 'bytes cut by truncate read as zeros after growing again');
  const ap = await fs.open(attr.ino, c.O_WRONLY | c.O_APPEND, ROOT);
  await fs.write(ap, 0, Buffer.from('!'));
  t.equal((await fs.getattr(attr.ino)).sizeBytes, 6 * 2 ** 20 + 1, 'O_APPEND writes at the end whatever the offset');
  await fs.release(ap);
  t.equal(await code(fs.read(fh, -1, 5)), 'INVALID');
  t.equal(await code(fs.write(fh, 2 ** 50, Buffer.from('x'))), 'FILE_TOO_BIG');
  t.equal(await code(fs.setattr(attr.ino, { sizeBytes: -1 }, ROOT)), 'INVALID');
  t.equal(await code(fs.read(999, 0, 1)), 'BAD_HANDLE');
  const ro = await fs.open(attr.ino, c.O_RDONLY, ROOT);
  t.equal(await code(fs.write(ro, 0, Buffer.from('x'))), 'BAD_HANDLE', 'read-only handle refuses writes');
  await fs.release(ro);
  await clock.advance(1000);
  const d = await fs.mkdir(ROOT_INO, 'dir', 0o755, ROOT);
  t.equal((await fs.getattr(ROOT_INO)).mtimeNs, clock.nowNs(), 'mkdir updates the parent mtime');
  t.equal(d.btimeNs, clock.nowNs());
  t.equal(await code(fs.setattr(d.ino, { sizeBytes: 0 }, ROOT)), 'IS_DIR');
  const tr = await fs.open(attr.ino, c.O_RDWR | c.O_TRUNC, ROOT);
  t.equal((await fs.getattr(attr.ino)).sizeBytes, 0, 'O_TRUNC empties the file');
  await fs.release(tr);
  await fs.release(fh);
  const stat = await fs.statfs();
  t.equal(stat.nameBytesMax, 255);
  t.ok(stat.blocksFree <= stat.blocks && stat.blocksFree > 0);
});

t.test('extended attributes', async (t) => {
  const { fs } = await openScratch(t, await formatScratch(t));
  const f = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  await fs.release(f.fh);
  await fs.setxattr(f.attr.ino, 'user.color', Buffer.from('blue'), 0, ROOT);
  t.equal((await fs.getxattr(f.attr.ino, 'user.color', ROOT)).toString(), 'blue');
  t.equal(await code(fs.setxattr(f.attr.ino, 'user.color', Buffer.from('red'), XATTR_CREATE, ROOT)), 'EXISTS');
  t.equal(await code(fs.setxattr(f.attr.ino, 'user.size', Buffer.from('1'), XATTR_REPLACE, ROOT)), 'NO_XATTR');
  await fs.setxattr(f.attr.ino, 'trusted.x', Buffer.from('t'), 0, ROOT);
  t.same(await fs.listxattr(f.attr.ino, ROOT), ['trusted.x', 'user.color']);
  t.same(await fs.listxattr(f.attr.ino, alice), ['user.color'], 'trusted xattrs hidden from users');
  t.equal(await code(fs.setxattr(f.attr.ino, 'user.color', Buffer.from('x'), 0, alice)), 'ACCESS', 'needs write permission');
  t.equal(await code(fs.setxattr(f.attr.ino, 'bogus.ns', Buffer.from('x'), 0, ROOT)), 'NOT_SUPPORTED');
  t.equal(await code(fs.setxattr(f.attr.ino, 'user.big', Buffer.alloc(65537), 0, ROOT)), 'RANGE');
  await fs.removexattr(f.attr.ino, 'user.color', ROOT);
  t.equal(await code(fs.getxattr(f.attr.ino, 'user.color', ROOT)), 'NO_XATTR');
  t.equal(await code(fs.removexattr(f.attr.ino, 'user.color', ROOT)), 'NO_XATTR');
});

t.test('readahead never serves stale bytes', async (t) => {
  const { fs, store } = await openScratch(t, await formatScratch(t));
  const { attr, fh: writer } = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const chunk = 256 * 1024;
  for (let i = 0; i < 16; i++) await fs.write(writer, i * chunk, Buffer.alloc(chunk, i));
  const reader = await fs.open(attr.ino, c.O_RDONLY, ROOT);
  const readBefore = store.counters.readBytes;
  for (let i = 0; i < 16; i++) {
    if (i === 5) await fs.write(writer, 6 * chunk, Buffer.alloc(chunk, 0xee)); // lands on the chunk read ahead
    if (i === 9) await fs.setattr(attr.ino, { sizeBytes: 12 * chunk }, ROOT); // truncate under the reader
    const data = await fs.read(reader, i * chunk, chunk);
    const expected = i >= 12 ? Buffer.alloc(0) : Buffer.alloc(chunk, i === 6 ? 0xee : i);
    if (!t.same(data, expected, `chunk ${i}`)) break;
  }
  t.ok(store.counters.readBytes - readBefore >= 11 * chunk, 'the chunks were read (some ahead)');
  await fs.release(reader);
  await fs.release(writer);
});

async function openHeld(t: tap.Test) {
  const held = heldDevice(64 * 2 ** 20);
  const meta = path.join(scratchDir(t), 'meta');
  await formatFileSystem(held.device, meta);
  const opened = await openFileSystem(held.device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  return { held, opened, fs: opened.fs };
}

t.test('a window read ahead while a write is in flight is not served after it', async (t) => {
  const { held, fs } = await openHeld(t);
  const { attr, fh: writer } = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const chunk = 256 * 1024;
  await fs.write(writer, 0, Buffer.alloc(8 * chunk, 1));
  await fs.flush(writer);
  const reader = await fs.open(attr.ino, c.O_RDONLY, ROOT);
  const { arrived } = held.hold();
  const writing = fs.write(writer, chunk, Buffer.alloc(chunk, 2));
  await arrived; // the write's bytes are on their way to the device, not yet mapped
  const during = fs.read(reader, 0, chunk); // waits for the write, then reads ahead from the new mapping
  held.release();
  await writing;
  t.same(await during, Buffer.alloc(chunk, 1), 'a read issued during the write');
  t.same(await fs.read(reader, chunk, chunk), Buffer.alloc(chunk, 2), 'the read after the write sees the write');
  await fs.release(reader);
  await fs.release(writer);
});

t.test('write-behind: acknowledged before the device answers, visible at once, durable at fsync', async (t) => {
  const { held, opened, fs } = await openHeld(t);
  const N = constants.coalesceWriteBytesMax + 10000; // written straight to flash, not coalesced
  const { attr, fh } = await fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR | c.O_APPEND, ROOT);
  const { arrived } = held.hold();
  t.equal(await fs.write(fh, 0, Buffer.alloc(N, 7)), N, 'write returns while the device holds the bytes');
  await arrived;
  t.equal((await fs.getattr(attr.ino)).sizeBytes, N, 'stat shows the new size already');
  t.equal(opened.meta.getInode(attr.ino)!.sizeBytes, 0, 'though nothing is mapped yet');
  // It shares a block with the held write, so it waits for that one to land before its read-modify-write.
  const appending = fs.write(fh, 0, Buffer.alloc(100, 8));
  let synced = false;
  const fsync = fs.fsync(fh).then(() => (synced = true));
  const reading = fs.read(fh, N - 10, 200);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.notOk(synced, 'fsync waits for the bytes to land');
  held.release();
  t.equal(await appending, 100);
  await fsync;
  await fs.fsync(fh);
  t.same((await reading).subarray(0, 10), Buffer.alloc(10, 7), 'a read waits for the acknowledged write');
  t.same(await fs.read(fh, N - 10, 200), Buffer.concat([Buffer.alloc(10, 7), Buffer.alloc(100, 8)]), 'O_APPEND went after the pending end');
  t.equal(opened.meta.getInode(attr.ino)!.sizeBytes, N + 100, 'mapped and committed');
  await fs.release(fh);
});
