/**
 * A memory-backed file system served by tierfs's own FUSE front end
 * (src/fuse, the libfuse 3 binding): the benchmark's ceiling for the tierfs
 * mount.  It does the least a file system can do per request: inodes in a
 * Map, data in 1 MiB chunks (as bench/reference/memfs_fuse_native.js, the
 * same file system on fuse-native), no permission checks beyond the
 * kernel's (default_permissions).  A read within one chunk is answered from
 * the chunk itself: the binding lets a file system reply from its own
 * memory, where fuse-native makes it copy into libfuse's buffer.
 *
 * Usage: node dist/bench/memfs.js MOUNTPOINT [ATTR_TIMEOUT_S]   (prints "ready", unmounts on SIGTERM)
 */
import c from 'node:constants';
import path from 'node:path';
import { TierfsError } from '../src/errors';
import type { Attr, Credentials, DirEntry, Ino, SetAttr, StatFs } from '../src/fs/fs';
import { FuseMount, type FuseBackend } from '../src/fuse/fuse';

// The chunk memory both benchmark file systems share (dist/bench → bench/reference).
const { CHUNK, takeChunk, giveChunks } = require(path.resolve(__dirname, '..', '..', 'bench', 'reference', 'chunks.js')) as {
  CHUNK: number;
  takeChunk: () => Buffer;
  giveChunks: (chunks: { values(): Iterable<Buffer> }) => void;
};

interface Node extends Attr {
  chunks: Map<number, Buffer>;
  entries?: Map<string, Ino>;
  parent: Ino;
}

function fail(code: ConstructorParameters<typeof TierfsError>[0]): never {
  throw new TierfsError(code, code);
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

export class MemoryFileSystem implements FuseBackend {
  /** write() copies the payload before it returns: the binding lends it libfuse's buffer (no copy), as fuse-native does. */
  readonly consumesWriteAtOnce = true;
  private readonly nodes = new Map<Ino, Node>();
  private readonly handles = new Map<number, Ino>();
  private nextIno = 2;
  private nextHandle = 1;

  constructor() {
    this.nodes.set(1 as Ino, this.fresh(1 as Ino, c.S_IFDIR | 0o755, { uid: 0, gid: 0, groups: [] }, 1 as Ino));
  }

  private fresh(ino: Ino, mode: number, who: Credentials, parent: Ino): Node {
    const t = nowNs();
    const dir = (mode & c.S_IFMT) === c.S_IFDIR;
    return {
      ino, mode, uid: who.uid, gid: who.gid, nlink: dir ? 2 : 1, sizeBytes: dir ? 4096 : 0, rdev: 0, blocks: 0,
      atimeNs: t, mtimeNs: t, ctimeNs: t, btimeNs: t, chunks: new Map(), entries: dir ? new Map() : undefined, parent,
    };
  }

  private node(ino: Ino): Node {
    return this.nodes.get(ino) ?? fail('NOT_FOUND');
  }

  private add(parent: Ino, name: string, mode: number, who: Credentials): Node {
    const dir = this.node(parent);
    if (dir.entries!.has(name)) fail('EXISTS');
    const node = this.fresh(this.nextIno++ as Ino, mode, who, parent);
    this.nodes.set(node.ino, node);
    dir.entries!.set(name, node.ino);
    return node;
  }

  async lookup(parent: Ino, name: string): Promise<Attr> {
    return this.node(this.node(parent).entries?.get(name) ?? fail('NOT_FOUND'));
  }

  async getattr(ino: Ino): Promise<Attr> {
    return this.node(ino);
  }

  async setattr(ino: Ino, change: SetAttr): Promise<Attr> {
    const node = this.node(ino);
    if (change.sizeBytes !== undefined) {
      for (const [index, chunk] of node.chunks) {
        if (index * CHUNK < change.sizeBytes) continue;
        node.chunks.delete(index);
        giveChunks([chunk]);
      }
      node.chunks.get(Math.floor(change.sizeBytes / CHUNK))?.fill(0, change.sizeBytes % CHUNK);
      node.sizeBytes = change.sizeBytes;
    }
    if (change.mode !== undefined) node.mode = (node.mode & c.S_IFMT) | (change.mode & 0o7777);
    if (change.uid !== undefined) node.uid = change.uid;
    if (change.gid !== undefined) node.gid = change.gid;
    if (change.atime !== undefined) node.atimeNs = change.atime === 'now' ? nowNs() : change.atime;
    if (change.mtime !== undefined) node.mtimeNs = change.mtime === 'now' ? nowNs() : change.mtime;
    node.ctimeNs = nowNs();
    return node;
  }

  async readlink(): Promise<string> {
    return fail('NOT_SUPPORTED');
  }

  async mknod(parent: Ino, name: string, mode: number, _rdev: number, who: Credentials): Promise<Attr> {
    return this.add(parent, name, mode, who);
  }

  async mkdir(parent: Ino, name: string, mode: number, who: Credentials): Promise<Attr> {
    return this.add(parent, name, c.S_IFDIR | (mode & 0o7777), who);
  }

  async unlink(parent: Ino, name: string): Promise<void> {
    const dir = this.node(parent);
    const ino = dir.entries!.get(name) ?? fail('NOT_FOUND');
    dir.entries!.delete(name);
    giveChunks(this.node(ino).chunks);
    this.nodes.delete(ino);
  }

  async rmdir(parent: Ino, name: string): Promise<void> {
    const dir = this.node(parent);
    const ino = dir.entries!.get(name) ?? fail('NOT_FOUND');
    if (this.node(ino).entries!.size > 0) fail('NOT_EMPTY');
    dir.entries!.delete(name);
    this.nodes.delete(ino);
  }

  async symlink(): Promise<Attr> {
    return fail('NOT_SUPPORTED');
  }

  async rename(): Promise<void> {
    return fail('NOT_SUPPORTED');
  }

  async link(): Promise<Attr> {
    return fail('NOT_SUPPORTED');
  }

  async open(ino: Ino): Promise<number> {
    this.node(ino);
    const fh = this.nextHandle++;
    this.handles.set(fh, ino);
    return fh;
  }

  async create(parent: Ino, name: string, mode: number, _flags: number, who: Credentials): Promise<{ attr: Attr; fh: number }> {
    const attr = this.add(parent, name, c.S_IFREG | (mode & 0o7777), who);
    return { attr, fh: await this.open(attr.ino) };
  }

  private file(fh: number): Node {
    return this.node(this.handles.get(fh) ?? fail('BAD_HANDLE'));
  }

  async read(fh: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const node = this.file(fh);
    const n = Math.max(0, Math.min(node.sizeBytes, offsetBytes + lengthBytes) - offsetBytes);
    const within = offsetBytes % CHUNK;
    const chunk = node.chunks.get(Math.floor(offsetBytes / CHUNK));
    if (chunk && within + n <= CHUNK) return chunk.subarray(within, within + n); // the binding replies from any buffer: no copy
    const out = Buffer.allocUnsafe(n);
    for (let done = 0; done < n; ) {
      const within = (offsetBytes + done) % CHUNK;
      const step = Math.min(n - done, CHUNK - within);
      const chunk = node.chunks.get(Math.floor((offsetBytes + done) / CHUNK));
      if (chunk) chunk.copy(out, done, within, within + step);
      else out.fill(0, done, done + step);
      done += step;
    }
    return out;
  }

  async write(fh: number, offsetBytes: number, data: Buffer): Promise<number> {
    const node = this.file(fh);
    for (let done = 0; done < data.length; ) {
      const index = Math.floor((offsetBytes + done) / CHUNK);
      const within = (offsetBytes + done) % CHUNK;
      const step = Math.min(data.length - done, CHUNK - within);
      let chunk = node.chunks.get(index);
      if (!chunk) node.chunks.set(index, (chunk = takeChunk()));
      data.copy(chunk, within, done, done + step);
      done += step;
    }
    node.sizeBytes = Math.max(node.sizeBytes, offsetBytes + data.length);
    node.blocks = Math.ceil(node.sizeBytes / 512);
    node.mtimeNs = node.ctimeNs = nowNs();
    return data.length;
  }

  async flush(): Promise<void> {}

  async release(fh: number): Promise<void> {
    this.handles.delete(fh);
  }

  async fsync(): Promise<void> {}

  async readdir(ino: Ino, offset: number, countMax: number): Promise<DirEntry[]> {
    const dir = this.node(ino);
    const all: DirEntry[] = [
      { name: '.', ino, mode: dir.mode, nextOffset: 1 },
      { name: '..', ino: dir.parent, mode: c.S_IFDIR, nextOffset: 2 },
    ];
    let at = 2;
    for (const [name, child] of dir.entries!) all.push({ name, ino: child, mode: this.node(child).mode, nextOffset: ++at });
    return all.slice(offset, offset + countMax);
  }

  async statfs(): Promise<StatFs> {
    return { blockSizeBytes: 4096, blocks: 2 ** 24, blocksFree: 2 ** 23, files: 2 ** 20, filesFree: 2 ** 20, nameBytesMax: 255 };
  }

  async setxattr(): Promise<void> {
    return fail('NOT_SUPPORTED');
  }

  async getxattr(): Promise<Buffer> {
    return fail('NO_XATTR');
  }

  async listxattr(): Promise<string[]> {
    return [];
  }

  async removexattr(): Promise<void> {
    return fail('NO_XATTR');
  }

  async access(): Promise<void> {}

  remember(): void {}

  forget(): void {}
}

if (require.main === module) {
  const mount = new FuseMount(new MemoryFileSystem(), process.argv[2], { allowOther: true, attrTimeoutS: Number(process.argv[3] ?? 0) });
  mount.mount().then(
    () => process.stdout.write('ready\n'),
    (error: Error) => {
      process.stderr.write(`memfs: ${error.message}\n`);
      process.exit(1);
    },
  );
  process.on('SIGTERM', () => void mount.unmount().finally(() => process.exit(0)));
}
