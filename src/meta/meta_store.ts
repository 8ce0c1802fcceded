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

export type PackId = string & { readonly __brand: 'PackId' };

/** Where an extent's stored copy lies in a pack. */
export interface PackRef {
  packId: PackId;
  /** Position of the entry in the pack's index (part of its nonce and authenticated data). */
  entryIndex: number;
  /** Byte range of the stored (possibly compressed, encrypted) entry in the pack object. */
  storedOffsetBytes: number;
  storedLengthBytes: number;
  /** How the entry is stored: bit flags of PACK_ENCODING. */
  encoding: number;
  /** Plain bytes of the entry before this extent's first byte (an overwrite may have cut its head off). */
  skipBytes: number;
}

/**
 * deflate: raw deflate; aes256gcm: sealed; zeroTail: the plain bytes' trailing
 * zeros are not stored (a small file's last block is mostly padding) and the
 * reader restores them.  Applied in the order zeroTail, deflate, aes256gcm.
 */
export const PACK_ENCODING = { deflate: 1, aes256gcm: 2, zeroTail: 4 } as const;

/** Extent rows of one inode to change at once (MetaStore.changeExtents). */
export interface ExtentChange {
  /** Offsets of the extents to delete. */
  deleted: number[];
  /** Extents kept where they are with a new length and checksums. */
  resized: Extent[];
  /** Extents to add (or to put over one at the same offset). */
  put: Extent[];
}

/**
 * A run of file bytes: on flash (contiguous blocks), in a pack, or both.
 * Residency follows from the two locations: FLASH (flash only), BOTH, OBJECT (pack only).
 */
export interface Extent {
  ino: Ino;
  /** Offset in the file, block aligned. */
  fileOffsetBytes: number;
  /** Bytes covered, a whole number of blocks, within one extent-size slot of the file. */
  lengthBytes: number;
  /** Offset of the first byte on the flash device, block aligned; null when evicted (OBJECT). */
  flashOffsetBytes: number | null;
  /** One CRC-32C per block of the plain bytes, 4 bytes each (little endian), in file order. */
  checksums: Buffer;
  /** The copy in a pack, if any. */
  pack: PackRef | null;
  /** Last access (write, or a read recorded by the heat tracker), ms since the epoch. */
  accessedMs: number;
  /** Decayed access count as of accessedMs. */
  heatCount: number;
}

export type Residency = 'FLASH' | 'BOTH' | 'OBJECT';

export function residencyOf(e: Extent): Residency {
  if (e.pack === null) return 'FLASH';
  return e.flashOffsetBytes === null ? 'OBJECT' : 'BOTH';
}

/** A pack's life: a row is written (and committed) before its upload starts, so a crash never orphans it. */
export type PackState = 'uploading' | 'live' | 'deleting';

export interface PackRecord {
  packId: PackId;
  state: PackState;
  /** Size of the object. */
  storedBytes: number;
  /** Plain bytes of all its entries. */
  logicalBytes: number;
  /** Plain bytes still referenced by extents (kept by triggers on the extents table). */
  liveBytes: number;
  createdMs: number;
  /** Per-pack nonce prefix of an encrypted pack, else null. */
  nonce: Buffer | null;
  /** The target the pack is in ("default": the one given to format). */
  target: string;
  /** For a pack marked `deleting`: the seq of the replicated change that marked it (its object may go once no retained restore point precedes it). */
  deadSeq: number | null;
}

export type PolicyMode = 'auto' | 'pin' | 'all' | 'never';

export interface PolicyRecord {
  name: string;
  /** Glob over paths in the file system, from its root ("/projects/**", "*.iso"). */
  pathGlob: string;
  mode: PolicyMode;
  /** auto: an extent untouched this long is destaged. */
  coolAfterMs: number;
  /** Files smaller than this are not tiered. */
  sizeBytesMin: number;
  /** Name of the object target: "default" (the one given to format) or one added by tierfs target add. */
  target: string;
  /** Compress entries of this policy's files in packs. */
  compress: boolean;
  /** What fsync of this policy's files waits for: the flash tier (default), or the bytes in a pack in the bucket and the metadata in its replicated log. */
  durable: 'flash' | 'object';
}

/** A network share of a directory of the file system (tierfs share): NFS, SMB or both. */
export interface ShareRecord {
  name: string;
  /** The directory, from the file system's root ("/projects"; "/" for all of it). */
  path: string;
  readOnly: boolean;
  /** Exported over NFS to these clients (CIDRs), or not. */
  nfs: { clients: string[]; rootSquash: boolean } | null;
  /** Shared over SMB 3 to these Samba users (empty: every Samba user), or not. */
  smb: { users: string[] } | null;
  /** A world-wide client range (0.0.0.0/0, ::/0) may write: asked for by name (--allow-world). */
  allowWorld: boolean;
  createdMs: number;
}

export interface ResidencyTotals {
  flashOnlyBytes: number;
  bothBytes: number;
  objectOnlyBytes: number;
}

export interface PackTotals {
  count: number;
  storedBytes: number;
  logicalBytes: number;
  liveBytes: number;
  garbageBytes: number;
}

export interface HeatUpdate {
  ino: Ino;
  fileOffsetBytes: number;
  accessedMs: number;
  heatCount: number;
}

/** Committed changes of the replicated log as the lines of a log object (sqlite_replica.ts), each newline-terminated. */
export interface ReplicaLogText {
  text: Buffer;
  /** The seq of the last change in it (afterSeq when there is none). */
  lastSeq: number;
  bytes: number;
  /** Its lines: one per row changed. */
  lineCount: number;
}

/** File bytes whose only copy was on a flash tier that was lost: reads of them fail until they are rewritten. */
export interface LostRange {
  fileOffsetBytes: number;
  lengthBytes: number;
  /** When that data was last written (ms since the epoch), as far as the metadata knew. */
  writtenMs: number;
}

export interface LostFile {
  ino: Ino;
  ranges: { fileOffsetBytes: number; lengthBytes: number }[];
  writtenMs: number;
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
  /** The oldest entry naming `ino`. */
  firstLink(ino: Ino): { parent: Ino; name: string } | undefined;

  /** Extents of `ino` overlapping [startBytes, endBytes), by file offset. */
  extentsInRange(ino: Ino, startBytes: number, endBytes: number): Extent[];
  /** How many extents of `ino` start in [startBytes, endBytes) (from the index alone). */
  extentCountFrom(ino: Ino, startBytes: number, endBytes: number): number;
  putExtent(extent: Extent): void;
  deleteExtent(ino: Ino, fileOffsetBytes: number): void;
  /** The same extent, its length and checksums changed (a head kept, or a piece appended): one row updated, its indexes untouched. */
  resizeExtent(ino: Ino, fileOffsetBytes: number, lengthBytes: number, checksums: Buffer): void;
  /**
   * The extents of `ino` that overlap one of `ranges` ([start, end) each),
   * by file offset, each once: what a slice of a write-out's pieces cut or
   * extend, read in one statement (each range starts a byte before its
   * piece, so the extent ending there comes too).
   */
  extentsAround(ino: Ino, ranges: readonly (readonly [number, number])[]): Extent[];
  /**
   * Many extent changes of one inode at once, as deleteExtent, resizeExtent
   * and putExtent would make them one by one (in that order): a statement
   * for each kind, however many rows.
   */
  changeExtents(ino: Ino, change: ExtentChange): void;
  /** Every extent with blocks on flash, in flash order (start-up and fsck). */
  allExtents(): Iterable<Extent>;
  /** Every extent, wherever it lies, by (inode, offset) (reports, the simulator, fsck). */
  everyExtent(): Iterable<Extent>;
  /**
   * Coldest extents first: FLASH-only ('flash') or BOTH ('both') ones accessed
   * before `accessedBeforeMs`, after `after` (the last of the previous page) in
   * (access time, inode, offset) order.
   */
  coldExtents(kind: 'flash' | 'both', accessedBeforeMs: number, countMax: number, after?: Extent): Extent[];
  /** Extents of one file with a given residency, by offset. */
  fileExtents(ino: Ino): Extent[];
  /** Extents whose copy is in `packId`. */
  extentsOfPack(packId: PackId): Extent[];
  /** Record reads (heat) in a batch; extents gone since are skipped. */
  updateHeat(updates: HeatUpdate[]): void;
  /** Bytes by residency, kept up to date by every extent change (no scan). */
  residencyTotals(): ResidencyTotals;
  /** The same, counted by a scan of every extent (fsck and tests check the kept figures against it). */
  residencyTotalsScanned(): ResidencyTotals;

  putPack(pack: PackRecord): void;
  getPack(packId: PackId): PackRecord | undefined;
  setPackState(packId: PackId, state: PackState): void;
  /** Mark a pack `deleting` and record the seq of that change (deadSeq). */
  markPackDead(packId: PackId): void;
  deletePack(packId: PackId): void;
  packsInState(state: PackState): PackRecord[];
  /** Live packs with at most `liveFractionMax` of their bytes still referenced, emptiest first. */
  sparsePacks(liveFractionMax: number, countMax: number): PackRecord[];
  packTotals(): PackTotals;

  policies(): PolicyRecord[];
  /** Targets added after format (tierfs target add); "default" is the setting "target". */
  targets(): { name: string; url: string }[];
  putTarget(name: string, url: string, nowMs: number): void;
  deleteTarget(name: string): boolean;
  /** Packs in one target, in any state. */
  packsOfTarget(name: string): { count: number; storedBytes: number };
  /** A pin set on one file by an administrator: it overrides every policy. */
  isPinned(ino: Ino): boolean;
  /** Returns whether anything changed. */
  setPinned(ino: Ino, pinned: boolean, nowMs: number): boolean;
  pinnedCount(): number;
  putPolicy(policy: PolicyRecord): void;
  deletePolicy(name: string): boolean;
  shares(): ShareRecord[];
  putShare(share: ShareRecord): void;
  deleteShare(name: string): boolean;

  getXattr(ino: Ino, name: string): Buffer | undefined;
  setXattr(ino: Ino, name: string, value: Buffer): void;
  removeXattr(ino: Ino, name: string): boolean;
  listXattrs(ino: Ino): string[];
  deleteXattrs(ino: Ino): void;

  getSymlink(ino: Ino): string | undefined;
  setSymlink(ino: Ino, target: string): void;

  /**
   * Replication: log every committed change (on) or nothing (off).  Returns
   * whether the log was already on, i.e. continuous since it was last turned on.
   */
  setReplicated(on: boolean): boolean;
  /** Called after each commit with the seq of the last change it made durable. */
  afterCommit: ((replicaSeq: number) => void) | undefined;
  /** The seq of the newest change logged (committed or not). */
  replicaSeq(): number;
  /**
   * The text of a log object for every change committed after afterSeq: the
   * state at its last change of each row changed (read off the event loop).
   */
  replicaLogText(afterSeq: number): Promise<ReplicaLogText>;
  /** Forget logged changes up to a seq (they are in the bucket). */
  pruneReplicaLog(throughSeq: number): void;
  /** Copy the last committed state into `file` (online, off the event loop); returns the seq it includes. */
  snapshotInto(file: string): Promise<number>;
  /** Apply the lines of log objects, each "table TAB put|del TAB json" (restore). */
  replay(lines: string[]): void;
  /**
   * After a follower applied a log object (src/tier/follower.ts): the
   * extents at these keys keep no flash copy here (the writer's flash is not
   * ours), and one only on the writer's flash is kept out and marked lost
   * ("not in the bucket yet") until the log brings its pack.
   */
  adoptFollowedExtents(keys: [number, number][]): void;
  /** Empty the log and continue its seqs after `seq` (restore). */
  restartReplicaLog(seq: number): void;
  /**
   * Restore's bulk load, on a database nothing else uses yet: on sets aside
   * the secondary indexes and the triggers that keep figures (pack live
   * bytes, residency totals), so that each row applied updates one b-tree;
   * off makes them again from the rows (one sort per index) and counts the
   * figures afresh.  Within one transaction (restore commits at its end).
   */
  bulkLoad(on: boolean): void;
  /** Drop the flash blocks of every extent that has a copy in a pack, in one statement (a flash tier that is gone). */
  dropFlashCopies(): void;

  addLost(ino: Ino, fileOffsetBytes: number, lengthBytes: number, writtenMs: number): void;
  /** Lost ranges of `ino` overlapping [startBytes, endBytes). */
  lostIn(ino: Ino, startBytes: number, endBytes: number): LostRange[];
  /** [startBytes, endBytes) of `ino` was rewritten or cut: it is no longer lost. */
  clearLost(ino: Ino, startBytes: number, endBytes: number): void;
  /** Files with lost ranges, by inode, after `afterIno`. */
  lostFiles(afterIno: number, countMax: number): LostFile[];
  lostTotals(): { fileCount: number; bytes: number };

  close(): void;
  /** Close without committing, as a crash would: everything since the last commit is gone. */
  crash(): void;
}

/** The path of an inode from the root (its first link), or undefined when it has no name left. */
export function pathOfInode(meta: MetaStore, ino: Ino): string | undefined {
  const names: string[] = [];
  let at = ino;
  for (let depth = 0; at !== ROOT_INO; depth++) {
    if (depth > 4096) return undefined;
    const link = meta.firstLink(at);
    if (!link) return undefined;
    names.push(link.name);
    at = link.parent;
  }
  return `/${names.reverse().join('/')}`;
}

export { SqliteMetaStore, schemaVersion } from './sqlite_meta_store';
