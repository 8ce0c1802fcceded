/**
 * `BENCH_ONLY=replication make bench`: what metadata replication costs and
 * what a restore takes (issue 14).
 *
 * - Creates (1 KiB each, a commit per 100) and 1 MiB writes with fsync
 *   through src/fs with replication on (the default 10 s bound) against the
 *   same work with it off, in the same run, fresh file systems alternating.
 * - Metadata PUTs an hour: an idle file system over BENCH_IDLE_SECONDS, and a
 *   steady small-file workload (50 creates a second, each fsynced) over
 *   BENCH_STEADY_SECONDS, against the bound (one log PUT per half bound).
 * - fsync latency of a 64 KiB write under a policy --durable object, on
 *   s3rver, beside the same under the default (flash) durability; and 8
 *   writers fsyncing at once (they share uploads).
 * - Restore of a file system of 100,000 and of BENCH_RESTORE_FILES (default
 *   1,000,000) files of 1,000 bytes, all in packs, from a directory target:
 *   its time, how it grows (no faster than linearly), and the time from
 *   opening the restored file system to its first read.
 */
import c from 'node:constants';
import fs from 'node:fs';
import path from 'node:path';
import { openFileSystem, restoreFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type Ino, type OpenFileSystem } from '../src/fs/fs';
import { defaultReplicationOptions, openTarget } from '../src/tier/tier';
import { startS3rverProcess } from '../test/helpers/object_servers';
import type { BenchContext } from './tier';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const createCount = Number(process.env.BENCH_REPLICATION_CREATES ?? 20_000);
const writeBytes = Number(process.env.BENCH_REPLICATION_WRITE_BYTES ?? 512 * MiB);
const idleSeconds = Number(process.env.BENCH_IDLE_SECONDS ?? 30);
const steadySeconds = Number(process.env.BENCH_STEADY_SECONDS ?? 60);
const restoreFiles = Number(process.env.BENCH_RESTORE_FILES ?? 1_000_000);

type Replication = typeof defaultReplicationOptions | null;

async function openWith(ctx: BenchContext, name: string, replication: Replication): Promise<{ opened: OpenFileSystem; objects: string }> {
  const objects = path.join(ctx.work, `${name}-objects`);
  fs.rmSync(objects, { recursive: true, force: true });
  fs.mkdirSync(objects, { recursive: true });
  const target = await ctx.freshTierfs(name, 4 * GiB, `file://${objects}`);
  const opened = await openFileSystem(target.flash, target.meta, { tier: { scanIntervalMs: 0, replication } });
  return { opened, objects };
}

async function close(ctx: BenchContext, name: string, opened: OpenFileSystem): Promise<void> {
  await opened.close();
  fs.rmSync(path.join(ctx.work, name), { recursive: true, force: true });
  fs.rmSync(path.join(ctx.work, `${name}-objects`), { recursive: true, force: true });
}

/** Files of `bytes` under directories of 1,000, a commit per `commitEvery` (fsync of the last). */
async function createFiles(opened: OpenFileSystem, count: number, bytes: number, commitEvery: number, prefix = 'd'): Promise<Ino[]> {
  const inos: Ino[] = [];
  const data = Buffer.alloc(bytes, 7);
  for (let d = 0; inos.length < count; d++) {
    const dir = await opened.fs.mkdir(ROOT_INO, `${prefix}${d}`, 0o755, ROOT);
    for (let i = 0; i < 1000 && inos.length < count; i++) {
      data.writeUInt32LE(inos.length, 0);
      const { attr, fh } = await opened.fs.create(dir.ino, `f${i}`, 0o644, c.O_RDWR, ROOT);
      await opened.fs.write(fh, 0, data);
      if (inos.length % commitEvery === commitEvery - 1) await opened.fs.fsync(fh);
      await opened.fs.release(fh);
      inos.push(attr.ino);
    }
  }
  await opened.fs.fsync();
  return inos;
}

async function overhead(ctx: BenchContext): Promise<void> {
  console.error(`replication on vs off: ${createCount} creates, ${writeBytes / MiB} MiB of 1 MiB writes`);
  const creates: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const writes: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const chunk = Buffer.alloc(MiB, 3);
  for (let rep = 0; rep < ctx.repeats; rep++) {
    for (const mode of rep % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
      const { opened } = await openWith(ctx, 'replication-overhead', mode === 'on' ? defaultReplicationOptions : null);
      try {
        if (mode === 'on') await opened.tier!.flushReplication(); // the first snapshot, once per file system, is not the steady cost
        let start = performance.now();
        await createFiles(opened, createCount, 1024, 100);
        creates[mode].push(createCount / ((performance.now() - start) / 1000));
        const { fh } = await opened.fs.create(ROOT_INO, 'big', 0o644, c.O_RDWR, ROOT);
        start = performance.now();
        for (let at = 0; at < writeBytes; at += MiB) await opened.fs.write(fh, at, chunk);
        await opened.fs.fsync(fh);
        writes[mode].push(writeBytes / MiB / ((performance.now() - start) / 1000));
        await opened.fs.release(fh);
      } finally {
        await close(ctx, 'replication-overhead', opened);
      }
    }
  }
  ctx.ratioRow('creates of 1 KiB files, replication on vs off (src/fs)', creates.on, creates.off, 'files/s', 0.9);
  ctx.ratioRow('1 MiB writes + fsync, replication on vs off (src/fs)', writes.on, writes.off, 'MiB/s', 0.9);
}

async function putsPerHour(ctx: BenchContext, push: (name: string, ours: number, base: number, unit: string, target: string, pass: boolean) => void): Promise<void> {
  console.error(`metadata PUTs: ${idleSeconds} s idle, ${steadySeconds} s of 50 fsynced creates a second`);
  const idle: number[] = [];
  const steady: number[] = [];
  for (let rep = 0; rep < ctx.repeats; rep++) {
    const { opened } = await openWith(ctx, 'replication-puts', defaultReplicationOptions);
    try {
      await createFiles(opened, 1000, 1000, 1);
      await opened.tier!.flushReplication();
      await new Promise((resolve) => setTimeout(resolve, defaultReplicationOptions.rpoMs)); // what the flush left behind settles
      let before = opened.tier!.replicationStatus()!.putCount;
      await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
      idle.push(((opened.tier!.replicationStatus()!.putCount - before) * 3600) / idleSeconds);
      before = opened.tier!.replicationStatus()!.putCount;
      const start = performance.now();
      for (let n = 0; performance.now() - start < steadySeconds * 1000; n++) {
        await createFiles(opened, 50, 1000, 1, `s${rep}-${n}-`);
        const wait = start + (n + 1) * 1000 - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      steady.push(((opened.tier!.replicationStatus()!.putCount - before) * 3600) / steadySeconds);
    } finally {
      await close(ctx, 'replication-puts', opened);
    }
  }
  const bound = Math.ceil(3_600_000 / (defaultReplicationOptions.rpoMs / 2));
  const idleMedian = ctx.median(idle);
  push('metadata PUTs an hour, idle file system', idleMedian, 0, 'PUTs/h', '= 0', idleMedian === 0);
  console.error(`  idle: ${idle.join(', ')} PUTs/h`);
  const steadyMedian = ctx.median(steady);
  push(`metadata PUTs an hour, 50 fsynced creates/s vs the log bound`, steadyMedian, bound, 'PUTs/h', '<= 1', steadyMedian <= bound);
  console.error(`  steady: ${steady.join(', ')} PUTs/h (bound ${bound} log PUTs, plus a snapshot per 64 MiB of log)`);
}

/** Build a file system of `count` files in packs, replicate it, and time restores of it. */
async function restoreTimes(ctx: BenchContext, count: number): Promise<{ restoreSeconds: number[]; firstReadMs: number[] }> {
  console.error(`restore: ${count} files of 1,000 bytes`);
  const name = `restore-${count}`;
  const { opened, objects } = await openWith(ctx, name, defaultReplicationOptions);
  const url = `file://${objects}`;
  let sample: Ino;
  try {
    const inos = await createFiles(opened, count, 1000, 1000);
    sample = inos[Math.floor(inos.length / 2)];
    for (let i = 0; i < inos.length; i += 50_000) await opened.tier!.destage({ inos: inos.slice(i, i + 50_000) });
    await opened.tier!.flushReplication();
  } finally {
    await opened.close();
    fs.rmSync(path.join(ctx.work, name), { recursive: true, force: true });
  }
  const restoreSeconds: number[] = [];
  const firstReadMs: number[] = [];
  for (let rep = 0; rep < ctx.repeats; rep++) {
    const dir = path.join(ctx.work, `${name}-restored`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const store = openTarget(url);
    let start = performance.now();
    try {
      await restoreFileSystem({ store, targetUrl: url, flash: path.join(dir, 'flash'), metaDir: path.join(dir, 'meta'), sizeBytes: 4 * GiB });
    } finally {
      await store.close();
    }
    restoreSeconds.push((performance.now() - start) / 1000);
    start = performance.now();
    const restored = await openFileSystem(path.join(dir, 'flash'), path.join(dir, 'meta'), { tier: { scanIntervalMs: 0 } });
    const fh = await restored.fs.open(sample, c.O_RDONLY, ROOT);
    const read = await restored.fs.read(fh, 0, 1000);
    firstReadMs.push(performance.now() - start);
    if (read.readUInt32LE(0) !== Math.floor(count / 2)) throw new Error('restored file read back wrong');
    await restored.fs.release(fh);
    await restored.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.rmSync(objects, { recursive: true, force: true });
  console.error(`  restore ${restoreSeconds.map((s) => s.toFixed(1)).join(', ')} s; first read after open ${firstReadMs.map((ms) => ms.toFixed(0)).join(', ')} ms`);
  return { restoreSeconds, firstReadMs };
}

async function durableFsync(ctx: BenchContext, push: (name: string, ours: number, base: number, unit: string, target: string, pass: boolean) => void): Promise<void> {
  console.error('fsync of 64 KiB writes: --durable object on s3rver vs flash');
  const stops: (() => Promise<void>)[] = [];
  const dir = path.join(ctx.work, 'durable-s3rver');
  fs.mkdirSync(dir, { recursive: true });
  try {
    const server = await startS3rverProcess(dir, (stop) => stops.push(stop));
    const target = await ctx.freshTierfs('durable', 2 * GiB, server.url('durable'));
    const opened = await openFileSystem(target.flash, target.meta, { tier: { scanIntervalMs: 0, replication: defaultReplicationOptions } });
    try {
      const tier = opened.tier!;
      await tier.putPolicy({ name: 'ledger', pathGlob: '/ledger/**', mode: 'auto', coolAfterMs: 3_600_000, sizeBytesMin: 0, target: 'default', compress: false, durable: 'object' });
      const ledger = await opened.fs.mkdir(ROOT_INO, 'ledger', 0o755, ROOT);
      const plain = await opened.fs.mkdir(ROOT_INO, 'plain', 0o755, ROOT);
      await tier.flushReplication();
      const data = Buffer.alloc(64 * 1024, 5);
      const latencies = async (parent: Ino, writers: number, count: number): Promise<number[]> => {
        const out: number[] = [];
        await Promise.all(
          Array.from({ length: writers }, async (_, w) => {
            const { fh } = await opened.fs.create(parent, `w${writers}-${w}-${performance.now()}`, 0o644, c.O_RDWR, ROOT);
            for (let i = 0; i < count; i++) {
              await opened.fs.write(fh, i * data.length, data);
              const start = performance.now();
              await opened.fs.fsync(fh);
              out.push(performance.now() - start);
            }
            await opened.fs.release(fh);
          }),
        );
        return out.sort((a, b) => a - b);
      };
      const p = (values: number[], q: number) => values[Math.min(values.length - 1, Math.floor(values.length * q))];
      for (const writers of [1, 8]) {
        const flash = await latencies(plain.ino, writers, 30);
        const object = await latencies(ledger.ino, writers, 30);
        push(`fsync of 64 KiB, ${writers} writer(s): --durable object on s3rver vs flash (median; p99 ${p(object, 0.99).toFixed(1)} vs ${p(flash, 0.99).toFixed(1)} ms)`, p(object, 0.5), p(flash, 0.5), 'ms', 'printed', true);
        console.error(`  ${writers} writer(s): object median ${p(object, 0.5).toFixed(1)} ms p99 ${p(object, 0.99).toFixed(1)}; flash median ${p(flash, 0.5).toFixed(2)} ms p99 ${p(flash, 0.99).toFixed(2)}`);
      }
      console.error(`  ${tier.counters.durableFileCount} durable fsyncs in ${tier.counters.durableBatchCount} batches`);
    } finally {
      await opened.close();
      fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
    }
  } finally {
    for (const stop of stops) await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function replicationBench(ctx: BenchContext, push: (name: string, ours: number, base: number, unit: string, target: string, pass: boolean) => void): Promise<void> {
  const only = process.env.BENCH_REPLICATION_ONLY?.split(',');
  const want = (part: string) => !only || only.includes(part);
  if (want('overhead')) await overhead(ctx);
  if (want('puts')) await putsPerHour(ctx, push);
  if (want('durable')) await durableFsync(ctx, push);
  if (!want('restore')) return;
  const small = await restoreTimes(ctx, Math.min(100_000, restoreFiles));
  const large = await restoreTimes(ctx, restoreFiles);
  const scale = restoreFiles / Math.min(100_000, restoreFiles);
  const perFileSmall = ctx.median(small.restoreSeconds) / Math.min(100_000, restoreFiles);
  const perFileLarge = ctx.median(large.restoreSeconds) / restoreFiles;
  push(`restore of ${restoreFiles} files vs ${scale}x the time of 100,000`, ctx.median(large.restoreSeconds), ctx.median(small.restoreSeconds) * scale, 's', '<= 1.2', perFileLarge <= perFileSmall * 1.2);
  push(`restore of ${restoreFiles} files: open to first read`, ctx.median(large.firstReadMs), 5000, 'ms', '<= 1', ctx.median(large.firstReadMs) <= 5000);
}
