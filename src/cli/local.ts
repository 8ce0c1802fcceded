/**
 * The commands that work on a flash tier and its metadata directly, not
 * through a daemon: format, serve and firstboot.  main.ts loads this module
 * only when one of them runs: it brings the daemon, the file system and the
 * object-store SDKs, which cost a quarter of a second to load.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { constants } from '../constants';
import { readEncryptionKey, serveForeground, type ServeConfig } from '../daemon/daemon';
import { defaultFirstbootPaths, firstboot, type FirstbootPaths } from '../daemon/firstboot';
import { TierfsError } from '../errors';
import { flashIoChoices, type FlashIoChoice } from '../device/device';
import { formatFlashPath, listFileSystems, restoreFileSystem } from '../fs/fs';
import { parseMetricsAddress } from '../daemon/metrics';
import { checkUploadConcurrency, checkWatermarks, openTarget, parseDuration, parsePrices, parseTargetUrl, probeStore } from '../tier/tier';
import { noArguments, parseOptions, parseSize, required } from './args';

const help = {
  promote: `Usage: tierfs promote --meta DIR [--encryption-key FILE] [--lease-ttl DURATION]
                      [--wait DURATION] [--force]

Make a follower (serve --follow, stopped first) the writer of its file
system: once the writer lease in the bucket is free (released by a clean
stop, or not renewed for a whole TTL: the old writer is gone or cut off),
take it — which fences the old writer: if it comes back it serves read-only
— apply the rest of the writer's log, and turn the metadata into a writer's
(a new metadata generation; a snapshot at its first serve).  Then serve it
without --follow.  Data the old writer had not destaged is lost, and listed
by tierfs lost.  Two promotions at once: exactly one wins.

  --meta DIR       the follower's metadata directory
  --encryption-key FILE  the file system's key, when it encrypts
  --lease-ttl DURATION   the new writer's lease TTL (default 30s)
  --wait DURATION  how long to wait for the old writer's lease to expire
                   (default 1.5 times the TTL, at least 45s)
  --force          on a target that ignores conditional writes (s3rver, some
                   S3-compatible servers): promote anyway.  UNSAFE: two
                   promotions at once, or a writer that still runs, could
                   both write the bucket

Example:
  systemctl stop tierfs && tierfs promote --meta /var/lib/tierfs/meta
`,
  restore: `Usage: tierfs restore --target URL --flash PATH --meta DIR [--at TIME]
                      [--uuid UUID] [--encryption-key FILE] [--size SIZE]
                      [--discard-later]
       tierfs restore --list --target URL [--json]

Rebuild a file system from its bucket alone, onto a blank flash tier and an
empty metadata directory: the metadata from the newest restore point (or the
last one at or before --at), every file then read from its packs on demand
(nothing is downloaded in bulk).  Data that was not yet in a pack at that
point is lost and listed by tierfs lost once served.  Then: tierfs serve.

  --target URL     the object target the file system replicated to
  --flash PATH     a blank device or file, or a new file (created with --size)
  --meta DIR       an empty or missing directory
  --at TIME        2026-12-01T10:00:00Z, or a duration ago (2h, 3d)
  --uuid UUID      which file system, when the target holds several
  --encryption-key FILE  the file system's key, when it encrypts
  --size SIZE      size of a new flash file (default 4G)
  --discard-later  restoring to a point older than the newest drops the newer
                   ones (another history); refused without this flag
  --list           the file systems in the target and their restore points

Everything is checked before anything is written: a flash tier or metadata
directory holding anything, a missing or damaged object, a gap in the log, a
foreign object under meta/, a wrong key: one line, nothing written anywhere.
Only the file system's own meta/ prefix is listed (and, to find it, the
target's top level).

Examples:
  tierfs restore --list --target s3://my-bucket/tierfs
  tierfs restore --target s3://my-bucket/tierfs --flash /dev/nvme1n1 --meta /var/lib/tierfs/meta
  tierfs restore --target file:///srv/objects --flash ./flash --meta ./meta --at 2026-12-01T10:00:00Z --discard-later
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
point left dead by a crashed daemon is recovered; one another daemon still
serves is refused.  If the daemon dies, fusermount3 unmounts it.

  --flash PATH     the flash tier given to format
  --meta DIR       the metadata directory given to format
  --mount DIR      where to mount (created if missing)
  --config FILE    a JSON file with the keys flash, meta, mount and
                   optionally allowOther, direct, discard, compress,
                   writebackCache (true/false), target, encryptionKeyFile, adminSocket,
                   flashIo (strings), coolAfter, recallTimeout, packWait (durations
                   such as "30s", "1h"), watermarkHighPercent,
                   watermarkLowPercent, uploadConcurrency (packs uploading
                   at once, 1-16, default 2), metrics (HOST:PORT on
                   loopback), prices (object storage prices for policy
                   simulate: {"currency": "USD", "storagePerGiBMonth": 0.023,
                   "getPer1000": 0.0004, "egressPerGiB": 0}, each optional),
                   metadataRpo (default "10s"; "off" stops replication),
                   metadataRetention (default "7d", at least "1h"),
                   leaseTtl (default "30s", 1s to 10m), follow (true: as
                   --follow), followInterval (default "2s"),
                   exportsFile (default /etc/exports.d/tierfs.exports),
                   sambaInclude (default /etc/samba/tierfs-shares.conf),
                   sambaConfig (default /etc/samba/smb.conf): the two
                   files the daemon owns for tierfs share, and the smb.conf
                   Samba's tools read; manageShareServers (true: start
                   nfs-server and smbd when a share needs them, stop them
                   when none does; the appliance's default), initialShares
                   (a JSON file of shares first boot asked for: added at
                   start, directories made, then the file removed)
  --target URL     the object target (default: the one given to format; a
                   file system formatted without one gets it recorded now)
  --encryption-key FILE  the key given to format --encryption-key
  --admin-socket PATH    the admin API's socket (default /run/tierfs/admin.sock)
  --cool-after DURATION  cooling period of the default policy (default 1h)
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics;
                         loopback addresses only (off by default)
  --metadata-rpo DURATION|off  every committed metadata change is in the
                         bucket within this (default 10s): a snapshot now and
                         then and a log of every change between, under
                         <fs-uuid>/meta/, encrypted with the pack key; at most
                         one log PUT per half of it, none when idle.  Restore
                         points are kept metadataRetention (7d); dead packs a
                         kept point still reads stay until it expires.  "off":
                         the bucket alone can no longer rebuild the file system
  --lease-ttl DURATION  the writer lease (default 30s; config key leaseTtl):
                         while metadata replication is on, only the appliance
                         holding <fs-uuid>/writer-lease in the bucket writes
                         the bucket; it renews it every third of this.  A
                         second appliance serving the same file system waits
                         up to 1.5 times this for it, then serves read-only
                         (EROFS), as does a copy whose metadata the bucket
                         has moved past.  Status shows who holds it
  --follow         serve another appliance's file system read-only, from its
                   bucket (config key follow): with an empty --meta, restore
                   it from --target first; then apply the writer's metadata
                   log as it comes.  Changes answer EROFS; nothing is written
                   to the bucket; files are read from the packs (a file the
                   writer has not destaged yet reads EIO until it has).
                   tierfs status shows the change applied and the lag
  --follow-interval DURATION  how often a follower asks the bucket for the
                   writer's next log object (default 2s, 100ms to 10m;
                   config key followInterval)
  --attr-timeout SECONDS  how long the kernel caches names and attributes
                         (0-3600, default 1; config key attrTimeout)
  --writeback-cache  let the kernel keep written data and send it in large
                   requests (config key writebackCache): small writes return
                   at page-cache speed, but what no fsync or close has sent
                   yet is lost if the daemon dies, as on a local disk whose
                   machine crashes (off by default; see docs/SEMANTICS.md)
  --no-direct      use buffered I/O on the flash tier instead of O_DIRECT
  --flash-io auto|nvme-passthrough|io_uring|psync  how flash transfers are
                   made (config key flashIo): nvme-passthrough sends NVMe
                   commands to the namespace's /dev/ngXnY past the block
                   layer; io_uring queues reads and writes, many in flight,
                   with no thread per request; psync is pread/pwrite in a
                   thread pool.  auto (the default) takes the first the
                   kernel, the device and the seccomp filter allow; naming
                   one refuses to start without it.  tierfs status shows
                   which is used, and why not a faster one
  --discard        punch freed blocks out of a file-backed flash tier (gives
                   the space back to the host file system; costs write speed
                   there).  Block devices are always discarded.

Examples:
  tierfs serve --flash ./var/flash --meta ./var/meta --mount ./mnt --admin-socket ./var/admin.sock
  tierfs serve --config /etc/tierfs/tierfs.json
`,
};

const firstbootHelp = `Usage: tierfs firstboot [--conf FILE] [--user-data FILE] [--config FILE]
                        [--state DIR] [--sys DIR] [--mountinfo FILE] [--dev DIR]

The appliance's first boot (tierfs-firstboot.service runs it once): read the
settings from --conf (default /etc/tierfs/tierfs.conf) and cloud user data
(--user-data, default /var/lib/cloud/instance/user-data.txt, when it is a
JSON object: {"tierfs": {...}}), choose the flash tier among the NVMe
namespaces that hold no mounted file system (instance-store disks first),
format it (a namespace holding data is refused) or, when the target already
holds a file system with replicated metadata, restore that one onto it
instead (the instance was replaced: see tierfs restore), write the daemon's config
(--config, default /etc/tierfs/tierfs.json), create the group tierfs and the
mount point, and record that it is done in --state (default /var/lib/tierfs,
which also holds the metadata).  Any error is one line and changes nothing.

Settings (JSON; all optional): target (URL; default a directory under
--state), encryptionKeyFile, flashDevice (skip discovery), mount (default
/mnt/tierfs), coolAfter, recallTimeout, watermarkHighPercent,
watermarkLowPercent, compress, uploadConcurrency, metrics, prices, allowOther
(default true), restore (default true; false refuses a target that already
holds a file system), restoreUuid (which one, when it holds several), shares
(network shares of a new file system: [{"name", "path" from the file
system's root, "nfs": [CIDR...], "smb": true, "readOnly", "rootSquash",
"allowWorld"}], made at tierfsd's first start).  See docs/deploy.md.

--sys, --mountinfo and --dev read another sysfs tree, mount table and /dev
(tests).

Examples:
  tierfs firstboot
  echo '{"tierfs": {"target": "s3://my-bucket/tierfs"}}' > user-data.json
  tierfs firstboot --user-data user-data.json
`;

async function firstbootCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    conf: { type: 'string' },
    'user-data': { type: 'string' },
    config: { type: 'string' },
    state: { type: 'string' },
    sys: { type: 'string' },
    mountinfo: { type: 'string' },
    dev: { type: 'string' },
  });
  if (values.help) return void process.stdout.write(firstbootHelp);
  noArguments(positionals, 'firstboot');
  const paths: FirstbootPaths = {
    confFile: values.conf ?? defaultFirstbootPaths.confFile,
    userDataFile: values['user-data'] ?? defaultFirstbootPaths.userDataFile,
    configFile: values.config ?? defaultFirstbootPaths.configFile,
    stateDir: values.state ?? defaultFirstbootPaths.stateDir,
    discover: { sysRoot: values.sys, mountinfo: values.mountinfo, devDir: values.dev },
  };
  const result = await firstboot(paths, {
    probeTarget,
    ensureGroup: () => {
      if (spawnSync('getent', ['group', 'tierfs']).status === 0) return;
      const made = spawnSync('groupadd', ['--system', 'tierfs'], { encoding: 'utf8' });
      if (made.status !== 0) throw new TierfsError('IO', `groupadd tierfs: ${(made.stderr || made.error?.message || '').trim()}`);
    },
  });
  process.stdout.write(
    `first boot done: flash tier ${result.flash}${result.namespace ? ` (${result.namespace.model}, ${(result.namespace.sizeBytes / 2 ** 30).toFixed(1)} GiB)` : ''}` +
      `${result.restored ? ` holds file system ${result.restored}, restored from the target` : result.formatted ? ' formatted' : ' kept'}, target ${result.config.target}, mount ${result.config.mount}, config ${paths.configFile}\n`,
  );
}

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
  noArguments(positionals, 'format');
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

/** Write, read back and delete a probe object (the engine's probe): a target that cannot take packs is refused before anything is formatted. */
async function probeTarget(url: string): Promise<void> {
  parseTargetUrl(url);
  const store = openTarget(url, constants.targetProbeDeadlineMs);
  try {
    const probe = await probeStore(store, 'tierfs-format');
    if (!probe.ok) throw new TierfsError('USAGE', `--target ${url}: cannot store objects there: ${probe.error}`);
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
  const strings = ['flash', 'meta', 'mount', 'target', 'encryptionKeyFile', 'adminSocket', 'metrics', 'exportsFile', 'sambaInclude', 'sambaConfig', 'initialShares', 'flashIo'];
  const booleans = ['allowOther', 'direct', 'discard', 'compress', 'manageShareServers', 'writebackCache', 'follow'];
  const durations = ['coolAfter', 'recallTimeout', 'packWait', 'metadataRpo', 'metadataRetention', 'leaseTtl', 'followInterval'];
  const percents = ['watermarkHighPercent', 'watermarkLowPercent'];
  const allowed = [...strings, ...booleans, ...durations, ...percents, 'uploadConcurrency', 'prices', 'attrTimeout'];
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
  if (config.uploadConcurrency !== undefined) checkUploadConcurrency(config.uploadConcurrency, `--config ${file}: "uploadConcurrency"`);
  const { coolAfter, recallTimeout, packWait, prices, attrTimeout, metadataRpo, metadataRetention, leaseTtl, followInterval, ...rest } = config;
  const serveConfig = rest as unknown as ServeConfig;
  if (attrTimeout !== undefined) serveConfig.attrTimeoutS = parseAttrTimeout(attrTimeout, `--config ${file}: attrTimeout`);
  try {
    if (prices !== undefined) serveConfig.prices = parsePrices(prices);
  } catch (error) {
    throw new TierfsError('USAGE', `--config ${file}: ${(error as Error).message}`);
  }
  if (coolAfter !== undefined) serveConfig.coolAfterMs = parseDuration(String(coolAfter), `--config ${file}: coolAfter`);
  if (packWait !== undefined) serveConfig.packWaitMs = parseDuration(String(packWait), `--config ${file}: packWait`);
  if (recallTimeout !== undefined) serveConfig.recallTimeoutMs = parseDuration(String(recallTimeout), `--config ${file}: recallTimeout`);
  if (metadataRpo !== undefined) serveConfig.metadataRpoMs = parseRpo(String(metadataRpo), `--config ${file}: metadataRpo`);
  if (metadataRetention !== undefined) serveConfig.metadataRetentionMs = parseDuration(String(metadataRetention), `--config ${file}: metadataRetention`);
  if (leaseTtl !== undefined) serveConfig.leaseTtlMs = parseLeaseTtl(String(leaseTtl), `--config ${file}: leaseTtl`);
  if (followInterval !== undefined) serveConfig.followIntervalMs = parseFollowInterval(String(followInterval), `--config ${file}: followInterval`);
  if (serveConfig.target !== undefined) parseTargetUrl(serveConfig.target);
  if (serveConfig.flashIo !== undefined) serveConfig.flashIo = parseFlashIo(serveConfig.flashIo, `--config ${file}: "flashIo"`);
  checkServeConfig(serveConfig, `--config ${file}`);
  return serveConfig;
}

function parseFlashIo(value: string, where: string): FlashIoChoice {
  if (!(flashIoChoices as readonly string[]).includes(value)) throw new TierfsError('USAGE', `${where}: expected ${flashIoChoices.join(', ')}, not "${value}"`);
  return value as FlashIoChoice;
}

function parseAttrTimeout(value: unknown, where: string): number {
  const seconds = typeof value === 'string' && /^\d+(\.\d+)?$/.test(value) ? Number(value) : value;
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0 || seconds > 3600)
    throw new TierfsError('USAGE', `${where}: expected seconds from 0 to 3600`);
  return seconds;
}

/** "off", or a duration from 1 s to 1 h. */
function parseRpo(text: string, what: string): number | null {
  if (text === 'off') return null;
  const ms = parseDuration(text, what);
  if (ms < 1000 || ms > 3_600_000) throw new TierfsError('USAGE', `${what}: from 1s to 1h, or "off"`);
  return ms;
}

/** How often a follower polls: from 100 ms to 10 min. */
function parseFollowInterval(text: string, what: string): number {
  const ms = parseDuration(text, what);
  if (ms < 100 || ms > 600_000) throw new TierfsError('USAGE', `${what}: from 100ms to 10m`);
  return ms;
}

/** The writer lease's TTL: from 1 s to 10 min. */
function parseLeaseTtl(text: string, what: string): number {
  const ms = parseDuration(text, what);
  if (ms < 1000 || ms > 600_000) throw new TierfsError('USAGE', `${what}: from 1s to 10m`);
  return ms;
}

function checkServeConfig(config: ServeConfig, where: string): void {
  if (config.metadataRetentionMs !== undefined && config.metadataRetentionMs < 3_600_000)
    throw new TierfsError('USAGE', `${where}: metadataRetention must be at least 1h`);
  checkWatermarks(config.watermarkHighPercent ?? constants.watermarkHighPercentDefault, config.watermarkLowPercent ?? constants.watermarkLowPercentDefault, where);
  if (config.recallTimeoutMs !== undefined && config.recallTimeoutMs < 100) throw new TierfsError('USAGE', `${where}: recallTimeout must be at least 100ms`);
  if (config.metrics !== undefined) parseMetricsAddress(config.metrics, `${where}: metrics`);
}

async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    flash: { type: 'string' },
    meta: { type: 'string' },
    mount: { type: 'string' },
    config: { type: 'string' },
    'no-direct': { type: 'boolean' },
    'flash-io': { type: 'string' },
    discard: { type: 'boolean' },
    target: { type: 'string' },
    'encryption-key': { type: 'string' },
    'admin-socket': { type: 'string' },
    'cool-after': { type: 'string' },
    metrics: { type: 'string' },
    'attr-timeout': { type: 'string' },
    'metadata-rpo': { type: 'string' },
    'lease-ttl': { type: 'string' },
    follow: { type: 'boolean' },
    'follow-interval': { type: 'string' },
    'writeback-cache': { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.serve);
  noArguments(positionals, 'serve');
  let config: ServeConfig;
  if (values.config !== undefined) {
    if (values.flash || values.meta || values.mount)
      throw new TierfsError('USAGE', 'serve: give either --config or --flash/--meta/--mount, not both');
    config = readConfig(values.config);
  } else {
    config = { flash: required(values, 'flash', 'serve'), meta: required(values, 'meta', 'serve'), mount: required(values, 'mount', 'serve') };
  }
  if (values['no-direct']) config.direct = false;
  if (values['flash-io'] !== undefined) config.flashIo = parseFlashIo(values['flash-io'], '--flash-io');
  if (values.discard) config.discard = true;
  if (values.target !== undefined) {
    parseTargetUrl(values.target);
    config.target = values.target;
  }
  if (values['encryption-key'] !== undefined) config.encryptionKeyFile = values['encryption-key'];
  if (values['admin-socket'] !== undefined) config.adminSocket = values['admin-socket'];
  if (values['cool-after'] !== undefined) config.coolAfterMs = parseDuration(values['cool-after'], '--cool-after');
  if (values.metrics !== undefined) config.metrics = values.metrics;
  if (values['attr-timeout'] !== undefined) config.attrTimeoutS = parseAttrTimeout(values['attr-timeout'], '--attr-timeout');
  if (values['metadata-rpo'] !== undefined) config.metadataRpoMs = parseRpo(values['metadata-rpo'], '--metadata-rpo');
  if (values['lease-ttl'] !== undefined) config.leaseTtlMs = parseLeaseTtl(values['lease-ttl'], '--lease-ttl');
  if (values.follow) config.follow = true;
  if (values['follow-interval'] !== undefined) config.followIntervalMs = parseFollowInterval(values['follow-interval'], '--follow-interval');
  if (config.followIntervalMs !== undefined && !config.follow) throw new TierfsError('USAGE', 'serve: --follow-interval (followInterval) is for a follower (--follow)');
  if (values['writeback-cache']) config.writebackCache = true;
  checkServeConfig(config, 'serve');
  if (fs.existsSync(config.mount) && !fs.statSync(config.mount).isDirectory())
    throw new TierfsError('USAGE', `serve: mount point ${config.mount} is not a directory`);
  await serveForeground(config);
}

/** A time for --at: ISO 8601 ("2026-12-01T10:00:00Z"), or a duration ago ("2h" = two hours ago). */
function parseTime(text: string, what: string): number {
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new TierfsError('USAGE', `${what}: "${text}" is not a date and time (2026-12-01T10:00:00Z, or a duration ago such as 2h)`);
    return ms;
  }
  return Date.now() - parseDuration(text, what);
}

async function restore(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    target: { type: 'string' },
    flash: { type: 'string' },
    meta: { type: 'string' },
    size: { type: 'string' },
    at: { type: 'string' },
    uuid: { type: 'string' },
    'encryption-key': { type: 'string' },
    'discard-later': { type: 'boolean' },
    list: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.restore);
  noArguments(positionals, 'restore');
  const url = required(values, 'target', 'restore');
  parseTargetUrl(url);
  if (values.list) {
    for (const name of ['flash', 'meta', 'size', 'at', 'encryption-key', 'discard-later'] as const)
      if (values[name] !== undefined) throw new TierfsError('USAGE', `restore --list: --${name} does not apply`);
  }
  const flash = values.list ? '' : required(values, 'flash', 'restore');
  const meta = values.list ? '' : required(values, 'meta', 'restore');
  const sizeBytes = values.size === undefined ? undefined : parseSize(values.size, '--size');
  if (sizeBytes !== undefined && (sizeBytes < constants.flashSizeBytesMin || sizeBytes % constants.blockSizeBytes !== 0))
    throw new TierfsError('USAGE', `--size: at least ${constants.flashSizeBytesMin / 2 ** 20} MiB, a multiple of ${constants.blockSizeBytes} bytes`);
  const atMs = values.at === undefined ? undefined : parseTime(values.at, '--at');
  const encryptionKey = values['encryption-key'] === undefined ? undefined : readEncryptionKey(values['encryption-key']);
  const store = openTarget(url);
  try {
    if (values.list) {
      const found = await listFileSystems(store);
      if (values.json) return void process.stdout.write(`${JSON.stringify(found, null, 2)}\n`);
      if (found.length === 0) return void process.stdout.write(`no file system with replicated metadata in ${url}\n`);
      for (const f of found) {
        const newest = f.points[f.points.length - 1];
        process.stdout.write(
          `${f.fsUuid}${f.encrypted ? ' (encrypted)' : ''}: ${f.points.length} restore point(s)` +
            (newest ? `, ${new Date(f.points[0].timeMs).toISOString()} to ${new Date(newest.timeMs).toISOString()}` : ', none complete') +
            (f.foreignCount > 0 ? `; ${f.foreignCount} object(s) under its meta/ not written by tierfs` : '') +
            '\n',
        );
      }
      return;
    }
    const r = await restoreFileSystem({
      store, targetUrl: url, flash, metaDir: meta, sizeBytes, atMs, fsUuid: values.uuid, encryptionKey, discardLater: values['discard-later'],
    });
    process.stdout.write(
      `restored file system ${r.fsUuid} as of ${new Date(r.point.timeMs).toISOString()} (change ${r.point.seq}; ${r.recordCount} rows applied from the log after the snapshot)` +
        ` into ${meta} with a new flash tier ${flash}; ${formatBytesShort(r.loss.keptBytes)} will be read from packs on demand` +
        (r.loss.lostFileCount > 0 ? `; ${r.loss.lostFileCount} file(s) had ${formatBytesShort(r.loss.lostBytes)} not yet in packs: lost (tierfs lost once served)` : '') +
        (r.discardedObjectCount > 0 ? `; ${r.discardedObjectCount} later metadata object(s) discarded` : '') +
        `\nserve it with: tierfs serve --flash ${flash} --meta ${meta} --mount DIR${encryptionKey ? ' --encryption-key FILE' : ''}\n`,
    );
  } finally {
    await store.close();
  }
}

function formatBytesShort(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${bytes} bytes`;
}

/** Hand the writer role to a stopped follower (see src/fs/promote.ts). */
async function promote(argv: string[]): Promise<void> {
  const { values, positionals } = parseOptions(argv, {
    meta: { type: 'string' },
    'encryption-key': { type: 'string' },
    'lease-ttl': { type: 'string' },
    wait: { type: 'string' },
    force: { type: 'boolean' },
  });
  if (values.help) return void process.stdout.write(help.promote);
  noArguments(positionals, 'promote');
  const metaDir = required(values, 'meta', 'promote');
  const ttlMs = values['lease-ttl'] === undefined ? constants.leaseTtlMsDefault : parseLeaseTtl(values['lease-ttl'], '--lease-ttl');
  const waitMs = values.wait === undefined ? undefined : parseDuration(values.wait, '--wait');
  const encryptionKey = values['encryption-key'] === undefined ? undefined : readEncryptionKey(values['encryption-key']);
  if (!fs.existsSync(metaDir)) throw new TierfsError('USAGE', `promote: --meta ${metaDir} does not exist`);
  const { promoteFollower } = await import('../fs/promote');
  const r = await promoteFollower({ metaDir, encryptionKey, ttlMs, waitMs, force: values.force });
  process.stdout.write(
    `promoted: this appliance is now the writer of file system ${r.fsUuid} (change ${r.seq} applied, generation ${r.generation}` +
      `${r.previousHost ? `; the writer role was ${r.previousHost}'s` : ''}); serve it without --follow (same --flash and --meta)\n`,
  );
}

export const localCommands = {
  format,
  serve,
  restore,
  promote,
  firstboot: firstbootCommand,
} satisfies Record<string, (argv: string[]) => Promise<void>>;
