// Crash consistency: a child process writes and fsyncs; it is killed with SIGKILL at
// random points.  After each kill the file system reopens with: every fsynced byte
// readable; each file equal to its writes up to some point at or after the last
// acknowledged fsync (commits are atomic and one file's writes map in order);
// every mapped block verifying its checksum; and no block both free and used
// (opening rebuilds the free map from the mapping and refuses overlaps).
// Replay with TIERFS_SEED.
import t from 'tap';
import { runUntilKilled } from './helpers/workload';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { formatScratch, pattern, prng, seedFromEnv } from './helpers/fs';
import c from 'node:constants';

interface Write {
  file: number;
  offset: number;
  length: number;
  seed: number;
}

function apply(files: Buffer[], w: Write): void {
  const data = pattern(w.seed, w.length);
  if (files[w.file].length < w.offset + w.length) {
    const grown = Buffer.alloc(w.offset + w.length);
    files[w.file].copy(grown);
    files[w.file] = grown;
  }
  data.copy(files[w.file], w.offset);
}


t.test('kill -9 during a write+fsync workload loses no fsynced byte', async (t) => {
  const baseSeed = seedFromEnv();
  t.comment(`seed ${baseSeed} (replay with TIERFS_SEED=${baseSeed})`);
  const random = prng(baseSeed);
  const scratch = await formatScratch(t, 256 * 2 ** 20);
  const writes: Write[] = [];
  let durableCount = 0;
  const rounds = Number(process.env.TIERFS_CRASH_ROUNDS ?? 6);
  for (let round = 0; round < rounds; round++) {
    const { out, err } = await runUntilKilled('crash_workload.ts', [scratch.flash, scratch.meta, String(baseSeed + round)], '\nW ', 200 + Math.floor(random() * 1500));
    t.notMatch(err, /workload failed/, `round ${round}: the workload itself did not fail`);
    const roundWrites: Write[] = [];
    let roundSynced = 0;
    for (const line of out.split('\n')) {
      const parts = line.split(' ');
      if (parts[0] === 'W' && parts.length === 5) {
        roundWrites.push({ file: Number(parts[1]), offset: Number(parts[2]), length: Number(parts[3]), seed: Number(parts[4]) });
      } else if (parts[0] === 'S' && parts.length === 2) roundSynced = Number(parts[1]);
    }
    // Each round starts from what the previous one left durable.
    const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
    try {
      const actual: Buffer[] = [];
      for (let i = 0; i < 4; i++) {
        const attr = await opened.fs.lookup(ROOT_INO, `f${i}`, ROOT).catch(() => undefined);
        if (!attr) {
          actual.push(Buffer.alloc(0));
          continue;
        }
        const fh = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
        actual.push(await opened.fs.read(fh, 0, attr.sizeBytes));
        await opened.fs.release(fh);
      }
      // Per file, the state is the round's writes to it up to some k, at least those the last fsync covered:
      // commits are atomic, and one file's writes map in order (different files' need not).
      const before = writesToFiles(writes);
      let consistent = true;
      for (let file = 0; file < 4; file++) {
        const fileWrites = roundWrites.filter((w) => w.file === file);
        const syncedCount = roundWrites.slice(0, roundSynced).filter((w) => w.file === file).length;
        const expected = [before[file]];
        let matched = -1;
        for (let k = 0; k <= fileWrites.length; k++) {
          if (k > 0) apply(expected, { ...fileWrites[k - 1], file: 0 });
          if (k >= syncedCount && expected[0].equals(actual[file])) {
            matched = k;
            break;
          }
        }
        consistent &&= t.ok(matched >= 0, `round ${round}, f${file}: its first k writes for some k >= ${syncedCount} fsynced (of ${fileWrites.length})`);
        if (matched >= 0) writes.push(...fileWrites.slice(0, matched));
      }
      if (!consistent) return;
      durableCount += roundSynced;
      const report = await opened.store.verifyAll();
      t.same(report.checksumErrors, [], `round ${round}: every mapped block verifies`);
    } finally {
      await opened.close();
    }
  }
  t.ok(durableCount > 0, `some writes were fsynced before kills (${durableCount})`);
});

function writesToFiles(writes: Write[]): Buffer[] {
  const files = [0, 1, 2, 3].map(() => Buffer.alloc(0));
  for (const w of writes) apply(files, w);
  return files;
}
