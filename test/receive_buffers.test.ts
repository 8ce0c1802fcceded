// The recall pipeline's receive slabs (src/tier/receive_buffers.ts): reused
// only once nothing refers to them, and only from the next turn of the event
// loop; bounded in number; let go when recall goes quiet.
import t from 'tap';
import { ReceiveBuffers } from '../src/tier/receive_buffers';

const KiB = 1024;
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

t.test('a slab is reused only after its last reference is dropped, and only from the next turn', async (t) => {
  const pool = new ReceiveBuffers(64 * KiB, 16 * KiB, 4, 4, 60_000);
  t.equal(pool.take(8 * KiB), undefined, 'a GET below the minimum gets memory of its own');
  t.equal(pool.take(65 * KiB), undefined, 'so does one larger than a slab');
  const a = pool.take(40 * KiB)!;
  t.equal(a.length, 64 * KiB);
  const entry = a.subarray(4 * KiB, 8 * KiB); // a view, as a cached entry holds
  pool.hold(entry);
  pool.release(a); // the fetch is done; the entry still refers to the slab
  const b = pool.take(40 * KiB)!;
  t.not(b.buffer, a.buffer, 'a slab an entry refers to is not handed out');
  pool.release(entry);
  t.equal(pool.inUseCount, 1, 'the entry was the last reference');
  const c = pool.take(40 * KiB)!;
  t.not(c.buffer, a.buffer, 'not in the turn it was freed: a reader given a view this turn copies it out first');
  await nextTurn();
  const d = pool.take(40 * KiB)!;
  t.equal(d.buffer, a.buffer, 'from the next turn it is reused');
  t.equal(pool.reusedCount, 1);
  t.equal(pool.allocatedCount, 3);
  for (const slab of [b, c, d]) pool.release(slab);
});

t.test('holding a view of a free slab throws', async (t) => {
  const pool = new ReceiveBuffers(64 * KiB, 16 * KiB, 4, 4, 60_000);
  const a = pool.take(64 * KiB)!;
  const view = a.subarray(0, 4 * KiB);
  pool.release(a);
  t.throws(() => pool.hold(view), /free/, 'while it cools');
  await nextTurn();
  t.throws(() => pool.hold(view), /free/, 'and once it is free');
  pool.hold(Buffer.alloc(4 * KiB));
  pool.release(Buffer.alloc(4 * KiB));
  t.pass('memory that is not a slab is ignored');
});

t.test('slabs are bounded in number, free ones bounded and let go when idle', async (t) => {
  const pool = new ReceiveBuffers(64 * KiB, 16 * KiB, 3, 2, 50);
  const slabs = [pool.take(64 * KiB)!, pool.take(64 * KiB)!, pool.take(64 * KiB)!];
  t.equal(pool.take(64 * KiB), undefined, 'past the most slabs, a GET gets memory of its own');
  t.equal(pool.slabCount, 3);
  for (const slab of slabs) pool.release(slab);
  await nextTurn();
  t.equal(pool.slabCount, 2, 'free slabs kept at most freeCountMax');
  const again = pool.take(64 * KiB)!;
  t.ok(slabs.some((s) => s.buffer === again.buffer), 'a kept slab is reused');
  pool.release(again);
  await nextTurn();
  await new Promise((resolve) => setTimeout(resolve, 120));
  t.equal(pool.slabCount, 0, 'idle past idleMs: the free slabs are let go');
});
