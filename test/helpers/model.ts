// The in-memory model of a file system that the model test and the simulation
// check tierfs against: a tree of directories, files (bytes and link count) and
// symlinks, the operations' expected error codes, and helpers that drive src/fs
// by path and compare a whole tree with the model.
import type { Test } from 'tap';
import fsConstants from 'node:constants';
import { isTierfsError, type ErrorCode } from '../../src/errors';
import { RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_CREDENTIALS as ROOT, ROOT_INO, type FileSystem } from '../../src/fs/fs';
import { pattern } from './fs';

export type Node =
  | { kind: 'dir'; entries: Map<string, number> }
  | { kind: 'file'; data: Buffer; nlink: number }
  | { kind: 'symlink'; target: string };

export type Result = { ok: true; value?: unknown } | { ok: false; code: ErrorCode };

export class ModelError extends Error {
  constructor(readonly code: ErrorCode) {
    super(code);
  }
}

export const fail = (code: ErrorCode): never => {
  throw new ModelError(code);
};

export class Model {
  nodes = new Map<number, Node>([[1, { kind: 'dir', entries: new Map() }]]);
  nextId = 2;

  clone(): Model {
    const copy = new Model();
    copy.nextId = this.nextId;
    copy.nodes = new Map();
    for (const [id, node] of this.nodes) {
      if (node.kind === 'dir') copy.nodes.set(id, { kind: 'dir', entries: new Map(node.entries) });
      // File bytes are never changed in place (a write or truncate makes a new buffer): copies share them.
      else if (node.kind === 'file') copy.nodes.set(id, { kind: 'file', data: node.data, nlink: node.nlink });
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

export async function run<T>(fn: () => Promise<T> | T): Promise<Result> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    if (error instanceof ModelError) return { ok: false, code: error.code };
    if (isTierfsError(error)) return { ok: false, code: error.code };
    throw error;
  }
}

export async function writeFs(fs: FileSystem, path: string, offset: number, data: Buffer): Promise<void> {
  const attr = await fs.lookupPath(path, ROOT);
  const fh = await fs.open(attr.ino, fsConstants.O_WRONLY, ROOT);
  try {
    await fs.write(fh, offset, data);
  } finally {
    await fs.release(fh);
  }
}

export async function readFs(fs: FileSystem, path: string, offset: number, length: number): Promise<Buffer> {
  const attr = await fs.lookupPath(path, ROOT);
  const fh = await fs.open(attr.ino, fsConstants.O_RDONLY, ROOT);
  try {
    return await fs.read(fh, offset, length);
  } finally {
    await fs.release(fh);
  }
}

export async function parentIno(fs: FileSystem, path: string): Promise<{ ino: typeof ROOT_INO; name: string }> {
  const slash = path.lastIndexOf('/');
  return { ino: (await fs.lookupPath(path.slice(0, slash), ROOT)).ino, name: path.slice(slash + 1) };
}

/** Compare the whole tree: names, types, sizes, link counts and file bytes. */
export async function compareTrees(t: Test, fs: FileSystem, model: Model, step: string): Promise<boolean> {
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

export const names = ['a', 'b', 'c', 'dir', 'x'];

/** A regular file of the model with some data, if there is one. */
export function randomFile(random: () => number, model: Model): string | undefined {
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

export function randomPath(random: () => number, model: Model): string {
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


/**
 * One random namespace or data operation, on tierfs and on the model:
 * mkdir, create, write, truncate, read (bytes compared here), unlink, rmdir,
 * rename (with renameat2 flags), link and symlink, chosen by `roll` (0 to 0.9;
 * the caller uses the rest for its own steps).  Returns what each side
 * answered; `bytesDiffer` when a read answered other bytes than the model.
 */
export async function namespaceStep(
  fs: FileSystem,
  model: Model,
  random: () => number,
  roll: number,
  p: string,
  dataSeed: number,
  step: number,
): Promise<{ label: string; ours: Result; theirs: Result; bytesDiffer: boolean }> {
  const KiB = 1024;
  let label: string;
  let ours: Result;
  let theirs: Result;
  let bytesDiffer = false;
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
    const data = pattern(dataSeed * 1000 + step, size + 1);
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
    if (ours.ok && theirs.ok && !(ours.value as Buffer).equals(theirs.value as Buffer)) {
      bytesDiffer = true;
      const a = ours.value as Buffer;
      const b = theirs.value as Buffer;
      let i = 0;
      while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
      label += ` (${a.length} bytes read, ${b.length} expected, first difference at ${offset + i})`;
    }
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
  } else throw new Error(`namespaceStep: roll ${roll} is not below 0.9`);
  return { label, ours, theirs, bytesDiffer };
}
