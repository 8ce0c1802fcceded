/**
 * Every limit and default of tierfs, in one place, checked against each other
 * when the module loads (a bad combination is a programmer error).
 */
import assert from 'node:assert/strict';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const constants = {
  /** Allocation and checksum unit on flash; also the O_DIRECT alignment. */
  blockSizeBytes: 4 * KiB,
  /** An extent never spans a multiple of this in the file, nor exceeds it. */
  extentSizeBytesMax: 1 * MiB,
  /** Bytes reserved at the start of the flash tier for the superblock. */
  superblockSizeBytes: 4 * KiB,
  /** A flash tier is blank (may be adopted by the metadata that lost it) when this much at each end reads as zeros. */
  blankProbeBytes: 1 * MiB,
  /** ...and this many of the extents the metadata maps on flash read as zeros at their first block (a sample). */
  blankProbeExtentCount: 1024,
  /** Smallest flash tier `format` accepts. */
  flashSizeBytesMin: 16 * MiB,
  /** Default size of a file-backed flash tier created by `format`. */
  flashSizeBytesDefault: 4 * GiB,

  /** Longest name of one directory entry (bytes, as POSIX NAME_MAX). */
  nameBytesMax: 255,
  /** Longest symlink target (bytes, as PATH_MAX). */
  symlinkBytesMax: 4095,
  /** Longest extended attribute name and value (as Linux XATTR_NAME_MAX / SIZE_MAX). */
  xattrNameBytesMax: 255,
  xattrValueBytesMax: 64 * KiB,
  /** Largest file (bytes): 2^53 keeps every offset an exact JS number. */
  fileSizeBytesMax: 2 ** 50,
  /** Hard links to one inode (as ext4's EXT4_LINK_MAX). */
  linkCountMax: 65000,

  /** Inodes and directory entries cached in memory in front of SQLite (bytes, estimated per entry). */
  metaCacheBytesMax: 32 * MiB,
  /** Extents kept in front of SQLite for reads inside one extent (each holds up to 1 KiB of checksums: about 10 MiB at most). */
  metaExtentCacheCountMax: 8192,
  /** Metadata is committed at least this often without an fsync (ext4 commits every 5 s). */
  commitIntervalMs: 1000,
  /** A commit also starts once this many metadata changes wait. */
  commitPendingCountMax: 20000,

  /** Largest single read or write the fs layer takes in one call. */
  ioSizeBytesMax: 16 * MiB,
  /** A sequential reader gets windows of this much read ahead (or of its read size, if larger). */
  readaheadWindowBytes: 1 * MiB,
  /** Windows read ahead per handle, at most. */
  readaheadWindowCountMax: 2,
  /** All handles together hold at most this much read ahead. */
  readaheadBytesMax: 64 * MiB,
  /**
   * Without io_uring, a flash read up to this size, with no other flash read
   * in flight, is a synchronous pread: at queue depth 1 the thread-pool round
   * trip costs more than the read.  Under concurrency reads stay
   * asynchronous.  (io_uring has no round trip to save: measured at depth 1
   * it matches pread, and a read that does not block the loop lets the next
   * request reach the disk beside it.)
   */
  syncReadBytesMax: 64 * KiB,
  /**
   * Write-behind: bytes of writes acknowledged to the caller but not yet on
   * flash and mapped.  Beyond it, writers wait.  (fsync waits for all.)
   */
  writeBehindBytesMax: 16 * MiB,
  /**
   * Writes smaller than this are coalesced: held per file in memory as
   * blocks, then written and mapped together (one allocation, one metadata
   * mutation for many requests).  Larger writes go straight to flash.
   */
  coalesceWriteBytesMax: 128 * KiB,
  /** Bytes of coalesced small writes held in memory, all files together; beyond it they are written out. */
  dirtyBytesMax: 8 * MiB,
  /**
   * A MiB of a file whose coalesced writes would leave it in more extents
   * than this has its flash-only blocks rewritten with them as one piece
   * (random small rewrites must not fragment a file without bound).
   */
  extentsPerSlotMax: 64,
  /** A write-out maps this many pieces per metadata mutation, letting requests run between them. */
  mappingSlicePieces: 64,
  /** release of many files: files per metadata mutation and commit. */
  releaseBatchFileCount: 256,
  /** Slots rewritten that way by one write-out, at most (bounds its reads and memory). */
  slotRewritesPerFlushMax: 8,
  /**
   * Opening a flash tier another open file holds (a daemon still running, or
   * the last in-flight writes of one that was killed) waits this long for it,
   * then is refused.
   */
  flashLockWaitMs: 10_000,
  /** How often a follower asks the bucket for the writer's next log object (serve's followInterval). */
  followIntervalMsDefault: 2_000,
  /** A follower publishes its position at most this often while it applies, and at least this often while idle. */
  followerPublishIntervalMs: 10_000,
  followerHeartbeatMs: 60_000,
  /** A follower that has not published for this long shows as stale in tierfs followers. */
  followerStaleMs: 5 * 60_000,
  /** The writer lease's TTL (serve's leaseTtl): renewed every third of it. */
  leaseTtlMsDefault: 30_000,
  /** A conditional put on the directory target waits this long for the lock another process holds. */
  conditionalPutLockWaitMs: 5_000,
  /** Bytes of aligned staging buffers kept for reuse by the flash store. */
  stagingPoolBytesMax: 32 * MiB,

  /** FUSE: largest read and write request asked of the kernel (its max_pages ceiling is 256 pages). */
  fuseRequestBytesMax: 1 * MiB,
  /** FUSE: write payloads from this size on are copied into pooled buffers (smaller ones into slab memory). */
  fusePooledWriteBytesMin: 64 * KiB,
  /** FUSE: pooled write and read buffers kept for reuse, of each kind (each fuseRequestBytesMax). */
  fuseWriteBufferCountMax: 16,
  /** FUSE: the kernel's readahead on the mount (sequential readers keep this much in flight). */
  fuseReadaheadBytes: 4 * MiB,
  /** FUSE: how long the kernel may cache names and attributes (tierfs is their only writer). */
  fuseAttrTimeoutS: 1,
  /**
   * FUSE: after a request that came within 2 ms of the one before, the event
   * loop keeps polling /dev/fuse this long instead of sleeping: a wake-up
   * from epoll costs more than a request here.
   */
  fuseBusyPollUs: 200,
  /** FUSE: at unmount, how long to wait for the kernel to let go, then for requests in flight. */
  fuseUnmountWaitMs: 10_000,

  // ---- the object tier ----
  /** Packs: the engine fills one up to the target; it uploads a smaller one only when told to or when nothing colder waits. */
  packSizeBytesMin: 16 * MiB,
  packSizeBytesTarget: 32 * MiB,
  packSizeBytesMax: 64 * MiB,
  /** Bodies above this go up as multipart (S3) or block (Azure) uploads, in parts of this size. */
  uploadPartSizeBytes: 8 * MiB,
  uploadPartConcurrency: 4,
  /** Azure: bodies up to this size go up in one Put Blob (the SDK's uploadData default); larger ones in staged blocks. */
  azureSingleShotBytesMax: 256 * MiB,
  /**
   * Packs uploading at once in a destage by default (each with its parts in
   * parallel); one more is read and built meanwhile.  Serve config
   * uploadConcurrency changes it: single-threaded emulators (azurite) take
   * one at a time best, real clouds more.
   */
  uploadCountMaxDefault: 2,
  /** The most packs uploading at once that uploadConcurrency may ask for. */
  uploadCountMaxLimit: 16,
  /** A partial pack of cold data goes up once its oldest extent has waited this long (serve's packWait). */
  packWaitMsDefault: 60_000,
  /** A background destage pauses this long before its first pack, so a busy file system gets its pause first. */
  destagePauseMs: 50,
  /** A destage yielding to foreground I/O pauses this many times as long as it worked, at most destageYieldMsMax. */
  destageYieldFactor: 4,
  destageYieldMsMax: 2_000,
  /** A failed background pass is tried again after 2 s, 4 s, ... at most this long. */
  tierBackoffMsMax: 60_000,

  /** Every committed metadata change is in the bucket within this (serve's metadataRpo). */
  metadataRpoMsDefault: 10_000,
  /** Restore points are kept this long (serve's metadataRetention). */
  metadataRetentionMsDefault: 7 * 86_400_000,
  /** A new metadata snapshot once the log since the last one holds this much... */
  snapshotLogBytesDefault: 64 * MiB,
  /** ...and at least daily while anything changes. */
  snapshotIntervalMsDefault: 86_400_000,
  /** How often restore points past retention are looked for (one LIST of the meta prefix). */
  metadataPruneIntervalMs: 3_600_000,
  /** Keys a target's full listing may go through to find file systems, when its delimited listing shows none. */
  fileSystemScanKeyCountMax: 100_000,
  /** Changes pending beyond this many go to the bucket as a snapshot rather than a log object (whose text is built in memory). */
  metadataLogChangesMax: 2_000_000,
  /** The destage queue shown by status is counted again by a background pass at most this often. */
  destageQueueRefreshMs: 10_000,
  /** Retries: one object operation gives up after this long; each attempt after attemptTimeoutMs. */
  objectDeadlineMs: 60_000,
  /** format --target gives up on a target that does not take a probe object within this. */
  targetProbeDeadlineMs: 5_000,
  objectAttemptTimeoutMs: 30_000,
  retryBaseDelayMs: 50,
  retryDelayMsMax: 5_000,
  /** A read of data only in the object tier answers EIO after this long (degraded mode). */
  recallTimeoutMsDefault: 30_000,
  /** Watermarks of flash use, in percent of capacity. */
  watermarkHighPercentDefault: 90,
  watermarkLowPercentDefault: 80,
  /** The default policy (no policy matches a path): auto, tier after this long untouched. */
  coolAfterMsDefault: 60 * 60 * 1000,
  /** Decay of the heat count: it halves in this time without access. */
  heatHalfLifeMs: 60 * 60 * 1000,
  /** Reads of one extent this close together are one access (a reader's pass in 128 KiB requests). */
  accessBurstMs: 1000,
  /** Heat of reads is kept in memory and written in one batch this often, or when this many extents wait. */
  heatFlushIntervalMs: 10_000,
  heatPendingCountMax: 100_000,
  /** The tiering engine looks for work this often. */
  tierScanIntervalMs: 1_000,
  /** Extents looked at per scan page, and pages per pass. */
  tierScanCountMax: 4096,
  tierScanPageCountMax: 16,
  /** Recalled plain bytes kept in memory (prefetched, shared, recently read); at least the prefetch budget and some. */
  recallCacheBytesMax: 160 * MiB,
  /**
   * The recall pipeline (recall.ts): a sequential reader of cold data gets a
   * window fetched ahead, starting at recallWindowBytesMin and doubling while
   * the reader keeps waiting for it (or until requests reach their full size),
   * up to recallWindowBytesMax; requests are half the window, at most
   * recallRequestBytesMax each (one ranged GET where the pack allows).  All
   * readers share recallPrefetchBytesMax of bytes fetched ahead and not yet
   * read, in equal shares among the readers active in the last
   * recallStreamIdleMs.
   */
  recallWindowBytesMin: 2 * MiB,
  recallWindowBytesMax: 64 * MiB,
  recallRequestBytesMax: 8 * MiB,
  recallPrefetchBytesMax: 128 * MiB,
  /**
   * Recall GETs of at least extentSizeBytesMax land in reused receive slabs
   * of recallRequestBytesMax (receive_buffers.ts).  At most
   * recallSlabCountMax exist: enough for a full cache and a full prefetch
   * budget in flight, the most recalled bytes the daemon held before slabs.
   * Free ones are kept for the next GETs, at most recallSlabFreeCountMax,
   * and let go after recallSlabIdleMs unused.
   */
  recallSlabCountMax: 40,
  recallSlabFreeCountMax: 16,
  recallSlabIdleMs: 5_000,
  recallStreamIdleMs: 2_000,
  /** Write-backs after a recall fetch at most this many (whole entries) at a time, and only while no reader waits for a GET. */
  recallBackgroundGetCountMax: 1,
  /** Reads of one file at most this far from where the last one ended still count as sequential (the kernel and readahead reorder neighbours). */
  sequentialSlackBytes: 128 * KiB,
  /**
   * Write-backs of recalled extents to flash running at once; more recalls
   * are served without one.  A write-back waits for a metadata commit in
   * progress (its fsync), so it is latency- not bandwidth-bound: with 8, a
   * 1 GiB scan at 250 MiB/s wrote back 55-60 % of itself here, with 32,
   * 97-99 %.  Each holds a staging buffer (an extent at most).
   */
  writeBackCountMax: 32,
  /** Background work waits at most this long for readers waiting on the object tier before it goes ahead. */
  readerQuietWaitMsMax: 500,
  /** Files whose recent read positions and readahead frontiers are remembered; packs whose nonce and target are cached. */
  recallFileCountMax: 4096,
  packInfoCountMax: 4096,
  /** Packs looked at per GC pass: dead ones deleted, sparse ones considered for repacking. */
  gcPackCountMax: 1000,
  repackPackCountMax: 64,
  /**
   * Files at least this large read sequentially are written back to flash
   * only into room below the low watermark (a scan never makes eviction run);
   * other recalls are written back below the high one.
   */
  sequentialScanBytesMin: 64 * MiB,
  /** Packs with at most this fraction of their bytes live are repacked. */
  repackLiveFractionMax: 0.5,
  /** A writer waits at most this long for the engine to free flash before ENOSPC. */
  spaceWaitMsMax: 120_000,
  /** Admin API: request bodies, paths per request, files one request may walk (a recursive pin), entries of a listing, problems fsck lists. */
  adminBodyBytesMax: 64 * KiB,
  adminPathCountMax: 1000,
  adminFileCountMax: 1_000_000,
  adminListingCountMax: 10_000,
  /** Directory entries read per page when the admin API walks or lists a tree. */
  adminScanPageCountMax: 1024,
  fsckProblemCountMax: 1000,
  /** Policies one file system may hold, and that policy simulate may be given. */
  policyCountMax: 1000,
  /** Whole-file-system reports (heat, simulate) let the file system serve after this many extents. */
  reportYieldCountMax: 1024,
  /** systemd STATUS= figures are refreshed this often. */
  notifyStatusIntervalMs: 10_000,
  /** Progress lines of a long admin job at most this often. */
  adminProgressIntervalMs: 100,
} as const;

export const units = { KiB, MiB, GiB } as const;

assert.equal(constants.extentSizeBytesMax % constants.blockSizeBytes, 0);
assert.equal(constants.superblockSizeBytes % constants.blockSizeBytes, 0);
assert.ok(constants.flashSizeBytesMin >= constants.superblockSizeBytes + constants.extentSizeBytesMax);
assert.ok(constants.flashSizeBytesDefault >= constants.flashSizeBytesMin);
assert.ok(constants.ioSizeBytesMax >= constants.extentSizeBytesMax);
assert.ok(constants.stagingPoolBytesMax >= 2 * constants.extentSizeBytesMax);
assert.ok(constants.dirtyBytesMax <= constants.writeBehindBytesMax && constants.coalesceWriteBytesMax <= constants.dirtyBytesMax);
assert.ok(constants.writeBehindBytesMax >= constants.extentSizeBytesMax && constants.writeBehindBytesMax <= constants.stagingPoolBytesMax);
assert.ok(constants.fileSizeBytesMax <= Number.MAX_SAFE_INTEGER);
assert.ok(constants.fuseRequestBytesMax <= constants.ioSizeBytesMax);
assert.ok(constants.readaheadBytesMax >= constants.readaheadWindowCountMax * constants.ioSizeBytesMax);
assert.equal(constants.readaheadWindowBytes % constants.blockSizeBytes, 0);
assert.ok(constants.syncReadBytesMax <= constants.extentSizeBytesMax && constants.syncReadBytesMax % constants.blockSizeBytes === 0);
assert.ok(constants.packSizeBytesMin <= constants.packSizeBytesTarget && constants.packSizeBytesTarget <= constants.packSizeBytesMax);
assert.ok(constants.packSizeBytesMin >= 16 * MiB && constants.packSizeBytesMax <= 64 * MiB);
assert.ok(constants.uploadPartSizeBytes >= 5 * MiB); // S3's smallest multipart part
assert.ok(constants.objectAttemptTimeoutMs <= constants.objectDeadlineMs);
assert.ok(constants.watermarkLowPercentDefault < constants.watermarkHighPercentDefault && constants.watermarkHighPercentDefault < 100);
assert.ok(constants.recallCacheBytesMax >= constants.recallPrefetchBytesMax + 2 * constants.recallRequestBytesMax);
assert.ok(constants.recallPrefetchBytesMax >= constants.recallWindowBytesMax);
assert.ok(constants.recallSlabCountMax * constants.recallRequestBytesMax >= constants.recallCacheBytesMax + constants.recallPrefetchBytesMax);
assert.ok(constants.recallWindowBytesMin >= 2 * constants.extentSizeBytesMax && constants.recallWindowBytesMin <= constants.recallWindowBytesMax);
assert.ok(constants.recallRequestBytesMax >= constants.extentSizeBytesMax);
assert.ok(constants.uploadCountMaxDefault >= 1 && constants.uploadCountMaxDefault <= constants.uploadCountMaxLimit);
assert.ok(constants.destageYieldMsMax < constants.tierBackoffMsMax);
assert.ok(constants.sequentialSlackBytes < constants.recallWindowBytesMin);
