/**
 * The replicated metadata in the bucket: where its objects lie, how each is
 * encoded, and which restore points a listing of them offers.  Shared by the
 * replicator (which writes them) and restore (which reads them).
 *
 * Keys, under `<fs-uuid>/meta/`:
 *   snap/<seq>-<ms>/part-<n>   a consistent copy of the metadata database as of
 *                              change <seq>, in parts of at most 32 MiB
 *   snap/<seq>-<ms>/manifest   written last: the snapshot exists once it does
 *   log/<first>-<last>-<ms>    the changes first..last, committed by <ms>: the
 *                              state at <last> of every row they changed
 * Numbers are zero-padded so that keys sort as numbers.  A restore point is a
 * snapshot, or the end of a log object reachable from a snapshot by log
 * objects without a gap; its time is the one in its key.
 *
 * Every object: "TFSMETA1", a flags byte (1: sealed), then for a sealed object
 * a 12-byte random nonce and the raw-deflated content sealed with AES-256-GCM
 * under the pack key, its additional data the file system's UUID and the key
 * (an object cannot stand in for another); for an open one the CRC-32C of the
 * deflated content and the content.  With a key, nothing in the bucket shows a
 * name, a path or an attribute.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { crc32c } from '../checksum';
import { TierfsError } from '../errors';
import type { PackCrypto } from './pack';

const MAGIC = Buffer.from('TFSMETA1');
const FLAG_SEALED = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const deflate = promisify(zlib.deflateRaw);
const inflate = promisify(zlib.inflateRaw);

export const snapshotPartBytesMax = 32 * 2 ** 20;

export function metaPrefix(fsUuid: string): string {
  return `${fsUuid}/meta/`;
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

export function snapshotPartKey(fsUuid: string, seq: number, timeMs: number, part: number): string {
  return `${metaPrefix(fsUuid)}snap/${pad(seq, 16)}-${pad(timeMs, 13)}/part-${pad(part, 5)}`;
}

export function snapshotManifestKey(fsUuid: string, seq: number, timeMs: number): string {
  return `${metaPrefix(fsUuid)}snap/${pad(seq, 16)}-${pad(timeMs, 13)}/manifest`;
}

/** The prefix of the log objects that start at `firstSeq` (what a follower lists to find the next one). */
export function logKeyPrefix(fsUuid: string, firstSeq: number): string {
  return `${metaPrefix(fsUuid)}log/${pad(firstSeq, 16)}-`;
}

export function logKey(fsUuid: string, firstSeq: number, lastSeq: number, timeMs: number): string {
  return `${metaPrefix(fsUuid)}log/${pad(firstSeq, 16)}-${pad(lastSeq, 16)}-${pad(timeMs, 13)}`;
}

export interface SnapshotObjects {
  seq: number;
  timeMs: number;
  /** Keys of its parts and manifest as listed. */
  keys: string[];
  complete: boolean;
}

export interface LogObject {
  key: string;
  firstSeq: number;
  lastSeq: number;
  timeMs: number;
  sizeBytes: number;
}

export interface MetaListing {
  snapshots: SnapshotObjects[];
  logs: LogObject[];
  /** Keys under meta/ that are none of ours (left alone, reported). */
  foreign: string[];
}

/** Sort one file system's meta/ listing into snapshots and log objects (oldest first). */
export function parseMetaListing(fsUuid: string, keys: { key: string; sizeBytes: number }[]): MetaListing {
  const prefix = metaPrefix(fsUuid);
  const snapshots = new Map<string, SnapshotObjects>();
  const logs: LogObject[] = [];
  const foreign: string[] = [];
  for (const { key, sizeBytes } of keys) {
    const rest = key.startsWith(prefix) ? key.slice(prefix.length) : '';
    const snap = /^snap\/(\d{16})-(\d{13})\/(manifest|part-\d{5})$/.exec(rest);
    const logMatch = /^log\/(\d{16})-(\d{16})-(\d{13})$/.exec(rest);
    if (snap) {
      const id = `${snap[1]}-${snap[2]}`;
      const entry = snapshots.get(id) ?? { seq: Number(snap[1]), timeMs: Number(snap[2]), keys: [], complete: false };
      entry.keys.push(key);
      if (snap[3] === 'manifest') entry.complete = true;
      snapshots.set(id, entry);
    } else if (logMatch && Number(logMatch[1]) <= Number(logMatch[2])) {
      logs.push({ key, firstSeq: Number(logMatch[1]), lastSeq: Number(logMatch[2]), timeMs: Number(logMatch[3]), sizeBytes });
    } else foreign.push(key);
  }
  return {
    snapshots: [...snapshots.values()].sort((a, b) => a.seq - b.seq || a.timeMs - b.timeMs),
    logs: logs.sort((a, b) => a.lastSeq - b.lastSeq || a.firstSeq - b.firstSeq),
    foreign,
  };
}

export interface RestorePoint {
  seq: number;
  timeMs: number;
  /** The snapshot it starts from, and the log objects applied after it, in order. */
  snapshot: SnapshotObjects;
  logs: LogObject[];
}

/**
 * Every restore point, oldest first.  From each complete snapshot, log objects
 * are followed while they continue the seqs without a gap (overlaps are fine:
 * a log object uploaded twice after a crash repeats changes already applied).
 */
export function restorePoints(listing: MetaListing): RestorePoint[] {
  const points = new Map<number, RestorePoint>();
  for (const snapshot of listing.snapshots.filter((s) => s.complete)) {
    const consider = (p: RestorePoint) => {
      const had = points.get(p.seq);
      // The same state reached two ways: the one with fewer objects to read wins.
      if (!had || p.logs.length < had.logs.length || (p.logs.length === had.logs.length && p.timeMs < had.timeMs)) points.set(p.seq, p);
    };
    consider({ seq: snapshot.seq, timeMs: snapshot.timeMs, snapshot, logs: [] });
    let at = snapshot.seq;
    const chain: LogObject[] = [];
    for (const log of listing.logs) {
      if (log.lastSeq <= at) continue;
      if (log.firstSeq > at + 1) break; // a gap: later points are not reachable from this snapshot
      chain.push(log);
      at = log.lastSeq;
      consider({ seq: at, timeMs: Math.max(log.timeMs, snapshot.timeMs), snapshot, logs: [...chain] });
    }
  }
  return [...points.values()].sort((a, b) => a.seq - b.seq);
}

/** The restore point for `atMs` (the newest at or before it; the newest of all when undefined). */
export function pickRestorePoint(points: RestorePoint[], atMs: number | undefined): RestorePoint | undefined {
  const eligible = atMs === undefined ? points : points.filter((p) => p.timeMs <= atMs);
  return eligible[eligible.length - 1];
}

function additionalData(crypto: PackCrypto, key: string): Buffer {
  return Buffer.from(`tierfs meta ${crypto.fsUuid} ${key}`);
}

/** The stored form of one meta object (see the top of this file). */
export async function encodeMetaObject(crypto: PackCrypto, key: string, plain: Buffer): Promise<Buffer[]> {
  const packed = await deflate(plain, { level: 3 });
  if (crypto.key === null) {
    const header = Buffer.alloc(MAGIC.length + 1 + 4);
    MAGIC.copy(header);
    header.writeUInt32LE(crc32c(packed), MAGIC.length + 1);
    return [header, packed];
  }
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', crypto.key, nonce);
  cipher.setAAD(additionalData(crypto, key));
  const header = Buffer.concat([MAGIC, Buffer.from([FLAG_SEALED]), nonce]);
  return [header, cipher.update(packed), cipher.final(), cipher.getAuthTag()];
}

export async function decodeMetaObject(crypto: PackCrypto, key: string, stored: Buffer): Promise<Buffer> {
  const fail = (why: string, cause?: unknown) => new TierfsError('CORRUPT', `${key}: ${why}`, { cause });
  if (stored.length < MAGIC.length + 1 || !stored.subarray(0, MAGIC.length).equals(MAGIC)) throw fail('not a tierfs metadata object');
  const flags = stored[MAGIC.length];
  let packed: Buffer;
  if (flags === FLAG_SEALED) {
    if (crypto.key === null) throw new TierfsError('USAGE', `${key} is encrypted: give the file system's key (--encryption-key FILE)`);
    const body = stored.subarray(MAGIC.length + 1);
    if (body.length < NONCE_BYTES + TAG_BYTES) throw fail('too short to be sealed');
    const decipher = createDecipheriv('aes-256-gcm', crypto.key, body.subarray(0, NONCE_BYTES));
    decipher.setAAD(additionalData(crypto, key));
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
    try {
      packed = Buffer.concat([decipher.update(body.subarray(NONCE_BYTES, body.length - TAG_BYTES)), decipher.final()]);
    } catch (error) {
      throw new TierfsError('USAGE', `${key}: authentication failed: the key is not this file system's, or the object is damaged`, { cause: error });
    }
  } else if (flags === 0) {
    if (crypto.key !== null) throw fail('stored without encryption in a file system that encrypts (not written by tierfs)');
    if (stored.length < MAGIC.length + 5) throw fail('truncated');
    packed = stored.subarray(MAGIC.length + 5);
    if (crc32c(packed) !== stored.readUInt32LE(MAGIC.length + 1)) throw fail('checksum mismatch (damaged)');
  } else throw fail(`unknown flags ${flags}`);
  try {
    return await inflate(packed);
  } catch (error) {
    throw fail('does not inflate (damaged)', error);
  }
}

export interface SnapshotManifest {
  format: 1;
  fsUuid: string;
  seq: number;
  timeMs: number;
  schemaVersion: number;
  parts: { bytes: number; sha256: string }[];
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function parseManifest(fsUuid: string, key: string, plain: Buffer, seq: number): SnapshotManifest {
  let manifest: SnapshotManifest;
  try {
    manifest = JSON.parse(plain.toString('utf8')) as SnapshotManifest;
  } catch (error) {
    throw new TierfsError('CORRUPT', `${key}: not a snapshot manifest`, { cause: error });
  }
  if (manifest.format !== 1 || manifest.fsUuid !== fsUuid || manifest.seq !== seq || !Array.isArray(manifest.parts) || manifest.parts.length === 0)
    throw new TierfsError('CORRUPT', `${key}: manifest does not describe snapshot ${seq} of ${fsUuid}`);
  return manifest;
}

/** The first line of a log object of format 2 (sqlite_replica.ts), then its number of lines. */
const logHeader2 = '#tierfs-log 2 ';

/** A log object's text: a header, then the lines of `text`. */
export function logObjectText(text: Buffer, lineCount: number): Buffer {
  return Buffer.concat([Buffer.from(`${logHeader2}${lineCount}\n`), text]);
}

/**
 * The lines of a log object to apply on top of the state at `appliedSeq` to
 * reach its last change, each "table TAB put|del TAB json".  Format 2 holds
 * states: all of it applies.  Format 1 (one record per change, each with its
 * seq, firstSeq..lastSeq without a gap) applies from appliedSeq + 1.
 */
export function parseLogObject(log: LogObject, plain: Buffer, appliedSeq: number): string[] {
  const lines = plain.toString('utf8').split('\n');
  if (lines.pop() !== '') throw new TierfsError('CORRUPT', `${log.key}: truncated (no final newline)`);
  if (lines[0]?.startsWith(logHeader2)) {
    const count = Number(lines[0].slice(logHeader2.length));
    if (!Number.isSafeInteger(count) || count !== lines.length - 1)
      throw new TierfsError('CORRUPT', `${log.key}: holds ${lines.length - 1} lines where its header says ${lines[0].slice(logHeader2.length)}`);
    return lines.slice(1);
  }
  // Committed seqs have no gaps: a rolled-back change gives its seqs back.
  let expected = log.firstSeq;
  for (const line of lines) {
    const seq = Number(line.slice(0, line.indexOf('\t')));
    if (seq !== expected) throw new TierfsError('CORRUPT', `${log.key}: record ${seq} where ${expected} was due`);
    expected = seq + 1;
  }
  if (expected !== log.lastSeq + 1) throw new TierfsError('CORRUPT', `${log.key}: records end at ${expected - 1}, not ${log.lastSeq}`);
  return lines.slice(Math.max(0, appliedSeq + 1 - log.firstSeq)).map((line) => line.slice(line.indexOf('\t') + 1));
}
