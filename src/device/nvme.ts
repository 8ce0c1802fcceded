/**
 * NVMe discovery through sysfs, for the appliance's first boot: which NVMe
 * namespaces could hold the flash tier.
 *
 * A namespace is a candidate when neither it nor one of its partitions holds
 * a mounted file system (the root file system above all), is swap, or is
 * claimed by a holder (LVM, md, dm-crypt).  Cloud instance-store disks
 * ("Amazon EC2 NVMe Instance Storage", "Microsoft NVMe Direct Disk") are
 * preferred over network volumes that happen to be NVMe (EBS, Azure managed
 * disks); with none of them, any free namespace will do.  Whether a free
 * namespace holds data is not decided here: format reads its first blocks
 * and refuses anything that is not blank or ours.
 *
 * Everything is read from a sysfs root and a mountinfo file given by the
 * caller, so the tests run against a fake tree.
 */
import fs from 'node:fs';
import path from 'node:path';

export type NvmeKind = 'instance-store' | 'network-volume' | 'local';

export interface NvmeNamespace {
  /** nvme0n1 */
  name: string;
  /** /dev/nvme0n1 */
  devicePath: string;
  sizeBytes: number;
  model: string;
  serial: string;
  kind: NvmeKind;
  /** Why it cannot hold the flash tier (mounted, root, swap, a holder), or null. */
  inUse: string | null;
}

const instanceStoreModels = [/^Amazon EC2 NVMe Instance Storage/i, /^Microsoft NVMe Direct Disk/i, /^nvme_card/i /* Google Local SSD */];
const networkVolumeModels = [/^Amazon Elastic Block Store/i, /^MSFT NVMe Accelerator/i, /^Microsoft Azure/i, /^nvme_card-pd/i];

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function kindOf(model: string): NvmeKind {
  if (networkVolumeModels.some((re) => re.test(model))) return 'network-volume';
  if (instanceStoreModels.some((re) => re.test(model))) return 'instance-store';
  return 'local';
}

/** "major:minor" → mount points, from a mountinfo file (field 3 is the device, 5 the mount point). */
function mountsByDevice(mountinfo: string): Map<string, string[]> {
  const mounts = new Map<string, string[]>();
  for (const line of read(mountinfo).split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const list = mounts.get(fields[2]) ?? [];
    list.push(fields[4].replace(/\\040/g, ' '));
    mounts.set(fields[2], list);
  }
  return mounts;
}

/** Swap devices' names (/proc/swaps). */
function swapNames(swaps: string): Set<string> {
  return new Set(
    read(swaps)
      .split('\n')
      .slice(1)
      .map((line) => path.basename(line.split(/\s+/)[0] ?? ''))
      .filter(Boolean),
  );
}

export interface DiscoverOptions {
  sysRoot?: string;
  mountinfo?: string;
  swaps?: string;
  devDir?: string;
}

/** Every NVMe namespace, largest first, with why it is in use if it is. */
export function discoverNvme(options: DiscoverOptions = {}): NvmeNamespace[] {
  const sysRoot = options.sysRoot ?? '/sys';
  const devDir = options.devDir ?? '/dev';
  const mounts = mountsByDevice(options.mountinfo ?? '/proc/self/mountinfo');
  const swap = swapNames(options.swaps ?? '/proc/swaps');
  const blockDir = path.join(sysRoot, 'block');
  let names: string[];
  try {
    names = fs.readdirSync(blockDir).filter((name) => /^nvme\d+n\d+$/.test(name));
  } catch {
    return [];
  }
  const found: NvmeNamespace[] = [];
  for (const name of names) {
    const dir = path.join(blockDir, name);
    const model = read(path.join(dir, 'device', 'model'));
    const serial = read(path.join(dir, 'device', 'serial'));
    const sizeBytes = Number(read(path.join(dir, 'size')) || 0) * 512;
    const parts = [name, ...fs.readdirSync(dir).filter((entry) => entry.startsWith(`${name}p`))];
    let inUse: string | null = null;
    for (const part of parts) {
      const partDir = part === name ? dir : path.join(dir, part);
      const dev = read(path.join(partDir, 'dev'));
      const mountedAt = mounts.get(dev);
      if (mountedAt?.length) inUse = mountedAt.includes('/') ? `holds the root file system (${part})` : `${part} is mounted at ${mountedAt[0]}`;
      else if (swap.has(part)) inUse = `${part} is swap`;
      else {
        let holders: string[] = [];
        try {
          holders = fs.readdirSync(path.join(partDir, 'holders'));
        } catch {
          // no holders directory: nothing holds it
        }
        if (holders.length > 0) inUse = `${part} is held by ${holders.join(', ')}`;
      }
      if (inUse?.startsWith('holds the root')) break;
    }
    if (inUse === null && parts.length > 1) inUse = `partitioned (${parts.slice(1).join(', ')})`;
    if (inUse === null && sizeBytes === 0) inUse = 'no capacity';
    found.push({ name, devicePath: path.join(devDir, name), sizeBytes, model, serial, kind: kindOf(model), inUse });
  }
  return found.sort((a, b) => b.sizeBytes - a.sizeBytes || a.name.localeCompare(b.name, 'en', { numeric: true }));
}

/**
 * The namespace for the flash tier: the largest free instance-store disk,
 * else the largest free namespace that is not a network volume, else the
 * largest free one.  Undefined when none is free.
 */
export function chooseFlashNamespace(namespaces: NvmeNamespace[]): NvmeNamespace | undefined {
  const free = namespaces.filter((n) => n.inUse === null);
  return free.find((n) => n.kind === 'instance-store') ?? free.find((n) => n.kind === 'local') ?? free[0];
}
