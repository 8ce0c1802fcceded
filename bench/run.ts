/**
 * `make bench`: one table, each row tierfs against a baseline measured in the
 * same run on the same disk, as a ratio of medians (these machines are shared
 * and noisy; every figure is the median of BENCH_REPEATS runs, default 3).
 *
 * Baselines: fio (psync, O_DIRECT, 1 MiB sequential and 4 KiB random) on a
 * file in the same directory as the flash tier; a memory-backed file system
 * on tierfs's FUSE binding (bench/memfs.ts) as the FUSE ceiling, itself
 * measured against the same file system on fuse-native (bench/reference).
 * Writes end with an fsync on every side.  Reads through FUSE follow a cache
 * drop.
 *
 * The src/fs rows measure steady state on both sides: fio lays out its file
 * once and tierfs writes its whole flash file once before timing, as an NVMe
 * namespace would already be.  (Filling the holes of a sparse host file costs
 * ext4 about 40 % of write speed; fio's own first pass pays the same.)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import c from 'node:constants';
import fs from 'node:fs';
import path from 'node:path';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type Ino } from '../src/fs/fs';
import { replicationBench } from './replication';
import { tierLayer, type BenchContext } from './tier';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const repoRoot = path.resolve(__dirname, '..', '..');
const work = path.resolve(process.env.BENCH_DIR ?? path.join(repoRoot, 'var', 'bench'));
const repeats = Number(process.env.BENCH_REPEATS ?? 3);
const seqBytes = Number(process.env.BENCH_SEQ_BYTES ?? GiB);
const randomSeconds = Number(process.env.BENCH_RANDOM_SECONDS ?? 5);
const metaFileCount = Number(process.env.BENCH_FILES ?? 10_000);
const rssFileCount = Number(process.env.BENCH_RSS_FILES ?? 100_000);
const rssBytes = Number(process.env.BENCH_RSS_BYTES ?? 2 * GiB);

interface Row {
  name: string;
  ours: number;
  base: number;
  unit: string;
  target: string;
  pass: boolean;
}
const rows: Row[] = [];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function ratioRow(name: string, ours: number[], base: number[], unit: string, min: number): void {
  const o = median(ours);
  const b = median(base);
  rows.push({ name, ours: o, base: b, unit, target: `>= ${min}`, pass: o / b >= min });
  const runs = (values: number[]) => values.map((v) => v.toFixed(0)).join(', ');
  console.error(`  ${name}: ${o.toFixed(1)} vs ${b.toFixed(1)} ${unit} -> ${(o / b).toFixed(2)} (runs ${runs(ours)} vs ${runs(base)})`);
}

function maxRow(name: string, ours: number[], base: number[], unit: string, max: number): void {
  const o = median(ours);
  const b = median(base);
  rows.push({ name, ours: o, base: b, unit, target: `<= ${max}`, pass: o / b <= max });
  console.error(`  ${name}: ${o.toFixed(2)} vs ${b.toFixed(2)} ${unit} -> ${(o / b).toFixed(2)}`);
}

function run(cmd: string, args: string[], options: { cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...options });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error)).slice(0, 500)}`);
  return r.stdout;
}

function dropCaches(): void {
  run('sync', []);
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

function fio(args: string[]): { bw: number; iops: number } {
  const out = JSON.parse(run('fio', ['--output-format=json', '--ioengine=psync', '--direct=1', '--numjobs=1', ...args]));
  const job = out.jobs[0];
  const side = job.write.io_bytes > 0 ? job.write : job.read;
  return { bw: side.bw_bytes / MiB, iops: side.iops };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function startChild(args: string[], readyText: string, mount: string): Promise<{ child: ChildProcess; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TIERFS_LOG: 'info' } });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!output.includes(readyText)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`child did not start: ${output}`);
    await sleep(50);
  }
  return {
    child,
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(20_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      spawnSync('fusermount', ['-uz', mount]);
    },
  };
}

async function freshTierfs(name: string, sizeBytes: number, target?: string): Promise<{ flash: string; meta: string }> {
  const dir = path.join(work, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const flash = path.join(dir, 'flash');
  const meta = path.join(dir, 'meta');
  await formatFlashPath(flash, meta, { sizeBytes, target });
  return { flash, meta };
}

const tierfsArgs = (flash: string, meta: string, mount: string, extra: string[] = []) => [
  path.join(repoRoot, 'bin', 'tierfs.js'), 'serve', '--flash', flash, '--meta', meta, '--mount', mount,
  ...(extra.includes('--admin-socket') ? [] : ['--admin-socket', '']), ...extra,
];

/** Sequential 1 MiB writes (then fsync) and reads, and 4 KiB random reads at depth 1 and 16, through src/fs vs fio (O_DIRECT; io_uring at depth 16). */
async function fsLayer(): Promise<void> {
  console.error('src/fs vs fio, same directory');
  const fioFile = path.join(work, 'fio.dat');
  const target = await freshTierfs('fs-layer', 3 * seqBytes); // the file is a third of the flash tier
  const opened = await openFileSystem(target.flash, target.meta);
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'seq', 0o644, c.O_RDWR, ROOT);
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 8) chunk.writeDoubleLE(Math.random(), i);
  const readBuffer = Buffer.allocUnsafeSlow(MiB);
  const w: number[] = [], fw: number[] = [], r: number[] = [], fr: number[] = [], rr: number[] = [], frr: number[] = [], rq: number[] = [], frq: number[] = [];
  fio(['--name=layout', `--filename=${fioFile}`, '--rw=write', '--bs=1M', `--size=${seqBytes}`, '--end_fsync=1']);
  for (let pass = 0; pass < 3; pass++) {
    for (let at = 0; at < seqBytes; at += MiB) await opened.fs.write(fh, at, chunk); // copy-on-write: three passes touch the whole flash file
    await opened.fs.fsync(fh);
  }
  for (let rep = 0; rep < repeats; rep++) {
    fw.push(fio(['--name=seqw', `--filename=${fioFile}`, '--rw=write', '--bs=1M', `--size=${seqBytes}`, '--end_fsync=1']).bw);
    let start = performance.now();
    for (let at = 0; at < seqBytes; at += MiB) await opened.fs.write(fh, at, chunk);
    await opened.fs.fsync(fh);
    w.push(seqBytes / MiB / ((performance.now() - start) / 1000));

    fr.push(fio(['--name=seqr', `--filename=${fioFile}`, '--rw=read', '--bs=1M', `--size=${seqBytes}`]).bw);
    start = performance.now();
    for (let at = 0; at < seqBytes; at += MiB) await opened.fs.read(fh, at, MiB, readBuffer); // one buffer, as fio and the FUSE front end use
    r.push(seqBytes / MiB / ((performance.now() - start) / 1000));

    frr.push(fio(['--name=randr', `--filename=${fioFile}`, '--rw=randread', '--bs=4k', `--size=${seqBytes}`, `--runtime=${randomSeconds}`, '--time_based']).iops);
    const blocks = seqBytes / 4096;
    let count = 0;
    start = performance.now();
    const end = start + randomSeconds * 1000;
    while (performance.now() < end) {
      for (let i = 0; i < 64; i++) await opened.fs.read(fh, Math.floor(Math.random() * blocks) * 4096, 4096, readBuffer);
      count += 64;
    }
    rr.push(count / ((performance.now() - start) / 1000));

    // Depth 16: sixteen readers at once, each with its own buffer, as sixteen FUSE requests in flight would be.
    frq.push(fio(['--name=randr16', `--filename=${fioFile}`, '--rw=randread', '--bs=4k', '--ioengine=io_uring', '--iodepth=16', `--size=${seqBytes}`, `--runtime=${randomSeconds}`, '--time_based']).iops);
    count = 0;
    start = performance.now();
    const until = start + randomSeconds * 1000;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        const own = Buffer.allocUnsafeSlow(4096);
        while (performance.now() < until) {
          await opened.fs.read(fh, Math.floor(Math.random() * blocks) * 4096, 4096, own);
          count += 1;
        }
      }),
    );
    rq.push(count / ((performance.now() - start) / 1000));
  }
  await opened.fs.release(fh);
  void attr;
  await opened.close();
  fs.rmSync(fioFile, { force: true });
  fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  ratioRow('seq write 1 MiB, src/fs vs fio', w, fw, 'MiB/s', 0.8);
  ratioRow('seq read 1 MiB, src/fs vs fio', r, fr, 'MiB/s', 0.8);
  ratioRow('rand read 4 KiB qd1, src/fs vs fio psync', rr, frr, 'IOPS', 0.5);
  ratioRow('rand read 4 KiB depth 16, src/fs vs fio io_uring', rq, frq, 'IOPS', 0.8);
}

function ddRate(args: string[]): number {
  const start = performance.now();
  run('dd', [...args, 'status=none']);
  return seqBytes / MiB / ((performance.now() - start) / 1000);
}

/**
 * Through FUSE: the tierfs mount, the memory-backed file system on tierfs's
 * own binding (bench/memfs.ts) and the same file system on fuse-native
 * (bench/reference, libfuse 2: the ceiling before the binding).  All three
 * without attribute caching, so stat reaches the file system.
 */
async function fuseLayer(): Promise<void> {
  console.error('FUSE: tierfs mount, memfs on the binding, memfs on fuse-native');
  const target = await freshTierfs('fuse', seqBytes + 2 * GiB);
  const mounts = { t: path.join(work, 'tierfs-mnt'), m: path.join(work, 'memfs-mnt'), r: path.join(work, 'reference-mnt') };
  const reference = path.join(repoRoot, 'bench', 'reference', 'memfs_fuse_native.js');
  const servers = [
    await startChild(tierfsArgs(target.flash, target.meta, mounts.t, ['--attr-timeout', '0']), 'info serving', mounts.t),
    await startChild([path.join(repoRoot, 'dist', 'bench', 'memfs.js'), mounts.m, '0'], 'ready', mounts.m),
    await startChild([reference, mounts.r], 'ready', mounts.r),
  ];
  const fioFile = path.join(work, 'fio-fuse.dat');
  try {
    const count = String(seqBytes / MiB);
    const results: Record<string, number[]> = {};
    const push = (key: string, value: number) => (results[key] ??= []).push(value);
    fio(['--name=layout', `--filename=${fioFile}`, '--rw=write', '--bs=1M', `--size=${seqBytes}`, '--end_fsync=1']);
    for (let rep = 0; rep < repeats; rep++) {
      push('fr', fio(['--name=seqr', `--filename=${fioFile}`, '--rw=read', '--bs=1M', `--size=${seqBytes}`]).bw);
      for (const [key, mount] of Object.entries(mounts)) {
        const file = path.join(mount, 'seq');
        fs.rmSync(file, { force: true });
        push(`${key}w`, ddRate(['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${count}`, 'conv=fsync']));
        dropCaches();
        push(`${key}r`, ddRate([`if=${file}`, 'of=/dev/null', 'bs=1M']));
        fs.rmSync(file, { force: true });
        const rates = JSON.parse(run('python3', [path.join(repoRoot, 'bench', 'metadata_ops.py'), path.join(mount, `meta${rep}`), String(metaFileCount)]));
        push(`${key}c`, rates.create);
        push(`${key}s`, rates.stat);
        push(`${key}u`, rates.unlink);
      }
    }
    const kinds = [
      ['w', 'seq write 1 MiB', 'MiB/s'],
      ['r', 'seq read 1 MiB', 'MiB/s'],
      ['c', `create ${metaFileCount} files`, 'ops/s'],
      ['s', `stat ${metaFileCount} files`, 'ops/s'],
      ['u', `unlink ${metaFileCount} files`, 'ops/s'],
    ] as const;
    for (const [k, what, unit] of kinds) ratioRow(`${what}, memfs: tierfs binding vs fuse-native`, results[`m${k}`], results[`r${k}`], unit, 1.5);
    for (const [k, what, unit] of kinds) ratioRow(`${what}, tierfs vs memfs on the binding`, results[`t${k}`], results[`m${k}`], unit, 0.7);
    // memfs reads RAM; the flash tier's own ceiling is the disk: fio, O_DIRECT, 1 MiB, same directory.
    ratioRow('seq read 1 MiB via FUSE vs fio on the flash tier\'s disk', results.tr, results.fr, 'MiB/s', 0.7);
  } finally {
    fs.rmSync(fioFile, { force: true });
    for (const server of servers) await server.stop();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  }
}

/** ior's transfer size in its "hard" configuration (IO500): deliberately not a multiple of any block size. */
const IOR_TRANSFER_BYTES = 47_008;

/**
 * Small I/O through the mount (issue 13): fio on a 256 MiB file through the
 * tierfs mount, the same with the kernel's writeback cache
 * (`--writeback-cache`), and memfs on the binding (the baseline), buffered
 * as applications do.  Each write job ends with an fsync and is timed from
 * outside fio, so write-back still owed at the end is counted; read jobs
 * take fio's own rate (nothing is owed at their end, and fio's start-up is
 * not the file system's).
 */
async function smallIo(): Promise<void> {
  const fileBytes = Number(process.env.BENCH_SMALL_IO_FILE_BYTES ?? 256 * MiB);
  const ioBytes = Number(process.env.BENCH_SMALL_IO_BYTES ?? 32 * MiB);
  console.error(`small I/O through FUSE: 4 KiB on a ${fileBytes / MiB} MiB file, ${ioBytes / MiB} MiB a job`);
  const target = await freshTierfs('small-io', fileBytes * 4 + GiB);
  const targetWb = await freshTierfs('small-io-wb', fileBytes * 4 + GiB);
  const mounts = { t: path.join(work, 'small-io-mnt'), w: path.join(work, 'small-io-wb-mnt'), m: path.join(work, 'small-io-memfs-mnt') };
  const servers = [
    await startChild(tierfsArgs(target.flash, target.meta, mounts.t), 'info serving', mounts.t),
    await startChild(tierfsArgs(targetWb.flash, targetWb.meta, mounts.w, ['--writeback-cache']), 'info serving', mounts.w),
    await startChild([path.join(repoRoot, 'dist', 'bench', 'memfs.js'), mounts.m, '1'], 'ready', mounts.m),
  ];
  // ior's "hard" pattern: 47,008-byte transfers, four ranks interleaved in one shared file (rank k writes
  // transfers k, k+4, k+8, ...), written (then fsync) and read back; here four fio jobs do what ior's ranks do.
  const iorTransfers = Math.floor(ioBytes / IOR_TRANSFER_BYTES / 4) * 4;
  const iorBytes = iorTransfers * IOR_TRANSFER_BYTES;
  const ior = (rw: 'write' | 'read') => [
    `--rw=${rw}:${3 * IOR_TRANSFER_BYTES}`, '--ioengine=psync', '--numjobs=4', `--offset_increment=${IOR_TRANSFER_BYTES}`,
    `--size=${iorBytes}`, `--io_size=${iorBytes / 4}`, '--group_reporting', ...(rw === 'write' ? ['--end_fsync=1'] : []),
  ];
  const jobs: readonly (readonly [string, string, readonly string[], number])[] = [
    ['randwrite-qd1', '4 KiB random writes, psync', ['--rw=randwrite', '--ioengine=psync', `--io_size=${ioBytes}`, '--end_fsync=1'], 4096],
    ['randwrite-qd16', '4 KiB random writes, io_uring depth 16', ['--rw=randwrite', '--ioengine=io_uring', '--iodepth=16', `--io_size=${ioBytes}`, '--end_fsync=1'], 4096],
    ['seqwrite', '4 KiB sequential writes, psync', ['--rw=write', '--ioengine=psync', `--io_size=${ioBytes}`, '--end_fsync=1'], 4096],
    ['randread-qd16', '4 KiB random reads, io_uring depth 16', ['--rw=randread', '--ioengine=io_uring', '--iodepth=16', `--io_size=${ioBytes}`], 4096],
    ['ior-hard-write', 'ior hard: 47,008-byte transfers, 4 ranks interleaved, write', ior('write'), IOR_TRANSFER_BYTES],
    ['ior-hard-read', 'ior hard: 47,008-byte transfers, 4 ranks interleaved, read', ior('read'), IOR_TRANSFER_BYTES],
  ];
  const results: Record<string, number[]> = {};
  try {
    for (const mount of Object.values(mounts)) run('dd', ['if=/dev/urandom', `of=${path.join(mount, 'file')}`, 'bs=1M', `count=${fileBytes / MiB}`, 'conv=fsync', 'status=none']);
    for (let rep = 0; rep < repeats; rep++) {
      for (const [job, , args, bs] of jobs) {
        for (const [key, mount] of Object.entries(mounts)) {
          dropCaches();
          const startedMs = performance.now();
          const out = JSON.parse(run('fio', ['--output-format=json', `--name=${job}`, `--filename=${path.join(mount, 'file')}`, `--size=${fileBytes}`, `--bs=${bs}`, '--direct=0', '--randrepeat=0', ...args]));
          const seconds = (performance.now() - startedMs) / 1000;
          // Writes are timed from outside fio, so the write-back owed at the end counts; reads owe nothing, and
          // fio's own figure leaves out its start-up (about a third of a 32 MiB job at 16k IOPS).
          const read = job.includes('read') ? out.jobs[0].read : undefined;
          const value = job.startsWith('ior') ? (read ? read.bw_bytes / MiB : iorBytes / MiB / seconds) : read ? read.iops : ioBytes / 4096 / seconds;
          (results[`${key} ${job}`] ??= []).push(value);
        }
      }
    }
    for (const [job, what] of jobs) {
      const [t, w, m] = ['t', 'w', 'm'].map((key) => results[`${key} ${job}`]);
      const unit = job.startsWith('ior') ? 'MiB/s' : 'IOPS';
      console.error(`  ${what}: tierfs ${t.map((x) => x.toFixed(0)).join(', ')}; --writeback-cache ${w.map((x) => x.toFixed(0)).join(', ')}; memfs ${m.map((x) => x.toFixed(0)).join(', ')} ${unit}`);
      const min = job.startsWith('seq') ? 0.8 : job.startsWith('ior') ? 0.5 : 0.7;
      ratioRow(`${what}, tierfs vs memfs on the binding`, t, m, unit, min);
      ratioRow(`${what}, tierfs --writeback-cache vs memfs on the binding`, w, m, unit, min);
    }
  } finally {
    for (const server of servers) await server.stop();
    for (const dir of [target, targetWb]) fs.rmSync(path.dirname(dir.flash), { recursive: true, force: true });
  }
}

/**
 * Start-up of the tierfs command: `--help`, and `status` and `stat` against a
 * running daemon, each against `node -e 0` timed in the same loop (medians of
 * cliRunCount runs, interleaved so that a noisy moment hits both).
 */
async function cliStartup(): Promise<void> {
  const runCount = Number(process.env.BENCH_CLI_RUNS ?? 15);
  console.error(`CLI start-up: ${runCount} runs each`);
  const target = await freshTierfs('cli', 64 * MiB);
  const mount = path.join(work, 'cli-mnt');
  const socket = path.join(work, 'cli-admin.sock');
  const tierfs = await startChild(tierfsArgs(target.flash, target.meta, mount, ['--admin-socket', socket]), 'info serving', mount);
  try {
    fs.writeFileSync(path.join(mount, 'f'), 'x'.repeat(10_000));
    const bin = path.join(repoRoot, 'bin', 'tierfs.js');
    const commands: [string, string[]][] = [
      ['node -e 0', ['-e', '0']],
      ['tierfs --help', [bin, '--help']],
      ['tierfs status', [bin, 'status', '--socket', socket]],
      ['tierfs stat FILE', [bin, 'stat', path.join(mount, 'f'), '--socket', socket]],
    ];
    const times = new Map<string, number[]>(commands.map(([name]) => [name, []]));
    for (let i = 0; i < runCount; i++) {
      for (const [name, args] of commands) {
        const startedMs = performance.now();
        const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`${name}: ${r.stderr}`);
        times.get(name)!.push(performance.now() - startedMs);
      }
    }
    const node = median(times.get('node -e 0')!);
    for (const [name] of commands.slice(1)) {
      const ours = median(times.get(name)!);
      rows.push({ name: `${name} start-up vs node -e 0`, ours, base: node, unit: 'ms', target: '<= +150 ms', pass: ours - node <= 150 });
      console.error(`  ${name}: ${ours.toFixed(0)} ms vs node -e 0 ${node.toFixed(0)} ms (+${(ours - node).toFixed(0)} ms)`);
    }
  } finally {
    await tierfs.stop();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  }
}

/**
 * Small files at their size: the bytes packs hold for many files of 1,000
 * bytes against the files' own bytes (the index included; before format 2
 * of packs every file took a whole 4 KiB block).
 */
async function smallFiles(): Promise<void> {
  const fileCount = Number(process.env.BENCH_SMALL_FILES ?? 100_000);
  const fileBytes = 1000;
  console.error(`small files: ${fileCount} of ${fileBytes} bytes`);
  const objects = path.join(work, 'small-objects');
  fs.mkdirSync(objects, { recursive: true });
  const target = await freshTierfs('small', 2 * GiB, `file://${objects}`);
  const opened = await openFileSystem(target.flash, target.meta, { tier: { scanIntervalMs: 0 } });
  try {
    const inos: Ino[] = [];
    const data = Buffer.alloc(fileBytes);
    for (let d = 0; d < Math.ceil(fileCount / 1000); d++) {
      const dir = await opened.fs.mkdir(ROOT_INO, `d${d}`, 0o755, ROOT);
      for (let i = 0; i < 1000 && inos.length < fileCount; i++) {
        data.writeUInt32LE(inos.length, 0);
        data.fill(i % 251, 4);
        const { attr, fh } = await opened.fs.create(dir.ino, `f${i}`, 0o644, c.O_RDWR, ROOT);
        await opened.fs.write(fh, 0, data);
        await opened.fs.release(fh);
        inos.push(attr.ino);
      }
    }
    await opened.fs.fsync();
    const startedMs = performance.now();
    await opened.tier!.destage({ inos });
    const seconds = (performance.now() - startedMs) / 1000;
    const stored = opened.tier!.status().packs.storedBytes;
    const logical = fileCount * fileBytes;
    rows.push({ name: `bytes in packs for ${fileCount} files of ${fileBytes} bytes vs their size`, ours: stored, base: logical, unit: 'bytes', target: '<= 1.1', pass: stored / logical <= 1.1 });
    console.error(`  ${stored} bytes in packs for ${logical} (${(stored / logical).toFixed(3)}), destaged in ${seconds.toFixed(1)} s`);
    // release of the same files, as the release command runs it (in batches), against their destage
    const releaseStartedMs = performance.now();
    const released = await opened.tier!.releaseFiles(inos);
    const releaseSeconds = (performance.now() - releaseStartedMs) / 1000;
    if (released.releasedBytes !== fileCount * 4096) throw new Error(`release freed ${released.releasedBytes} bytes, not ${fileCount * 4096}`);
    const [releaseRate, destageRate] = [fileCount / releaseSeconds, fileCount / seconds];
    rows.push({ name: `release of ${fileCount} files of ${fileBytes} bytes vs their destage`, ours: releaseRate, base: destageRate, unit: 'files/s', target: '>= 1', pass: releaseRate >= destageRate });
    console.error(`  released in ${releaseSeconds.toFixed(1)} s: ${releaseRate.toFixed(0)} files/s vs destage ${destageRate.toFixed(0)} files/s`);
  } finally {
    await opened.close();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
    fs.rmSync(objects, { recursive: true, force: true });
  }
}

/** The creates row: the last three windows' rate (files present) against the first three's (empty), medians. */
function createRateRow(how: string, rates: number[], fileCount: number, windowCount: number): void {
  const [empty, full] = [median(rates.slice(0, 3)), median(rates.slice(-3))];
  const name = `creates of 1,000-byte files${how} with ${fileCount - 3 * windowCount} present vs on an empty file system`;
  rows.push({ name, ours: full, base: empty, unit: 'files/s', target: '>= 0.8', pass: full / empty >= 0.8 });
  console.error(`  files/s per ${windowCount}: ${rates.map((r) => r.toFixed(0)).join(' ')}`);
}

/**
 * Creates at scale: 1,000-byte files (create, write, close) through src/fs
 * in directories of 1,000, timed in windows of 20,000; the rate with about
 * a million files present (the last three windows) against the rate on an
 * empty file system (the first three), medians.
 */
async function createsAtScale(): Promise<void> {
  const fileCount = Number(process.env.BENCH_CREATE_FILES ?? 1_000_000);
  const windowCount = 20_000;
  console.error(`creates at scale: ${fileCount} files of 1,000 bytes`);
  const target = await freshTierfs('creates', 8 * GiB);
  const opened = await openFileSystem(target.flash, target.meta);
  try {
    const data = Buffer.alloc(1000, 7);
    const rates: number[] = [];
    let created = 0;
    let windowStartedMs = performance.now();
    for (let d = 0; created < fileCount; d++) {
      const dir = await opened.fs.mkdir(ROOT_INO, `d${d}`, 0o755, ROOT);
      for (let i = 0; i < 1000 && created < fileCount; i++) {
        const { fh } = await opened.fs.create(dir.ino, `f${i}`, 0o644, c.O_RDWR, ROOT);
        await opened.fs.write(fh, 0, data);
        await opened.fs.release(fh);
        if (++created % windowCount === 0) {
          const nowMs = performance.now();
          rates.push(windowCount / ((nowMs - windowStartedMs) / 1000));
          windowStartedMs = nowMs;
        }
      }
    }
    createRateRow('', rates, fileCount, windowCount);
  } finally {
    await opened.close();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  }
}

/**
 * Creates at scale as a user makes them: 1,000-byte files (open O_CREAT|O_EXCL,
 * write, close) through a mount of `tierfs serve`, in directories of 1,000,
 * timed in windows of 20,000 by one Python process; the last three windows
 * (about a million files present) against the first three (an empty file
 * system), medians.
 */
async function createsThroughMount(): Promise<void> {
  const fileCount = Number(process.env.BENCH_CREATE_FILES ?? 1_000_000);
  const windowCount = 20_000;
  console.error(`creates at scale through the mount: ${fileCount} files of 1,000 bytes`);
  const target = await freshTierfs('creates-mount', 8 * GiB);
  const mount = path.join(work, 'creates-mnt');
  const tierfs = await startChild(tierfsArgs(target.flash, target.meta, mount), 'info serving', mount);
  try {
    const out = run('python3', ['-c', `
import os, time
root, data, made, d, window = ${JSON.stringify(mount)}, b'x' * 1000, 0, 0, ${windowCount}
t = time.perf_counter()
while made < ${fileCount}:
    sub = os.path.join(root, 'd%d' % d); os.mkdir(sub); d += 1
    for i in range(min(1000, ${fileCount} - made)):
        fd = os.open(os.path.join(sub, 'f%d' % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, data); os.close(fd); made += 1
        if made % window == 0:
            now = time.perf_counter(); print(window / (now - t)); t = now
`]);
    const rates = out.trim().split('\n').map(Number);
    createRateRow(' through the mount', rates, fileCount, windowCount);
  } finally {
    await tierfs.stop();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  }
}

/** Peak RSS of `tierfs serve` after many files and many bytes. */
async function memory(): Promise<void> {
  console.error(`RSS: ${rssFileCount} files and ${rssBytes / GiB} GiB written`);
  const target = await freshTierfs('rss', rssBytes + 2 * GiB);
  const mount = path.join(work, 'rss-mnt');
  const tierfs = await startChild(tierfsArgs(target.flash, target.meta, mount), 'info serving', mount);
  try {
    run('python3', ['-c', `
import os
d = os.path.join(${JSON.stringify(mount)}, 'many')
for k in range(${Math.ceil(rssFileCount / 1000)}):
    sub = os.path.join(d, str(k)); os.makedirs(sub)
    for i in range(1000):
        with open(os.path.join(sub, str(i)), 'wb') as f: f.write(b'x' * 100)
`]);
    run('dd', ['if=/dev/zero', `of=${path.join(mount, 'big')}`, 'bs=1M', `count=${rssBytes / MiB}`, 'conv=fsync', 'status=none']);
    run('dd', [`if=${path.join(mount, 'big')}`, 'of=/dev/null', 'bs=1M', 'status=none']);
    const status = fs.readFileSync(`/proc/${tierfs.child.pid}/status`, 'utf8');
    const peakMiB = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
    rows.push({ name: `peak RSS of serve, ${rssFileCount} files + ${rssBytes / GiB} GiB`, ours: peakMiB, base: 300, unit: 'MiB', target: '< 300 MiB', pass: peakMiB < 300 });
    console.error(`  peak RSS ${peakMiB.toFixed(0)} MiB`);
  } finally {
    await tierfs.stop();
    fs.rmSync(path.dirname(target.flash), { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('make bench needs root (FUSE mounts, drop_caches)');
  fs.mkdirSync(work, { recursive: true });
  const only = process.env.BENCH_ONLY?.split(',');
  if (!only || only.includes('fs')) await fsLayer();
  if (!only || only.includes('fuse')) await fuseLayer();
  if (!only || only.includes('smallio')) await smallIo();
  if (!only || only.includes('rss')) await memory();
  if (!only || only.includes('cli')) await cliStartup();
  if (!only || only.includes('small')) await smallFiles();
  if (!only || only.includes('creates')) await createsAtScale();
  if (!only || only.includes('creates')) await createsThroughMount();
  const context: BenchContext = {
    work,
    repeats,
    median,
    ratioRow,
    maxRow,
    freshTierfs,
    dropCaches,
    serve: async (flash, meta, mount, extra) => {
      const { child, stop } = await startChild(tierfsArgs(flash, meta, mount, extra), 'info serving', mount);
      return { pid: child.pid!, stop };
    },
    cli: (args, env) => {
      const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'tierfs.js'), ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
      if (r.status !== 0) throw new Error(`tierfs ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
  };
  if (!only || only.includes('tier')) await tierLayer(context);
  if (!only || only.includes('replication'))
    await replicationBench(context, (name, ours, base, unit, target, pass) => rows.push({ name, ours, base, unit, target, pass }));
  const lines = ['| measurement | tierfs | baseline | unit | ratio | target | |', '| --- | ---: | ---: | --- | ---: | --- | --- |'];
  for (const row of rows) {
    const ratio = row.unit === 'MiB' || row.base === 0 ? '' : row.target.startsWith('<= +') ? `+${(row.ours - row.base).toFixed(0)} ms` : (row.ours / row.base).toFixed(2);
    lines.push(`| ${row.name} | ${row.ours.toFixed(1)} | ${row.base.toFixed(1)} | ${row.unit} | ${ratio} | ${row.target} | ${row.pass ? 'ok' : 'MISSED'} |`);
  }
  console.log(`\ntierfs bench, medians of ${repeats} runs, ${new Date().toISOString()}\n`);
  console.log(lines.join('\n'));
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((error) => {
  console.error(`bench: ${error.message}`);
  process.exit(1);
});
