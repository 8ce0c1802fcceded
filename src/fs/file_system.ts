/**
 * POSIX semantics over the metadata store and the flash extent store.
 *
 * Every namespace change is one metadata mutation (all or nothing) and is
 * durable at the next commit: on fsync, every commitIntervalMs, or when many
 * changes wait.  Data is written copy-on-write by the store before the
 * mapping that points at it, so a crash shows each file as of the last commit.
 *
 * Writes are write-behind: acknowledged once on their way to flash (small
 * ones: once held in the file's dirty blocks, written out together), mapped
 * in order when the device confirms them (see FlashStore.startWrite).  stat
 * shows pending sizes; reads (of the range), truncate and release wait for
 * them; fsync and the background commit write out and wait for all; a failed
 * one is reported by the file's next fsync or close.
 *
 * Permission checks use the credentials passed with each call (root passes
 * every read/write check, as CAP_DAC_OVERRIDE does).  Writes and truncates of
 * one inode start one at a time; reads do not lock.  An unlinked file keeps
 * its data while a handle is open; orphans left by a crash are reclaimed at
 * open.
 *
 * Longer than most files here because it is one idea: the POSIX contract,
 * operation by operation, each next to the permission and link-count rules
 * it shares with the others (splitting namespace from data would put the
 * rules for rename, truncate and unlink of open files in two places).
 */
import { systemClock, type Clock, type Timer } from '../clock';
import fsConstants from 'node:constants';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { log } from '../log';
import { pathOfInode, type Extent, type Inode, type MetaStore, type ResidencyTotals, type ShareRecord } from '../meta/meta_store';
import type { FlashStore, StoreCounters } from '../store/store';
import type { TieringEngine } from '../tier/tier';
import { checkFileSystem, type FsckOptions, type FsckReport } from './fsck';
import {
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  ROOT_INO,
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Credentials,
  type DirEntry,
  type Ino,
  type SetAttr,
  type StatFs,
  type TimeNs,
} from './fs';

const {
  S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK, S_IXGRP,
  O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_TRUNC,
} = fsConstants;
// Linux values Node does not export.
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_ISVTX = 0o1000;
const O_ACCMODE = 3;
const R_OK = 4;
const W_OK = 2;
const X_OK = 1;
const DAY_NS = 86_400_000_000_000n;
const DIR_SIZE_BYTES = 4096;

/** A window of a file read ahead for a sequential reader. */
interface Readahead {
  offsetBytes: number;
  lengthBytes: number;
  /** The inode's data generation when it was issued; any write or truncate since makes it stale. */
  generation: number;
  /** Extents the window was read from: a read served from it reports them as accessed (heat). */
  extents: Extent[];
  data: Promise<Buffer | undefined>;
  /** The pooled buffer the window was read into, given back once dropped and settled. */
  buffer: Buffer | undefined;
}

interface Handle {
  ino: Ino;
  flags: number;
  credentials: Credentials;
  /** Where a sequential reader's next read starts. */
  nextReadOffsetBytes: number;
  /** Windows read ahead, in file order. */
  readahead: Readahead[];
  /** The file's version when opened (mtime and size): on a read-only appliance a change under it (a follower applying the writer's log) makes its reads ESTALE. */
  openedAs: { mtimeNs: bigint; sizeBytes: number };
}

export interface FileSystemOptions {
  /** File times and the background commit timer (default: the system clock). */
  clock?: Clock;
  /** Background commit period; 0 turns the timer off (tests commit by hand). */
  commitIntervalMs?: number;
}

function fail(code: ConstructorParameters<typeof TierfsError>[0], message: string): never {
  throw new TierfsError(code, message);
}

function isDir(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}

function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0'))
    fail('INVALID', `invalid name ${JSON.stringify(name)}`);
  if (Buffer.byteLength(name) > constants.nameBytesMax)
    fail('NAME_TOO_LONG', `name longer than ${constants.nameBytesMax} bytes`);
}

/** What a write or truncate by an unprivileged caller does: set-user-ID goes, set-group-ID too if group-executable. */
function clearSetId(inode: Inode): void {
  inode.mode &= ~S_ISUID;
  if (inode.mode & S_IXGRP) inode.mode &= ~S_ISGID;
}

function inGroup(credentials: Credentials, gid: number): boolean {
  return credentials.gid === gid || credentials.groups.includes(gid);
}

export class FileSystem {
  private readonly handles = new Map<number, Handle>();
  private readonly openCounts = new Map<Ino, number>();
  /** References the FUSE kernel module holds (lookup replies minus forgets): such an inode outlives its last name. */
  private readonly kernelRefs = new Map<Ino, number>();
  private readonly inodeLocks = new Map<Ino, Promise<unknown>>();
  private nextHandle = 1;
  /**
   * Bumped inside every mutation that changes an open inode's data mapping
   * (write, truncate); a readahead window issued under an older value is
   * stale.  Entries live while the inode is open.
   */
  private readonly dataGenerations = new Map<Ino, number>();
  private readaheadBytes = 0;
  /**
   * Buffers of readaheadWindowBytes, reused by readahead windows: a new
   * buffer per window made V8 run a full garbage collection every few dozen
   * MiB read (external memory), a third of a sequential reader's time.
   */
  private readonly windowBuffers: Buffer[] = [];
  /** Writes acknowledged but not yet mapped, per inode: what stat must already show. */
  private readonly pendingWrites = new Map<Ino, { count: number; endBytes: number; timeNs: TimeNs }>();
  /** A background commit (with its write-out of small writes) is running: the timer does not start another. */
  private backgroundCommitting = false;
  /** A write-behind that failed, per inode, reported by the next fsync or close of that file. */
  private readonly writeErrors = new Map<Ino, unknown>();
  private readonly clock: Clock;
  private readonly timer: Timer | undefined;
  private closed = false;
  /**
   * The kernel keeps written pages and writes them back later (FUSE's
   * writeback cache, serve's writebackCache).  It then reads the partial
   * pages of files opened only for writing, keeps the end of an O_APPEND
   * file itself, and its write-back sets the file's times: so handles
   * opened for writing also read, O_APPEND is not applied here, and times
   * set by the kernel's write-back are taken from whoever may write the
   * file (the kernel has checked utimensat itself: default_permissions).
   */
  kernelWritebackCache = false;

  private readOnlyReason: string | undefined;

  constructor(
    readonly meta: MetaStore,
    readonly store: FlashStore,
    options: FileSystemOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.generation = Number(meta.setting('generation') ?? 1);
    const intervalMs = options.commitIntervalMs ?? constants.commitIntervalMs;
    if (intervalMs > 0) {
      this.timer = this.clock.every(intervalMs, () => {
        if (this.meta.pendingCount > 0 || this.store.dirtyBytes > 0) this.backgroundCommit();
      });
    }
  }

  /** Reclaim inodes that lost their last name while open before a crash. */
  async reclaimOrphans(): Promise<number> {
    const orphans = this.meta.orphanInodes();
    for (const ino of orphans) this.meta.mutate(() => this.destroy(ino));
    if (orphans.length > 0) await this.store.commit();
    return orphans.length;
  }

  private backgroundCommit(): void {
    if (this.backgroundCommitting) return;
    this.backgroundCommitting = true;
    // Small writes held in memory are written out first, so they are durable with this commit.
    // A failed commit keeps its changes pending for the next one; fsync callers get the error themselves.
    this.store
      .writeOutDirty()
      .then(() => this.store.commit())
      .catch((error) => log.error('background commit failed; will retry', { error }))
      .finally(() => (this.backgroundCommitting = false));
  }

  // ---- helpers ----

  private now(): TimeNs {
    return this.clock.nowNs();
  }

  private inode(ino: Ino): Inode {
    return this.meta.getInode(ino) ?? fail('NOT_FOUND', `no inode ${ino}`);
  }

  private dir(ino: Ino): Inode {
    const inode = this.inode(ino);
    if (!isDir(inode.mode)) fail('NOT_DIR', `inode ${ino} is not a directory`);
    return inode;
  }

  private toAttr(inode: Inode): Attr {
    const pending = this.pendingWrites.get(inode.ino);
    if (pending) {
      // Acknowledged writes not yet mapped: stat shows them already.
      inode = { ...inode, sizeBytes: Math.max(inode.sizeBytes, pending.endBytes), mtimeNs: pending.timeNs, ctimeNs: pending.timeNs };
    }
    return { ...inode, blocks: Math.ceil(inode.sizeBytes / 4096) * 8 };
  }

  /** Wait until the writes acknowledged on `ino` are mapped; then a failed one is reported once. */
  private async settle(ino: Ino): Promise<void> {
    await this.store.whenMapped(ino);
    const error = this.writeErrors.get(ino);
    if (error !== undefined) {
      this.writeErrors.delete(ino);
      throw error;
    }
  }

  private may(inode: Inode, mask: number, credentials: Credentials): boolean {
    if (credentials.uid === 0) {
      // root passes read and write checks; execute needs some x bit (or a directory)
      return (mask & X_OK) === 0 || isDir(inode.mode) || (inode.mode & 0o111) !== 0;
    }
    let bits: number;
    if (credentials.uid === inode.uid) bits = (inode.mode >> 6) & 7;
    else if (inGroup(credentials, inode.gid)) bits = (inode.mode >> 3) & 7;
    else bits = inode.mode & 7;
    return (bits & mask) === mask;
  }

  private require(inode: Inode, mask: number, credentials: Credentials): void {
    if (!this.may(inode, mask, credentials)) fail('ACCESS', `permission denied on inode ${inode.ino}`);
  }

  /** Sticky directories: only the entry's owner, the directory's owner or root may remove or rename it. */
  private requireStickyOwner(parent: Inode, victim: Inode, credentials: Credentials): void {
    if ((parent.mode & S_ISVTX) === 0 || credentials.uid === 0) return;
    if (credentials.uid !== parent.uid && credentials.uid !== victim.uid)
      fail('NOT_PERMITTED', `sticky directory ${parent.ino}: not the owner`);
  }

  private touch(inode: Inode, fields: { m?: boolean; c?: boolean; a?: boolean }): void {
    const now = this.now();
    if (fields.m) inode.mtimeNs = now;
    if (fields.c) inode.ctimeNs = now;
    if (fields.a) inode.atimeNs = now;
  }

  private async withInodeLock<T>(ino: Ino, fn: () => Promise<T>): Promise<T> {
    const previous = this.inodeLocks.get(ino) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.inodeLocks.set(ino, tail);
    try {
      return await run;
    } finally {
      if (this.inodeLocks.get(ino) === tail) this.inodeLocks.delete(ino);
    }
  }

  private handle(fh: number): Handle {
    return this.handles.get(fh) ?? fail('BAD_HANDLE', `no open handle ${fh}`);
  }

  /** Free an inode with no names and no handles (inside a mutation). */
  private destroy(ino: Ino): void {
    this.store.unmapFile(ino);
    this.meta.deleteInode(ino);
  }

  /** Nothing reaches the inode any more: no handle open, no reference held by the kernel. */
  private unreachable(ino: Ino): boolean {
    return !this.openCounts.has(ino) && !this.kernelRefs.has(ino);
  }

  private dropLink(inode: Inode): void {
    inode.nlink -= isDir(inode.mode) ? inode.nlink : 1;
    this.touch(inode, { c: true });
    if (inode.nlink === 0 && this.unreachable(inode.ino)) this.destroy(inode.ino);
    else this.meta.updateInode(inode);
  }

  /** The kernel now knows `ino` (a lookup or create was answered with it). */
  /**
   * From now on every change answers READ_ONLY (EROFS): this appliance lost
   * the bucket's writer role (src/tier/lease.ts).  Reads go on.
   */
  setReadOnly(reason: string): void {
    this.readOnlyReason ??= reason;
  }

  get readOnly(): string | undefined {
    return this.readOnlyReason;
  }

  private writable(): void {
    if (this.readOnlyReason !== undefined) fail('READ_ONLY', `read-only: ${this.readOnlyReason}`);
  }

  remember(ino: Ino): void {
    this.kernelRefs.set(ino, (this.kernelRefs.get(ino) ?? 0) + 1);
  }

  /** The kernel dropped `count` references to `ino`; an unlinked inode nobody reaches is freed. */
  forget(ino: Ino, count: number): void {
    const left = (this.kernelRefs.get(ino) ?? 0) - count;
    if (left > 0) {
      this.kernelRefs.set(ino, left);
      return;
    }
    this.kernelRefs.delete(ino);
    if (this.openCounts.has(ino) || this.closed) return;
    const inode = this.meta.getInode(ino);
    if (inode && inode.nlink === 0) {
      this.withInodeLock(ino, async () => {
        await this.store.whenMapped(ino);
        const fresh = this.meta.getInode(ino);
        if (fresh && fresh.nlink === 0 && this.unreachable(ino)) this.meta.mutate(() => this.destroy(ino));
      }).catch((error) => log.error('freeing a forgotten inode failed; reclaimed at the next start', { ino, error }));
    }
  }

  private newInode(parent: Inode, mode: number, rdev: number, credentials: Credentials): Inode {
    const now = this.now();
    let gid = credentials.gid;
    if (parent.mode & S_ISGID) {
      gid = parent.gid;
      if (isDir(mode)) mode |= S_ISGID;
    }
    if (!isDir(mode) && (mode & S_ISGID) && credentials.uid !== 0 && !inGroup(credentials, gid)) mode &= ~S_ISGID;
    const fresh = {
      mode, uid: credentials.uid, gid, nlink: isDir(mode) ? 2 : 1,
      sizeBytes: isDir(mode) ? DIR_SIZE_BYTES : 0, rdev,
      atimeNs: now, mtimeNs: now, ctimeNs: now, btimeNs: now,
    };
    return { ino: this.meta.createInode(fresh), ...fresh };
  }

  /** Checks shared by everything that adds a name to `parentIno`. */
  private prepareEntry(parentIno: Ino, name: string, credentials: Credentials): Inode {
    checkName(name);
    const parent = this.dir(parentIno);
    if (parent.nlink === 0) fail('NOT_FOUND', `directory ${parentIno} was removed`);
    this.require(parent, W_OK | X_OK, credentials);
    if (this.meta.lookup(parentIno, name) !== undefined) fail('EXISTS', `${name} exists`);
    return parent;
  }

  private addEntry(parent: Inode, name: string, inode: Inode): void {
    this.meta.addDirent(parent.ino, name, inode.ino);
    if (isDir(inode.mode)) parent.nlink += 1;
    this.touch(parent, { m: true, c: true });
    this.meta.updateInode(parent);
  }

  // ---- attributes ----

  async getattr(ino: Ino): Promise<Attr> {
    return this.toAttr(this.inode(ino));
  }

  async lookup(parentIno: Ino, name: string, credentials: Credentials): Promise<Attr> {
    if (Buffer.byteLength(name) > constants.nameBytesMax) fail('NAME_TOO_LONG', 'name too long');
    // The kernel decoding a file handle (an NFS client's) asks for "." of the node itself, of any type:
    // the inode, or ENOENT when it is gone (the client gets ESTALE).
    if (name === '.') {
      const node = this.inode(parentIno);
      if (!isDir(node.mode)) return this.toAttr(node);
    }
    const parent = this.dir(parentIno);
    this.require(parent, X_OK, credentials);
    if (name === '.') return this.toAttr(parent);
    if (name === '..') return this.toAttr(this.inode(this.meta.parentOf(parentIno) ?? ROOT_INO));
    const ino = this.meta.lookup(parentIno, name) ?? fail('NOT_FOUND', `${name} not found`);
    return this.toAttr(this.inode(ino));
  }

  /** Resolve an absolute path inside the file system, without following symlinks. */
  async lookupPath(path: string, credentials: Credentials): Promise<Attr> {
    let attr = await this.getattr(ROOT_INO);
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      attr = await this.lookup(attr.ino, part, credentials);
    }
    return attr;
  }

  /**
   * Change attributes.  `fh`: the open handle the change comes through
   * (ftruncate, futimens): a size change through a handle open for writing
   * needs no write permission on the file, as on ext4 — the permission was
   * granted at open (a file created with mode 0 can be truncated through the
   * descriptor that created it).
   */
  async setattr(ino: Ino, change: SetAttr, credentials: Credentials, fh?: number): Promise<Attr> {
    this.writable();
    const owner = (inode: Inode) => credentials.uid === 0 || credentials.uid === inode.uid;
    const check = this.inode(ino);
    if (change.sizeBytes !== undefined) {
      if (isDir(check.mode)) fail('IS_DIR', 'cannot truncate a directory');
      if ((check.mode & S_IFMT) !== S_IFREG) fail('INVALID', 'can only truncate regular files');
      if (change.sizeBytes < 0) fail('INVALID', 'negative size');
      if (change.sizeBytes > constants.fileSizeBytesMax) fail('FILE_TOO_BIG', 'size beyond the largest file');
      const through = fh === undefined ? undefined : this.handles.get(fh);
      const openForWriting = through !== undefined && through.ino === ino && (through.flags & O_ACCMODE) !== O_RDONLY;
      if (!openForWriting) this.require(check, W_OK, credentials);
    }
    if (change.mode !== undefined && !owner(check)) {
      // Clearing set-ID bits is what the kernel asks for when someone who may write the file
      // writes or truncates it (file_remove_privs): allowed, it only takes privilege away.
      const current = check.mode & 0o7777;
      const next = change.mode & 0o7777;
      const dropsSetIdOnly = (next & ~current) === 0 && (current & ~next & ~(S_ISUID | S_ISGID)) === 0;
      if (!dropsSetIdOnly || !this.may(check, W_OK, credentials)) fail('NOT_PERMITTED', 'only the owner may chmod');
    }
    if (change.uid !== undefined && change.uid !== check.uid && credentials.uid !== 0)
      fail('NOT_PERMITTED', 'only root may change the owner');
    if (change.gid !== undefined && change.gid !== check.gid && credentials.uid !== 0) {
      if (credentials.uid !== check.uid || !inGroup(credentials, change.gid))
        fail('NOT_PERMITTED', 'only the owner may change the group, and only to one of its groups');
    }
    for (const time of [change.atime, change.mtime]) {
      if (time === undefined) continue;
      if (time === 'now') {
        if (!owner(check) && !this.may(check, W_OK, credentials)) fail('ACCESS', 'no permission to touch');
      } else if (!owner(check) && !(this.kernelWritebackCache && this.may(check, W_OK, credentials))) fail('NOT_PERMITTED', 'only the owner may set times');
    }

    if (change.sizeBytes !== undefined) {
      const sizeBytes = change.sizeBytes;
      await this.withInodeLock(ino, async () => {
        await this.store.whenMapped(ino);
        await this.store.truncate(ino, sizeBytes, this.inode(ino).sizeBytes, () => {
          this.dataChanged(ino);
          const fresh = this.inode(ino);
          fresh.sizeBytes = sizeBytes;
          if (credentials.uid !== 0) clearSetId(fresh);
          this.touch(fresh, { m: true, c: true });
          this.meta.updateInode(fresh);
        });
      });
    }
    return this.meta.mutate(() => {
      const inode = this.inode(ino);
      let changed = false;
      if (change.mode !== undefined) {
        let mode = change.mode & 0o7777;
        if (credentials.uid !== 0 && !isDir(inode.mode) && !inGroup(credentials, inode.gid)) mode &= ~S_ISGID;
        inode.mode = (inode.mode & S_IFMT) | mode;
        changed = true;
      }
      if (change.uid !== undefined || change.gid !== undefined) {
        inode.uid = change.uid ?? inode.uid;
        inode.gid = change.gid ?? inode.gid;
        if (!isDir(inode.mode)) clearSetId(inode);
        changed = true;
      }
      if (change.atime !== undefined) inode.atimeNs = change.atime === 'now' ? this.now() : change.atime;
      if (change.mtime !== undefined) inode.mtimeNs = change.mtime === 'now' ? this.now() : change.mtime;
      if (changed || change.atime !== undefined || change.mtime !== undefined) {
        this.touch(inode, { c: true });
        this.meta.updateInode(inode);
      }
      return this.toAttr(inode);
    });
  }

  async access(ino: Ino, mask: number, credentials: Credentials): Promise<void> {
    const inode = this.inode(ino);
    if (mask !== 0) this.require(inode, mask & 7, credentials);
  }

  // ---- creating names ----

  async mkdir(parentIno: Ino, name: string, mode: number, credentials: Credentials): Promise<Attr> {
    this.writable();
    return this.meta.mutate(() => {
      const parent = this.prepareEntry(parentIno, name, credentials);
      const inode = this.newInode(parent, S_IFDIR | (mode & 0o7777), 0, credentials);
      this.addEntry(parent, name, inode);
      return this.toAttr(inode);
    });
  }

  async mknod(parentIno: Ino, name: string, mode: number, rdev: number, credentials: Credentials): Promise<Attr> {
    this.writable();
    const type = mode & S_IFMT || S_IFREG;
    if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) fail('INVALID', 'mknod of an unsupported type');
    if ((type === S_IFCHR || type === S_IFBLK) && credentials.uid !== 0) fail('NOT_PERMITTED', 'only root may create devices');
    return this.meta.mutate(() => {
      const parent = this.prepareEntry(parentIno, name, credentials);
      const inode = this.newInode(parent, type | (mode & 0o7777), type === S_IFCHR || type === S_IFBLK ? rdev : 0, credentials);
      this.addEntry(parent, name, inode);
      return this.toAttr(inode);
    });
  }

  async create(
    parentIno: Ino, name: string, mode: number, flags: number, credentials: Credentials,
  ): Promise<{ attr: Attr; fh: number }> {
    const attr = await this.mknod(parentIno, name, S_IFREG | (mode & 0o7777), 0, credentials);
    // The creator may write the new file whatever its mode says (open(O_CREAT|O_WRONLY, 0444) works).
    return { attr, fh: this.addHandle(attr.ino, flags, credentials) };
  }

  async symlink(parentIno: Ino, name: string, target: string, credentials: Credentials): Promise<Attr> {
    this.writable();
    if (target === '') fail('NOT_FOUND', 'empty symlink target');
    if (Buffer.byteLength(target) > constants.symlinkBytesMax) fail('NAME_TOO_LONG', 'symlink target too long');
    return this.meta.mutate(() => {
      const parent = this.prepareEntry(parentIno, name, credentials);
      const inode = this.newInode(parent, S_IFLNK | 0o777, 0, credentials);
      inode.sizeBytes = Buffer.byteLength(target);
      this.meta.updateInode(inode);
      this.meta.setSymlink(inode.ino, target);
      this.addEntry(parent, name, inode);
      return this.toAttr(inode);
    });
  }

  async readlink(ino: Ino): Promise<string> {
    const inode = this.inode(ino);
    if ((inode.mode & S_IFMT) !== S_IFLNK) fail('INVALID', `inode ${ino} is not a symlink`);
    return this.meta.getSymlink(ino) ?? fail('CORRUPT', `symlink ${ino} has no target`);
  }

  async link(ino: Ino, parentIno: Ino, name: string, credentials: Credentials): Promise<Attr> {
    this.writable();
    return this.meta.mutate(() => {
      const inode = this.inode(ino);
      if (isDir(inode.mode)) fail('NOT_PERMITTED', 'hard links to directories are not allowed');
      const parent = this.prepareEntry(parentIno, name, credentials);
      if (inode.nlink === 0) fail('NOT_FOUND', 'file was removed');
      if (inode.nlink >= constants.linkCountMax) fail('TOO_MANY_LINKS', 'too many links');
      inode.nlink += 1;
      this.touch(inode, { c: true });
      this.meta.updateInode(inode);
      this.addEntry(parent, name, inode);
      return this.toAttr(inode);
    });
  }

  // ---- removing and moving names ----

  async unlink(parentIno: Ino, name: string, credentials: Credentials): Promise<void> {
    this.writable();
    this.meta.mutate(() => {
      checkName(name);
      const parent = this.dir(parentIno);
      this.require(parent, W_OK | X_OK, credentials);
      const ino = this.meta.lookup(parentIno, name) ?? fail('NOT_FOUND', `${name} not found`);
      const inode = this.inode(ino);
      if (isDir(inode.mode)) fail('IS_DIR', `${name} is a directory`);
      this.requireStickyOwner(parent, inode, credentials);
      this.meta.removeDirent(parentIno, name);
      this.touch(parent, { m: true, c: true });
      this.meta.updateInode(parent);
      this.dropLink(inode);
    });
  }

  async rmdir(parentIno: Ino, name: string, credentials: Credentials): Promise<void> {
    this.writable();
    this.meta.mutate(() => {
      if (name === '.') fail('INVALID', 'cannot remove .');
      if (name === '..') fail('NOT_EMPTY', 'cannot remove ..');
      checkName(name);
      const parent = this.dir(parentIno);
      this.require(parent, W_OK | X_OK, credentials);
      const ino = this.meta.lookup(parentIno, name) ?? fail('NOT_FOUND', `${name} not found`);
      const inode = this.inode(ino);
      if (!isDir(inode.mode)) fail('NOT_DIR', `${name} is not a directory`);
      if (this.meta.hasDirents(ino)) fail('NOT_EMPTY', `${name} is not empty`);
      this.requireStickyOwner(parent, inode, credentials);
      this.meta.removeDirent(parentIno, name);
      parent.nlink -= 1;
      this.touch(parent, { m: true, c: true });
      this.meta.updateInode(parent);
      this.dropLink(inode);
    });
  }

  /** True when `ancestor` is `ino` or one of its parents. */
  private isAncestor(ancestor: Ino, ino: Ino): boolean {
    for (let at: Ino | undefined = ino; at !== undefined; at = at === ROOT_INO ? undefined : this.meta.parentOf(at)) {
      if (at === ancestor) return true;
    }
    return false;
  }

  async rename(
    oldParentIno: Ino, oldName: string, newParentIno: Ino, newName: string, flags: number, credentials: Credentials,
  ): Promise<void> {
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) || (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE))
      fail('INVALID', 'bad rename flags');
    this.writable();
    this.meta.mutate(() => {
      checkName(oldName);
      checkName(newName);
      const oldParent = this.dir(oldParentIno);
      const newParent = newParentIno === oldParentIno ? oldParent : this.dir(newParentIno);
      this.require(oldParent, W_OK | X_OK, credentials);
      this.require(newParent, W_OK | X_OK, credentials);
      const ino = this.meta.lookup(oldParentIno, oldName) ?? fail('NOT_FOUND', `${oldName} not found`);
      const inode = this.inode(ino);
      const targetIno = this.meta.lookup(newParentIno, newName);
      if (targetIno === ino) return; // two names of one file: POSIX says do nothing
      this.requireStickyOwner(oldParent, inode, credentials);
      const target = targetIno === undefined ? undefined : this.inode(targetIno);
      if (target) this.requireStickyOwner(newParent, target, credentials);
      if (flags & RENAME_NOREPLACE && target) fail('EXISTS', `${newName} exists`);
      if (flags & RENAME_EXCHANGE && !target) fail('NOT_FOUND', `${newName} not found`);
      if (isDir(inode.mode) && this.isAncestor(ino, newParentIno)) fail('INVALID', 'cannot move a directory into itself');
      if (target && flags & RENAME_EXCHANGE && isDir(target.mode) && this.isAncestor(target.ino, oldParentIno))
        fail('INVALID', 'cannot move a directory into itself');
      // A directory moved to another parent rewrites its "..": that needs write permission on it.
      if (isDir(inode.mode) && oldParentIno !== newParentIno) this.require(inode, W_OK, credentials);

      if (target && flags & RENAME_EXCHANGE) {
        if (isDir(target.mode) && oldParentIno !== newParentIno) this.require(target, W_OK, credentials);
        this.meta.removeDirent(oldParentIno, oldName);
        this.meta.removeDirent(newParentIno, newName);
        this.meta.addDirent(oldParentIno, oldName, target.ino);
        this.meta.addDirent(newParentIno, newName, ino);
        if (newParent !== oldParent) {
          // A directory changing parents moves one ".." link with it.
          const delta = (isDir(inode.mode) ? 1 : 0) - (isDir(target.mode) ? 1 : 0);
          oldParent.nlink -= delta;
          newParent.nlink += delta;
        }
        this.touch(target, { c: true });
        this.meta.updateInode(target);
      } else {
        if (target) {
          if (isDir(inode.mode) && !isDir(target.mode)) fail('NOT_DIR', `${newName} is not a directory`);
          if (!isDir(inode.mode) && isDir(target.mode)) fail('IS_DIR', `${newName} is a directory`);
          if (isDir(target.mode) && this.meta.hasDirents(target.ino)) fail('NOT_EMPTY', `${newName} is not empty`);
          this.meta.removeDirent(newParentIno, newName);
          if (isDir(target.mode)) newParent.nlink -= 1;
          this.dropLink(target);
        }
        this.meta.removeDirent(oldParentIno, oldName);
        this.meta.addDirent(newParentIno, newName, ino);
        if (isDir(inode.mode) && oldParent !== newParent) {
          oldParent.nlink -= 1;
          newParent.nlink += 1;
        }
      }
      this.touch(inode, { c: true });
      this.meta.updateInode(inode);
      this.touch(oldParent, { m: true, c: true });
      this.meta.updateInode(oldParent);
      if (newParent !== oldParent) {
        this.touch(newParent, { m: true, c: true });
        this.meta.updateInode(newParent);
      }
    });
  }

  // ---- directories ----

  /** Entries from `offset` ("." at 0, ".." at 1, then by creation order), at most `countMax`. */
  async readdir(ino: Ino, offset: number, countMax: number, credentials: Credentials): Promise<DirEntry[]> {
    const dir = this.dir(ino);
    this.require(dir, R_OK, credentials);
    const entries: DirEntry[] = [];
    if (offset <= 0 && entries.length < countMax) entries.push({ name: '.', ino, mode: dir.mode, nextOffset: 1 });
    if (offset <= 1 && entries.length < countMax) {
      const parent = this.inode(ino === ROOT_INO ? ROOT_INO : (this.meta.parentOf(ino) ?? ROOT_INO));
      entries.push({ name: '..', ino: parent.ino, mode: parent.mode, nextOffset: 2 });
    }
    const room = countMax - entries.length;
    if (room > 0) {
      for (const d of this.meta.listDirents(ino, Math.max(offset - 2, 0), room)) {
        const child = this.inode(d.ino);
        entries.push({ name: d.name, ino: d.ino, mode: child.mode, nextOffset: d.cookie + 3 });
      }
    }
    return entries;
  }

  // ---- data ----

  private addHandle(ino: Ino, flags: number, credentials: Credentials): number {
    if (this.kernelWritebackCache) flags = ((flags & O_ACCMODE) === O_WRONLY ? (flags & ~O_ACCMODE) | O_RDWR : flags) & ~O_APPEND;
    const fh = this.nextHandle++;
    const inode = this.inode(ino);
    this.handles.set(fh, { ino, flags, credentials, nextReadOffsetBytes: 0, readahead: [], openedAs: { mtimeNs: inode.mtimeNs, sizeBytes: inode.sizeBytes } });
    this.openCounts.set(ino, (this.openCounts.get(ino) ?? 0) + 1);
    return fh;
  }

  async open(ino: Ino, flags: number, credentials: Credentials): Promise<number> {
    const inode = this.inode(ino);
    const access = flags & O_ACCMODE;
    if (access !== O_RDONLY && access !== O_WRONLY && access !== O_RDWR) fail('INVALID', 'bad open mode');
    if (access !== O_RDONLY || flags & O_TRUNC) this.writable();
    if ((inode.mode & S_IFMT) === S_IFLNK) fail('INVALID', 'cannot open a symlink');
    if (isDir(inode.mode) && access !== O_RDONLY) fail('IS_DIR', 'cannot open a directory for writing');
    const mask = (access === O_RDONLY ? R_OK : 0) | (access === O_WRONLY ? W_OK : 0) | (access === O_RDWR ? R_OK | W_OK : 0);
    this.require(inode, mask, credentials);
    if (flags & O_TRUNC && access !== O_RDONLY && (inode.mode & S_IFMT) === S_IFREG && inode.sizeBytes > 0)
      await this.setattr(ino, { sizeBytes: 0 }, credentials);
    return this.addHandle(ino, flags, credentials);
  }

  /**
   * Up to `lengthBytes` from `offsetBytes`.  With `into` (at least that
   * long) the bytes are written there and a view of it comes back (the
   * FUSE front end reuses its reply buffers); callers use the result, not
   * `into`.  The result never aliases memory the file system reuses.
   */
  async read(fh: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    const handle = this.handle(fh);
    if ((handle.flags & O_ACCMODE) === O_WRONLY) fail('BAD_HANDLE', 'handle not open for reading');
    if (offsetBytes < 0 || lengthBytes < 0) fail('INVALID', 'negative offset or length');
    await this.store.whenReadable(handle.ino, offsetBytes, offsetBytes + lengthBytes); // reads see every acknowledged write
    const inode = this.inode(handle.ino);
    if (isDir(inode.mode)) fail('IS_DIR', 'read of a directory');
    if (this.readOnlyReason !== undefined && (inode.mtimeNs !== handle.openedAs.mtimeNs || inode.sizeBytes !== handle.openedAs.sizeBytes))
      fail('STALE', `inode ${handle.ino} changed since it was opened (the writer rewrote it): open it again`);
    const n = Math.min(lengthBytes, constants.ioSizeBytesMax, Math.max(inode.sizeBytes - offsetBytes, 0));
    const dest = into && into.length >= n ? into.subarray(0, n) : undefined;
    const window = this.readaheadWindow(handle, offsetBytes, n);
    if (n > 0 && (window || offsetBytes === handle.nextReadOffsetBytes)) this.readAhead(handle, offsetBytes + n, n, inode.sizeBytes);
    handle.nextReadOffsetBytes = offsetBytes + n;
    const pooled = window?.buffer; // before the wait: a reader moving on may drop the window meanwhile
    const ahead = window ? await window.data : undefined;
    let data: Buffer;
    if (ahead) {
      this.store.touched(window!.extents, offsetBytes, offsetBytes + n);
      const from = offsetBytes - window!.offsetBytes;
      if (pooled && ahead.buffer === pooled.buffer) {
        // Copied out at once: the window's buffer is reused once the reader moves past it.
        data = dest ?? Buffer.allocUnsafe(n);
        ahead.copy(data, 0, from, from + n);
      } else data = ahead.subarray(from, from + n); // a window of its own (larger than the pooled ones): never reused
    } else {
      data = n > 0 ? await this.store.read(handle.ino, offsetBytes, n, undefined, dest) : Buffer.alloc(0);
    }
    this.relatime(inode);
    return data;
  }

  /**
   * The window holding [offsetBytes, offsetBytes + lengthBytes) if it is still
   * current; windows wholly before the read, and stale ones, are dropped.
   */
  private readaheadWindow(handle: Handle, offsetBytes: number, lengthBytes: number): Readahead | undefined {
    const generation = this.dataGenerations.get(handle.ino) ?? 0;
    const keep = (w: Readahead) => w.generation === generation && w.offsetBytes + w.lengthBytes > offsetBytes;
    for (const w of handle.readahead) if (!keep(w)) this.dropWindow(w);
    handle.readahead = handle.readahead.filter(keep);
    return handle.readahead.find((w) => w.offsetBytes <= offsetBytes && offsetBytes + lengthBytes <= w.offsetBytes + w.lengthBytes);
  }

  /** Keep up to readaheadWindowCountMax windows ahead of a sequential reader, within the global budget. */
  private readAhead(handle: Handle, fromBytes: number, readBytes: number, sizeBytes: number): void {
    const windowBytes = Math.max(readBytes, constants.readaheadWindowBytes);
    const generation = this.dataGenerations.get(handle.ino) ?? 0;
    while (handle.readahead.length < constants.readaheadWindowCountMax) {
      const last = handle.readahead[handle.readahead.length - 1];
      const start = last ? last.offsetBytes + last.lengthBytes : fromBytes;
      const lengthBytes = Math.min(windowBytes, sizeBytes - start);
      if (lengthBytes <= 0 || this.readaheadBytes + lengthBytes > constants.readaheadBytesMax) return;
      this.readaheadBytes += lengthBytes;
      const extents: Extent[] = [];
      const buffer = lengthBytes <= constants.readaheadWindowBytes ? (this.windowBuffers.pop() ?? Buffer.allocUnsafeSlow(constants.readaheadWindowBytes)) : undefined;
      handle.readahead.push({
        offsetBytes: start,
        lengthBytes,
        generation,
        extents,
        buffer,
        data: this.store.read(handle.ino, start, lengthBytes, { extentsOut: extents }, buffer).catch(() => undefined), // a failed window is read again, which reports the error
      });
    }
  }

  private dropReadahead(handle: Handle): void {
    for (const w of handle.readahead) this.dropWindow(w);
    handle.readahead = [];
  }

  /** Forget a window; its buffer is reused once its read has settled (readers still waiting on it copy out first). */
  private dropWindow(w: Readahead): void {
    this.readaheadBytes -= w.lengthBytes;
    const buffer = w.buffer;
    if (!buffer) return;
    w.buffer = undefined;
    void w.data.finally(() => {
      if (this.windowBuffers.length * constants.readaheadWindowBytes < constants.readaheadBytesMax) this.windowBuffers.push(buffer);
    });
  }

  private dataChanged(ino: Ino): void {
    if (this.openCounts.has(ino)) this.dataGenerations.set(ino, (this.dataGenerations.get(ino) ?? 0) + 1);
  }

  /** relatime: the access time moves only when older than the last change or a day old (no metadata write per read). */
  private relatime(seen: Inode): void {
    const now = this.now();
    if (seen.atimeNs <= seen.mtimeNs || seen.atimeNs <= seen.ctimeNs || now - seen.atimeNs >= DAY_NS) {
      this.meta.mutate(() => {
        const fresh = this.meta.getInode(seen.ino); // the copy seen before the read may be stale by now
        if (!fresh) return;
        fresh.atimeNs = now;
        this.meta.updateInode(fresh);
      });
    }
  }

  async write(fh: number, offsetBytes: number, data: Buffer): Promise<number> {
    this.writable();
    const handle = this.handle(fh);
    if ((handle.flags & O_ACCMODE) === O_RDONLY) fail('BAD_HANDLE', 'handle not open for writing');
    if (offsetBytes < 0) fail('INVALID', 'negative offset');
    if (data.length > constants.ioSizeBytesMax) fail('INVALID', `write larger than ${constants.ioSizeBytesMax} bytes`);
    if (data.length === 0) return 0;
    const ino = handle.ino;
    await this.withInodeLock(ino, async () => {
      const inode = this.inode(ino);
      if ((inode.mode & S_IFMT) !== S_IFREG) fail('INVALID', 'write to a non-regular file');
      const at = handle.flags & O_APPEND ? this.toAttr(inode).sizeBytes : offsetBytes;
      if (at + data.length > constants.fileSizeBytesMax) fail('FILE_TOO_BIG', 'write beyond the largest file');
      const timeNs = this.now();
      // Write-behind: acknowledged once the bytes are on their way to flash; mapped (with size and times) when they land.
      const { mapped } = await this.store.startWrite(ino, at, data, (endBytes) => {
        this.dataChanged(ino); // with the mapping switch: a window read before it is stale from here on
        const fresh = this.inode(ino);
        fresh.sizeBytes = Math.max(fresh.sizeBytes, endBytes);
        if (handle.credentials.uid !== 0) clearSetId(fresh);
        fresh.mtimeNs = fresh.ctimeNs = timeNs;
        this.meta.updateInode(fresh);
      });
      const pending = this.pendingWrites.get(ino) ?? { count: 0, endBytes: 0, timeNs };
      pending.count += 1;
      pending.endBytes = Math.max(pending.endBytes, at + data.length);
      pending.timeNs = timeNs;
      this.pendingWrites.set(ino, pending);
      mapped.then(
        () => this.writeSettled(ino, pending),
        (error: unknown) => {
          log.error('write-behind failed; reported by the next fsync or close', { ino, offsetBytes: at, error });
          this.writeErrors.set(ino, error);
          this.writeSettled(ino, pending);
        },
      );
    });
    if (this.meta.pendingCount >= constants.commitPendingCountMax) this.backgroundCommit();
    return data.length;
  }

  private writeSettled(ino: Ino, pending: { count: number }): void {
    pending.count -= 1;
    if (pending.count === 0 && this.pendingWrites.get(ino) === pending) this.pendingWrites.delete(ino);
  }

  /** Close of one file descriptor: waits for its file's acknowledged writes and reports one that failed. */
  async flush(fh: number): Promise<void> {
    await this.settle(this.handle(fh).ino);
  }

  async release(fh: number): Promise<void> {
    const handle = this.handle(fh);
    await this.store.whenMapped(handle.ino); // no inode is destroyed under its own pending writes
    this.handles.delete(fh);
    this.dropReadahead(handle);
    const count = (this.openCounts.get(handle.ino) ?? 1) - 1;
    if (count > 0) {
      this.openCounts.set(handle.ino, count);
      return;
    }
    this.openCounts.delete(handle.ino);
    this.dataGenerations.delete(handle.ino);
    this.writeErrors.delete(handle.ino); // nobody left to report it to (FUSE reports it at flush, before release)
    const inode = this.meta.getInode(handle.ino);
    if (inode && inode.nlink === 0 && !this.kernelRefs.has(handle.ino)) {
      await this.withInodeLock(handle.ino, async () => this.meta.mutate(() => this.destroy(handle.ino)));
    }
  }

  /**
   * fsync and fdatasync: every acknowledged write lands, then data and
   * metadata of the whole file system reach stable storage (one group
   * commit); a write-behind of this file that failed is reported here.
   */
  async fsync(fh?: number): Promise<void> {
    const handle = fh === undefined ? undefined : this.handle(fh);
    await this.store.whenAllMapped();
    await this.store.commit();
    if (handle) {
      await this.settle(handle.ino);
      await this.store.tier?.durable(handle.ino);
    }
  }

  // ---- extended attributes ----

  private xattrAccess(inode: Inode, name: string, mask: number, credentials: Credentials): void {
    const dot = name.indexOf('.');
    const namespace = dot > 0 ? name.slice(0, dot) : '';
    if (name.length === 0) fail('INVALID', 'empty xattr name');
    if (Buffer.byteLength(name) > constants.xattrNameBytesMax) fail('RANGE', 'xattr name too long');
    if (namespace === 'user') {
      const type = inode.mode & S_IFMT;
      if (type !== S_IFREG && type !== S_IFDIR) fail(mask === W_OK ? 'NOT_PERMITTED' : 'NO_XATTR', 'user xattrs only on files and directories');
      if (isDir(inode.mode) && inode.mode & S_ISVTX && mask === W_OK && credentials.uid !== 0 && credentials.uid !== inode.uid)
        fail('NOT_PERMITTED', 'sticky directory');
      this.require(inode, mask, credentials);
    } else if (namespace === 'trusted') {
      if (credentials.uid !== 0) fail(mask === W_OK ? 'NOT_PERMITTED' : 'NO_XATTR', 'trusted xattrs need root');
    } else if (namespace === 'security') {
      if (mask === W_OK && credentials.uid !== 0 && credentials.uid !== inode.uid) fail('NOT_PERMITTED', 'not the owner');
    } else {
      fail('NOT_SUPPORTED', `xattr namespace of ${name} is not supported`);
    }
  }

  async setxattr(ino: Ino, name: string, value: Buffer, flags: number, credentials: Credentials): Promise<void> {
    this.writable();
    if (value.length > constants.xattrValueBytesMax) fail('RANGE', 'xattr value too large');
    if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) fail('INVALID', 'bad xattr flags');
    this.meta.mutate(() => {
      const inode = this.inode(ino);
      this.xattrAccess(inode, name, W_OK, credentials);
      const exists = this.meta.getXattr(ino, name) !== undefined;
      if (flags & XATTR_CREATE && exists) fail('EXISTS', `xattr ${name} exists`);
      if (flags & XATTR_REPLACE && !exists) fail('NO_XATTR', `no xattr ${name}`);
      this.meta.setXattr(ino, name, Buffer.from(value));
      this.touch(inode, { c: true });
      this.meta.updateInode(inode);
    });
  }

  async getxattr(ino: Ino, name: string, credentials: Credentials): Promise<Buffer> {
    const inode = this.inode(ino);
    this.xattrAccess(inode, name, R_OK, credentials);
    return this.meta.getXattr(ino, name) ?? fail('NO_XATTR', `no xattr ${name}`);
  }

  async listxattr(ino: Ino, credentials: Credentials): Promise<string[]> {
    this.inode(ino);
    return this.meta.listXattrs(ino).filter((name) => credentials.uid === 0 || !name.startsWith('trusted.'));
  }

  async removexattr(ino: Ino, name: string, credentials: Credentials): Promise<void> {
    this.writable();
    this.meta.mutate(() => {
      const inode = this.inode(ino);
      this.xattrAccess(inode, name, W_OK, credentials);
      if (!this.meta.removeXattr(ino, name)) fail('NO_XATTR', `no xattr ${name}`);
      this.touch(inode, { c: true });
      this.meta.updateInode(inode);
    });
  }

  // ---- the whole file system ----

  async statfs(): Promise<StatFs> {
    const blockSizeBytes = constants.blockSizeBytes;
    const files = this.meta.inodeCount();
    return {
      blockSizeBytes,
      blocks: this.store.capacityBytes / blockSizeBytes,
      blocksFree: this.store.freeBytes / blockSizeBytes,
      files,
      filesFree: Math.max(2 ** 32 - files, 0),
      nameBytesMax: constants.nameBytesMax,
    };
  }

  // ---- for the administrator (the admin API and metrics): as root, bounded, never a scan of the extents ----

  /** The inode at a path from the root ('/a/b'), without permission checks (the admin socket's group owns the appliance). */
  resolvePath(path: string): Attr {
    let ino = ROOT_INO;
    for (const name of path.split('/')) {
      if (name === '' || name === '.') continue;
      if (name === '..') fail('INVALID', `${path}: ".." is not allowed in a path (give the resolved path)`);
      ino = this.meta.lookup(ino, name) ?? fail('NOT_FOUND', `${path}: no such file in the file system`);
    }
    return this.toAttr(this.inode(ino));
  }

  /** Entries of a directory (not . and ..) with their attributes, at most `countMax`; `truncated` when there were more. */
  listDirectory(ino: Ino, countMax: number): { entries: { name: string; attr: Attr }[]; truncated: boolean } {
    this.dir(ino);
    const entries: { name: string; attr: Attr }[] = [];
    for (let cookie = 0; ; ) {
      const page = this.meta.listDirents(ino, cookie, constants.adminScanPageCountMax);
      for (const d of page) {
        if (entries.length >= countMax) return { entries, truncated: true };
        entries.push({ name: d.name, attr: this.toAttr(this.inode(d.ino)) });
      }
      if (page.length < constants.adminScanPageCountMax) return { entries, truncated: false };
      cookie = page[page.length - 1].cookie + 1;
    }
  }

  /**
   * The regular files at and under `roots` (directories walked only when
   * `recursive`, else refused), each once, at most `countMax` (refused
   * beyond: name smaller trees).  `what` names the command in messages.
   */
  filesUnder(roots: { ino: Ino; path: string }[], options: { recursive: boolean; countMax: number; what: string }): Ino[] {
    const { recursive, countMax, what } = options;
    const files = new Set<Ino>();
    const stack: Ino[] = [];
    const kindOf = (mode: number) => (isDir(mode) ? 'directory' : (mode & S_IFMT) === S_IFREG ? 'file' : 'other');
    for (const root of roots) {
      const kind = kindOf(this.inode(root.ino).mode);
      if (kind === 'file') files.add(root.ino);
      else if (kind === 'directory') {
        if (!recursive) fail('USAGE', `${what}: ${root.path} is a directory (add --recursive)`);
        stack.push(root.ino);
      } else fail('USAGE', `${what}: ${root.path} is not a regular file`);
    }
    while (stack.length > 0) {
      const dir = stack.pop()!;
      for (let cookie = 0; ; ) {
        const page = this.meta.listDirents(dir, cookie, constants.adminScanPageCountMax);
        for (const d of page) {
          const kind = kindOf(this.meta.getInode(d.ino)?.mode ?? 0);
          if (kind === 'file') files.add(d.ino);
          else if (kind === 'directory') stack.push(d.ino);
          if (files.size > countMax) fail('USAGE', `${what}: more than ${countMax} files; name smaller trees`);
        }
        if (page.length < constants.adminScanPageCountMax) break;
        cookie = page[page.length - 1].cookie + 1;
      }
    }
    return [...files];
  }

  /** Bytes of a file mapped to extents (without an object tier: what flash holds of it). */
  mappedBytes(ino: Ino): number {
    return this.meta.fileExtents(ino).reduce((sum, e) => sum + e.lengthBytes, 0);
  }

  /** Figures of the whole file system, all kept as it runs (no scan): status and metrics read these. */
  totals(): { inodeCount: number; residency: ResidencyTotals; flash: { capacityBytes: number; usedBytes: number }; counters: StoreCounters } {
    return {
      inodeCount: this.meta.inodeCount(),
      residency: this.meta.residencyTotals(),
      flash: { capacityBytes: this.store.capacityBytes, usedBytes: this.store.usedBytes },
      counters: { ...this.store.counters },
    };
  }

  /** Files whose newest data was only on a lost flash tier (reads of those ranges fail until rewritten). */
  lostFiles(countMax: number): { files: { path: string | null; ino: Ino; ranges: { fileOffsetBytes: number; lengthBytes: number }[]; writtenMs: number }[]; truncated: boolean } {
    const found = this.meta.lostFiles(0, countMax + 1);
    return {
      files: found.slice(0, countMax).map((f) => ({ path: pathOfInode(this.meta, f.ino) ?? null, ino: f.ino, ranges: f.ranges, writtenMs: f.writtenMs })),
      truncated: found.length > countMax,
    };
  }

  lostTotals(): { fileCount: number; bytes: number } {
    return this.meta.lostTotals();
  }

  /**
   * The generation of every node id handed to the kernel: the same across
   * restarts and reboots (an NFS client's file handle keeps working), raised
   * by each restore from the bucket, after which inode numbers issued past
   * the restored point may be issued again to other files.
   */
  readonly generation: number;

  /** The network shares (tierfs share), in name order. */
  shares(): ShareRecord[] {
    return this.meta.shares();
  }

  /** Add or replace a share (checked by the caller), durably. */
  async putShare(share: ShareRecord): Promise<void> {
    this.writable();
    this.meta.mutate(() => this.meta.putShare(share));
    await this.store.commit();
  }

  /** Remove a share durably; false if there was none of that name. */
  async deleteShare(name: string): Promise<boolean> {
    this.writable();
    const gone = this.meta.mutate(() => this.meta.deleteShare(name));
    await this.store.commit();
    return gone;
  }

  /** The file system's UUID (its superblock's). */
  get uuid(): string {
    return this.store.superblock.uuid;
  }

  /** fsck of the running file system against its flash tier and, with a tiering engine, its packs (see fsck.ts). */
  check(options: FsckOptions, tier: TieringEngine | undefined): Promise<FsckReport> {
    return checkFileSystem({ meta: this.meta, store: this.store, tier }, options);
  }

  /** Commit everything and stop the background timer; the caller closes store, meta and device. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timer?.stop();
    await Promise.all([...this.inodeLocks.values()]);
    await this.store.whenAllMapped();
    // The kernel forgets nothing at unmount: unlinked inodes it still knew are freed here.
    this.kernelRefs.clear();
    for (const ino of this.meta.orphanInodes()) if (!this.openCounts.has(ino)) this.meta.mutate(() => this.destroy(ino));
    await this.store.commit();
  }
}
