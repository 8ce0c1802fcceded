/**
 * The `tierfs` command.  `format` and `serve` work on the flash tier and the
 * metadata directly; the other commands (status, stat, destage, release,
 * recall) talk to a running daemon's admin socket and never open the
 * metadata behind its back.
 *
 * Every error is one line on stderr and a non-zero exit: 2 for a usage
 * mistake, 1 for anything else.  No stack trace for a user's mistake.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { constants } from '../constants';
import { readEncryptionKey, serveForeground, type ServeConfig } from '../daemon/daemon';
import { TierfsError, isTierfsError } from '../errors';
import { formatFlashPath } from '../fs/fs';
import { openTarget, parseDuration, parseTargetUrl } from '../tier/tier';
import { parseOptions, parseSize, required } from './args';
import { formatBytes, mountPath, progressBar, request, socketPath, type ProgressLine } from './client';

const help = {
  main: `tierfs — a cloud-tiering file system appliance

Usage: tierfs <command> [options]

Commands:
  format   create a file system on a flash tier (a file or an NVMe namespace)
  serve    mount a file system and serve it in the foreground
  status   the flash tier, residency, packs and counters of a running daemon
  stat     residency and heat of one file
  destage  copy a file's extents to the object tier now
  release  drop the flash copy of a file's extents already in the object tier
  recall   bring a file's extents back to flash
  policy   add, list or remove the rules that say when files leave flash

Commands other than format and serve talk to the daemon's admin socket:
--socket PATH, else $TIERFS_SOCKET, else /run/tierfs/admin.sock.

Run "tierfs <command> --help" for the options of one command.
`,
  format: `Usage: tierfs format --flash PATH --meta DIR [--size SIZE] [--target URL]
                     [--encryption-key FILE] [--force]

Create a tierfs file system: a superblock on the flash tier and a metadata
database in DIR.

  --flash PATH           the flash tier: a block device (/dev/nvme0n1) or a
                         file; a missing file is created sparse with --size
  --size SIZE            size of a new flash file (default 4G; units K M G T,
                         powers of 1024)
  --meta DIR             directory for the metadata database (created if missing)
  --target URL           the object tier cold extents go to; checked by writing,
                         reading and deleting a probe object first:
                           file:///var/lib/tierfs/objects
                           s3://bucket/prefix[?endpoint=URL&region=REGION]
                           azure://container/prefix[?endpoint=URL]
                         S3 credentials come from the AWS SDK's usual chain;
                         Azure's from AZURE_STORAGE_CONNECTION_STRING or
                         AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY.  Never
                         from the URL.
  --encryption-key FILE  encrypt the object tier (AES-256-GCM) with the 32-byte
                         key in FILE (raw, or 64 hex digits); serve needs the
                         same file.  Lose the key and the packs are unreadable.
  --force                format even if PATH or DIR already hold a file system
                         or other data (destroys it)

Examples:
  tierfs format --flash ./var/flash --size 8G --meta ./var/meta --target file://$PWD/var/objects
  tierfs format --flash /dev/nvme1n1 --meta /var/lib/tierfs/meta --target s3://my-bucket/tierfs
`,
  serve: `Usage: tierfs serve --flash PATH --meta DIR --mount DIR
       tierfs serve --config FILE

Mount a formatted file system at DIR and serve it in the foreground until
SIGINT or SIGTERM, which commit everything, unmount and exit 0.  A mount
point left dead by a crashed daemon is recovered.

  --flash PATH     the flash tier given to format
  --meta DIR       the metadata directory given to format
  --mount DIR      where to mount (created if missing)
  --config FILE    a JSON file with the keys flash, meta, mount and
                   optionally allowOther, direct, discard, compress
                   (true/false), target, encryptionKeyFile, adminSocket
                   (strings), coolAfter, recallTimeout, packWait (durations
                   such as "30s", "1h"), watermarkHighPercent,
                   watermarkLowPercent, uploadConcurrency (packs uploading
                   at once, 1-16, default 2)
  --target URL     the object target (default: the one given to format; a
                   file system formatted without one gets it recorded now)
  --encryption-key FILE  the key given to format --encryption-key
  --admin-socket PATH    the admin API's socket (default /run/tierfs/admin.sock)
  --cool-after DURATION  cooling period of the default policy (default 1h)
  --no-direct      use buffered I/O on the flash tier instead of O_DIRECT
  --discard        punch freed blocks out of a file-backed flash tier (gives
                   the space back to the host file system; costs write speed
                   there).  Block devices are always discarded.

Examples:
  tierfs serve --flash ./var/flash --meta ./var/meta --mount ./mnt --admin-socket ./var/admin.sock
  tierfs serve --config /etc/tierfs/tierfs.json
`,
  status: `Usage: tierfs status [--json] [--socket PATH]

The running daemon's flash tier (capacity, use, watermarks), residency of
all data (flash only, both, object only), packs (count, stored, live and
garbage bytes), its object target and counters.

  --json   the whole report as JSON (stable fields: flash.capacityBytes,
           flash.usedBytes, residency.flashOnlyBytes, residency.bothBytes,
           residency.objectOnlyBytes, packs.count, packs.storedBytes,
           packs.liveBytes, packs.garbageBytes)
`,
  stat: `Usage: tierfs stat PATH [--json] [--socket PATH]

Residency of one file in the mount: bytes whose current data is on flash
(flashBytes), bytes with a copy in a pack (objectBytes), the split into
flash only / both / object only, its policy and its heat.

  --json   as JSON (stable fields: path, size, flashBytes, objectBytes, policy)
`,
  destage: `Usage: tierfs destage PATH [--wait] [--socket PATH]

Copy every extent of PATH that is only on flash into packs in the object
tier now, whatever its cooling period (refused for files a pin or never
policy keeps on flash).  The flash copy stays until eviction or release.

  --wait   wait until it is done (a progress bar on a terminal); without it
           the command returns once the daemon has started
`,
  recall: `Usage: tierfs recall PATH [--wait] [--socket PATH]

Bring every extent of PATH that is only in the object tier back to flash
(colder data is evicted to make room if needed).

  --wait   wait until it is done (a progress bar on a terminal)
`,
  policy: `Usage: tierfs policy add NAME --path GLOB --mode auto|pin|all|never
                         [--cool-after DURATION] [--min-size SIZE] [--compress]
       tierfs policy list [--json]
       tierfs policy rm NAME

Policies decide, by path, when a file's extents leave flash:
  auto   destaged once untouched for the cooling period (--cool-after, default
         that of serve --cool-after, 1h), evicted under the watermarks
  pin    never leaves flash
  all    destaged as soon as written; stays on flash while hot
  never  no object copy at all
GLOB is matched from the root of the file system: * and ? within a path
segment, ** across segments; a glob without / matches file names in any
directory (*.iso).  The most specific match (most literal characters) wins;
without a match the default policy applies (auto).  --min-size: smaller
files stay on flash.  --compress: deflate the file's extents in packs.

Examples:
  tierfs policy add projects --path '/projects/**' --mode auto --cool-after 7d
  tierfs policy add databases --path '*.db' --mode pin
  tierfs policy add backups --path '/backup/**' --mode all --compress
`,
  release: `Usage: tierfs release PATH [--socket PATH]

Drop the flash copy of every extent of PATH that already has a copy in a
pack (BOTH → OBJECT): the space is free at once.  Extents only on flash
are left; destage them first.
`,
};

async function format(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    flash: { type: 'string' },
    meta: { type: 'string' },
    size: { type: 'string' },
    target: { type: 'string' },
    'encryption-key': { type: 'string' },
    force: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.format);
  if (positionals.length > 0) throw new TierfsError('USAGE', `format: unexpected argument ${positionals[0]}`);
  const flash = required(values, 'flash', 'format');
  const meta = required(values, 'meta', 'format');
  const sizeBytes = values.size === undefined ? undefined : parseSize(values.size, '--size');
  if (sizeBytes !== undefined && sizeBytes < constants.flashSizeBytesMin)
    throw new TierfsError('USAGE', `--size: the flash tier needs at least ${constants.flashSizeBytesMin / 2 ** 20} MiB`);
  if (sizeBytes !== undefined && sizeBytes % constants.blockSizeBytes !== 0)
    throw new TierfsError('USAGE', `--size: must be a multiple of ${constants.blockSizeBytes} bytes`);
  const encryptionKey = values['encryption-key'] === undefined ? undefined : readEncryptionKey(values['encryption-key']);
  if (values.target !== undefined) await probeTarget(values.target);
  const sb = await formatFlashPath(flash, meta, { force: values.force, sizeBytes, target: values.target, encryptionKey });
  process.stdout.write(
    `formatted ${flash}: ${(sb.sizeBytes / 2 ** 30).toFixed(2)} GiB, file system ${sb.uuid}, metadata in ${meta}` +
      `${values.target ? `, object target ${values.target}${encryptionKey ? ' (encrypted)' : ''}` : ''}\n`,
  );
}

/** Write, read back and delete a probe object: a target that cannot take packs is refused before anything is formatted. */
async function probeTarget(url: string): Promise<void> {
  parseTargetUrl(url);
  const store = openTarget(url, constants.targetProbeDeadlineMs);
  const key = `tierfs-probe-${randomBytes(8).toString('hex')}`;
  const body = randomBytes(64);
  try {
    await store.put(key, [body]);
    if (!(await store.get(key)).equals(body)) throw new Error('the probe object read back differently');
    await store.delete(key);
  } catch (error) {
    throw new TierfsError('USAGE', `--target ${url}: cannot store objects there: ${(error as Error).message.split('\n')[0]}`);
  } finally {
    await store.close();
  }
}

function readConfig(file: string): ServeConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new TierfsError('USAGE', `--config ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new TierfsError('USAGE', `--config ${file}: expected a JSON object`);
  const strings = ['flash', 'meta', 'mount', 'target', 'encryptionKeyFile', 'adminSocket'];
  const booleans = ['allowOther', 'direct', 'discard', 'compress'];
  const durations = ['coolAfter', 'recallTimeout', 'packWait'];
  const percents = ['watermarkHighPercent', 'watermarkLowPercent'];
  const allowed = [...strings, ...booleans, ...durations, ...percents, 'uploadConcurrency'];
  const config = parsed as Record<string, unknown>;
  for (const key of Object.keys(config)) {
    if (!allowed.includes(key)) throw new TierfsError('USAGE', `--config ${file}: unknown key "${key}" (known: ${allowed.join(', ')})`);
  }
  for (const key of ['flash', 'meta', 'mount']) {
    if (typeof config[key] !== 'string' || config[key] === '')
      throw new TierfsError('USAGE', `--config ${file}: "${key}" must be a non-empty string`);
  }
  for (const key of strings) {
    if (config[key] !== undefined && typeof config[key] !== 'string') throw new TierfsError('USAGE', `--config ${file}: "${key}" must be a string`);
  }
  for (const key of booleans) {
    if (config[key] !== undefined && typeof config[key] !== 'boolean')
      throw new TierfsError('USAGE', `--config ${file}: "${key}" must be true or false`);
  }
  for (const key of [...durations, ...percents]) {
    if (config[key] !== undefined && typeof config[key] !== 'string' && typeof config[key] !== 'number')
      throw new TierfsError('USAGE', `--config ${file}: "${key}" must be a ${durations.includes(key) ? 'duration such as "1h"' : 'number'}`);
  }
  const concurrency = config.uploadConcurrency;
  if (concurrency !== undefined && (typeof concurrency !== 'number' || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 16))
    throw new TierfsError('USAGE', `--config ${file}: "uploadConcurrency" must be a whole number from 1 to 16`);
  const { coolAfter, recallTimeout, packWait, ...rest } = config;
  const serveConfig = rest as unknown as ServeConfig;
  if (coolAfter !== undefined) serveConfig.coolAfterMs = parseDuration(String(coolAfter), `--config ${file}: coolAfter`);
  if (packWait !== undefined) serveConfig.packWaitMs = parseDuration(String(packWait), `--config ${file}: packWait`);
  if (recallTimeout !== undefined) serveConfig.recallTimeoutMs = parseDuration(String(recallTimeout), `--config ${file}: recallTimeout`);
  if (serveConfig.target !== undefined) parseTargetUrl(serveConfig.target);
  checkWatermarks(serveConfig, `--config ${file}`);
  return serveConfig;
}

function checkWatermarks(config: ServeConfig, where: string): void {
  const high = config.watermarkHighPercent ?? constants.watermarkHighPercentDefault;
  const low = config.watermarkLowPercent ?? constants.watermarkLowPercentDefault;
  for (const [name, value] of [['watermarkHighPercent', high], ['watermarkLowPercent', low]] as const)
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= 100)
      throw new TierfsError('USAGE', `${where}: ${name} must be a number between 0 and 100`);
  if (low >= high) throw new TierfsError('USAGE', `${where}: the low watermark (${low}%) must be below the high one (${high}%)`);
  if (config.recallTimeoutMs !== undefined && config.recallTimeoutMs < 100) throw new TierfsError('USAGE', `${where}: recallTimeout must be at least 100ms`);
}

async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    flash: { type: 'string' },
    meta: { type: 'string' },
    mount: { type: 'string' },
    config: { type: 'string' },
    'no-direct': { type: 'boolean' },
    discard: { type: 'boolean' },
    target: { type: 'string' },
    'encryption-key': { type: 'string' },
    'admin-socket': { type: 'string' },
    'cool-after': { type: 'string' },
  });
  if (values.help) return void process.stdout.write(help.serve);
  if (positionals.length > 0) throw new TierfsError('USAGE', `serve: unexpected argument ${positionals[0]}`);
  let config: ServeConfig;
  if (values.config !== undefined) {
    if (values.flash || values.meta || values.mount)
      throw new TierfsError('USAGE', 'serve: give either --config or --flash/--meta/--mount, not both');
    config = readConfig(values.config);
  } else {
    config = { flash: required(values, 'flash', 'serve'), meta: required(values, 'meta', 'serve'), mount: required(values, 'mount', 'serve') };
  }
  if (values['no-direct']) config.direct = false;
  if (values.discard) config.discard = true;
  if (values.target !== undefined) {
    parseTargetUrl(values.target);
    config.target = values.target;
  }
  if (values['encryption-key'] !== undefined) config.encryptionKeyFile = values['encryption-key'];
  if (values['admin-socket'] !== undefined) config.adminSocket = values['admin-socket'];
  if (values['cool-after'] !== undefined) config.coolAfterMs = parseDuration(values['cool-after'], '--cool-after');
  checkWatermarks(config, 'serve');
  if (fs.existsSync(config.mount) && !fs.statSync(config.mount).isDirectory())
    throw new TierfsError('USAGE', `serve: mount point ${config.mount} is not a directory`);
  await serveForeground(config);
}

/** Options and the one PATH of a command that talks to the daemon. */
function daemonCommand(argv: string[], name: keyof typeof help, extra: Parameters<typeof parseOptions>[1], needsPath: boolean) {
  const { values, positionals } = parseOptions(argv, { socket: { type: 'string' }, ...extra });
  if (values.help) {
    process.stdout.write(help[name]);
    return undefined;
  }
  if (needsPath && positionals.length !== 1) throw new TierfsError('USAGE', `${name}: give exactly one PATH (see tierfs ${name} --help)`);
  if (!needsPath && positionals.length > 0) throw new TierfsError('USAGE', `${name}: unexpected argument ${positionals[0]}`);
  return { values: values as Record<string, unknown>, socket: socketPath(values.socket as string | undefined), path: needsPath ? mountPath(positionals[0]) : '' };
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '0%' : `${((100 * part) / whole).toFixed(1)}%`;
}

async function status(argv: string[]): Promise<void> {
  const command = daemonCommand(argv, 'status', { json: { type: 'boolean' } }, false);
  if (!command) return;
  const report = await request(command.socket, 'GET', '/v1/status');
  if (command.values.json) return void process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  const flash = report.flash as Record<string, number>;
  const residency = report.residency as Record<string, number>;
  const packs = report.packs as Record<string, number>;
  const target = report.target as Record<string, unknown> | null;
  const lines = [
    `mount      ${report.mount}  (file system ${report.fsUuid}, ${report.inodeCount} inodes)`,
    `flash      ${formatBytes(flash.usedBytes)} of ${formatBytes(flash.capacityBytes)} used (${percent(flash.usedBytes, flash.capacityBytes)})` +
      (flash.highWatermarkBytes ? `, watermarks ${percent(flash.lowWatermarkBytes, flash.capacityBytes)} / ${percent(flash.highWatermarkBytes, flash.capacityBytes)}` : ''),
    `residency  flash only ${formatBytes(residency.flashOnlyBytes)}, both ${formatBytes(residency.bothBytes)}, object only ${formatBytes(residency.objectOnlyBytes)}`,
    `packs      ${packs.count} holding ${formatBytes(packs.storedBytes)}: ${formatBytes(packs.liveBytes)} live, ${formatBytes(packs.garbageBytes)} garbage`,
    target
      ? `target     ${target.url}${target.encrypted ? ' (encrypted)' : ''}: ${target.reachable ? 'reachable' : `UNREACHABLE: ${target.lastError}`}`
      : 'target     none (flash only)',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function stat(argv: string[]): Promise<void> {
  const command = daemonCommand(argv, 'stat', { json: { type: 'boolean' } }, true);
  if (!command) return;
  const r = await request(command.socket, 'GET', `/v1/stat?path=${encodeURIComponent(command.path)}`);
  if (command.values.json) return void process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  const heat = r.heat as { accessedMs: number; count: number } | undefined;
  const lines = [
    `${r.path}: ${formatBytes(r.size as number)}`,
    `  on flash   ${formatBytes(r.flashBytes as number)}${r.flashOnlyBytes !== undefined ? ` (only there: ${formatBytes(r.flashOnlyBytes as number)})` : ''}`,
    `  in packs   ${formatBytes(r.objectBytes as number)}${r.objectOnlyBytes !== undefined ? ` (only there: ${formatBytes(r.objectOnlyBytes as number)})` : ''}`,
    `  policy     ${r.policy ?? 'none (no object target)'}${r.mode ? ` (${r.mode})` : ''}`,
  ];
  if (heat) lines.push(`  heat       last access ${heat.accessedMs ? new Date(heat.accessedMs).toISOString() : 'never'}, count ${heat.count}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

function jobCommand(name: 'destage' | 'recall', field: string) {
  return async (argv: string[]): Promise<void> => {
    const command = daemonCommand(argv, name, { wait: { type: 'boolean' } }, true);
    if (!command) return;
    const wait = command.values.wait === true;
    const bar = progressBar(name);
    let answer: Record<string, unknown>;
    try {
      answer = await request(command.socket, 'POST', `/v1/${name}`, { path: command.path, wait }, (line: ProgressLine) => bar.update(line));
    } finally {
      bar.done();
    }
    if (!wait) return void process.stdout.write(`${name} of ${command.path} started\n`);
    const result = answer.result as Record<string, unknown>;
    process.stdout.write(`${result.path}: ${formatBytes(result[field] as number)} ${name === 'destage' ? 'destaged' : 'recalled'}\n`);
  };
}

async function release(argv: string[]): Promise<void> {
  const command = daemonCommand(argv, 'release', {}, true);
  if (!command) return;
  const r = await request(command.socket, 'POST', '/v1/release', { path: command.path });
  const left = r.flashOnlyBytes as number;
  process.stdout.write(
    `${r.path}: ${formatBytes(r.releasedBytes as number)} released from flash${left > 0 ? `; ${formatBytes(left)} not yet in a pack stays (tierfs destage first)` : ''}\n`,
  );
}

async function policy(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void process.stdout.write(help.policy);
  const { values, positionals } = parseOptions(rest, {
    socket: { type: 'string' },
    json: { type: 'boolean' },
    path: { type: 'string' },
    mode: { type: 'string' },
    'cool-after': { type: 'string' },
    'min-size': { type: 'string' },
    compress: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.policy);
  const socket = socketPath(values.socket);
  switch (sub) {
    case 'list': {
      if (positionals.length > 0) throw new TierfsError('USAGE', `policy list: unexpected argument ${positionals[0]}`);
      const { policies } = (await request(socket, 'GET', '/v1/policies')) as { policies: Record<string, unknown>[] };
      if (values.json) return void process.stdout.write(`${JSON.stringify(policies, null, 2)}\n`);
      if (policies.length === 0) return void process.stdout.write('no policies: every file follows the default (auto)\n');
      for (const p of policies)
        process.stdout.write(
          `${String(p.name).padEnd(16)} ${String(p.mode).padEnd(6)} ${String(p.pathGlob).padEnd(28)} cool ${Math.round(Number(p.coolAfterMs) / 1000)}s` +
            `${Number(p.sizeBytesMin) > 0 ? `, min ${formatBytes(Number(p.sizeBytesMin))}` : ''}${p.compress ? ', compressed' : ''}\n`,
        );
      return;
    }
    case 'add': {
      if (positionals.length !== 1) throw new TierfsError('USAGE', 'policy add: give exactly one NAME (see tierfs policy --help)');
      const path = required(values, 'path', 'policy add');
      const mode = required(values, 'mode', 'policy add');
      const body = {
        name: positionals[0],
        path,
        mode,
        ...(values['cool-after'] === undefined ? {} : { coolAfterMs: parseDuration(values['cool-after'], '--cool-after') }),
        ...(values['min-size'] === undefined ? {} : { sizeBytesMin: parseSize(values['min-size'], '--min-size') }),
        compress: values.compress === true,
      };
      await request(socket, 'POST', '/v1/policies', body);
      return void process.stdout.write(`policy ${positionals[0]} added\n`);
    }
    case 'rm': {
      if (positionals.length !== 1) throw new TierfsError('USAGE', 'policy rm: give exactly one NAME');
      await request(socket, 'DELETE', `/v1/policies/${encodeURIComponent(positionals[0])}`);
      return void process.stdout.write(`policy ${positionals[0]} removed\n`);
    }
    default:
      throw new TierfsError('USAGE', `policy: unknown subcommand "${sub}" (add, list, rm)`);
  }
}

const commands: Record<string, (argv: string[]) => Promise<void>> = {
  policy,
  format,
  serve,
  status,
  stat,
  destage: jobCommand('destage', 'destagedBytes'),
  recall: jobCommand('recall', 'recalledBytes'),
  release,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(help.main);
    return command === undefined ? 2 : 0;
  }
  const run = commands[command];
  try {
    if (!run) throw new TierfsError('USAGE', `unknown command "${command}" (see tierfs --help)`);
    await run(rest);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    process.stderr.write(`tierfs: ${isTierfsError(error) ? error.message : (error as Error).message}\n`);
    return isTierfsError(error, 'USAGE') ? 2 : 1;
  }
}
