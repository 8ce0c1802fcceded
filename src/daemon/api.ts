/**
 * The admin API's contract, declared once: every endpoint's method and path,
 * its query, its body and its answer.  The daemon (admin.ts) must have one
 * handler per endpoint returning exactly that answer, and the CLI
 * (cli/client.ts) can only call endpoints that exist with the body they
 * take, reading the fields they answer — so the JSON fields DESIGN.md calls
 * stable (`stat --json`: path, size, flashBytes, objectBytes, policy;
 * `status --json`: flash, residency, packs) are checked by the compiler on
 * both sides.
 *
 * Only types (and the body schemas the daemon checks at run time) live
 * here: the CLI imports it without loading the daemon.
 */
import type { FlashDeviceReport } from '../device/device';
import type { FsckReport } from '../fs/fsck';
import type { PackTotals, PolicyRecord, ResidencyTotals } from '../meta/meta_store';
import type { FileResidency } from '../tier/tiering';
import type { Prices, SimulationResult } from '../tier/simulate';
import type { ProbeReport } from '../tier/target_set';
import type { FollowerStatus } from '../tier/follower';
import type { FollowerReport } from '../tier/tiering';
import type { LeaseStatus } from '../tier/lease';
import type { ReplicationStatus } from '../tier/replication';
import type { ShareBody, ShareEditBody, ShareReport, SharesResponse, SharesSummary } from './shares';

// ---- answers ----

export interface TargetReport {
  name: string;
  url: string;
  encrypted: boolean;
  reachable: boolean;
  lastError?: string;
  /** Packs in this target and their stored bytes. */
  count: number;
  storedBytes: number;
}

export interface WatermarksReport {
  highPercent: number;
  lowPercent: number;
}

export interface StatusResponse {
  mount: string;
  fsUuid: string;
  flash: { capacityBytes: number; usedBytes: number; highWatermarkBytes?: number; lowWatermarkBytes?: number };
  /** The flash tier's device and how I/O reaches it (io_uring or psync). */
  device: FlashDeviceReport;
  residency: ResidencyTotals;
  packs: PackTotals & { garbageBytes: number };
  watermarks: WatermarksReport | null;
  destage: { queueBytes: number; queueAgeMs: number | null; bytesPerSecond: number } | null;
  recall: {
    bytesPerSecond: number;
    getCount: number;
    /** GETs per GiB recalled since the daemon started, and over the last minute (null: nothing recalled). */
    getsPerGiB: number | null;
    getsPerGiBLastMinute: number | null;
    /** Bytes fetched ahead of sequential readers and not read yet. */
    prefetchedBytes: number;
    /** Memory held in receive slabs for recall GETs (reused; let go when recall is idle). */
    receiveBufferBytes: number;
    latencyMsP50: number | null;
    latencyMsP99: number | null;
  } | null;
  errors: { destageFailureCount?: number; recallFailureCount?: number; recallChecksumErrorCount?: number; flashChecksumErrorCount: number };
  target: Omit<TargetReport, 'name' | 'count' | 'storedBytes'> | null;
  targets: TargetReport[];
  policyCount: number;
  pinnedFileCount: number;
  inodeCount: number;
  /** Files whose newest data was only on a lost flash tier, and those bytes (tierfs lost). */
  lost: { fileCount: number; bytes: number };
  /** Metadata replication to the default target (null: off, or no target). */
  replication: ReplicationStatus & { heldForRetentionBytes: number } | null;
  /** The bucket's writer lease (null: none taken: replication off, or no target); `readOnly`: why this appliance serves read-only, if it does. */
  writer: (LeaseStatus & { readOnly: string | null }) | null;
  /** Following a writer (serve --follow), or null. */
  follower: FollowerStatus | null;
  /** Network shares and their servers (null: the daemon manages none, as in tests without it). */
  shares: SharesSummary | null;
  counters: Record<string, number>;
}

export interface LostResponse {
  files: { path: string | null; ino: number; ranges: { fileOffsetBytes: number; lengthBytes: number }[]; writtenMs: number }[];
  /** More files than adminListingCountMax: the list stops there. */
  truncated: boolean;
}

export type FileKind = 'file' | 'directory' | 'other';
/** Where a file's bytes are, as one word; '-' for a directory (it has no bytes of its own). */
export type ResidencyLabel = 'flash' | 'both' | 'object' | 'mixed' | 'empty' | '-';

/** A file's residency as the engine reports it (size, flashBytes, objectBytes and the split), with where it is and what it is. */
export interface FileReport extends Omit<FileResidency, 'policy' | 'mode' | 'extentCount' | 'heat'>, Partial<Pick<FileResidency, 'mode' | 'extentCount' | 'heat'>> {
  path: string;
  ino: number;
  type: FileKind;
  /** The policy that applies (null without an object target). */
  policy: string | null;
  residency: ResidencyLabel;
  pinned: boolean;
}

export interface DirectoryReport {
  path: string;
  ino: number;
  type: 'directory';
  entries: (Omit<FileReport, 'path'> & { name: string })[];
  /** More entries than adminListingCountMax: the listing stops there. */
  truncated: boolean;
}

export interface HeatBucket {
  label: string;
  ageMsMin: number;
  ageMsMax: number | null;
  bytes: number;
  flashBytes: number;
  extentCount: number;
}

export interface HeatResponse {
  path: string;
  nowMs: number;
  totalBytes: number;
  buckets: HeatBucket[];
}

export interface ExplainResponse {
  path: string;
  policyPath: string;
  pinned: boolean;
  applies: PolicyRecord;
  matches: PolicyRecord[];
  reason: string;
}

export interface DestageResult {
  fileCount: number;
  skippedFileCount: number;
  destagedBytes: number;
  stopped?: boolean;
}

export interface RecallResult {
  fileCount: number;
  recalledBytes: number;
  stopped?: boolean;
}

export interface PinResult extends RecallResult {
  changedCount: number;
}

export interface ReleaseResult {
  fileCount: number;
  releasedBytes: number;
  flashOnlyBytes: number;
  skippedFileCount: number;
  stopped?: boolean;
}

export interface UnpinResponse {
  fileCount: number;
  changedCount: number;
}

export interface SimulateResponse extends SimulationResult {
  prices: Prices;
  policies: PolicyRecord[];
}

/** A job's answer: without `wait`, `{started: true}` at once (202); with it, NDJSON progress lines, then `{result}` or `{error}`. */
export type JobAnswer<R> = { started: true } | { result: R };

export interface ProgressLine<R = unknown> {
  progress?: { doneBytes: number; totalBytes: number };
  result?: R;
  error?: string;
}

// ---- requests ----

/** The files a command names: `paths` (a list) or `path` (one), absolute paths in the mount. */
export interface PathsBody {
  path?: string;
  paths?: string[];
}

export interface PolicyBody {
  name: string;
  path: string;
  mode: string;
  coolAfterMs?: number;
  sizeBytesMin?: number;
  compress?: boolean;
  target?: string;
  durable?: string;
}

export type PolicyEditBody = Partial<Omit<PolicyBody, 'name'>>;

/** A policy to try in a simulation (`coolAfter` as a duration such as "7d", or `coolAfterMs`). */
export interface SimulatedPolicyBody {
  name?: string;
  path: string;
  mode: string;
  coolAfterMs?: number;
  coolAfter?: string;
  sizeBytesMin?: number;
}

export interface SimulateBody {
  flashSizeBytes: number;
  policies?: SimulatedPolicyBody[];
  replace?: boolean;
}

export interface FsckBody {
  repair?: boolean;
  deep?: boolean;
  samplePacks?: number;
}

type NoBody = Record<string, never>;

/**
 * Every endpoint: "METHOD /v1/path" with `:name` for a path parameter.
 * `query`: the URL's search parameters; `body`: the JSON body; `response`:
 * what a successful call answers.
 */
export interface Api {
  'GET /v1/status': { query: NoBody; body: NoBody; response: StatusResponse };
  'GET /v1/stat': { query: { path: string }; body: NoBody; response: FileReport | DirectoryReport };
  'GET /v1/heat': { query: { path?: string }; body: NoBody; response: HeatResponse };
  'GET /v1/explain': { query: { path: string }; body: NoBody; response: ExplainResponse };
  'POST /v1/destage': { query: NoBody; body: PathsBody & { wait?: boolean }; response: JobAnswer<DestageResult> };
  'POST /v1/recall': { query: NoBody; body: PathsBody & { wait?: boolean }; response: JobAnswer<RecallResult> };
  'POST /v1/release': { query: NoBody; body: PathsBody & { wait?: boolean }; response: JobAnswer<ReleaseResult> };
  'POST /v1/pin': { query: NoBody; body: PathsBody & { recursive?: boolean; wait?: boolean }; response: JobAnswer<PinResult> };
  'POST /v1/unpin': { query: NoBody; body: PathsBody & { recursive?: boolean }; response: UnpinResponse };
  'GET /v1/policies': { query: NoBody; body: NoBody; response: { policies: PolicyRecord[]; default: PolicyRecord } };
  'POST /v1/policies': { query: NoBody; body: PolicyBody; response: { policy: PolicyRecord } };
  'GET /v1/policies/:name': { query: NoBody; body: NoBody; response: { policy: PolicyRecord } };
  'PUT /v1/policies/:name': { query: NoBody; body: PolicyEditBody; response: { policy: PolicyRecord } };
  'DELETE /v1/policies/:name': { query: NoBody; body: NoBody; response: { deleted: string } };
  'POST /v1/simulate': { query: NoBody; body: SimulateBody; response: SimulateResponse };
  'POST /v1/fsck': { query: NoBody; body: FsckBody; response: FsckReport };
  'GET /v1/watermarks': { query: NoBody; body: NoBody; response: WatermarksReport };
  'PUT /v1/watermarks': { query: NoBody; body: WatermarksReport; response: WatermarksReport };
  'GET /v1/targets': { query: NoBody; body: NoBody; response: { targets: TargetReport[] } };
  'POST /v1/targets': { query: NoBody; body: { name: string; url: string }; response: { target: TargetReport } };
  'DELETE /v1/targets/:name': { query: NoBody; body: NoBody; response: { deleted: string } };
  'POST /v1/targets/:name/test': { query: NoBody; body: NoBody; response: ProbeReport & { name: string } };
  'GET /v1/lost': { query: NoBody; body: NoBody; response: LostResponse };
  'GET /v1/followers': { query: NoBody; body: NoBody; response: { followers: FollowerReport[] } };
  'GET /v1/shares': { query: NoBody; body: NoBody; response: SharesResponse };
  'POST /v1/shares': { query: NoBody; body: ShareBody; response: { share: ShareReport; warnings: string[] } };
  'GET /v1/shares/:name': { query: NoBody; body: NoBody; response: { share: ShareReport } };
  'PUT /v1/shares/:name': { query: NoBody; body: ShareEditBody; response: { share: ShareReport; warnings: string[] } };
  'DELETE /v1/shares/:name': { query: NoBody; body: NoBody; response: { deleted: string; warnings: string[] } };
  'GET /v1/share-users': { query: NoBody; body: NoBody; response: { users: { name: string; shares: string[] }[] } };
  'POST /v1/share-users': { query: NoBody; body: { name: string; password: string }; response: { name: string; accountCreated: boolean; passwordChanged: boolean } };
  'DELETE /v1/share-users/:name': { query: NoBody; body: NoBody; response: { name: string; accountRemoved: boolean } };
}

export type Endpoint = keyof Api;
export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** The path parameters an endpoint's pattern names (`:name`). */
export type ParamsOf<E extends Endpoint> = E extends `${string}:name${string}` ? { name: string } : NoBody;

// ---- the body schemas the daemon checks (one per body type: the compiler refuses a missing or extra field) ----

export type FieldType = 'string' | 'boolean' | 'number' | 'string[]' | 'object[]';
export type Schema<B> = { [K in keyof Required<B>]: { type: FieldType; required?: boolean } };

const pathsSchema: Schema<PathsBody> = { path: { type: 'string' }, paths: { type: 'string[]' } };

const shareEditSchema: Schema<ShareEditBody> = {
  path: { type: 'string' },
  readOnly: { type: 'boolean' },
  nfs: { type: 'string[]' },
  rootSquash: { type: 'boolean' },
  smb: { type: 'boolean' },
  users: { type: 'string[]' },
  allowWorld: { type: 'boolean' },
};

export const bodySchemas: { [E in Endpoint]: Schema<Api[E]['body']> } = {
  'GET /v1/status': {},
  'GET /v1/stat': {},
  'GET /v1/heat': {},
  'GET /v1/explain': {},
  'POST /v1/destage': { ...pathsSchema, wait: { type: 'boolean' } },
  'POST /v1/recall': { ...pathsSchema, wait: { type: 'boolean' } },
  'POST /v1/release': { ...pathsSchema, wait: { type: 'boolean' } },
  'POST /v1/pin': { ...pathsSchema, recursive: { type: 'boolean' }, wait: { type: 'boolean' } },
  'POST /v1/unpin': { ...pathsSchema, recursive: { type: 'boolean' } },
  'GET /v1/policies': {},
  'POST /v1/policies': {
    name: { type: 'string', required: true },
    path: { type: 'string', required: true },
    mode: { type: 'string', required: true },
    coolAfterMs: { type: 'number' },
    sizeBytesMin: { type: 'number' },
    compress: { type: 'boolean' },
    target: { type: 'string' },
    durable: { type: 'string' },
  },
  'GET /v1/policies/:name': {},
  'PUT /v1/policies/:name': {
    path: { type: 'string' },
    mode: { type: 'string' },
    coolAfterMs: { type: 'number' },
    sizeBytesMin: { type: 'number' },
    compress: { type: 'boolean' },
    target: { type: 'string' },
    durable: { type: 'string' },
  },
  'DELETE /v1/policies/:name': {},
  'POST /v1/simulate': { flashSizeBytes: { type: 'number', required: true }, policies: { type: 'object[]' }, replace: { type: 'boolean' } },
  'POST /v1/fsck': { repair: { type: 'boolean' }, deep: { type: 'boolean' }, samplePacks: { type: 'number' } },
  'GET /v1/watermarks': {},
  'PUT /v1/watermarks': { highPercent: { type: 'number', required: true }, lowPercent: { type: 'number', required: true } },
  'GET /v1/targets': {},
  'POST /v1/targets': { name: { type: 'string', required: true }, url: { type: 'string', required: true } },
  'DELETE /v1/targets/:name': {},
  'POST /v1/targets/:name/test': {},
  'GET /v1/lost': {},
  'GET /v1/followers': {},
  'GET /v1/shares': {},
  'POST /v1/shares': { ...shareEditSchema, name: { type: 'string', required: true }, path: { type: 'string', required: true } },
  'GET /v1/shares/:name': {},
  'PUT /v1/shares/:name': shareEditSchema,
  'DELETE /v1/shares/:name': {},
  'GET /v1/share-users': {},
  'POST /v1/share-users': { name: { type: 'string', required: true }, password: { type: 'string', required: true } },
  'DELETE /v1/share-users/:name': {},
};

export const simulatedPolicySchema: Schema<SimulatedPolicyBody> = {
  name: { type: 'string' },
  path: { type: 'string', required: true },
  mode: { type: 'string', required: true },
  coolAfterMs: { type: 'number' },
  coolAfter: { type: 'string' },
  sizeBytesMin: { type: 'number' },
};

/** The URL path of an endpoint with its parameter filled in. */
export function urlPathOf<E extends Endpoint>(endpoint: E, params: ParamsOf<E>, query: Api[E]['query']): string {
  const pattern = endpoint.slice(endpoint.indexOf(' ') + 1);
  const filled = pattern.replace(':name', encodeURIComponent((params as { name?: string }).name ?? ''));
  const search = new URLSearchParams(Object.entries(query as Record<string, string | undefined>).filter((e): e is [string, string] => e[1] !== undefined)).toString();
  return search === '' ? filled : `${filled}?${search}`;
}

export function methodOf(endpoint: Endpoint): Method {
  return endpoint.slice(0, endpoint.indexOf(' ')) as Method;
}
