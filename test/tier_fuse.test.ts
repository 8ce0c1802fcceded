// Tiering through a FUSE mount and the CLI: write, destage, release, read back
// byte-identical, partial recall, policies, status — on a directory, s3rver
// and azurite target.
import t from 'tap';
import type { Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cliJson as json, formatWithTarget, runCli, serve } from './helpers/daemon';
import { pattern, scratchDir } from './helpers/fs';
import { startAzurite, startS3rver } from './helpers/servers';

const MiB = 2 ** 20;

const md5 = (data: Buffer) => crypto.createHash('md5').update(data).digest('hex');

async function roundTrip(t: Test, target: string) {
  const scratch = await formatWithTarget(t, target);
  const served = await serve(t, scratch);
  const env = { TIERFS_SOCKET: served.socket };
  const file = path.join(served.mount, 'data.bin');
  const data = pattern(41, 24 * MiB + 4321);
  fs.writeFileSync(file, data);
  const before = json(runCli(['stat', file, '--json'], env));
  t.match(before, { path: '/data.bin', size: data.length, flashBytes: 24 * MiB + 8192, objectBytes: 0, policy: 'default' });
  const destage = runCli(['destage', file, '--wait'], env);
  t.equal(destage.status, 0, destage.stderr);
  t.match(destage.stdout, /24\.0 MiB destaged in 1 file/);
  t.match(json(runCli(['stat', file, '--json'], env)), { flashBytes: 24 * MiB + 8192, objectBytes: 24 * MiB + 8192 });
  const released = runCli(['release', file], env);
  t.equal(released.status, 0, released.stderr);
  t.match(json(runCli(['stat', file, '--json'], env)), { flashBytes: 0, objectBytes: 24 * MiB + 8192, objectOnlyBytes: 24 * MiB + 8192 });
  // Partial recall: one range in the middle of the cold file.
  const fd = fs.openSync(file, 'r');
  const piece = Buffer.alloc(64 * 1024);
  fs.readSync(fd, piece, 0, piece.length, 13 * MiB + 5000);
  fs.closeSync(fd);
  t.ok(piece.equals(data.subarray(13 * MiB + 5000, 13 * MiB + 5000 + piece.length)), 'the range reads back');
  const status = json(runCli(['status', '--json'], env));
  t.ok(status.counters.recalledBytes < 6 * MiB, `only around the range was fetched (${status.counters.recalledBytes} bytes)`);
  t.ok(status.residency.objectOnlyBytes >= 20 * MiB, 'the rest stays in the object tier');
  t.match(status, { flash: { capacityBytes: Number, usedBytes: Number }, packs: { count: 1, storedBytes: Number, liveBytes: 24 * MiB + 8192, garbageBytes: 0 } });
  t.equal(md5(fs.readFileSync(file)), md5(data), 'the whole file reads back byte-identical');
  const recall = runCli(['recall', file, '--wait'], env);
  t.equal(recall.status, 0, recall.stderr);
  t.match(json(runCli(['stat', file, '--json'], env)), { flashBytes: 24 * MiB + 8192, objectOnlyBytes: 0 });
  const human = runCli(['status'], env);
  t.match(human.stdout, /packs +1 holding/);
  t.match(human.stdout, /reachable/);
  // Restart: the residency and the packs persist.
  t.equal(await served.stop(), 0);
  const again = await serve(t, scratch);
  t.match(json(runCli(['stat', file, '--json'], { TIERFS_SOCKET: again.socket })), { objectBytes: 24 * MiB + 8192 });
  t.equal(md5(fs.readFileSync(file)), md5(data));
}

t.test('round trip through the mount: directory target', async (t) => {
  await roundTrip(t, `file://${scratchDir(t)}/objects`);
});

t.test('round trip through the mount: s3rver', async (t) => {
  const server = await startS3rver(t);
  await roundTrip(t, server.url('fuse'));
});

t.test('round trip through the mount: azurite', async (t) => {
  const server = await startAzurite(t);
  await roundTrip(t, server.url('fuse'));
});

t.test('policies through the CLI are honoured by the running daemon', async (t) => {
  const scratch = await formatWithTarget(t, `file://${scratchDir(t)}/objects`);
  const config = path.join(scratch.dir, 'tierfs.json');
  fs.writeFileSync(config, JSON.stringify({ flash: scratch.flash, meta: scratch.meta, mount: path.join(scratch.dir, 'mnt'), packWait: '0s', adminSocket: path.join(scratch.dir, 'admin.sock') }));
  const served = await serve(t, scratch, path.join(scratch.dir, 'mnt'), ['--config', config]);
  const env = { TIERFS_SOCKET: served.socket };
  t.equal(runCli(['policy', 'add', 'backups', '--path', '/backup/**', '--mode', 'all'], env).status, 0);
  t.equal(runCli(['policy', 'add', 'db', '--path', '/backup/*.db', '--mode', 'pin'], env).status, 0);
  const bad = runCli(['policy', 'add', 'x', '--path', '/x', '--mode', 'sometimes'], env);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /^tierfs: policy mode "sometimes": one of auto, pin, all, never\n$/);
  t.equal(runCli(['policy', 'add', 'db', '--path', '/y', '--mode', 'pin'], env).status, 1, 'a duplicate name is refused');
  t.match(runCli(['policy', 'list'], env).stdout, /backups +all +\/backup\/\*\*/);
  fs.mkdirSync(path.join(served.mount, 'backup'));
  fs.writeFileSync(path.join(served.mount, 'backup', 'monday.tar'), pattern(51, 3 * MiB));
  fs.writeFileSync(path.join(served.mount, 'backup', 'catalog.db'), pattern(52, MiB));
  fs.writeFileSync(path.join(served.mount, 'hot.bin'), pattern(53, MiB));
  const deadline = Date.now() + 20_000;
  let stat = json(runCli(['stat', path.join(served.mount, 'backup', 'monday.tar'), '--json'], env));
  while (stat.objectBytes < 3 * MiB && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    stat = json(runCli(['stat', path.join(served.mount, 'backup', 'monday.tar'), '--json'], env));
  }
  t.match(stat, { policy: 'backups', objectBytes: 3 * MiB }, 'mode all: destaged by the background engine without cooling');
  t.match(json(runCli(['stat', path.join(served.mount, 'backup', 'catalog.db'), '--json'], env)), { policy: 'db', objectBytes: 0 }, 'the more specific pin wins');
  t.match(json(runCli(['stat', path.join(served.mount, 'hot.bin'), '--json'], env)), { policy: 'default', objectBytes: 0 }, 'default: still cooling');
  const refused = runCli(['destage', path.join(served.mount, 'backup', 'catalog.db'), '--wait'], env);
  t.equal(refused.status, 2, 'refused before anything starts');
  t.match(refused.stderr, /policy db \(pin\) keeps \/backup\/catalog.db on flash/);
  t.equal(runCli(['policy', 'rm', 'db'], env).status, 0);
  t.equal(runCli(['policy', 'rm', 'db'], env).status, 1);
});

t.test('CLI bad input: one clear line, nothing changed', async (t) => {
  const scratch = await formatWithTarget(t, `file://${scratchDir(t)}/objects`);
  const served = await serve(t, scratch);
  const env = { TIERFS_SOCKET: served.socket };
  const cases: [string[], Record<string, string>, number, RegExp][] = [
    [['stat'], env, 2, /give at least one PATH/],
    [['stat', '/etc/hostname'], env, 2, /is not in the tierfs mount at/],
    [['stat', path.join(served.mount, 'missing')], env, 1, /no such file/],
    [['status'], { TIERFS_SOCKET: path.join(scratch.dir, 'nothing.sock') }, 1, /no tierfs daemon answers at/],
    [['destage', served.mount, '--wiat'], env, 2, /Unknown option '--wiat'/],
    [['policy', 'frob'], env, 2, /unknown subcommand "frob"/],
    [['policy', 'add', 'p', '--mode', 'pin'], env, 2, /--path is required/],
    [['policy', 'add', 'p', '--path', '/x', '--mode', 'auto', '--cool-after', 'soon'], env, 2, /is not a duration/],
    [['format', '--flash', path.join(scratch.dir, 'f2'), '--meta', path.join(scratch.dir, 'm2'), '--target', 'gopher://x'], {}, 2, /scheme gopher: is not supported/],
    [['format', '--flash', path.join(scratch.dir, 'f2'), '--meta', path.join(scratch.dir, 'm2'), '--target', 's3://tierfs-test/p?endpoint=http://127.0.0.1:9'], {}, 2, /cannot store objects there/],
    [['format', '--flash', path.join(scratch.dir, 'f2'), '--meta', path.join(scratch.dir, 'm2'), '--encryption-key', '/nonexistent'], {}, 2, /encryption key \/nonexistent: ENOENT/],
  ];
  for (const [args, extraEnv, status, message] of cases) {
    const result = runCli(args, { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x', ...extraEnv });
    t.equal(result.status, status, `${args.join(' ')}: ${result.stderr}`);
    t.match(result.stderr, message);
    t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
  }
  t.notOk(fs.existsSync(path.join(scratch.dir, 'f2')), 'refused formats created nothing');
  const key = path.join(scratch.dir, 'short.key');
  fs.writeFileSync(key, 'abc');
  const shortKey = runCli(['format', '--flash', path.join(scratch.dir, 'f3'), '--meta', path.join(scratch.dir, 'm3'), '--encryption-key', key]);
  t.match(shortKey.stderr, /an encryption key is 32 bytes/);
});
