/**
 * A memory-backed file system on fuse-native 2.2.6 (libfuse 2): the FUSE
 * ceiling tierfs had before its own binding, kept as the benchmark's
 * reference (plain JavaScript, installed only for make bench).  It does the
 * least a file system can do per request; mounted with the best options
 * fuse-native allows (big_writes, 128 KiB writes, use_ino), no attribute
 * caching, default_permissions and allow_other; its data lives in 1 MiB
 * chunks like bench/memfs.ts, the same file system on tierfs's binding.
 *
 * Usage: node bench/reference/memfs_fuse_native.js MOUNTPOINT   (prints "ready", unmounts on SIGTERM)
 */
'use strict';
const Fuse = require('fuse-native');
const os = require('node:os');
const { CHUNK, takeChunk, giveChunks } = require('./chunks');

const E = os.constants.errno;
const nodes = new Map();
let nextIno = 2;
const now = () => Date.now();
nodes.set('/', { mode: 0o40755, chunks: new Map(), size: 4096, ino: 1, mtime: now() });

function stat(node) {
  const t = node.mtime;
  return { mode: node.mode, uid: 0, gid: 0, size: node.size, nlink: 1, ino: node.ino, atime: t, mtime: t, ctime: t, blocks: Math.ceil(node.size / 512), blksize: 4096 };
}

/** Copy between a node's chunks and `buffer`; `write` chooses the direction. */
function transfer(node, buffer, length, position, write) {
  for (let done = 0; done < length; ) {
    const index = Math.floor((position + done) / CHUNK);
    const within = (position + done) % CHUNK;
    const n = Math.min(length - done, CHUNK - within);
    let chunk = node.chunks.get(index);
    if (!chunk && write) node.chunks.set(index, (chunk = takeChunk()));
    if (write) buffer.copy(chunk, within, done, done + n);
    else if (chunk) chunk.copy(buffer, done, within, within + n);
    else buffer.fill(0, done, done + n);
    done += n;
  }
}

const fds = new Map();
let nextFd = 1;
const ops = {
  getattr: (path, cb) => {
    const node = nodes.get(path);
    return node ? cb(0, stat(node)) : cb(-E.ENOENT);
  },
  fgetattr: (path, _fd, cb) => ops.getattr(path, cb),
  readdir: (path, cb) => {
    const prefix = path === '/' ? '/' : `${path}/`;
    const names = [...nodes.keys()].filter((p) => p !== path && p.startsWith(prefix) && !p.slice(prefix.length).includes('/'));
    cb(0, names.map((p) => p.slice(prefix.length)));
  },
  create: (path, mode, cb) => {
    const node = { mode: 0o100000 | (mode & 0o7777), chunks: new Map(), size: 0, ino: nextIno++, mtime: now() };
    nodes.set(path, node);
    const fd = nextFd++;
    fds.set(fd, node);
    cb(0, fd);
  },
  open: (path, _flags, cb) => {
    const node = nodes.get(path);
    if (!node) return cb(-E.ENOENT);
    const fd = nextFd++;
    fds.set(fd, node);
    cb(0, fd);
  },
  release: (_path, fd, cb) => {
    fds.delete(fd);
    cb(0);
  },
  read: (_path, fd, buffer, length, position, cb) => {
    const node = fds.get(fd);
    if (!node) return cb(-E.EBADF);
    const n = Math.max(0, Math.min(node.size, position + length) - position);
    transfer(node, buffer, n, position, false);
    cb(n);
  },
  write: (_path, fd, buffer, length, position, cb) => {
    const node = fds.get(fd);
    if (!node) return cb(-E.EBADF);
    transfer(node, buffer, length, position, true);
    node.size = Math.max(node.size, position + length);
    node.mtime = now();
    cb(length);
  },
  truncate: (path, size, cb) => {
    const node = nodes.get(path);
    if (!node) return cb(-E.ENOENT);
    for (const [index, chunk] of node.chunks) if (index * CHUNK >= size) { node.chunks.delete(index); giveChunks([chunk]); }
    const last = node.chunks.get(Math.floor(size / CHUNK));
    if (last) last.fill(0, size % CHUNK);
    node.size = size;
    cb(0);
  },
  ftruncate: (path, _fd, size, cb) => ops.truncate(path, size, cb),
  unlink: (path, cb) => {
    const node = nodes.get(path);
    if (!node) return cb(-E.ENOENT);
    giveChunks(node.chunks);
    nodes.delete(path);
    cb(0);
  },
  mkdir: (path, mode, cb) => {
    nodes.set(path, { mode: 0o40000 | (mode & 0o7777), chunks: new Map(), size: 4096, ino: nextIno++, mtime: now() });
    cb(0);
  },
  rmdir: (path, cb) => (nodes.delete(path) ? cb(0) : cb(-E.ENOENT)),
  utimens: (_path, _a, _m, cb) => cb(0),
  chmod: (_path, _mode, cb) => cb(0),
  fsync: (_path, _datasync, _fd, cb) => cb(0),
  flush: (_path, _fd, cb) => cb(0),
  statfs: (_path, cb) =>
    cb(0, { bsize: 4096, frsize: 4096, blocks: 2 ** 24, bfree: 2 ** 23, bavail: 2 ** 23, files: 2 ** 20, ffree: 2 ** 20, favail: 2 ** 20, namemax: 255 }),
};

const mountPoint = process.argv[2];
const fuse = new Fuse(mountPoint, ops, {
  force: true,
  mkdir: true,
  timeout: false,
  allowOther: true,
  defaultPermissions: true,
  fsname: 'memfs,big_writes,max_write=131072,use_ino,attr_timeout=0,entry_timeout=0,negative_timeout=0',
});
fuse.mount((error) => {
  if (error) {
    process.stderr.write(`memfs: ${error.message}\n`);
    process.exit(1);
  }
  process.stdout.write('ready\n');
});
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
