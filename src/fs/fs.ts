/**
 * The POSIX file system as its clients (FUSE, tests, benchmarks, later NFS
 * or S3 front ends) see it: inode-based operations, each taking the caller's
 * credentials, each failing with a TierfsError whose code maps to one errno.
 */
import type { Ino, Inode, TimeNs } from '../meta/meta_store';

export type { Ino, TimeNs } from '../meta/meta_store';
export { ROOT_INO } from '../meta/meta_store';

export interface Credentials {
  uid: number;
  gid: number;
  /** Supplementary groups. */
  groups: readonly number[];
}

export const ROOT_CREDENTIALS: Credentials = { uid: 0, gid: 0, groups: [] };

/** What stat shows: the inode plus its allocation. */
export interface Attr extends Inode {
  /** st_blocks: 512-byte units allocated. */
  blocks: number;
}

/** A time to set: nanoseconds since the epoch, or the clock's now (UTIME_NOW). */
export type TimeSpec = TimeNs | 'now';

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  sizeBytes?: number;
  atime?: TimeSpec;
  mtime?: TimeSpec;
}

export interface DirEntry {
  name: string;
  ino: Ino;
  mode: number;
  /** Pass as `offset` to continue after this entry. */
  nextOffset: number;
}

export interface StatFs {
  blockSizeBytes: number;
  blocks: number;
  blocksFree: number;
  files: number;
  filesFree: number;
  nameBytesMax: number;
}

/** Flags of rename(2)'s renameat2 form. */
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
/** Flags of setxattr(2). */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export { FileSystem, type FileSystemOptions } from './file_system';
export { formatFileSystem, formatFlashPath, openFileSystem, type FlashLoss, type FormatOptions, type OpenFileSystem, type OpenTierOptions } from './format';
export { listFileSystems, restoreFileSystem, type FileSystemInTarget, type RestoreRequest, type RestoreResult } from './restore';
