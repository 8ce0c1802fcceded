/**
 * The superblock: the first block of the flash tier says it belongs to
 * tierfs, which format version wrote it, and which file system it is (the
 * UUID the metadata database must carry too).
 *
 * Layout (little endian): magic "TIERFSSB" | u32 formatVersion | u32 blockSizeBytes
 * | 16-byte uuid | u64 sizeBytes | u64 createdMs | u32 CRC-32C of the block with
 * this field zero.  The rest of the block is zero.
 */
import crypto from 'node:crypto';
import { crc32c } from '../checksum';
import { constants } from '../constants';
import type { FlashDevice } from '../device/device';
import { TierfsError } from '../errors';

export const superblockMagic = Buffer.from('TIERFSSB', 'latin1');
export const formatVersion = 1;
const crcOffset = 56;

export interface Superblock {
  formatVersion: number;
  blockSizeBytes: number;
  uuid: string;
  sizeBytes: number;
  createdMs: number;
}

export function encodeSuperblock(sb: Superblock, block: Buffer): void {
  block.fill(0);
  superblockMagic.copy(block, 0);
  block.writeUInt32LE(sb.formatVersion, 8);
  block.writeUInt32LE(sb.blockSizeBytes, 12);
  Buffer.from(sb.uuid.replace(/-/g, ''), 'hex').copy(block, 16);
  block.writeBigUInt64LE(BigInt(sb.sizeBytes), 32);
  block.writeBigUInt64LE(BigInt(sb.createdMs), 40);
  block.writeUInt32LE(crc32c(block.subarray(0, constants.superblockSizeBytes)), crcOffset);
}

function formatUuid(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** What block 0 holds: our superblock, nothing at all, or something else. */
export type Probe = { kind: 'tierfs'; superblock: Superblock } | { kind: 'empty' } | { kind: 'foreign' };

export function decodeSuperblock(block: Buffer, path: string): Probe {
  if (!block.subarray(0, 8).equals(superblockMagic)) {
    return block.every((byte) => byte === 0) ? { kind: 'empty' } : { kind: 'foreign' };
  }
  const stored = block.readUInt32LE(crcOffset);
  const copy = Buffer.from(block.subarray(0, constants.superblockSizeBytes));
  copy.writeUInt32LE(0, crcOffset);
  if (crc32c(copy) !== stored) throw new TierfsError('CORRUPT', `${path}: tierfs superblock is corrupt (checksum mismatch)`);
  const sb: Superblock = {
    formatVersion: block.readUInt32LE(8),
    blockSizeBytes: block.readUInt32LE(12),
    uuid: formatUuid(block.subarray(16, 32).toString('hex')),
    sizeBytes: Number(block.readBigUInt64LE(32)),
    createdMs: Number(block.readBigUInt64LE(40)),
  };
  if (sb.formatVersion > formatVersion)
    throw new TierfsError(
      'VERSION',
      `${path}: tierfs format version ${sb.formatVersion} is newer than this tierfs (${formatVersion}); upgrade tierfs`,
    );
  if (sb.blockSizeBytes !== constants.blockSizeBytes)
    throw new TierfsError('CORRUPT', `${path}: block size ${sb.blockSizeBytes} is not ${constants.blockSizeBytes}`);
  return { kind: 'tierfs', superblock: sb };
}

export async function readSuperblock(device: FlashDevice): Promise<Probe> {
  const block = device.allocBuffer(constants.superblockSizeBytes);
  await device.read(block, 0);
  return decodeSuperblock(block, device.path);
}

export async function writeSuperblock(device: FlashDevice, sb: Superblock): Promise<void> {
  const block = device.allocBuffer(constants.superblockSizeBytes);
  encodeSuperblock(sb, block);
  await device.write(block, 0);
  await device.sync();
}

export function newSuperblock(sizeBytes: number, nowMs: number): Superblock {
  return {
    formatVersion,
    blockSizeBytes: constants.blockSizeBytes,
    uuid: crypto.randomUUID(),
    sizeBytes,
    createdMs: nowMs,
  };
}
