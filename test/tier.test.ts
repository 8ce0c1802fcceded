// The tiering engine over src/fs with a file target: destage, evict, recall,
// heat, policies, watermarks, GC, orphans and faults.
import t from 'tap';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { FaultyObjectStore, openObjectStore, RetryingObjectStore, describePack, packKeyPrefix } from '../src/tier/tier';
import { code, formatScratch, openTiered, pattern, readFile, scratchDir, writeFile } from './helpers/fs';

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
  const recalled = await tier.recallFile(ino);
  t.ok(recalled >= 0);
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
