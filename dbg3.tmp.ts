import c from 'node:constants';
import fs from 'node:fs';
import { startS3rverProcess } from './test/helpers/object_servers';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from './src/fs/fs';
import { openTarget, packKeyPrefix } from './src/tier/tier';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
async function main() {
  const stops: (() => Promise<void>)[] = [];
  fs.rmSync('/tmp/dbgfs', { recursive: true, force: true }); fs.mkdirSync('/tmp/dbgfs/s3', { recursive: true });
  const s3 = await startS3rverProcess('/tmp/dbgfs/s3', (s) => stops.push(s));
  await formatFlashPath('/tmp/dbgfs/flash', '/tmp/dbgfs/meta', { sizeBytes: 768 << 20 });
  const objects = openTarget(s3.url('d'));
  let gets = 0, getBytes = 0;
  const inner = objects.inner as any; const orig = inner.get.bind(inner);
  let trace = false; const T0 = performance.now(); let inflight = 0;
  inner.get = async (...a: any[]) => { gets++; getBytes += a[1]?.lengthBytes ?? 0; const t = performance.now(); inflight++; const r = await orig(...a); inflight--; if (trace) console.log(`get ${(a[1]?.lengthBytes/2**20).toFixed(1)}MiB at ${(a[1]?.offsetBytes/2**20).toFixed(1)} ${(t - T0).toFixed(0)}..${(performance.now() - T0).toFixed(0)} inflight after ${inflight}`); return r; };
  const opened = await openFileSystem('/tmp/dbgfs/flash', '/tmp/dbgfs/meta', { tier: { objects, scanIntervalMs: 0 } });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const chunk = Buffer.alloc(1 << 20); for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
  const size = 256 << 20;
  for (let at = 0; at < size; at += 1 << 20) await opened.fs.write(fh, at, chunk);
  await opened.fs.fsync(fh);
  await opened.tier!.destage({ ino: attr.ino });
  const inspector = await import('node:inspector/promises');
  const session = new inspector.Session(); session.connect();
  await session.post('Profiler.enable'); await session.post('Profiler.start');
  for (const bs of [1 << 20]) { trace = false;
    await opened.tier!.release(attr.ino);
    (opened.tier as any).cache.clear();
    gets = 0; getBytes = 0;
    const rfh = await opened.fs.open(attr.ino, c.O_RDONLY, ROOT);
    const t0 = performance.now(); const cpu0 = process.cpuUsage();
    for (let at = 0; at < size; at += bs) await opened.fs.read(rfh, at, bs);
    const cpu = process.cpuUsage(cpu0); console.log(`cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms of ${(performance.now() - t0).toFixed(0)} ms wall`);
    console.log(`fs.read bs ${bs}: ${(256 / ((performance.now() - t0) / 1000)).toFixed(0)} MiB/s, gets ${gets}, MiB ${(getBytes / 2 ** 20).toFixed(0)}`);
    await opened.fs.release(rfh);
  }
  const { profile } = await session.post('Profiler.stop');
  fs.writeFileSync('/tmp/recall.cpuprofile', JSON.stringify(profile));
  const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  const keys: { key: string; sizeBytes: number }[] = []; for await (const it of objects.list(packKeyPrefix(opened.tier!.fsUuid))) keys.push(it);
  const t0 = performance.now(); let total = 0;
  for (const k of keys) for (let at = 0; at < k.sizeBytes; at += 8 << 20) { const out = await client.send(new GetObjectCommand({ Bucket: 'tierfs-test', Key: 'd/' + k.key, Range: `bytes=${at}-${Math.min(at + (8 << 20), k.sizeBytes) - 1}` })); for await (const x of out.Body as any) total += x.length; }
  console.log(`sdk loop ${(total / 2 ** 20 / ((performance.now() - t0) / 1000)).toFixed(0)} MiB/s`);
  await opened.close();
  for (const s of stops) await s();
}
main();
