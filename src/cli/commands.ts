/**
 * The commands that steer a running daemon through its admin socket:
 * status, stat, heat, destage, recall, release, pin, unpin, policy, fsck,
 * watermark and target.  Each prints for people by default and JSON with
 * --json; each error is one line (see main.ts for exit codes).
 */
import { TierfsError } from '../errors';
import { parseDuration, policyModes } from '../tier/policy';
import { noArguments, parseOptions, parseSize, required } from './args';
import type { Api, DirectoryReport, FileReport, JobAnswer, PolicyEditBody, ProgressLine, SimulatedPolicyBody, StatusResponse, WatermarksReport } from '../daemon/api';
import type { PolicyRecord } from '../meta/meta_store';
import { call, formatBytes, mountPath, progressBar, socketPath } from './client';
import { commandHelp } from './help';


export 
type Help = keyof typeof commandHelp;

export function parse(argv: string[], name: Help, extra: Parameters<typeof parseOptions>[1]) {
  const { values, positionals } = parseOptions(argv, { socket: { type: 'string' }, ...extra });
  if (values.help) {
    process.stdout.write(commandHelp[name]);
    return undefined;
  }
  return { values: values as Record<string, unknown>, positionals, socket: socketPath(values.socket as string | undefined) };
}

function paths(positionals: string[], name: string, min = 1): string[] {
  if (positionals.length < min) throw new TierfsError('USAGE', `${name}: give ${min === 1 ? 'at least one PATH' : 'a PATH'} (see tierfs ${name} --help)`);
  return positionals.map(mountPath);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '0%' : `${((100 * part) / whole).toFixed(1)}%`;
}


/** The flash device's I/O path in one line: which, why not a faster one, and what its ring has carried. */
function deviceLine(d: StatusResponse['device']): string {
  const how =
    d.io === 'nvme-passthrough' && d.passthrough
      ? `nvme-passthrough via ${d.passthrough.path} (namespace ${d.passthrough.nsid}, ${d.passthrough.lbaBytes}-byte blocks, ${formatBytes(d.passthrough.maxTransferBytes)} a command)`
      : d.io === 'psync'
        ? `psync (${d.psyncReason ?? 'io_uring unavailable'})${d.direct ? ', O_DIRECT' : ', buffered'}`
        : `${d.io}${d.direct ? ', O_DIRECT' : ', buffered'}`;
  const ring = d.ring ? `, ${d.ring.operationCount} operations in ${d.ring.submitCount} submissions, ${d.ring.registeredBufferCount} registered buffers` : '';
  return `${d.path}: ${how}${ring}${d.passthroughReason ? `; NVMe passthrough not used: ${d.passthroughReason}` : ''}`;
}

function writerLine(w: NonNullable<StatusResponse['writer']>): string {
  const unenforced = w.enforced ? '' : ' (NOT ENFORCED: the target ignores conditional writes)';
  if (w.readOnly !== null) return `READ-ONLY: ${w.readOnly}`;
  if (w.state === 'held')
    return `this appliance (lease renewed ${((w.renewedAgoMs ?? 0) / 1000).toFixed(1)} s ago, TTL ${w.ttlMs / 1000} s)${unenforced}`;
  return `${w.state}${w.holderHost ? `, lease held by ${w.holderHost}` : ''}${unenforced}`;
}

async function status(argv: string[]): Promise<void> {
  const command = parse(argv, 'status', { json: { type: 'boolean' } });
  if (!command) return;
  noArguments(command.positionals, 'status');
  const r = await call(command.socket, 'GET /v1/status');
  if (command.values.json) return printJson(r);
  const { flash, residency, packs, destage, recall, errors, watermarks, targets } = r;
  const lines = [
    `mount      ${r.mount}  (file system ${r.fsUuid}, ${r.inodeCount} inodes)`,
    `flash      ${formatBytes(flash.usedBytes)} of ${formatBytes(flash.capacityBytes)} used (${percent(flash.usedBytes, flash.capacityBytes)})` +
      (watermarks ? `, watermarks low ${watermarks.lowPercent}% / high ${watermarks.highPercent}%` : ''),
    `device     ${deviceLine(r.device)}`,
    `residency  flash only ${formatBytes(residency.flashOnlyBytes)}, both ${formatBytes(residency.bothBytes)}, object only ${formatBytes(residency.objectOnlyBytes)}`,
    `packs      ${packs.count} holding ${formatBytes(packs.storedBytes)}: ${formatBytes(packs.liveBytes)} live, ${formatBytes(packs.garbageBytes)} garbage`,
  ];
  if (destage) {
    const age = typeof destage.queueAgeMs === 'number' ? ` (counted ${Math.round(destage.queueAgeMs / 1000)} s ago)` : ' (not counted yet)';
    lines.push(`destage    queue ${formatBytes(destage.queueBytes)}${age}, ${formatBytes(destage.bytesPerSecond)}/s over the last minute`);
  }
  if (recall)
    lines.push(
      `recall     ${formatBytes(recall.bytesPerSecond)}/s over the last minute, ${recall.getCount} GETs` +
        (recall.getsPerGiB === null ? '' : ` (${recall.getsPerGiB} per GiB recalled${recall.getsPerGiBLastMinute === null ? '' : `, ${recall.getsPerGiBLastMinute} in the last minute`})`) +
        (recall.prefetchedBytes > 0 ? `, ${formatBytes(recall.prefetchedBytes)} fetched ahead` : '') +
        (recall.receiveBufferBytes > 0 ? `, ${formatBytes(recall.receiveBufferBytes)} of receive buffers` : '') +
        (recall.latencyMsP50 === null ? '' : `, latency p50 ${recall.latencyMsP50} ms / p99 ${recall.latencyMsP99} ms`),
    );
  lines.push(
    `errors     ${Object.entries(errors)
      .map(([key, value]) => `${key.replace(/Count$/, '').replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`)} ${value}`)
      .join(', ')}`,
  );
  if (targets.length === 0) lines.push('target     none (flash only)');
  for (const t of targets)
    lines.push(
      `target     ${t.name}: ${t.url}${t.encrypted ? ' (encrypted)' : ''}: ${t.reachable ? 'reachable' : `UNREACHABLE: ${t.lastError}`}` +
        (targets.length > 1 ? `, ${t.count} pack(s)` : ''),
    );
  const m = r.replication;
  if (m)
    lines.push(
      `metadata   in the bucket ${m.lagMs === 0 ? 'up to date' : `${(m.lagMs / 1000).toFixed(1)} s behind`} (bound ${m.rpoMs / 1000} s)` +
        (m.snapshotMs === null ? ', no snapshot yet' : `, snapshot ${new Date(m.snapshotMs).toISOString()}`) +
        (m.oldestPointMs === null ? '' : `, restorable back to ${new Date(m.oldestPointMs).toISOString()}`) +
        `, ${m.putsLastHour} PUTs in the last hour (log at most ${m.logPutsPerHourMax}/h)` +
        (m.heldForRetentionBytes > 0 ? `, ${formatBytes(m.heldForRetentionBytes)} of dead packs kept for restore points` : '') +
        (m.lastError ? `: FAILING: ${m.lastError}` : ''),
    );
  else if (targets.length > 0 && !r.follower) lines.push('metadata   not replicated (metadataRpo off): the bucket alone cannot rebuild this file system');
  const w = r.writer;
  if (w) lines.push(`writer     ${writerLine(w)}`);
  const f = r.follower;
  if (f)
    lines.push(
      `follower   read-only, ${f.state === 'following' ? 'following the writer' : 'RESYNC NEEDED: restart serve --follow'}: change ${f.appliedSeq} applied` +
        (f.writerLogMs === null ? '' : ` (the writer's log of ${new Date(f.writerLogMs).toISOString()})`) +
        (f.caughtUpAgoMs === null ? ', not caught up yet' : `, caught up ${(f.caughtUpAgoMs / 1000).toFixed(1)} s ago`) +
        `, polled every ${f.pollIntervalMs / 1000} s${f.lastError ? `: FAILING: ${f.lastError}` : ''}`,
    );
  if (r.lost.fileCount > 0) lines.push(`LOST       ${r.lost.fileCount} file(s), ${formatBytes(r.lost.bytes)} were only on a lost flash tier: see tierfs lost`);
  lines.push(`policies   ${r.policyCount}, pinned files ${r.pinnedFileCount}`);
  const sh = r.shares;
  if (sh && sh.count > 0)
    lines.push(
      `shares     ${sh.count}; NFS ${sh.nfs.served ? `${sh.nfs.clientCount} client(s)` : sh.nfs.detail}; SMB ${sh.smb.served ? `${sh.smb.clientCount} connection(s)` : sh.smb.detail}`,
    );
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function followers(argv: string[]): Promise<void> {
  const command = parse(argv, 'followers', { json: { type: 'boolean' } });
  if (!command) return;
  noArguments(command.positionals, 'followers');
  const r = await call(command.socket, 'GET /v1/followers');
  if (command.values.json) return printJson(r);
  if (r.followers.length === 0) return void process.stdout.write('no follower has published a position\n');
  const lines = [`${'FOLLOWER'.padEnd(18)} ${'HOST'.padEnd(20)} ${'CHANGE'.padStart(10)} ${'BEHIND'.padStart(8)}  ${'PUBLISHED'.padEnd(24)} STATE`];
  for (const f of r.followers)
    lines.push(`${f.id.padEnd(18)} ${f.host.padEnd(20)} ${String(f.appliedSeq).padStart(10)} ${String(f.behindChanges).padStart(8)}  ${f.publishedAt.padEnd(24)} ${f.state}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function lost(argv: string[]): Promise<void> {
  const command = parse(argv, 'lost', { json: { type: 'boolean' } });
  if (!command) return;
  noArguments(command.positionals, 'lost');
  const r = await call(command.socket, 'GET /v1/lost');
  if (command.values.json) return printJson(r);
  if (r.files.length === 0) return void process.stdout.write('no lost data\n');
  const lines = [`${'WRITTEN'.padEnd(24)} ${'LOST'.padStart(10)}  PATH (RANGES)`];
  for (const f of r.files) {
    const bytes = f.ranges.reduce((sum, x) => sum + x.lengthBytes, 0);
    const ranges = f.ranges.map((x) => `${x.fileOffsetBytes}-${x.fileOffsetBytes + x.lengthBytes}`).join(', ');
    lines.push(`${new Date(f.writtenMs).toISOString().padEnd(24)} ${formatBytes(bytes).padStart(10)}  ${f.path ?? `(inode ${f.ino}, no name left)`} (${ranges})`);
  }
  if (r.truncated) lines.push(`(first ${r.files.length} files)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

function describeFile(r: FileReport): string[] {
  const heat = r.heat;
  const lines = [
    `${r.path}: ${formatBytes(r.size)}${r.type !== 'file' ? ` (${r.type})` : ''}`,
    `  on flash   ${formatBytes(r.flashBytes)} (only there: ${formatBytes(r.flashOnlyBytes)})`,
    `  in packs   ${formatBytes(r.objectBytes)} (only there: ${formatBytes(r.objectOnlyBytes)})`,
    `  policy     ${r.policy ?? 'none (no object target)'}${r.mode ? ` (${r.mode})` : ''}${r.pinned ? ', pinned' : ''}`,
  ];
  if (heat) lines.push(`  heat       last access ${heat.accessedMs ? new Date(heat.accessedMs).toISOString() : 'never'}, count ${heat.count}`);
  return lines;
}

function describeDirectory(r: DirectoryReport): string[] {
  const entries = r.entries;
  const lines = [`${r.path}:`, `${'RESIDENCY'.padEnd(9)} ${'SIZE'.padStart(10)} ${'ON FLASH'.padStart(10)} ${'IN PACKS'.padStart(10)}  ${'POLICY'.padEnd(12)} NAME`];
  for (const e of entries)
    lines.push(
      `${String(e.residency).padEnd(9)} ${formatBytes(e.size).padStart(10)} ${formatBytes(e.flashBytes).padStart(10)} ${formatBytes(e.objectBytes).padStart(10)}  ` +
        `${String(e.pinned ? 'pinned' : (e.policy ?? '-')).padEnd(12)} ${e.name}${e.type === 'directory' ? '/' : ''}`,
    );
  if (r.truncated) lines.push(`(first ${entries.length} entries)`);
  return lines;
}

async function stat(argv: string[]): Promise<void> {
  const command = parse(argv, 'stat', { json: { type: 'boolean' } });
  if (!command) return;
  const reports: (FileReport | DirectoryReport)[] = [];
  for (const p of paths(command.positionals, 'stat')) reports.push(await call(command.socket, 'GET /v1/stat', { query: { path: p } }));
  if (command.values.json) return printJson(reports.length === 1 ? reports[0] : reports);
  const blocks = reports.map((r) => ('entries' in r ? describeDirectory(r) : describeFile(r)).join('\n'));
  process.stdout.write(`${blocks.join('\n\n')}\n`);
}

async function heat(argv: string[]): Promise<void> {
  const command = parse(argv, 'heat', { json: { type: 'boolean' } });
  if (!command) return;
  if (command.positionals.length > 1) throw new TierfsError('USAGE', 'heat: give at most one PATH');
  const query = command.positionals.length === 1 ? { path: mountPath(command.positionals[0]) } : {};
  const r = await call(command.socket, 'GET /v1/heat', { query });
  if (command.values.json) return printJson(r);
  const buckets = r.buckets;
  const most = Math.max(1, ...buckets.map((b) => b.bytes));
  const width = 40;
  const lines = [`bytes of ${r.path} by time since last access (${formatBytes(r.totalBytes)} in all)`];
  for (const b of buckets) {
    const bar = Math.round((b.bytes / most) * width);
    const onFlash = b.bytes === 0 ? 0 : Math.round((b.flashBytes / b.bytes) * bar);
    lines.push(`${b.label.padStart(16)} |${'█'.repeat(onFlash)}${'░'.repeat(bar - onFlash)}${' '.repeat(width - bar)}| ${formatBytes(b.bytes).padStart(10)}, ${formatBytes(b.flashBytes)} on flash`);
  }
  lines.push(`${''.padStart(16)}  █ on flash  ░ only in packs`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

type JobEndpoint = 'POST /v1/destage' | 'POST /v1/recall' | 'POST /v1/release' | 'POST /v1/pin';
type JobResultOf<E extends JobEndpoint> = Api[E]['response'] extends JobAnswer<infer R> ? R : never;

/** A long job over paths: progress while it runs; Ctrl-C hangs up, which stops it in the daemon. */
async function job<E extends JobEndpoint>(socket: string, endpoint: E, body: Api[E]['body'], wait: boolean): Promise<JobResultOf<E> | undefined> {
  const name = endpoint.slice('POST /v1/'.length);
  const bar = progressBar(name);
  const interrupt = new AbortController();
  const onSignal = () => interrupt.abort();
  process.once('SIGINT', onSignal);
  let answer: JobAnswer<JobResultOf<E>>;
  try {
    answer = (await call(socket, endpoint, { body: { ...body, wait }, onLine: (line: ProgressLine) => bar.update(line), signal: interrupt.signal })) as JobAnswer<JobResultOf<E>>;
  } catch (error) {
    if (interrupt.signal.aborted) throw new TierfsError('BUSY', `${name} stopped by Ctrl-C; what was done stays done and the file system is consistent`);
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    bar.done();
  }
  return 'result' in answer ? answer.result : undefined;
}

function jobCommand(name: 'destage' | 'recall') {
  return async (argv: string[]): Promise<void> => {
    const command = parse(argv, name, { wait: { type: 'boolean' }, json: { type: 'boolean' } });
    if (!command) return;
    const wait = command.values.wait === true;
    const body = { paths: paths(command.positionals, name) };
    const result = name === 'destage' ? await job(command.socket, 'POST /v1/destage', body, wait) : await job(command.socket, 'POST /v1/recall', body, wait);
    if (!result) return void process.stdout.write(`${name} of ${command.positionals.join(', ')} started\n`);
    if (command.values.json) return printJson(result);
    const bytes = 'destagedBytes' in result ? result.destagedBytes : result.recalledBytes;
    const skipped = 'skippedFileCount' in result ? result.skippedFileCount : 0;
    process.stdout.write(
      `${formatBytes(bytes)} ${name === 'destage' ? 'destaged' : 'recalled'} in ${result.fileCount} file${result.fileCount === 1 ? '' : 's'}` +
        `${skipped > 0 ? `; ${skipped} kept on flash by their policy` : ''}\n`,
    );
  };
}

async function release(argv: string[]): Promise<void> {
  const command = parse(argv, 'release', { wait: { type: 'boolean' }, json: { type: 'boolean' } });
  if (!command) return;
  const r = await job(command.socket, 'POST /v1/release', { paths: paths(command.positionals, 'release') }, command.values.wait === true);
  if (!r) return void process.stdout.write(`release of ${command.positionals.join(', ')} started\n`);
  if (command.values.json) return printJson(r);
  const left = r.flashOnlyBytes;
  process.stdout.write(
    `${formatBytes(r.releasedBytes)} released from flash in ${r.fileCount} file${r.fileCount === 1 ? '' : 's'}` +
      `${left > 0 ? `; ${formatBytes(left)} not yet in a pack stays (tierfs destage first)` : ''}` +
      `${r.skippedFileCount > 0 ? `; ${r.skippedFileCount} pinned file(s) skipped` : ''}` +
      `${r.stopped ? '; stopped before the end' : ''}\n`,
  );
}

function pinCommand(name: 'pin' | 'unpin') {
  return async (argv: string[]): Promise<void> => {
    const command = parse(argv, name, { recursive: { type: 'boolean', short: 'r' }, json: { type: 'boolean' }, ...(name === 'pin' ? { wait: { type: 'boolean' } } : {}) });
    if (!command) return;
    const body = { paths: paths(command.positionals, name), recursive: command.values.recursive === true };
    if (name === 'unpin') {
      const r = await call(command.socket, 'POST /v1/unpin', { body });
      if (command.values.json) return printJson(r);
      return void process.stdout.write(`${r.changedCount} of ${r.fileCount} file(s) unpinned\n`);
    }
    const wait = command.values.wait === true;
    const result = await job(command.socket, 'POST /v1/pin', body, wait);
    if (!result) return void process.stdout.write(`pinned; recall of what is only in packs started\n`);
    if (command.values.json) return printJson(result);
    process.stdout.write(`${result.fileCount} file(s) pinned (${result.changedCount} newly), ${formatBytes(result.recalledBytes)} recalled\n`);
  };
}

function describePolicy(p: PolicyRecord): string {
  return (
    `${String(p.name).padEnd(16)} ${String(p.mode).padEnd(6)} ${String(p.pathGlob).padEnd(28)} cool ${formatDuration(p.coolAfterMs)}` +
    `${p.sizeBytesMin > 0 ? `, min ${formatBytes(p.sizeBytesMin)}` : ''}${p.compress ? ', compressed' : ''}${p.durable === 'object' ? ', fsync durable in the bucket' : ''}${p.target && p.target !== 'default' ? `, to ${p.target}` : ''}`
  );
}

function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/** MODE:GLOB[:COOL_AFTER] → a simulated policy. */
function parseSimulatedPolicy(text: string): SimulatedPolicyBody {
  const first = text.indexOf(':');
  const mode = text.slice(0, first);
  let glob = text.slice(first + 1);
  if (first < 0 || !(policyModes as readonly string[]).includes(mode) || glob === '')
    throw new TierfsError('USAGE', `--policy ${text}: expected MODE:GLOB[:COOL_AFTER] with MODE one of ${policyModes.join(', ')} (example: auto:/projects/**:7d)`);
  const last = glob.lastIndexOf(':');
  let coolAfterMs: number | undefined;
  if (last >= 0 && /^\d+(\.\d+)?(ms|s|m|h|d|w)?$/.test(glob.slice(last + 1))) {
    coolAfterMs = parseDuration(glob.slice(last + 1), `--policy ${text}`);
    glob = glob.slice(0, last);
  }
  return { path: glob, mode, ...(coolAfterMs === undefined ? {} : { coolAfterMs }) };
}

async function policy(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void process.stdout.write(commandHelp.policy);
  const command = parse(rest, 'policy', {
    json: { type: 'boolean' },
    path: { type: 'string' },
    mode: { type: 'string' },
    'cool-after': { type: 'string' },
    'min-size': { type: 'string' },
    compress: { type: 'boolean' },
    'no-compress': { type: 'boolean' },
    target: { type: 'string' },
    durable: { type: 'string' },
    'flash-size': { type: 'string' },
    policy: { type: 'string', multiple: true },
    replace: { type: 'boolean' },
  });
  if (!command) return;
  const { values, positionals, socket } = command;
  const only = (allowed: string[]) => {
    for (const key of Object.keys(values))
      if (!['socket', 'help', ...allowed].includes(key)) throw new TierfsError('USAGE', `policy ${sub}: --${key} does not apply (see tierfs policy --help)`);
  };
  const oneName = () => {
    if (positionals.length !== 1) throw new TierfsError('USAGE', `policy ${sub}: give exactly one NAME (see tierfs policy --help)`);
    return positionals[0];
  };
  const fields = (): PolicyEditBody => ({
    ...(values.path === undefined ? {} : { path: values.path as string }),
    ...(values.mode === undefined ? {} : { mode: values.mode as string }),
    ...(values['cool-after'] === undefined ? {} : { coolAfterMs: parseDuration(values['cool-after'] as string, '--cool-after') }),
    ...(values['min-size'] === undefined ? {} : { sizeBytesMin: parseSize(values['min-size'] as string, '--min-size') }),
    ...(values.compress ? { compress: true } : values['no-compress'] ? { compress: false } : {}),
    ...(values.target === undefined ? {} : { target: values.target as string }),
    ...(values.durable === undefined ? {} : { durable: values.durable as string }),
  });
  switch (sub) {
    case 'list': {
      only(['json']);
      noArguments(positionals, 'policy list');
      const r = await call(socket, 'GET /v1/policies');
      if (values.json) return printJson(r.policies);
      if (r.policies.length === 0) process.stdout.write('no policies: every file follows the default\n');
      for (const p of r.policies) process.stdout.write(`${describePolicy(p)}\n`);
      return void process.stdout.write(`${describePolicy({ ...r.default, pathGlob: '(no match)' })}\n`);
    }
    case 'show': {
      only(['json']);
      const r = await call(socket, 'GET /v1/policies/:name', { params: { name: oneName() } });
      if (values.json) return printJson(r.policy);
      return void process.stdout.write(`${describePolicy(r.policy)}\n`);
    }
    case 'add': {
      only(['path', 'mode', 'cool-after', 'min-size', 'compress', 'target', 'durable', 'json']);
      const name = oneName();
      required(values, 'path', 'policy add');
      required(values, 'mode', 'policy add');
      const r = await call(socket, 'POST /v1/policies', { body: { ...fields(), name, path: values.path as string, mode: values.mode as string } });
      if (values.json) return printJson(r.policy);
      return void process.stdout.write(`policy ${name} added\n`);
    }
    case 'edit': {
      only(['path', 'mode', 'cool-after', 'min-size', 'compress', 'no-compress', 'target', 'durable', 'json']);
      const name = oneName();
      if (values.compress && values['no-compress']) throw new TierfsError('USAGE', 'policy edit: --compress and --no-compress contradict each other');
      const change = fields();
      if (Object.keys(change).length === 0) throw new TierfsError('USAGE', 'policy edit: nothing to change (give --path, --mode, --cool-after, --min-size, --compress, --target or --durable)');
      const r = await call(socket, 'PUT /v1/policies/:name', { params: { name }, body: change });
      if (values.json) return printJson(r.policy);
      return void process.stdout.write(`policy ${name} changed: ${describePolicy(r.policy)}\n`);
    }
    case 'rm': {
      only([]);
      const name = oneName();
      await call(socket, 'DELETE /v1/policies/:name', { params: { name } });
      return void process.stdout.write(`policy ${name} removed\n`);
    }
    case 'explain': {
      only(['json']);
      if (positionals.length !== 1) throw new TierfsError('USAGE', 'policy explain: give exactly one PATH');
      const r = await call(socket, 'GET /v1/explain', { query: { path: mountPath(positionals[0]) } });
      if (values.json) return printJson(r);
      const { applies, matches } = r;
      const lines = [`${r.path}: ${applies.name} (${applies.mode}) applies — ${r.reason}`];
      for (const m of matches) lines.push(`  ${m === matches[0] && !r.pinned ? '*' : ' '} ${describePolicy(m)}`);
      return void process.stdout.write(`${lines.join('\n')}\n`);
    }
    case 'simulate': {
      only(['flash-size', 'policy', 'replace', 'json']);
      noArguments(positionals, 'policy simulate');
      const flashSizeBytes = parseSize(required(values, 'flash-size', 'policy simulate'), '--flash-size');
      if (flashSizeBytes <= 0) throw new TierfsError('USAGE', '--flash-size must be more than 0');
      const policies = ((values.policy as string[] | undefined) ?? []).map(parseSimulatedPolicy);
      const r = await call(socket, 'POST /v1/simulate', { body: { flashSizeBytes, policies, replace: values.replace === true } });
      if (values.json) return printJson(r);
      const { cost } = r;
      const money = (v: unknown) => `${Number(v).toFixed(2)} ${cost.currency}`;
      const lines = [
        `with ${formatBytes(flashSizeBytes)} of flash${policies.length > 0 ? ` and ${policies.length} simulated polic${policies.length === 1 ? 'y' : 'ies'}${values.replace ? ' (replacing the current ones)' : ''}` : ''}:`,
        `  on flash        ${formatBytes(r.flashBytes)} (only there: ${formatBytes(r.flashOnlyBytes)})${r.overflowBytes > 0 ? `  — ${formatBytes(r.overflowBytes)} kept on flash does NOT fit` : ''}`,
        `  in packs        ${formatBytes(r.objectBytes)} (only there: ${formatBytes(r.objectOnlyBytes)})`,
        `  flash hit rate  ${r.hitRate === null ? 'no reads recorded' : `${(r.hitRate * 100).toFixed(1)}% of read bytes`}`,
        `  recalls a month ${Math.round(r.getsPerMonth)} GETs, ${formatBytes(r.missBytesPerMonth)}`,
        `  object storage  ${money(cost.total)} a month (storage ${money(cost.storage)}, requests ${money(cost.requests)}, egress ${money(cost.egress)})`,
      ];
      return void process.stdout.write(`${lines.join('\n')}\n`);
    }
    default:
      throw new TierfsError('USAGE', `policy: unknown subcommand "${sub}" (add, edit, list, show, rm, explain, simulate)`);
  }
}

async function fsck(argv: string[]): Promise<void> {
  const command = parse(argv, 'fsck', { repair: { type: 'boolean' }, deep: { type: 'boolean' }, 'sample-packs': { type: 'string' }, json: { type: 'boolean' } });
  if (!command) return;
  noArguments(command.positionals, 'fsck');
  const sample = command.values['sample-packs'] as string | undefined;
  if (sample !== undefined && (!/^\d+$/.test(sample) || Number(sample) < 1 || !command.values.deep))
    throw new TierfsError('USAGE', 'fsck: --sample-packs N takes a whole number >= 1 and goes with --deep');
  const r = await call(command.socket, 'POST /v1/fsck', {
    body: { repair: command.values.repair === true, deep: command.values.deep === true, ...(sample === undefined ? {} : { samplePacks: Number(sample) }) },
  });
  const { problems } = r;
  const problemCount = r.problemCount;
  process.exitCode = problemCount === 0 ? 0 : r.repairedCount === problemCount ? 1 : 4;
  if (command.values.json) return printJson(r);
  const lines = [
    `checked ${r.extentCount} extents (${formatBytes(r.checkedBytes)}): ${formatBytes(r.flashVerifiedBytes)} verified on flash` +
      `${command.values.deep ? `, ${formatBytes(r.packVerifiedBytes)} verified in packs${r.sampledPackCount !== undefined ? ` (a sample of ${r.sampledPackCount})` : ''}` : ''}; ${r.packCount} packs, ${r.objectCount} objects listed`,
  ];
  for (const p of problems)
    lines.push(
      `  ${String(p.kind).padEnd(20)} ${p.path ?? (p.ino !== undefined ? `inode ${p.ino}` : (p.key ?? ''))}${p.fileOffsetBytes !== undefined ? ` @${p.fileOffsetBytes}` : ''}: ${p.detail}` +
        (p.repaired ? ` — repaired: ${p.repair}` : p.repair ? ` — repair would ${p.repair}` : p.kind === 'foreign-object' ? '' : ' — no safe repair'),
    );
  lines.push(
    problemCount === 0
      ? 'no problems'
      : `${problemCount} problem(s): ${r.repairedCount} repaired, ${r.unrepairableCount} without a safe repair${command.values.repair ? '' : ' (run with --repair to fix the others)'}`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

function parsePercent(text: string | undefined, name: string): number {
  const value = Number(text);
  if (text === undefined || text.trim() === '' || !Number.isFinite(value)) throw new TierfsError('USAGE', `watermark set: --${name} PERCENT is required (a number such as 85)`);
  return value;
}

async function watermark(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void process.stdout.write(commandHelp.watermark);
  const command = parse(rest, 'watermark', { high: { type: 'string' }, low: { type: 'string' }, json: { type: 'boolean' } });
  if (!command) return;
  noArguments(command.positionals, `watermark ${sub}`);
  let r: WatermarksReport;
  if (sub === 'set') {
    const body = { highPercent: parsePercent(command.values.high as string | undefined, 'high'), lowPercent: parsePercent(command.values.low as string | undefined, 'low') };
    r = await call(command.socket, 'PUT /v1/watermarks', { body });
  } else if (sub === 'show') {
    if (command.values.high !== undefined || command.values.low !== undefined) throw new TierfsError('USAGE', 'watermark show: --high and --low belong to watermark set');
    r = await call(command.socket, 'GET /v1/watermarks');
  } else throw new TierfsError('USAGE', `watermark: unknown subcommand "${sub}" (set, show)`);
  if (command.values.json) return printJson(r);
  process.stdout.write(`watermarks: high ${r.highPercent}%, low ${r.lowPercent}%\n`);
}

async function target(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void process.stdout.write(commandHelp.target);
  const command = parse(rest, 'target', { json: { type: 'boolean' } });
  if (!command) return;
  const { positionals, socket, values } = command;
  switch (sub) {
    case 'list': {
      noArguments(positionals, 'target list');
      const r = await call(socket, 'GET /v1/targets');
      if (values.json) return printJson(r.targets);
      for (const t of r.targets)
        process.stdout.write(
          `${String(t.name).padEnd(10)} ${t.url}${t.encrypted ? ' (encrypted)' : ''}  ${t.reachable ? 'reachable' : `UNREACHABLE: ${t.lastError}`}, ` +
            `${t.count} pack(s), ${formatBytes(t.storedBytes)}\n`,
        );
      return;
    }
    case 'test': {
      if (positionals.length > 1) throw new TierfsError('USAGE', 'target test: give at most one NAME');
      const name = positionals[0] ?? 'default';
      const r = await call(socket, 'POST /v1/targets/:name/test', { params: { name } });
      if (!r.ok) process.exitCode = 1;
      if (values.json) return printJson(r);
      const steps = r.steps.map((s) => `${s.step} ${s.ms} ms`).join(', ');
      process.stdout.write(r.ok ? `${name} (${r.url}): ok — ${steps}\n` : `${name} (${r.url}): FAILED: ${r.error}${steps ? ` (${steps})` : ''}\n`);
      return;
    }
    case 'add': {
      if (positionals.length !== 2) throw new TierfsError('USAGE', 'target add: give NAME and URL (see tierfs target --help)');
      const r = await call(socket, 'POST /v1/targets', { body: { name: positionals[0], url: positionals[1] } });
      if (values.json) return printJson(r.target);
      return void process.stdout.write(`target ${positionals[0]} added: ${r.target.url}\n`);
    }
    case 'rm': {
      if (positionals.length !== 1) throw new TierfsError('USAGE', 'target rm: give exactly one NAME');
      await call(socket, 'DELETE /v1/targets/:name', { params: { name: positionals[0] } });
      return void process.stdout.write(`target ${positionals[0]} removed\n`);
    }
    default:
      throw new TierfsError('USAGE', `target: unknown subcommand "${sub}" (list, test, add, rm)`);
  }
}

export const daemonCommands: Record<string, (argv: string[]) => Promise<void>> = {
  status,
  stat,
  heat,
  destage: jobCommand('destage'),
  recall: jobCommand('recall'),
  release,
  pin: pinCommand('pin'),
  unpin: pinCommand('unpin'),
  policy,
  fsck,
  watermark,
  target,
  lost,
  followers,
};
