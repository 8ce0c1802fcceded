// Starts `tierfs serve` as a child process on a scratch file system and stops it by
// PID in teardown (SIGTERM, then SIGKILL and a lazy unmount), even when a test fails.
import 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { scratchDir, type Scratch } from './fs';

type Test = tap.Test;

export const repoRoot = path.resolve(__dirname, '..', '..');
export const tierfsBin = path.join(repoRoot, 'bin', 'tierfs.js');

export function isMounted(mountPoint: string): boolean {
  const target = path.resolve(mountPoint);
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === target);
}

export function lazyUnmount(mountPoint: string): void {
  if (isMounted(mountPoint)) spawnSync('fusermount', ['-uz', mountPoint]);
}

export interface Served {
  child: ChildProcess;
  mount: string;
  /** The admin socket (in the scratch directory). */
  socket: string;
  stderr: () => string;
  /** SIGTERM and wait for a clean exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash would; the mount is left dead. */
  kill(): Promise<void>;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

export async function serve(t: Test, scratch: Scratch, mount = path.join(scratch.dir, 'mnt'), extraArgs: string[] = [], env: Record<string, string> = {}): Promise<Served> {
  const socket = path.join(scratch.dir, 'admin.sock');
  // With --config, the file says everything (tests put the socket at the same place).
  const args = extraArgs[0] === '--config' ? ['serve', ...extraArgs] : ['serve', '--flash', scratch.flash, '--meta', scratch.meta, '--mount', mount, '--admin-socket', socket, ...extraArgs];
  const child = spawn(process.execPath, [tierfsBin, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, TIERFS_LOG: 'info', ...env },
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if ((await waitExit(child, 10_000)) === null && child.exitCode === null) {
        child.kill('SIGKILL');
        await waitExit(child, 5_000);
      }
    }
    lazyUnmount(mount);
  });
  const deadline = Date.now() + 30_000;
  while (!stderr.includes('info serving')) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`tierfs serve exited early: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`tierfs serve did not mount within 30 s: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    mount,
    socket,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      return waitExit(child, 20_000);
    },
    async kill() {
      child.kill('SIGKILL');
      await waitExit(child, 5_000);
    },
  };
}

/** Run the tierfs CLI to completion. */
export function runCli(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [tierfsBin, ...args], { encoding: 'utf8', env: { ...process.env, TIERFS_LOG: 'warn', ...env }, timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Format a scratch file system with an object target through the CLI. */
export async function formatWithTarget(t: Test, target: string, size = '256M'): Promise<Scratch> {
  const dir = scratchDir(t);
  const scratch = { dir, flash: path.join(dir, 'flash'), meta: path.join(dir, 'meta') };
  const formatted = runCli(['format', '--flash', scratch.flash, '--size', size, '--meta', scratch.meta, '--target', target]);
  t.equal(formatted.status, 0, formatted.stderr);
  t.match(formatted.stdout, /object target/);
  return scratch;
}

/** The JSON a successful CLI run printed. */
export function cliJson(result: { status: number | null; stdout: string; stderr: string }) {
  if (result.status !== 0) throw new Error(`tierfs failed (${result.status}): ${result.stderr}`);
  return JSON.parse(result.stdout);
}
