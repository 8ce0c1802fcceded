/** Loads the device helpers built from src/device/native at `npm ci`. */
import path from 'node:path';

export interface DeviceNative {
  alignedBuffer(bytes: number): ArrayBuffer;
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): void;
  discard(fd: number, offsetBytes: number, lengthBytes: number): void;
  blockDeviceBytes(fd: number): number;
}

// dist/src/device → ../../../src/device/native; src/device (ts under tap) → ./native
const candidates = [
  path.join(__dirname, 'native', 'build', 'Release', 'tierfs_device.node'),
  path.join(__dirname, '..', '..', '..', 'src', 'device', 'native', 'build', 'Release', 'tierfs_device.node'),
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
