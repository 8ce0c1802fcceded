// Crash safety of tiering: a child rewrites files with fsync while destaging,
// releasing, recalling and collecting garbage, and is killed with SIGKILL at
// random points.  After each restart: every fsynced byte reads back (from
// flash or packs), every mapped block verifies, every pack reference points
// at a live pack whose object exists, and the bucket holds exactly the packs
// the metadata knows (no orphan, nothing missing).  Replay with TIERFS_SEED.
import t from 'tap';
import { runUntilKilled } from './helpers/workload';
import c from 'node:constants';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { openObjectStore, packKey, packKeyPrefix } from '../src/tier/tier';
import { formatScratch, pattern, prng, scratchDir, seedFromEnv } from './helpers/fs';

const FILES = 4;
const FILE_BYTES = 3 * 2 ** 20;
const CHUNK = 2 ** 20;


t.test('kill -9 during destage, release, recall and GC loses no fsynced byte and orphans no pack', async (t) => {
  const baseSeed = seedFromEnv();
  t.comment(`seed ${baseSeed} (replay with TIERFS_SEED=${baseSeed})`);
  const random = prng(baseSeed);
  const scratch = await formatScratch(t, 128 * 2 ** 20);
  const objects = scratchDir(t);
  // Per file: the seed of its last fsynced version (undefined: empty), and the rewrite in flight.
  const synced: (number | undefined)[] = Array(FILES).fill(undefined);
  const history: string[][] = Array.from({ length: FILES }, () => []); // every version written, for diagnostics
  const rounds = Number(process.env.TIERFS_CRASH_ROUNDS ?? 6);
  let packsSeen = 0;
  for (let round = 0; round < rounds; round++) {
    const { out, err } = await runUntilKilled('tier_crash_workload.ts', [scratch.flash, scratch.meta, objects, String(baseSeed + round)], 'R\n', 300 + Math.floor(random() * 1500));
    t.notMatch(err, /workload failed/, `round ${round}: the workload itself did not fail`);
    const pending: (number | undefined)[] = Array(FILES).fill(undefined);
    for (const line of out.split('\n')) {
      const [kind, file, seed] = line.split(' ');
      if (kind === 'W') history[Number(file)].push(`r${round}:${seed}`);
      if (kind === 'W') pending[Number(file)] = Number(seed);
      if (kind === 'F') {
        synced[Number(file)] = Number(seed);
        pending[Number(file)] = undefined;
      }
    }
    const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0, tier: { url: `file://${objects}`, scanIntervalMs: 0 } });
    try {
      const tier = opened.tier!;
      await tier.reconcile();
      for (let file = 0; file < FILES; file++) {
        const attr = await opened.fs.lookup(ROOT_INO, `f${file}`, ROOT);
        const fh = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
        const actual = Buffer.alloc(FILE_BYTES); // a file never written before the kill is empty: zeros for the comparison
        (await opened.fs.read(fh, 0, FILE_BYTES)).copy(actual);
        await opened.fs.release(fh);
        const versions = [synced[file], pending[file]].map((seed) => (seed === undefined ? Buffer.alloc(FILE_BYTES) : pattern(seed, FILE_BYTES)));
        if (attr.sizeBytes < FILE_BYTES) versions.push(Buffer.alloc(FILE_BYTES));
        let ok = true;
        for (let at = 0; at < FILE_BYTES; at += CHUNK) {
          const piece = actual.subarray(at, at + CHUNK);
          // A chunk holds the fsynced version, or the rewrite in flight (never synced data lost, never torn within a slot).
          ok &&= versions.some((v, i) => (i === 0 || pending[file] !== undefined || attr.sizeBytes < FILE_BYTES) && v.subarray(at, at + CHUNK).equals(piece));
        }
        if (synced[file] !== undefined && pending[file] === undefined) ok &&= actual.equals(pattern(synced[file]!, FILE_BYTES));
        if (!ok) {
          const chunks = [];
          for (let at = 0; at < FILE_BYTES; at += CHUNK)
            chunks.push(versions.findIndex((v) => v.subarray(at, at + CHUNK).equals(actual.subarray(at, at + CHUNK))));
          const older = [];
          for (let at = 0; at < FILE_BYTES; at += CHUNK)
            older.push(history[file].find((v) => pattern(Number(v.split(':')[1]), FILE_BYTES).subarray(at, at + CHUNK).equals(actual.subarray(at, at + CHUNK))) ?? (actual.subarray(at, at + CHUNK).equals(Buffer.alloc(CHUNK)) ? 'zeros' : 'unknown'));
          t.comment(`f${file}: size ${attr.sizeBytes}, synced ${synced[file]}, pending ${pending[file]}, chunks match versions ${chunks}, i.e. ${older}; history ${history[file].join(' ')}`);
          t.comment(`extents ${JSON.stringify(opened.meta.fileExtents(attr.ino).map((e) => ({ at: e.fileOffsetBytes, len: e.lengthBytes, flash: e.flashOffsetBytes, pack: e.pack?.packId.slice(0, 6), skip: e.pack?.skipBytes })))}`);
        }
        t.ok(ok, `round ${round}, f${file}: fsynced bytes intact`);
      }
      t.same((await opened.store.verifyAll()).checksumErrors, [], `round ${round}: every flash block verifies`);
      // The bucket and the metadata agree: every live pack's object exists, no object without a pack.
      const store = openObjectStore(`file://${objects}`);
      const keys = new Set<string>();
      for await (const item of store.list(packKeyPrefix(tier.fsUuid))) keys.add(item.key);
      const live = opened.meta.packsInState('live');
      t.same(opened.meta.packsInState('uploading'), [], 'no upload left unfinished');
      t.same([...keys].sort(), live.map((p) => packKey(tier.fsUuid, p.packId)).sort(), `round ${round}: bucket = live packs (${keys.size})`);
      packsSeen += keys.size;
      const liveIds = new Set(live.map((p) => p.packId));
      let dangling = 0;
      for (let file = 0; file < FILES; file++) {
        const attr = await opened.fs.lookup(ROOT_INO, `f${file}`, ROOT);
        for (const e of opened.meta.fileExtents(attr.ino)) if (e.pack && !liveIds.has(e.pack.packId)) dangling += 1;
      }
      t.equal(dangling, 0, 'no extent refers to a pack that is not live');
    } finally {
      await opened.close();
    }
  }
  t.ok(packsSeen > 0, `packs existed across the rounds (${packsSeen})`);
});
