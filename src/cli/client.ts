/**
 * The CLI's side of the admin API: one request over the daemon's unix
 * socket, JSON in and out; long operations stream NDJSON progress lines.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { TierfsError } from '../errors';
import { methodOf, urlPathOf, type Api, type Endpoint, type ParamsOf, type ProgressLine } from '../daemon/api';

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

export type { ProgressLine };

/** What one call sends: the path parameter, the query and the body its endpoint takes (api.ts). */
export interface CallOptions<E extends Endpoint> {
  params?: ParamsOf<E>;
  query?: Api[E]['query'];
  body?: Api[E]['body'];
  onLine?: (line: ProgressLine) => void;
  signal?: AbortSignal;
}

/** Call one endpoint of the admin API; the answer has the type api.ts declares for it. */
export async function call<E extends Endpoint>(socket: string, endpoint: E, options: CallOptions<E> = {}): Promise<Api[E]['response']> {
  const urlPath = urlPathOf(endpoint, (options.params ?? {}) as ParamsOf<E>, (options.query ?? {}) as Api[E]['query']);
  return (await request(socket, methodOf(endpoint), urlPath, options.body, options.onLine, options.signal)) as unknown as Api[E]['response'];
}

/**
 * Send one request; `onLine` receives NDJSON lines of a streamed answer.
 * Aborting `signal` hangs up, which stops a job the daemon runs for us.
 */
export function request(
  socket: string,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  urlPath: string,
  body?: unknown,
  onLine?: (line: ProgressLine) => void,
  signal?: AbortSignal,
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
          if (typeof last.error === 'string') reject(new TierfsError(res.statusCode === 400 || res.statusCode === 413 ? 'USAGE' : 'IO', last.error));
          else if ((res.statusCode ?? 500) >= 400) reject(new TierfsError('IO', `the daemon answered HTTP ${res.statusCode}`));
          else resolve(last);
        });
        res.on('error', reject);
      },
    );
    signal?.addEventListener('abort', () => req.destroy(new TierfsError('BUSY', 'interrupted')), { once: true });
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (error instanceof TierfsError) reject(error);
      else if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')
        reject(new TierfsError('NOT_FOUND', `no tierfs daemon answers at ${socket} (is it serving? --socket or TIERFS_SOCKET name another)`));
      else if (error.code === 'EACCES') reject(new TierfsError('ACCESS', `${socket}: permission denied (the admin socket is for root and the group tierfs)`));
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

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/**
 * Progress on stderr: a bar with bytes, rate and ETA redrawn in place on a
 * terminal; otherwise a plain line at most every few seconds (logs, scripts).
 */
export function progressBar(label: string, clock: () => number = Date.now, tty = process.stderr.isTTY === true): { update(line: ProgressLine): void; done(): void } {
  const startedMs = clock();
  let drawn = false;
  let lastPlainMs = -Infinity;
  let finished = false;
  return {
    update(line) {
      if (!line.progress) return;
      const { doneBytes, totalBytes } = line.progress;
      const now = clock();
      const fraction = totalBytes === 0 ? 1 : Math.min(1, doneBytes / totalBytes);
      const elapsedS = (now - startedMs) / 1000;
      const rate = elapsedS > 0 ? doneBytes / elapsedS : 0;
      const eta = rate > 0 ? (totalBytes - doneBytes) / rate : Infinity;
      const figures = `${(fraction * 100).toFixed(0).padStart(3)}% ${units(doneBytes)} / ${units(totalBytes)}, ${units(rate)}/s, ETA ${duration(eta)}`;
      if (tty) {
        const width = 30;
        const filled = Math.round(fraction * width);
        process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${figures}  `);
        drawn = true;
      } else if (!finished && (now - lastPlainMs >= 5000 || doneBytes >= totalBytes)) {
        process.stderr.write(`${label}: ${figures}\n`);
        lastPlainMs = now;
        finished = doneBytes >= totalBytes;
      }
    },
    done() {
      if (drawn) process.stderr.write('\n');
    },
  };
}
