import c from 'node:constants';
import fs from 'node:fs';
import { startS3rverProcess } from './test/helpers/object_servers';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO } from './src/fs/fs';
import { openTarget } from './src/tier/tier';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
async function main() {
  const stops: (() => Promise<void>)[] = [];
  fs.rmSync('/tmp/dbgfs', { recursive: true, force: true }); fs.mkdirSync('/tmp/dbgfs/s3', { recursive: true });
  const s3 = await startS3rverProcess('/tmp/dbgfs/s3', (s) => stops.push(s));
  await formatFlashPath('/tmp/dbgfs/flash', '/tmp/dbgfs/meta', { sizeBytes: 768 << 20 });
  const objects = openTarget(s3.url('d'));
  const inner = objects.inner as any;
  const orig = inner.get.bind(inner);
  inner.get = async (...a: any[]) => { const t1 = performance.now(); const r = await orig(...a); console.log(`  get ${a[1]?.lengthBytes} ${(performance.now() - t1).toFixed(2)} ms`); return r; };
  const opened = await openFileSystem('/tmp/dbgfs/flash', '/tmp/dbgfs/meta', { tier: { objects, scanIntervalMs: 0 } });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'f', 0o644, c.O_RDWR, ROOT);
  const chunk = Buffer.alloc(1 << 20); for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
  for (let at = 0; at < 64 << 20; at += 1 << 20) await opened.fs.write(fh, at, chunk);
  await opened.fs.fsync(fh);
  await opened.tier!.destage({ ino: attr.ino });
  await opened.tier!.release(attr.ino);
  const packKeys: string[] = []; for await (const it of objects.list('')) packKeys.push(it.key);
  for (let i = 0; i < 5; i++) { const t0 = performance.now(); await objects.get(packKeys[0], { offsetBytes: 4096 * (i + 3), lengthBytes: 4096 }, AbortSignal.timeout(30000)); console.log(`direct store get ${(performance.now() - t0).toFixed(2)}`); }
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    await opened.fs.read(fh, (i * 7 + 3) * (1 << 20) + 8192, 4096);
    console.log(`read ${(performance.now() - t0).toFixed(2)} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  const keys: string[] = []; for await (const it of objects.list('')) keys.push(it.key);
  for (let i = 0; i < 5; i++) { const t0 = performance.now(); const out = await client.send(new GetObjectCommand({ Bucket: 'tierfs-test', Key: 'd/' + keys[0], Range: `bytes=${4096 * (i + 10)}-${4096 * (i + 11) - 1}` })); for await (const x of out.Body as any) void x; console.log(`sdk ${(performance.now() - t0).toFixed(2)}`); }
  await opened.close();
  for (const s of stops) await s();
}
main();
