/**
 * A follower's start (serve --follow), before anything is opened: an empty
 * metadata directory is restored from the writer's bucket (marked as a
 * follower's); a follower's metadata whose log is gone from the bucket (it
 * was stopped longer than the writer's retention window, or the writer
 * restarted its log) starts over from the newest restore point.  A
 * follower holds nothing of its own — its flash holds copies of what is in
 * packs, its metadata is the writer's — so starting over loses nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { constants } from '../constants';
import { openFlashDevice } from '../device/device';
import { TierfsError } from '../errors';
import { log } from '../log';
import { SqliteMetaStore } from '../meta/meta_store';
import { appliedSetting, followerSetting, logObjectsStartingAt, snapshotPast } from '../tier/follower';
import { openTarget, type ObjectStore } from '../tier/tier';
import { restoreFileSystem } from './restore';

export interface FollowerStart {
  flash: string;
  metaDir: string;
  /** The writer's bucket (needed for a first start; later the recorded one). */
  targetUrl?: string;
  encryptionKey?: Buffer;
  openStore?: (url: string) => ObjectStore;
}

/** What serve --follow found: a new follower, one that continues, or one that started over. */
export type FollowerStartKind = 'restored' | 'continues' | 'resynchronised';

/** Zero both ends of the flash tier (where the superblock and the blank probe look), or remove a flash file: restore then takes it as blank. */
async function blankFlash(flash: string): Promise<number | undefined> {
  if (!fs.existsSync(flash)) return undefined;
  const stat = fs.statSync(flash);
  if (stat.isFile()) {
    fs.rmSync(flash);
    return stat.size;
  }
  const device = openFlashDevice(flash, {});
  try {
    const span = Math.min(constants.blankProbeBytes, device.sizeBytes);
    const zeros = device.allocBuffer(span).fill(0);
    await device.write(zeros, 0);
    await device.write(zeros, Math.floor((device.sizeBytes - span) / constants.blockSizeBytes) * constants.blockSizeBytes);
    await device.sync();
  } finally {
    await device.close();
  }
  return undefined;
}

export async function prepareFollower(request: FollowerStart): Promise<FollowerStartKind> {
  const open = request.openStore ?? ((url: string) => openTarget(url));
  const empty = !fs.existsSync(request.metaDir) || fs.readdirSync(request.metaDir).length === 0;
  let kind: FollowerStartKind = 'restored';
  let url = request.targetUrl;
  let sizeBytes: number | undefined;
  if (!empty) {
    const meta = new SqliteMetaStore(request.metaDir, { create: false });
    let applied: number;
    let fsUuid: string;
    try {
      if (meta.setting(followerSetting) !== '1') return 'continues'; // a writer's: the engine refuses it with its own line
      applied = Number(meta.setting(appliedSetting) ?? 0);
      fsUuid = meta.setting('uuid')!;
      url = meta.setting('target') ?? url;
    } finally {
      meta.close();
    }
    if (url === undefined) throw new TierfsError('CORRUPT', `the follower's metadata in ${request.metaDir} records no target`);
    const store = open(url);
    try {
      if ((await logObjectsStartingAt(store, fsUuid, applied + 1)).length > 0) return 'continues';
      if (!(await snapshotPast(store, fsUuid, applied))) return 'continues'; // nothing new since: the writer is idle
    } finally {
      await store.close();
    }
    log.warn('follower: the log after the change it applied is gone from the bucket (stopped past the writer\'s retention window?): starting over from the newest restore point', { appliedSeq: applied });
    for (const name of fs.readdirSync(request.metaDir)) fs.rmSync(path.join(request.metaDir, name), { recursive: true, force: true });
    sizeBytes = await blankFlash(request.flash);
    kind = 'resynchronised';
  }
  if (url === undefined) throw new TierfsError('USAGE', 'serve --follow with an empty metadata directory needs --target: the writer\'s bucket it restores from');
  const store = open(url);
  try {
    const restored = await restoreFileSystem({ store, targetUrl: url, flash: request.flash, metaDir: request.metaDir, encryptionKey: request.encryptionKey, follower: true, sizeBytes });
    log.info(`follower: ${kind === 'restored' ? 'restored from the bucket' : 'started over from the bucket'}`, { fsUuid: restored.fsUuid, seq: restored.point.seq, pointMs: restored.point.timeMs });
  } finally {
    await store.close();
  }
  return kind;
}
