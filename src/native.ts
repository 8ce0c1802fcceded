/** Loads tierfs's native helpers (device calls, CRC-32C, sd_notify), built from src/device/native at `npm ci`. */
import path from 'node:path';

export interface DeviceNative {
  alignedBuffer(bytes: number): ArrayBuffer;
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): void;
  discard(fd: number, offsetBytes: number, lengthBytes: number): void;
  blockDeviceBytes(fd: number): number;
  crc32cBlocks(data: Buffer, blockBytes: number, out: Buffer): void;
  crc32c(data: Buffer): number;
  /** One sd_notify datagram to $NOTIFY_SOCKET (a path or an @abstract name). */
  sdNotify(socketPath: string, message: string): void;
}

// src/ (TypeScript under tap) → ./device/native; dist/src → ../../src/device/native
const candidates = [
  path.join(__dirname, 'device', 'native', 'build', 'Release', 'tierfs_device.node'),
  path.join(__dirname, '..', '..', 'src', 'device', 'native', 'build', 'Release', 'tierfs_device.node'),
];

function load(): DeviceNative {
  for (const candidate of candidates) {
    try {
      return require(candidate) as DeviceNative;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  throw new Error(`tierfs device addon not built (run make build); looked in ${candidates.join(', ')}`);
}

export const native: DeviceNative = load();
