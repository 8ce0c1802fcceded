import fs from 'node:fs';
import { startS3rverProcess } from './test/helpers/object_servers';
import { openObjectStore, openTarget } from './src/tier/tier';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
async function main() {
  const stops: (() => Promise<void>)[] = [];
  fs.rmSync('/tmp/dbgfs2', { recursive: true, force: true }); fs.mkdirSync('/tmp/dbgfs2/s3', { recursive: true });
  const s3 = await startS3rverProcess('/tmp/dbgfs2/s3', (s) => stops.push(s));
  const raw = openObjectStore(s3.url('d'));
  const retry = openTarget(s3.url('d'));
  await raw.put('obj', [Buffer.alloc(4 << 20, 1)]);
  const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  const client1 = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED', maxAttempts: 1 });
  const cases: [string, (i: number) => Promise<unknown>][] = [
    ['sdk', async (i) => { const out = await client.send(new GetObjectCommand({ Bucket: 'tierfs-test', Key: 'd/obj', Range: `bytes=${4096 * i}-${4096 * i + 4095}` })); for await (const x of out.Body as any) void x; }],
    ['sdk maxAttempts1', async (i) => { const out = await client1.send(new GetObjectCommand({ Bucket: 'tierfs-test', Key: 'd/obj', Range: `bytes=${4096 * i}-${4096 * i + 4095}` })); for await (const x of out.Body as any) void x; }],
    ['sdk with signal', async (i) => { const out = await client.send(new GetObjectCommand({ Bucket: 'tierfs-test', Key: 'd/obj', Range: `bytes=${4096 * i}-${4096 * i + 4095}` }), { abortSignal: AbortSignal.timeout(30000) }); for await (const x of out.Body as any) void x; }],
    ['raw store', (i) => raw.get('obj', { offsetBytes: 4096 * i, lengthBytes: 4096 })],
    ['raw store signal', (i) => raw.get('obj', { offsetBytes: 4096 * i, lengthBytes: 4096 }, AbortSignal.timeout(30000))],
    ['retry store', (i) => retry.get('obj', { offsetBytes: 4096 * i, lengthBytes: 4096 })],
  ];
  for (let rep = 0; rep < 3; rep++)
    for (const [name, fn] of cases) {
      const times: number[] = [];
      for (let i = 0; i < 30; i++) { const t0 = performance.now(); await fn(i); times.push(performance.now() - t0); }
      times.sort((a, b) => a - b);
      console.log(name.padEnd(20), times[15].toFixed(2));
    }
  for (const s of stops) await s();
}
main();
