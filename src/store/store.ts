/**
 * The flash extent store as the layers above see it: file bytes by inode and
 * offset, copy-on-write on flash with a checksum per block, the superblock,
 * and the group commit that makes flash data and metadata durable together.
 */
export { FlashStore, sameExtent, type FsckReport, type StoreCounters, type TierHooks } from './flash_store';
export {
  readSuperblock,
  writeSuperblock,
  newSuperblock,
  formatVersion,
  type Superblock,
  type Probe,
} from './superblock';
