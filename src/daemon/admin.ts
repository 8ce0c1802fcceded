/**
 * The admin API: JSON over HTTP on a unix socket.  The `tierfs` commands
 * other than format and serve talk to it; none opens the metadata behind
 * the daemon's back, and neither does this file: it uses what the file
 * system (src/fs) and the tiering engine (src/tier) offer.
 *
 * Who may call: the socket is mode 0660, owned by the daemon's user and by
 * the group `tierfs` where that group exists (else the daemon's group); the
 * kernel refuses everyone else at connect(2), before a byte is read.
 *
 * The endpoints, their queries, bodies and answers are declared once in
 * api.ts; `handlers` below has exactly one per endpoint (the compiler
 * refuses a missing one or a wrong answer).  The file is the API's one idea:
 * checks, handlers and the server, as long as the list of endpoints.
 *
 * Every request is checked before anything changes: fields by name and
 * type (unknown ones refused), query parameters by name, paths absolute,
 * inside the mount, without ".." segments, at most adminPathCountMax of
 * them, bodies at most adminBodyBytesMax.  Errors are {"error": "one line"}
 * with a 4xx status for a caller's mistake and 5xx for the daemon's (every
 * error code has its status: statusByCode).  Paths are mapped to inodes by
 * name in the file system, never by touching the daemon's own mount.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import { isTierfsError, TierfsError, type ErrorCode } from '../errors';
import type { Attr, FileSystem, Ino } from '../fs/fs';
import { log } from '../log';
import type { PolicyRecord } from '../meta/meta_store';
import type { ShareManager } from './shares';
import { defaultPrices, parseDuration, validatePolicy, type JobControl, type Prices, type TieringEngine } from '../tier/tier';
import {
  bodySchemas,
  simulatedPolicySchema,
  type Api,
  type DirectoryReport,
  type Endpoint,
  type FileKind,
  type FileReport,
  type JobAnswer,
  type Method,
  type ParamsOf,
  type PathsBody,
  type ResidencyLabel,
  type Schema,
  type SimulatedPolicyBody,
  type StatusResponse,
} from './api';

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
  READ_ONLY: 409,
  STALE: 409,
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

/** What the daemon serves: the file system and, with an object target, its tiering engine. */
export interface Service {
  fs: FileSystem;
  tier: TieringEngine | undefined;
  /** The network shares, where the daemon manages them. */
  shares?: ShareManager;
}

export interface AdminContext extends Service {
  /** Absolute, resolved path of the mount point. */
  mountPath: string;
  /** Object storage prices for the simulator (serve config "prices"). */
  prices?: Prices;
  /** Paces progress lines (default: the system clock). */
  clock?: Clock;
}

// ---- validation ----

/** Check a body against its schema: unknown fields, missing ones and wrong types are refused with one line. */
function check<B>(body: Record<string, unknown>, schema: Schema<B>, what: string): B {
  const fields = schema as Record<string, { type: string; required?: boolean }>;
  for (const key of Object.keys(body)) if (!(key in fields)) throw new HttpError(400, `${what}: unknown field "${key}"${Object.keys(fields).length === 0 ? ' (it takes none)' : ` (known: ${Object.keys(fields).join(', ')})`}`);
  for (const [key, { type, required }] of Object.entries(fields)) {
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
  return body as B;
}

function fileKind(mode: number): FileKind {
  const type = mode & S_IFMT;
  return type === S_IFDIR ? 'directory' : type === S_IFREG ? 'file' : 'other';
}

/** The inode at an absolute path in the mount (no permission checks: the socket's group owns the appliance). */
export function resolveMountPath(context: AdminContext, absolute: unknown): { attr: Attr; relative: string } {
  if (typeof absolute !== 'string' || !path.isAbsolute(absolute)) throw new HttpError(400, 'a path must be an absolute path in the mount');
  if (absolute.includes('\0') || absolute.length > 4096) throw new HttpError(400, 'a path must be at most 4096 characters, without NUL');
  if (absolute.split('/').includes('..')) throw new HttpError(400, `${absolute}: ".." is not allowed in a path (give the resolved path)`);
  const relative = path.relative(context.mountPath, path.normalize(absolute));
  if (relative.startsWith('..') || path.isAbsolute(relative)) throw new HttpError(400, `${absolute} is not in the tierfs mount at ${context.mountPath}`);
  try {
    return { attr: context.fs.resolvePath(relative), relative: `/${relative}` };
  } catch (error) {
    if (isTierfsError(error, 'NOT_FOUND')) throw new HttpError(404, `${absolute}: no such file in the file system`);
    throw error;
  }
}

/** The paths of a request: `paths` (a list) or `path` (one). */
function requestPaths(context: AdminContext, body: PathsBody, what: string): { ino: Ino; path: string }[] {
  const list = body.paths ?? (body.path !== undefined ? [body.path] : []);
  if (list.length === 0) throw new HttpError(400, `${what}: give "paths", a list of absolute paths in the mount`);
  if (list.length > constants.adminPathCountMax) throw new HttpError(400, `${what}: at most ${constants.adminPathCountMax} paths per request`);
  return list.map((p) => {
    const { attr, relative } = resolveMountPath(context, p);
    return { ino: attr.ino, path: relative };
  });
}

/** The regular files a request names (directories: every file under them when `recursive`). */
function requestFiles(context: AdminContext, body: PathsBody, recursive: boolean, what: string): Ino[] {
  return context.fs.filesUnder(requestPaths(context, body, what), { recursive, countMax: constants.adminFileCountMax, what });
}

function sharesOf(context: AdminContext): ShareManager {
  if (!context.shares) throw new HttpError(501, 'this daemon manages no network shares');
  return context.shares;
}

function tierOf(context: AdminContext): TieringEngine {
  if (!context.tier) throw new HttpError(409, 'this file system has no object target (format or serve it with --target URL)');
  return context.tier;
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

// ---- answers: plain, or a job ----

interface Job<R> {
  job: (control: JobControl) => Promise<R>;
  what: string;
  wait: boolean;
}

type Reply<R> = { status?: number; body: R } | (R extends JobAnswer<infer J> ? Job<J> : never);

function isJob(reply: { body: unknown } | Job<unknown>): reply is Job<unknown> {
  return 'job' in reply;
}

/**
 * A long operation.  With wait: progress lines, then the result (NDJSON); a
 * client that hangs up stops the job at its next step (a pack, a group of
 * extents), which leaves everything consistent.  Without: 202 at once and
 * the job goes on in the daemon.
 */
async function runJob(request: http.IncomingMessage, response: http.ServerResponse, { job, what, wait }: Job<unknown>, clock: Clock): Promise<void> {
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
  let last = -Infinity;
  const result = await job({
    signal: abort.signal,
    progress: (p) => {
      const now = clock.monotonicMs();
      if (now - last < constants.adminProgressIntervalMs && p.doneBytes < p.totalBytes) return;
      last = now;
      response.write(`${JSON.stringify({ progress: p })}\n`);
    },
  }).then(
    (value) => ({ result: { ...(value as object), ...(abort.signal.aborted ? { stopped: true } : {}) } }),
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

// ---- reports ----

/** The status of the file system and its engine: figures kept as they run, never a scan (status, metrics and systemd's STATUS= read it). */
function writerStatus(service: Service): StatusResponse['writer'] {
  const lease = service.tier?.leaseStatus();
  return lease ? { ...lease, readOnly: service.tier?.readOnly ?? null } : null;
}

export function statusOf(service: Service, mountPath: string): StatusResponse {
  const totals = service.fs.totals();
  const tier = service.tier?.status();
  return {
    mount: mountPath,
    fsUuid: service.fs.uuid,
    flash: tier?.flash ?? totals.flash,
    device: service.fs.store.device.report(),
    residency: totals.residency,
    packs: tier?.packs ?? { count: 0, storedBytes: 0, logicalBytes: 0, liveBytes: 0, garbageBytes: 0 },
    watermarks: tier?.watermarks ?? null,
    destage: tier?.destage ?? null,
    recall: tier?.recall ?? null,
    errors: tier?.errors ?? { flashChecksumErrorCount: totals.counters.checksumErrorCount },
    target: tier?.target ?? null,
    targets: tier?.targets ?? [],
    policyCount: tier?.policyCount ?? 0,
    pinnedFileCount: tier?.pinnedFileCount ?? 0,
    inodeCount: totals.inodeCount,
    lost: service.fs.lostTotals(),
    replication: service.tier?.replicationStatus() ?? null,
    writer: writerStatus(service),
    follower: service.tier?.followerStatus() ?? null,
    shares: service.shares?.summary() ?? null,
    counters: { ...(tier?.counters ?? totals.counters) },
  };
}

function residencyLabel(r: { flashOnlyBytes: number; bothBytes: number; objectOnlyBytes: number }): ResidencyLabel {
  const kinds = (['flash', 'both', 'object'] as const).filter((_, i) => [r.flashOnlyBytes, r.bothBytes, r.objectOnlyBytes][i] > 0);
  return kinds.length === 0 ? 'empty' : kinds.length === 1 ? kinds[0] : 'mixed';
}

function fileReport(context: AdminContext, attr: Attr, relative: string): FileReport {
  const type = fileKind(attr.mode);
  const { tier } = context;
  if (tier) {
    const r = tier.fileResidency(attr.ino);
    return { path: relative, ino: attr.ino, type, ...r, size: attr.sizeBytes, residency: type === 'directory' ? '-' : residencyLabel(r), pinned: tier.isPinned(attr.ino) };
  }
  const flashBytes = context.fs.mappedBytes(attr.ino);
  return {
    path: relative, ino: attr.ino, type, size: attr.sizeBytes, flashBytes, objectBytes: 0,
    flashOnlyBytes: flashBytes, bothBytes: 0, objectOnlyBytes: 0, policy: null, residency: type === 'directory' ? '-' : flashBytes > 0 ? 'flash' : 'empty', pinned: false,
  };
}

function stat(context: AdminContext, absolute: string): FileReport | DirectoryReport {
  const { attr, relative } = resolveMountPath(context, absolute);
  if (fileKind(attr.mode) !== 'directory') return fileReport(context, attr, relative);
  const listing = context.fs.listDirectory(attr.ino, constants.adminListingCountMax);
  const entries = listing.entries.map(({ name, attr: child }) => {
    const { path: _path, ...report } = fileReport(context, child, path.posix.join(relative, name));
    return { name, ...report };
  });
  return { path: relative, ino: attr.ino, type: 'directory', entries, truncated: listing.truncated };
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

// ---- policies ----

function policyFrom(body: Partial<Record<'name' | 'path' | 'mode' | 'target' | 'durable', string> & { coolAfterMs: number; sizeBytesMin: number; compress: boolean }>, base: Partial<PolicyRecord>, tier: TieringEngine): PolicyRecord {
  return validatePolicy({
    name: body.name ?? base.name!,
    pathGlob: body.path ?? base.pathGlob!,
    mode: (body.mode ?? base.mode) as PolicyRecord['mode'],
    coolAfterMs: body.coolAfterMs ?? base.coolAfterMs ?? tier.options.coolAfterMs,
    sizeBytesMin: body.sizeBytesMin ?? base.sizeBytesMin ?? 0,
    target: body.target ?? base.target ?? 'default',
    compress: body.compress ?? base.compress ?? false,
    durable: (body.durable ?? base.durable ?? 'flash') as PolicyRecord['durable'],
  });
}

function findPolicy(tier: TieringEngine, name: string): PolicyRecord {
  const policy = tier.listPolicies().find((p) => p.name === name);
  if (!policy) throw new HttpError(404, `no policy named ${name}`);
  return policy;
}

/** Simulated policies: {path, mode, coolAfter?|coolAfterMs?, sizeBytesMin?} each. */
function simulatedPolicies(tier: TieringEngine, given: Record<string, unknown>[], replace: boolean): PolicyRecord[] {
  const added = given.map((raw, i) => {
    const p = check<SimulatedPolicyBody>(raw, simulatedPolicySchema, `simulate: policy ${i + 1}`);
    const coolAfterMs = p.coolAfter !== undefined ? parseDuration(p.coolAfter, `simulate: policy ${i + 1} coolAfter`) : p.coolAfterMs;
    return policyFrom({ name: p.name ?? `simulated-${i + 1}`, path: p.path, mode: p.mode, coolAfterMs, sizeBytesMin: p.sizeBytesMin }, {}, tier);
  });
  if (replace) return added;
  const globs = new Set(added.map((p) => p.pathGlob));
  return [...tier.listPolicies().filter((p) => !globs.has(p.pathGlob)), ...added];
}

// ---- one handler per endpoint ----

interface Call<E extends Endpoint> {
  context: AdminContext;
  query: Api[E]['query'];
  body: Api[E]['body'];
  params: ParamsOf<E>;
}

type Handlers = { [E in Endpoint]: (call: Call<E>) => Reply<Api[E]['response']> | Promise<Reply<Api[E]['response']>> };

/** The query parameters each endpoint takes (anything else is refused). */
const queryNames: { [E in Endpoint]: (keyof Api[E]['query'])[] } = {
  'GET /v1/status': [],
  'GET /v1/stat': ['path'],
  'GET /v1/heat': ['path'],
  'GET /v1/explain': ['path'],
  'POST /v1/destage': [],
  'POST /v1/recall': [],
  'POST /v1/release': [],
  'POST /v1/pin': [],
  'POST /v1/unpin': [],
  'GET /v1/policies': [],
  'POST /v1/policies': [],
  'GET /v1/policies/:name': [],
  'PUT /v1/policies/:name': [],
  'DELETE /v1/policies/:name': [],
  'POST /v1/simulate': [],
  'POST /v1/fsck': [],
  'GET /v1/watermarks': [],
  'PUT /v1/watermarks': [],
  'GET /v1/targets': [],
  'POST /v1/targets': [],
  'DELETE /v1/targets/:name': [],
  'POST /v1/targets/:name/test': [],
  'GET /v1/lost': [],
  'GET /v1/followers': [],
  'GET /v1/shares': [],
  'POST /v1/shares': [],
  'GET /v1/shares/:name': [],
  'PUT /v1/shares/:name': [],
  'DELETE /v1/shares/:name': [],
  'GET /v1/share-users': [],
  'POST /v1/share-users': [],
  'DELETE /v1/share-users/:name': [],
};

const handlers: Handlers = {
  'GET /v1/status': ({ context }) => ({ body: statusOf(context, context.mountPath) }),
  'GET /v1/stat': ({ context, query }) => ({ body: stat(context, query.path) }),
  'GET /v1/heat': async ({ context, query }) => {
    const tier = tierOf(context);
    let relative = '/';
    let inos: Ino[] | undefined;
    if (query.path !== undefined) {
      const root = resolveMountPath(context, query.path);
      relative = root.relative;
      inos = context.fs.filesUnder([{ ino: root.attr.ino, path: relative }], { recursive: true, countMax: constants.adminFileCountMax, what: 'heat' });
    }
    const histogram = await tier.heatHistogram(heatBuckets, inos);
    const buckets = heatBuckets.map((b, i) => ({
      label: b.label,
      ageMsMin: i === 0 ? 0 : heatBuckets[i - 1].ageMsMax,
      ageMsMax: Number.isFinite(b.ageMsMax) ? b.ageMsMax : null,
      ...histogram.buckets[i],
    }));
    return { body: { path: relative, nowMs: histogram.nowMs, totalBytes: buckets.reduce((sum, b) => sum + b.bytes, 0), buckets } };
  },
  'GET /v1/explain': ({ context, query }) => {
    const tier = tierOf(context);
    const { attr, relative } = resolveMountPath(context, query.path);
    const pinned = tier.isPinned(attr.ino);
    const named = tier.pathOf(attr.ino) ?? relative;
    const { matches, applies } = tier.explainPath(named);
    const reason = pinned
      ? 'pinned by tierfs pin: a pin overrides every policy'
      : matches.length === 0
        ? 'no policy matches: the default applies'
        : matches.length === 1
          ? `only ${applies.name} matches`
          : `${matches.length} policies match; ${applies.name} has the most literal characters in its glob`;
    return { body: { path: relative, policyPath: named, pinned, applies: pinned ? tier.policyOf(attr.ino) : applies, matches, reason } };
  },
  'POST /v1/destage': ({ context, body }) => {
    const tier = tierOf(context);
    const { movable, kept } = tier.filesToDestage(requestFiles(context, body, true, 'destage'));
    return {
      what: 'destage',
      wait: body.wait === true,
      job: async (control) => {
        await context.fs.fsync(); // destage what was written, not what was acknowledged minutes ago
        const destagedBytes = await tier.destage({ inos: movable, ...control });
        return { fileCount: movable.length, skippedFileCount: kept.length, destagedBytes };
      },
    };
  },
  'POST /v1/recall': ({ context, body }) => {
    const tier = tierOf(context);
    const inos = requestFiles(context, body, true, 'recall');
    return {
      what: 'recall',
      wait: body.wait === true,
      job: async (control) => ({ fileCount: inos.length, recalledBytes: await eachFile(inos, tier.residencyBytesOf(inos, 'OBJECT'), control, (ino, c) => tier.recallFile(ino, c)) }),
    };
  },
  'POST /v1/release': ({ context, body }) => {
    const tier = tierOf(context);
    const inos = requestFiles(context, body, true, 'release');
    if (inos.length === 1) {
      const policy = tier.policyOf(inos[0]);
      if (policy.mode === 'pin') throw new TierfsError('INVALID', `policy ${policy.name} pins ${body.paths?.[0] ?? body.path} to flash`);
    }
    return {
      what: 'release',
      wait: body.wait === true,
      job: async (control) => ({ fileCount: inos.length, ...(await tier.releaseFiles(inos, control)) }),
    };
  },
  'POST /v1/pin': async ({ context, body }) => {
    const tier = tierOf(context);
    const inos = requestFiles(context, body, body.recursive === true, 'pin');
    let changedCount = 0;
    for (const ino of inos) if (await tier.pin(ino, true)) changedCount += 1;
    return {
      what: 'pin',
      wait: body.wait === true,
      job: async (control) => ({
        fileCount: inos.length,
        changedCount,
        recalledBytes: await eachFile(inos, tier.residencyBytesOf(inos, 'OBJECT'), control, (ino, c) => tier.recallFile(ino, c)),
      }),
    };
  },
  'POST /v1/unpin': async ({ context, body }) => {
    const tier = tierOf(context);
    const inos = requestFiles(context, body, body.recursive === true, 'unpin');
    let changedCount = 0;
    for (const ino of inos) if (await tier.pin(ino, false)) changedCount += 1;
    return { body: { fileCount: inos.length, changedCount } };
  },
  'GET /v1/policies': ({ context }) => {
    const tier = tierOf(context);
    return { body: { policies: tier.listPolicies(), default: tier.defaultPolicy } };
  },
  'POST /v1/policies': async ({ context, body }) => {
    const tier = tierOf(context);
    const policy = policyFrom(body, {}, tier);
    if (tier.listPolicies().some((p) => p.name === policy.name)) throw new HttpError(409, `a policy named ${policy.name} exists (tierfs policy edit changes it)`);
    await tier.putPolicy(policy);
    return { status: 201, body: { policy } };
  },
  'GET /v1/policies/:name': ({ context, params }) => ({ body: { policy: findPolicy(tierOf(context), params.name) } }),
  'PUT /v1/policies/:name': async ({ context, params, body }) => {
    const tier = tierOf(context);
    const current = findPolicy(tier, params.name);
    if (Object.keys(body).length === 0) throw new HttpError(400, 'policy edit: nothing to change');
    const policy = policyFrom(body, current, tier);
    await tier.putPolicy(policy);
    return { body: { policy } };
  },
  'DELETE /v1/policies/:name': async ({ context, params }) => {
    await tierOf(context).deletePolicy(params.name);
    return { body: { deleted: params.name } };
  },
  'POST /v1/simulate': async ({ context, body }) => {
    const tier = tierOf(context);
    if (!Number.isSafeInteger(body.flashSizeBytes) || body.flashSizeBytes <= 0) throw new HttpError(400, 'simulate: "flashSizeBytes" must be a whole number of bytes > 0');
    const given = (body.policies ?? []) as unknown as Record<string, unknown>[];
    if (given.length > constants.policyCountMax) throw new HttpError(400, `simulate: at most ${constants.policyCountMax} policies`);
    const policies = given.length > 0 || body.replace ? simulatedPolicies(tier, given, body.replace === true) : undefined;
    tier.flushHeat();
    const prices = context.prices ?? defaultPrices;
    const result = await tier.simulate({ flashSizeBytes: body.flashSizeBytes, policies, prices });
    return { body: { ...result, prices, policies: policies ?? tier.listPolicies() } };
  },
  'POST /v1/fsck': async ({ context, body }) => {
    const samplePackCount = body.samplePacks;
    if (samplePackCount !== undefined && (!Number.isSafeInteger(samplePackCount) || samplePackCount < 1 || body.deep !== true))
      throw new HttpError(400, 'fsck: "samplePacks" is a whole number >= 1, with "deep"');
    const report = await context.fs.check({ repair: body.repair === true, deep: body.deep === true, samplePackCount, problemCountMax: constants.fsckProblemCountMax }, context.tier);
    return { body: report };
  },
  'GET /v1/watermarks': ({ context }) => ({ body: tierOf(context).status().watermarks }),
  'PUT /v1/watermarks': async ({ context, body }) => {
    const tier = tierOf(context);
    await tier.setWatermarks(body.highPercent, body.lowPercent);
    return { body: tier.status().watermarks };
  },
  'GET /v1/targets': ({ context }) => ({ body: { targets: tierOf(context).status().targets } }),
  'POST /v1/targets': async ({ context, body }) => {
    const tier = tierOf(context);
    await tier.addTarget(body.name, body.url);
    return { status: 201, body: { target: tier.status().targets.find((t) => t.name === body.name)! } };
  },
  'DELETE /v1/targets/:name': async ({ context, params }) => {
    await tierOf(context).removeTarget(params.name);
    return { body: { deleted: params.name } };
  },
  'POST /v1/targets/:name/test': async ({ context, params }) => ({ body: { name: params.name, ...(await tierOf(context).testTarget(params.name)) } }),
  'GET /v1/lost': ({ context }) => ({ body: context.fs.lostFiles(constants.adminListingCountMax) }),
  'GET /v1/followers': async ({ context }) => ({ body: { followers: await tierOf(context).followers() } }),
  'GET /v1/shares': async ({ context }) => ({ body: await sharesOf(context).list() }),
  'POST /v1/shares': async ({ context, body }) => ({ status: 201, body: await sharesOf(context).add(body) }),
  'GET /v1/shares/:name': async ({ context, params }) => ({ body: { share: await sharesOf(context).show(params.name) } }),
  'PUT /v1/shares/:name': async ({ context, params, body }) => ({ body: await sharesOf(context).edit(params.name, body) }),
  'DELETE /v1/shares/:name': async ({ context, params }) => ({ body: { deleted: params.name, warnings: await sharesOf(context).remove(params.name) } }),
  'GET /v1/share-users': async ({ context }) => ({ body: { users: await sharesOf(context).users() } }),
  'POST /v1/share-users': async ({ context, body }) => ({ status: 201, body: await sharesOf(context).addUser(body.name, body.password) }),
  'DELETE /v1/share-users/:name': async ({ context, params }) => ({ body: await sharesOf(context).removeUser(params.name) }),
};

// ---- routing ----

const routes = (Object.keys(handlers) as Endpoint[]).map((endpoint) => {
  const [method, pattern] = endpoint.split(' ') as [Method, string];
  const regex = new RegExp(`^${pattern.replace(':name', '([^/]+)')}$`);
  return { endpoint, method, regex };
});

/** What a request's path and method name: the endpoint, its parameter, or the one-line refusal. */
function match(pathname: string, method: string): { endpoint: Endpoint; name?: string } {
  const candidates = routes.filter((r) => r.regex.test(pathname));
  if (candidates.length === 0) throw new HttpError(404, `no such admin endpoint ${pathname}`);
  const route = candidates.find((r) => r.method === method);
  if (!route) throw new HttpError(405, `${pathname} takes ${candidates.map((r) => r.method).join(' or ')}`);
  const name = route.regex.exec(pathname)![1];
  let decoded: string | undefined;
  if (name !== undefined) {
    try {
      decoded = decodeURIComponent(name);
    } catch {
      throw new HttpError(400, `${pathname}: the name is not valid URL encoding`);
    }
  }
  return { endpoint: route.endpoint, name: decoded };
}

/** What a call's answer's `what` is in messages: the endpoint's first path segment after /v1. */
function whatOf(endpoint: Endpoint): string {
  const segment = endpoint.split(' ')[1].split('/')[2];
  return { policies: 'policy', targets: 'target', watermarks: 'watermarks', shares: 'share', 'share-users': 'share user' }[segment] ?? segment;
}

async function route(context: AdminContext, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://tierfs');
  const method = request.method ?? 'GET';
  const { endpoint, name } = match(url.pathname, method);
  const raw = method === 'GET' || method === 'DELETE' ? {} : await readBody(request);
  const what = endpoint === 'PUT /v1/policies/:name' ? 'policy edit' : endpoint === 'POST /v1/targets' ? 'target add' : endpoint === 'POST /v1/targets/:name/test' ? 'target test' : whatOf(endpoint);
  const body = check(raw, bodySchemas[endpoint] as Schema<Record<string, unknown>>, what);
  const allowed = queryNames[endpoint] as string[];
  const query: Record<string, string> = {};
  for (const [key, value] of url.searchParams) {
    if (!allowed.includes(key)) throw new HttpError(400, `${url.pathname}: unknown query parameter "${key}"${allowed.length === 0 ? '' : ` (known: ${allowed.join(', ')})`}`);
    query[key] = value;
  }
  const call = { context, query, body, params: name === undefined ? {} : { name } };
  const reply = await (handlers[endpoint] as (call: unknown) => Promise<{ status?: number; body: unknown } | Job<unknown>>)(call);
  if (isJob(reply)) return runJob(request, response, reply, context.clock ?? systemClock);
  send(response, reply.status ?? 200, reply.body);
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
