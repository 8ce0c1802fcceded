// Test helpers: a formatted file system in a temporary directory, removed by teardown.
import { systemClock, type Clock } from '../../src/clock';
import 'tap';

type Test = tap.Test;
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SimulatedDevice, type FlashDevice } from '../../src/device/device';
import { isTierfsError } from '../../src/errors';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS, ROOT_INO, type Ino, type OpenFileSystem, type OpenTierOptions } from '../../src/fs/fs';
import type { FileSystem } from '../../src/fs/fs';
import type { TieringEngine } from '../../src/tier/tier';

export interface Scratch {
  dir: string;
  flash: string;
  meta: string;
}

export function scratchDir(t: Test, prefix = 'tierfs-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function formatScratch(t: Test, sizeBytes = 128 * 2 ** 20): Promise<Scratch> {
  const dir = scratchDir(t);
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  await formatFlashPath(flash, meta, { sizeBytes });
  return { dir, flash, meta };
}

/** Open the scratch file system; teardown closes it if the test did not. */
export async function openScratch(t: Test, scratch: Scratch, clock?: Clock): Promise<OpenFileSystem> {
  const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0, clock });
  t.teardown(() => opened.close().catch(() => undefined));
  return opened;
}

/** A seeded PRNG (mulberry32): every random test prints its seed and replays from it. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(): number {
  const text = process.env.TIERFS_SEED;
  return text ? Number(text) : Math.floor(Math.random() * 2 ** 31);
}

/** Deterministic bytes for (seed, length): a xorshift32 stream, four bytes a step (the simulation writes many MiB). */
export function pattern(seed: number, length: number): Buffer {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, length);
}

/** The TierfsError code a promise fails with, or 'ok'. */
export async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    if (isTierfsError(error)) return error.code;
    throw error;
  }
}

/** A simulated device whose writes wait while held: tests land operations between a write's I/O and its mapping. */
export function heldDevice(sizeBytes: number) {
  const sim = new SimulatedDevice(sizeBytes);
  let gate: Promise<void> | undefined;
  let open: () => void = () => undefined;
  let arrived: () => void = () => undefined;
  let writeArrived = Promise.resolve();
  const device: FlashDevice = {
    path: sim.path, sizeBytes: sim.sizeBytes, direct: false, io: 'memory',
    report: () => sim.report(),
    allocBuffer: (bytes) => sim.allocBuffer(bytes),
    read: (buffer, offset) => sim.read(buffer, offset),
    readNow: (buffer, offset) => sim.readNow(buffer, offset),
    write: async (buffer, offset) => {
      if (gate) {
        arrived();
        await gate;
      }
      return sim.write(buffer, offset);
    },
    sync: () => sim.sync(),
    release: (offset, length) => sim.release(offset, length),
    close: () => sim.close(),
  };
  return {
    sim,
    device,
    /** Hold the next writes; resolves `arrived` when the first one reaches the device. */
    hold(): { arrived: Promise<void> } {
      gate = new Promise<void>((resolve) => (open = resolve));
      writeArrived = new Promise<void>((resolve) => (arrived = resolve));
      return { arrived: writeArrived };
    },
    release(): void {
      gate = undefined;
      open();
    },
  };
}

/** The system clock's timers and sleeps, but its time read from `nowMs` (a test moves it by hand). */
export function clockAt(nowMs: () => number): Clock {
  return { ...systemClock, nowMs, nowNs: () => BigInt(nowMs()) * 1_000_000n };
}

/** Open the scratch file system with an object target; background tiering off unless asked. */
export async function openTiered(t: Test, scratch: Scratch, tier: OpenTierOptions, clock?: Clock): Promise<OpenFileSystem & { tier: TieringEngine }> {
  const opened = await openFileSystem(scratch.flash, scratch.meta, { commitIntervalMs: 0, clock, tier: { scanIntervalMs: 0, ...tier } });
  t.teardown(() => opened.close().catch(() => undefined));
  if (!opened.tier) throw new Error('no tiering engine');
  return opened as OpenFileSystem & { tier: TieringEngine };
}

/** Write `data` as a new file `name` in the root and fsync it; returns its inode. */
export async function writeFile(fs: FileSystem, name: string, data: Buffer, chunkBytes = 1 << 20): Promise<Ino> {
  const { attr, fh } = await fs.create(ROOT_INO, name, 0o644, 2 /* O_RDWR */, ROOT_CREDENTIALS);
  for (let at = 0; at < data.length; at += chunkBytes) await fs.write(fh, at, data.subarray(at, Math.min(at + chunkBytes, data.length)));
  await fs.fsync(fh);
  await fs.release(fh);
  return attr.ino;
}

/** The whole content of file `ino`. */
export async function readFile(fs: FileSystem, ino: Ino, chunkBytes = 1 << 20): Promise<Buffer> {
  const size = (await fs.getattr(ino)).sizeBytes;
  const fh = await fs.open(ino, 0, ROOT_CREDENTIALS);
  try {
    const parts: Buffer[] = [];
    for (let at = 0; at < size; at += chunkBytes) parts.push(await fs.read(fh, at, Math.min(chunkBytes, size - at)));
    return Buffer.concat(parts);
  } finally {
    await fs.release(fh);
  }
}
