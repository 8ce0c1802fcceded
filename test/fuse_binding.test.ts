// The libfuse 3 binding: callers who are not root get ext4's answers, a handler
// that throws answers EIO and the mount lives on, an interrupted read returns at
// once, the kernel sends 1 MiB requests, and every bad condition around the
// mount (no /dev/fuse, no fusermount3, a busy, dead or missing mount point, a
// daemon killed mid-request, an unmount from outside) is one clear line and
// leaves nothing half-mounted.
import t from 'tap';
import { execFile, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { openFileSystem, type Ino } from '../src/fs/fs';
import { FuseMount, type FuseBackend } from '../src/fuse/fuse';
import { checkFuseDevice, mountsAt } from '../src/fuse/mount_point';
import { formatScratch, pattern, type Scratch } from './helpers/fs';
import { isMounted, lazyUnmount, serve, tierfsBin } from './helpers/daemon';

const run = promisify(execFile);
const MiB = 2 ** 20;
const isRoot = process.getuid?.() === 0;

/** `promise`'s value, or 'timeout' after `ms` (the timer does not outlive the race). */
/** Poll `condition` every 10 ms until it holds (true) or `ms` pass (false): a deadline, never a fixed sleep. */
async function until(condition: () => boolean, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A mount point other users can reach (tap's scratch directories are 0700). */
function openMountPoint(t: tap.Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tierfs-mnt-'));
  fs.chmodSync(dir, 0o755);
  t.teardown(() => {
    lazyUnmount(path.join(dir, 'mnt'));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return path.join(dir, 'mnt');
}

/** Mount `backend` in this process; teardown unmounts it.  Only asynchronous calls may touch the mount from here. */
async function mountInProcess(t: tap.Test, backend: FuseBackend, mountPoint: string): Promise<FuseMount> {
  const mount = new FuseMount(backend, mountPoint);
  await mount.mount();
  t.teardown(() => mount.unmount().catch(() => lazyUnmount(mountPoint)));
  return mount;
}

async function openScratchFs(t: tap.Test, scratch: Scratch) {
  const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0 });
  t.teardown(() => opened.close().catch(() => undefined));
  return opened;
}

/** Run python code as a child (asynchronously: the mount may be served by this process). */
async function python(code: string, timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('python3', ['-c', code], { timeout: timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

t.test('callers who are not root get the answers ext4 gives', { skip: !isRoot && 'needs root to act as other users' }, async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const served = await serve(t, scratch, openMountPoint(t));
  const script = path.join(__dirname, 'scripts', 'ownership_checks.py');
  const onExt4 = fs.mkdtempSync(path.join(os.tmpdir(), 'tierfs-ext4-'));
  fs.chmodSync(onExt4, 0o755);
  t.teardown(() => fs.rmSync(onExt4, { recursive: true, force: true }));
  const onTierfs = path.join(served.mount, 'own');
  await run('mkdir', [onTierfs]);
  const expected = JSON.parse((await run('python3', [script, onExt4])).stdout) as [string, unknown][];
  const actual = JSON.parse((await run('python3', [script, onTierfs])).stdout) as [string, unknown][];
  t.equal(actual.length, expected.length, 'every step ran');
  for (let i = 0; i < expected.length; i++) t.same(actual[i], expected[i], `${expected[i][0]}: ${JSON.stringify(expected[i][1])}`);
  // The reference itself, for the points the issue names (a wrong ext4 run would not pass either).
  const result = (name: string) => actual.find(([step]) => step === name)?.[1];
  t.same(result("the file belongs to A's uid and gid"), [4001, 4001], 'new files belong to the caller');
  t.same(result('the subdirectory takes the group and the setgid bit'), [4100, '0o2755'], 'setgid inheritance');
  t.same(result('the times, to the nanosecond'), ['1000000000111222333', '1100000000444555666'], 'nanosecond utimensat');
  t.equal(result("B unlinks A's file in a sticky directory"), 'EPERM', 'sticky directory');
  t.equal(result('A gives its file to B'), 'EPERM', 'only root gives files away');
  t.equal(result('A opens a group-only file through a supplementary group'), 'ok', 'supplementary groups reach the file system');
  t.equal(result("B creates in A's 0755 directory"), 'EACCES');
  t.same(result('A creates a mode-0 file and ftruncates it through that descriptor'), [100, '0o0'], 'ftruncate takes its permission from the descriptor');
  t.equal(result('A truncates the mode-0 file by name'), 'EACCES', 'truncate by name still checks the mode');
  t.equal(await served.stop(), 0);
});

t.test('a handler that throws answers EIO and the mount lives on', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const opened = await openScratchFs(t, scratch);
  const bug = new Proxy(opened.fs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === 'getxattr') return () => { throw new TypeError('a bug in a handler'); }; // synchronous throw
      if (prop === 'lookup')
        return (parent: number, name: string, who: unknown) =>
          name === 'rejects' ? Promise.reject(new RangeError('a rejected promise')) : value.call(target, parent, name, who);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as FuseBackend;
  const mountPoint = path.join(scratch.dir, 'mnt');
  const mount = await mountInProcess(t, bug, mountPoint);
  const file = path.join(mountPoint, 'f');
  const r = await python(`
import errno, os
open(${JSON.stringify(file)}, "w").write("before")
for name, fn in (("getxattr", lambda: os.getxattr(${JSON.stringify(file)}, "user.x")), ("lookup", lambda: os.stat(${JSON.stringify(path.join(mountPoint, 'rejects'))}))):
    try:
        fn()
        print(name, "no error")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
open(${JSON.stringify(file)}, "a").write(" after")
print(open(${JSON.stringify(file)}).read())
`);
  t.equal(r.code, 0, r.stderr);
  t.same(r.stdout.trim().split('\n'), ['getxattr EIO', 'lookup EIO', 'before after'], 'EIO for both, then the mount still serves');
  t.equal(mount.inFlightCount, 0, 'every request answered');
});

t.test('a read its caller gives up on is answered EINTR at once', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const opened = await openScratchFs(t, scratch);
  const stuck = new Set<number>();
  const hung: (() => void)[] = [];
  const hanging = new Proxy(opened.fs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === 'read')
        return (fh: number, offset: number, length: number, into?: Buffer) =>
          stuck.has(fh)
            ? new Promise((_, reject) => hung.push(() => reject(new Error('the bucket came back')))) // a recall from a bucket that does not answer
            : value.call(target, fh, offset, length, into);
      if (prop === 'open')
        return async (ino: Ino, flags: number, who: unknown) => {
          const fh = await value.call(target, ino, flags, who);
          if ((await target.getattr(ino)).sizeBytes === 4096) stuck.add(fh);
          return fh;
        };
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as FuseBackend;
  const mountPoint = path.join(scratch.dir, 'mnt');
  const mount = await mountInProcess(t, hanging, mountPoint);
  const file = path.join(mountPoint, 'cold');
  t.equal((await python(`open(${JSON.stringify(file)}, "wb").write(b"x" * 4096)`)).code, 0);
  const reader = spawn('python3', ['-c', `import os; fd = os.open(${JSON.stringify(file)}, os.O_RDONLY | os.O_DIRECT); os.read(fd, 4096)`], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => reader.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  t.teardown(() => reader.kill('SIGKILL'));
  t.ok(await until(() => hung.length === 1), 'the read reached the file system and hangs there');
  t.equal(reader.exitCode, null, 'the reader waits');
  reader.kill('SIGINT');
  const done = await within(exited, 5000);
  t.not(done, 'timeout', 'Ctrl-C ends the read (a program with a SIGINT handler: the kernel sends INTERRUPT)');
  t.equal(mount.inFlightCount, 0, 'the interrupted request got its answer');

  // cat dies of SIGINT (no handler): its page-cache read is not interrupted, the kill ends the wait.
  const cat = spawn('cat', [file], { stdio: 'ignore' });
  const catExited = new Promise((resolve) => cat.once('exit', () => resolve('exited')));
  t.teardown(() => cat.kill('SIGKILL'));
  t.ok(await until(() => hung.length === 2), "cat's read reached the file system and hangs there");
  t.equal(cat.exitCode, null, 'cat waits');
  cat.kill('SIGINT');
  t.equal(await within(catExited, 5000), 'exited', 'Ctrl-C ends cat');
  for (const release of hung) release();
  t.ok(await until(() => mount.inFlightCount === 0), 'nothing left in flight once the bucket answers');
});

t.test('the kernel negotiates 1 MiB requests and sends them whole', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const opened = await openScratchFs(t, scratch);
  const sizes = { read: [] as number[], write: [] as number[] };
  const counting = new Proxy(opened.fs, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === 'write') return (fh: number, offset: number, data: Buffer) => (sizes.write.push(data.length), value.call(target, fh, offset, data));
      if (prop === 'read') return (fh: number, offset: number, length: number, into?: Buffer) => (sizes.read.push(length), value.call(target, fh, offset, length, into));
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as FuseBackend;
  const mountPoint = path.join(scratch.dir, 'mnt');
  const mount = await mountInProcess(t, counting, mountPoint);
  t.equal(mount.connection?.maxWriteBytes, MiB, 'max_write 1 MiB');
  const file = path.join(mountPoint, 'big');
  await run('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', 'count=4', 'oflag=direct', 'status=none']);
  t.same(sizes.write, [MiB, MiB, MiB, MiB], 'four writes of 1 MiB');
  await run('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none']);
  t.ok(sizes.read.length >= 4 && sizes.read.slice(0, 4).every((n) => n === MiB), `reads of 1 MiB: ${sizes.read.join(', ')}`);
});

t.test('bad conditions: one clear line each, nothing mounted, nothing changed', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const mountPoint = path.join(scratch.dir, 'mnt');
  const metaBefore = hashDir(scratch.meta);
  const serveArgs = (mount = mountPoint) => [tierfsBin, 'serve', '--flash', scratch.flash, '--meta', scratch.meta, '--mount', mount, '--admin-socket', ''];
  const cases: { name: string; command: string; args: string[]; env?: NodeJS.ProcessEnv; status: number; message: RegExp }[] = [
    {
      name: 'no /dev/fuse',
      command: 'unshare',
      args: ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /dev && exec "$0" "$@"', process.execPath, ...serveArgs()],
      status: 1,
      message: /^tierfs: no \/dev\/fuse: load the fuse kernel module/m,
    },
    {
      name: 'no fusermount3',
      command: process.execPath,
      args: serveArgs(),
      env: { ...process.env, PATH: '/nonexistent' },
      status: 1,
      message: /^tierfs: fusermount3 not found: install the fuse3 package/m,
    },
    { name: 'a file as mount point', command: process.execPath, args: serveArgs(scratch.flash), status: 2, message: /^tierfs: serve: mount point .* is not a directory$/m },
    { name: 'a mount point whose parent is missing', command: process.execPath, args: serveArgs(path.join(scratch.dir, 'no', 'mnt')), status: 1, message: /^tierfs: cannot create mount point .*ENOENT/m },
  ];
  for (const c of cases) {
    if (c.command === 'unshare' && !isRoot) continue;
    const r = spawnSync(c.command, c.args, { encoding: 'utf8', env: { ...(c.env ?? process.env), TIERFS_LOG: 'warn' }, timeout: 30_000 });
    t.equal(r.status, c.status, `${c.name}: exit ${c.status}`);
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, `${c.name}: one line (${r.stderr.trim()})`);
    t.match(r.stderr, c.message, c.name);
    t.notOk(isMounted(mountPoint), `${c.name}: nothing mounted`);
  }
  t.equal(hashDir(scratch.meta), metaBefore, 'the metadata was not touched');
});

t.test('a mount point another daemon serves is refused; the first one keeps serving', async (t) => {
  const first = await formatScratch(t, 64 * MiB);
  const second = await formatScratch(t, 64 * MiB);
  const served = await serve(t, first);
  fs.writeFileSync(path.join(served.mount, 'mine'), 'first');
  const r = spawnSync(process.execPath, [tierfsBin, 'serve', '--flash', second.flash, '--meta', second.meta, '--mount', served.mount, '--admin-socket', ''], {
    encoding: 'utf8',
    env: { ...process.env, TIERFS_LOG: 'warn' },
    timeout: 30_000,
  });
  t.equal(r.status, 1);
  t.match(r.stderr.trim(), /^tierfs: \S+ is already mounted \(fuse\.tierfs\): unmount it first or choose another mount point$/);
  t.equal(fs.readFileSync(path.join(served.mount, 'mine'), 'utf8'), 'first', 'the first daemon still serves');
  t.equal(await served.stop(), 0);
});

t.test('a daemon killed mid-request: the writer gets an error, fusermount3 unmounts, fsynced data survives', async (t) => {
  const scratch = await formatScratch(t, 256 * MiB);
  let served = await serve(t, scratch);
  const durable = path.join(served.mount, 'durable.bin');
  const data = pattern(3, 3 * MiB);
  const fd = fs.openSync(durable, 'w');
  fs.writeSync(fd, data);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const writer = spawn('dd', ['if=/dev/zero', `of=${path.join(served.mount, 'stream')}`, 'bs=1M', 'count=100000', 'status=none'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let writerErr = '';
  writer.stderr!.on('data', (d: Buffer) => (writerErr += d.toString()));
  const writerDone = new Promise<number | null>((resolve) => writer.once('exit', (code) => resolve(code)));
  t.teardown(() => writer.kill('SIGKILL'));
  while (!fs.existsSync(path.join(served.mount, 'stream')) || fs.statSync(path.join(served.mount, 'stream')).size < 8 * MiB)
    await new Promise((resolve) => setTimeout(resolve, 20));
  await served.kill();
  const code = await within(writerDone, 10_000);
  t.not(code, 'timeout', 'the writer does not hang');
  t.not(code, 0, 'the writer sees an error');
  t.match(writerErr, /Transport endpoint is not connected|Software caused connection abort|No such device/, `dd: ${writerErr.trim()}`);
  // fusermount3 (auto_unmount) unmounts once it reads EOF on its socket and opening the mount point
  // answers ENOTCONN; the binding moves that socket below /dev/fuse so the connection is aborted first
  // (before, under load, about one kill in four left a dead mount).
  const deadline = Date.now() + 10_000;
  while (isMounted(served.mount) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.notOk(isMounted(served.mount), 'fusermount3 (auto_unmount) took the mount away');
  t.ok(fs.statSync(served.mount).isDirectory(), 'the mount point is a plain directory again');
  served = await serve(t, scratch);
  t.ok(fs.readFileSync(durable).equals(data), 'restarted: the fsynced bytes read back');
  t.equal(await served.stop(), 0);
});

t.test('a mount left dead (daemon and its fusermount3 killed) is detached and reused, with a warning', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  let served = await serve(t, scratch);
  const file = path.join(served.mount, 'kept');
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, 'kept');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const watchdog = spawnSync('pgrep', ['-P', String(served.child.pid), 'fusermount3'], { encoding: 'utf8' }).stdout.trim();
  t.match(watchdog, /^\d+$/, 'fusermount3 watches the daemon');
  process.kill(Number(watchdog), 'SIGKILL');
  await served.kill();
  t.match(spawnSync('stat', [served.mount], { encoding: 'utf8' }).stderr, /Transport endpoint is not connected/, 'the mount point is dead');
  served = await serve(t, scratch);
  t.match(served.stderr(), /mount point left dead by a daemon that exited without unmounting; detaching it/);
  t.equal(fs.readFileSync(file, 'utf8'), 'kept');
  t.equal(await served.stop(), 0);
});

t.test('unmounted from outside: the daemon commits and exits 1 with one line', async (t) => {
  const scratch = await formatScratch(t, 64 * MiB);
  const served = await serve(t, scratch);
  fs.writeFileSync(path.join(served.mount, 'late'), 'written, not fsynced');
  const exited = new Promise<number | null>((resolve) => served.child.once('exit', (code) => resolve(code)));
  spawnSync('fusermount3', ['-u', '-z', served.mount]);
  t.equal(await within(exited, 20_000), 1, 'exit 1');
  t.match(served.stderr(), /tierfs: \S+ was unmounted from outside; committed and stopped/);
  const again = await serve(t, scratch);
  t.equal(fs.readFileSync(path.join(again.mount, 'late'), 'utf8'), 'written, not fsynced', 'what was written is there after a restart');
  t.equal(await again.stop(), 0);
});

t.test('mount table and device checks', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tierfs-mountinfo-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mountinfo = path.join(dir, 'mountinfo');
  fs.writeFileSync(mountinfo, [
    '22 1 0:21 / /proc rw,nosuid - proc proc rw',
    '90 22 0:47 / /srv/my\\040files rw,nosuid,nodev,relatime shared:1 - fuse.tierfs tierfs rw,user_id=0',
    '91 22 0:48 / /srv/my\\040files rw - tmpfs none rw',
    'garbage line',
  ].join('\n'));
  t.same(mountsAt('/srv/my files', mountinfo), [
    { mountPoint: '/srv/my files', fsType: 'fuse.tierfs', minor: 47, device: '0:47' },
    { mountPoint: '/srv/my files', fsType: 'tmpfs', minor: 48, device: '0:48' },
  ], 'escaped names, optional fields, stacked mounts in order');
  t.same(mountsAt('/srv/other', mountinfo), []);
  t.doesNotThrow(() => checkFuseDevice(), '/dev/fuse is the FUSE device here');
  t.throws(() => checkFuseDevice('/dev/null'), /\/dev\/null is not the FUSE device \(character device 10:229\)/);
  t.throws(() => checkFuseDevice(path.join(dir, 'none')), /^.*no .*none: load the fuse kernel module/);
});

function hashDir(dir: string): string {
  const hash = crypto.createHash('sha256');
  for (const name of fs.readdirSync(dir).sort()) {
    hash.update(name);
    hash.update(fs.readFileSync(path.join(dir, name)));
  }
  return hash.digest('hex');
}
