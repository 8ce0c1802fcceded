/**
 * Loads tierfs's native addons, built by node-gyp at `npm ci`:
 * src/device/native (device calls, CRC-32C, sd_notify) and src/fuse/native
 * (the libfuse 3 low-level binding).
 */
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

/** The addon `target` built in src/<dir>/native, from src/ (tap) or dist/src. */
export function loadAddon<T>(dir: string, target: string): T {
  const candidates = [
    path.join(__dirname, dir, 'native', 'build', 'Release', `${target}.node`),
    path.join(__dirname, '..', '..', 'src', dir, 'native', 'build', 'Release', `${target}.node`),
  ];
  for (const candidate of candidates) {
    try {
      return require(candidate) as T;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  throw new Error(`tierfs addon ${target} not built (run make build); looked in ${candidates.join(', ')}`);
}

export const native: DeviceNative = loadAddon<DeviceNative>('device', 'tierfs_device');
