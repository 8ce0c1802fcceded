// Followers (serve --follow): another appliance serving the writer's file
// system read-only from its bucket, kept current by the writer's metadata
// log.  A writer and two followers on one machine, each with its own flash
// and metadata, on one azurite container.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { cliJson, formatWithTarget, lazyUnmount, runCli, serve, tierfsBin, type Served } from './helpers/daemon';
import { scratchDir } from './helpers/fs';
import { freePort } from './helpers/object_servers';
import { startAzurite, startS3rver } from './helpers/servers';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until `test` holds (a follower applies within its poll interval plus the writer's RPO); fails the test after the deadline. */
async function until(t: Test, what: string, test: () => boolean, deadlineMs = 20_000): Promise<boolean> {
  const started = Date.now();
  for (;;) {
    try {
      if (test()) return true;
    } catch {
      // not yet (a name the kernel does not know yet, a file not readable yet)
    }
    if (Date.now() - started > deadlineMs) {
      t.fail(`${what}: not within ${deadlineMs} ms`);
      return false;
    }
    await sleep(100);
  }
}

const status = (served: Served) => cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: served.socket }));

async function replicated(t: Test, writer: Served): Promise<void> {
  await until(t, 'every change of the writer in the bucket', () => {
    const m = status(writer).replication;
    return m.lagMs === 0 && m.uploadedSeq === m.committedSeq;
  });
}

function destage(t: Test, writer: Served, file: string): void {
  const done = runCli(['destage', file, '--wait'], { TIERFS_SOCKET: writer.socket });
  t.equal(done.status, 0, done.stderr);
}

async function follower(t: Test, target: string, name: string, extra: string[] = []): Promise<Served> {
  const dir = scratchDir(t, `tierfs-${name}-`);
  return serve(t, { dir, flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') }, undefined, ['--follow', '--target', target, '--follow-interval', '200ms', ...extra]);
}

/** What the writer puts in the bucket appears on two followers, read-only. */
async function writerAndTwoFollowers(t: Test, kind: 'azurite' | 's3rver'): Promise<void> {
  const server = kind === 'azurite' ? await startAzurite(t) : await startS3rver(t); // s3rver ignores conditions: following needs none
  const target = server.url('followed');
  const writer = await serve(t, await formatWithTarget(t, target, '256M'), undefined, ['--metadata-rpo', '1s']);
  const one = randomBytes(3 * 2 ** 20 + 123);
  fs.writeFileSync(path.join(writer.mount, 'one'), one);
  fs.mkdirSync(path.join(writer.mount, 'dir'));
  fs.writeFileSync(path.join(writer.mount, 'dir', 'small'), 'a small file\n');
  destage(t, writer, path.join(writer.mount, 'one'));
  destage(t, writer, path.join(writer.mount, 'dir', 'small'));
  await replicated(t, writer);

  const metricsPort = await freePort();
  const a = await follower(t, target, 'follower-a', ['--metrics', `127.0.0.1:${metricsPort}`]);
  const b = await follower(t, target, 'follower-b');
  for (const f of [a, b]) {
    t.ok(fs.readFileSync(path.join(f.mount, 'one')).equals(one), 'a destaged file reads back byte-identical');
    t.equal(fs.readFileSync(path.join(f.mount, 'dir', 'small'), 'utf8'), 'a small file\n');
    t.throws(() => fs.writeFileSync(path.join(f.mount, 'new'), 'x'), { code: 'EROFS' }, 'a create answers EROFS');
    t.throws(() => fs.appendFileSync(path.join(f.mount, 'one'), 'x'), { code: 'EROFS' }, 'a write answers EROFS');
    t.throws(() => fs.unlinkSync(path.join(f.mount, 'one')), { code: 'EROFS' }, 'an unlink answers EROFS');
    t.throws(() => fs.mkdirSync(path.join(f.mount, 'd2')), { code: 'EROFS' });
    const s = status(f);
    t.match(s.follower, { state: 'following', lastError: null });
    t.equal(s.writer, null, 'a follower takes no writer lease');
    t.equal(s.replication, null, 'and replicates nothing');
    const refused = runCli(['pin', path.join(f.mount, 'one')], { TIERFS_SOCKET: f.socket });
    t.not(refused.status, 0, 'commands that change the bucket are refused');
    t.match(refused.stderr, /read-only/);
  }
  t.match(runCli(['status'], { TIERFS_SOCKET: a.socket }).stdout, /follower +read-only, following the writer: change \d+ applied/);
  await until(t, 'what a follower read is kept on its own flash', () => status(a).residency.bothBytes >= 3 * 2 ** 20);
  const scraped = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  t.match(scraped, /^tierfs_writer 0$/m, 'metrics: not the writer');
  t.match(scraped, /^tierfs_follower_applied_change [1-9]\d*$/m, 'metrics: the change applied');
  t.match(scraped, /^tierfs_follower_caught_up_seconds [\d.]+$/m);

  // New work on the writer: the name appears on the followers at once; its bytes once destaged.
  const held = fs.openSync(path.join(a.mount, 'one'), 'r'); // open on a follower across its removal on the writer
  const two = randomBytes(2 ** 20);
  fs.writeFileSync(path.join(writer.mount, 'two'), two);
  fs.renameSync(path.join(writer.mount, 'dir', 'small'), path.join(writer.mount, 'dir', 'renamed'));
  fs.unlinkSync(path.join(writer.mount, 'one'));
  await replicated(t, writer);
  for (const f of [a, b]) {
    await until(t, 'the new name on the follower', () => fs.statSync(path.join(f.mount, 'two')).size === two.length);
    await until(t, 'a removed name gone', () => !fs.existsSync(path.join(f.mount, 'one')));
    await until(t, 'a rename', () => fs.readFileSync(path.join(f.mount, 'dir', 'renamed'), 'utf8') === 'a small file\n');
    t.throws(() => fs.readFileSync(path.join(f.mount, 'two')), { code: 'EIO' }, 'bytes the writer has not destaged: EIO, never zeros');
  }
  const after = Buffer.alloc(4096);
  t.throws(() => fs.readSync(held, after, 0, 4096, 0), { code: 'ENOENT' }, 'a file removed on the writer: its open readers on a follower get ENOENT, never stale or zero bytes');
  fs.closeSync(held);
  t.match(runCli(['lost'], { TIERFS_SOCKET: a.socket }).stdout, /\/two\b/, 'tierfs lost on a follower lists what is not in the bucket yet');
  destage(t, writer, path.join(writer.mount, 'two'));
  await replicated(t, writer);
  for (const f of [a, b]) await until(t, 'destaged bytes readable on the follower', () => fs.readFileSync(path.join(f.mount, 'two')).equals(two));

  // A follower stopped while the writer works catches up when it starts again.
  t.equal(await b.stop(), 0);
  const three = randomBytes(512 * 1024);
  fs.writeFileSync(path.join(writer.mount, 'three'), three);
  destage(t, writer, path.join(writer.mount, 'three'));
  await replicated(t, writer);
  const again = await serve(t, { dir: path.dirname(b.socket), flash: path.join(path.dirname(b.socket), 'flash'), meta: path.join(path.dirname(b.socket), 'meta') }, b.mount, ['--follow', '--follow-interval', '200ms']);
  await until(t, 'the restarted follower caught up', () => fs.readFileSync(path.join(again.mount, 'three')).equals(three));
  await until(t, 'both followers at the writer\'s change', () => status(a).follower.appliedSeq === status(writer).replication.uploadedSeq && status(again).follower.appliedSeq === status(writer).replication.uploadedSeq);
  t.match(status(again).follower, { state: 'following' });
  await until(t, 'both followers published a position', () => cliJson(runCli(['followers', '--json'], { TIERFS_SOCKET: writer.socket })).followers.length === 2);
  const listed = cliJson(runCli(['followers', '--json'], { TIERFS_SOCKET: writer.socket })).followers as { id: string; state: string; appliedSeq: number; behindChanges: number }[];
  t.equal(new Set(listed.map((f) => f.id)).size, 2, 'two followers, each with its own id');
  t.ok(listed.every((f) => f.state === 'following' && f.appliedSeq > 0 && f.behindChanges >= 0), 'positions and how far behind');
  t.match(runCli(['followers'], { TIERFS_SOCKET: writer.socket }).stdout, /FOLLOWER +HOST +CHANGE +BEHIND/);

  // A follower's metadata cannot serve as a writer, nor a writer's as a follower.
  t.equal(await again.stop(), 0);
  const asWriter = runCli(['serve', '--flash', path.join(path.dirname(b.socket), 'flash'), '--meta', path.join(path.dirname(b.socket), 'meta'), '--mount', b.mount, '--admin-socket', '']);
  t.not(asWriter.status, 0);
  t.match(asWriter.stderr, /follows a writer \(serve --follow\); it cannot serve as the writer/);
  t.match(runCli(['serve', '--follow', '--flash', 'x', '--meta', 'y', '--mount', 'z', '--follow-interval', '1ms']).stderr, /--follow-interval: from 100ms to 10m/);
  t.match(runCli(['serve', '--flash', 'x', '--meta', 'y', '--mount', 'z', '--follow-interval', '1s']).stderr, /--follow-interval \(followInterval\) is for a follower/);
}

for (const kind of ['azurite', 's3rver'] as const)
  t.test(`a writer and two followers on ${kind}: what the writer puts in the bucket appears on the followers, read-only`, (t) => writerAndTwoFollowers(t, kind));

t.test('fail-over: promote waits for the writer lease, exactly one of two promotions wins, the old writer comes back read-only', async (t) => {
  const server = await startAzurite(t);
  const target = server.url('failover');
  const writerScratch = await formatWithTarget(t, target, '256M');
  const writer = await serve(t, writerScratch, undefined, ['--metadata-rpo', '1s', '--lease-ttl', '2s']);
  const kept = randomBytes(2 ** 20 + 7);
  fs.writeFileSync(path.join(writer.mount, 'kept'), kept);
  destage(t, writer, path.join(writer.mount, 'kept'));
  fs.writeFileSync(path.join(writer.mount, 'only-on-flash'), 'never destaged\n');
  await replicated(t, writer);
  const followers = [await follower(t, target, 'promote-a'), await follower(t, target, 'promote-b')];
  const metaOf = (f: Served) => path.join(path.dirname(f.socket), 'meta');
  for (const f of followers) await until(t, 'the follower applied everything', () => status(f).follower.appliedSeq === status(writer).replication.uploadedSeq);
  for (const f of followers) t.equal(await f.stop(), 0);

  const early = runCli(['promote', '--meta', metaOf(followers[0]), '--lease-ttl', '2s', '--wait', '3s']);
  t.equal(early.status, 1, 'refused while the writer renews its lease');
  t.match(early.stderr, /renews its writer lease/);
  t.match(runCli(['promote', '--meta', writerScratch.meta]).stderr, /is in use by another tierfs process/, 'metadata a daemon serves is not touched');

  await writer.kill(); // the writer is gone: its lease stops being renewed
  t.match(runCli(['promote', '--meta', writerScratch.meta]).stderr, /not a follower's metadata/, 'a writer is not promoted');
  const promotions = followers.map((f) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [tierfsBin, 'promote', '--meta', metaOf(f), '--lease-ttl', '2s', '--wait', '20s'], { env: { ...process.env, TIERFS_LOG: 'warn' } });
      let stdout = '', stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d));
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      child.on('exit', (status) => resolve({ status, stdout, stderr }));
    }),
  );
  const started = Date.now();
  const results = await Promise.all(promotions);
  t.ok(Date.now() - started >= 1900, 'not before the lease went a whole TTL unrenewed');
  const winners = results.filter((r) => r.status === 0);
  t.equal(winners.length, 1, `exactly one promotion wins (${results.map((r) => r.stderr.trim() || r.stdout.trim()).join(' | ')})`);
  t.match(winners[0]?.stdout, /promoted: this appliance is now the writer of file system [0-9a-f-]+ \(change \d+ applied, generation \d+/);
  t.match(results.find((r) => r.status !== 0)?.stderr, /took the writer role meanwhile|served by/);

  const won = followers[results.findIndex((r) => r.status === 0)];
  const dir = path.dirname(won.socket);
  const promoted = await serve(t, { dir, flash: path.join(dir, 'flash'), meta: metaOf(won) }, won.mount, ['--metadata-rpo', '1s', '--lease-ttl', '2s']);
  t.ok(fs.readFileSync(path.join(promoted.mount, 'kept')).equals(kept), 'everything destaged before the kill is there');
  t.throws(() => fs.readFileSync(path.join(promoted.mount, 'only-on-flash')), { code: 'EIO' }, 'what only the old writer\'s flash held reads EIO');
  t.match(runCli(['lost'], { TIERFS_SOCKET: promoted.socket }).stdout, /only-on-flash/, 'and is listed as lost');
  fs.writeFileSync(path.join(promoted.mount, 'new'), 'written by the new writer\n');
  t.match(status(promoted).writer, { state: 'held', readOnly: null });
  await replicated(t, promoted);

  lazyUnmount(writer.mount);
  const old = await serve(t, writerScratch, writer.mount, ['--metadata-rpo', '1s', '--lease-ttl', '2s']);
  t.throws(() => fs.writeFileSync(path.join(old.mount, 'stale'), 'x'), { code: 'EROFS' }, 'the old writer, back, writes nothing');
  t.match(status(old).writer.readOnly, /generation \d+ change \d+; here generation \d+ change \d+\): this copy must not write/);
  t.match(status(promoted).writer, { state: 'held' }, 'the new writer is untouched');
});
