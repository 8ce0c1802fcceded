// Crash tests: run a workload script (test/scripts/) in a child process and kill it with
// SIGKILL a given time after it printed its ready marker; returns everything it printed.
import { spawn } from 'node:child_process';
import path from 'node:path';

export async function runUntilKilled(script: string, args: string[], readyMarker: string, killAfterMs: number): Promise<{ out: string; err: string }> {
  const child = spawn(process.execPath, [...process.execArgv, path.join(__dirname, '..', 'scripts', script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TIERFS_LOG: 'silent' },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const started = Date.now();
  while (!out.includes(readyMarker) && Date.now() - started < 30_000 && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, killAfterMs));
  child.kill('SIGKILL');
  await exited;
  return { out, err };
}

/** Replication in the crash workloads: a short bound, and a snapshot every 64 KiB of log, so that kills land in every step of it. */
export const crashReplication = { rpoMs: 400, retentionMs: 7 * 86_400_000, snapshotLogBytes: 64 * 1024, snapshotIntervalMs: 86_400_000 };
