// Child process of test/crash.test.ts: writes and fsyncs forever until killed.
// Prints "W <file> <offset> <length> <seed>" before each write and "S <count>"
// after each fsync returns, where <count> is the number of writes it covers.
import c from 'node:constants';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../../src/fs/fs';
import { pattern, prng } from '../helpers/fs';

const [flash, meta, seedText] = process.argv.slice(2);
const FILES = 4;
const SLOT = 2 ** 20;

async function main(): Promise<void> {
  const { fs } = await openFileSystem(flash, meta);
  const random = prng(Number(seedText));
  const handles: number[] = [];
  for (let i = 0; i < FILES; i++) {
    const name = `f${i}`;
    const existing = await fs.lookup(ROOT_INO, name, ROOT).catch(() => undefined);
    handles.push(existing ? await fs.open(existing.ino, c.O_RDWR, ROOT) : (await fs.create(ROOT_INO, name, 0o644, c.O_RDWR, ROOT)).fh);
  }
  let count = 0;
  for (;;) {
    const file = Math.floor(random() * FILES);
    // Within one extent slot, so each write is one atomic metadata change.
    const slot = Math.floor(random() * 6);
    const offset = slot * SLOT + Math.floor(random() * SLOT * 0.9);
    const length = 1 + Math.floor(random() * Math.min(SLOT - (offset % SLOT) - 1, random() < 0.2 ? SLOT : 20000));
    const seed = Math.floor(random() * 2 ** 31);
    process.stdout.write(`W ${file} ${offset} ${length} ${seed}\n`);
    await fs.write(handles[file], offset, pattern(seed, length));
    count += 1;
    if (random() < 0.15) {
      await fs.fsync(handles[file]);
      process.stdout.write(`S ${count}\n`);
    }
  }
}

main().catch((error) => {
  process.stderr.write(`workload failed: ${error.stack}\n`);
  process.exit(3);
});
