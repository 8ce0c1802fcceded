// s3rver and azurite as child processes on 127.0.0.1 with free ports, for the
// tests and the benchmark.  No tap here: callers register the stop.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';

/** The repository root, from the source tree or from dist/. */
function findRoot(): string {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'package.json'))) dir = path.dirname(dir);
  return dir;
}

const root = findRoot();
export const testBucket = 'tierfs-test';
const azuriteKey = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface ObjectServer {
  pid: number;
  /** Target URL of a prefix on the server. */
  url(prefix: string): string;
  /** Environment the SDKs read credentials from (also set in process.env). */
  env: Record<string, string>;
  endpoint: string;
  stop(): Promise<void>;
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the child has exited. */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode} before listening`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`server did not listen on ${port} within ${timeoutMs} ms`);
}

/** s3rver under --openssl-legacy-provider (else truncated listings answer 500), objects under `dir`. */
export async function startS3rverProcess(dir: string, onStarted: (stop: () => Promise<void>) => void): Promise<ObjectServer> {
  const child = spawn(process.execPath, ['--openssl-legacy-provider', path.join(root, 'test/scripts/s3rver.js'), dir, testBucket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = () => stopChild(child);
  onStarted(stop);
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      const match = /port (\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    setTimeout(() => reject(new Error('s3rver did not start in 30 s')), 30_000).unref();
  });
  const env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  Object.assign(process.env, env);
  const endpoint = `http://127.0.0.1:${port}`;
  return { pid: child.pid!, env, endpoint, url: (prefix) => `s3://${testBucket}/${prefix}?endpoint=${endpoint}&region=us-east-1`, stop };
}

/** azurite's blob service, always with --disableTelemetry (else it dials out and ignores SIGTERM). */
export async function startAzuriteProcess(onStarted: (stop: () => Promise<void>) => void): Promise<ObjectServer> {
  const port = await freePort();
  const child = spawn(
    path.join(root, 'node_modules/.bin/azurite-blob'),
    ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--disableTelemetry', '--silent', '--skipApiVersionCheck'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const stop = () => stopChild(child);
  onStarted(stop);
  await waitForPort(port, child, 30_000);
  const endpoint = `http://127.0.0.1:${port}/devstoreaccount1`;
  const connection = `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${azuriteKey};BlobEndpoint=${endpoint};`;
  await BlobServiceClient.fromConnectionString(connection).getContainerClient(testBucket).createIfNotExists();
  const env = { AZURE_STORAGE_CONNECTION_STRING: connection };
  Object.assign(process.env, env);
  return { pid: child.pid!, env, endpoint, url: (prefix) => `azure://${testBucket}/${prefix}?endpoint=${endpoint}`, stop };
}
