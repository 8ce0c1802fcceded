/**
 * The libfuse 3 low-level binding (src/fuse/native/fuse.c): its functions,
 * the numbers of its operations and the layout of the arrays it shares with
 * JavaScript.  src/fuse/fuse.ts is its only user.
 */
import { loadAddon } from '../native';

/** Operations as fuse.c numbers them (enum op). */
export const Op = {
  INIT: 1, ENDED: 2, INTERRUPT: 3, LOOKUP: 4, FORGET: 5, GETATTR: 6, SETATTR: 7, READLINK: 8,
  MKNOD: 9, MKDIR: 10, UNLINK: 11, RMDIR: 12, SYMLINK: 13, RENAME: 14, LINK: 15, OPEN: 16, READ: 17,
  WRITE: 18, FLUSH: 19, RELEASE: 20, FSYNC: 21, OPENDIR: 22, READDIR: 23, READDIRPLUS: 24, RELEASEDIR: 25,
  FSYNCDIR: 26, STATFS: 27, SETXATTR: 28, GETXATTR: 29, LISTXATTR: 30, REMOVEXATTR: 31, ACCESS: 32,
  CREATE: 33, FALLOCATE: 34,
} as const;

export const opNames: Record<number, string> = Object.fromEntries(Object.entries(Op).map(([name, n]) => [n, name.toLowerCase()]));

/** Slots of an attribute array (enum attr_field). */
export const A = {
  INO: 0, MODE: 1, NLINK: 2, UID: 3, GID: 4, RDEV: 5, SIZE: 6, BLOCKS: 7, ATIME_S: 8, ATIME_NS: 9,
  MTIME_S: 10, MTIME_NS: 11, CTIME_S: 12, CTIME_NS: 13, BLKSIZE: 14, GENERATION: 15, COUNT: 16,
} as const;

/** setattr's to_set bits (fuse_lowlevel.h). */
export const SetAttrBit = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8,
} as const;

/**
 * One request as the loop thread queued it.  `req` identifies it until its
 * one reply; the meaning of ino, fh and a–d depends on the op (fuse.c).
 */
export type Dispatch = (
  op: number, req: number, ino: number, fh: number, a: number, b: number, c: number, d: number,
  name: string | undefined, name2: string | undefined, data: Buffer | Float64Array | undefined,
  uid: number, gid: number, pid: number, umask: number, groups: number[] | undefined,
) => void;

export interface SessionConfig {
  maxWrite: number;
  /** After a request, keep polling /dev/fuse this long without sleeping (0: never). */
  busyPollUs: number;
  /** 1: ask the kernel for its writeback cache (FUSE_CAP_WRITEBACK_CACHE). */
  writebackCache: number;
}

declare const sessionBrand: unique symbol;
export type Session = { readonly [sessionBrand]: true };

export interface FuseNative {
  libfuseVersion: number;
  mount(mountPoint: string, args: string[], config: SessionConfig, dispatch: Dispatch): Session;
  /** Lazy detach (needs root); returns an errno, 0 on success. */
  unmount(session: Session): number;
  destroy(session: Session): void;
  replyErr(req: number, errno: number): number;
  replyEntry(req: number, attr: Float64Array, entryTimeoutS: number, attrTimeoutS: number): number;
  replyCreate(req: number, attr: Float64Array, entryTimeoutS: number, attrTimeoutS: number, fh: number, bits: number): number;
  replyAttr(req: number, attr: Float64Array, attrTimeoutS: number): number;
  replyOpen(req: number, fh: number, bits: number): number;
  replyWrite(req: number, count: number): number;
  replyBuf(req: number, data: Buffer | undefined): number;
  replyReadlink(req: number, target: string): number;
  replyXattrSize(req: number, size: number): number;
  replyStatfs(req: number, values: Float64Array): number;
  /** Returns how many entries fit (each but "." and ".." a lookup reference when plus), or -errno. */
  replyDirents(req: number, plus: boolean, sizeBytes: number, names: string[], meta: Float64Array, entryTimeoutS: number, attrTimeoutS: number): number;
}

export const fuseNative: FuseNative = loadAddon<FuseNative>('fuse', 'tierfs_fuse');
