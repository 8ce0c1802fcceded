/**
 * MetaStore on SQLite (better-sqlite3) in WAL mode.  One idea in one file:
 * the schema, its migrations and every statement against it.
 *
 * One connection, owned by tierfsd alone.  A transaction is always open;
 * mutate() nests a savepoint in it and commit() ends it with one WAL fsync
 * (synchronous=FULL) and opens the next.  The schema carries a version
 * (PRAGMA user_version) and migrations run forward only; a database from a
 * newer tierfs is refused.
 *
 * Inodes and directory entries are cached (LRU, bounded in bytes), written
 * through on every change: path resolution on every FUSE request would
 * otherwise cost several statements each.  A mutation that fails is rolled
 * back by SQLite and clears the caches, so they never hold a rolled-back value.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import { constants } from '../constants';
import { ExtentCache } from './extent_cache';
import { TierfsError } from '../errors';
import type {
  Dirent, Extent, ExtentChange, HeatUpdate, Ino, Inode, LostFile, LostRange, MetaStore, NewInode, PackId, PackRecord, PackState, PackTotals,
  PolicyMode, PolicyRecord, ReplicaLogText, ResidencyTotals, ShareRecord,
} from './meta_store';
import { createReplicaTriggers, dropReplicaTriggers, logObjectSql, replayStatements, replicaLogToKeysSql, replicaTriggersExist } from './sqlite_replica';
import { Worker } from 'node:worker_threads';

export const migrations: (string | ((db: Database.Database) => void))[] = [
  // 1: the namespace, extents and xattrs.
  `
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE inodes (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    nlink INTEGER NOT NULL, size INTEGER NOT NULL, rdev INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, btime_ns INTEGER NOT NULL
  );
  CREATE INDEX inodes_orphans ON inodes (nlink) WHERE nlink = 0;
  CREATE TABLE dirents (
    cookie INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL, name TEXT NOT NULL, ino INTEGER NOT NULL
  );
  CREATE UNIQUE INDEX dirents_name ON dirents (parent, name);
  CREATE INDEX dirents_order ON dirents (parent, cookie);
  CREATE INDEX dirents_ino ON dirents (ino);
  CREATE TABLE extents (
    ino INTEGER NOT NULL, file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
    flash_offset INTEGER NOT NULL, checksums BLOB NOT NULL,
    PRIMARY KEY (ino, file_offset)
  ) WITHOUT ROWID;
  CREATE INDEX extents_flash ON extents (flash_offset);
  CREATE TABLE xattrs (
    ino INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ino, name)
  ) WITHOUT ROWID;
  CREATE TABLE symlinks (ino INTEGER PRIMARY KEY, target TEXT NOT NULL);
  `,
  // 2: the object tier: extents gain a pack copy and heat (flash_offset NULL = evicted), packs, policies.
  `
  DROP INDEX extents_flash;
  ALTER TABLE extents RENAME TO extents_v1;
  CREATE TABLE extents (
    ino INTEGER NOT NULL, file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
    flash_offset INTEGER, checksums BLOB NOT NULL,
    pack_id TEXT, pack_entry INTEGER, pack_offset INTEGER, pack_length INTEGER, pack_encoding INTEGER, pack_skip INTEGER,
    accessed_ms INTEGER NOT NULL, heat_count REAL NOT NULL,
    PRIMARY KEY (ino, file_offset),
    CHECK (flash_offset IS NOT NULL OR pack_id IS NOT NULL)
  ) WITHOUT ROWID;
  INSERT INTO extents (ino, file_offset, length, flash_offset, checksums, accessed_ms, heat_count)
    SELECT ino, file_offset, length, flash_offset, checksums, CAST(unixepoch('now') AS INTEGER) * 1000, 1 FROM extents_v1;
  DROP TABLE extents_v1;
  CREATE INDEX extents_flash ON extents (flash_offset) WHERE flash_offset IS NOT NULL;
  CREATE INDEX extents_flash_only ON extents (accessed_ms) WHERE pack_id IS NULL;
  CREATE INDEX extents_both ON extents (accessed_ms) WHERE pack_id IS NOT NULL AND flash_offset IS NOT NULL;
  CREATE INDEX extents_pack ON extents (pack_id) WHERE pack_id IS NOT NULL;
  CREATE TABLE packs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('uploading', 'live', 'deleting')),
    stored_bytes INTEGER NOT NULL, logical_bytes INTEGER NOT NULL, live_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, nonce BLOB
  ) WITHOUT ROWID;
  CREATE TRIGGER extents_pack_insert AFTER INSERT ON extents WHEN new.pack_id IS NOT NULL BEGIN
    UPDATE packs SET live_bytes = live_bytes + new.length WHERE id = new.pack_id;
  END;
  CREATE TRIGGER extents_pack_delete AFTER DELETE ON extents WHEN old.pack_id IS NOT NULL BEGIN
    UPDATE packs SET live_bytes = live_bytes - old.length WHERE id = old.pack_id;
  END;
  CREATE TRIGGER extents_pack_update AFTER UPDATE OF pack_id, length ON extents BEGIN
    UPDATE packs SET live_bytes = live_bytes - old.length WHERE id = old.pack_id;
    UPDATE packs SET live_bytes = live_bytes + new.length WHERE id = new.pack_id;
  END;
  CREATE TABLE policies (
    name TEXT PRIMARY KEY, path_glob TEXT NOT NULL, mode TEXT NOT NULL, cool_after_ms INTEGER NOT NULL,
    size_min INTEGER NOT NULL, target TEXT NOT NULL, compress INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 3: pins set by an administrator on single files (tierfs pin), gone with their inode; more
  // targets than the one given to format, and the target each pack is in.
  `
  CREATE TABLE targets (name TEXT PRIMARY KEY, url TEXT NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;
  ALTER TABLE packs ADD COLUMN target TEXT NOT NULL DEFAULT 'default';
  CREATE TABLE pins (ino INTEGER PRIMARY KEY, pinned_ms INTEGER NOT NULL);
  CREATE TRIGGER inodes_pin_delete AFTER DELETE ON inodes BEGIN
    DELETE FROM pins WHERE ino = old.ino;
  END;
  `,
  // 4: residency totals kept by triggers, so that status and metrics never scan the extents.
  `
  CREATE TABLE residency_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    flash_only_bytes INTEGER NOT NULL, both_bytes INTEGER NOT NULL, object_only_bytes INTEGER NOT NULL
  );
  INSERT INTO residency_totals
    SELECT 1, coalesce(sum(CASE WHEN pack_id IS NULL THEN length END), 0),
              coalesce(sum(CASE WHEN pack_id IS NOT NULL AND flash_offset IS NOT NULL THEN length END), 0),
              coalesce(sum(CASE WHEN flash_offset IS NULL THEN length END), 0)
    FROM extents;
  CREATE TRIGGER extents_totals_insert AFTER INSERT ON extents BEGIN
    UPDATE residency_totals SET
      flash_only_bytes = flash_only_bytes + (CASE WHEN new.pack_id IS NULL THEN new.length ELSE 0 END),
      both_bytes = both_bytes + (CASE WHEN new.pack_id IS NOT NULL AND new.flash_offset IS NOT NULL THEN new.length ELSE 0 END),
      object_only_bytes = object_only_bytes + (CASE WHEN new.flash_offset IS NULL THEN new.length ELSE 0 END)
    WHERE id = 1;
  END;
  CREATE TRIGGER extents_totals_delete AFTER DELETE ON extents BEGIN
    UPDATE residency_totals SET
      flash_only_bytes = flash_only_bytes - (CASE WHEN old.pack_id IS NULL THEN old.length ELSE 0 END),
      both_bytes = both_bytes - (CASE WHEN old.pack_id IS NOT NULL AND old.flash_offset IS NOT NULL THEN old.length ELSE 0 END),
      object_only_bytes = object_only_bytes - (CASE WHEN old.flash_offset IS NULL THEN old.length ELSE 0 END)
    WHERE id = 1;
  END;
  CREATE TRIGGER extents_totals_update AFTER UPDATE OF pack_id, flash_offset, length ON extents BEGIN
    UPDATE residency_totals SET
      flash_only_bytes = flash_only_bytes
        - (CASE WHEN old.pack_id IS NULL THEN old.length ELSE 0 END) + (CASE WHEN new.pack_id IS NULL THEN new.length ELSE 0 END),
      both_bytes = both_bytes
        - (CASE WHEN old.pack_id IS NOT NULL AND old.flash_offset IS NOT NULL THEN old.length ELSE 0 END)
        + (CASE WHEN new.pack_id IS NOT NULL AND new.flash_offset IS NOT NULL THEN new.length ELSE 0 END),
      object_only_bytes = object_only_bytes
        - (CASE WHEN old.flash_offset IS NULL THEN old.length ELSE 0 END) + (CASE WHEN new.flash_offset IS NULL THEN new.length ELSE 0 END)
    WHERE id = 1;
  END;
  `,
  // 5: the replicated change log (rows written by the triggers of sqlite_replica.ts while replication
  // is on), the change after which a dead pack may go, and the ranges whose data a lost flash tier took.
  `
  CREATE TABLE replica_log (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, row TEXT NOT NULL);
  ALTER TABLE packs ADD COLUMN dead_seq INTEGER;
  ALTER TABLE policies ADD COLUMN durable TEXT NOT NULL DEFAULT 'flash' CHECK (durable IN ('flash', 'object'));
  CREATE TABLE lost (
    ino INTEGER NOT NULL, file_offset INTEGER NOT NULL, length INTEGER NOT NULL, written_ms INTEGER NOT NULL,
    PRIMARY KEY (ino, file_offset)
  ) WITHOUT ROWID;
  `,
  // 6: network shares (tierfs share); their NFS and SMB settings as JSON, checked by the daemon.
  `
  CREATE TABLE shares (name TEXT PRIMARY KEY, path TEXT NOT NULL, spec TEXT NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;
  `,
  // 7: the replicated change log holds keys, not rows (sqlite_replica.ts): the records not yet uploaded
  // keep their seqs as keys, and the triggers are made again where they were (the log stays continuous).
  (db) => {
    const replicated = replicaTriggersExist(db);
    dropReplicaTriggers(db);
    db.exec(replicaLogToKeysSql());
    if (replicated) createReplicaTriggers(db);
  },
  // 8: extents become a rowid table, their key (ino, file_offset) its unique index.  A WITHOUT ROWID row
  // keeps its whole record in the key's b-tree, and a full extent's 1 KiB of checksums made that record
  // overflow its page: every lookup that compared against such a row read the overflow page with a pread
  // of its own, outside SQLite's page cache (about 50 µs per random read of a large file, most of it).
  // The same columns, indexes and triggers (the replica's too), made again from their own definitions.
  (db) => {
    const table = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'extents'").pluck().get() as string;
    if (!/WITHOUT ROWID\s*$/i.test(table)) return; // a rowid table already
    const dependents = db
      .prepare("SELECT sql FROM sqlite_master WHERE tbl_name = 'extents' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name")
      .pluck()
      .all() as string[];
    // The name may be quoted: SQLite writes it so when a table is renamed.
    const rowid = table.replace(/^CREATE TABLE\s+("extents"|extents)\s*\(/, 'CREATE TABLE extents_rowid (').replace(/\)\s*WITHOUT ROWID\s*$/, ')');
    assert.ok(rowid.startsWith('CREATE TABLE extents_rowid (') && !/WITHOUT ROWID/i.test(rowid), `extents: unexpected table definition ${table}`);
    db.exec(`${rowid};
      INSERT INTO extents_rowid SELECT * FROM extents ORDER BY ino, file_offset;
      DROP TABLE extents;
      ALTER TABLE extents_rowid RENAME TO extents;`);
    for (const sql of dependents) db.exec(sql);
  },
];

/** Triggers that keep figures other rows determine (bulkLoad sets them aside and recountFiguresSql makes the figures again). */
const keptFigureTriggers = [
  'extents_pack_insert', 'extents_pack_delete', 'extents_pack_update', 'extents_totals_insert', 'extents_totals_delete', 'extents_totals_update',
];

/** Bytes by residency counted from the extents (the figures residency_totals keeps). */
const residencyScanSql = `
  SELECT coalesce(sum(CASE WHEN pack_id IS NULL THEN length END), 0) AS flashOnlyBytes,
         coalesce(sum(CASE WHEN pack_id IS NOT NULL AND flash_offset IS NOT NULL THEN length END), 0) AS bothBytes,
         coalesce(sum(CASE WHEN flash_offset IS NULL THEN length END), 0) AS objectOnlyBytes
  FROM extents`;

/** Pack live bytes and residency totals counted afresh, as their triggers keep them. */
const recountFiguresSql = `
  UPDATE packs SET live_bytes = coalesce((SELECT sum(length) FROM extents WHERE pack_id = packs.id), 0);
  UPDATE residency_totals SET (flash_only_bytes, both_bytes, object_only_bytes) = (${residencyScanSql}) WHERE id = 1;`;

export const schemaVersion = migrations.length;

/**
 * A consistent copy of the database as of its last commit, made by a
 * connection of its own on a worker thread: VACUUM INTO reads in one read
 * transaction (WAL: writers go on meanwhile) and takes seconds for a million
 * files, which the event loop must not wait through.
 */
const vacuumIntoWorker = `
const { workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.source, { readonly: true, fileMustExist: true });
try { db.prepare('VACUUM INTO ?').run(workerData.into); } finally { db.close(); }
`;

function runInWorker(code: string, workerData: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData });
    worker.once('error', reject);
    worker.once('exit', (exitCode) => (exitCode === 0 ? resolve() : reject(new Error(`snapshot worker exited with ${exitCode}`))));
  });
}

/**
 * Makes the text of log objects (sqlite_replica.ts), on a connection and
 * thread of its own: turning a few seconds of changes into the text of a log
 * object costs the event loop nothing.  In one read transaction (which sees
 * the last commit): the window is every change after afterSeq; its keys go
 * into a temp table, and the lines come from the statements of logObjectSql.
 * Answers { id, text (transferred), lastSeq, bytes, lineCount } or { id, error }.
 */
const logReaderWorker = `
const { workerData, parentPort } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.source, { readonly: true, fileMustExist: true });
db.exec('CREATE TEMP TABLE replica_window (tbl TEXT NOT NULL, k1, k2); CREATE INDEX temp.replica_window_tbl ON replica_window (tbl)');
const lastSeq = db.prepare('SELECT coalesce(max(seq), 0) FROM main.replica_log').pluck();
const firstSeq = db.prepare('SELECT min(seq) FROM main.replica_log WHERE seq > ?').pluck();
const clear = db.prepare('DELETE FROM temp.replica_window');
const gather = db.prepare('INSERT INTO temp.replica_window SELECT DISTINCT tbl, k1, k2 FROM main.replica_log WHERE seq > ? AND seq <= ?');
const lines = workerData.lineSql.map((sql) => db.prepare(sql).pluck());
const read = db.transaction((afterSeq) => {
  const last = lastSeq.get();
  if (last <= afterSeq) return { parts: [], last: afterSeq, count: 0 };
  const first = firstSeq.get(afterSeq);
  if (first !== afterSeq + 1) throw new Error('the local log holds no change ' + (afterSeq + 1) + ' (its first after ' + afterSeq + ' is ' + first + ')');
  clear.run();
  gather.run(afterSeq, last);
  const parts = [];
  let count = 0;
  for (const statement of lines) for (const line of statement.iterate()) { parts.push(line, '\\n'); count += 1; }
  clear.run();
  return { parts, last, count };
});
parentPort.on('message', ({ id, afterSeq }) => {
  try {
    const { parts, last, count } = read(afterSeq);
    const text = Buffer.from(parts.join(''));
    const body = text.buffer.slice(text.byteOffset, text.byteOffset + text.length);
    parentPort.postMessage({ id, text: body, lastSeq: last, bytes: text.length, lineCount: count }, [body]);
  } catch (error) {
    parentPort.postMessage({ id, error: String(error && error.message) });
  }
});
`;

interface InodeRow {
  ino: bigint;
  mode: bigint;
  uid: bigint;
  gid: bigint;
  nlink: bigint;
  size: bigint;
  rdev: bigint;
  atime_ns: bigint;
  mtime_ns: bigint;
  ctime_ns: bigint;
  btime_ns: bigint;
}

interface ExtentRow {
  ino: number;
  file_offset: number;
  length: number;
  flash_offset: number | null;
  checksums: Buffer;
  pack_id: string | null;
  pack_entry: number | null;
  pack_offset: number | null;
  pack_length: number | null;
  pack_encoding: number | null;
  pack_skip: number | null;
  accessed_ms: number;
  heat_count: number;
}

/** An extent shared by every reader of the cache: a caller that tried to change it would throw. */
function frozen(e: Extent): Extent {
  if (e.pack) Object.freeze(e.pack);
  return Object.freeze(e);
}

function toExtent(row: ExtentRow): Extent {
  return {
    ino: row.ino as Ino,
    fileOffsetBytes: row.file_offset,
    lengthBytes: row.length,
    flashOffsetBytes: row.flash_offset,
    checksums: row.checksums,
    pack:
      row.pack_id === null
        ? null
        : {
            packId: row.pack_id as PackId,
            entryIndex: row.pack_entry!,
            storedOffsetBytes: row.pack_offset!,
            storedLengthBytes: row.pack_length!,
            encoding: row.pack_encoding!,
            skipBytes: row.pack_skip!,
          },
    accessedMs: row.accessed_ms,
    heatCount: row.heat_count,
  };
}

interface PackRow {
  id: string;
  state: PackState;
  stored_bytes: number;
  logical_bytes: number;
  live_bytes: number;
  created_ms: number;
  nonce: Buffer | null;
  target: string;
  dead_seq: number | null;
}

function toPack(row: PackRow): PackRecord {
  return {
    packId: row.id as PackId,
    state: row.state,
    storedBytes: row.stored_bytes,
    logicalBytes: row.logical_bytes,
    liveBytes: row.live_bytes,
    createdMs: row.created_ms,
    nonce: row.nonce,
    target: row.target,
    deadSeq: row.dead_seq,
  };
}

interface PolicyRow {
  name: string;
  path_glob: string;
  mode: PolicyMode;
  cool_after_ms: number;
  size_min: number;
  target: string;
  compress: number;
  durable: 'flash' | 'object';
}

const inodeEntryBytes = 256; // an Inode object with its bigints, estimated
const direntEntryBytes = 96; // key string and map overhead, plus the name

export class SqliteMetaStore implements MetaStore {
  readonly path: string;
  private readonly db: Database.Database;
  private pending = 0;
  private readonly inodes = new LRUCache<number, Inode>({
    maxSize: constants.metaCacheBytesMax / 2,
    sizeCalculation: () => inodeEntryBytes,
  });
  private readonly dirents = new LRUCache<string, number>({
    maxSize: constants.metaCacheBytesMax / 2,
    sizeCalculation: (_value, key) => direntEntryBytes + key.length,
  });
  /** Extents in front of SQLite, valid while the connection's change count stands still (see extent_cache.ts). */
  private readonly extents = new ExtentCache(constants.metaExtentCacheCountMax);
  private readonly stmt;
  /** False only when the lost table is known empty (skips its lookups on reads of holes and on writes). */
  private mayHaveLost = false;
  afterCommit: ((replicaSeq: number) => void) | undefined;
  /** The thread that reads the log for uploads (started at the first upload). */
  private logReader:
    | { worker: Worker; waiting: Map<number, { resolve: (text: ReplicaLogText) => void; reject: (error: Error) => void }>; nextId: number }
    | undefined;
  private replayStatements: Map<string, Database.Statement> | undefined;
  /** What bulkLoad(true) set aside: the CREATE statements of its indexes and triggers. */
  private setAside: string[] | undefined;
  /** One wrapper for every mutation (better-sqlite3 builds one per db.transaction() call). */
  private readonly nested: (fn: () => unknown) => unknown;

  /** Open (creating when `create`) the metadata database in `dir`. */
  constructor(dir: string, options: { create: boolean }) {
    this.path = path.join(dir, 'tierfs.db');
    if (!options.create && !fs.existsSync(this.path))
      throw new TierfsError('NOT_FOUND', `no tierfs metadata in ${dir} (run tierfs format first)`);
    if (options.create) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      this.db = new Database(this.path, { timeout: 0 });
      // One owner: the write transaction opened below (BEGIN IMMEDIATE) is held until close, so a second
      // daemon fails at once.  Other connections may read the last commit: replication's snapshots do.
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = OFF');
      this.db.pragma('recursive_triggers = ON'); // INSERT OR REPLACE fires the delete trigger of the row it replaces
      this.db.pragma('cache_size = -65536'); // 64 MiB of page cache, bounded
      this.db.pragma('temp_store = MEMORY'); // statement journals in memory: a mutation's rollback point is no file write
      this.migrate();
      this.db.exec('BEGIN IMMEDIATE');
      this.mayHaveLost = this.db.prepare('SELECT 1 FROM lost LIMIT 1').get() !== undefined;
    } catch (error) {
      if (error instanceof TierfsError) throw error;
      if ((error as { code?: string }).code === 'SQLITE_BUSY')
        throw new TierfsError('BUSY', `metadata ${this.path} is in use by another tierfs process`, { cause: error });
      throw new TierfsError('CORRUPT', `metadata ${this.path} cannot be opened: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const db = this.db;
    this.nested = db.transaction((fn: () => unknown) => fn());
    this.stmt = {
      getSetting: db.prepare('SELECT value FROM settings WHERE key = ?').pluck(),
      setSetting: db.prepare('INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)'),
      getInode: db.prepare('SELECT * FROM inodes WHERE ino = ?').safeIntegers(true),
      createInode: db.prepare(
        `INSERT INTO inodes (mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, btime_ns)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      updateInode: db.prepare(
        `UPDATE inodes SET mode = ?, uid = ?, gid = ?, nlink = ?, size = ?, rdev = ?,
         atime_ns = ?, mtime_ns = ?, ctime_ns = ? WHERE ino = ?`,
      ),
      deleteInode: db.prepare('DELETE FROM inodes WHERE ino = ?'),
      deleteInodeExtents: db.prepare('DELETE FROM extents WHERE ino = ?'),
      deleteSymlink: db.prepare('DELETE FROM symlinks WHERE ino = ?'),
      orphans: db.prepare('SELECT ino FROM inodes WHERE nlink = 0').pluck(),
      inodeCount: db.prepare('SELECT count(*) FROM inodes').pluck(),
      lookup: db.prepare('SELECT ino FROM dirents WHERE parent = ? AND name = ?').pluck(),
      addDirent: db.prepare('INSERT INTO dirents (parent, name, ino) VALUES (?, ?, ?)'),
      removeDirent: db.prepare('DELETE FROM dirents WHERE parent = ? AND name = ?'),
      listDirents: db.prepare(
        'SELECT cookie, name, ino FROM dirents WHERE parent = ? AND cookie >= ? ORDER BY cookie LIMIT ?',
      ),
      hasDirents: db.prepare('SELECT 1 FROM dirents WHERE parent = ? LIMIT 1').pluck(),
      parentOf: db.prepare('SELECT parent FROM dirents WHERE ino = ? LIMIT 1').pluck(),
      firstLink: db.prepare('SELECT parent, name FROM dirents WHERE ino = ? ORDER BY cookie LIMIT 1'),
      // From the last extent starting at or before the range (one index seek), not from a fixed
      // distance before it: a fragmented file has hundreds of extents in that distance.
      totalChanges: db.prepare('SELECT total_changes()').pluck(),
      extentsInRange: db.prepare(
        `SELECT * FROM extents WHERE ino = @ino AND file_offset < @end AND file_offset >= coalesce(
           (SELECT file_offset FROM extents WHERE ino = @ino AND file_offset <= @start ORDER BY file_offset DESC LIMIT 1), @start)
         ORDER BY file_offset`,
      ),
      putExtent: db.prepare(
        `INSERT OR REPLACE INTO extents (ino, file_offset, length, flash_offset, checksums,
           pack_id, pack_entry, pack_offset, pack_length, pack_encoding, pack_skip, accessed_ms, heat_count)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      deleteExtent: db.prepare('DELETE FROM extents WHERE ino = ? AND file_offset = ?'),
      extentCountFrom: db.prepare('SELECT count(*) FROM extents WHERE ino = ? AND file_offset >= ? AND file_offset < ?').pluck(),
      resizeExtent: db.prepare('UPDATE extents SET length = ?, checksums = ? WHERE ino = ? AND file_offset = ?'),
      // For each range: from the last extent starting at or before its start, as extentsInRange.  The
      // planner must not scan the inode's extents once per range: CROSS JOIN and MATERIALIZED keep the
      // JSON rows outside, each an index search.
      extentsAround: db.prepare(
        `SELECT * FROM extents WHERE rowid IN (
           SELECT e.rowid FROM json_each(@ranges) AS r CROSS JOIN extents AS e
             ON e.ino = @ino AND e.file_offset < r.value ->> 1 AND e.file_offset >= coalesce(
               (SELECT file_offset FROM extents WHERE ino = @ino AND file_offset <= r.value ->> 0 ORDER BY file_offset DESC LIMIT 1),
               r.value ->> 0))
         ORDER BY file_offset`,
      ),
      // Rows come as JSON arrays; their checksums as (1-based start, length) in the one blob @sums.
      deleteExtents: db.prepare('DELETE FROM extents WHERE ino = @ino AND file_offset IN (SELECT value FROM json_each(@offsets))'),
      resizeExtents: db.prepare(
        `WITH r AS MATERIALIZED (SELECT value ->> 0 AS at, value ->> 1 AS length, value ->> 2 AS sums_at, value ->> 3 AS sums_length FROM json_each(@rows))
         UPDATE extents SET length = r.length, checksums = substr(@sums, r.sums_at, r.sums_length)
         FROM r WHERE extents.ino = @ino AND extents.file_offset = r.at`,
      ),
      putExtents: db.prepare(
        `INSERT OR REPLACE INTO extents (ino, file_offset, length, flash_offset, checksums,
           pack_id, pack_entry, pack_offset, pack_length, pack_encoding, pack_skip, accessed_ms, heat_count)
         SELECT @ino, r.value ->> 0, r.value ->> 1, r.value ->> 2, substr(@sums, r.value ->> 3, r.value ->> 4),
           r.value ->> 5, r.value ->> 6, r.value ->> 7, r.value ->> 8, r.value ->> 9, r.value ->> 10, r.value ->> 11, r.value ->> 12
         FROM json_each(@rows) AS r`,
      ),
      allExtents: db.prepare('SELECT * FROM extents WHERE flash_offset IS NOT NULL ORDER BY flash_offset'),
      extentPage: db.prepare('SELECT * FROM extents WHERE (ino, file_offset) > (?, ?) ORDER BY ino, file_offset LIMIT ?'),
      isPinned: db.prepare('SELECT 1 FROM pins WHERE ino = ?').pluck(),
      pin: db.prepare('INSERT OR IGNORE INTO pins (ino, pinned_ms) VALUES (?, ?)'),
      unpin: db.prepare('DELETE FROM pins WHERE ino = ?'),
      pinnedCount: db.prepare('SELECT count(*) FROM pins').pluck(),
      coldFlash: db.prepare(
        `SELECT * FROM extents WHERE pack_id IS NULL AND accessed_ms < ? AND (accessed_ms, ino, file_offset) > (?, ?, ?)
         ORDER BY accessed_ms, ino, file_offset LIMIT ?`,
      ),
      coldBoth: db.prepare(
        `SELECT * FROM extents WHERE pack_id IS NOT NULL AND flash_offset IS NOT NULL AND accessed_ms < ?
           AND (accessed_ms, ino, file_offset) > (?, ?, ?)
         ORDER BY accessed_ms, ino, file_offset LIMIT ?`,
      ),
      fileExtents: db.prepare('SELECT * FROM extents WHERE ino = ? ORDER BY file_offset'),
      extentsOfPack: db.prepare('SELECT * FROM extents WHERE pack_id = ?'),
      updateHeat: db.prepare(
        'UPDATE extents SET accessed_ms = max(accessed_ms, ?), heat_count = ? WHERE ino = ? AND file_offset = ?',
      ),
      residencyTotals: db.prepare(
        'SELECT flash_only_bytes AS flashOnlyBytes, both_bytes AS bothBytes, object_only_bytes AS objectOnlyBytes FROM residency_totals WHERE id = 1',
      ),
      residencyTotalsScanned: db.prepare(residencyScanSql),
      putPack: db.prepare(
        `INSERT OR REPLACE INTO packs (id, state, stored_bytes, logical_bytes, live_bytes, created_ms, nonce, target, dead_seq)
         VALUES (?, ?, ?, ?, (SELECT coalesce(sum(length), 0) FROM extents WHERE pack_id = ?), ?, ?, ?, ?)`,
      ),
      getPack: db.prepare('SELECT * FROM packs WHERE id = ?'),
      setPackState: db.prepare('UPDATE packs SET state = ? WHERE id = ?'),
      deletePack: db.prepare('DELETE FROM packs WHERE id = ?'),
      packsInState: db.prepare('SELECT * FROM packs WHERE state = ? ORDER BY created_ms'),
      sparsePacks: db.prepare(
        `SELECT * FROM packs WHERE state = 'live' AND live_bytes <= ? * logical_bytes
         ORDER BY live_bytes * 1.0 / max(logical_bytes, 1) LIMIT ?`,
      ),
      packTotals: db.prepare(
        `SELECT count(*) AS count, coalesce(sum(stored_bytes), 0) AS storedBytes,
                coalesce(sum(logical_bytes), 0) AS logicalBytes, coalesce(sum(live_bytes), 0) AS liveBytes,
                coalesce(sum(stored_bytes * (logical_bytes - live_bytes) / max(logical_bytes, 1)), 0) AS garbageBytes
         FROM packs WHERE state != 'uploading'`,
      ),
      policies: db.prepare('SELECT * FROM policies ORDER BY name'),
      targets: db.prepare('SELECT name, url FROM targets ORDER BY name'),
      putTarget: db.prepare('INSERT INTO targets (name, url, created_ms) VALUES (?, ?, ?)'),
      deleteTarget: db.prepare('DELETE FROM targets WHERE name = ?'),
      packTotalsOfTarget: db.prepare(
        `SELECT count(*) AS count, coalesce(sum(stored_bytes), 0) AS storedBytes FROM packs WHERE target = ?`,
      ),
      putPolicy: db.prepare(
        `INSERT OR REPLACE INTO policies (name, path_glob, mode, cool_after_ms, size_min, target, compress, durable)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      deletePolicy: db.prepare('DELETE FROM policies WHERE name = ?'),
      shares: db.prepare('SELECT name, path, spec, created_ms FROM shares ORDER BY name'),
      putShare: db.prepare('INSERT OR REPLACE INTO shares (name, path, spec, created_ms) VALUES (?, ?, ?, ?)'),
      deleteShare: db.prepare('DELETE FROM shares WHERE name = ?'),
      getXattr: db.prepare('SELECT value FROM xattrs WHERE ino = ? AND name = ?').pluck(),
      setXattr: db.prepare('INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?, ?, ?)'),
      removeXattr: db.prepare('DELETE FROM xattrs WHERE ino = ? AND name = ?'),
      listXattrs: db.prepare('SELECT name FROM xattrs WHERE ino = ? ORDER BY name').pluck(),
      deleteXattrs: db.prepare('DELETE FROM xattrs WHERE ino = ?'),
      getSymlink: db.prepare('SELECT target FROM symlinks WHERE ino = ?').pluck(),
      setSymlink: db.prepare('INSERT OR REPLACE INTO symlinks (ino, target) VALUES (?, ?)'),
      markPackDead: db.prepare(
        // The seq the trigger is about to give this change's record (one past the highest).
        `UPDATE packs SET state = 'deleting', dead_seq = (SELECT coalesce(max(seq), 0) + 1 FROM replica_log) WHERE id = ?`,
      ),
      replicaSeq: db.prepare('SELECT coalesce(max(seq), 0) FROM replica_log').pluck(),
      // The newest record stays: it keeps the highest seq (a rowid, not AUTOINCREMENT, which would write
      // sqlite_sequence on every record: a fifth of the cost of a create).
      replicaPrune: db.prepare('DELETE FROM replica_log WHERE seq <= ? AND seq < (SELECT max(seq) FROM replica_log)'),
      dropFlashCopies: db.prepare('UPDATE extents SET flash_offset = NULL WHERE flash_offset IS NOT NULL AND pack_id IS NOT NULL'),
      addLost: db.prepare('INSERT OR REPLACE INTO lost (ino, file_offset, length, written_ms) VALUES (?, ?, ?, ?)'),
      lostIn: db.prepare('SELECT * FROM lost WHERE ino = ? AND file_offset < ? AND file_offset + length > ? ORDER BY file_offset'),
      deleteLost: db.prepare('DELETE FROM lost WHERE ino = ? AND file_offset = ?'),
      followedExtent: db.prepare('SELECT length, pack_id IS NOT NULL AS inPack, flash_offset IS NOT NULL AS onFlash FROM extents WHERE ino = ? AND file_offset = ?'),
      forgetFlashCopy: db.prepare('UPDATE extents SET flash_offset = NULL WHERE ino = ? AND file_offset = ?'),
      deleteLostOfInode: db.prepare('DELETE FROM lost WHERE ino = ?'),
      lostFiles: db.prepare(
        `SELECT ino, json_group_array(json_array(file_offset, length)) AS ranges, max(written_ms) AS writtenMs
         FROM lost WHERE ino > ? GROUP BY ino ORDER BY ino LIMIT ?`,
      ),
      lostTotals: db.prepare('SELECT count(DISTINCT ino) AS fileCount, coalesce(sum(length), 0) AS bytes FROM lost'),
    };
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > schemaVersion)
      throw new TierfsError(
        'VERSION',
        `metadata ${this.path} has schema version ${version}; this tierfs knows up to ${schemaVersion}`,
      );
    for (let next = version; next < schemaVersion; next += 1) {
      this.db.transaction(() => {
        const migration = migrations[next];
        if (typeof migration === 'string') this.db.exec(migration);
        else migration(this.db);
        this.db.pragma(`user_version = ${next + 1}`);
      })();
    }
  }

  setting(key: string): string | undefined {
    return this.stmt.getSetting.get(key) as string | undefined;
  }

  setSetting(key: string, value: string): void {
    this.stmt.setSetting.run(key, value);
    this.pending += 1;
  }

  mutate<T>(fn: () => T): T {
    assert.ok(this.db.inTransaction, 'metadata transaction is not open');
    let result: T;
    try {
      result = this.nested(fn) as T; // a savepoint, rolled back if fn throws
    } catch (error) {
      this.inodes.clear();
      this.dirents.clear();
      this.extents.clear(); // the rollback undid rows without lowering the change count
      throw error;
    }
    this.pending += 1;
    return result;
  }

  get pendingCount(): number {
    return this.pending;
  }

  commit(): void {
    try {
      this.db.exec('COMMIT');
    } catch (error) {
      // A COMMIT that fails (a full or failing disk) may have rolled the transaction back: nothing cached can be trusted.
      this.inodes.clear();
      this.dirents.clear();
      this.extents.clear();
      throw error;
    }
    this.pending = 0;
    if (this.afterCommit) this.afterCommit(this.stmt.replicaSeq.get() as number); // exactly what is committed, nothing newer
    this.db.exec('BEGIN IMMEDIATE');
  }

  getInode(ino: Ino): Inode | undefined {
    const cached = this.inodes.get(ino);
    if (cached) return { ...cached };
    const row = this.stmt.getInode.get(ino) as InodeRow | undefined;
    if (!row) return undefined;
    const inode: Inode = {
      ino: Number(row.ino) as Ino,
      mode: Number(row.mode),
      uid: Number(row.uid),
      gid: Number(row.gid),
      nlink: Number(row.nlink),
      sizeBytes: Number(row.size),
      rdev: Number(row.rdev),
      atimeNs: row.atime_ns,
      mtimeNs: row.mtime_ns,
      ctimeNs: row.ctime_ns,
      btimeNs: row.btime_ns,
    };
    this.inodes.set(ino, inode);
    return { ...inode };
  }

  createInode(i: NewInode): Ino {
    const info = this.stmt.createInode.run(
      i.mode, i.uid, i.gid, i.nlink, i.sizeBytes, i.rdev, i.atimeNs, i.mtimeNs, i.ctimeNs, i.btimeNs,
    );
    const ino = Number(info.lastInsertRowid) as Ino;
    this.inodes.set(ino, { ino, ...i });
    return ino;
  }

  updateInode(i: Inode): void {
    const info = this.stmt.updateInode.run(
      i.mode, i.uid, i.gid, i.nlink, i.sizeBytes, i.rdev, i.atimeNs, i.mtimeNs, i.ctimeNs, i.ino,
    );
    assert.equal(info.changes, 1, `update of missing inode ${i.ino}`);
    this.inodes.set(i.ino, { ...i });
  }

  deleteInode(ino: Ino): void {
    if (this.mayHaveLost) this.stmt.deleteLostOfInode.run(ino);
    this.stmt.deleteInode.run(ino);
    this.stmt.deleteInodeExtents.run(ino);
    this.stmt.deleteXattrs.run(ino);
    this.stmt.deleteSymlink.run(ino);
    this.inodes.delete(ino);
  }

  orphanInodes(): Ino[] {
    return this.stmt.orphans.all() as Ino[];
  }

  inodeCount(): number {
    return this.stmt.inodeCount.get() as number;
  }

  /** Cached both ways: 0 in the cache means "no such entry" (a create looks a name up twice before adding it). */
  lookup(parent: Ino, name: string): Ino | undefined {
    const key = `${parent}/${name}`;
    const cached = this.dirents.get(key);
    if (cached !== undefined) return cached === 0 ? undefined : (cached as Ino);
    const ino = this.stmt.lookup.get(parent, name) as Ino | undefined;
    this.dirents.set(key, ino ?? 0);
    return ino;
  }

  addDirent(parent: Ino, name: string, ino: Ino): void {
    this.stmt.addDirent.run(parent, name, ino);
    this.dirents.set(`${parent}/${name}`, ino);
  }

  removeDirent(parent: Ino, name: string): void {
    const info = this.stmt.removeDirent.run(parent, name);
    assert.equal(info.changes, 1, `remove of missing entry ${name} in ${parent}`);
    this.dirents.set(`${parent}/${name}`, 0);
  }

  listDirents(parent: Ino, fromCookie: number, countMax: number): Dirent[] {
    return this.stmt.listDirents.all(parent, fromCookie, countMax) as Dirent[];
  }

  hasDirents(parent: Ino): boolean {
    return this.stmt.hasDirents.get(parent) !== undefined;
  }

  parentOf(ino: Ino): Ino | undefined {
    return this.stmt.parentOf.get(ino) as Ino | undefined;
  }

  firstLink(ino: Ino): { parent: Ino; name: string } | undefined {
    return this.stmt.firstLink.get(ino) as { parent: Ino; name: string } | undefined;
  }

  extentsInRange(ino: Ino, startBytes: number, endBytes: number): Extent[] {
    this.extents.validate(this.stmt.totalChanges.get() as number);
    const hit = this.extents.covering(ino, startBytes, endBytes);
    if (hit) return [hit];
    const rows = this.stmt.extentsInRange.all({ ino, start: startBytes, end: endBytes }) as ExtentRow[];
    const result: Extent[] = [];
    for (const row of rows) if (row.file_offset + row.length > startBytes) result.push(frozen(toExtent(row)));
    this.extents.add(ino, result);
    return result;
  }

  /** The extent cache's figures (the tests read them). */
  extentCacheCounts(): { hitCount: number; missCount: number; extentCount: number } {
    return { hitCount: this.extents.hitCount, missCount: this.extents.missCount, extentCount: this.extents.size };
  }

  extentCountFrom(ino: Ino, startBytes: number, endBytes: number): number {
    return this.stmt.extentCountFrom.get(ino, startBytes, endBytes) as number;
  }

  putExtent(e: Extent): void {
    assert.ok(e.flashOffsetBytes !== null || e.pack !== null, 'an extent must be somewhere');
    const p = e.pack;
    this.stmt.putExtent.run(
      e.ino, e.fileOffsetBytes, e.lengthBytes, e.flashOffsetBytes, e.checksums,
      p?.packId ?? null, p?.entryIndex ?? null, p?.storedOffsetBytes ?? null, p?.storedLengthBytes ?? null,
      p?.encoding ?? null, p?.skipBytes ?? null, e.accessedMs, e.heatCount,
    );
  }

  deleteExtent(ino: Ino, fileOffsetBytes: number): void {
    this.stmt.deleteExtent.run(ino, fileOffsetBytes);
  }

  resizeExtent(ino: Ino, fileOffsetBytes: number, lengthBytes: number, checksums: Buffer): void {
    assert.equal(checksums.length, (lengthBytes / constants.blockSizeBytes) * 4);
    const changed = this.stmt.resizeExtent.run(lengthBytes, checksums, ino, fileOffsetBytes).changes;
    assert.equal(changed, 1, `no extent of inode ${ino} at ${fileOffsetBytes} to resize`);
  }

  extentsAround(ino: Ino, ranges: readonly (readonly [number, number])[]): Extent[] {
    if (ranges.length === 0) return [];
    return (this.stmt.extentsAround.all({ ino, ranges: JSON.stringify(ranges) }) as ExtentRow[]).map(toExtent);
  }

  changeExtents(ino: Ino, change: ExtentChange): void {
    const sums: Buffer[] = [];
    let sumsBytes = 0;
    const place = (checksums: Buffer): [number, number] => {
      sums.push(checksums);
      sumsBytes += checksums.length;
      return [sumsBytes - checksums.length + 1, checksums.length];
    };
    const resized = change.resized.map((e) => {
      assert.equal(e.checksums.length, (e.lengthBytes / constants.blockSizeBytes) * 4);
      return [e.fileOffsetBytes, e.lengthBytes, ...place(e.checksums)];
    });
    const put = change.put.map((e) => {
      assert.ok(e.flashOffsetBytes !== null || e.pack !== null, 'an extent must be somewhere');
      const p = e.pack;
      return [
        e.fileOffsetBytes, e.lengthBytes, e.flashOffsetBytes, ...place(e.checksums),
        p?.packId ?? null, p?.entryIndex ?? null, p?.storedOffsetBytes ?? null, p?.storedLengthBytes ?? null,
        p?.encoding ?? null, p?.skipBytes ?? null, e.accessedMs, e.heatCount,
      ];
    });
    const all = Buffer.concat(sums, sumsBytes);
    if (change.deleted.length > 0) this.stmt.deleteExtents.run({ ino, offsets: JSON.stringify(change.deleted) });
    if (resized.length > 0) {
      const changed = this.stmt.resizeExtents.run({ ino, rows: JSON.stringify(resized), sums: all }).changes;
      assert.equal(changed, resized.length, `inode ${ino}: ${resized.length} extents to resize, ${changed} found`);
    }
    if (put.length > 0) this.stmt.putExtents.run({ ino, rows: JSON.stringify(put), sums: all });
  }

  *allExtents(): Iterable<Extent> {
    for (const row of this.stmt.allExtents.iterate()) yield toExtent(row as ExtentRow);
  }

  /** In pages (other statements, writes included, may run between them; an extent written meanwhile may be missed or seen). */
  *everyExtent(): Iterable<Extent> {
    let after: [number, number] = [-1, -1];
    for (;;) {
      const rows = this.stmt.extentPage.all(...after, 1024) as ExtentRow[];
      for (const row of rows) yield toExtent(row);
      if (rows.length < 1024) return;
      const last = toExtent(rows[rows.length - 1]);
      after = [last.ino, last.fileOffsetBytes];
    }
  }

  targets(): { name: string; url: string }[] {
    return this.stmt.targets.all() as { name: string; url: string }[];
  }

  putTarget(name: string, url: string, nowMs: number): void {
    this.stmt.putTarget.run(name, url, nowMs);
    this.pending += 1;
  }

  deleteTarget(name: string): boolean {
    const gone = this.stmt.deleteTarget.run(name).changes > 0;
    this.pending += 1;
    return gone;
  }

  packsOfTarget(name: string): { count: number; storedBytes: number } {
    return this.stmt.packTotalsOfTarget.get(name) as { count: number; storedBytes: number };
  }

  isPinned(ino: Ino): boolean {
    return this.stmt.isPinned.get(ino) !== undefined;
  }

  setPinned(ino: Ino, pinned: boolean, nowMs: number): boolean {
    const changed = (pinned ? this.stmt.pin.run(ino, nowMs) : this.stmt.unpin.run(ino)).changes > 0;
    if (changed) this.pending += 1;
    return changed;
  }

  pinnedCount(): number {
    return this.stmt.pinnedCount.get() as number;
  }

  coldExtents(kind: 'flash' | 'both', accessedBeforeMs: number, countMax: number, after?: Extent): Extent[] {
    const stmt = kind === 'flash' ? this.stmt.coldFlash : this.stmt.coldBoth;
    const from = after ? [after.accessedMs, after.ino, after.fileOffsetBytes] : [Number.MIN_SAFE_INTEGER, 0, 0];
    return (stmt.all(accessedBeforeMs, ...from, countMax) as ExtentRow[]).map(toExtent);
  }

  fileExtents(ino: Ino): Extent[] {
    return (this.stmt.fileExtents.all(ino) as ExtentRow[]).map(toExtent);
  }

  extentsOfPack(packId: PackId): Extent[] {
    return (this.stmt.extentsOfPack.all(packId) as ExtentRow[]).map(toExtent);
  }

  updateHeat(updates: HeatUpdate[]): void {
    for (const u of updates) this.stmt.updateHeat.run(u.accessedMs, u.heatCount, u.ino, u.fileOffsetBytes);
  }

  residencyTotals(): ResidencyTotals {
    return this.stmt.residencyTotals.get() as ResidencyTotals;
  }

  residencyTotalsScanned(): ResidencyTotals {
    return this.stmt.residencyTotalsScanned.get() as ResidencyTotals;
  }

  putPack(p: PackRecord): void {
    this.stmt.putPack.run(p.packId, p.state, p.storedBytes, p.logicalBytes, p.packId, p.createdMs, p.nonce, p.target, p.deadSeq);
  }

  getPack(packId: PackId): PackRecord | undefined {
    const row = this.stmt.getPack.get(packId) as PackRow | undefined;
    return row && toPack(row);
  }

  setPackState(packId: PackId, state: PackState): void {
    const info = this.stmt.setPackState.run(state, packId);
    assert.equal(info.changes, 1, `state change of missing pack ${packId}`);
  }

  deletePack(packId: PackId): void {
    this.stmt.deletePack.run(packId);
  }

  packsInState(state: PackState): PackRecord[] {
    return (this.stmt.packsInState.all(state) as PackRow[]).map(toPack);
  }

  sparsePacks(liveFractionMax: number, countMax: number): PackRecord[] {
    return (this.stmt.sparsePacks.all(liveFractionMax, countMax) as PackRow[]).map(toPack);
  }

  packTotals(): PackTotals {
    const t = this.stmt.packTotals.get() as PackTotals;
    return { ...t, garbageBytes: Math.round(t.garbageBytes) };
  }

  policies(): PolicyRecord[] {
    return (this.stmt.policies.all() as PolicyRow[]).map((r) => ({
      name: r.name,
      pathGlob: r.path_glob,
      mode: r.mode,
      coolAfterMs: r.cool_after_ms,
      sizeBytesMin: r.size_min,
      target: r.target,
      compress: r.compress !== 0,
      durable: r.durable,
    }));
  }

  putPolicy(p: PolicyRecord): void {
    this.stmt.putPolicy.run(p.name, p.pathGlob, p.mode, p.coolAfterMs, p.sizeBytesMin, p.target, p.compress ? 1 : 0, p.durable);
    this.pending += 1;
  }

  deletePolicy(name: string): boolean {
    const gone = this.stmt.deletePolicy.run(name).changes > 0;
    this.pending += 1;
    return gone;
  }

  shares(): ShareRecord[] {
    return (this.stmt.shares.all() as { name: string; path: string; spec: string; created_ms: number }[]).map((r) => {
      const spec = JSON.parse(r.spec) as Pick<ShareRecord, 'readOnly' | 'nfs' | 'smb' | 'allowWorld'>;
      return { name: r.name, path: r.path, readOnly: spec.readOnly === true, nfs: spec.nfs ?? null, smb: spec.smb ?? null, allowWorld: spec.allowWorld === true, createdMs: r.created_ms };
    });
  }

  putShare(share: ShareRecord): void {
    this.stmt.putShare.run(share.name, share.path, JSON.stringify({ readOnly: share.readOnly, nfs: share.nfs, smb: share.smb, allowWorld: share.allowWorld }), share.createdMs);
    this.pending += 1;
  }

  deleteShare(name: string): boolean {
    const gone = this.stmt.deleteShare.run(name).changes > 0;
    this.pending += 1;
    return gone;
  }

  getXattr(ino: Ino, name: string): Buffer | undefined {
    return this.stmt.getXattr.get(ino, name) as Buffer | undefined;
  }

  setXattr(ino: Ino, name: string, value: Buffer): void {
    this.stmt.setXattr.run(ino, name, value);
  }

  removeXattr(ino: Ino, name: string): boolean {
    return this.stmt.removeXattr.run(ino, name).changes > 0;
  }

  listXattrs(ino: Ino): string[] {
    return this.stmt.listXattrs.all(ino) as string[];
  }

  deleteXattrs(ino: Ino): void {
    this.stmt.deleteXattrs.run(ino);
  }

  getSymlink(ino: Ino): string | undefined {
    return this.stmt.getSymlink.get(ino) as string | undefined;
  }

  setSymlink(ino: Ino, target: string): void {
    this.stmt.setSymlink.run(ino, target);
  }

  markPackDead(packId: PackId): void {
    const info = this.stmt.markPackDead.run(packId);
    assert.equal(info.changes, 1, `state change of missing pack ${packId}`);
  }

  // ---- replication ----

  setReplicated(on: boolean): boolean {
    const continuous = replicaTriggersExist(this.db);
    if (on) createReplicaTriggers(this.db);
    else dropReplicaTriggers(this.db);
    this.pending += 1;
    return continuous;
  }

  replicaSeq(): number {
    return this.stmt.replicaSeq.get() as number;
  }

  replicaLogText(afterSeq: number): Promise<ReplicaLogText> {
    if (!this.logReader) {
      const workerData = { module: require.resolve('better-sqlite3'), source: this.path, lineSql: logObjectSql() };
      const worker = new Worker(logReaderWorker, { eval: true, workerData });
      const waiting = new Map<number, { resolve: (text: ReplicaLogText) => void; reject: (error: Error) => void }>();
      const failAll = (error: Error) => {
        for (const w of waiting.values()) w.reject(error);
        waiting.clear();
        if (this.logReader?.worker === worker) this.logReader = undefined; // the next upload starts another
      };
      worker.on('message', (m: { id: number; error?: string; text: ArrayBuffer; lastSeq: number; bytes: number; lineCount: number }) => {
        const w = waiting.get(m.id);
        waiting.delete(m.id);
        if (waiting.size === 0) worker.unref(); // an idle reader keeps no process alive
        if (m.error !== undefined) w?.reject(new Error(`reading the metadata log: ${m.error}`));
        else w?.resolve({ text: Buffer.from(m.text), lastSeq: m.lastSeq, bytes: m.bytes, lineCount: m.lineCount });
      });
      worker.on('error', failAll);
      worker.on('exit', (code) => failAll(new Error(`the metadata log reader exited (${code})`)));
      worker.unref();
      this.logReader = { worker, waiting, nextId: 0 };
    }
    const reader = this.logReader;
    const id = reader.nextId++;
    return new Promise((resolve, reject) => {
      reader.waiting.set(id, { resolve, reject });
      reader.worker.ref();
      reader.worker.postMessage({ id, afterSeq });
    });
  }

  pruneReplicaLog(throughSeq: number): void {
    this.stmt.replicaPrune.run(throughSeq);
  }

  async snapshotInto(file: string): Promise<number> {
    fs.rmSync(file, { force: true });
    await runInWorker(vacuumIntoWorker, { module: require.resolve('better-sqlite3'), source: this.path, into: file });
    const copy = new Database(file, { fileMustExist: true });
    try {
      copy.pragma('journal_mode = DELETE');
      const seq = copy.prepare('SELECT coalesce(max(seq), 0) FROM replica_log').pluck().get() as number;
      copy.exec('DELETE FROM replica_log'); // the copy's state already holds every change in it
      return seq;
    } finally {
      copy.close();
    }
  }

  replay(lines: string[]): void {
    this.replayStatements ??= replayStatements(this.db);
    for (const line of lines) {
      const fields = /^(\w+)\t(put|del)\t(\[.*\])$/.exec(line);
      const statement = fields && this.replayStatements.get(`${fields[1]} ${fields[2]}`);
      if (!fields || !statement) throw new TierfsError('CORRUPT', `metadata log record ${JSON.stringify(line.slice(0, 80))} is not one tierfs writes`);
      statement.run({ r: fields[3] });
    }
    this.inodes.clear();
    this.dirents.clear();
    this.mayHaveLost = true;
    this.pending += 1;
  }

  restartReplicaLog(seq: number): void {
    this.db.prepare('DELETE FROM replica_log').run();
    // A record that is never uploaded (seqs after it are): the next change is seq + 1.
    if (seq > 0) this.db.prepare("INSERT INTO replica_log (seq, tbl) VALUES (?, 'anchor')").run(seq);
    this.pending += 1;
  }

  bulkLoad(on: boolean): void {
    if (on) {
      assert(this.setAside === undefined, 'bulk load already on');
      const names = keptFigureTriggers.map((name) => `'${name}'`).join(', ');
      const items = this.db
        .prepare(
          `SELECT type, name, sql FROM sqlite_master
           WHERE (type = 'index' AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE %') OR (type = 'trigger' AND name IN (${names}))`,
        )
        .all() as { type: string; name: string; sql: string }[];
      for (const item of items) this.db.exec(`DROP ${item.type === 'index' ? 'INDEX' : 'TRIGGER'} ${item.name}`);
      this.setAside = items.map((item) => item.sql);
    } else {
      assert(this.setAside !== undefined, 'bulk load not on');
      for (const sql of this.setAside) this.db.exec(sql);
      this.setAside = undefined;
      this.db.exec(recountFiguresSql);
    }
    this.inodes.clear();
    this.dirents.clear();
    this.pending += 1;
  }

  dropFlashCopies(): void {
    this.stmt.dropFlashCopies.run();
    this.pending += 1;
  }

  adoptFollowedExtents(keys: [number, number][]): void {
    for (const [ino, fileOffsetBytes] of keys) {
      if (this.mayHaveLost) this.stmt.deleteLost.run(ino, fileOffsetBytes);
      const e = this.stmt.followedExtent.get(ino, fileOffsetBytes) as { length: number; inPack: number; onFlash: number } | undefined;
      if (!e) continue;
      if (!e.inPack) {
        this.stmt.deleteExtent.run(ino, fileOffsetBytes);
        const inode = this.getInode(ino as Ino);
        this.addLost(ino as Ino, fileOffsetBytes, e.length, inode ? Number(inode.mtimeNs / 1_000_000n) : 0);
      } else if (e.onFlash) this.stmt.forgetFlashCopy.run(ino, fileOffsetBytes);
    }
    this.pending += 1;
  }

  // ---- lost ranges ----

  addLost(ino: Ino, fileOffsetBytes: number, lengthBytes: number, writtenMs: number): void {
    this.stmt.addLost.run(ino, fileOffsetBytes, lengthBytes, writtenMs);
    this.mayHaveLost = true;
  }

  lostIn(ino: Ino, startBytes: number, endBytes: number): LostRange[] {
    if (!this.mayHaveLost) return [];
    return (this.stmt.lostIn.all(ino, endBytes, startBytes) as { file_offset: number; length: number; written_ms: number }[]).map((r) => ({
      fileOffsetBytes: r.file_offset,
      lengthBytes: r.length,
      writtenMs: r.written_ms,
    }));
  }

  clearLost(ino: Ino, startBytes: number, endBytes: number): void {
    for (const r of this.lostIn(ino, startBytes, endBytes)) {
      this.stmt.deleteLost.run(ino, r.fileOffsetBytes);
      if (r.fileOffsetBytes < startBytes) this.stmt.addLost.run(ino, r.fileOffsetBytes, startBytes - r.fileOffsetBytes, r.writtenMs);
      const end = r.fileOffsetBytes + r.lengthBytes;
      if (end > endBytes) this.stmt.addLost.run(ino, endBytes, end - endBytes, r.writtenMs);
    }
  }

  lostFiles(afterIno: number, countMax: number): LostFile[] {
    if (!this.mayHaveLost) return [];
    return (this.stmt.lostFiles.all(afterIno, countMax) as { ino: number; ranges: string; writtenMs: number }[]).map((r) => ({
      ino: r.ino as Ino,
      ranges: (JSON.parse(r.ranges) as [number, number][]).map(([fileOffsetBytes, lengthBytes]) => ({ fileOffsetBytes, lengthBytes })),
      writtenMs: r.writtenMs,
    }));
  }

  lostTotals(): { fileCount: number; bytes: number } {
    if (!this.mayHaveLost) return { fileCount: 0, bytes: 0 };
    return this.stmt.lostTotals.get() as { fileCount: number; bytes: number };
  }

  private stopLogReader(): void {
    void this.logReader?.worker.terminate();
    this.logReader = undefined;
  }

  crash(): void {
    this.stopLogReader();
    this.inodes.clear();
    this.dirents.clear();
    if (this.db.open) this.db.close(); // SQLite rolls the open transaction back
  }

  /** Commit what is pending and close.  Safe to call twice. */
  close(): void {
    this.stopLogReader();
    if (!this.db.open) return;
    if (this.db.inTransaction) this.db.exec('COMMIT');
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }
}
