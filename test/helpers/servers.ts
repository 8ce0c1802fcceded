// Loopback object servers for tests: s3rver and azurite, started here on
// 127.0.0.1 with free ports and stopped by PID at teardown, even on failure.
import 'tap';

type Test = tap.Test;
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import { scratchDir } from './fs';

const root = path.resolve(__dirname, '../..');
export const testBucket = 'tierfs-test';
const azuriteKey = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface Server {
  pid: number;
  /** Target URL of a fresh prefix on the server. */
  url(prefix: string): string;
  /** Environment the SDKs read credentials from. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess): Promise<void> {
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

export async function startS3rver(t: Test): Promise<Server> {
  const dir = scratchDir(t, 'tierfs-s3rver-');
  const child = spawn(process.execPath, ['--openssl-legacy-provider', path.join(root, 'test/scripts/s3rver.js'), dir, testBucket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = () => stopChild(child);
  t.teardown(stop);
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
  return {
    pid: child.pid!,
    env,
    url: (prefix) => `s3://${testBucket}/${prefix}?endpoint=http://127.0.0.1:${port}&region=us-east-1`,
    stop,
  };
}

export async function startAzurite(t: Test): Promise<Server> {
  const port = await freePort();
  const bin = path.join(root, 'node_modules/.bin/azurite-blob');
  const child = spawn(bin, ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--disableTelemetry', '--silent', '--skipApiVersionCheck'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env },
  });
  const stop = () => stopChild(child);
  t.teardown(stop);
  await waitForPort(port, child, 30_000);
  const endpoint = `http://127.0.0.1:${port}/devstoreaccount1`;
  const connection = `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${azuriteKey};BlobEndpoint=${endpoint};`;
  await BlobServiceClient.fromConnectionString(connection).getContainerClient(testBucket).createIfNotExists();
  const env = { AZURE_STORAGE_CONNECTION_STRING: connection };
  Object.assign(process.env, env);
  return { pid: child.pid!, env, url: (prefix) => `azure://${testBucket}/${prefix}?endpoint=${endpoint}`, stop };
}
