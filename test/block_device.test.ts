// The flash tier on a real block device (a loop device): its size from
// BLKGETSIZE64, freed blocks discarded (the loop driver punches them out of
// its backing file, which we can see), and a mounted disk refused even with
// --force.  Needs root and loop devices, as the FUSE tests need root.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import c from 'node:constants';
import fs from 'node:fs';
import path from 'node:path';
import { openFlashDevice } from '../src/device/device';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { code, pattern, scratchDir } from './helpers/fs';

function loopDevice(t: tap.Test, backing: string, sizeBytes: number): string {
  fs.writeFileSync(backing, '');
  fs.truncateSync(backing, sizeBytes);
  const device = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
  t.teardown(() => void spawnSync('losetup', ['-d', device]));
  return device;
}

const allocatedBytes = (file: string) => fs.statSync(file).blocks * 512;

t.test('format and serve a block device; freed blocks are discarded', async (t) => {
  const dir = scratchDir(t);
  const backing = path.join(dir, 'disk');
  const device = loopDevice(t, backing, 64 * 2 ** 20);
  const meta = path.join(dir, 'meta');
  await formatFlashPath(device, meta);
  const probe = openFlashDevice(device);
  t.equal(probe.sizeBytes, 64 * 2 ** 20, 'size from BLKGETSIZE64');
  t.ok(probe.direct, 'O_DIRECT on a block device');
  await probe.close();

  const opened = await openFileSystem(device, meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const data = pattern(9, 24 * 2 ** 20);
  for (let at = 0; at < data.length; at += 8 * 2 ** 20) await opened.fs.write(fh, at, data.subarray(at, at + 8 * 2 ** 20));
  await opened.fs.fsync(fh);
  const full = allocatedBytes(backing);
  t.ok(full >= 24 * 2 ** 20, `the data reached the disk (${full} bytes allocated in the backing file)`);
  const back = Buffer.concat([await opened.fs.read(fh, 0, 16 * 2 ** 20), await opened.fs.read(fh, 16 * 2 ** 20, 8 * 2 ** 20)]);
  t.ok(back.equals(data), 'read back, verified');
  await opened.fs.release(fh);
  await opened.fs.unlink(ROOT_INO, 'f', ROOT);
  await opened.fs.fsync();
  t.equal(await code(opened.fs.getattr(attr.ino)), 'NOT_FOUND');
  t.ok(allocatedBytes(backing) <= full - 20 * 2 ** 20, `discard gave the blocks back (${allocatedBytes(backing)} bytes allocated now)`);
});

t.test('a mounted disk is refused, even with --force', async (t) => {
  const dir = scratchDir(t);
  const device = loopDevice(t, path.join(dir, 'disk'), 64 * 2 ** 20);
  execFileSync('mkfs.ext4', ['-q', device]);
  const mountPoint = path.join(dir, 'ext4');
  fs.mkdirSync(mountPoint);
  execFileSync('mount', [device, mountPoint]);
  t.teardown(() => void spawnSync('umount', [mountPoint]));
  t.equal(await code(formatFlashPath(device, path.join(dir, 'meta'), { force: true })), 'BUSY');
  t.ok(fs.existsSync(path.join(mountPoint, 'lost+found')), 'the ext4 file system is untouched');
});

t.test('the device addon reports a failed system call as code + errno + one-line message', async (t) => {
  const { native } = await import('../src/native');
  t.throws(() => native.punchHole(987654, 0, 4096), { code: 'EBADF', errno: 9, message: 'fallocate: Bad file descriptor' });
  t.throws(() => (native.crc32c as unknown as () => number)(), { message: 'wrong number of arguments' });
});
