/**
 * Rebuilding a file system from its bucket alone: the metadata from the
 * replicated snapshot and log (src/tier/replica_format.ts), a new flash tier
 * for the same file system, and every extent then in a pack read from it on
 * demand.  Nothing is bulk-downloaded, and only the file system's own meta/
 * prefix is listed.
 *
 * Everything is checked before anything is written: the destination (an
 * empty metadata directory, a blank or missing flash tier), the restore point,
 * the key, every object read (checksums or authentication, seqs without a
 * gap).  The metadata is rebuilt in a scratch directory inside the metadata
 * directory and moved into place only once complete; the superblock goes
 * last, so an interrupted restore leaves nothing that opens (or, past the
 * move, metadata whose blank flash tier serve adopts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import { createFlashFile, openFlashDevice, type FlashDevice } from '../device/device';
import { TierfsError } from '../errors';
import { SqliteMetaStore, type MetaStore } from '../meta/meta_store';
import { newSuperblock, readSuperblock, writeSuperblock } from '../store/store';
import type { ObjectStore } from '../tier/tier';
import {
  decodeMetaObject, metaPrefix, parseLogObject, parseManifest, parseMetaListing, pickRestorePoint, restorePoints, sha256,
  snapshotManifestKey, type MetaListing, type RestorePoint,
} from '../tier/replica_format';
import { forgetFlashContents, isBlank, keyCheck, type FlashLoss } from './format';

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface FileSystemInTarget {
  fsUuid: string;
  /** Restore points, oldest first (seq and the time in their keys). */
  points: { seq: number; timeMs: number }[];
  encrypted: boolean | undefined;
  /** Objects under meta/ tierfs did not write. */
  foreignCount: number;
}

async function listMeta(store: ObjectStore, fsUuid: string): Promise<MetaListing> {
  const keys: { key: string; sizeBytes: number }[] = [];
  for await (const item of store.list(metaPrefix(fsUuid))) keys.push(item);
  return parseMetaListing(fsUuid, keys);
}

/**
 * The file systems with replicated metadata in a target: one delimited
 * listing of its top level, then each candidate's meta/.  A store whose
 * delimited listings leave out deeper keys (s3rver does) shows no candidate:
 * then one full listing finds them.
 */
async function fileSystemsIn(store: ObjectStore): Promise<string[]> {
  const candidates = (await store.listNames('')).filter((name) => uuidPattern.test(name));
  const found: string[] = [];
  if (candidates.length === 0) {
    const seen = new Set<string>();
    let listed = 0;
    for await (const item of store.list('')) {
      const first = item.key.slice(0, item.key.indexOf('/'));
      if (uuidPattern.test(first) && item.key.startsWith(metaPrefix(first))) seen.add(first);
      if (++listed >= constants.fileSystemScanKeyCountMax) break; // a prefix full of other things: not ours to list
    }
    return [...seen].sort();
  }
  for (const name of candidates) {
    for await (const _ of store.list(metaPrefix(name))) {
      found.push(name);
      break;
    }
  }
  return found;
}

/** The file systems with replicated metadata in a target, and their restore points. */
export async function listFileSystems(store: ObjectStore): Promise<FileSystemInTarget[]> {
  const result: FileSystemInTarget[] = [];
  for (const name of await fileSystemsIn(store)) {
    const listing = await listMeta(store, name);
    const points = restorePoints(listing);
    let encrypted: boolean | undefined;
    const newest = points[points.length - 1];
    if (newest) {
      const manifest = await store.get(snapshotManifestKey(name, newest.snapshot.seq, newest.snapshot.timeMs)).catch(() => undefined);
      encrypted = manifest === undefined || manifest.length < 9 ? undefined : manifest[8] === 1;
    }
    result.push({ fsUuid: name, points: points.map((p) => ({ seq: p.seq, timeMs: p.timeMs })), encrypted, foreignCount: listing.foreign.length });
  }
  return result;
}

export interface RestoreRequest {
  /** The target holding the file system (the caller opens it, with retries). */
  store: ObjectStore;
  /** Its URL, recorded in the restored metadata. */
  targetUrl: string;
  flash: string;
  metaDir: string;
  /** Size of a new flash file (default: format's default). */
  sizeBytes?: number;
  /** The newest restore point at or before this time; the newest of all by default. */
  atMs?: number;
  /** Which file system, when the target holds several. */
  fsUuid?: string;
  encryptionKey?: Buffer;
  /** Delete the restore points after the one restored (required when there are any: they belong to another history). */
  discardLater?: boolean;
  /** The copy follows the writer (serve --follow) instead of becoming one. */
  follower?: boolean;
  clock?: Clock;
}

export interface RestoreResult {
  fsUuid: string;
  point: { seq: number; timeMs: number };
  /** Records applied after the snapshot. */
  recordCount: number;
  /** Extents now read from packs, and what had no copy in a pack at that point. */
  loss: FlashLoss;
  discardedObjectCount: number;
}

function refuse(message: string): never {
  throw new TierfsError('USAGE', `restore: ${message}`);
}

async function pickFileSystem(store: ObjectStore, wanted: string | undefined): Promise<string> {
  if (wanted !== undefined) {
    if (!uuidPattern.test(wanted)) refuse(`--uuid ${JSON.stringify(wanted)} is not a file-system UUID`);
    return wanted;
  }
  const found = await fileSystemsIn(store);
  if (found.length === 0) refuse(`${store.description} holds no file system with replicated metadata`);
  if (found.length > 1) refuse(`${store.description} holds ${found.length} file systems (${found.join(', ')}): pick one with --uuid`);
  return found[0];
}

/** The metadata directory must hold nothing, the flash tier nothing either (or not exist yet). */
async function checkDestination(request: RestoreRequest): Promise<void> {
  if (fs.existsSync(request.metaDir)) {
    if (!fs.statSync(request.metaDir).isDirectory()) refuse(`--meta ${request.metaDir} is not a directory`);
    if (fs.readdirSync(request.metaDir).length > 0) refuse(`--meta ${request.metaDir} is not empty (restore never replaces metadata)`);
  } else if (!fs.existsSync(path.dirname(path.resolve(request.metaDir)))) refuse(`the directory holding --meta ${request.metaDir} does not exist`);
  if (fs.existsSync(request.flash)) {
    const device = openFlashDevice(request.flash, {});
    try {
      const probe = await readSuperblock(device).catch(() => ({ kind: 'foreign' as const }));
      if (probe.kind !== 'empty' || !(await isBlank(device))) refuse(`--flash ${request.flash} is not blank (restore never overwrites data)`);
    } finally {
      await device.close();
    }
  } else if (!fs.existsSync(path.dirname(path.resolve(request.flash)))) refuse(`the directory holding --flash ${request.flash} does not exist`);
}

export async function restoreFileSystem(request: RestoreRequest): Promise<RestoreResult> {
  const clock = request.clock ?? systemClock;
  await checkDestination(request);
  const { store } = request;
  const fsUuid = await pickFileSystem(store, request.fsUuid);
  const listing = await listMeta(store, fsUuid);
  if (listing.foreign.length > 0)
    refuse(`${listing.foreign.length} objects under ${metaPrefix(fsUuid)} were not written by tierfs (${listing.foreign[0]}); move them away first`);
  const points = restorePoints(listing);
  if (points.length === 0) refuse(`file system ${fsUuid} has no complete metadata snapshot in ${store.description}`);
  const point = pickRestorePoint(points, request.atMs);
  if (!point) refuse(`no restore point at or before ${new Date(request.atMs!).toISOString()} (the oldest is ${new Date(points[0].timeMs).toISOString()})`);
  // A snapshot without its manifest is no history: the debris of an upload a crash cut short.
  const later = [...listing.snapshots.filter((s) => s.complete && s.seq > point.seq).flatMap((s) => s.keys), ...listing.logs.filter((l) => l.lastSeq > point.seq).map((l) => l.key)];
  if (later.length > 0 && !request.discardLater) {
    const laterPoints = points.filter((p) => p.seq > point.seq);
    refuse(
      laterPoints.length > 0
        ? `${laterPoints.length} restore points are newer than ${new Date(point.timeMs).toISOString()} (the newest ${new Date(laterPoints[laterPoints.length - 1].timeMs).toISOString()}); add --discard-later to drop them`
        : `the metadata log after change ${point.seq} cannot be applied (a gap or damage: ${later.length} objects beyond it); add --discard-later to restore to ${new Date(point.timeMs).toISOString()} and drop them`,
    );
  }
  const crypto = { fsUuid, key: request.encryptionKey ?? null };

  // Rebuild the metadata in a scratch directory: nothing is in place until it is whole.
  const existed = fs.existsSync(request.metaDir);
  fs.mkdirSync(request.metaDir, { recursive: true, mode: 0o700 });
  const scratch = path.join(request.metaDir, '.restoring');
  fs.mkdirSync(scratch, { mode: 0o700 });
  let meta: MetaStore | undefined;
  let result: RestoreResult;
  try {
    await downloadSnapshot(store, crypto, point, path.join(scratch, 'tierfs.db'));
    meta = new SqliteMetaStore(scratch, { create: false });
    if (meta.setting('uuid') !== fsUuid) throw new TierfsError('CORRUPT', `the snapshot of ${fsUuid} describes file system ${meta.setting('uuid') ?? 'none'}`);
    const check = meta.setting('encryptionKeyCheck');
    if (check !== undefined && request.encryptionKey === undefined) refuse('this file system encrypts its object tier: give its key (--encryption-key FILE)');
    if (check === undefined && request.encryptionKey !== undefined) refuse('this file system was formatted without encryption; --encryption-key does not apply');
    if (check !== undefined && keyCheck(request.encryptionKey!, fsUuid) !== check) refuse('the encryption key is not the one this file system was formatted with');
    meta.setReplicated(false); // replayed changes keep their own seqs
    meta.bulkLoad(true);
    const recordCount = await replayLogs(store, crypto, meta, point);
    // Flash offsets in the bucket are never read (every restore drops them), so dropping them is not logged.
    meta.dropFlashCopies();
    meta.bulkLoad(false);
    meta.restartReplicaLog(point.seq);
    meta.setReplicated(true); // the losses that follow are changes like any other, uploaded at the first serve
    const loss = forgetFlashContents(meta);
    meta.mutate(() => {
      meta!.setSetting('target', request.targetUrl);
      meta!.setSetting('restoredFromMs', String(point.timeMs));
      // Inode numbers issued after the point may be issued again: file handles from before (NFS) must not reach the new files.
      meta!.setSetting('generation', String(Number(meta!.setting('generation') ?? 1) + 1));
      // A new appliance: it takes the writer lease, or publishes its position as a follower, under an id of its own.
      meta!.setSetting('writerId', '');
      meta!.setSetting('followerId', '');
      if (request.follower) meta!.setSetting('follower', '1');
      meta!.setSetting('replicaUploadedSeq', String(point.seq));
      meta!.setSetting('replicaSnapshotSeq', String(point.snapshot.seq));
      meta!.setSetting('replicaSnapshotMs', String(point.snapshot.timeMs));
      meta!.setSetting('replicaLogBytesSinceSnapshot', String(point.logs.reduce((sum, l) => sum + l.sizeBytes, 0)));
      meta!.setSetting('replicaOldestSeq', String(points[0].seq));
      meta!.setSetting('replicaOldestMs', String(points[0].timeMs));
    });
    meta.commit();
    meta.close();
    meta = undefined;
    result = { fsUuid, point: { seq: point.seq, timeMs: point.timeMs }, recordCount, loss, discardedObjectCount: 0 };

    // Past every check: the flash tier, the later history, then the metadata into place and the superblock last.
    let created = false;
    if (!fs.existsSync(request.flash)) {
      createFlashFile(request.flash, request.sizeBytes ?? constants.flashSizeBytesDefault);
      created = true;
    }
    let device: FlashDevice | undefined;
    try {
      device = openFlashDevice(request.flash, { discard: created });
      if (device.sizeBytes < constants.flashSizeBytesMin) refuse(`--flash ${request.flash} is smaller than ${constants.flashSizeBytesMin} bytes`);
      for (const key of request.discardLater ? later : []) await store.delete(key);
      result.discardedObjectCount = request.discardLater ? later.length : 0;
      for (const name of fs.readdirSync(scratch)) fs.renameSync(path.join(scratch, name), path.join(request.metaDir, name));
      await writeSuperblock(device, { ...newSuperblock(device.sizeBytes, clock.nowMs()), uuid: fsUuid });
    } catch (error) {
      if (created) fs.rmSync(request.flash, { force: true });
      throw error;
    } finally {
      await device?.close();
    }
  } catch (error) {
    meta?.crash();
    // The directory was empty or missing: leave it so.
    if (existed) for (const name of fs.readdirSync(request.metaDir)) fs.rmSync(path.join(request.metaDir, name), { recursive: true, force: true });
    else fs.rmSync(request.metaDir, { recursive: true, force: true });
    throw error;
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  return result;
}

/** The snapshot's parts, each checked against its manifest, into `file`. */
async function downloadSnapshot(store: ObjectStore, crypto: { fsUuid: string; key: Buffer | null }, point: RestorePoint, file: string): Promise<void> {
  const { snapshot } = point;
  const manifestKey = snapshotManifestKey(crypto.fsUuid, snapshot.seq, snapshot.timeMs);
  const manifest = parseManifest(crypto.fsUuid, manifestKey, await decodeMetaObject(crypto, manifestKey, await getObject(store, manifestKey)), snapshot.seq);
  const handle = fs.openSync(file, 'wx', 0o600);
  try {
    let offset = 0;
    for (const [n, part] of manifest.parts.entries()) {
      const key = manifestKey.replace(/manifest$/, `part-${String(n).padStart(5, '0')}`);
      const plain = await decodeMetaObject(crypto, key, await getObject(store, key));
      if (plain.length !== part.bytes || sha256(plain) !== part.sha256) throw new TierfsError('CORRUPT', `${key}: does not match its manifest`);
      fs.writeSync(handle, plain, 0, plain.length, offset);
      offset += plain.length;
    }
    fs.fsyncSync(handle);
  } finally {
    fs.closeSync(handle);
  }
}

async function getObject(store: ObjectStore, key: string): Promise<Buffer> {
  try {
    return await store.get(key);
  } catch (error) {
    if ((error as { kind?: string }).kind === 'NotFound') throw new TierfsError('CORRUPT', `${key} is missing from the target`);
    throw error;
  }
}

/** Apply the point's log objects after its snapshot (a format-1 object repeated by an upload after a crash applies from where the last one ended). */
async function replayLogs(store: ObjectStore, crypto: { fsUuid: string; key: Buffer | null }, meta: MetaStore, point: RestorePoint): Promise<number> {
  let applied = point.snapshot.seq;
  let count = 0;
  for (const log of point.logs) {
    const lines = parseLogObject(log, await decodeMetaObject(crypto, log.key, await getObject(store, log.key)), applied);
    for (let i = 0; i < lines.length; i += 4096) meta.mutate(() => meta.replay(lines.slice(i, i + 4096)));
    count += lines.length;
    applied = log.lastSeq;
  }
  return count;
}
