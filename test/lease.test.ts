// The writer lease (src/tier/lease.ts) on the directory target, azurite and
// s3rver (which ignores conditions): one writer, take-over after a whole TTL
// of silence, the old holder finding out, clean release, restarts, copies
// the bucket has moved past, and a renewal retried after it had landed.
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { systemClock, type Clock, type Timer } from '../src/clock';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO, type FileSystem } from '../src/fs/fs';
import { FencedObjectStore, WriterLease, leaseKey, type LeaseOptions } from '../src/tier/lease';
import { defaultReplicationOptions, openTarget } from '../src/tier/tier';
import { ObjectStoreError, openObjectStore, RetryingObjectStore, type ObjectStore, type PutCondition } from '../src/tier/object_store';
import { cliJson, formatWithTarget, runCli, serve } from './helpers/daemon';
import { formatScratch, openTiered, scratchDir, writeFile } from './helpers/fs';
import { startAzurite, startS3rver } from './helpers/servers';

const fsUuid = '0f5d1d8e-3c55-4f43-9b43-2a8d7c5e9f10';
const ttlMs = 900;

/** The system clock, but an appliance's timers can be frozen (a hung or cut-off machine) and thawed. */
function freezableClock(): Clock & { frozen: boolean } {
  const clock = {
    ...systemClock,
    frozen: false,
    every(ms: number, fn: () => void): Timer {
      return systemClock.every(ms, () => {
        if (!clock.frozen) fn();
      });
    },
  };
  return clock;
}

function lease(store: ObjectStore, writerId: string, extra: Partial<LeaseOptions> = {}): WriterLease & { clock: Clock & { frozen: boolean }; lostWith: string[] } {
  const clock = freezableClock();
  const made = new WriterLease({ store: () => store, fsUuid, writerId, host: `host-${writerId}`, clock, ttlMs, generation: 1, logSeq: () => 0, ...extra });
  const lostWith: string[] = [];
  made.onLost = (reason) => lostWith.push(reason);
  return Object.assign(made, { clock, lostWith });
}

async function readAll(fs: FileSystem, name: string): Promise<Buffer> {
  const { ino, sizeBytes } = await fs.lookup(ROOT_INO, name, ROOT);
  const fh = await fs.open(ino, 0, ROOT);
  try {
    return Buffer.from(await fs.read(fh, 0, sizeBytes));
  } finally {
    await fs.release(fh);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(t: Test, what: string, test: () => boolean, deadlineMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!test()) {
    if (Date.now() - started > deadlineMs) {
      t.fail(`${what}: not within ${deadlineMs} ms`);
      return;
    }
    await sleep(20);
  }
}

/** Appliances a and b on one store, both released at the end. */
function twoAppliances(t: Test, store: ObjectStore) {
  const a = lease(store, 'a');
  const b = lease(store, 'b');
  t.teardown(async () => {
    await a.release();
    await b.release();
  });
  return { store, a, b };
}

function leaseSuite(t: Test, open: () => ObjectStore, enforced: boolean): void {
  t.test('one writer: a second appliance waits, then is refused while the first renews', async (t) => {
    const { store, a, b } = twoAppliances(t, open());
    t.equal(await a.acquire(0), true, 'the first takes it');
    t.equal(a.status().enforced, enforced, `conditions ${enforced ? '' : 'not '}enforced`);
    t.ok(a.held(), 'held');
    t.equal(a.fence(), undefined, 'its writes may go');
    const started = Date.now();
    t.equal(await b.acquire(1.5 * ttlMs), false, 'the second is refused');
    t.ok(Date.now() - started >= 1.5 * ttlMs - 50, 'after waiting');
    t.match(b.status(), { state: 'lost', holderHost: 'host-a' });
    t.match(b.lostWith[0], /served by host-a/);
    t.match(b.fence(), { final: true, reason: /no longer the writer/ }, 'its writes are refused for good');
    const fenced = new FencedObjectStore(store, b.fence);
    await t.rejects(fenced.put('fenced/x', [Buffer.from('x')]), { kind: 'Fatal', message: /put fenced\/x: this appliance is no longer the writer/ }, 'at the store');
    await t.rejects(fenced.delete(leaseKey(fsUuid)), { kind: 'Fatal', message: /delete .*no longer the writer/ });
    t.ok(await fenced.getVersioned(leaseKey(fsUuid)), 'reads pass');
    t.equal(await store.head('fenced/x'), undefined, 'nothing was written');
    await new FencedObjectStore(store, a.fence).put('fenced/y', [Buffer.from('y')]);
    t.ok(await store.head('fenced/y'), 'the writer\'s writes pass');
    t.ok(a.held(), 'the first still holds it');
  });

  t.test('a holder that stops renewing is taken over after a whole TTL, and finds out when it comes back', async (t) => {
    const { store, a, b } = twoAppliances(t, open());
    t.equal(await a.acquire(0), true);
    a.clock.frozen = true; // cut off: no more renewals
    const started = Date.now();
    t.equal(await b.acquire(5 * ttlMs), true, 'the second takes it');
    t.ok(Date.now() - started >= ttlMs - 50, `not before a whole TTL of silence (${Date.now() - started} ms)`);
    t.notOk(a.held(), 'the silent holder no longer counts itself the writer');
    t.match(a.fence(), { final: false }, 'its writes wait');
    a.clock.frozen = false; // back: its next renewal finds the lease gone
    await until(t, 'the old holder finds out', () => a.lost);
    t.match(a.lostWith, [/host-b .*took the writer lease/]);
    t.match(a.fence(), { final: true });
    t.ok(b.held(), 'the new writer holds it');
  });

  t.test('a clean stop releases it: the next appliance takes it at once', async (t) => {
    const store = open();
    const a = lease(store, 'a');
    const b = lease(store, 'b');
    t.teardown(() => b.release());
    t.equal(await a.acquire(0), true);
    await a.release();
    t.match(a.status(), { state: 'released' });
    t.match(a.fence(), { final: true }, 'nothing more is written after the release');
    const started = Date.now();
    t.equal(await b.acquire(0), true);
    t.ok(Date.now() - started < ttlMs, 'without waiting');
  });

  t.test('the same appliance restarting takes its own lease at once', async (t) => {
    const store = open();
    const first = lease(store, 'a');
    t.equal(await first.acquire(0), true);
    first.clock.frozen = true; // killed: never released
    const again = lease(store, 'a');
    t.teardown(() => again.release());
    t.equal(await again.acquire(0), true, 'no wait for its own lease');
  });

  t.test('a copy of the file system the bucket has moved past never writes', async (t) => {
    const store = open();
    const newer = lease(store, 'new', { generation: 2, logSeq: () => 40 });
    t.equal(await newer.acquire(0), true);
    await newer.release();
    const older = lease(store, 'old', { generation: 1, logSeq: () => 90 });
    t.equal(await older.acquire(0), false, 'an older generation is refused, released or not');
    t.match(older.lostWith[0], /generation 2 change 40; here generation 1 change 90.*must not write/);
    const behind = lease(store, 'behind', { generation: 2, logSeq: () => 39 });
    t.equal(await behind.acquire(0), false, 'the same generation with fewer changes uploaded is refused');
    const level = lease(store, 'level', { generation: 2, logSeq: () => 40 });
    t.teardown(() => level.release());
    t.equal(await level.acquire(0), true, 'the same generation with as many changes may take a released lease');
  });

  t.test('a damaged lease object is refused with one line', async (t) => {
    const store = open();
    await store.put(leaseKey(fsUuid), [Buffer.from('not json')]);
    const a = lease(store, 'a');
    await t.rejects(a.acquire(0), { code: 'CORRUPT', message: /not JSON; if no appliance serves this file system, delete it/ });
    await store.delete(leaseKey(fsUuid));
  });
}

t.test('directory target', async (t) => {
  const root = scratchDir(t);
  leaseSuite(t, () => openObjectStore(`file://${root}`), true);
});

t.test('azurite', async (t) => {
  const server = await startAzurite(t);
  const store = openTarget(server.url('lease')) // with retries, as serve opens it: these servers share two busy cores;
  t.teardown(() => store.close());
  leaseSuite(t, () => store, true);
});

t.test('s3rver (conditions ignored): the lease is still written and read, and status says it is not enforced', async (t) => {
  const server = await startS3rver(t);
  const store = openTarget(server.url('lease'));
  t.teardown(() => store.close());
  const a = lease(store, 'a');
  const b = lease(store, 'b');
  t.teardown(() => a.release());
  t.equal(await a.acquire(0), true);
  t.match(a.status(), { enforced: false, state: 'held' });
  t.equal(await b.acquire(ttlMs / 2), false, 'a live holder still keeps a second appliance out');
  // A take-over (here written by hand, as a second appliance would after a TTL of silence) is still noticed.
  const current = await store.getVersioned(leaseKey(fsUuid));
  await store.put(leaseKey(fsUuid), [Buffer.from(JSON.stringify({ ...JSON.parse(current!.body.toString()), holder: 'c', host: 'host-c', nonce: 'n' }))]);
  await until(t, 'the holder notices', () => a.lost);
  t.match(a.lostWith, [/host-c .*took the writer lease/]);
});

t.test('a renewal whose first attempt landed but whose answer was lost is recognised by its nonce', async (t) => {
  const inner = openObjectStore(`file://${scratchDir(t)}`);
  let dropAnswers = 0;
  const lossy: ObjectStore = Object.assign(Object.create(inner) as ObjectStore, {
    putIf: async (key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal) => {
      const etag = await inner.putIf(key, body, condition, signal);
      if (dropAnswers > 0) {
        dropAnswers -= 1;
        throw new ObjectStoreError('Transient', `put ${key}: socket hang up (the put landed)`);
      }
      return etag;
    },
  });
  const store = new RetryingObjectStore(lossy, { attemptTimeoutMs: 5000, deadlineMs: 5000, baseDelayMs: 1, delayMsMax: 5 });
  const a = lease(store, 'a');
  t.teardown(() => a.release());
  t.equal(await a.acquire(0), true);
  dropAnswers = 3; // the next renewals each land, lose their answer, and are retried into their own condition
  await until(t, 'three renewals retried', () => dropAnswers === 0);
  await sleep(ttlMs / 2);
  t.notOk(a.lost, 'not mistaken for a take-over');
  t.ok(a.held(), 'still held');
});

t.test('two appliances, one file system (azurite): the second serves read-only; after the handover the old copy does', async (t) => {
  const server = await startAzurite(t);
  const target = server.url('appliances');
  const flags = ['--lease-ttl', '2s', '--metadata-rpo', '1s'];
  const replicated = (socket: string) =>
    until(t, 'every change in the bucket', () => {
      const m = cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: socket })).replication;
      return m.lagMs === 0 && m.uploadedSeq === m.committedSeq;
    });
  const first = await formatWithTarget(t, target, '128M');
  const a = await serve(t, first, undefined, flags);
  fs.writeFileSync(path.join(a.mount, 'before'), 'written by the first appliance\n');
  t.equal(runCli(['destage', path.join(a.mount, 'before'), '--wait'], { TIERFS_SOCKET: a.socket }).status, 0, 'its bytes in a pack');
  await replicated(a.socket);
  t.match(cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: a.socket })).writer, { state: 'held', enforced: true, readOnly: null });

  // A second appliance restored from the same bucket while the first still serves it.
  const dir = scratchDir(t);
  const second = { dir, flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') };
  const restored = runCli(['restore', '--target', target, '--flash', second.flash, '--size', '128M', '--meta', second.meta]);
  t.equal(restored.status, 0, restored.stderr);
  const b = await serve(t, second, undefined, flags);
  t.match(b.stderr(), /waiting for the writer lease another appliance holds/);
  t.equal(fs.readFileSync(path.join(b.mount, 'before'), 'utf8'), 'written by the first appliance\n', 'it reads');
  t.throws(() => fs.writeFileSync(path.join(b.mount, 'new'), 'x'), { code: 'EROFS' }, 'it refuses writes');
  const bStatus = runCli(['status'], { TIERFS_SOCKET: b.socket });
  t.match(bStatus.stdout, /writer +READ-ONLY: this file system is served by \S+ \(appliance [0-9a-f]+\), which renews its writer lease/);
  fs.writeFileSync(path.join(a.mount, 'still'), 'the first still writes\n');

  // The first stops cleanly (its last changes go up, the lease is released); the second, restarted, takes over.
  t.equal(await a.stop(), 0);
  t.equal(await b.stop(), 0);
  const b2 = await serve(t, second, undefined, flags);
  t.match(cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: b2.socket })).writer, { state: 'held', readOnly: null });
  fs.writeFileSync(path.join(b2.mount, 'after'), 'written by the second appliance\n');
  await replicated(b2.socket);

  // The first comes back: its copy is of an older generation than the bucket's writer: read-only, and it says why.
  const a2 = await serve(t, first, undefined, flags);
  t.throws(() => fs.writeFileSync(path.join(a2.mount, 'stale'), 'x'), { code: 'EROFS' });
  t.match(cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: a2.socket })).writer.readOnly, /has written this file system's bucket since this appliance's metadata .*must not write/);
  t.ok(fs.readFileSync(path.join(b2.mount, 'after')).length > 0, 'the writer is untouched');
  t.match(cliJson(runCli(['status', '--json'], { TIERFS_SOCKET: b2.socket })).writer, { state: 'held' });
});

t.test('losing the lease while serving: the file system turns read-only, and nothing more reaches the bucket', async (t) => {
  const scratch = await formatScratch(t);
  const objects = openObjectStore(`file://${scratchDir(t)}`);
  const replication = { ...defaultReplicationOptions, rpoMs: 1000 };
  const readOnly: string[] = [];
  const opened = await openTiered(t, scratch, { objects, replication, writerLease: { ttlMs, waitMs: 0, host: 'here' }, onReadOnly: (reason) => readOnly.push(reason) });
  await writeFile(opened.fs, 'kept', Buffer.alloc(8192, 1));
  await opened.tier.flushReplication();
  t.match(opened.tier.leaseStatus(), { state: 'held', enforced: true });
  // Another appliance takes the role (as it would after this one was cut off for a TTL).
  const key = leaseKey(opened.tier.fsUuid);
  const current = JSON.parse((await objects.get(key)).toString());
  await objects.put(key, [Buffer.from(JSON.stringify({ ...current, holder: 'other', host: 'there', nonce: 'x' }))]);
  await until(t, 'the renewal finds out', () => readOnly.length > 0);
  t.match(readOnly[0], /there \(appliance other\) took the writer lease/);
  t.match(opened.fs.readOnly, /took the writer lease/);
  await t.rejects(writeFile(opened.fs, 'refused', Buffer.alloc(10)), { code: 'READ_ONLY' }, 'changes answer EROFS');
  t.ok((await readAll(opened.fs, 'kept')).equals(Buffer.alloc(8192, 1)), 'reads go on');
  const before = new Set<string>();
  for await (const item of objects.list('')) before.add(item.key);
  await t.rejects(opened.tier.destage({}), { code: 'READ_ONLY', message: /read-only: there .*took the writer lease/ }, 'a destage command is refused');
  await t.rejects(opened.tier.collectGarbage(), { code: 'READ_ONLY' }, 'and garbage collection');
  const after: string[] = [];
  for await (const item of objects.list('')) after.push(item.key);
  t.same(after.filter((k) => !before.has(k)), [], 'nothing new in the bucket');
  t.match(opened.tier.leaseStatus(), { state: 'lost' });
});
