// Child process of test/tier_crash.test.ts: rewrites whole files with fsync
// while destaging, releasing, recalling, reading and collecting garbage, until
// killed, with metadata replication on.  Prints "W <file> <seed>" before a
// rewrite and "F <file> <seed> <ms>" once its fsync returned (at <ms>).
import c from 'node:constants';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../../src/fs/fs';
import { pattern, prng } from '../helpers/fs';
import { crashReplication } from '../helpers/workload';

const [flash, meta, objects, seedText] = process.argv.slice(2);
export const FILES = 4;
export const FILE_BYTES = 3 * 2 ** 20;

async function main(): Promise<void> {
  const { fs, tier } = await openFileSystem(flash, meta, {
    tier: { url: `file://${objects}`, scanIntervalMs: 0, packSizeBytesTarget: 2 * 2 ** 20, replication: crashReplication },
  });
  if (!tier) throw new Error('no tier');
  const random = prng(Number(seedText));
  const inos = [];
  for (let i = 0; i < FILES; i++) {
    const existing = await fs.lookup(ROOT_INO, `f${i}`, ROOT).catch(() => undefined);
    if (existing) inos.push(existing.ino);
    else {
      const created = await fs.create(ROOT_INO, `f${i}`, 0o644, c.O_RDWR, ROOT);
      await fs.release(created.fh);
      inos.push(created.attr.ino);
    }
  }
  process.stdout.write('R\n');
  for (;;) {
    const file = Math.floor(random() * FILES);
    const ino = inos[file];
    const op = random();
    if (op < 0.35) {
      const seed = Math.floor(random() * 2 ** 31);
      process.stdout.write(`W ${file} ${seed}\n`);
      const fh = await fs.open(ino, c.O_RDWR, ROOT);
      await fs.write(fh, 0, pattern(seed, FILE_BYTES));
      await fs.fsync(fh);
      await fs.release(fh);
      process.stdout.write(`F ${file} ${seed} ${Date.now()}\n`);
    } else if (op < 0.55) {
      await tier.destage({ ino }).catch(() => undefined);
    } else if (op < 0.7) {
      await tier.release(ino);
    } else if (op < 0.8) {
      await tier.recallFile(ino);
    } else if (op < 0.9) {
      const fh = await fs.open(ino, c.O_RDONLY, ROOT);
      await fs.read(fh, Math.floor(random() * FILE_BYTES), 65536);
      await fs.release(fh);
    } else {
      await tier.collectGarbage();
    }
  }
}

main().catch((error) => {
  process.stderr.write(`workload failed: ${error.stack}\n`);
  process.exit(3);
});
