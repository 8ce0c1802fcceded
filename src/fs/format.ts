/**
 * Creating a file system and opening one: the superblock on the flash tier,
 * the metadata database with the same UUID and a root directory.
 *
 * format refuses a flash tier that already holds tierfs or anything else, and
 * a metadata directory already in use, unless forced.  The superblock is
 * written last, so an interrupted format leaves nothing that opens.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import fsConstants from 'node:constants';
import path from 'node:path';
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import { createFlashFile, openFlashDevice, type FlashDevice, type OpenOptions } from '../device/device';
import { TierfsError } from '../errors';
import { log } from '../log';
import { ROOT_INO, SqliteMetaStore, type Extent, type MetaStore } from '../meta/meta_store';
import { FlashStore, newSuperblock, readSuperblock, writeSuperblock, type Superblock } from '../store/store';
import { defaultTieringOptions, openTarget, TieringEngine, type ObjectStore, type TieringOptions } from '../tier/tier';
import { FileSystem, type FileSystemOptions } from './file_system';

export interface FormatOptions {
  force?: boolean;
  /** Object target URL recorded with the file system (see src/tier/targets.ts). */
  target?: string;
  /** Encrypt the object tier with this key (32 bytes); only a check value is recorded, never the key. */
  encryptionKey?: Buffer;
  /** Owner of the root directory (default: the caller). */
  uid?: number;
  gid?: number;
  /** The creation time recorded (default: the system clock). */
  clock?: Clock;
}

const metaFiles = ['tierfs.db', 'tierfs.db-wal', 'tierfs.db-shm'];

export async function formatFileSystem(device: FlashDevice, metaDir: string, options: FormatOptions = {}): Promise<Superblock> {
  if (device.sizeBytes < constants.flashSizeBytesMin)
    throw new TierfsError('INVALID', `${device.path} is ${device.sizeBytes} bytes; the flash tier needs at least ${constants.flashSizeBytesMin}`);
  const probe = await readSuperblock(device).catch((error: unknown) => {
    if (error instanceof TierfsError && (error.code === 'CORRUPT' || error.code === 'VERSION')) return { kind: 'tierfs' as const };
    throw error;
  });
  if (!options.force && probe.kind === 'tierfs')
    throw new TierfsError('EXISTS', `${device.path} already holds a tierfs file system; use --force to format it again (destroys its data)`);
  if (!options.force && probe.kind === 'foreign')
    throw new TierfsError('NOT_OURS', `${device.path} holds data that is not tierfs; use --force to overwrite it`);
  const metaInUse = metaFiles.some((name) => fs.existsSync(path.join(metaDir, name)));
  if (!options.force && metaInUse)
    throw new TierfsError('EXISTS', `${metaDir} already holds tierfs metadata; use --force to replace it`);

  if (metaInUse) new SqliteMetaStore(metaDir, { create: false }).close(); // refuses metadata a running daemon holds
  for (const name of metaFiles) fs.rmSync(path.join(metaDir, name), { force: true });
  const sb = newSuperblock(device.sizeBytes, (options.clock ?? systemClock).nowMs());
  const meta = new SqliteMetaStore(metaDir, { create: true });
  try {
    meta.setSetting('uuid', sb.uuid);
    meta.setSetting('created', new Date(sb.createdMs).toISOString());
    if (options.target !== undefined) meta.setSetting('target', options.target);
    if (options.encryptionKey) meta.setSetting('encryptionKeyCheck', keyCheck(options.encryptionKey, sb.uuid));
    const now = (options.clock ?? systemClock).nowNs();
    const root = meta.createInode({
      mode: fsConstants.S_IFDIR | 0o755,
      uid: options.uid ?? process.getuid?.() ?? 0,
      gid: options.gid ?? process.getgid?.() ?? 0,
      nlink: 2,
      sizeBytes: 4096,
      rdev: 0,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      btimeNs: now,
    });
    assert.equal(root, ROOT_INO);
    meta.commit();
  } finally {
    meta.close();
  }
  device.release(constants.superblockSizeBytes, device.sizeBytes - constants.superblockSizeBytes);
  await writeSuperblock(device, sb);
  return sb;
}

/**
 * Format the flash tier at `flash` (a device, or a file created sparse with
 * `sizeBytes` when missing; a file created here is removed again if the
 * format is refused).  The CLI, the tests and the benchmark all format this way.
 */
export async function formatFlashPath(
  flash: string,
  metaDir: string,
  options: FormatOptions & { sizeBytes?: number } = {},
): Promise<Superblock> {
  let created = false;
  if (!fs.existsSync(flash)) {
    if (!fs.existsSync(path.dirname(path.resolve(flash))))
      throw new TierfsError('NOT_FOUND', `format: directory of ${flash} does not exist`);
    createFlashFile(flash, options.sizeBytes ?? constants.flashSizeBytesDefault);
    created = true;
  } else if (options.sizeBytes !== undefined) {
    const stat = fs.statSync(flash);
    if (!stat.isFile() || stat.size !== options.sizeBytes)
      throw new TierfsError('USAGE', `--size: ${flash} exists with another size; --size only applies to a new file`);
  }
  const device = openFlashDevice(flash, { discard: true }); // a new file system starts with nothing allocated
  try {
    return await formatFileSystem(device, metaDir, options);
  } catch (error) {
    if (created) fs.rmSync(flash, { force: true });
    throw error;
  } finally {
    await device.close();
  }
}

/** What a lost flash tier took: files whose newest data had no copy in a pack, and their bytes. */
export interface FlashLoss {
  lostFileCount: number;
  lostBytes: number;
  /** Bytes with a copy in a pack: every one is read from its pack from now on. */
  keptBytes: number;
}

/**
 * The flash tier's contents are gone (a replaced disk, a restore): every
 * extent with a pack copy becomes OBJECT (one statement); every one without
 * is deleted and its range recorded as lost (reads of it fail until it is
 * rewritten).
 */
export function forgetFlashContents(meta: MetaStore): FlashLoss {
  const loss: FlashLoss = { lostFileCount: 0, lostBytes: 0, keptBytes: 0 };
  const files = new Set<number>();
  meta.mutate(() => meta.dropFlashCopies());
  // What is left on flash is FLASH-only: each page taken is deleted, so the first page is always the next.
  for (;;) {
    const page = meta.coldExtents('flash', Number.MAX_SAFE_INTEGER, 1024);
    if (page.length === 0) break;
    meta.mutate(() => {
      for (const e of page) {
        meta.deleteExtent(e.ino, e.fileOffsetBytes);
        const inode = meta.getInode(e.ino);
        meta.addLost(e.ino, e.fileOffsetBytes, e.lengthBytes, inode ? Number(inode.mtimeNs / 1_000_000n) : e.accessedMs);
        loss.lostBytes += e.lengthBytes;
        files.add(e.ino);
      }
    });
  }
  loss.lostFileCount = files.size;
  loss.keptBytes = meta.residencyTotals().objectOnlyBytes;
  return loss;
}

/** Both ends of the device read as zeros: nothing on it to destroy. */
export async function isBlank(device: FlashDevice): Promise<boolean> {
  const span = Math.min(constants.blankProbeBytes, device.sizeBytes);
  const buffer = device.allocBuffer(span);
  for (const offset of [0, Math.floor((device.sizeBytes - span) / constants.blockSizeBytes) * constants.blockSizeBytes]) {
    await device.read(buffer, offset);
    if (!buffer.every((byte) => byte === 0)) return false;
  }
  return true;
}

/**
 * Whether the blocks the metadata maps on flash read as zeros (a sample of
 * up to blankProbeExtentCount extents, spread over all of them): a disk that
 * was replaced does; one whose superblock alone was damaged does not, and
 * must not be taken for blank (its data is still there: run fsck).
 */
async function mappedBlocksBlank(device: FlashDevice, meta: MetaStore): Promise<boolean> {
  let count = 0;
  for (const _ of meta.allExtents()) count += 1;
  const stride = Math.max(1, Math.floor(count / constants.blankProbeExtentCount));
  const offsets: number[] = []; // taken first: no statement stays open across the reads
  let index = 0;
  for (const e of meta.allExtents())
    if (index++ % stride === 0 && e.flashOffsetBytes !== null && e.flashOffsetBytes + constants.blockSizeBytes <= device.sizeBytes) offsets.push(e.flashOffsetBytes);
  const block = device.allocBuffer(constants.blockSizeBytes);
  for (const offset of offsets) {
    await device.read(block, offset);
    if (!block.every((byte) => byte === 0)) return false;
  }
  return true;
}

/**
 * The flash tier of a file system whose metadata is here came back blank (an
 * instance-store disk after a stop/start, a replaced drive): lay a superblock
 * for the same file system on it and forget what it held.  A device holding
 * anything at all is refused by FlashStore.open as before.
 */
async function adoptBlankFlash(device: FlashDevice, meta: MetaStore, clock: Clock): Promise<FlashLoss | undefined> {
  const uuid = meta.setting('uuid');
  if (uuid === undefined || (await readSuperblock(device)).kind !== 'empty' || !(await isBlank(device))) return undefined;
  if (!(await mappedBlocksBlank(device, meta)))
    throw new TierfsError('NOT_OURS', `${device.path} has no superblock but still holds the data ${meta.path} maps there (a damaged superblock, not a new disk): run tierfs fsck, or restore`);
  const loss = forgetFlashContents(meta);
  meta.setSetting('flashReplacedMs', String(clock.nowMs()));
  meta.commit(); // before the superblock: a crash in between leaves a blank device and metadata that no longer needs it
  await writeSuperblock(device, { ...newSuperblock(device.sizeBytes, clock.nowMs()), uuid });
  log.error('the flash tier was blank: a new one laid for the same file system; data only it held is lost', {
    device: device.path,
    lostFiles: loss.lostFileCount,
    lostBytes: loss.lostBytes,
    fromPacksBytes: loss.keptBytes,
  });
  return loss;
}

/** A value that shows a key is the one given at format, and nothing about the key. */
export function keyCheck(key: Buffer, uuid: string): string {
  return createHmac('sha256', key).update(`tierfs key check ${uuid}`).digest('hex');
}

export interface OpenTierOptions extends Partial<Omit<TieringOptions, 'objects' | 'encryptionKey'>> {
  /** Target URL; by default the one recorded at format.  A different one is refused. */
  url?: string;
  /** Use this object store instead of opening the URL (tests wrap one with faults). */
  objects?: ObjectStore;
  encryptionKey?: Buffer;
}

/** Watermarks set at run time (tierfs watermark set) are kept in the metadata; serve's own settings override them. */
function storedWatermarks(meta: MetaStore): Partial<TieringOptions> {
  const high = meta.setting('watermarkHighPercent');
  const low = meta.setting('watermarkLowPercent');
  return high === undefined || low === undefined ? {} : { watermarkHighPercent: Number(high), watermarkLowPercent: Number(low) };
}

/** A file system opened from its flash tier and metadata directory, with what it owns. */
export interface OpenFileSystem {
  fs: FileSystem;
  store: FlashStore;
  meta: MetaStore;
  device: FlashDevice;
  /** The tiering engine, when the file system has an object target. */
  tier: TieringEngine | undefined;
  /** Commit everything and close all parts. */
  close(): Promise<void>;
}

export async function openFileSystem(
  flashPath: string | FlashDevice,
  metaDir: string,
  options: FileSystemOptions & OpenOptions & { tier?: OpenTierOptions; openMeta?: (dir: string) => MetaStore } = {},
): Promise<OpenFileSystem> {
  let meta: MetaStore | undefined;
  let objects: ObjectStore | undefined;
  let device: FlashDevice | undefined = typeof flashPath === 'string' ? undefined : flashPath;
  try {
    // The metadata first: a second daemon on the same file system is refused at once, where the flash tier's lock would wait for its holder.
    meta = options.openMeta ? options.openMeta(metaDir) : new SqliteMetaStore(metaDir, { create: false });
    device ??= openFlashDevice(flashPath as string, { direct: options.direct, discard: options.discard, io: options.io });
    const clock = options.clock ?? systemClock;
    await adoptBlankFlash(device, meta, clock);
    const store = await FlashStore.open(device, meta, () => clock.nowMs());
    const fileSystem = new FileSystem(meta, store, options);
    await fileSystem.reclaimOrphans();
    let tier: TieringEngine | undefined;
    const recorded = meta.setting('target');
    const url = options.tier?.url ?? recorded;
    if (options.tier?.url !== undefined && recorded !== undefined && options.tier.url !== recorded)
      throw new TierfsError('USAGE', `this file system's packs are in ${recorded}; --target ${options.tier.url} differs`);
    if (url !== undefined || options.tier?.objects) {
      const check = meta.setting('encryptionKeyCheck');
      const key = options.tier?.encryptionKey;
      if (check !== undefined && key === undefined)
        throw new TierfsError('USAGE', 'this file system encrypts its object tier: give its key (--encryption-key FILE)');
      if (check === undefined && key !== undefined) throw new TierfsError('USAGE', 'this file system was formatted without encryption; --encryption-key does not apply');
      if (check !== undefined && key !== undefined && keyCheck(key, store.superblock.uuid) !== check)
        throw new TierfsError('USAGE', 'the encryption key is not the one this file system was formatted with');
      if (recorded === undefined && url !== undefined) {
        // Recorded only once everything else checked out: a refused serve changes nothing.
        meta.setSetting('target', url);
        meta.commit();
      }
      objects = options.tier?.objects ?? openTarget(url!, undefined, clock);
      tier = new TieringEngine(store, {
        ...defaultTieringOptions,
        clock,
        ...storedWatermarks(meta),
        ...options.tier,
        objects,
        openStore: options.tier?.openStore ?? ((added: string) => openTarget(added, undefined, clock)),
        encryptionKey: key ?? null,
        onReadOnly: (reason) => {
          fileSystem.setReadOnly(reason);
          options.tier?.onReadOnly?.(reason);
        },
      });
      await tier.start();
    } else if (meta.setReplicated(false)) {
      log.warn('metadata replication is off: this file system has no object target');
      meta.commit();
    }
    const opened = meta;
    const engine = tier;
    const flash = device;
    return {
      fs: fileSystem,
      store,
      meta: opened,
      device: flash,
      tier,
      async close() {
        await engine?.stop();
        await fileSystem.close();
        await objects?.close();
        opened.close();
        await flash.close();
      },
    };
  } catch (error) {
    await objects?.close();
    meta?.close();
    await device?.close();
    throw error;
  }
}
