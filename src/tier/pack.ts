/**
 * Packs: immutable objects of many extents, self-describing so that the
 * bucket alone can rebuild the mapping (DESIGN.md invariant 7).
 *
 *   header (64 B)  "TIERPACK", format version, flags, file-system UUID,
 *                  pack id, nonce prefix, CRC-32C of the header
 *   entries        the stored bytes of each extent, back to back
 *   index          creation time, then per entry: inode, file offset, plain length, stored offset
 *                  and length, encoding, CRC-32C of the stored bytes, and the
 *                  extent's per-block CRC-32Cs of its plain bytes
 *   trailer (32 B) index offset and length, entry count, CRC-32C of the
 *                  stored index, "TIERPEND"
 *
 * Entries are encoded one by one, so a recall fetches one entry (or, when it
 * is stored plain, just the blocks it needs) with one ranged GET.  An entry
 * whose plain bytes end in zeros for at least an eighth of its length (the
 * padding of a small file's last block) is stored without them, so the
 * object tier holds about what the files hold; the index keeps the plain
 * length and every block's CRC, and the reader restores the zeros before it
 * verifies.  An entry is deflated when that saves at least an eighth, then, when the file system
 * has a key, sealed with AES-256-GCM: nonce = the pack's random 8-byte
 * prefix + the entry's index, authenticated data = UUID + pack id + index,
 * so an entry cannot be swapped for another one, from this pack or another.
 * The index is sealed the same way (index 0xFFFFFFFF).
 */
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes, webcrypto } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { crc32c } from '../checksum';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import { PACK_ENCODING, type Ino, type PackId, type PackRef } from '../meta/meta_store';

/** 2: entries may be stored without their zero tail (PACK_ENCODING.zeroTail). */
export const packFormatVersion = 2;
const HEADER_BYTES = 64;
const TRAILER_BYTES = 32;
const INDEX_ENTRY_BYTES = 40;
const TAG_BYTES = 16;
const INDEX_NONCE_INDEX = 0xffffffff;
const MAGIC = Buffer.from('TIERPACK');
const END_MAGIC = Buffer.from('TIERPEND');
const FLAG_ENCRYPTED = 1;

export function newPackId(random: (bytes: number) => Buffer = randomBytes): PackId {
  return random(16).toString('hex') as PackId;
}

/** `<fs-uuid>/packs/<2 hex>/<pack-id>`: spread over key prefixes (per-prefix request rates of S3). */
export function packKey(fsUuid: string, packId: PackId): string {
  return `${fsUuid}/packs/${packId.slice(0, 2)}/${packId}`;
}

export function packKeyPrefix(fsUuid: string): string {
  return `${fsUuid}/packs/`;
}

/** The pack id a key names, or undefined for a key that is not one of ours. */
export function packIdOfKey(fsUuid: string, key: string): PackId | undefined {
  const match = /^([^/]+)\/packs\/([0-9a-f]{2})\/([0-9a-f]{32})$/.exec(key);
  if (!match || match[1] !== fsUuid || match[3].slice(0, 2) !== match[2]) return undefined;
  return match[3] as PackId;
}

function uuidBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  assert.match(hex, /^[0-9a-f]{32}$/);
  return Buffer.from(hex, 'hex');
}

function uuidText(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Key material: 32 bytes, from a file holding them raw or as 64 hex digits. */
export function parseEncryptionKey(content: Buffer, source: string): Buffer {
  if (content.length === 32) return Buffer.from(content);
  const text = content.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  throw new TierfsError('USAGE', `${source}: an encryption key is 32 bytes, raw or as 64 hex digits`);
}

export interface PackCrypto {
  fsUuid: string;
  key: Buffer | null;
}

function aad(fsUuid: string, packId: PackId, index: number): Buffer {
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(index >>> 0);
  return Buffer.concat([uuidBytes(fsUuid), Buffer.from(packId, 'hex'), tail]);
}

function iv(nonce: Buffer, index: number): Buffer {
  const out = Buffer.alloc(12);
  nonce.copy(out, 0, 0, 8);
  out.writeUInt32BE(index >>> 0, 8);
  return out;
}

function seal(crypto: PackCrypto, packId: PackId, nonce: Buffer, index: number, plain: Buffer): Buffer {
  const cipher = createCipheriv('aes-256-gcm', crypto.key!, iv(nonce, index));
  cipher.setAAD(aad(crypto.fsUuid, packId, index));
  return Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
}

function open(crypto: PackCrypto, packId: PackId, nonce: Buffer, index: number, stored: Buffer): Buffer {
  if (stored.length < TAG_BYTES) throw new TierfsError('CHECKSUM', `pack ${packId} entry ${index}: too short to be sealed`);
  const decipher = createDecipheriv('aes-256-gcm', crypto.key!, iv(nonce, index));
  decipher.setAAD(aad(crypto.fsUuid, packId, index));
  decipher.setAuthTag(stored.subarray(stored.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(stored.subarray(0, stored.length - TAG_BYTES)), decipher.final()]);
  } catch (error) {
    throw new TierfsError('CHECKSUM', `pack ${packId} entry ${index}: authentication failed (corrupt, or another key)`, { cause: error });
  }
}

/** One extent as the index describes it. */
export interface PackEntry {
  ino: Ino;
  fileOffsetBytes: number;
  lengthBytes: number;
  storedOffsetBytes: number;
  storedLengthBytes: number;
  encoding: number;
  storedCrc: number;
  checksums: Buffer;
}

/** Builds one pack in memory, entry by entry. */
export class PackWriter {
  readonly packId: PackId;
  readonly nonce: Buffer;
  private readonly parts: Buffer[] = [];
  readonly entries: PackEntry[] = [];
  private storedBytes = HEADER_BYTES;
  logicalBytes = 0;

  constructor(
    private readonly crypto: PackCrypto,
    readonly createdMs: number,
    /** Pack ids and nonces (the simulation passes a seeded one, so a seed names the same packs). */
    random: (bytes: number) => Buffer = randomBytes,
  ) {
    this.packId = newPackId(random);
    this.nonce = crypto.key ? random(8) : Buffer.alloc(8);
    const header = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(packFormatVersion, 8);
    header.writeUInt32LE(crypto.key ? FLAG_ENCRYPTED : 0, 12);
    uuidBytes(crypto.fsUuid).copy(header, 16);
    Buffer.from(this.packId, 'hex').copy(header, 32);
    this.nonce.copy(header, 48);
    header.writeUIntLE(0, 56, 4); // reserved
    header.writeUInt32LE(crc32c(header.subarray(0, 60)), 60);
    this.parts.push(header);
  }

  get sizeBytes(): number {
    return this.storedBytes;
  }

  /** Add the plain bytes of one extent (kept by reference until finish(): the caller must not reuse them); returns where it lies. */
  add(ino: Ino, fileOffsetBytes: number, plain: Buffer, checksums: Buffer, compress: boolean): PackRef {
    assert.ok(plain.length > 0 && plain.length <= constants.extentSizeBytesMax && plain.length % constants.blockSizeBytes === 0);
    assert.equal(checksums.length, (plain.length / constants.blockSizeBytes) * 4);
    const index = this.entries.length;
    let encoding = 0;
    let stored = plain;
    const keptBytes = Math.max(1, withoutZeroTail(plain)); // never empty: a ranged GET of nothing is no GET
    if (plain.length - keptBytes >= plain.length / 8) {
      stored = plain.subarray(0, keptBytes);
      encoding |= PACK_ENCODING.zeroTail;
    }
    if (compress) {
      const deflated = zlib.deflateRawSync(stored, { level: 1 });
      if (deflated.length <= stored.length - stored.length / 8) {
        stored = deflated;
        encoding |= PACK_ENCODING.deflate;
      }
    }
    if (this.crypto.key) {
      stored = seal(this.crypto, this.packId, this.nonce, index, stored);
      encoding |= PACK_ENCODING.aes256gcm;
    }
    const entry: PackEntry = {
      ino,
      fileOffsetBytes,
      lengthBytes: plain.length,
      storedOffsetBytes: this.storedBytes,
      storedLengthBytes: stored.length,
      encoding,
      storedCrc: crc32c(stored),
      checksums: Buffer.from(checksums),
    };
    this.entries.push(entry);
    this.parts.push(stored);
    this.storedBytes += stored.length;
    this.logicalBytes += plain.length;
    return { packId: this.packId, entryIndex: index, storedOffsetBytes: entry.storedOffsetBytes, storedLengthBytes: stored.length, encoding, skipBytes: 0 };
  }

  /** The whole object, as parts to upload (entries that lie back to back in one buffer go as one part). */
  finish(): Buffer[] {
    const indexPlain = Buffer.concat(
      this.entries.map((e) => {
        const fixed = Buffer.alloc(INDEX_ENTRY_BYTES);
        fixed.writeBigUInt64LE(BigInt(e.ino), 0);
        fixed.writeBigUInt64LE(BigInt(e.fileOffsetBytes), 8);
        fixed.writeUInt32LE(e.lengthBytes, 16);
        fixed.writeBigUInt64LE(BigInt(e.storedOffsetBytes), 20);
        fixed.writeUInt32LE(e.storedLengthBytes, 28);
        fixed.writeUInt32LE(e.encoding, 32);
        fixed.writeUInt32LE(e.storedCrc, 36);
        return Buffer.concat([fixed, e.checksums]);
      }),
    );
    const created = Buffer.alloc(8);
    created.writeBigUInt64LE(BigInt(this.createdMs));
    const indexStored = this.crypto.key
      ? seal(this.crypto, this.packId, this.nonce, INDEX_NONCE_INDEX, Buffer.concat([created, indexPlain]))
      : Buffer.concat([created, indexPlain]);
    const trailer = Buffer.alloc(TRAILER_BYTES);
    trailer.writeBigUInt64LE(BigInt(this.storedBytes), 0);
    trailer.writeUInt32LE(indexStored.length, 8);
    trailer.writeUInt32LE(this.entries.length, 12);
    trailer.writeUInt32LE(crc32c(indexStored), 16);
    END_MAGIC.copy(trailer, 24);
    const parts: Buffer[] = [];
    for (const part of [...this.parts, indexStored, trailer]) {
      const last = parts[parts.length - 1];
      if (last && last.buffer === part.buffer && last.byteOffset + last.length === part.byteOffset)
        parts[parts.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + part.length);
      else parts.push(part);
    }
    return parts;
  }
}

/**
 * Plain bytes of one stored entry (verifies its encoding; the caller verifies
 * block checksums).  The entry holds at least `lengthBytesMin` plain bytes:
 * the extent that refers to it may have lost a tail to a truncate since.
 */
/**
 * The plain bytes of one stored entry, at least `lengthBytesMin` long.
 * Opening and inflating an entry of more than decodeOnLoopBytesMax run on
 * the thread pool (WebCrypto's AES-GCM, zlib's asynchronous inflate), so a
 * recall of sealed or deflated data never holds the event loop for
 * milliseconds; smaller ones are cheaper to do at once.
 */
export async function decodeEntry(crypto: PackCrypto, packId: PackId, nonce: Buffer | null, ref: PackRef, stored: Buffer, lengthBytesMin: number): Promise<Buffer> {
  if ((ref.encoding & ~knownEncodings) !== 0)
    throw new TierfsError('VERSION', `pack ${packId} entry ${ref.entryIndex}: encoding ${ref.encoding} is not one this tierfs knows`);
  const offLoop = stored.length > decodeOnLoopBytesMax;
  let data = stored;
  if (ref.encoding & PACK_ENCODING.aes256gcm) {
    if (!crypto.key) throw new TierfsError('INVALID', `pack ${packId} is encrypted and no key was given`);
    data = offLoop ? await openOffLoop(crypto, packId, nonce!, ref.entryIndex, data) : open(crypto, packId, nonce!, ref.entryIndex, data);
  }
  if (ref.encoding & PACK_ENCODING.deflate) {
    try {
      const options = { maxOutputLength: constants.extentSizeBytesMax };
      data = offLoop ? await inflateRaw(data, options) : zlib.inflateRawSync(data, options);
    } catch (error) {
      throw new TierfsError('CHECKSUM', `pack ${packId} entry ${ref.entryIndex}: does not inflate`, { cause: error });
    }
  }
  if (ref.encoding & PACK_ENCODING.zeroTail && data.length < lengthBytesMin) {
    // The zeros that were not stored; the block checksums the caller verifies cover them.
    const whole = Buffer.alloc(lengthBytesMin);
    data.copy(whole);
    data = whole;
  }
  if (data.length < lengthBytesMin || data.length > constants.extentSizeBytesMax)
    throw new TierfsError('CHECKSUM', `pack ${packId} entry ${ref.entryIndex}: ${data.length} plain bytes, at least ${lengthBytesMin} expected`);
  return data;
}

/** Entries up to this size are opened and inflated on the event loop (a thread-pool hop costs more). */
const decodeOnLoopBytesMax = 64 * 1024;
const inflateRaw = promisify(zlib.inflateRaw) as (data: Buffer, options: zlib.ZlibOptions) => Promise<Buffer>;
/** The file system's key as WebCrypto wants it, imported once per key. */
const webKeys = new WeakMap<Buffer, Promise<webcrypto.CryptoKey>>();

/** `open` on the thread pool: WebCrypto's AES-GCM takes the same layout (ciphertext, then the 16-byte tag). */
async function openOffLoop(crypto: PackCrypto, packId: PackId, nonce: Buffer, index: number, stored: Buffer): Promise<Buffer> {
  if (stored.length < TAG_BYTES) throw new TierfsError('CHECKSUM', `pack ${packId} entry ${index}: too short to be sealed`);
  const key = crypto.key!;
  let webKey = webKeys.get(key);
  if (!webKey) {
    webKey = webcrypto.subtle.importKey('raw', key, 'AES-GCM', false, ['decrypt']);
    webKeys.set(key, webKey);
  }
  try {
    const plain = await webcrypto.subtle.decrypt({ name: 'AES-GCM', iv: iv(nonce, index), additionalData: aad(crypto.fsUuid, packId, index), tagLength: TAG_BYTES * 8 }, await webKey, stored);
    return Buffer.from(plain);
  } catch (error) {
    throw new TierfsError('CHECKSUM', `pack ${packId} entry ${index}: authentication failed (corrupt, or another key)`, { cause: error });
  }
}

const knownEncodings = PACK_ENCODING.deflate | PACK_ENCODING.aes256gcm | PACK_ENCODING.zeroTail;

/** The length of `plain` without its trailing zero bytes (words of 8 at a time where they are aligned). */
export function withoutZeroTail(plain: Buffer): number {
  let end = plain.length;
  while (end > 0 && end % 8 !== 0 && plain[end - 1] === 0) end--;
  if (end % 8 === 0 && plain.byteOffset % 8 === 0) {
    const words = new BigUint64Array(plain.buffer, plain.byteOffset, end / 8);
    let word = words.length;
    while (word > 0 && words[word - 1] === 0n) word--;
    end = word * 8;
  }
  while (end > 0 && plain[end - 1] === 0) end--;
  return end;
}

export interface PackDescription {
  version: number;
  fsUuid: string;
  packId: PackId;
  encrypted: boolean;
  createdMs: number;
  entries: PackEntry[];
}

/** Read a whole pack object back: header, index and the CRC of every entry (fsck, rebuild, tests). */
export function describePack(object: Buffer, crypto: PackCrypto): PackDescription {
  const bad = (why: string) => new TierfsError('CORRUPT', `not a valid tierfs pack: ${why}`);
  if (object.length < HEADER_BYTES + TRAILER_BYTES) throw bad('too short');
  const header = object.subarray(0, HEADER_BYTES);
  if (!header.subarray(0, 8).equals(MAGIC)) throw bad('no TIERPACK magic');
  if (header.readUInt32LE(60) !== crc32c(header.subarray(0, 60))) throw bad('header checksum mismatch');
  const version = header.readUInt32LE(8);
  if (version > packFormatVersion) throw new TierfsError('VERSION', `pack format ${version} is newer than this tierfs knows (${packFormatVersion})`);
  const encrypted = (header.readUInt32LE(12) & FLAG_ENCRYPTED) !== 0;
  const fsUuid = uuidText(header.subarray(16, 32));
  const packId = header.subarray(32, 48).toString('hex') as PackId;
  const nonce = header.subarray(48, 56);
  const trailer = object.subarray(object.length - TRAILER_BYTES);
  if (!trailer.subarray(24, 32).equals(END_MAGIC)) throw bad('no TIERPEND trailer (truncated?)');
  const indexOffset = Number(trailer.readBigUInt64LE(0));
  const indexLength = trailer.readUInt32LE(8);
  const entryCount = trailer.readUInt32LE(12);
  if (indexOffset + indexLength + TRAILER_BYTES !== object.length) throw bad('index out of place');
  const indexStored = object.subarray(indexOffset, indexOffset + indexLength);
  if (crc32c(indexStored) !== trailer.readUInt32LE(16)) throw bad('index checksum mismatch');
  if (encrypted && !crypto.key) throw new TierfsError('INVALID', `pack ${packId} is encrypted and no key was given`);
  const index = encrypted ? open({ ...crypto, fsUuid }, packId, nonce, INDEX_NONCE_INDEX, indexStored) : indexStored;
  const createdMs = Number(index.readBigUInt64LE(0));
  const entries: PackEntry[] = [];
  let at = 8;
  for (let i = 0; i < entryCount; i++) {
    if (at + INDEX_ENTRY_BYTES > index.length) throw bad('index shorter than its entry count');
    const lengthBytes = index.readUInt32LE(at + 16);
    const sums = (lengthBytes / constants.blockSizeBytes) * 4;
    const entry: PackEntry = {
      ino: Number(index.readBigUInt64LE(at)) as Ino,
      fileOffsetBytes: Number(index.readBigUInt64LE(at + 8)),
      lengthBytes,
      storedOffsetBytes: Number(index.readBigUInt64LE(at + 20)),
      storedLengthBytes: index.readUInt32LE(at + 28),
      encoding: index.readUInt32LE(at + 32),
      storedCrc: index.readUInt32LE(at + 36),
      checksums: Buffer.from(index.subarray(at + INDEX_ENTRY_BYTES, at + INDEX_ENTRY_BYTES + sums)),
    };
    at += INDEX_ENTRY_BYTES + sums;
    const stored = object.subarray(entry.storedOffsetBytes, entry.storedOffsetBytes + entry.storedLengthBytes);
    if (entry.storedOffsetBytes + entry.storedLengthBytes > indexOffset || crc32c(stored) !== entry.storedCrc)
      throw bad(`entry ${i} checksum mismatch`);
    entries.push(entry);
  }
  return { version, fsUuid, packId, encrypted, createdMs, entries };
}
