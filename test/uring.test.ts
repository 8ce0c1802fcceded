// The flash tier's io_uring path (src/device/uring.ts, src/device/native/uring.c)
// on a real file: data written and read back through the ring at a depth past
// its limit, batched submissions, registered buffers used and handed back when
// collected, errors with their errno, and the device choosing io_uring or psync
// as asked.  The machines that run `make test` have io_uring enabled
// (kernel.io_uring_disabled = 0); where it is not, the ring tests skip and say so.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { openFlashDevice } from '../src/device/device';
import { NvmePassthrough } from '../src/device/nvme_passthrough';
import { Ring } from '../src/device/uring';
import { native } from '../src/native';
import { repoRoot } from './helpers/daemon';
import { scratchDir } from './helpers/fs';

const BS = 4096;
const MiB = 2 ** 20;
const disabled = (() => {
  try {
    return fs.readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() !== '0';
  } catch {
    return false; // kernels before 6.6 have no such switch
  }
})();
const skip = disabled && 'kernel.io_uring_disabled is set on this machine';

function scratchFile(t: Test, bytes: number): { file: string; fd: number } {
  const file = path.join(scratchDir(t), 'data');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
  t.teardown(() => fs.closeSync(fd));
  return { file, fd };
}

const aligned = (bytes: number) => Buffer.from(native.alignedBuffer(bytes));

t.test('reads and writes past the ring depth come back as written, in batches', { skip }, async (t) => {
  const fileBytes = 16 * MiB;
  const { file, fd } = scratchFile(t, fileBytes);
  const ring = new Ring(8);
  // 200 writes of 1-16 blocks, each somewhere in a 64 KiB region of its own, all at once (25 times the depth), half of them in registered buffers.
  const region = 64 * 1024;
  const writes = Array.from({ length: 200 }, (_, i) => {
    const blocks = 1 + crypto.randomInt(16);
    const at = i * region + crypto.randomInt(region / BS - blocks + 1) * BS;
    const buffer = aligned(blocks * BS);
    crypto.randomFillSync(buffer);
    if (i % 2 === 0) t.ok(ring.register(buffer), 'registered');
    return { at, buffer };
  });
  const results = await Promise.all(writes.map((w) => ring.write(fd, w.buffer, w.at)));
  t.same(results, writes.map((w) => w.buffer.length), 'each write reports its whole length');
  await ring.datasync(fd);
  const onDisk = fs.readFileSync(file);
  const wrong = writes.findIndex((w) => !onDisk.subarray(w.at, w.at + w.buffer.length).equals(w.buffer));
  t.equal(wrong, -1, 'every write is on disk byte for byte');
  // Read everything back through the ring in random 4-64 KiB pieces, 300 at once.
  const reads = Array.from({ length: 300 }, () => {
    const blocks = 1 + crypto.randomInt(16);
    return { at: crypto.randomInt(fileBytes / BS - blocks) * BS, buffer: aligned(blocks * BS) };
  });
  await Promise.all(reads.map((r) => ring.read(fd, r.buffer, r.at)));
  t.ok(reads.every((r) => r.buffer.equals(onDisk.subarray(r.at, r.at + r.buffer.length))), 'every read returns what is on disk');
  t.ok(ring.counters.submitCount < ring.counters.operationCount / 4, `operations were submitted together: ${ring.counters.operationCount} in ${ring.counters.submitCount} submissions`);
  t.ok(ring.counters.fixedBufferOperationCount >= 100, `registered buffers were used as fixed buffers (${ring.counters.fixedBufferOperationCount})`);
  await ring.close();
  await t.rejects(ring.read(fd, reads[0].buffer, 0), /closed/, 'a closed ring refuses work');
});

t.test('an error comes back with its errno and the ring goes on working', { skip }, async (t) => {
  const { file, fd } = scratchFile(t, MiB);
  const readOnly = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(readOnly));
  const ring = new Ring(4);
  t.teardown(() => ring.close());
  const buffer = aligned(BS).fill(7);
  await t.rejects(ring.write(readOnly, buffer, 0), { code: 'EBADF', errno: 9, syscall: 'write' });
  t.equal(await ring.write(fd, buffer, 0), BS);
  const back = aligned(BS);
  t.equal(await ring.read(fd, back, 0), BS);
  t.ok(back.equals(buffer));
  t.equal(await ring.read(fd, back, MiB), 0, 'a read at the end of the file reads nothing');
});

t.test('close waits for what is in flight', { skip }, async (t) => {
  const { fd } = scratchFile(t, 4 * MiB);
  const ring = new Ring(2);
  const buffers = Array.from({ length: 16 }, () => aligned(64 * 1024).fill(1));
  let done = 0;
  const writes = buffers.map((b, i) => ring.write(fd, b, i * b.length).then(() => (done += 1)));
  await ring.close();
  t.equal(done, 16, 'every write completed before the ring closed');
  await Promise.all(writes);
});

t.test('registered buffers are handed back when collected: the table never fills', { skip }, async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const { fd } = scratchFile(t, MiB);
  const ring = new Ring(4);
  t.teardown(() => ring.close());
  // The table has 1,024 slots; 3,000 buffers registered over time, each used once and dropped.
  let registered = 0;
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 500; i++) {
      const buffer = aligned(BS).fill(i & 0xff);
      if (ring.register(buffer)) registered += 1;
      if (i % 50 === 0) t.equal(await ring.write(fd, buffer, (i % 256) * BS), BS);
    }
    gc();
    await new Promise((resolve) => setImmediate(resolve)); // finalizers run after the collection
  }
  t.equal(registered, 3000, 'every buffer found a slot: collected buffers gave theirs back');
  t.ok(ring.registeredBufferCount < 1024, `the live count fell as buffers were collected (${ring.registeredBufferCount})`);
  const back = aligned(BS);
  t.equal(await ring.read(fd, back, 0), BS);
  t.equal(back[0], 0, 'fixed-buffer writes landed');
});

t.test('the device takes io_uring unless told psync, and says which', { skip }, async (t) => {
  const { file } = scratchFile(t, 16 * MiB);
  for (const io of ['auto', 'io_uring', 'psync'] as const) {
    const device = openFlashDevice(file, { io });
    t.teardown(() => device.close());
    t.equal(device.io, io === 'psync' ? 'psync' : 'io_uring', `io: ${io}`);
    const report = device.report();
    t.equal(report.io, device.io);
    if (io === 'psync') t.match(report, { psyncReason: 'chosen' });
    const data = device.allocBuffer(MiB);
    crypto.randomFillSync(data);
    const at = { auto: 0, io_uring: MiB, psync: 2 * MiB }[io];
    await device.write(data, at);
    await device.sync();
    const back = device.allocBuffer(MiB);
    await device.read(back, at);
    t.ok(back.equals(data), `${io}: read back what was written`);
    if (io !== 'psync') t.ok(device.report().ring!.operationCount >= 3 && device.report().ring!.registeredBufferCount >= 2, `the report counts the ring's work: ${JSON.stringify(device.report().ring)}`);
    await device.close();
  }
  // The three wrote different places of one file: each sees the others'.
  const all = openFlashDevice(file, { io: 'psync' });
  t.teardown(() => all.close());
  const whole = aligned(3 * MiB);
  await all.read(whole, 0);
  t.ok(!whole.subarray(0, MiB).equals(whole.subarray(MiB, 2 * MiB)), 'distinct data per path');
});

t.test('--flash-io takes auto, nvme-passthrough, io_uring or psync; anything else is one line', async (t) => {
  const dir = scratchDir(t);
  const bad = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'tierfs.js'), 'serve', '--flash', 'f', '--meta', 'm', '--mount', path.join(dir, 'mnt'), '--flash-io', 'uring'], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.equal(bad.stderr, 'tierfs: --flash-io: expected auto, nvme-passthrough, io_uring, psync, not "uring"\n');
  t.notOk(fs.existsSync(path.join(dir, 'mnt')), 'nothing made');
  const config = path.join(dir, 'tierfs.json');
  fs.writeFileSync(config, JSON.stringify({ flash: 'f', meta: 'm', mount: path.join(dir, 'mnt'), flashIo: 'aio' }));
  const badConfig = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'tierfs.js'), 'serve', '--config', config], { encoding: 'utf8' });
  t.equal(badConfig.status, 2);
  t.equal(badConfig.stderr, `tierfs: --config ${config}: "flashIo": expected auto, nvme-passthrough, io_uring, psync, not "aio"\n`);
});

t.test('one holder of a flash tier at a time: a second open waits, then is refused', async (t) => {
  const { file } = scratchFile(t, MiB);
  const first = openFlashDevice(file);
  const startedMs = Date.now();
  t.throws(() => openFlashDevice(file, { lockWaitMs: 300 }), { code: 'BUSY', message: /flash tier .* is in use by another process/ });
  t.ok(Date.now() - startedMs >= 300, 'it waited for the holder first');
  await first.close();
  const second = openFlashDevice(file, { lockWaitMs: 300 });
  t.equal(second.sizeBytes, MiB, 'free again once the holder closed');
  await second.close();
});

t.test('NVMe passthrough: only for an NVMe namespace, and a refusal says why', async (t) => {
  const { file, fd } = scratchFile(t, MiB);
  t.throws(() => openFlashDevice(file, { io: 'nvme-passthrough', lockWaitMs: 0 }), {
    code: 'NOT_SUPPORTED',
    message: /NVMe passthrough was asked for and is unavailable: not an NVMe namespace's block device/,
  });
  t.equal(NvmePassthrough.open(file, fd), null, 'a file is not a namespace: no passthrough, nothing to report');
  // A tree where the namespace exists but its generic device does not (a kernel before 5.19).
  const root = scratchDir(t);
  fs.mkdirSync(path.join(root, 'dev'));
  const fakeNamespace = path.join(root, 'dev', 'nvme3n2');
  fs.writeFileSync(fakeNamespace, '');
  const why = NvmePassthrough.open(fakeNamespace, fd, { devDir: path.join(root, 'dev'), sysRoot: path.join(root, 'sys') });
  t.equal(why, `no generic NVMe device ${path.join(root, 'dev', 'ng3n2')} (Linux 5.19 or later makes one)`);
  fs.writeFileSync(path.join(root, 'dev', 'ng3n2'), '');
  t.match(NvmePassthrough.open(fakeNamespace, fd, { devDir: path.join(root, 'dev') }), /no generic NVMe device/, 'a regular file is not the character device');
});
