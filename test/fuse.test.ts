// tierfs through a real FUSE mount: ordinary tools (cp, mv, ln, dd, truncate) and
// python's os module, persistence across unmount and remount.  Killed daemons,
// dead mount points and callers who are not root: test/fuse_binding.test.ts.
import t from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { formatScratch, pattern } from './helpers/fs';
import { isMounted, serve, tierfsBin } from './helpers/daemon';

const sh = (script: string, cwd: string) => execFileSync('bash', ['-euo', 'pipefail', '-c', script], { cwd, encoding: 'utf8', timeout: 120_000 });
const md5 = (file: string) => crypto.createHash('md5').update(fs.readFileSync(file)).digest('hex');

t.test('POSIX through the mount with python os', async (t) => {
  const scratch = await formatScratch(t, 256 * 2 ** 20);
  const served = await serve(t, scratch);
  const result = spawnSync('python3', [path.join(__dirname, 'scripts', 'posix_checks.py'), served.mount], { encoding: 'utf8', timeout: 120_000 });
  const lines = result.stdout.trim().split('\n');
  for (const line of lines) if (line.startsWith('FAIL')) t.fail(line);
  t.equal(result.status, 0, `posix_checks.py: ${lines[lines.length - 1]} ${result.stderr}`);
  t.equal(lines[lines.length - 1], 'ALL OK', `all ${lines.length - 1} checks ran`);
  t.equal(await served.stop(), 0, 'SIGTERM: clean exit');
  t.notOk(isMounted(served.mount), 'and unmounted');
});

/**
 * What the kernel's writeback cache changes, as a user who is not root:
 * partial pages of a file only writable are read through the writing handle,
 * the kernel keeps O_APPEND, and its write-back sets the times of a file the
 * writer may write but does not own.
 */
const writebackChecks = `
import os, sys, time
root = sys.argv[1]
own = os.path.join(root, "user", "write-only")
fd = os.open(own, os.O_WRONLY | os.O_CREAT, 0o200)
os.write(fd, b"hello world")
os.close(fd)
fd = os.open(own, os.O_WRONLY)
os.pwrite(fd, b"XYZ", 1)
os.fsync(fd)
os.close(fd)
log = os.path.join(root, "user", "log")
a = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
b = os.open(log, os.O_WRONLY | os.O_APPEND)
os.write(a, b"one ")
os.write(b, b"two ")
os.write(a, b"three")
os.close(a)
os.close(b)
shared = os.path.join(root, "shared")
before = os.stat(shared).st_mtime_ns
time.sleep(0.05)
fd = os.open(shared, os.O_WRONLY)
os.pwrite(fd, b"by a writer who is not the owner", 100)
os.fsync(fd)
os.close(fd)
print("mtime advanced" if os.stat(shared).st_mtime_ns > before else "mtime stayed")
`;

t.test('--writeback-cache: POSIX through the mount, pages the kernel keeps, and nothing lost across a clean restart', async (t) => {
  const scratch = await formatScratch(t, 256 * 2 ** 20);
  fs.chmodSync(scratch.dir, 0o755);
  let served = await serve(t, scratch, undefined, ['--writeback-cache']);
  t.match(served.stderr(), /FUSE connection .*writebackCache=true/, 'the kernel agreed to its writeback cache');
  const result = spawnSync('python3', [path.join(__dirname, 'scripts', 'posix_checks.py'), served.mount], { encoding: 'utf8', timeout: 120_000 });
  const lines = result.stdout.trim().split('\n');
  for (const line of lines) if (line.startsWith('FAIL')) t.fail(line);
  t.equal(lines[lines.length - 1], 'ALL OK', `posix_checks.py: all ${lines.length - 1} checks ran ${result.stderr}`);

  fs.mkdirSync(path.join(served.mount, 'user'));
  fs.chownSync(path.join(served.mount, 'user'), 1000, 1000);
  fs.writeFileSync(path.join(served.mount, 'shared'), Buffer.alloc(10_000, 1), { mode: 0o666 });
  fs.chmodSync(path.join(served.mount, 'shared'), 0o666);
  const user = spawnSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', '/usr/bin/python3', '-c', writebackChecks, served.mount], { encoding: 'utf8', timeout: 60_000 });
  t.equal(user.status, 0, `the checks ran as uid 1000: ${user.stderr}`);
  t.equal(user.stdout.trim(), 'mtime advanced', "the kernel's write-back set the times of a file its writer does not own");
  t.equal(fs.readFileSync(path.join(served.mount, 'user', 'write-only'), 'utf8'), 'hXYZo world', 'a partial page of a write-only file: read through the writing handle, rewritten in place');
  t.equal(fs.readFileSync(path.join(served.mount, 'user', 'log'), 'utf8'), 'one two three', 'O_APPEND through two descriptors: each write at the end');
  const written = pattern(11, 3 * 2 ** 20 + 777);
  fs.writeFileSync(path.join(served.mount, 'unsynced.bin'), written); // closed, never fsynced
  // Written, never fsynced, and still open when the daemon stops: the kernel still holds the pages.
  const holder = spawn('/usr/bin/python3', ['-c', `
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, bytes(range(256)) * 8192)
print("written", flush=True)
time.sleep(60)`, path.join(served.mount, 'held-open.bin')], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void holder.kill('SIGKILL'));
  await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));

  const exit = await served.stop();
  t.equal(exit, 0, `SIGTERM: clean exit ${served.stderr().split('\n').filter((l) => /warn|error/.test(l)).join(' | ')}`);
  holder.kill('SIGKILL');
  served = await serve(t, scratch, undefined, ['--writeback-cache']);
  t.ok(fs.readFileSync(path.join(served.mount, 'unsynced.bin')).equals(written), 'a file closed without fsync is whole after a clean restart');
  t.ok(fs.readFileSync(path.join(served.mount, 'held-open.bin')).equals(Buffer.from(Array.from({ length: 256 * 8192 }, (_, i) => i % 256))), 'so is one still open, never fsynced, when the daemon stopped');
  const shared = fs.readFileSync(path.join(served.mount, 'shared'));
  t.equal(shared.subarray(100, 132).toString(), 'by a writer who is not the owner', 'and so is what the other user wrote');
  t.equal(await served.stop(), 0);
});

t.test('ordinary tools, then persistence across unmount and remount', async (t) => {
  const scratch = await formatScratch(t, 512 * 2 ** 20);
  const source = path.join(scratch.dir, 'source.bin');
  fs.writeFileSync(source, pattern(7, 40 * 2 ** 20 + 12345));
  let served = await serve(t, scratch);
  const m = served.mount;
  sh(`
    cp ${source} big.bin
    mkdir -p tree/sub
    cp big.bin tree/sub/copy.bin
    mv tree/sub/copy.bin tree/renamed.bin
    ln tree/renamed.bin tree/hardlink.bin
    ln -s renamed.bin tree/symlink.bin
    dd if=/dev/urandom of=random.bin bs=64k count=37 status=none
    dd if=/dev/zero of=big.bin bs=4k seek=100 count=3 conv=notrunc status=none
    truncate -s 7777777 tree/renamed.bin
    printf 'line\\n' > log.txt; for i in $(seq 1 200); do echo "entry $i" >> log.txt; done
    chmod 600 log.txt
    sync
  `, m);
  const expected = new Map<string, string>();
  for (const name of ['big.bin', 'random.bin', 'tree/renamed.bin', 'log.txt']) expected.set(name, md5(path.join(m, name)));
  t.equal(fs.statSync(path.join(m, 'tree/hardlink.bin')).size, 7777777, 'truncate shows through the hard link');
  t.equal(execFileSync('cmp', ['-n', String(400 * 1024), source, path.join(m, 'big.bin')], { encoding: 'utf8' }).trim(), '', 'cp copies bytes exactly (first 400 KiB)');
  const patched = spawnSync('cmp', [source, path.join(m, 'big.bin')], { encoding: 'utf8' });
  t.match(patched.stdout, /byte 409601/, 'dd conv=notrunc changed exactly the block it was told to');
  t.equal(fs.readFileSync(path.join(m, 'log.txt'), 'utf8').split('\n').length, 202, 'appends through the shell');

  t.equal(await served.stop(), 0, 'clean stop');
  served = await serve(t, scratch);
  for (const [name, sum] of expected) t.equal(md5(path.join(m, name)), sum, `${name} survives a remount`);
  t.equal(fs.readlinkSync(path.join(m, 'tree/symlink.bin')), 'renamed.bin', 'symlink survives');
  t.equal(fs.statSync(path.join(m, 'tree/hardlink.bin')).nlink, 2, 'link count survives');
  t.equal(fs.statSync(path.join(m, 'log.txt')).mode & 0o777, 0o600, 'mode survives');
  sh('rm -r tree big.bin && mv random.bin kept.bin', m);
  t.same(fs.readdirSync(m).sort(), ['kept.bin', 'log.txt'], 'rm -r and mv');
  t.equal(await served.stop(), 0);
});

t.test('a second daemon on the same file system is refused, and nothing is mounted', async (t) => {
  const scratch = await formatScratch(t, 64 * 2 ** 20);
  const served = await serve(t, scratch);
  const second = path.join(scratch.dir, 'second');
  const r = spawnSync(process.execPath, [tierfsBin, 'serve', '--flash', scratch.flash, '--meta', scratch.meta, '--mount', second], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /tierfs: metadata .* is in use by another tierfs process/);
  t.notOk(isMounted(second), 'no second mount');
  t.equal(await served.stop(), 0);
});
