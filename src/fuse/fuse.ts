/**
 * The FUSE front end: mounts a FileSystem with fuse-native (libfuse 2's
 * high-level, path-based API) and keeps itself thin.  Every handler resolves
 * the path to an inode, calls src/fs, and hands any error to errnoOf(), so an
 * exception can never escape into fuse-native (which would kill the mount).
 *
 * Limits of fuse-native that this adapter works around:
 * - per-operation timeout (15 s by default, answering ETIMEDOUT): turned off;
 * - 4 KiB writes by default: big_writes,max_write=131072 via fsname;
 * - hard links show distinct inode numbers: use_ino via fsname;
 * - attributes are cached per path, so hard links could show stale sizes:
 *   attr_timeout=0 and entry_timeout=0;
 * - a mount left dead by a crash: force:true unmounts it first;
 * - utimens dropped mtime and mangled UTIME_OMIT/NOW: patched at install.
 * Limits it cannot remove are in docs/SEMANTICS.md (caller's uid/gid are not
 * passed, millisecond timestamps, 128 KiB requests, .fuse_hidden files).
 */
import fs from 'node:fs';
import Fuse from 'fuse-native';
import { constants } from '../constants';
import {
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Credentials,
  type FileSystem,
  type Ino,
  type SetAttr,
  type TimeSpec,
} from '../fs/fs';
import { errnoOf } from './errno';

export interface MountOptions {
  /** Let every user reach the mount (kernel checks modes with default_permissions). */
  allowOther?: boolean;
}

const NO_ID = 0xffffffff;

function nsToMs(ns: bigint): number {
  return Number(ns / 1_000_000n);
}

// Sentinels for UTIME_OMIT and UTIME_NOW sent by our patched fuse-native (src/fuse/patch_fuse_native.js).
const UTIME_OMIT_MS = 0xfffffffe * 2 ** 32;
const UTIME_NOW_MS = 0xffffffff * 2 ** 32;

function timeSpecOf(ms: number): TimeSpec | undefined {
  if (ms === UTIME_OMIT_MS) return undefined;
  if (ms === UTIME_NOW_MS) return 'now';
  return BigInt(Math.round(ms)) * 1_000_000n;
}

function toStat(attr: Attr) {
  return {
    mode: attr.mode,
    uid: attr.uid,
    gid: attr.gid,
    size: attr.sizeBytes,
    nlink: attr.nlink,
    ino: attr.ino,
    rdev: attr.rdev,
    blksize: constants.blockSizeBytes,
    blocks: attr.blocks,
    atime: nsToMs(attr.atimeNs),
    mtime: nsToMs(attr.mtimeNs),
    ctime: nsToMs(attr.ctimeNs),
  };
}

function splitPath(path: string): { parent: string; name: string } {
  const slash = path.lastIndexOf('/');
  return { parent: path.slice(0, slash) || '/', name: path.slice(slash + 1) };
}

/** Whether allow_other may be used: always as root, otherwise only with user_allow_other in /etc/fuse.conf. */
export function allowOtherPermitted(): boolean {
  if (process.getuid?.() === 0) return true;
  try {
    return /^\s*user_allow_other\s*$/m.test(fs.readFileSync('/etc/fuse.conf', 'utf8'));
  } catch {
    return false;
  }
}

export class FuseMount {
  private readonly fuse: Fuse;
  private readonly credentials: Credentials;

  constructor(
    private readonly fileSystem: FileSystem,
    readonly mountPoint: string,
    options: MountOptions = {},
  ) {
    // fuse-native does not pass the caller's uid/gid: operations run as the daemon, the kernel enforces modes.
    this.credentials = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, groups: [] };
    const allowOther = options.allowOther ?? allowOtherPermitted();
    this.fuse = new Fuse(mountPoint, this.operations(), {
      force: true,
      mkdir: true,
      timeout: false,
      allowOther,
      defaultPermissions: true,
      fsname: `tierfs,subtype=tierfs,big_writes,max_write=${constants.fuseWriteBytesMax},use_ino,attr_timeout=0,entry_timeout=0,negative_timeout=0`,
    });
  }

  mount(): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.mount((error) => (error ? reject(error) : resolve())));
  }

  unmount(): Promise<void> {
    return new Promise((resolve, reject) => this.fuse.unmount((error) => (error ? reject(error) : resolve())));
  }

  private resolve(path: string): Promise<Attr> {
    return this.fileSystem.lookupPath(path, this.credentials);
  }

  private async parentOf(path: string): Promise<{ parent: Ino; name: string }> {
    const { parent, name } = splitPath(path);
    return { parent: (await this.resolve(parent)).ino, name };
  }

  /** Run one operation; its result goes to `reply`, any error to errnoOf. */
  private run<T>(op: string, path: string, cb: Fuse.Callback, work: () => Promise<T>, reply: (value: T) => void): void {
    work().then(
      (value) => {
        try {
          reply(value);
        } catch (error) {
          cb(-errnoOf(error, op, path));
        }
      },
      (error: unknown) => cb(-errnoOf(error, op, path)),
    );
  }

  private operations(): Record<string, (...args: any[]) => void> {
    const fsys = this.fileSystem;
    const who = this.credentials;
    const done = (cb: Fuse.Callback) => () => cb(0);
    const setattr = (op: string, path: string, change: SetAttr, cb: Fuse.Callback) =>
      this.run(op, path, cb, async () => fsys.setattr((await this.resolve(path)).ino, change, who), done(cb));
    /** An operation on the entry `name` of the directory holding `path`. */
    const onEntry = (op: string, path: string, cb: Fuse.Callback, fn: (parent: Ino, name: string) => Promise<unknown>) =>
      this.run(op, path, cb, async () => {
        const { parent, name } = await this.parentOf(path);
        return fn(parent, name);
      }, done(cb));

    return {
      init: (cb: Fuse.Callback) => cb(0),
      statfs: (path: string, cb: Fuse.Callback) =>
        this.run('statfs', path, cb, () => fsys.statfs(), (s) =>
          cb(0, {
            bsize: s.blockSizeBytes, frsize: s.blockSizeBytes, blocks: s.blocks, bfree: s.blocksFree,
            bavail: s.blocksFree, files: s.files, ffree: s.filesFree, favail: s.filesFree, namemax: s.nameBytesMax,
          }),
        ),
      getattr: (path: string, cb: Fuse.Callback) =>
        this.run('getattr', path, cb, () => this.resolve(path), (attr) => cb(0, toStat(attr))),
      fgetattr: (path: string, _fd: number, cb: Fuse.Callback) =>
        this.run('fgetattr', path, cb, () => this.resolve(path), (attr) => cb(0, toStat(attr))),
      access: (path: string, mode: number, cb: Fuse.Callback) =>
        this.run('access', path, cb, async () => fsys.access((await this.resolve(path)).ino, mode, who), done(cb)),
      readdir: (path: string, cb: Fuse.Callback) =>
        this.run('readdir', path, cb, async () => {
          const ino = (await this.resolve(path)).ino;
          const names: string[] = [];
          for (let offset = 0; ; ) {
            const page = await fsys.readdir(ino, offset, 1024, who);
            if (page.length === 0) return names;
            for (const entry of page) names.push(entry.name);
            offset = page[page.length - 1].nextOffset;
          }
        }, (names) => cb(0, names)),
      open: (path: string, flags: number, cb: Fuse.Callback) =>
        this.run('open', path, cb, async () => fsys.open((await this.resolve(path)).ino, flags, who), (fh) => cb(0, fh)),
      create: (path: string, mode: number, cb: Fuse.Callback) =>
        this.run('create', path, cb, async () => {
          const { parent, name } = await this.parentOf(path);
          return (await fsys.create(parent, name, mode, fs.constants.O_RDWR, who)).fh;
        }, (fh) => cb(0, fh)),
      read: (path: string, fd: number, buffer: Buffer, length: number, offset: number, cb: Fuse.Callback) =>
        this.run('read', path, cb, () => fsys.read(fd, offset, length), (data) => cb(data.copy(buffer, 0, 0, length))),
      write: (path: string, fd: number, buffer: Buffer, length: number, offset: number, cb: Fuse.Callback) =>
        this.run('write', path, cb, () => fsys.write(fd, offset, buffer.subarray(0, length)), (n) => cb(n)),
      flush: (path: string, fd: number, cb: Fuse.Callback) => this.run('flush', path, cb, () => fsys.flush(fd), done(cb)),
      release: (path: string, fd: number, cb: Fuse.Callback) =>
        this.run('release', path, cb, () => fsys.release(fd), done(cb)),
      fsync: (path: string, _datasync: number, fd: number, cb: Fuse.Callback) =>
        this.run('fsync', path, cb, () => fsys.fsync(fd), done(cb)),
      fsyncdir: (path: string, _datasync: number, _fd: number, cb: Fuse.Callback) =>
        this.run('fsyncdir', path, cb, () => fsys.fsync(), done(cb)),
      truncate: (path: string, size: number, cb: Fuse.Callback) => setattr('truncate', path, { sizeBytes: size }, cb),
      ftruncate: (path: string, _fd: number, size: number, cb: Fuse.Callback) =>
        setattr('ftruncate', path, { sizeBytes: size }, cb),
      chmod: (path: string, mode: number, cb: Fuse.Callback) => setattr('chmod', path, { mode }, cb),
      chown: (path: string, uid: number, gid: number, cb: Fuse.Callback) =>
        setattr('chown', path, { uid: uid === NO_ID ? undefined : uid, gid: gid === NO_ID ? undefined : gid }, cb),
      utimens: (path: string, atimeMs: number, mtimeMs: number, cb: Fuse.Callback) =>
        setattr('utimens', path, { atime: timeSpecOf(atimeMs), mtime: timeSpecOf(mtimeMs) }, cb),
      mknod: (path: string, mode: number, dev: number, cb: Fuse.Callback) =>
        onEntry('mknod', path, cb, (parent, name) => fsys.mknod(parent, name, mode, dev, who)),
      mkdir: (path: string, mode: number, cb: Fuse.Callback) =>
        onEntry('mkdir', path, cb, (parent, name) => fsys.mkdir(parent, name, mode, who)),
      unlink: (path: string, cb: Fuse.Callback) => onEntry('unlink', path, cb, (parent, name) => fsys.unlink(parent, name, who)),
      rmdir: (path: string, cb: Fuse.Callback) => onEntry('rmdir', path, cb, (parent, name) => fsys.rmdir(parent, name, who)),
      rename: (src: string, dest: string, cb: Fuse.Callback) =>
        this.run('rename', src, cb, async () => {
          const from = await this.parentOf(src);
          const to = await this.parentOf(dest);
          return fsys.rename(from.parent, from.name, to.parent, to.name, 0, who);
        }, done(cb)),
      link: (src: string, dest: string, cb: Fuse.Callback) =>
        this.run('link', dest, cb, async () => {
          const target = await this.resolve(src); // the old path first, as link(2) resolves it
          const { parent, name } = await this.parentOf(dest);
          return fsys.link(target.ino, parent, name, who);
        }, done(cb)),
      symlink: (target: string, path: string, cb: Fuse.Callback) =>
        onEntry('symlink', path, cb, (parent, name) => fsys.symlink(parent, name, target, who)),
      readlink: (path: string, cb: Fuse.Callback) =>
        this.run('readlink', path, cb, async () => fsys.readlink((await this.resolve(path)).ino), (target) => cb(0, target)),
      setxattr: (path: string, name: string, value: Buffer, _position: number, flags: number, cb: Fuse.Callback) =>
        this.run('setxattr', path, cb, async () =>
          fsys.setxattr((await this.resolve(path)).ino, name, Buffer.from(value), flags & (XATTR_CREATE | XATTR_REPLACE), who),
        done(cb)),
      getxattr: (path: string, name: string, _position: number, cb: Fuse.Callback) =>
        this.run('getxattr', path, cb, async () => fsys.getxattr((await this.resolve(path)).ino, name, who), (value) => cb(0, value)),
      listxattr: (path: string, cb: Fuse.Callback) =>
        this.run('listxattr', path, cb, async () => fsys.listxattr((await this.resolve(path)).ino, who), (names) => cb(0, names)),
      removexattr: (path: string, name: string, cb: Fuse.Callback) =>
        this.run('removexattr', path, cb, async () => fsys.removexattr((await this.resolve(path)).ino, name, who), done(cb)),
    };
  }
}

