/**
 * The admin API: JSON over HTTP on a unix socket.  The `tierfs` commands
 * other than format and serve talk to it; none opens the metadata behind
 * the daemon's back.
 *
 * Who may call: the socket is mode 0660, owned by the daemon's user and by
 * the group `tierfs` where that group exists (else the daemon's group); the
 * kernel refuses everyone else at connect(2), before a byte is read.
 *
 *   GET    /v1/status                       the tiers, rates, errors, targets, watermarks
 *   GET    /v1/stat?path=ABS                a file's residency, or a directory's listing
 *   GET    /v1/heat[?path=ABS]              bytes by time since last access
 *   POST   /v1/destage  {paths, wait}       wait: NDJSON progress lines, then the result
 *   POST   /v1/recall   {paths, wait}       (a client that hangs up stops the job)
 *   POST   /v1/release  {paths}
 *   POST   /v1/pin      {paths, recursive, wait}   pins, then recalls what is only in packs
 *   POST   /v1/unpin    {paths, recursive}
 *   GET    /v1/policies                     POST /v1/policies {name, path, mode, ...}
 *   GET    /v1/policies/NAME                PUT  /v1/policies/NAME {path?, mode?, ...}
 *   DELETE /v1/policies/NAME
 *   GET    /v1/explain?path=ABS             which policy applies to a file, and why
 *   POST   /v1/simulate {flashSizeBytes, policies?, replace?}
 *   POST   /v1/fsck     {repair, deep}
 *   GET    /v1/watermarks                   PUT /v1/watermarks {highPercent, lowPercent}
 *   GET    /v1/targets                      POST /v1/targets {name, url}
 *   DELETE /v1/targets/NAME                 POST /v1/targets/NAME/test
 *
 * Every request is checked before anything changes: fields by name and
 * type (unknown ones refused), paths absolute, inside the mount, without
 * ".." segments, at most adminPathCountMax of them, bodies at most
 * adminBodyBytesMax.  Errors are {"error": "one line"} with a 4xx status for
 * a caller's mistake and 5xx for the daemon's.  Paths are mapped to inodes
 * by name in the metadata, never by touching the daemon's own mount.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { constants } from '../constants';
import { isTierfsError, TierfsError, type ErrorCode } from '../errors';
import { checkFileSystem } from '../fs/fsck';
import { ROOT_INO, type Ino, type OpenFileSystem } from '../fs/fs';
import { log } from '../log';
import { residencyOf, type Extent, type PolicyRecord } from '../meta/meta_store';
import { defaultPrices, parseDuration, validatePolicy, yieldToEventLoop, type JobControl, type Prices, type TieringEngine } from '../tier/tier';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

/** Every error code's HTTP status: a caller's mistake is 4xx, the daemon's or its storage's 5xx (the compiler refuses a missing code). */
export const statusByCode: Record<ErrorCode, number> = {
  NOT_FOUND: 404,
  EXISTS: 409,
  NOT_DIR: 400,
  IS_DIR: 400,
  NOT_EMPTY: 409,
  NAME_TOO_LONG: 400,
  NO_SPACE: 507,
  ACCESS: 403,
  NOT_PERMITTED: 403,
  INVALID: 400,
  BAD_HANDLE: 400,
  TOO_MANY_LINKS: 409,
  FILE_TOO_BIG: 413,
  NO_XATTR: 404,
  RANGE: 400,
  NOT_SUPPORTED: 501,
  BUSY: 409,
  CHECKSUM: 500, // stored bytes failed verification: logged loudly, never the caller's mistake
  IO: 500,
  UNAVAILABLE: 503,
  NOT_OURS: 500,
  VERSION: 500,
  CORRUPT: 500,
  USAGE: 400,
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
  /** Object storage prices for the simulator (serve config "prices"). */
  prices?: Prices;
}

// ---- validation ----

type FieldType = 'string' | 'boolean' | 'number' | 'string[]' | 'object[]';
type Schema = Record<string, { type: FieldType; required?: boolean }>;

/** Check a body against a schema: unknown fields, missing ones and wrong types are refused with one line. */
function check(body: Record<string, unknown>, schema: Schema, what: string): void {
  for (const key of Object.keys(body)) if (!(key in schema)) throw new HttpError(400, `${what}: unknown field "${key}" (known: ${Object.keys(schema).join(', ')})`);
  for (const [key, { type, required }] of Object.entries(schema)) {
    const value = body[key];
    if (value === undefined || value === null) {
      if (required) throw new HttpError(400, `${what}: "${key}" is required`);
      continue;
    }
    const ok =
      type === 'string[]'
        ? Array.isArray(value) && value.every((v) => typeof v === 'string')
        : type === 'object[]'
          ? Array.isArray(value) && value.every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))
          : type === 'number'
            ? typeof value === 'number' && Number.isFinite(value)
            : typeof value === type;
    if (!ok) throw new HttpError(400, `${what}: "${key}" must be ${type === 'string[]' ? 'a list of strings' : type === 'object[]' ? 'a list of objects' : `a ${type}`}`);
  }
}

function fileType(mode: number): 'file' | 'directory' | 'other' {
  const type = mode & S_IFMT;
  return type === S_IFDIR ? 'directory' : type === S_IFREG ? 'file' : 'other';
}

/** The inode at an absolute path in the mount (no permission checks: the socket's group owns the appliance). */
export function resolveMountPath(context: AdminContext, absolute: unknown): { ino: Ino; relative: string } {
  if (typeof absolute !== 'string' || !path.isAbsolute(absolute)) throw new HttpError(400, 'a path must be an absolute path in the mount');
  if (absolute.includes('\0') || absolute.length > 4096) throw new HttpError(400, 'a path must be at most 4096 characters, without NUL');
  if (absolute.split('/').includes('..')) throw new HttpError(400, `${absolute}: ".." is not allowed in a path (give the resolved path)`);
  const relative = path.relative(context.mountPath, path.normalize(absolute));
  if (relative.startsWith('..') || path.isAbsolute(relative)) throw new HttpError(400, `${absolute} is not in the tierfs mount at ${context.mountPath}`);
  let ino = ROOT_INO;
  for (const name of relative.split('/').filter(Boolean)) {
    const next = context.opened.meta.lookup(ino, name);
    if (next === undefined) throw new HttpError(404, `${absolute}: no such file in the file system`);
    ino = next;
  }
  return { ino, relative: `/${relative}` };
}

/** The paths of a request: `paths` (a list) or `path` (one). */
function requestPaths(context: AdminContext, body: Record<string, unknown>, what: string): { ino: Ino; relative: string }[] {
  const list = body.paths !== undefined ? (body.paths as string[]) : body.path !== undefined ? [body.path as string] : [];
  if (list.length === 0) throw new HttpError(400, `${what}: give "paths", a list of absolute paths in the mount`);
  if (list.length > constants.adminPathCountMax) throw new HttpError(400, `${what}: at most ${constants.adminPathCountMax} paths per request`);
  return list.map((p) => resolveMountPath(context, p));
}

/**
 * The regular files at and under some inodes (directories walked when
 * `recursive`, else refused); at most adminFileCountMax.
 */
function filesUnder(context: AdminContext, roots: { ino: Ino; relative: string }[], recursive: boolean, what: string): Ino[] {
  const { meta } = context.opened;
  const files = new Set<Ino>();
  const stack: Ino[] = [];
  for (const root of roots) {
    const inode = meta.getInode(root.ino)!;
    const type = fileType(inode.mode);
    if (type === 'file') files.add(root.ino);
    else if (type === 'directory') {
      if (!recursive) throw new HttpError(400, `${what}: ${root.relative} is a directory (add --recursive)`);
      stack.push(root.ino);
    } else throw new HttpError(400, `${what}: ${root.relative} is not a regular file`);
  }
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (let cookie = 0; ; ) {
      const page = meta.listDirents(dir, cookie, 1024);
      for (const d of page) {
        const mode = meta.getInode(d.ino)?.mode ?? 0;
        if (fileType(mode) === 'file') files.add(d.ino);
        else if (fileType(mode) === 'directory') stack.push(d.ino);
        if (files.size > constants.adminFileCountMax) throw new HttpError(400, `${what}: more than ${constants.adminFileCountMax} files; name smaller trees`);
      }
      if (page.length < 1024) break;
      cookie = page[page.length - 1].cookie + 1;
    }
  }
  return [...files];
}

function tierOf(context: AdminContext): TieringEngine {
  if (!context.opened.tier) throw new HttpError(409, 'this file system has no object target (format or serve it with --target URL)');
  return context.opened.tier;
}

async function readBody(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > constants.adminBodyBytesMax) throw new HttpError(413, `request body over ${constants.adminBodyBytesMax} bytes`);
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request) {
    bytes += (chunk as Buffer).length;
    if (bytes > constants.adminBodyBytesMax) throw new HttpError(413, `request body over ${constants.adminBodyBytesMax} bytes`);
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
  if (isTierfsError(error)) return { status: statusByCode[error.code], message: error.message };
  return { status: 500, message: `internal error: ${(error as Error)?.message ?? String(error)}` };
}

/**
 * A long operation.  With wait: progress lines, then the result (NDJSON); a
 * client that hangs up stops the job at its next step (a pack, a group of
 * extents), which leaves everything consistent.  Without: 202 at once and
 * the job goes on in the daemon.
 */
async function runJob(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  wait: unknown,
  what: string,
  job: (control: JobControl) => Promise<Record<string, unknown>>,
): Promise<void> {
  if (!wait) {
    job({}).catch((error) => log.warn(`${what} failed`, { error: (error as Error).message }));
    send(response, 202, { started: true });
    return;
  }
  const abort = new AbortController();
  response.on('close', () => {
    if (!response.writableFinished) {
      log.info(`${what} stopped: the client went away`);
      abort.abort();
    }
  });
  response.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let last = 0;
  const result = await job({
    signal: abort.signal,
    progress: (p) => {
      const now = Date.now();
      if (now - last < constants.adminProgressIntervalMs && p.doneBytes < p.totalBytes) return;
      last = now;
      response.write(`${JSON.stringify({ progress: p })}\n`);
    },
  }).then(
    (value) => ({ result: { ...value, ...(abort.signal.aborted ? { stopped: true } : {}) } }),
    (error: unknown) => ({ error: errorStatus(error).message }),
  );
  response.end(`${JSON.stringify(result)}\n`);
}

/** Run one job over several files, one after the other, with progress over them all. */
async function eachFile(inos: Ino[], totalBytes: number, control: JobControl, step: (ino: Ino, control: JobControl) => Promise<number>): Promise<number> {
  let doneBytes = 0;
  for (const ino of inos) {
    if (control.signal?.aborted) break;
    const before = doneBytes;
    doneBytes += await step(ino, {
      signal: control.signal,
      progress: (p) => control.progress?.({ doneBytes: before + p.doneBytes, totalBytes }),
    });
  }
  control.progress?.({ doneBytes, totalBytes });
  return doneBytes;
}

function bytesWith(context: AdminContext, inos: Ino[], residency: 'FLASH' | 'OBJECT'): number {
  let bytes = 0;
  for (const ino of inos) for (const e of context.opened.meta.fileExtents(ino)) if (residencyOf(e) === residency) bytes += e.lengthBytes;
  return bytes;
}

// ---- reports ----

function status(context: AdminContext) {
  const { opened } = context;
  const tier = opened.tier?.status();
  return {
    mount: context.mountPath,
    fsUuid: opened.store.superblock.uuid,
    flash: tier?.flash ?? { capacityBytes: opened.store.capacityBytes, usedBytes: opened.store.usedBytes },
    residency: tier?.residency ?? { ...opened.meta.residencyTotals() },
    packs: tier?.packs ?? opened.meta.packTotals(),
    watermarks: tier?.watermarks ?? null,
    destage: tier?.destage ?? null,
    recall: tier?.recall ?? null,
    errors: tier?.errors ?? { flashChecksumErrorCount: opened.store.counters.checksumErrorCount },
    target: tier?.target ?? null,
    targets: tier?.targets ?? [],
    policyCount: tier?.policyCount ?? 0,
    pinnedFileCount: tier?.pinnedFileCount ?? 0,
    inodeCount: opened.meta.inodeCount(),
    counters: tier?.counters ?? opened.store.counters,
  };
}

function residencyLabel(r: { flashOnlyBytes: number; bothBytes: number; objectOnlyBytes: number }): string {
  const kinds = [r.flashOnlyBytes > 0 && 'flash', r.bothBytes > 0 && 'both', r.objectOnlyBytes > 0 && 'object'].filter(Boolean);
  return kinds.length === 0 ? 'empty' : kinds.length === 1 ? (kinds[0] as string) : 'mixed';
}

function fileReport(context: AdminContext, ino: Ino, relative: string) {
  const inode = context.opened.meta.getInode(ino)!;
  const tier = context.opened.tier;
  if (tier) {
    const r = tier.fileResidency(ino);
    const type = fileType(inode.mode);
    return { path: relative, ino, type, ...r, size: inode.sizeBytes, residency: type === 'file' ? residencyLabel(r) : '-', pinned: context.opened.meta.isPinned(ino) };
  }
  const flashBytes = context.opened.meta.fileExtents(ino).reduce((sum, e) => sum + e.lengthBytes, 0);
  return {
    path: relative, ino, type: fileType(inode.mode), size: inode.sizeBytes, flashBytes, objectBytes: 0,
    flashOnlyBytes: flashBytes, bothBytes: 0, objectOnlyBytes: 0, policy: null, residency: flashBytes > 0 ? 'flash' : 'empty', pinned: false,
  };
}

function stat(context: AdminContext, url: URL) {
  const { ino, relative } = resolveMountPath(context, url.searchParams.get('path') ?? undefined);
  const { meta } = context.opened;
  const inode = meta.getInode(ino)!;
  if (fileType(inode.mode) !== 'directory') return fileReport(context, ino, relative);
  const entries = [];
  let truncated = false;
  for (let cookie = 0; ; ) {
    const page = meta.listDirents(ino, cookie, 1024);
    for (const d of page) {
      if (entries.length >= constants.adminListingCountMax) {
        truncated = true;
        break;
      }
      const { path: _path, ...report } = fileReport(context, d.ino, path.posix.join(relative, d.name));
      entries.push({ name: d.name, ...report });
    }
    if (page.length < 1024 || truncated) break;
    cookie = page[page.length - 1].cookie + 1;
  }
  return { path: relative, ino, type: 'directory', entries, truncated };
}

const heatBuckets: { label: string; ageMsMax: number }[] = [
  { label: '< 1 hour', ageMsMax: 3_600_000 },
  { label: '1 hour - 1 day', ageMsMax: 86_400_000 },
  { label: '1 - 7 days', ageMsMax: 7 * 86_400_000 },
  { label: '7 - 30 days', ageMsMax: 30 * 86_400_000 },
  { label: '30 - 90 days', ageMsMax: 90 * 86_400_000 },
  { label: '90 days - 1 year', ageMsMax: 365 * 86_400_000 },
  { label: '> 1 year', ageMsMax: Infinity },
];

/** Bytes (and where they are) by time since last access, for the whole file system or a tree. */
async function heat(context: AdminContext, url: URL) {
  const tier = tierOf(context);
  const given = url.searchParams.get('path');
  const buckets = heatBuckets.map((b, i) => ({
    label: b.label,
    ageMsMin: i === 0 ? 0 : heatBuckets[i - 1].ageMsMax,
    ageMsMax: Number.isFinite(b.ageMsMax) ? b.ageMsMax : null,
    bytes: 0,
    flashBytes: 0,
    extentCount: 0,
  }));
  const now = tier.options.clock.nowMs();
  const add = (e: Extent) => {
    const ageMs = Math.max(0, now - tier.heat.heatOf(e).accessedMs);
    const bucket = buckets[heatBuckets.findIndex((b) => ageMs < b.ageMsMax)];
    bucket.bytes += e.lengthBytes;
    bucket.extentCount += 1;
    if (e.flashOffsetBytes !== null) bucket.flashBytes += e.lengthBytes;
  };
  let relative = '/';
  let seen = 0;
  if (given === null)
    for (const e of context.opened.meta.everyExtent()) {
      if (++seen % constants.reportYieldCountMax === 0) await yieldToEventLoop(); // the file system keeps serving
      add(e);
    }
  else {
    const root = resolveMountPath(context, given);
    relative = root.relative;
    for (const ino of filesUnder(context, [root], true, 'heat')) for (const e of context.opened.meta.fileExtents(ino)) add(e);
  }
  return { path: relative, nowMs: now, totalBytes: buckets.reduce((sum, b) => sum + b.bytes, 0), buckets };
}

// ---- policies ----

const policySchema: Schema = {
  name: { type: 'string', required: true },
  path: { type: 'string', required: true },
  mode: { type: 'string', required: true },
  coolAfterMs: { type: 'number' },
  sizeBytesMin: { type: 'number' },
  compress: { type: 'boolean' },
  target: { type: 'string' },
};

function policyFrom(body: Record<string, unknown>, base: Partial<PolicyRecord>, tier: TieringEngine): PolicyRecord {
  return validatePolicy({
    name: (body.name as string | undefined) ?? base.name!,
    pathGlob: (body.path as string | undefined) ?? base.pathGlob!,
    mode: ((body.mode as string | undefined) ?? base.mode) as PolicyRecord['mode'],
    coolAfterMs: (body.coolAfterMs as number | undefined) ?? base.coolAfterMs ?? tier.options.coolAfterMs,
    sizeBytesMin: (body.sizeBytesMin as number | undefined) ?? base.sizeBytesMin ?? 0,
    target: (body.target as string | undefined) ?? base.target ?? 'default',
    compress: (body.compress as boolean | undefined) ?? base.compress ?? false,
  });
}

function findPolicy(tier: TieringEngine, name: string): PolicyRecord {
  const policy = tier.listPolicies().find((p) => p.name === name);
  if (!policy) throw new HttpError(404, `no policy named ${name}`);
  return policy;
}

/** Simulated policies: {path, mode, coolAfter?|coolAfterMs?, sizeBytesMin?} each. */
function simulatedPolicies(tier: TieringEngine, given: Record<string, unknown>[], replace: boolean): PolicyRecord[] {
  const added = given.map((p, i) => {
    check(p, { name: { type: 'string' }, path: { type: 'string', required: true }, mode: { type: 'string', required: true }, coolAfterMs: { type: 'number' }, coolAfter: { type: 'string' }, sizeBytesMin: { type: 'number' } }, `simulate: policy ${i + 1}`);
    const coolAfterMs = p.coolAfter !== undefined ? parseDuration(p.coolAfter as string, `simulate: policy ${i + 1} coolAfter`) : p.coolAfterMs;
    return policyFrom({ ...p, name: p.name ?? `simulated-${i + 1}`, coolAfter: undefined, coolAfterMs }, {}, tier);
  });
  if (replace) return added;
  const globs = new Set(added.map((p) => p.pathGlob));
  return [...tier.listPolicies().filter((p) => !globs.has(p.pathGlob)), ...added];
}

// ---- routes ----

async function route(context: AdminContext, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://tierfs');
  const method = request.method ?? 'GET';
  const expect = (...wanted: string[]) => {
    if (!wanted.includes(method)) throw new HttpError(405, `${url.pathname} takes ${wanted.join(' or ')}`);
  };
  const body = method === 'GET' || method === 'DELETE' ? {} : await readBody(request);
  const segments = url.pathname.split('/').filter(Boolean);
  const endpoint = segments.slice(0, 2).join('/');
  switch (endpoint) {
    case 'v1/status':
      expect('GET');
      return send(response, 200, status(context));
    case 'v1/stat':
      expect('GET');
      return send(response, 200, stat(context, url));
    case 'v1/heat':
      expect('GET');
      return send(response, 200, await heat(context, url));
    case 'v1/explain': {
      expect('GET');
      const tier = tierOf(context);
      const { ino, relative } = resolveMountPath(context, url.searchParams.get('path') ?? undefined);
      const pinned = context.opened.meta.isPinned(ino);
      const named = tier.pathOf(ino) ?? relative;
      const { matches, applies } = tier.explainPath(named);
      return send(response, 200, {
        path: relative,
        policyPath: named,
        pinned,
        applies: pinned ? tier.policyOf(ino) : applies,
        matches,
        reason: pinned
          ? 'pinned by tierfs pin: a pin overrides every policy'
          : matches.length === 0
            ? 'no policy matches: the default applies'
            : matches.length === 1
              ? `only ${applies.name} matches`
              : `${matches.length} policies match; ${applies.name} has the most literal characters in its glob`,
      });
    }
    case 'v1/destage':
    case 'v1/recall': {
      expect('POST');
      check(body, { path: { type: 'string' }, paths: { type: 'string[]' }, wait: { type: 'boolean' } }, segments[1]);
      const tier = tierOf(context);
      const inos = filesUnder(context, requestPaths(context, body, segments[1]), true, segments[1]);
      if (endpoint === 'v1/destage') {
        const { movable, kept } = tier.filesToDestage(inos);
        return runJob(request, response, body.wait, 'destage', async (control) => {
          await context.opened.fs.fsync(); // destage what was written, not what was acknowledged minutes ago
          const destagedBytes = await tier.destage({ inos: movable, ...control });
          return { fileCount: movable.length, skippedFileCount: kept.length, destagedBytes };
        });
      }
      return runJob(request, response, body.wait, 'recall', async (control) => {
        const recalledBytes = await eachFile(inos, bytesWith(context, inos, 'OBJECT'), control, (ino, c) => tier.recallFile(ino, c));
        return { fileCount: inos.length, recalledBytes };
      });
    }
    case 'v1/release': {
      expect('POST');
      check(body, { path: { type: 'string' }, paths: { type: 'string[]' } }, 'release');
      const tier = tierOf(context);
      const inos = filesUnder(context, requestPaths(context, body, 'release'), true, 'release');
      let releasedBytes = 0;
      let flashOnlyBytes = 0;
      let skippedFileCount = 0;
      for (const ino of inos) {
        if (inos.length > 1 && tier.policyOf(ino).mode === 'pin') {
          skippedFileCount += 1;
          continue;
        }
        const r = await tier.release(ino);
        releasedBytes += r.releasedBytes;
        flashOnlyBytes += r.flashOnlyBytes;
      }
      return send(response, 200, { fileCount: inos.length, releasedBytes, flashOnlyBytes, skippedFileCount });
    }
    case 'v1/pin':
    case 'v1/unpin': {
      expect('POST');
      const pin = endpoint === 'v1/pin';
      check(body, { path: { type: 'string' }, paths: { type: 'string[]' }, recursive: { type: 'boolean' }, ...(pin ? { wait: { type: 'boolean' } } : {}) }, segments[1]);
      const tier = tierOf(context);
      const inos = filesUnder(context, requestPaths(context, body, segments[1]), body.recursive === true, segments[1]);
      let changedCount = 0;
      for (const ino of inos) if (await tier.pin(ino, pin)) changedCount += 1;
      if (!pin) return send(response, 200, { fileCount: inos.length, changedCount });
      return runJob(request, response, body.wait, 'pin', async (control) => {
        const recalledBytes = await eachFile(inos, bytesWith(context, inos, 'OBJECT'), control, (ino, c) => tier.recallFile(ino, c));
        return { fileCount: inos.length, changedCount, recalledBytes };
      });
    }
    case 'v1/policies': {
      const tier = tierOf(context);
      const name = segments[2] === undefined ? undefined : decodeURIComponent(segments[2]);
      if (segments.length > 3) throw new HttpError(404, `no such admin endpoint ${url.pathname}`);
      if (name === undefined) {
        expect('GET', 'POST');
        if (method === 'GET') return send(response, 200, { policies: tier.listPolicies(), default: tier.defaultPolicy });
        check(body, policySchema, 'policy');
        const policy = policyFrom(body, {}, tier);
        if (tier.listPolicies().some((p) => p.name === policy.name)) throw new HttpError(409, `a policy named ${policy.name} exists (tierfs policy edit changes it)`);
        await tier.putPolicy(policy);
        return send(response, 201, { policy });
      }
      expect('GET', 'PUT', 'DELETE');
      if (method === 'GET') return send(response, 200, { policy: findPolicy(tier, name) });
      if (method === 'DELETE') {
        await tier.deletePolicy(name);
        return send(response, 200, { deleted: name });
      }
      const { name: _name, path: _path, mode: _mode, ...optional } = policySchema;
      check(body, { path: { type: 'string' }, mode: { type: 'string' }, ...optional }, 'policy edit');
      if (Object.keys(body).length === 0) throw new HttpError(400, 'policy edit: nothing to change');
      const policy = policyFrom(body, findPolicy(tier, name), tier);
      await tier.putPolicy(policy);
      return send(response, 200, { policy });
    }
    case 'v1/simulate': {
      expect('POST');
      check(body, { flashSizeBytes: { type: 'number', required: true }, policies: { type: 'object[]' }, replace: { type: 'boolean' } }, 'simulate');
      const tier = tierOf(context);
      const flashSizeBytes = body.flashSizeBytes as number;
      if (!Number.isSafeInteger(flashSizeBytes) || flashSizeBytes <= 0) throw new HttpError(400, 'simulate: "flashSizeBytes" must be a whole number of bytes > 0');
      const given = (body.policies as Record<string, unknown>[] | undefined) ?? [];
      if (given.length > 1000) throw new HttpError(400, 'simulate: at most 1000 policies');
      const policies = given.length > 0 || body.replace ? simulatedPolicies(tier, given, body.replace === true) : undefined;
      tier.flushHeat();
      const result = await tier.simulate({ flashSizeBytes, policies, prices: context.prices ?? defaultPrices });
      return send(response, 200, { ...result, prices: context.prices ?? defaultPrices, policies: policies ?? tier.listPolicies() });
    }
    case 'v1/fsck': {
      expect('POST');
      check(body, { repair: { type: 'boolean' }, deep: { type: 'boolean' }, samplePacks: { type: 'number' } }, 'fsck');
      const samplePackCount = body.samplePacks as number | undefined;
      if (samplePackCount !== undefined && (!Number.isSafeInteger(samplePackCount) || samplePackCount < 1 || body.deep !== true))
        throw new HttpError(400, 'fsck: "samplePacks" is a whole number >= 1, with "deep"');
      const report = await checkFileSystem(context.opened, { repair: body.repair === true, deep: body.deep === true, samplePackCount, problemCountMax: constants.fsckProblemCountMax });
      return send(response, 200, report);
    }
    case 'v1/watermarks': {
      expect('GET', 'PUT');
      const tier = tierOf(context);
      if (method === 'PUT') {
        check(body, { highPercent: { type: 'number', required: true }, lowPercent: { type: 'number', required: true } }, 'watermarks');
        await tier.setWatermarks(body.highPercent as number, body.lowPercent as number);
      }
      return send(response, 200, tier.status().watermarks);
    }
    case 'v1/targets': {
      const tier = tierOf(context);
      if (segments.length === 2) {
        expect('GET', 'POST');
        if (method === 'POST') {
          check(body, { name: { type: 'string', required: true }, url: { type: 'string', required: true } }, 'target add');
          await tier.addTarget(body.name as string, body.url as string);
          return send(response, 201, { target: tier.status().targets.find((t) => t.name === body.name) });
        }
        return send(response, 200, { targets: tier.status().targets });
      }
      const name = decodeURIComponent(segments[2]);
      if (segments.length === 3) {
        expect('DELETE');
        await tier.removeTarget(name);
        return send(response, 200, { deleted: name });
      }
      if (segments.length !== 4 || segments[3] !== 'test') throw new HttpError(404, `no such admin endpoint ${url.pathname}`);
      expect('POST');
      check(body, {}, 'target test');
      return send(response, 200, { name, ...(await tier.testTarget(name)) });
    }
    default:
      throw new HttpError(404, `no such admin endpoint ${url.pathname}`);
  }
}

export interface AdminServer {
  socketPath: string;
  close(): Promise<void>;
}

/** The gid of the group `tierfs`, if the system has one. */
export function tierfsGroupId(groupFile = '/etc/group'): number | undefined {
  try {
    for (const line of fs.readFileSync(groupFile, 'utf8').split('\n')) {
      const [name, , gid] = line.split(':');
      if (name === 'tierfs' && /^\d+$/.test(gid ?? '')) return Number(gid);
    }
  } catch {
    // no group file: no group
  }
  return undefined;
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
      else {
        response.setHeader('connection', 'close'); // the rest of a refused body is not read
        send(response, status, { error: message });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const umask = process.umask(0o177); // created 0600; opened to the group below, once its group is right
    try {
      server.listen(socketPath, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  const gid = tierfsGroupId();
  if (gid !== undefined && process.getuid?.() === 0) fs.chownSync(socketPath, 0, gid);
  fs.chmodSync(socketPath, 0o660);
  log.info('admin API listening', { socket: socketPath, group: gid === undefined ? 'the daemon user\'s' : 'tierfs' });
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
