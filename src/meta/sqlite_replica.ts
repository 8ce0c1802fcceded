/**
 * The replicated change log of the SQLite metadata, and the text of the log
 * objects made from it.
 *
 * Triggers write, in the same transaction as a change, the key of every row
 * it puts (inserts or updates) or deletes, with a sequence number: so the
 * log holds exactly the committed changes, in commit order, gap-free.  A log
 * object is made from a window of keys (afterSeq, lastSeq] read in one read
 * transaction whose last change is lastSeq: for each key changed in the
 * window, the row as it is at lastSeq (every column, as a JSON array in the
 * order below) or, where the row is gone, its key.  So a log object holds
 * the state at its last change of everything changed in it: a row changed a
 * hundred times in the window (a directory's times while files are made in
 * it) is in it once, and applied to the state at any seq from afterSeq to
 * lastSeq it gives the state at lastSeq.  Restore
 * points are the ends of log objects, never a change inside one.
 *
 * A table's columns are only ever added at the end, so an older object
 * replays into a newer schema.  Blobs are hex; integers stay 64-bit exact
 * because JSON is only ever built and taken apart by SQLite itself, never by
 * JavaScript numbers.  Changes of nothing but heat (extents.accessed_ms,
 * heat_count) or of figures other triggers keep (packs.live_bytes,
 * residency_totals) do not log the key: heat is a hint, and the kept figures
 * follow from replaying the rows they are kept from (which is why packs come
 * after extents below: a pack's row as it is at lastSeq already counts the
 * extents of the window).  Settings named replica* are this log's own
 * bookkeeping.
 *
 * Why keys and states rather than a record of every row change (format 1,
 * still replayed): a record was a JSON copy of the row built inside the
 * writer's transaction, five per file created, and with its bytes in the WAL
 * it cost creates 10-15% (DESIGN-NOTES); a key costs a few integers.  Why
 * not WAL frames: the WAL is checkpointed into the database file at SQLite's
 * discretion and its frames are whole 4 KiB pages (a create rewrites several
 * pages of b-tree: 10-20 KiB of frames), and frames cannot be filtered (heat
 * would be replicated on every read).
 */
import type Database from 'better-sqlite3';

interface TableSpec {
  columns: string[];
  key: string[];
  blobs?: string[];
  /** Changes to only these columns log no key. */
  unlogged?: string[];
  /** A condition on the row (as `r`) for it to be logged. */
  when?: string;
}

/** In the order a log object applies them (packs after extents: see above). */
const tables: Record<string, TableSpec> = {
  settings: { columns: ['key', 'value'], key: ['key'], when: "r.key NOT LIKE 'replica%'" },
  inodes: {
    columns: ['ino', 'mode', 'uid', 'gid', 'nlink', 'size', 'rdev', 'atime_ns', 'mtime_ns', 'ctime_ns', 'btime_ns'],
    key: ['ino'],
  },
  dirents: { columns: ['cookie', 'parent', 'name', 'ino'], key: ['cookie'] },
  extents: {
    columns: [
      'ino', 'file_offset', 'length', 'flash_offset', 'checksums', 'pack_id', 'pack_entry', 'pack_offset', 'pack_length',
      'pack_encoding', 'pack_skip', 'accessed_ms', 'heat_count',
    ],
    key: ['ino', 'file_offset'],
    blobs: ['checksums'],
    unlogged: ['accessed_ms', 'heat_count'],
  },
  xattrs: { columns: ['ino', 'name', 'value'], key: ['ino', 'name'], blobs: ['value'] },
  symlinks: { columns: ['ino', 'target'], key: ['ino'] },
  packs: {
    columns: ['id', 'state', 'stored_bytes', 'logical_bytes', 'live_bytes', 'created_ms', 'nonce', 'target', 'dead_seq'],
    key: ['id'],
    blobs: ['nonce'],
    unlogged: ['live_bytes'],
  },
  policies: { columns: ['name', 'path_glob', 'mode', 'cool_after_ms', 'size_min', 'target', 'compress', 'durable'], key: ['name'] },
  targets: { columns: ['name', 'url', 'created_ms'], key: ['name'] },
  pins: { columns: ['ino', 'pinned_ms'], key: ['ino'] },
  lost: { columns: ['ino', 'file_offset', 'length', 'written_ms'], key: ['ino', 'file_offset'] },
  shares: { columns: ['name', 'path', 'spec', 'created_ms'], key: ['name'] },
};

/** The columns of `alias` as a JSON array, in the order of the spec (names would double a record's size). */
function jsonOf(spec: TableSpec, columns: string[], alias: string): string {
  return `json_array(${columns.map((c) => (spec.blobs?.includes(c) ? `hex(${alias}.${c})` : `${alias}.${c}`)).join(', ')})`;
}

/** The key columns go into k1 and k2 of replica_log (every key has one or two columns). */
const keySlots = ['k1', 'k2'];

function triggerSql(table: string, spec: TableSpec): string[] {
  const when = (row: 'new' | 'old') => (spec.when ? ` WHEN ${spec.when.replace(/\br\./g, `${row}.`)}` : '');
  const logKey = (row: 'new' | 'old') =>
    `INSERT INTO replica_log (tbl, ${keySlots.slice(0, spec.key.length).join(', ')}) VALUES ('${table}', ${spec.key.map((c) => `${row}.${c}`).join(', ')});`;
  const logged = spec.columns.filter((c) => !spec.unlogged?.includes(c));
  return [
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_insert AFTER INSERT ON ${table}${when('new')} BEGIN ${logKey('new')} END`,
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_update AFTER UPDATE OF ${logged.join(', ')} ON ${table}${when('new')} BEGIN ${logKey('new')} END`,
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_delete AFTER DELETE ON ${table}${when('old')} BEGIN ${logKey('old')} END`,
  ];
}

/**
 * Schema 7 turned format-1 records (a JSON row or key in `row`) into keys:
 * every table's key columns lead its row, so they are the record's first one
 * or two elements.  Returns the SQL that rebuilds replica_log that way (its
 * triggers must be dropped first and made again after).
 */
export function replicaLogToKeysSql(): string {
  const twoKeyTables = Object.entries(tables).filter(([, spec]) => spec.key.length === 2).map(([table]) => `'${table}'`);
  return `
    CREATE TABLE replica_log_keys (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, k1, k2);
    INSERT INTO replica_log_keys
      SELECT seq, tbl, CASE WHEN json_valid(row) THEN row ->> '$[0]' END,
        CASE WHEN json_valid(row) AND tbl IN (${twoKeyTables.join(', ')}) THEN row ->> '$[1]' END
      FROM replica_log;
    DROP TABLE replica_log;
    ALTER TABLE replica_log_keys RENAME TO replica_log;`;
}

/**
 * The statements that make a log object's lines from the keys of a window
 * gathered in temp.replica_window (tbl, k1, k2), in the order they must be
 * applied: per table, the rows gone (their keys), then the rows as they are.
 * Each yields one column, `line`, without its newline.
 */
export function logObjectSql(): string[] {
  const sql: string[] = [];
  for (const [table, spec] of Object.entries(tables)) {
    const match = spec.key.map((c, i) => `r.${c} = w.${keySlots[i]}`).join(' AND ');
    const keyJson = `json_array(${keySlots.slice(0, spec.key.length).map((k) => `w.${k}`).join(', ')})`;
    sql.push(
      `SELECT '${table}' || char(9) || 'del' || char(9) || ${keyJson} AS line FROM temp.replica_window w
       WHERE w.tbl = '${table}' AND NOT EXISTS (SELECT 1 FROM main.${table} r WHERE ${match})`,
      `SELECT '${table}' || char(9) || 'put' || char(9) || ${jsonOf(spec, spec.columns, 'r')} AS line
       FROM temp.replica_window w JOIN main.${table} r ON ${match} WHERE w.tbl = '${table}'`,
    );
  }
  return sql;
}

/** Whether the log triggers are in place (the log is continuous since they were made). */
export function replicaTriggersExist(db: Database.Database): boolean {
  return db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'replica\\_%' ESCAPE '\\'").pluck().get() === Object.keys(tables).length * 3;
}

export function createReplicaTriggers(db: Database.Database): void {
  for (const [table, spec] of Object.entries(tables)) for (const sql of triggerSql(table, spec)) db.exec(sql);
}

export function dropReplicaTriggers(db: Database.Database): void {
  for (const table of Object.keys(tables))
    for (const kind of ['insert', 'update', 'delete']) db.exec(`DROP TRIGGER IF EXISTS replica_${table}_${kind}`);
}

/**
 * One statement per table and operation that applies a record's JSON
 * (parameter @r) to a database.  A put updates a row in place where its key
 * is there (an INSERT OR REPLACE would delete it first and fire the delete
 * triggers: an inode's would drop its pin); dirents replace, because a
 * name's row may still be another cookie's until that one is applied.
 */
export function replayStatements(db: Database.Database): Map<string, Database.Statement> {
  const statements = new Map<string, Database.Statement>();
  for (const [table, spec] of Object.entries(tables)) {
    const value = (c: string, i: number) => (spec.blobs?.includes(c) ? `unhex(json_extract(@r, '$[${i}]'))` : `json_extract(@r, '$[${i}]')`);
    const values = `(${spec.columns.join(', ')}) VALUES (${spec.columns.map(value).join(', ')})`;
    const update = spec.columns.filter((c) => !spec.key.includes(c)).map((c) => `${c} = excluded.${c}`);
    statements.set(
      `${table} put`,
      db.prepare(
        table === 'dirents'
          ? `INSERT OR REPLACE INTO ${table} ${values}`
          : `INSERT INTO ${table} ${values} ON CONFLICT (${spec.key.join(', ')}) DO UPDATE SET ${update.join(', ')}`,
      ),
    );
    statements.set(`${table} del`, db.prepare(`DELETE FROM ${table} WHERE ${spec.key.map((c, i) => `${c} IS ${value(c, i)}`).join(' AND ')}`));
  }
  return statements;
}
