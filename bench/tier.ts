/**
 * Tiering rows of `make bench`, each against the SDK doing the same work on
 * the same loopback server in the same run:
 *
 * - destage throughput (src/fs engine → s3rver / azurite) vs the SDK's own
 *   upload loop of the same bytes in objects of the same size (lib-storage
 *   Upload for S3, uploadData for Azure, same part size and concurrency);
 * - recall, on s3rver and on azurite: a cold file read sequentially through
 *   the mount vs the SDK's own loop over the same pack objects with 8 ranged
 *   GETs of 8 MiB in flight; the GETs per GiB that read cost; a second read
 *   of the recalled file vs a hot read of it; cold 4 KiB reads 100 ms apart
 *   (median and p99) vs one ranged 4 KiB GET paced the same;
 * - sequential hot reads (src/fs) while a destage runs vs with tiering idle;
 * - followers: their lag behind the writer, and reads through a writer and
 *   two followers at once vs the writer alone.
 */
import { spawn } from 'node:child_process';
import c from 'node:constants';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BlobServiceClient } from '@azure/storage-blob';
import { constants } from '../src/constants';
import { openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type Ino, type OpenFileSystem } from '../src/fs/fs';
import { openObjectStore, openTarget, packKeyPrefix, type ObjectStore } from '../src/tier/tier';
import { startAzuriteProcess, startS3rverProcess, testBucket, type ObjectServer } from '../test/helpers/object_servers';

const MiB = 2 ** 20;
// The bench's own SDK clients: tierfs pins the SDK with its lockfile (as src/tier/s3_object_store.ts says).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface BenchContext {
  work: string;
  repeats: number;
  median(values: number[]): number;
  ratioRow(name: string, ours: number[], base: number[], unit: string, min: number): void;
  maxRow(name: string, ours: number[], base: number[], unit: string, max: number): void;
  freshTierfs(name: string, sizeBytes: number, target?: string): Promise<{ flash: string; meta: string }>;
  dropCaches(): void;
  serve(flash: string, meta: string, mount: string, extra: string[]): Promise<{ pid: number; stop(): Promise<void> }>;
  cli(args: string[], env: Record<string, string>): string;
}

const destageBytes = Number(process.env.BENCH_DESTAGE_BYTES ?? 512 * MiB);
const recallBytes = Number(process.env.BENCH_RECALL_BYTES ?? 1024 * MiB);

function randomChunk(seed: number): Buffer {
  const chunk = Buffer.allocUnsafe(MiB);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < MiB; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    chunk.writeUInt32LE(x >>> 0, i);
  }
  return chunk;
}

async function writeWhole(opened: OpenFileSystem, name: string, bytes: number, seed: number): Promise<Ino> {
  const existing = await opened.fs.lookup(ROOT_INO, name, ROOT).catch(() => undefined);
  const fh = existing ? await opened.fs.open(existing.ino, c.O_RDWR, ROOT) : (await opened.fs.create(ROOT_INO, name, 0o644, c.O_RDWR, ROOT)).fh;
  for (let at = 0; at < bytes; at += MiB) await opened.fs.write(fh, at, randomChunk(seed + at / MiB));
  await opened.fs.fsync(fh);
  await opened.fs.release(fh);
  return (await opened.fs.lookup(ROOT_INO, name, ROOT)).ino;
}

/** The SDK's own upload loop: the same bytes, in objects the size of our packs, one after the other. */
async function sdkUploadLoop(server: ObjectServer, kind: 's3' | 'azure', prefix: string): Promise<number> {
  const objectBytes = constants.packSizeBytesTarget;
  const body = Buffer.concat(Array.from({ length: objectBytes / MiB }, (_, i) => randomChunk(1000 + i)));
  const started = performance.now();
  if (kind === 's3') {
    const client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    for (let i = 0; i < destageBytes / objectBytes; i++)
      await new Upload({ client, params: { Bucket: testBucket, Key: `${prefix}/${i}`, Body: body }, partSize: constants.uploadPartSizeBytes, queueSize: constants.uploadPartConcurrency }).done();
    client.destroy();
  } else {
    const container = BlobServiceClient.fromConnectionString(server.env.AZURE_STORAGE_CONNECTION_STRING).getContainerClient(testBucket);
    for (let i = 0; i < destageBytes / objectBytes; i++)
      await container.getBlockBlobClient(`${prefix}/${i}`).uploadData(body, { blockSize: constants.uploadPartSizeBytes, concurrency: constants.uploadPartConcurrency });
  }
  return destageBytes / MiB / ((performance.now() - started) / 1000);
}

async function destageRows(ctx: BenchContext, server: ObjectServer, kind: 's3' | 'azure'): Promise<void> {
  const target = await ctx.freshTierfs(`destage-${kind}`, destageBytes * 3);
  // One pack uploading at a time, like the SDK loop (each with its parts in parallel on both sides).
  const opened = await openFileSystem(target.flash, target.meta, { tier: { url: server.url(`destage-${kind}`), scanIntervalMs: 0, uploadCountMax: 1 } });
  const ours: number[] = [];
  const base: number[] = [];
  try {
    const sdkStore = openObjectStore(server.url(`destage-${kind}`));
    for (let rep = 0; rep < ctx.repeats; rep++) {
      const ino = await writeWhole(opened, 'cold', destageBytes, rep * 7919);
      const ourRun = async () => {
        const started = performance.now();
        const bytes = await opened.tier!.destage({ ino });
        ours.push(bytes / MiB / ((performance.now() - started) / 1000));
      };
      // Alternate who goes first; both clean up after themselves, so the server holds the same each time.
      if (rep % 2 === 0) await ourRun();
      base.push(await sdkUploadLoop(server, kind, `destage-${kind}/sdk-${rep}`));
      if (rep % 2 === 1) await ourRun();
      console.error(`    rep ${rep}: ${ours[rep].toFixed(0)} vs ${base[rep].toFixed(0)} MiB/s`);
      for await (const item of sdkStore.list(`sdk-${rep}/`)) await sdkStore.delete(item.key);
      await opened.tier!.release(ino);
      const fh = await opened.fs.open(ino, c.O_RDWR, ROOT);
      await opened.fs.setattr(ino, { sizeBytes: 0 }, ROOT);
      await opened.fs.release(fh);
      await opened.fs.fsync();
      await opened.tier!.collectGarbage();
    }
    await sdkStore.close();
  } finally {
    await opened.close();
  }
  ctx.ratioRow(`destage ${destageBytes / MiB} MiB to ${kind === 's3' ? 's3rver' : 'azurite'} vs SDK upload loop (1 object at a time)`, ours, base, 'MiB/s', 0.8);
}

/** Every pack object of the file system under the target's prefix, as the SDK baselines read them. */
async function packObjects(store: ObjectStore, fsUuid: string): Promise<{ key: string; sizeBytes: number }[]> {
  const packs: { key: string; sizeBytes: number }[] = [];
  for await (const item of store.list(packKeyPrefix(fsUuid))) packs.push(item);
  return packs;
}

/** One ranged GET with the SDK itself, the body read to its end; resolves to its length. */
type SdkGet = (key: string, offsetBytes: number, lengthBytes: number) => Promise<number>;

function sdkGetter(server: ObjectServer, kind: 's3' | 'azure', prefix: string): { get: SdkGet; close(): void } {
  if (kind === 's3') {
    const client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    return {
      get: async (key, offsetBytes, lengthBytes) => {
        const out = await client.send(new GetObjectCommand({ Bucket: testBucket, Key: `${prefix}/${key}`, Range: `bytes=${offsetBytes}-${offsetBytes + lengthBytes - 1}` }));
        let n = 0;
        for await (const chunk of out.Body as AsyncIterable<Uint8Array>) n += chunk.byteLength;
        return n;
      },
      close: () => client.destroy(),
    };
  }
  const container = BlobServiceClient.fromConnectionString(server.env.AZURE_STORAGE_CONNECTION_STRING).getContainerClient(testBucket);
  return {
    get: async (key, offsetBytes, lengthBytes) => {
      const out = await container.getBlobClient(`${prefix}/${key}`).download(offsetBytes, lengthBytes);
      let n = 0;
      for await (const chunk of out.readableStreamBody as AsyncIterable<Uint8Array>) n += (chunk as Uint8Array).byteLength;
      return n;
    },
    close: () => undefined,
  };
}

/** The SDK's own loop over every pack object: 8 ranged GETs of 8 MiB in flight. */
async function sdkParallelGets(get: SdkGet, packs: { key: string; sizeBytes: number }[]): Promise<number> {
  const ranges = packs.flatMap((pack) => Array.from({ length: Math.ceil(pack.sizeBytes / (8 * MiB)) }, (_, i) => ({ key: pack.key, at: i * 8 * MiB, length: Math.min(8 * MiB, pack.sizeBytes - i * 8 * MiB) })));
  let next = 0;
  let total = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < ranges.length) {
        const r = ranges[next++];
        const n = await get(r.key, r.at, r.length); // not `total += await`: that reads total before the wait
        total += n;
      }
    }),
  );
  return total / MiB / ((performance.now() - started) / 1000);
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** CPU seconds each of `pids` uses while `work` runs. */
async function cpuOf<T>(pids: number[], work: () => T | Promise<T>): Promise<{ result: T; seconds: number[] }> {
  const before = pids.map(cpuSeconds);
  const result = await work();
  return { result, seconds: pids.map((pid, i) => cpuSeconds(pid) - before[i]) };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

function readWholeFile(file: string): number {
  const buffer = Buffer.allocUnsafe(MiB);
  const started = performance.now();
  const fd = fs.openSync(file, 'r');
  let total = 0;
  try {
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, MiB, null);
      if (n === 0) break;
      total += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return total / MiB / ((performance.now() - started) / 1000);
}

/**
 * Recall rows on one server: a cold sequential read of a released file
 * through the mount vs the SDK's own loop with 8 ranged GETs of 8 MiB in
 * flight over the same pack objects; the GETs that read took per GiB; a
 * second read of the same file (written back to flash) vs a hot read of it
 * before release; cold 4 KiB reads 100 ms apart vs one ranged 4 KiB GET.
 */
async function recallRows(ctx: BenchContext, server: ObjectServer, kind: 's3' | 'azure'): Promise<void> {
  const prefix = `recall-${kind}`;
  const name = kind === 's3' ? 's3rver' : 'azurite';
  const target = await ctx.freshTierfs(prefix, recallBytes + 1024 * MiB, server.url(prefix));
  const mount = path.join(ctx.work, `${prefix}-mnt`);
  const socket = path.join(ctx.work, `${prefix}.sock`);
  const serve = () => ctx.serve(target.flash, target.meta, mount, ['--admin-socket', socket]);
  let daemon = await serve();
  const env = { TIERFS_SOCKET: socket };
  const getCount = () => (JSON.parse(ctx.cli(['status', '--json'], env)).recall?.getCount ?? 0) as number;
  const file = path.join(mount, 'cold.bin');
  const cold: number[] = [], sdk: number[] = [], hot: number[] = [], second: number[] = [], getsPerGiB: number[] = [];
  const ours4k: number[] = [], sdk4k: number[] = [];
  const sdkClient = sdkGetter(server, kind, prefix);
  try {
    const fd = fs.openSync(file, 'w');
    for (let at = 0; at < recallBytes; at += MiB) fs.writeSync(fd, randomChunk(at / MiB + 1));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    ctx.cli(['destage', file, '--wait'], env);
    const fsUuid = JSON.parse(ctx.cli(['status', '--json'], env)).fsUuid as string;
    const store = openTarget(server.url(prefix));
    const packs = await packObjects(store, fsUuid);
    await store.close();
    for (let rep = 0; rep < ctx.repeats; rep++) {
      if (rep > 0) ctx.cli(['recall', file, '--wait'], env);
      ctx.dropCaches();
      hot.push(readWholeFile(file)); // destaged (or recalled) and on flash: the hot read
      ctx.cli(['release', file], env);
      ctx.dropCaches();
      const getsBefore = getCount();
      const ourRead = await cpuOf([daemon.pid, server.pid, process.pid], () => readWholeFile(file));
      cold.push(ourRead.result);
      getsPerGiB.push((getCount() - getsBefore) / (recallBytes / 2 ** 30));
      ctx.dropCaches(); // the server reads its objects from disk for the SDK too, as it did for the mount
      const sdkRead = await cpuOf([server.pid, process.pid], () => sdkParallelGets(sdkClient.get, packs));
      sdk.push(sdkRead.result);
      const perGiB = (seconds: number) => (seconds / (recallBytes / 2 ** 30)).toFixed(2);
      console.error(
        `    rep ${rep}: CPU s per GiB: tierfs ${perGiB(ourRead.seconds[0])} + ${name} ${perGiB(ourRead.seconds[1])} + reader ${perGiB(ourRead.seconds[2])}; ` +
          `SDK loop ${perGiB(sdkRead.seconds[1])} + ${name} ${perGiB(sdkRead.seconds[0])}`,
      );
      ctx.dropCaches();
      second.push(readWholeFile(file));
      console.error(`    rep ${rep}: cold ${cold[rep].toFixed(0)} vs SDK ${sdk[rep].toFixed(0)} MiB/s, ${getsPerGiB[rep].toFixed(0)} GETs/GiB; second read ${second[rep].toFixed(0)} vs hot ${hot[rep].toFixed(0)} MiB/s`);
    }
    // Cold 4 KiB reads 100 ms apart, each in a different extent, after a release, a restart (the daemon
    // keeps what it recalled lately in memory) and a cache drop; the SDK's 4 KiB GETs paced the same.
    ctx.cli(['release', file], env);
    await daemon.stop();
    daemon = await serve();
    ctx.dropCaches();
    const samples = 100;
    const readFd = fs.openSync(file, 'r');
    const small = Buffer.allocUnsafe(4096);
    for (let i = 0; i < samples; i++) {
      const extent = Math.floor((i * (recallBytes / MiB - 4)) / samples) + 2;
      const started = performance.now();
      fs.readSync(readFd, small, 0, 4096, extent * MiB + 8192);
      ours4k.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    fs.closeSync(readFd);
    for (let i = 0; i < samples; i++) {
      const pack = packs[i % packs.length];
      const at = Math.floor((Math.random() * (pack.sizeBytes - 8192)) / 4096) * 4096;
      const started = performance.now();
      await sdkClient.get(pack.key, at, 4096);
      sdk4k.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    sdkClient.close();
    await daemon.stop();
  }
  ctx.ratioRow(`recall ${recallBytes / MiB} MiB cold, sequential via FUSE vs SDK 8 x 8 MiB ranged GETs in flight (${name})`, cold, sdk, 'MiB/s', 0.9);
  ctx.maxRow(`GETs per GiB of that read (${name}) vs one per 4 MiB`, getsPerGiB, [256], 'GETs/GiB', 1);
  ctx.ratioRow(`second read of the recalled file vs the hot read before release (${name})`, second, hot, 'MiB/s', 0.8);
  ctx.maxRow(`cold 4 KiB reads 100 ms apart, median, via FUSE vs one ranged GET (${name})`, [percentile(ours4k, 50)], [percentile(sdk4k, 50)], 'ms', 1.5);
  ctx.maxRow(`cold 4 KiB reads 100 ms apart, p99, via FUSE vs one ranged GET (${name})`, [percentile(ours4k, 99)], [percentile(sdk4k, 99)], 'ms', 3);
}

/** `dd` of a whole file to /dev/null, in a child: several run at once. */
function ddAsync(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'status=none']);
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(fs.statSync(file).size) : reject(new Error(`dd ${file}: exit ${code}`))));
  });
}

/**
 * Followers (issue 16), on azurite: a writer and two followers on this
 * machine, each with its own flash and metadata.  Lag: a file created on
 * the writer every 100 ms for followerLagSeconds; the time until its name
 * shows on a follower (through its mount, as a user would look), median
 * and p99, against the bound the settings give (half the writer's RPO, as
 * it uploads, plus the poll interval plus the kernel's 1 s name cache).
 * Aggregate reads: one 512 MiB file, destaged, read at once through the
 * writer (from flash) and both followers (from the bucket) vs the writer
 * alone: on one machine this shows the cost of following, not the scale.
 */
async function followerRows(ctx: BenchContext, server: ObjectServer): Promise<void> {
  const prefix = 'followers';
  const rpoMs = 1000;
  const pollMs = 200;
  const target = await ctx.freshTierfs(`${prefix}-writer`, 2048 * MiB, server.url(prefix));
  const socket = path.join(ctx.work, `${prefix}.sock`);
  const env = { TIERFS_SOCKET: socket };
  const mount = path.join(ctx.work, `${prefix}-writer-mnt`);
  const daemons = [await ctx.serve(target.flash, target.meta, mount, ['--admin-socket', socket, '--metadata-rpo', `${rpoMs / 1000}s`])];
  const followerMounts: string[] = [];
  try {
    const uploaded = () => JSON.parse(ctx.cli(['status', '--json'], env)).replication as { uploadedSeq: number; committedSeq: number; lagMs: number };
    const waitReplicated = async () => {
      for (let m = uploaded(); !(m.lagMs === 0 && m.uploadedSeq === m.committedSeq); m = uploaded()) await new Promise((r) => setTimeout(r, 100));
    };
    fs.mkdirSync(path.join(mount, 'lag'));
    await waitReplicated();
    for (const name of ['a', 'b']) {
      const dir = path.join(ctx.work, `${prefix}-follower-${name}`);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir);
      const m = path.join(dir, 'mnt');
      daemons.push(await ctx.serve(path.join(dir, 'flash'), path.join(dir, 'meta'), m, ['--follow', '--target', server.url(prefix), '--follow-interval', `${pollMs}ms`]));
      followerMounts.push(m);
    }
    const lags: number[] = [];
    const seconds = Number(process.env.BENCH_FOLLOWER_LAG_SECONDS ?? 30);
    const pending = new Map<string, number>();
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < seconds * 10; i++) {
        const name = `f${i}`;
        fs.writeFileSync(path.join(mount, 'lag', name), randomChunk(i).subarray(0, 4096));
        pending.set(name, performance.now());
        await new Promise((r) => setTimeout(r, 100));
      }
      writing = false;
    })();
    while (writing || pending.size > 0) {
      for (const [name, createdMs] of pending) {
        if (fs.existsSync(path.join(followerMounts[0], 'lag', name))) {
          lags.push(performance.now() - createdMs);
          pending.delete(name);
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await writer;
    const boundMs = rpoMs / 2 + pollMs + 1000;
    console.error(`    follower lag over ${lags.length} creates: median ${percentile(lags, 50).toFixed(0)} ms, p99 ${percentile(lags, 99).toFixed(0)} ms, max ${Math.max(...lags).toFixed(0)} ms (bound ${boundMs} ms)`);
    ctx.maxRow('follower lag: a create on the writer until its name shows on a follower, median, vs RPO/2 + poll + name cache', [percentile(lags, 50)], [boundMs], 'ms', 1);
    ctx.maxRow('the same, p99', [percentile(lags, 99)], [boundMs], 'ms', 1.5);

    const file = path.join(mount, 'shared.bin');
    const fd = fs.openSync(file, 'w');
    for (let at = 0; at < 512 * MiB; at += MiB) fs.writeSync(fd, randomChunk(7000 + at / MiB));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    ctx.cli(['destage', file, '--wait'], env);
    await waitReplicated();
    for (const m of followerMounts) while (!fs.existsSync(path.join(m, 'shared.bin')) || fs.statSync(path.join(m, 'shared.bin')).size !== 512 * MiB) await new Promise((r) => setTimeout(r, 100));
    const alone: number[] = [];
    const together: number[] = [];
    for (let rep = 0; rep < ctx.repeats; rep++) {
      ctx.dropCaches();
      let started = performance.now();
      let bytes = await ddAsync(file);
      alone.push(bytes / MiB / ((performance.now() - started) / 1000));
      ctx.dropCaches();
      started = performance.now();
      bytes = (await Promise.all([file, ...followerMounts.map((m) => path.join(m, 'shared.bin'))].map(ddAsync))).reduce((a, b) => a + b, 0);
      together.push(bytes / MiB / ((performance.now() - started) / 1000));
      console.error(`    rep ${rep}: writer alone ${alone[rep].toFixed(0)} MiB/s; writer + 2 followers ${together[rep].toFixed(0)} MiB/s in all`);
    }
    ctx.ratioRow('sequential reads of one 512 MiB file: writer + 2 followers at once (in all) vs the writer alone (one machine: the cost of following, not the scale)', together, alone, 'MiB/s', 0);
  } finally {
    for (const d of daemons.reverse()) await d.stop();
  }
}

async function hotReadRows(ctx: BenchContext, server: ObjectServer): Promise<void> {
  const target = await ctx.freshTierfs('hot', 2 * destageBytes + 1024 * MiB);
  const opened = await openFileSystem(target.flash, target.meta, { tier: { url: server.url('hot'), scanIntervalMs: 0 } });
  const hotBytes = 256 * MiB;
  const seconds = 3;
  const idle: number[] = [];
  const busy: number[] = [];
  try {
    const hot = await writeWhole(opened, 'hot', hotBytes, 5);
    const fh = await opened.fs.open(hot, c.O_RDONLY, ROOT);
    const readBuffer = Buffer.allocUnsafeSlow(MiB); // reused, as the FUSE front end does
    const readFor = async (): Promise<number> => {
      let bytes = 0;
      const end = performance.now() + seconds * 1000;
      const started = performance.now();
      while (performance.now() < end) {
        await opened.fs.read(fh, bytes % hotBytes, MiB, readBuffer);
        bytes += MiB;
      }
      return bytes / MiB / ((performance.now() - started) / 1000);
    };
    for (let rep = 0; rep < ctx.repeats; rep++) {
      idle.push(await readFor());
      const cold = await writeWhole(opened, 'cold', destageBytes, 100 + rep);
      const destage = opened.tier!.destage({ ino: cold });
      busy.push(await readFor());
      await destage;
      await opened.tier!.collectGarbage();
    }
    await opened.fs.release(fh);
  } finally {
    await opened.close();
  }
  ctx.ratioRow('hot seq reads (src/fs) while a destage runs vs tiering idle', busy, idle, 'MiB/s', 0.8);
}

export async function tierLayer(ctx: BenchContext): Promise<void> {
  console.error('tiering: engine vs the SDKs on s3rver and azurite');
  const stops: (() => Promise<void>)[] = [];
  const s3dir = path.join(ctx.work, 's3rver');
  fs.mkdirSync(s3dir, { recursive: true });
  try {
    const s3 = await startS3rverProcess(s3dir, (stop) => stops.push(stop));
    const azure = await startAzuriteProcess((stop) => stops.push(stop));
    const only = process.env.BENCH_TIER_ONLY?.split(',');
    const want = (part: string) => !only || only.includes(part);
    if (want('destage')) await destageRows(ctx, s3, 's3');
    if (want('destage')) await destageRows(ctx, azure, 'azure');
    if (want('recall')) await recallRows(ctx, s3, 's3');
    if (want('recall')) await recallRows(ctx, azure, 'azure');
    if (want('hot')) await hotReadRows(ctx, s3);
    if (want('followers')) await followerRows(ctx, azure);
  } finally {
    for (const stop of stops) await stop();
    fs.rmSync(s3dir, { recursive: true, force: true });
  }
}
