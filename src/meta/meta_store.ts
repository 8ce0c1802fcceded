/**
 * The metadata store as the layers above see it: inodes, directory entries,
 * extents, xattrs and symlink targets, plus settings such as the file-system
 * UUID.
 *
 * Changes are visible at once to later calls but durable only after commit():
 * the store keeps one open transaction, every mutate() runs inside it as a
 * savepoint (all or nothing), and commit() makes everything since the last
 * commit durable in one disk flush.  That is what lets many small operations
 * and many fsync callers share one flush (group commit), and it is why a crash
 * leaves the namespace exactly as of the last commit: never half an operation.
 */
export type Ino = number & { readonly __brand: 'Ino' };
export const ROOT_INO = 1 as Ino;

/** Nanoseconds since the epoch. */
export type TimeNs = bigint;

export interface Inode {
  ino: Ino;
  /** File type and permission bits, as st_mode. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  sizeBytes: number;
  rdev: number;
  atimeNs: TimeNs;
  mtimeNs: TimeNs;
  ctimeNs: TimeNs;
  btimeNs: TimeNs;
}

export type NewInode = Omit<Inode, 'ino'>;

export interface Dirent {
  name: string;
  ino: Ino;
  /** Stable position of the entry in its directory; readdir resumes after it. */
  cookie: number;
}

/** A run of file bytes stored contiguously on flash. */
export interface Extent {
  ino: Ino;
  /** Offset in the file, block aligned. */
  fileOffsetBytes: number;
  /** Bytes covered, a whole number of blocks, within one extent-size slot of the file. */
  lengthBytes: number;
  /** Offset of the first byte on the flash device, block aligned. */
  flashOffsetBytes: number;
  /** One CRC-32C per block, 4 bytes each (little endian), in file order. */
  checksums: Buffer;
}

export interface MetaStore {
  readonly path: string;
  setting(key: string): string | undefined;
  setSetting(key: string, value: string): void;

  /** Run `fn` as one all-or-nothing change inside the open transaction. */
  mutate<T>(fn: () => T): T;
  /** Make every change so far durable. */
  commit(): void;
  /** Changes since the last commit (a hint for when to commit). */
  readonly pendingCount: number;

  getInode(ino: Ino): Inode | undefined;
  createInode(inode: NewInode): Ino;
  updateInode(inode: Inode): void;
  deleteInode(ino: Ino): void;
  /** Inodes with no names left (unlinked while open at a crash). */
  orphanInodes(): Ino[];
  inodeCount(): number;

  lookup(parent: Ino, name: string): Ino | undefined;
  addDirent(parent: Ino, name: string, ino: Ino): void;
  removeDirent(parent: Ino, name: string): void;
  /** Entries of `parent` with cookie >= `fromCookie`, in cookie order. */
  listDirents(parent: Ino, fromCookie: number, countMax: number): Dirent[];
  hasDirents(parent: Ino): boolean;
  /** The directory holding an entry for `ino` (a directory has exactly one). */
  parentOf(ino: Ino): Ino | undefined;

  /** Extents of `ino` overlapping [startBytes, endBytes), by file offset. */
  extentsInRange(ino: Ino, startBytes: number, endBytes: number): Extent[];
  putExtent(extent: Extent): void;
  deleteExtent(ino: Ino, fileOffsetBytes: number): void;
  /** Every extent of the file system, in flash order (start-up and fsck). */
  allExtents(): Iterable<Extent>;

  getXattr(ino: Ino, name: string): Buffer | undefined;
  setXattr(ino: Ino, name: string, value: Buffer): void;
  removeXattr(ino: Ino, name: string): boolean;
  listXattrs(ino: Ino): string[];
  deleteXattrs(ino: Ino): void;

  getSymlink(ino: Ino): string | undefined;
  setSymlink(ino: Ino, target: string): void;

  close(): void;
  /** Close without committing, as a crash would: everything since the last commit is gone. */
  crash(): void;
}

export { SqliteMetaStore } from './sqlite_meta_store';
