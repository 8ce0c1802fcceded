/**
 * The admin API: JSON over HTTP on a unix socket (mode 0600: whoever can
 * open it owns the appliance).  The CLI's status, stat, destage, release and
 * recall commands talk to it; it never opens the metadata behind the
 * daemon's back.
 *
 *   GET  /v1/status                 the file system, the tiers, the counters
 *   GET  /v1/stat?path=ABS          residency and heat of one file
 *   POST /v1/destage  {path, wait}  wait: NDJSON progress lines, then the result
 *   POST /v1/recall   {path, wait}
 *   POST /v1/release  {path}
 *   GET  /v1/policies               POST /v1/policies {name, path, mode, coolAfterMs, sizeBytesMin, compress}
 *   DELETE /v1/policies/NAME
 *
 * Paths are absolute paths in the mount (the CLI resolves them); the daemon
 * maps them to the file system by string, never by touching its own mount.
 * Errors are {"error": "one line"} with a 4xx/5xx status.  Bodies are
 * limited to 64 KiB.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { isTierfsError, TierfsError, type ErrorCode } from '../errors';
import { ROOT_INO, type Ino } from '../fs/fs';
import type { OpenFileSystem } from '../fs/fs';
import { log } from '../log';
import type { ProgressReport, TieringEngine } from '../tier/tier';

const BODY_BYTES_MAX = 64 * 1024;

const statusByCode: Partial<Record<ErrorCode, number>> = {
  NOT_FOUND: 404,
  USAGE: 400,
  INVALID: 400,
  NOT_DIR: 400,
  IS_DIR: 400,
  NO_SPACE: 507,
  UNAVAILABLE: 503,
  BUSY: 409,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface AdminContext {
  opened: OpenFileSystem;
  /** Absolute, resolved path of the mount point. */
  mountPath: string;
}

/** The inode at an absolute path in the mount (no permission checks: the socket is the owner's). */
export function resolveMountPath(context: AdminContext, absolute: unknown): { ino: Ino; relative: string } {
  if (typeof absolute !== 'string' || !path.isAbsolute(absolute)) throw new HttpError(400, 'path must be an absolute path in the mount');
  const normal = path.normalize(absolute);
  const relative = path.relative(context.mountPath, normal);
  if (relative.startsWith('..') || path.isAbsolute(relative)) throw new HttpError(400, `${absolute} is not in the tierfs mount at ${context.mountPath}`);
  let ino = ROOT_INO;
  for (const name of relative.split('/').filter(Boolean)) {
    const next = context.opened.meta.lookup(ino, name);
    if (next === undefined) throw new HttpError(404, `${absolute}: no such file in the file system`);
    ino = next;
  }
  return { ino, relative: `/${relative}` };
}

function tierOf(context: AdminContext): TieringEngine {
  if (!context.opened.tier) throw new HttpError(409, 'this file system has no object target (format or serve it with --target URL)');
  return context.opened.tier;
}

async function readBody(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request) {
    bytes += (chunk as Buffer).length;
    if (bytes > BODY_BYTES_MAX) throw new HttpError(413, `request body over ${BODY_BYTES_MAX} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (bytes === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new HttpError(400, `request body is not JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function send(response: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

function errorStatus(error: unknown): { status: number; message: string } {
  if (error instanceof HttpError) return { status: error.status, message: error.message };
  if (isTierfsError(error)) return { status: statusByCode[error.code] ?? 500, message: error.message };
  return { status: 500, message: `internal error: ${(error as Error)?.message ?? String(error)}` };
}

/** A long operation: with wait, progress lines then the result (NDJSON); without, 202 at once and the work goes on. */
async function runJob(
  response: http.ServerResponse,
  wait: unknown,
  what: string,
  job: (progress: (p: ProgressReport) => void) => Promise<Record<string, unknown>>,
): Promise<void> {
  if (wait !== undefined && typeof wait !== 'boolean') throw new HttpError(400, 'wait must be true or false');
  if (!wait) {
    job(() => undefined).catch((error) => log.warn(`${what} failed`, { error: (error as Error).message }));
    send(response, 202, { started: true });
    return;
  }
  response.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let last = 0;
  const result = await job((p) => {
    const now = Date.now();
    if (now - last < 100 && p.doneBytes < p.totalBytes) return;
    last = now;
    response.write(`${JSON.stringify({ progress: p })}\n`);
  }).then(
    (value) => ({ result: value }),
    (error: unknown) => ({ error: errorStatus(error).message }),
  );
  response.end(`${JSON.stringify(result)}\n`);
}

async function route(context: AdminContext, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://tierfs');
  const method = request.method ?? 'GET';
  const expect = (wanted: string) => {
    if (method !== wanted) throw new HttpError(405, `${url.pathname} takes ${wanted}`);
  };
  switch (url.pathname) {
    case '/v1/status': {
      expect('GET');
      const { opened } = context;
      const tier = opened.tier?.status();
      send(response, 200, {
        mount: context.mountPath,
        fsUuid: opened.store.superblock.uuid,
        flash: tier?.flash ?? { capacityBytes: opened.store.capacityBytes, usedBytes: opened.store.usedBytes },
        residency: tier?.residency ?? { ...opened.meta.residencyTotals() },
        packs: tier?.packs ?? opened.meta.packTotals(),
        target: tier?.target ?? null,
        inodeCount: opened.meta.inodeCount(),
        counters: tier?.counters ?? opened.store.counters,
      });
      return;
    }
    case '/v1/stat': {
      expect('GET');
      const { ino, relative } = resolveMountPath(context, url.searchParams.get('path') ?? undefined);
      const attr = await context.opened.fs.getattr(ino);
      const tier = context.opened.tier;
      if (tier) {
        const r = tier.fileResidency(ino);
        send(response, 200, { path: relative, ...r, size: attr.sizeBytes, policy: r.policy, ino });
      } else {
        const extents = context.opened.meta.fileExtents(ino);
        const flashBytes = extents.reduce((sum, e) => sum + e.lengthBytes, 0);
        send(response, 200, { path: relative, ino, size: attr.sizeBytes, flashBytes, objectBytes: 0, policy: null });
      }
      return;
    }
    case '/v1/destage':
    case '/v1/recall': {
      expect('POST');
      const body = await readBody(request);
      const { ino, relative } = resolveMountPath(context, body.path);
      const tier = tierOf(context);
      if (url.pathname === '/v1/destage') {
        await runJob(response, body.wait, 'destage', async (progress) => {
          await context.opened.fs.fsync(); // destage what was written, not what was acknowledged minutes ago
          return { path: relative, destagedBytes: await tier.destage({ ino, progress }) };
        });
      } else {
        await runJob(response, body.wait, 'recall', async (progress) => ({ path: relative, recalledBytes: await tier.recallFile(ino, progress) }));
      }
      return;
    }
    case '/v1/release': {
      expect('POST');
      const body = await readBody(request);
      const { ino, relative } = resolveMountPath(context, body.path);
      const result = await tierOf(context).release(ino);
      send(response, 200, { path: relative, ...result });
      return;
    }
    case '/v1/policies': {
      const tier = tierOf(context);
      if (method === 'GET') return send(response, 200, { policies: tier.listPolicies() });
      expect('POST');
      const body = await readBody(request);
      for (const key of Object.keys(body))
        if (!['name', 'path', 'mode', 'coolAfterMs', 'sizeBytesMin', 'compress'].includes(key)) throw new HttpError(400, `unknown policy field ${key}`);
      if (typeof body.name !== 'string' || typeof body.path !== 'string' || typeof body.mode !== 'string')
        throw new HttpError(400, 'a policy needs name, path and mode');
      if (tier.listPolicies().some((p) => p.name === body.name)) throw new HttpError(409, `a policy named ${body.name} exists; remove it first`);
      const policy = {
        name: body.name,
        pathGlob: body.path,
        mode: body.mode as 'auto',
        coolAfterMs: body.coolAfterMs === undefined ? tier.options.coolAfterMs : Number(body.coolAfterMs),
        sizeBytesMin: body.sizeBytesMin === undefined ? 0 : Number(body.sizeBytesMin),
        target: 'default',
        compress: body.compress === true,
      };
      await tier.putPolicy(policy);
      return send(response, 201, { policy });
    }
    default:
      if (url.pathname.startsWith('/v1/policies/')) {
        expect('DELETE');
        await tierOf(context).deletePolicy(decodeURIComponent(url.pathname.slice('/v1/policies/'.length)));
        return send(response, 200, { deleted: true });
      }
      throw new HttpError(404, `no such admin endpoint ${url.pathname}`);
  }
}

export interface AdminServer {
  socketPath: string;
  close(): Promise<void>;
}

/** Listen on `socketPath`; a stale socket file is replaced, a live one (another daemon) refused. */
export async function startAdminServer(context: AdminContext, socketPath: string): Promise<AdminServer> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  if (fs.existsSync(socketPath)) {
    const live = await new Promise<boolean>((resolve) => {
      const probe = net.connect(socketPath);
      probe.once('connect', () => (probe.destroy(), resolve(true)));
      probe.once('error', () => resolve(false));
    });
    if (live) throw new TierfsError('BUSY', `admin socket ${socketPath} is in use by another tierfs daemon`);
    fs.rmSync(socketPath, { force: true });
  }
  const server = http.createServer((request, response) => {
    route(context, request, response).catch((error: unknown) => {
      const { status, message } = errorStatus(error);
      if (status >= 500) log.error('admin request failed', { url: request.url, error: (error as Error)?.stack ?? String(error) });
      if (response.headersSent) response.end(`${JSON.stringify({ error: message })}\n`);
      else send(response, status, { error: message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const umask = process.umask(0o177); // the socket is created 0600
    try {
      server.listen(socketPath, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  fs.chmodSync(socketPath, 0o600);
  log.info('admin API listening', { socket: socketPath });
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        fs.rmSync(socketPath, { force: true });
      }),
  };
}
