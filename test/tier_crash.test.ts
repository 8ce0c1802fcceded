// Crash safety of tiering: a child rewrites files with fsync while destaging,
// releasing, recalling and collecting garbage, and is killed with SIGKILL at
// random points.  After each restart: every fsynced byte reads back (from
// flash or packs), every mapped block verifies, every pack reference points
// at a live pack whose object exists, and the bucket holds exactly the packs
// the metadata knows (no orphan, nothing missing, dead packs only while a
// restore point reads them).  Replication: the bucket holds a restore point
// with every change fsynced longer than the bound before the kill, and that
// point restores (into a copy of the bucket) to files whose every slot is a
// version once written, or reads as lost.  Replay with TIERFS_SEED.
import t from 'tap';
import { crashReplication, runUntilKilled } from './helpers/workload';
import c from 'node:constants';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { openObjectStore, packKey, packKeyPrefix } from '../src/tier/tier';
import { metaPrefix, parseMetaListing, restorePoints } from '../src/tier/replica_format';
import { listFileSystems, restoreFileSystem } from '../src/fs/fs';
import { isTierfsError } from '../src/errors';
import fs from 'node:fs';
import path from 'node:path';
import type { Test } from 'tap';
import { formatScratch, pattern, prng, scratchDir, seedFromEnv } from './helpers/fs';

/** The upload of a point starts up to a tick after its due time and may take a moment on a busy machine. */
const replicationSlackMs = 1000;

/** Restore the newest point into a copy of the bucket: each file's every slot is a version once written (or zeros), or reads as lost. */
async function checkRestore(t: Test, objects: string, history: string[][], round: number): Promise<void> {
  const dir = scratchDir(t, 'tierfs-crash-restore-');
  const copy = path.join(dir, 'objects');
  fs.cpSync(objects, copy, { recursive: true });
  const url = `file://${copy}`;
  await restoreFileSystem({ store: openObjectStore(url), targetUrl: url, flash: path.join(dir, 'flash'), metaDir: path.join(dir, 'meta'), sizeBytes: 64 * 2 ** 20 });
  const restored = await openFileSystem(path.join(dir, 'flash'), path.join(dir, 'meta'), { commitIntervalMs: 0, tier: { url, scanIntervalMs: 0 } });
  try {
    for (let file = 0; file < FILES; file++) {
      const attr = await restored.fs.lookup(ROOT_INO, `f${file}`, ROOT).catch(() => undefined);
      if (!attr) continue; // created after the point
      const fh = await restored.fs.open(attr.ino, c.O_RDONLY, ROOT);
      const verdicts: string[] = [];
      for (let at = 0; at < attr.sizeBytes; at += CHUNK) {
        const piece = await restored.fs.read(fh, at, Math.min(CHUNK, attr.sizeBytes - at)).catch((error: unknown) => (isTierfsError(error, 'IO') ? 'lost' : Promise.reject(error)));
        if (piece === 'lost') verdicts.push('lost');
        else if (piece.every((b) => b === 0)) verdicts.push('zeros');
        else verdicts.push(history[file].some((v) => pattern(Number(v.split(':')[1]), FILE_BYTES).subarray(at, at + piece.length).equals(piece)) ? 'a version' : 'WRONG');
      }
      await restored.fs.release(fh);
      t.notOk(verdicts.includes('WRONG'), `round ${round}, f${file} restored from the bucket: ${verdicts.join(', ')}`);
    }
  } finally {
    await restored.close();
  }
}

const FILES = 4;
const FILE_BYTES = 3 * 2 ** 20;
const CHUNK = 2 ** 20;


t.test('kill -9 during destage, release, recall and GC loses no fsynced byte and orphans no pack', async (t) => {
  const baseSeed = seedFromEnv();
  t.comment(`seed ${baseSeed} (replay with TIERFS_SEED=${baseSeed})`);
  const random = prng(baseSeed);
  const scratch = await formatScratch(t, 128 * 2 ** 20);
  const objects = scratchDir(t);
  // Per file, what must be there: its content after the last restart, replaced by each version whose
  // fsync returned.  A rewrite in flight at a kill may land (whole or slot by slot) without its fsync
  // having returned; what the restart found is the baseline of the next round.
  const durable: Buffer[] = Array.from({ length: FILES }, () => Buffer.alloc(FILE_BYTES));
  const history: string[][] = Array.from({ length: FILES }, () => []); // every version written, for diagnostics
  const rounds = Number(process.env.TIERFS_CRASH_ROUNDS ?? 6);
  let packsSeen = 0;
  for (let round = 0; round < rounds; round++) {
    const { out, err } = await runUntilKilled('tier_crash_workload.ts', [scratch.flash, scratch.meta, objects, String(baseSeed + round)], 'R\n', 300 + Math.floor(random() * 1500));
    t.notMatch(err, /workload failed/, `round ${round}: the workload itself did not fail`);
    const killedMs = Date.now();
    const pending: (number | undefined)[] = Array(FILES).fill(undefined);
    let dueMs = 0; // the last fsync the bucket must hold a point after
    for (const line of out.split('\n')) {
      const [kind, file, seed, atMs] = line.split(' ');
      if (kind === 'F' && Number(atMs) <= killedMs - crashReplication.rpoMs - replicationSlackMs) dueMs = Math.max(dueMs, Number(atMs));
      if (kind === 'W') {
        history[Number(file)].push(`r${round}:${seed}`);
        pending[Number(file)] = Number(seed);
      }
      if (kind === 'F') {
        durable[Number(file)] = pattern(Number(seed), FILE_BYTES);
        pending[Number(file)] = undefined;
      }
    }
    // The bucket alone: a point no older than the bound, and it restores.
    const bucket = openObjectStore(`file://${objects}`);
    const uuid = (await listFileSystems(bucket))[0]?.fsUuid;
    if (uuid !== undefined || dueMs > 0) {
      const keys: { key: string; sizeBytes: number }[] = [];
      for await (const item of bucket.list(metaPrefix(uuid ?? ''))) keys.push(item);
      const points = restorePoints(parseMetaListing(uuid ?? '', keys));
      const newest = points[points.length - 1];
      // Killed while the first snapshot was still going up, before any fsync was due: nothing was promised yet
      // (the partial snapshot is no point, and restore ignores it).  Otherwise a point at or after the last due fsync.
      if (dueMs > 0 || newest !== undefined)
        t.ok(newest !== undefined && newest.timeMs >= dueMs, `round ${round}: the bucket holds a point after every fsync older than the bound (${newest?.timeMs} >= ${dueMs})`);
      if (newest && (round < 6 || round % 20 === 0)) await checkRestore(t, objects, history, round);
    }
    const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0, tier: { url: `file://${objects}`, scanIntervalMs: 0, replication: crashReplication } });
    try {
      const tier = opened.tier!;
      await tier.reconcile();
      for (let file = 0; file < FILES; file++) {
        const attr = await opened.fs.lookup(ROOT_INO, `f${file}`, ROOT);
        const fh = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
        const actual = Buffer.alloc(FILE_BYTES); // a file never written before the kill is empty: zeros for the comparison
        (await opened.fs.read(fh, 0, FILE_BYTES)).copy(actual);
        await opened.fs.release(fh);
        const inFlight = pending[file] === undefined ? undefined : pattern(pending[file]!, FILE_BYTES);
        // Each slot holds what must be there, or the rewrite in flight: never an fsynced byte lost, never torn within a slot.
        const chunks: string[] = [];
        for (let at = 0; at < FILE_BYTES; at += CHUNK) {
          const piece = actual.subarray(at, at + CHUNK);
          chunks.push(durable[file].subarray(at, at + CHUNK).equals(piece) ? 'durable' : inFlight?.subarray(at, at + CHUNK).equals(piece) ? 'in flight' : 'WRONG');
        }
        const ok = !chunks.includes('WRONG');
        if (!ok) {
          const which = [];
          for (let at = 0; at < FILE_BYTES; at += CHUNK)
            which.push(history[file].find((v) => pattern(Number(v.split(':')[1]), FILE_BYTES).subarray(at, at + CHUNK).equals(actual.subarray(at, at + CHUNK))) ?? 'unknown');
          t.comment(`f${file}: size ${attr.sizeBytes}, slots ${chunks}, holding versions ${which}; history ${history[file].join(' ')}`);
          t.comment(`extents ${JSON.stringify(opened.meta.fileExtents(attr.ino).map((e) => ({ at: e.fileOffsetBytes, len: e.lengthBytes, flash: e.flashOffsetBytes, pack: e.pack?.packId.slice(0, 6), skip: e.pack?.skipBytes })))}`);
        }
        t.ok(ok, `round ${round}, f${file}: fsynced bytes intact`);
        durable[file] = actual;
      }
      t.same((await opened.store.verifyAll()).checksumErrors, [], `round ${round}: every flash block verifies`);
      // The bucket and the metadata agree: every live pack's object exists, no object without a pack.
      const store = openObjectStore(`file://${objects}`);
      const keys = new Set<string>();
      for await (const item of store.list(packKeyPrefix(tier.fsUuid))) keys.add(item.key);
      const live = opened.meta.packsInState('live');
      const held = opened.meta.packsInState('deleting'); // dead, kept for restore points (the recovery at open removed the rest)
      t.same(opened.meta.packsInState('uploading'), [], 'no upload left unfinished');
      t.same([...keys].sort(), [...live, ...held].map((p) => packKey(tier.fsUuid, p.packId)).sort(), `round ${round}: bucket = live packs (${keys.size}) and dead ones kept for restore points`);
      t.ok(held.every((p) => p.deadSeq !== null && p.deadSeq > Number(opened.meta.setting('replicaOldestSeq') ?? 0)), 'a dead pack stays only while a point before its death is kept');
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
