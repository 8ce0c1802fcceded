// Model-based test of src/fs: random sequences of namespace and data operations run
// on tierfs and on an in-memory model; error codes and contents are compared after
// every step.  Steps include fsync, clean reopen and crash (metadata back to the last
// commit), so persistence and crash consistency are checked against the model too, and
// destage, release, recall and pack GC, which must change nothing a program can see.
// Replay a failure with TIERFS_SEED=<seed>; TIERFS_MODEL_STEPS sets the length.
import t from 'tap';
import fsConstants from 'node:constants';
import { isTierfsError, type ErrorCode } from '../src/errors';
import { RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_CREDENTIALS as ROOT, ROOT_INO, type FileSystem, type OpenFileSystem } from '../src/fs/fs';
import { openFileSystem } from '../src/fs/fs';
import { formatScratch, pattern, prng, seedFromEnv } from './helpers/fs';

type Node =
  | { kind: 'dir'; entries: Map<string, number> }
  | { kind: 'file'; data: Buffer; nlink: number }
  | { kind: 'symlink'; target: string };

type Result = { ok: true; value?: unknown } | { ok: false; code: ErrorCode };

class ModelError extends Error {
  constructor(readonly code: ErrorCode) {
    super(code);
  }
}

const fail = (code: ErrorCode): never => {
  throw new ModelError(code);
};

class Model {
  nodes = new Map<number, Node>([[1, { kind: 'dir', entries: new Map() }]]);
  nextId = 2;

  clone(): Model {
    const copy = new Model();
    copy.nextId = this.nextId;
    copy.nodes = new Map();
    for (const [id, node] of this.nodes) {
      if (node.kind === 'dir') copy.nodes.set(id, { kind: 'dir', entries: new Map(node.entries) });
      else if (node.kind === 'file') copy.nodes.set(id, { kind: 'file', data: Buffer.from(node.data), nlink: node.nlink });
      else copy.nodes.set(id, { ...node });
    }
    return copy;
  }

  node(id: number): Node {
    return this.nodes.get(id)!;
  }

  resolve(path: string): number {
    let id = 1;
    for (const part of path.split('/').filter(Boolean)) {
      const node = this.node(id);
      if (node.kind !== 'dir') fail('NOT_DIR');
      id = (node as { entries: Map<string, number> }).entries.get(part) ?? fail('NOT_FOUND');
    }
    return id;
  }

  parent(path: string): { dir: Map<string, number>; dirId: number; name: string } {
    const slash = path.lastIndexOf('/');
    const dirId = this.resolve(path.slice(0, slash));
    const node = this.node(dirId);
    if (node.kind !== 'dir') fail('NOT_DIR');
    return { dir: (node as { entries: Map<string, number> }).entries, dirId, name: path.slice(slash + 1) };
  }

  add(path: string, node: Node): void {
    const { dir, name } = this.parent(path);
    if (dir.has(name)) fail('EXISTS');
    const id = this.nextId++;
    this.nodes.set(id, node);
    dir.set(name, id);
  }

  drop(id: number): void {
    const node = this.node(id);
    if (node.kind === 'file' && --node.nlink > 0) return;
    this.nodes.delete(id);
  }

  file(path: string, forWrite: boolean): Node & { kind: 'file' } {
    const node = this.node(this.resolve(path));
    if (node.kind === 'dir') {
      if (forWrite) fail('IS_DIR');
      fail('IS_DIR');
    }
    if (node.kind === 'symlink') fail('INVALID');
    return node as Node & { kind: 'file' };
  }

  isWithin(ancestorId: number, dirId: number): boolean {
    if (ancestorId === dirId) return true;
    for (const [id, node] of this.nodes) {
      if (node.kind === 'dir' && [...node.entries.values()].includes(dirId)) return this.isWithin(ancestorId, id);
    }
    return false;
  }
}

async function run<T>(fn: () => Promise<T> | T): Promise<Result> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    if (error instanceof ModelError) return { ok: false, code: error.code };
    if (isTierfsError(error)) return { ok: false, code: error.code };
    throw error;
  }
}

async function writeFs(fs: FileSystem, path: string, offset: number, data: Buffer): Promise<void> {
  const attr = await fs.lookupPath(path, ROOT);
  const fh = await fs.open(attr.ino, fsConstants.O_WRONLY, ROOT);
  try {
    await fs.write(fh, offset, data);
  } finally {
    await fs.release(fh);
  }
}

async function readFs(fs: FileSystem, path: string, offset: number, length: number): Promise<Buffer> {
  const attr = await fs.lookupPath(path, ROOT);
  const fh = await fs.open(attr.ino, fsConstants.O_RDONLY, ROOT);
  try {
    return await fs.read(fh, offset, length);
  } finally {
    await fs.release(fh);
  }
}

async function parentIno(fs: FileSystem, path: string): Promise<{ ino: typeof ROOT_INO; name: string }> {
  const slash = path.lastIndexOf('/');
  return { ino: (await fs.lookupPath(path.slice(0, slash), ROOT)).ino, name: path.slice(slash + 1) };
}

/** Compare the whole tree: names, types, sizes, link counts and file bytes. */
async function compareTrees(t: tap.Test, fs: FileSystem, model: Model, step: string): Promise<boolean> {
  const walk = async (path: string, id: number): Promise<boolean> => {
    const node = model.node(id);
    const attr = await fs.lookupPath(path || '/', ROOT);
    if (node.kind === 'dir') {
      const entries = await fs.readdir(attr.ino, 0, 100000, ROOT);
      const names = entries.map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
      if (!t.same(names, [...node.entries.keys()].sort(), `${step}: entries of ${path || '/'}`)) return false;
      const subdirs = [...node.entries.values()].filter((child) => model.node(child).kind === 'dir').length;
      if (!t.equal(attr.nlink, 2 + subdirs, `${step}: nlink of directory ${path || '/'}`)) return false;
      for (const [name, child] of node.entries) if (!(await walk(`${path}/${name}`, child))) return false;
      return true;
    }
    if (node.kind === 'symlink') return t.equal(await fs.readlink(attr.ino), node.target, `${step}: symlink ${path}`);
    if (!t.equal(attr.sizeBytes, node.data.length, `${step}: size of ${path}`)) return false;
    if (!t.equal(attr.nlink, node.nlink, `${step}: nlink of ${path}`)) return false;
    const data = await readFs(fs, path, 0, node.data.length + 10);
    return t.ok(data.equals(node.data), `${step}: bytes of ${path}`);
  };
  return walk('', 1);
}

const names = ['a', 'b', 'c', 'dir', 'x'];

/** A regular file of the model with some data, if there is one. */
function randomFile(random: () => number, model: Model): string | undefined {
  const files: string[] = [];
  const collect = (path: string, id: number) => {
    const node = model.node(id);
    if (node.kind === 'file' && node.data.length > 0) files.push(path);
    if (node.kind !== 'dir') return;
    for (const [name, child] of node.entries) collect(`${path}/${name}`, child);
  };
  collect('', 1);
  return files.length === 0 ? undefined : files[Math.floor(random() * files.length)];
}

function randomPath(random: () => number, model: Model): string {
  // Mostly paths that exist (or their children), sometimes fresh ones.
  const known: string[] = [''];
  const collect = (path: string, id: number) => {
    const node = model.node(id);
    if (node.kind !== 'dir') return;
    for (const [name, child] of node.entries) {
      known.push(`${path}/${name}`);
      collect(`${path}/${name}`, child);
    }
  };
  collect('', 1);
  const base = known[Math.floor(random() * known.length)];
  if (base !== '' && random() < 0.5) return base;
  return `${base}/${names[Math.floor(random() * names.length)]}`;
}

/** Bytes the destage steps of all runs moved to packs (the tier steps must not be no-ops). */
let tieredBytes = 0;

async function runModel(t: tap.Test, seed: number, steps: number): Promise<void> {
  t.comment(`seed ${seed} (replay with TIERFS_SEED=${seed})`);
  const random = prng(seed);
  const scratch = await formatScratch(t, 256 * 2 ** 20);
  const options = { commitIntervalMs: 0, tier: { url: `file://${scratch.dir}/objects`, scanIntervalMs: 0 } };
  let opened: OpenFileSystem = await openFileSystem(scratch.flash, scratch.meta, options);
  t.teardown(() => opened.close().catch(() => undefined));
  let model = new Model();
  let durable = model.clone();
  const KiB = 1024;

  for (let step = 0; step < steps; step++) {
    const fs = opened.fs;
    const roll = random();
    const p = randomPath(random, model);
    let label: string;
    let ours: Result;
    let theirs: Result;
    if (roll < 0.1) {
      label = `mkdir ${p}`;
      ours = await run(async () => { const { ino, name } = await parentIno(fs, p); await fs.mkdir(ino, name, 0o755, ROOT); });
      theirs = await run(() => model.add(p, { kind: 'dir', entries: new Map() }));
    } else if (roll < 0.2) {
      label = `create ${p}`;
      ours = await run(async () => {
        const { ino, name } = await parentIno(fs, p);
        await fs.release((await fs.create(ino, name, 0o644, fsConstants.O_RDWR, ROOT)).fh);
      });
      theirs = await run(() => model.add(p, { kind: 'file', data: Buffer.alloc(0), nlink: 1 }));
    } else if (roll < 0.42) {
      const size = random() < 0.1 ? Math.floor(random() * 2560 * KiB) : random() < 0.5 ? Math.floor(random() * 12 * KiB) : Math.floor(random() * 200);
      const offset = random() < 0.3 ? Math.floor(random() * 3 * 1024 * KiB) : Math.floor(random() * 16 * KiB);
      const data = pattern(seed * 1000 + step, size + 1);
      label = `write ${p} @${offset} +${data.length}`;
      ours = await run(() => writeFs(fs, p, offset, data));
      theirs = await run(() => {
        const f = model.file(p, true);
        const grown = Buffer.alloc(Math.max(f.data.length, offset + data.length));
        f.data.copy(grown);
        data.copy(grown, offset);
        f.data = grown;
      });
    } else if (roll < 0.5) {
      const size = random() < 0.5 ? Math.floor(random() * 20 * KiB) : Math.floor(random() * 2 * 1024 * KiB);
      label = `truncate ${p} ${size}`;
      ours = await run(async () => fs.setattr((await fs.lookupPath(p, ROOT)).ino, { sizeBytes: size }, ROOT));
      theirs = await run(() => {
        const f = model.file(p, true);
        const next = Buffer.alloc(size);
        f.data.copy(next, 0, 0, Math.min(size, f.data.length));
        f.data = next;
      });
    } else if (roll < 0.58) {
      label = `read ${p}`;
      const offset = Math.floor(random() * 64 * KiB);
      const length = Math.floor(random() * 1100 * KiB);
      ours = await run(() => readFs(fs, p, offset, length));
      theirs = await run(() => {
        const f = model.file(p, false);
        return f.data.subarray(Math.min(offset, f.data.length), Math.min(offset + length, f.data.length));
      });
      if (ours.ok && theirs.ok && !t.ok((ours.value as Buffer).equals(theirs.value as Buffer), `step ${step}: ${label} bytes`)) return;
      ours = ours.ok ? { ok: true } : ours;
      theirs = theirs.ok ? { ok: true } : theirs;
    } else if (roll < 0.64) {
      label = `unlink ${p}`;
      ours = await run(async () => { const { ino, name } = await parentIno(fs, p); await fs.unlink(ino, name, ROOT); });
      theirs = await run(() => {
        const { dir, name } = model.parent(p);
        const id = dir.get(name) ?? fail('NOT_FOUND');
        if (model.node(id).kind === 'dir') fail('IS_DIR');
        dir.delete(name);
        model.drop(id);
      });
    } else if (roll < 0.69) {
      label = `rmdir ${p}`;
      ours = await run(async () => { const { ino, name } = await parentIno(fs, p); await fs.rmdir(ino, name, ROOT); });
      theirs = await run(() => {
        const { dir, name } = model.parent(p);
        const id = dir.get(name) ?? fail('NOT_FOUND');
        const node = model.node(id);
        if (node.kind !== 'dir') fail('NOT_DIR');
        if ((node as { entries: Map<string, number> }).entries.size > 0) fail('NOT_EMPTY');
        dir.delete(name);
        model.drop(id);
      });
    } else if (roll < 0.8) {
      const q = randomPath(random, model);
      const flagRoll = random();
      const flags = flagRoll < 0.1 ? RENAME_NOREPLACE : flagRoll < 0.2 ? RENAME_EXCHANGE : 0;
      label = `rename ${p} ${q}${flags ? ` flags=${flags}` : ''}`;
      ours = await run(async () => {
        const from = await parentIno(fs, p);
        const to = await parentIno(fs, q);
        await fs.rename(from.ino, from.name, to.ino, to.name, flags, ROOT);
      });
      theirs = await run(() => {
        const from = model.parent(p);
        const to = model.parent(q); // both parents first, as Linux's renameat2 does
        const id = from.dir.get(from.name) ?? fail('NOT_FOUND');
        const targetId = to.dir.get(to.name);
        if (targetId === id) return;
        if (flags === RENAME_NOREPLACE && targetId !== undefined) fail('EXISTS');
        if (flags === RENAME_EXCHANGE && targetId === undefined) fail('NOT_FOUND');
        const node = model.node(id);
        if (node.kind === 'dir' && model.isWithin(id, to.dirId)) fail('INVALID');
        if (flags === RENAME_EXCHANGE) {
          if (model.node(targetId!).kind === 'dir' && model.isWithin(targetId!, from.dirId)) fail('INVALID');
          from.dir.set(from.name, targetId!);
          to.dir.set(to.name, id);
          return;
        }
        if (targetId !== undefined) {
          const target = model.node(targetId);
          if (node.kind === 'dir' && target.kind !== 'dir') fail('NOT_DIR');
          if (node.kind !== 'dir' && target.kind === 'dir') fail('IS_DIR');
          if (target.kind === 'dir' && target.entries.size > 0) fail('NOT_EMPTY');
          to.dir.delete(to.name);
          model.drop(targetId);
        }
        from.dir.delete(from.name);
        to.dir.set(to.name, id);
      });
    } else if (roll < 0.86) {
      const q = randomPath(random, model);
      label = `link ${p} ${q}`;
      ours = await run(async () => {
        const attr = await fs.lookupPath(p, ROOT);
        const to = await parentIno(fs, q);
        await fs.link(attr.ino, to.ino, to.name, ROOT);
      });
      theirs = await run(() => {
        const id = model.resolve(p);
        const node = model.node(id);
        if (node.kind === 'dir') fail('NOT_PERMITTED');
        const to = model.parent(q);
        if (to.dir.has(to.name)) fail('EXISTS');
        to.dir.set(to.name, id);
        if (node.kind === 'file') node.nlink += 1;
      });
      if (theirs.ok && model.node(model.resolve(p)).kind === 'symlink') {
        // symlink link counts are not modelled: drop the second name again on both sides
        const to = model.parent(q);
        to.dir.delete(to.name);
        const { ino, name } = await parentIno(fs, q);
        await fs.unlink(ino, name, ROOT);
      }
    } else if (roll < 0.9) {
      label = `symlink ${p}`;
      const target = `target-${step}`;
      ours = await run(async () => { const { ino, name } = await parentIno(fs, p); await fs.symlink(ino, name, target, ROOT); });
      theirs = await run(() => model.add(p, { kind: 'symlink', target }));
    } else if (roll < 0.93) {
      // Tiering moves bytes between flash and packs; the model sees no change at all.
      const action = ['destage', 'destage', 'release', 'recall', 'gc'][Math.floor(random() * 5)];
      const file = randomFile(random, model) ?? p;
      label = `${action} ${file}`;
      const tier = opened.tier!;
      const commits = opened.store.counters.commitCount;
      ours = await run(async () => {
        if (action === 'gc') return void (await tier.collectGarbage());
        const attr = await fs.lookupPath(file, ROOT).catch(() => undefined);
        if (!attr || (attr.mode & fsConstants.S_IFMT) !== fsConstants.S_IFREG) return;
        if (action === 'destage') tieredBytes += await tier.destage({ ino: attr.ino });
        else if (action === 'release') await tier.release(attr.ino);
        else await tier.recallFile(attr.ino);
      });
      theirs = { ok: true };
      // Tiering commits (a pack's row before its upload, residency after): like an fsync, what was done is durable.
      if (opened.store.counters.commitCount !== commits) durable = model.clone();
    } else if (roll < 0.94) {
      label = 'fsync';
      ours = await run(() => fs.fsync());
      theirs = { ok: true };
      durable = model.clone();
    } else if (roll < 0.97) {
      label = 'reopen';
      await opened.close();
      opened = await openFileSystem(scratch.flash, scratch.meta, options);
      ours = theirs = { ok: true };
      durable = model.clone();
    } else {
      label = 'crash';
      await opened.tier?.stop(); // its timers must not outlive the database they write to
      opened.meta.crash();
      await opened.device.close();
      opened = await openFileSystem(scratch.flash, scratch.meta, options);
      model = durable.clone();
      ours = theirs = { ok: true };
    }
    const outcome = (r: Result) => (r.ok ? 'ok' : r.code);
    if (outcome(ours) !== outcome(theirs)) {
      t.fail(`step ${step}: ${label}: tierfs ${outcome(ours)}, model ${outcome(theirs)} (seed ${seed})`);
      return;
    }
    if ((step % 25 === 0 || label === 'crash' || label === 'reopen') && !(await compareTrees(t, opened.fs, model, `step ${step} after ${label}`))) {
      t.comment(`seed ${seed}`);
      return;
    }
    if (step % 25 === 0 || label === 'crash') {
      // The running residency totals (kept by triggers, what status shows) against a scan, after crashes too.
      const kept = opened.meta.residencyTotals();
      const scanned = opened.meta.residencyTotalsScanned();
      if (JSON.stringify(kept) !== JSON.stringify(scanned)) return void t.same(kept, scanned, `step ${step} after ${label}: residency totals (seed ${seed})`);
    }
  }
  t.ok(await compareTrees(t, opened.fs, model, 'end'), 'final tree matches the model');
  const report = await opened.store.verifyAll();
  t.same(report.checksumErrors, [], 'every mapped block verifies');
  t.same(opened.meta.residencyTotals(), opened.meta.residencyTotalsScanned(), 'the running residency totals equal a scan of the extents');
}

const steps = Number(process.env.TIERFS_MODEL_STEPS ?? 400);
const baseSeed = seedFromEnv();
for (let i = 0; i < (process.env.TIERFS_SEED ? 1 : 3); i++) {
  t.test(`model run ${i}`, (t) => runModel(t, baseSeed + i, steps));
}
if (!process.env.TIERFS_SEED && steps >= 200)
  t.test('the tier steps did tier', async (t) => t.ok(tieredBytes > 0, `destage steps moved ${tieredBytes} bytes to packs`));
