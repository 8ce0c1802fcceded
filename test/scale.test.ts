// At scale: a directory of 100,000 entries and a file system of 1,000,000 files,
// so that every page size, listing cap and scan page is crossed (readdir pages,
// the admin listing cap, the admin walk's page and file cap, the engine's cold
// scan pages).  The entries are made through the metadata store in one
// transaction (creating them through src/fs would take minutes and test nothing
// more); everything is then read back through src/fs and the engine.
import t from 'tap';
import c from 'node:constants';
import { constants } from '../src/constants';
import { isTierfsError } from '../src/errors';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO, type Ino } from '../src/fs/fs';
import type { MetaStore } from '../src/meta/meta_store';
import { formatScratch, openScratch, openTiered, scratchDir } from './helpers/fs';

/** `count` empty regular files named f0 … in directory `parent`, in one transaction. */
function makeFiles(meta: MetaStore, parent: Ino, count: number, prefix = 'f'): Ino[] {
  const inos: Ino[] = [];
  meta.mutate(() => {
    for (let i = 0; i < count; i++) {
      const ino = meta.createInode({ mode: c.S_IFREG | 0o644, uid: 0, gid: 0, nlink: 1, sizeBytes: 0, rdev: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n, btimeNs: 0n });
      meta.addDirent(parent, `${prefix}${i}`, ino);
      inos.push(ino);
    }
  });
  meta.commit();
  return inos;
}

t.test('a directory of 100,000 entries: readdir pages, the listing cap and the walk page all cross', async (t) => {
  const opened = await openScratch(t, await formatScratch(t, 64 * 2 ** 20));
  const { fs, meta } = opened;
  const dir = await fs.mkdir(ROOT_INO, 'big', 0o755, ROOT);
  const count = 100_000;
  makeFiles(meta, dir.ino, count);
  // readdir in pages of 1000 (what the kernel asks for in a few KiB), resuming from each last offset.
  const seen = new Set<string>();
  let pages = 0;
  for (let offset = 0; ; pages++) {
    const page = await fs.readdir(dir.ino, offset, 1000, ROOT);
    if (page.length === 0) break;
    for (const entry of page) {
      if (entry.name === '.' || entry.name === '..') continue;
      if (seen.has(entry.name)) t.fail(`${entry.name} listed twice`);
      seen.add(entry.name);
    }
    offset = page[page.length - 1].nextOffset;
  }
  t.equal(seen.size, count, 'readdir lists every entry exactly once');
  t.ok(pages > 100, `in ${pages} pages`);
  t.ok([0, 1, 49_999, 99_999].every((i) => seen.has(`f${i}`)), 'first, middle and last names');
  // The admin listing: capped, and says so; a larger cap gets all of it across its 1024-entry pages.
  const capped = fs.listDirectory(dir.ino, constants.adminListingCountMax);
  t.equal(capped.entries.length, constants.adminListingCountMax, 'the listing stops at its cap');
  t.equal(capped.truncated, true, 'and says it was cut');
  t.equal(capped.entries[constants.adminScanPageCountMax].name, `f${constants.adminScanPageCountMax}`, 'in creation order across a page boundary');
  const whole = fs.listDirectory(dir.ino, 200_000);
  t.equal(whole.entries.length, count, 'a cap above the size lists everything');
  t.equal(whole.truncated, false, 'and says nothing was cut');
  // The walk of a command over a tree (destage DIR): every file once, or refused beyond its cap.
  const files = fs.filesUnder([{ ino: dir.ino, path: '/big' }], { recursive: true, countMax: constants.adminFileCountMax, what: 'destage' });
  t.equal(new Set(files).size, count, 'the walk finds every file once');
  const refused = (() => {
    try {
      fs.filesUnder([{ ino: dir.ino, path: '/big' }], { recursive: true, countMax: count - 1, what: 'destage' });
      return 'walked';
    } catch (error) {
      return isTierfsError(error, 'USAGE') ? error.message : String(error);
    }
  })();
  t.match(refused, /destage: more than 99999 files; name smaller trees/, 'a walk past its cap is refused with one line');
  t.equal(fs.resolvePath('/big/f99999').ino, whole.entries[count - 1].attr.ino, 'resolving a path finds the last entry');
  t.equal((await fs.statfs()).files, count + 2, 'statfs counts the inodes');
});

t.test('a file system of 1,000,000 files: the walk reaches its cap exactly, the engine scans its pages and stops', async (t) => {
  const scratch = await formatScratch(t, 64 * 2 ** 20);
  const { fs, meta, tier } = await openTiered(t, scratch, { url: `file://${scratchDir(t)}` });
  const dirCount = 1000;
  const perDir = 1000;
  const dirs: Ino[] = [];
  for (let d = 0; d < dirCount; d++) dirs.push((await fs.mkdir(ROOT_INO, `d${d}`, 0o755, ROOT)).ino);
  const all: Ino[] = [];
  for (const dir of dirs) for (const ino of makeFiles(meta, dir, perDir)) all.push(ino);
  t.equal(all.length, constants.adminFileCountMax, 'a million files');
  const walked = fs.filesUnder([{ ino: ROOT_INO, path: '/' }], { recursive: true, countMax: constants.adminFileCountMax, what: 'pin' });
  t.equal(walked.length, constants.adminFileCountMax, 'a walk of the whole tree reaches its cap and no further');
  t.equal(fs.filesUnder([{ ino: dirs[999], path: '/d999' }], { recursive: true, countMax: constants.adminFileCountMax, what: 'pin' }).length, perDir, 'and of one directory, its own files');
  t.equal(fs.totals().inodeCount, constants.adminFileCountMax + dirCount + 1, 'totals count every inode without a scan');
  // One 4 KiB extent on flash for more files than the engine's scan reaches in one pass (16 pages of 4096):
  // the destage queue is what one pass sees, and the pass stops at its last page.
  const scanExtents = constants.tierScanCountMax * constants.tierScanPageCountMax + 5000;
  const old = 1_000_000;
  meta.mutate(() => {
    for (let i = 0; i < scanExtents; i++) {
      const ino = all[i];
      const checksums = Buffer.alloc(4);
      // Metadata only (nothing reads these blocks): the queue count plans, it does not read.
      meta.putExtent({ ino, fileOffsetBytes: 0, lengthBytes: 4096, flashOffsetBytes: 4096 * (1 + (i % 1000)), checksums, pack: null, accessedMs: old + i, heatCount: 1 });
    }
  });
  t.equal(meta.residencyTotals().flashOnlyBytes, scanExtents * 4096, 'the running totals count every extent');
  const queue = tier.countDestageQueue();
  t.equal(queue, constants.tierScanCountMax * constants.tierScanPageCountMax * 4096, 'the queue counts exactly what one pass scans: 16 pages of 4096, then it stops');
  t.equal(tier.status().destage.queueBytes, queue, 'and status shows that count, without scanning again');
});
