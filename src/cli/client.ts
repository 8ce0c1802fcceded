/**
 * The CLI's side of the admin API: one request over the daemon's unix
 * socket, JSON in and out; long operations stream NDJSON progress lines.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { TierfsError } from '../errors';

export const defaultSocket = '/run/tierfs/admin.sock';

export function socketPath(flag: string | undefined): string {
  return flag ?? process.env.TIERFS_SOCKET ?? defaultSocket;
}

/** An absolute, resolved path for the daemon (symlinks in the mount followed). */
export function mountPath(argument: string): string {
  try {
    return fs.realpathSync(path.resolve(argument));
  } catch (error) {
    throw new TierfsError('NOT_FOUND', `${argument}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
}

export interface ProgressLine {
  progress?: { doneBytes: number; totalBytes: number };
  result?: Record<string, unknown>;
  error?: string;
}

/** Send one request; `onLine` receives NDJSON lines of a streamed answer. */
export function request(
  socket: string,
  method: 'GET' | 'POST' | 'DELETE',
  urlPath: string,
  body?: unknown,
  onLine?: (line: ProgressLine) => void,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { socketPath: socket, method, path: urlPath, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {} },
      (res) => {
        let buffered = '';
        let last: Record<string, unknown> = {};
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf('\n')) >= 0) {
            const text = buffered.slice(0, newline);
            buffered = buffered.slice(newline + 1);
            if (text.trim() === '') continue;
            try {
              last = JSON.parse(text) as Record<string, unknown>;
            } catch {
              reject(new TierfsError('IO', `the daemon answered something that is not JSON: ${text.slice(0, 80)}`));
              return;
            }
            onLine?.(last as ProgressLine);
          }
        });
        res.on('end', () => {
          if (typeof last.error === 'string') reject(new TierfsError(res.statusCode === 400 ? 'USAGE' : 'IO', last.error));
          else if ((res.statusCode ?? 500) >= 400) reject(new TierfsError('IO', `the daemon answered HTTP ${res.statusCode}`));
          else resolve(last);
        });
        res.on('error', reject);
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')
        reject(new TierfsError('NOT_FOUND', `no tierfs daemon answers at ${socket} (is it serving? --socket or TIERFS_SOCKET name another)`));
      else if (error.code === 'EACCES') reject(new TierfsError('ACCESS', `${socket}: permission denied (the admin socket is the daemon owner's)`));
      else reject(new TierfsError('IO', `${socket}: ${error.message}`));
    });
    req.end(payload);
  });
}

function units(bytes: number): string {
  const steps = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < steps.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${i === 0 ? value : value.toFixed(1)} ${steps[i]}`;
}

export { units as formatBytes };

/** A progress bar on a terminal (stderr); nothing when stderr is not one. */
export function progressBar(label: string): { update(line: ProgressLine): void; done(): void } {
  const tty = process.stderr.isTTY;
  let drawn = false;
  return {
    update(line) {
      if (!tty || !line.progress) return;
      const { doneBytes, totalBytes } = line.progress;
      const fraction = totalBytes === 0 ? 1 : Math.min(1, doneBytes / totalBytes);
      const width = 30;
      const filled = Math.round(fraction * width);
      process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${units(doneBytes)} / ${units(totalBytes)}  `);
      drawn = true;
    },
    done() {
      if (drawn) process.stderr.write('\n');
    },
  };
}
