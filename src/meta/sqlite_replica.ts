/**
 * The replicated change log of the SQLite metadata: logical change records
 * written by triggers in the same transaction as the change, so the log holds
 * exactly the committed changes, in commit order, each with a sequence number.
 *
 * A record is one row put (inserted or updated: every column, as a JSON array
 * in the order below) or one row deleted (its key columns, likewise).  A
 * table's columns are only ever added at the end, so an older record replays
 * into a newer schema.  Blobs are hex; integers stay 64-bit exact
 * because JSON is only ever built and taken apart by SQLite itself, never by
 * JavaScript numbers.  Changes of nothing but heat (extents.accessed_ms,
 * heat_count) or of figures other triggers keep (packs.live_bytes,
 * residency_totals) are not logged: heat is a hint, and the kept figures
 * follow from replaying the rows they are kept from.  Settings named replica* are this log's own bookkeeping.
 *
 * Why logical records and not WAL frames: the WAL is checkpointed into the
 * database file at SQLite's discretion and its frames are whole 4 KiB pages
 * (a create rewrites several pages of b-tree: about 10-20 KiB of frames
 * against 400-600 bytes of records), and frames cannot be filtered (heat
 * would be replicated on every read).  Records are small, replay on any
 * schema version that knows the table, and can be read without a page map.
 */
import type Database from 'better-sqlite3';

interface TableSpec {
  columns: string[];
  key: string[];
  blobs?: string[];
  /** Changes to only these columns are not logged. */
  unlogged?: string[];
  /** A condition on the row (as `r`) for it to be logged. */
  when?: string;
}

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

/** The columns as a JSON array, in the order of the spec (names would double a record's size). */
function jsonOf(spec: TableSpec, columns: string[], row: 'new' | 'old'): string {
  return `json_array(${columns.map((c) => (spec.blobs?.includes(c) ? `hex(${row}.${c})` : `${row}.${c}`)).join(', ')})`;
}

function triggerSql(table: string, spec: TableSpec): string[] {
  const when = (row: 'new' | 'old') => (spec.when ? ` WHEN ${spec.when.replace(/\br\./g, `${row}.`)}` : '');
  const put = (row: 'new') => `INSERT INTO replica_log (tbl, op, row) VALUES ('${table}', 'put', ${jsonOf(spec, spec.columns, row)});`;
  const logged = spec.columns.filter((c) => !spec.unlogged?.includes(c));
  return [
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_insert AFTER INSERT ON ${table}${when('new')} BEGIN ${put('new')} END`,
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_update AFTER UPDATE OF ${logged.join(', ')} ON ${table}${when('new')} BEGIN ${put('new')} END`,
    `CREATE TRIGGER IF NOT EXISTS replica_${table}_delete AFTER DELETE ON ${table}${when('old')} BEGIN
       INSERT INTO replica_log (tbl, op, row) VALUES ('${table}', 'del', ${jsonOf(spec, spec.key, 'old')}); END`,
  ];
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

/** One statement per table and operation that applies a record's JSON (parameter @r) to a database. */
export function replayStatements(db: Database.Database): Map<string, Database.Statement> {
  const statements = new Map<string, Database.Statement>();
  for (const [table, spec] of Object.entries(tables)) {
    const value = (c: string, i: number) => (spec.blobs?.includes(c) ? `unhex(json_extract(@r, '$[${i}]'))` : `json_extract(@r, '$[${i}]')`);
    statements.set(
      `${table} put`,
      db.prepare(`INSERT OR REPLACE INTO ${table} (${spec.columns.join(', ')}) VALUES (${spec.columns.map(value).join(', ')})`),
    );
    statements.set(`${table} del`, db.prepare(`DELETE FROM ${table} WHERE ${spec.key.map((c, i) => `${c} IS ${value(c, i)}`).join(' AND ')}`));
  }
  return statements;
}
