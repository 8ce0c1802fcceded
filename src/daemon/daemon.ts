/**
 * tierfsd's lifecycle: open the flash tier and metadata, mount, serve until
 * SIGINT or SIGTERM, then unmount, commit and close.  A second signal while
 * shutting down is ignored, so an impatient Ctrl-C cannot cut a commit short.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import { TierfsError } from '../errors';
import type { FlashIoChoice } from '../device/device';
import { prepareFollower } from '../fs/follow';
import { openFileSystem, type OpenTierOptions } from '../fs/fs';
import { allowOtherPermitted, FuseMount } from '../fuse/fuse';
import { prepareMountPoint } from '../fuse/mount_point';
import { log } from '../log';
import { defaultReplicationOptions, parseEncryptionKey, type Prices } from '../tier/tier';
import { startAdminServer, statusOf, type AdminServer, type Service } from './admin';
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from './metrics';
import { SystemdNotifier } from './notify';
import { ShareManager } from './shares';

export interface ServeConfig {
  flash: string;
  meta: string;
  mount: string;
  allowOther?: boolean;
  direct?: boolean;
  /** How flash transfers are made: io_uring where the kernel allows it ('auto', the default), or always 'io_uring' or 'psync'. */
  flashIo?: FlashIoChoice;
  /** Punch freed ranges out of a file-backed flash tier (block devices always discard). */
  discard?: boolean;
  /** Object target URL (default: the one recorded at format). */
  target?: string;
  /** File holding the object tier's 32-byte key (raw or 64 hex digits). */
  encryptionKeyFile?: string;
  /** The admin API's unix socket; '' turns it off. */
  adminSocket?: string;
  /** Tiering: cooling period of the default policy, watermarks, recall deadline, compression by default. */
  coolAfterMs?: number;
  watermarkHighPercent?: number;
  watermarkLowPercent?: number;
  recallTimeoutMs?: number;
  /** A partial pack of cold data goes up once its oldest extent has waited this long. */
  packWaitMs?: number;
  /** Packs uploading at once. */
  uploadConcurrency?: number;
  compress?: boolean;
  /** Serve Prometheus metrics on this loopback HOST:PORT; off when absent. */
  metrics?: string;
  /** Object storage prices for tierfs policy simulate. */
  prices?: Prices;
  /** How long the kernel caches names and attributes (seconds). */
  attrTimeoutS?: number;
  /** The kernel's writeback cache (FUSE): unsynced writes wait in the page cache (docs/SEMANTICS.md). */
  writebackCache?: boolean;
  /** Every committed metadata change is in the bucket within this; null: no replication (the bucket cannot rebuild the file system). */
  metadataRpoMs?: number | null;
  /** Restore points are kept this long. */
  metadataRetentionMs?: number;
  /** The writer lease's TTL (while replication is on). */
  leaseTtlMs?: number;
  /** Serve read-only, following the writer's metadata log in the bucket (restored from it first when the metadata directory is empty). */
  follow?: boolean;
  /** How often a follower asks the bucket for the writer's next log object. */
  followIntervalMs?: number;
  /** The files the daemon owns for network shares, and the smb.conf Samba's tools read. */
  exportsFile?: string;
  sambaInclude?: string;
  sambaConfig?: string;
  /** Start nfs-server and smbd (systemd) when a share needs them, stop them when none does (the appliance). */
  manageShareServers?: boolean;
  /** Shares first boot asked for (a JSON file, removed once they are added). */
  initialShares?: string;
}

export const defaultAdminSocket = '/run/tierfs/admin.sock';

export function readEncryptionKey(file: string): Buffer {
  let content: Buffer;
  try {
    content = fs.readFileSync(file);
  } catch (error) {
    throw new TierfsError('USAGE', `encryption key ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  if ((fs.statSync(file).mode & 0o077) !== 0) log.warn('encryption key file is readable by others', { file });
  return parseEncryptionKey(content, file);
}

export interface Daemon {
  /** What the daemon serves: the file system and its engine, never their insides (the metadata store, the flash store). */
  opened: Service & { close(): Promise<void> };
  shares: ShareManager;
  mount: FuseMount;
  admin: AdminServer | undefined;
  metrics: MetricsServer | undefined;
  /** Resolves once the daemon has unmounted and closed. */
  stopped: Promise<void>;
  stop(reason: string): Promise<void>;
  /** Set when the mount was removed from outside (the daemon then stops by itself). */
  readonly lost: boolean;
}

export async function startDaemon(config: ServeConfig, clock: Clock = systemClock): Promise<Daemon> {
  const tier: OpenTierOptions = {
    url: config.target,
    encryptionKey: config.encryptionKeyFile === undefined ? undefined : readEncryptionKey(config.encryptionKeyFile),
    ...(config.coolAfterMs === undefined ? {} : { coolAfterMs: config.coolAfterMs }),
    ...(config.watermarkHighPercent === undefined ? {} : { watermarkHighPercent: config.watermarkHighPercent }),
    ...(config.watermarkLowPercent === undefined ? {} : { watermarkLowPercent: config.watermarkLowPercent }),
    ...(config.recallTimeoutMs === undefined ? {} : { recallTimeoutMs: config.recallTimeoutMs }),
    ...(config.compress === undefined ? {} : { compress: config.compress }),
    ...(config.packWaitMs === undefined ? {} : { packWaitMsMax: config.packWaitMs }),
    ...(config.uploadConcurrency === undefined ? {} : { uploadCountMax: config.uploadConcurrency }),
    follow: config.follow ? { pollIntervalMs: config.followIntervalMs ?? constants.followIntervalMsDefault, host: os.hostname() } : null,
    replication:
      config.metadataRpoMs === null || config.follow
        ? null
        : {
            ...defaultReplicationOptions,
            ...(config.metadataRpoMs === undefined ? {} : { rpoMs: config.metadataRpoMs }),
            ...(config.metadataRetentionMs === undefined ? {} : { retentionMs: config.metadataRetentionMs }),
          },
    // The bucket is the system of record while replication is on: one appliance writes it at a time.
    writerLease:
      config.metadataRpoMs === null || config.follow
        ? null
        : { ttlMs: config.leaseTtlMs ?? constants.leaseTtlMsDefault, waitMs: Math.round(1.5 * (config.leaseTtlMs ?? constants.leaseTtlMsDefault)), host: os.hostname() },
  };
  // /dev/fuse, fusermount3 and the mount point first: a machine that cannot mount changes nothing.
  await prepareMountPoint(path.resolve(config.mount));
  // Resolved without touching the mount point itself (it may be a dead mount to recover), and
  // before mounting: the daemon never makes calls on its own mount.
  const absolute = path.resolve(config.mount);
  const mountPath = path.join(fs.realpathSync(path.dirname(absolute)), path.basename(absolute));
  if (config.follow) await prepareFollower({ flash: config.flash, metaDir: config.meta, targetUrl: config.target, encryptionKey: tier.encryptionKey });
  // The daemon holds the file system and its engine, not their insides (the type makes sure).
  const opened: Daemon['opened'] = await openFileSystem(config.flash, config.meta, { direct: config.direct, discard: config.discard, io: config.flashIo, tier, clock });
  const mount = new FuseMount(opened.fs, config.mount, { allowOther: config.allowOther, attrTimeoutS: config.attrTimeoutS, writebackCache: config.writebackCache });
  let admin: AdminServer | undefined;
  let metrics: MetricsServer | undefined;
  const shares = new ShareManager(opened.fs, mountPath, {
    config: {
      ...(config.exportsFile === undefined ? {} : { exportsFile: config.exportsFile }),
      ...(config.sambaInclude === undefined ? {} : { sambaInclude: config.sambaInclude }),
      ...(config.sambaConfig === undefined ? {} : { sambaConfig: config.sambaConfig }),
      ...(config.manageShareServers === undefined ? {} : { manageServers: config.manageShareServers }),
    },
    allowOther: config.allowOther ?? allowOtherPermitted(),
    clock,
  });
  try {
    const socket = config.adminSocket ?? defaultAdminSocket;
    try {
      if (socket !== '') admin = await startAdminServer({ fs: opened.fs, tier: opened.tier, shares, mountPath, prices: config.prices, clock }, path.resolve(socket));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (config.adminSocket !== undefined || (code !== 'EACCES' && code !== 'EPERM')) throw error;
      log.warn('admin API off: cannot create the default socket (give --admin-socket PATH)', { socket, error: code });
    }
    if (config.metrics !== undefined) metrics = await startMetricsServer({ fs: opened.fs, tier: opened.tier, shares }, parseMetricsAddress(config.metrics, 'metrics'));
    await mount.mount();
    await shares.start(config.initialShares); // once the mount serves: never the empty directory under it
  } catch (error) {
    await metrics?.close();
    await admin?.close();
    await opened.close();
    if (error instanceof TierfsError) throw error;
    throw new Error(`cannot mount ${config.mount}: ${(error as Error).message}`, { cause: error });
  }
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => {
    stopping ??= (async () => {
      log.info('stopping', { reason });
      await shares.withdraw(); // before the unmount: no server shares the empty directory under the mount point
      await admin?.close();
      await metrics?.close();
      try {
        await mount.unmount();
      } catch (error) {
        log.error('unmount failed', { mount: config.mount, error });
      }
      await opened.close();
      log.info('stopped', { mount: config.mount });
      resolveStopped();
    })();
    return stopping;
  };
  // Unmounted from outside (umount, an aborted connection): commit and exit as on SIGTERM.
  let lost = false;
  mount.onLost = () => {
    lost = true;
    void stop('the mount was removed from outside');
  };
  log.info('serving', {
    mount: path.resolve(config.mount),
    flash: config.flash,
    meta: config.meta,
    target: opened.tier?.status().target.url ?? 'none',
    admin: admin?.socketPath ?? 'off',
    metrics: metrics?.address ?? 'off',
  });
  return { opened, shares, mount, admin, metrics, stopped, stop, get lost() { return lost; } };
}

/**
 * One line for systemd's STATUS= (systemctl status shows it), every 10 s: so
 * only figures kept in memory or in the small packs table, never a scan of
 * the extents (SQLite calls block the event loop).
 */
export function statusLine(daemon: Daemon): string {
  const { opened } = daemon;
  const status = statusOf({ fs: opened.fs, tier: opened.tier, shares: daemon.shares }, daemon.mount.mountPoint);
  const used = (100 * status.flash.usedBytes) / status.flash.capacityBytes;
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  const parts = [`serving ${daemon.mount.mountPoint}`, `flash ${used.toFixed(1)}% used`];
  if (opened.tier) {
    parts.push(`${gib(status.packs.liveBytes)} in packs`);
    const down = status.targets.filter((t) => !t.reachable).map((t) => t.name);
    parts.push(down.length === 0 ? 'targets reachable' : `UNREACHABLE: ${down.join(', ')}`);
    const m = status.replication;
    if (m === null) {
      if (!status.follower) parts.push('metadata NOT replicated');
    } else if (m.lastError !== null || m.lagMs > m.rpoMs) parts.push(`metadata replication ${(m.lagMs / 1000).toFixed(0)} s behind${m.lastError ? ' (failing)' : ''}`);
    if (status.follower) parts.push(`FOLLOWER (read-only), change ${status.follower.appliedSeq}${status.follower.state === 'following' ? '' : ', RESYNC NEEDED'}`);
    else if (status.writer?.readOnly) parts.push('READ-ONLY: not the writer (tierfs status)');
  }
  if (status.lost.fileCount > 0) parts.push(`LOST: ${status.lost.fileCount} file(s) (tierfs lost)`);
  const s = status.shares;
  if (s && s.count > 0) {
    const server = (name: string, state: { served: boolean; detail: string; clientCount: number }) =>
      state.served ? `${name} ${state.clientCount} client(s)` : state.detail.startsWith('no ') ? '' : `${name} NOT served`;
    parts.push([`${s.count} share(s)`, server('NFS', s.nfs), server('SMB', s.smb)].filter((p) => p !== '').join(' '));
  }
  return parts.join(', ');
}

/**
 * Run in the foreground until a signal; the process exit code says how it
 * ended.  Under systemd (Type=notify): READY=1 once the mount serves,
 * STATUS= every statusIntervalMs, WATCHDOG=1 while the file system answers,
 * STOPPING=1 when a signal starts the shutdown (flush, unmount, close).
 */
export async function serveForeground(config: ServeConfig, clock: Clock = systemClock, notifier = new SystemdNotifier(process.env, undefined, process.pid, clock)): Promise<void> {
  let daemon: Daemon;
  try {
    daemon = await startDaemon(config, clock);
  } catch (error) {
    notifier.status(`failed to start: ${(error as Error).message}`);
    throw error;
  }
  notifier.ready(statusLine(daemon), () => daemon.opened.fs.statfs());
  const statusTimer = clock.every(constants.notifyStatusIntervalMs, () => notifier.status(statusLine(daemon)));
  const onSignal = (signal: NodeJS.Signals) => {
    statusTimer.stop();
    notifier.stopping(`stopping (${signal}): committing and unmounting`);
    daemon.stop(signal).catch((error) => {
      log.error('shutdown failed', { error });
      process.exitCode = 1;
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', () => log.info('SIGHUP ignored'));
  await daemon.stopped;
  statusTimer.stop();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (daemon.lost) throw new Error(`${daemon.mount.mountPoint} was unmounted from outside; committed and stopped`);
}
