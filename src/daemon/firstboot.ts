/**
 * The appliance's first boot (tierfs-firstboot.service runs `tierfs
 * firstboot`): read the settings, find the flash tier, format it, write the
 * daemon's config, create the group tierfs and the mount point, and record
 * that it is done.
 *
 * Settings come from /etc/tierfs/tierfs.conf (baked into an image, or
 * written by cloud-init's write_files) and from cloud user data
 * (/var/lib/cloud/instance/user-data.txt) when that is a JSON object —
 * `{"tierfs": {...}}` or the settings themselves; user data wins.  User data
 * of another kind (a #cloud-config, a script) is cloud-init's, not ours.
 *
 * Everything is checked before anything is written: a bad setting, no free
 * NVMe namespace, a namespace holding data, or an unreachable target is one
 * clear error and leaves every disk and file as it was.  A flash tier that
 * already holds this appliance's file system (a first boot that was cut
 * short after the format) is kept, not formatted again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { constants } from '../constants';
import { chooseFlashNamespace, discoverNvme, type DiscoverOptions, type NvmeNamespace } from '../device/nvme';
import { TierfsError } from '../errors';
import { formatFlashPath, listFileSystems, restoreFileSystem } from '../fs/fs';
import { log } from '../log';
import { checkUploadConcurrency, checkWatermarks, openTarget, parseDuration, parsePrices, parseTargetUrl, type ObjectStore } from '../tier/tier';
import { readEncryptionKey, type ServeConfig } from './daemon';
import { parseMetricsAddress } from './metrics';
import { parseInitialShares } from './shares';

export interface ApplianceSettings {
  /** Object target URL; default: a directory on the root disk (file:///var/lib/tierfs/objects). */
  target?: string;
  encryptionKeyFile?: string;
  /** A device (or, for tests and small set-ups, a file) instead of discovery. */
  flashDevice?: string;
  mount?: string;
  coolAfter?: string;
  recallTimeout?: string;
  watermarkHighPercent?: number;
  watermarkLowPercent?: number;
  compress?: boolean;
  uploadConcurrency?: number;
  metrics?: string;
  prices?: unknown;
  allowOther?: boolean;
  /** When the target already holds a file system: restore it (default) or, with false, refuse to start over it. */
  restore?: boolean;
  /** Which file system to restore when the target holds several. */
  restoreUuid?: string;
  /** Serve's metadataRpo ("10s", or "off") and metadataRetention ("7d"). */
  metadataRpo?: string;
  metadataRetention?: string;
  /** Network shares to create on a new file system (tierfs share add's fields; path from the file system's root). */
  shares?: unknown[];
}

const settingTypes: Record<keyof ApplianceSettings, 'string' | 'number' | 'boolean' | 'object'> = {
  target: 'string',
  encryptionKeyFile: 'string',
  flashDevice: 'string',
  mount: 'string',
  coolAfter: 'string',
  recallTimeout: 'string',
  watermarkHighPercent: 'number',
  watermarkLowPercent: 'number',
  compress: 'boolean',
  uploadConcurrency: 'number',
  metrics: 'string',
  prices: 'object',
  allowOther: 'boolean',
  restore: 'boolean',
  restoreUuid: 'string',
  metadataRpo: 'string',
  metadataRetention: 'string',
  shares: 'object',
};

/** Check settings from `source`; throws USAGE naming the source and the setting. */
export function parseSettings(value: unknown, source: string): ApplianceSettings {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TierfsError('USAGE', `${source}: expected a JSON object of tierfs settings`);
  const settings = value as Record<string, unknown>;
  for (const [key, v] of Object.entries(settings)) {
    const type = settingTypes[key as keyof ApplianceSettings];
    if (!type) throw new TierfsError('USAGE', `${source}: unknown setting "${key}" (known: ${Object.keys(settingTypes).join(', ')})`);
    if (typeof v !== type || v === null) throw new TierfsError('USAGE', `${source}: "${key}" must be a ${type}`);
  }
  const s = settings as ApplianceSettings;
  const where = (key: string) => `${source}: ${key}`;
  if (s.target !== undefined) parseTargetUrl(s.target);
  for (const key of ['encryptionKeyFile', 'flashDevice', 'mount'] as const)
    if (s[key] !== undefined && !path.isAbsolute(s[key]!)) throw new TierfsError('USAGE', `${where(key)} must be an absolute path`);
  if (s.coolAfter !== undefined) parseDuration(s.coolAfter, where('coolAfter'));
  if (s.recallTimeout !== undefined) parseDuration(s.recallTimeout, where('recallTimeout'));
  if (s.metadataRpo !== undefined && s.metadataRpo !== 'off') parseDuration(s.metadataRpo, where('metadataRpo'));
  if (s.metadataRetention !== undefined) parseDuration(s.metadataRetention, where('metadataRetention'));
  if (s.watermarkHighPercent !== undefined || s.watermarkLowPercent !== undefined)
    checkWatermarks(s.watermarkHighPercent ?? constants.watermarkHighPercentDefault, s.watermarkLowPercent ?? constants.watermarkLowPercentDefault, source);
  if (s.shares !== undefined) parseInitialShares(s.shares, source);
  if (s.uploadConcurrency !== undefined) checkUploadConcurrency(s.uploadConcurrency, where('uploadConcurrency'));
  if (s.metrics !== undefined) parseMetricsAddress(s.metrics, where('metrics'));
  if (s.prices !== undefined) {
    try {
      parsePrices(s.prices);
    } catch (error) {
      throw new TierfsError('USAGE', `${source}: ${(error as Error).message}`);
    }
  }
  return s;
}

function readJson(file: string, source: string): unknown {
  const text = fs.readFileSync(file, 'utf8');
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new TierfsError('USAGE', `${source}: not JSON: ${(error as Error).message}`);
  }
}

/** The settings from the config file and user data (user data wins); each file optional. */
export function readSettings(confFile: string, userDataFile: string): ApplianceSettings {
  let settings: ApplianceSettings = {};
  if (fs.existsSync(confFile)) settings = parseSettings(readJson(confFile, confFile), confFile);
  if (fs.existsSync(userDataFile)) {
    const text = fs.readFileSync(userDataFile, 'utf8');
    if (/^\s*[{[]/.test(text)) {
      const parsed = readJson(userDataFile, `user data ${userDataFile}`) as Record<string, unknown>;
      const ours = parsed && typeof parsed === 'object' && !Array.isArray(parsed) && 'tierfs' in parsed ? parsed.tierfs : parsed;
      settings = { ...settings, ...parseSettings(ours, `user data ${userDataFile}`) };
    } else log.info('user data is not JSON: left to cloud-init', { file: userDataFile });
  }
  return settings;
}

export interface FirstbootPaths {
  confFile: string;
  userDataFile: string;
  /** The daemon's config, written last but one. */
  configFile: string;
  stateDir: string;
  discover: DiscoverOptions;
}

export const defaultFirstbootPaths: FirstbootPaths = {
  confFile: '/etc/tierfs/tierfs.conf',
  userDataFile: '/var/lib/cloud/instance/user-data.txt',
  configFile: '/etc/tierfs/tierfs.json',
  stateDir: '/var/lib/tierfs',
  discover: {},
};

export interface FirstbootResult {
  flash: string;
  namespace: NvmeNamespace | undefined;
  formatted: boolean;
  /** The file system restored from the target instead of a format, if any. */
  restored: string | undefined;
  config: ServeConfig;
}

/** Probe a target before anything is formatted (a first boot with a wrong bucket fails cleanly). */
export type TargetProbe = (url: string) => Promise<void>;

export async function firstboot(
  paths: FirstbootPaths,
  effects: { probeTarget: TargetProbe; ensureGroup: () => void; openStore?: (url: string) => ObjectStore },
): Promise<FirstbootResult> {
  const done = path.join(paths.stateDir, 'firstboot.done');
  if (fs.existsSync(done)) throw new TierfsError('EXISTS', `first boot already done (${done}); remove it to run again`);
  const settings = readSettings(paths.confFile, paths.userDataFile);
  const metaDir = path.join(paths.stateDir, 'meta');
  const target = settings.target ?? `file://${path.join(paths.stateDir, 'objects')}`;

  // Where the flash tier goes.
  let namespace: NvmeNamespace | undefined;
  let flash: string;
  if (settings.flashDevice !== undefined) flash = settings.flashDevice;
  else {
    const namespaces = discoverNvme(paths.discover);
    namespace = chooseFlashNamespace(namespaces);
    if (!namespace) {
      const seen = namespaces.map((n) => `${n.name} (${n.model || 'unknown model'}): ${n.inUse}`).join('; ');
      throw new TierfsError('NOT_FOUND', `no free NVMe namespace for the flash tier${seen ? `: ${seen}` : ' (none found)'}; set "flashDevice" to use another device`);
    }
    flash = namespace.devicePath;
    const others = namespaces.filter((n) => n !== namespace && n.inUse === null);
    log.info('flash tier chosen', { device: flash, model: namespace.model, sizeBytes: namespace.sizeBytes, unused: others.map((n) => n.name).join(',') || 'none' });
  }
  if (!fs.existsSync(flash)) throw new TierfsError('NOT_FOUND', `flash device ${flash} does not exist`);
  if (settings.encryptionKeyFile !== undefined && !fs.existsSync(settings.encryptionKeyFile))
    throw new TierfsError('USAGE', `encryptionKeyFile ${settings.encryptionKeyFile} does not exist`);
  await effects.probeTarget(target);

  // Format, unless this appliance's file system is already there; restore one the target already holds.
  let formatted = false;
  let restored: string | undefined;
  const already = fs.existsSync(path.join(metaDir, 'tierfs.db'));
  if (!already) {
    fs.mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
    const encryptionKey = settings.encryptionKeyFile === undefined ? undefined : readEncryptionKey(settings.encryptionKeyFile);
    const store = (effects.openStore ?? openTarget)(target);
    try {
      const existing = (await listFileSystems(store)).filter((f) => f.points.length > 0);
      const chosen = settings.restoreUuid === undefined ? existing : existing.filter((f) => f.fsUuid === settings.restoreUuid);
      if (settings.restoreUuid !== undefined && chosen.length === 0) throw new TierfsError('NOT_FOUND', `restoreUuid ${settings.restoreUuid}: no such file system in ${target}`);
      if (existing.length > 0 && settings.restore === false)
        throw new TierfsError('EXISTS', `${target} already holds file system ${existing.map((f) => f.fsUuid).join(', ')} and "restore" is false: give another target, or remove "restore": false to restore it`);
      if (chosen.length > 1) throw new TierfsError('USAGE', `${target} holds ${chosen.length} file systems (${chosen.map((f) => f.fsUuid).join(', ')}): set "restoreUuid"`);
      if (chosen.length === 1) {
        log.info('the target already holds a file system: restoring it instead of formatting', { target, fsUuid: chosen[0].fsUuid });
        const r = await restoreFileSystem({ store, targetUrl: target, flash, metaDir, fsUuid: chosen[0].fsUuid, encryptionKey });
        restored = r.fsUuid;
        log.info('file system restored from the target', {
          fsUuid: r.fsUuid, point: new Date(r.point.timeMs).toISOString(), lostFiles: r.loss.lostFileCount, lostBytes: r.loss.lostBytes,
        });
      }
    } finally {
      await store.close();
    }
    if (restored === undefined) {
      await formatFlashPath(flash, metaDir, { target, encryptionKey });
      formatted = true;
    }
  } else log.info('the flash tier already holds this appliance\'s file system; not formatted again', { flash, meta: metaDir });

  const { coolAfter, recallTimeout, flashDevice: _flashDevice, prices, restore: _restore, restoreUuid: _restoreUuid, shares, ...rest } = settings;
  // Shares of a new file system are made at tierfsd's first start (their directories need the mount's file system);
  // a restored one brings its own.
  let initialShares: string | undefined;
  if (shares !== undefined && shares.length > 0) {
    if (restored !== undefined) log.warn('user data "shares" ignored: the restored file system brings its own shares', { count: shares.length });
    else {
      initialShares = path.join(paths.stateDir, 'initial-shares.json');
      fs.writeFileSync(initialShares, `${JSON.stringify(parseInitialShares(shares, 'user data'), null, 2)}\n`, { mode: 0o600 });
    }
  }
  const config: ServeConfig = {
    flash,
    meta: metaDir,
    mount: settings.mount ?? '/mnt/tierfs',
    target,
    adminSocket: '/run/tierfs/admin.sock',
    allowOther: settings.allowOther ?? true,
    manageShareServers: true, // nothing listens but SSH until a share needs a server
    ...rest,
    ...(initialShares === undefined ? {} : { initialShares }),
  };
  const written: Record<string, unknown> = { ...config, ...(coolAfter ? { coolAfter } : {}), ...(recallTimeout ? { recallTimeout } : {}), ...(prices ? { prices } : {}) };
  effects.ensureGroup();
  fs.mkdirSync(config.mount, { recursive: true });
  fs.mkdirSync(path.dirname(paths.configFile), { recursive: true });
  const temporary = `${paths.configFile}.tmp`;
  fs.writeFileSync(temporary, `${JSON.stringify(written, null, 2)}\n`, { mode: 0o640 });
  fs.renameSync(temporary, paths.configFile);
  fs.writeFileSync(done, `${new Date().toISOString()} ${flash}\n`);
  return { flash, namespace, formatted, restored, config };
}
