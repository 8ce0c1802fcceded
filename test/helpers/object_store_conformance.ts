// One conformance suite for ObjectStore, run against every backend.
import 'tap';

type Test = tap.Test;
import { conditionalWritesWork, ObjectStoreError, type ObjectStore } from '../../src/tier/object_store';
import { pattern } from './fs';

async function kindOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    if (error instanceof ObjectStoreError) return error.kind;
    throw error;
  }
}

async function listAll(store: ObjectStore, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const item of store.list(prefix)) out.set(item.key, item.sizeBytes);
  return out;
}

export async function objectStoreConformance(
  t: Test,
  store: ObjectStore,
  options: { manyKeys?: number; conditional?: boolean } = {},
): Promise<void> {
  const manyKeys = options.manyKeys ?? 1005;
  const conditional = options.conditional ?? true;
  t.test('versioned get and conditional put', async (t) => {
    t.equal(await store.getVersioned('c/missing'), undefined, 'a missing key: undefined');
    t.equal(await conditionalWritesWork(store, 'c/probe'), conditional, `the probe finds conditions ${conditional ? 'honoured' : 'ignored'}`);
    t.equal(await store.head('c/probe'), undefined, 'the probe leaves nothing');
    const first = await store.putIf('c/lease', Buffer.from('one'), { ifNoneMatch: '*' });
    const got = await store.getVersioned('c/lease');
    t.ok(got?.body.equals(Buffer.from('one')), 'the body back');
    t.equal(got?.etag, first, 'the version the put answered');
    const second = await store.putIf('c/lease', Buffer.from('two'), { ifMatch: first });
    t.not(second, first, 'a new version');
    t.equal((await store.getVersioned('c/lease'))?.etag, second);
    if (!conditional) return;
    t.equal(await kindOf(store.putIf('c/lease', Buffer.from('three'), { ifNoneMatch: '*' })), 'PreconditionFailed', 'create-only on an existing key');
    t.equal(await kindOf(store.putIf('c/lease', Buffer.from('three'), { ifMatch: first })), 'PreconditionFailed', 'a stale version');
    t.equal(await kindOf(store.putIf('c/other', Buffer.from('x'), { ifMatch: first })), 'PreconditionFailed', 'a version of a missing key');
    t.ok((await store.getVersioned('c/lease'))?.body.equals(Buffer.from('two')), 'refused puts changed nothing');
    // Two writers racing on the same version: exactly one wins.
    const race = await Promise.allSettled(['a', 'b', 'c', 'd'].map((w) => store.putIf('c/lease', Buffer.from(w), { ifMatch: second })));
    t.equal(race.filter((r) => r.status === 'fulfilled').length, 1, 'one of four racing puts on one version lands');
  });
  t.test('put, get, ranged get, head', async (t) => {
    const data = pattern(7, 100_000);
    await store.put('a/b/one', [data.subarray(0, 30_000), data.subarray(30_000)]);
    t.ok((await store.get('a/b/one')).equals(data), 'whole object, from parts');
    t.ok((await store.get('a/b/one', { offsetBytes: 12_345, lengthBytes: 4096 })).equals(data.subarray(12_345, 16_441)), 'a range');
    t.ok((await store.get('a/b/one', { offsetBytes: 99_999, lengthBytes: 1 })).equals(data.subarray(99_999)), 'the last byte');
    t.same(await store.head('a/b/one'), { key: 'a/b/one', sizeBytes: 100_000 });
    t.equal(await store.head('a/b/missing'), undefined, 'head of a missing key');
    t.equal(await kindOf(store.get('a/b/missing')), 'NotFound');
    t.equal(await kindOf(store.get('a/b/missing', { offsetBytes: 0, lengthBytes: 10 })), 'NotFound');
    t.not(await kindOf(store.get('a/b/one', { offsetBytes: 99_000, lengthBytes: 2000 })), 'ok', 'a range beyond the end fails');
  });

  t.test('overwrite replaces; delete removes and is idempotent', async (t) => {
    await store.put('c/x', [Buffer.from('first version')]);
    await store.put('c/x', [Buffer.from('second')]);
    t.equal((await store.get('c/x')).toString(), 'second');
    await store.delete('c/x');
    t.equal(await store.head('c/x'), undefined);
    await store.delete('c/x');
    t.pass('deleting a missing key succeeds');
  });

  t.test('a large body goes up in parts and reads back across part boundaries', async (t) => {
    const data = pattern(9, 20 * 2 ** 20 + 777);
    await store.put('big/one', [data.subarray(0, 5 * 2 ** 20), data.subarray(5 * 2 ** 20)]);
    t.equal((await store.head('big/one'))?.sizeBytes, data.length);
    const edge = 8 * 2 ** 20 - 1000;
    t.ok((await store.get('big/one', { offsetBytes: edge, lengthBytes: 3 * 2 ** 20 })).equals(data.subarray(edge, edge + 3 * 2 ** 20)));
    // Received in place (the recall pipeline's reused slabs): a view of `into`, which may be longer than the range.
    const into = Buffer.alloc(4 * 2 ** 20, 0xee);
    const got = await store.get('big/one', { offsetBytes: edge, lengthBytes: 3 * 2 ** 20, into });
    t.ok(got.equals(data.subarray(edge, edge + 3 * 2 ** 20)), 'a range received into a buffer given');
    t.ok(got.buffer === into.buffer && got.byteOffset === into.byteOffset, 'the bytes are in that buffer, from its start');
    t.equal(into[3 * 2 ** 20], 0xee, 'and nothing past the range was written');
    t.ok((await store.get('big/one', { offsetBytes: 0, lengthBytes: 8, into: Buffer.alloc(4) })).equals(data.subarray(0, 8)), 'a buffer too short for the range is not used');
    t.ok((await store.get('big/one')).equals(data), 'whole');
    await store.delete('big/one');
  });

  t.test('an empty object', async (t) => {
    await store.put('e/empty', [Buffer.alloc(0)]);
    t.same(await store.head('e/empty'), { key: 'e/empty', sizeBytes: 0 });
    t.equal((await store.get('e/empty')).length, 0);
  });

  t.test('list by prefix, across truncated pages', async (t) => {
    const keys = Array.from({ length: manyKeys }, (_, i) => `many/${String(i % 16).padStart(2, '0')}/k${i}`);
    for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map((k) => store.put(k, [Buffer.from(k)])));
    await store.put('manyother', [Buffer.from('x')]);
    const listed = await listAll(store, 'many/');
    t.equal(listed.size, keys.length, 'every key once');
    t.ok(keys.every((k) => listed.get(k) === Buffer.byteLength(k)), 'with sizes');
    t.equal((await listAll(store, 'many/03/')).size, keys.filter((k) => k.startsWith('many/03/')).length, 'a deeper prefix');
    t.equal((await listAll(store, 'nothing-here/')).size, 0);
    t.ok((await listAll(store, 'many')).has('manyother'), 'a prefix is a string prefix, not a directory');
    // One level below a prefix (a delimited listing): directories and objects by name, each once.
    t.same(await store.listNames('many/'), Array.from({ length: Math.min(16, manyKeys) }, (_, i) => String(i).padStart(2, '0')), 'the names one level below');
    await store.put('many/03.txt', [Buffer.from('x')]);
    t.ok((await store.listNames('many/')).includes('03.txt'), 'objects as well as directories');
    t.same(await store.listNames('nothing-here/'), []);
  });
}
