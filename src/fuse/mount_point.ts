/**
 * What must hold before a mount, each failure one clear line: /dev/fuse is
 * there and usable, fusermount3 is installed (auto_unmount needs it), and
 * the mount point is a directory nobody serves.  A mount point left dead by
 * a daemon that exited without unmounting is detached and reused; a live
 * one is refused.  No check here touches a live mount synchronously.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TierfsError } from '../errors';
import { log } from '../log';

const FUSE_MAJOR = 10;
const FUSE_MINOR = 229;
const PROBE_TIMEOUT_MS = 2000;

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  /** The device number's minor: the connection's name under /sys/fs/fuse/connections. */
  minor: number;
  /** major:minor, the name of its backing device under /sys/class/bdi. */
  device: string;
}

/** Mounts at `mountPoint` in this process's namespace, from /proc/self/mountinfo. */
export function mountsAt(mountPoint: string, mountinfo = '/proc/self/mountinfo'): MountEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
  const entries: MountEntry[] = [];
  for (const line of fs.readFileSync(mountinfo, 'utf8').split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0 || fields.length < 5) continue;
    if (unescape(fields[4]) !== mountPoint) continue;
    entries.push({ mountPoint, fsType: fields[dash + 1], minor: Number(fields[2].split(':')[1]), device: fields[2] });
  }
  return entries;
}

function findInPath(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const candidate = path.join(dir || '.', program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

function fail(message: string): never {
  throw new TierfsError('UNAVAILABLE', message);
}

/** /dev/fuse must be the FUSE character device, readable and writable. */
export function checkFuseDevice(device = '/dev/fuse'): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(device);
  } catch {
    fail(`no ${device}: load the fuse kernel module (modprobe fuse), or give this container the device (--device /dev/fuse)`);
  }
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  if (!st.isCharacterDevice() || major !== FUSE_MAJOR || minor !== FUSE_MINOR)
    fail(`${device} is not the FUSE device (character device ${FUSE_MAJOR}:${FUSE_MINOR})`);
  try {
    fs.accessSync(device, fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    fail(`cannot open ${device}: permission denied (run as root, or make it readable and writable)`);
  }
}

export function fusermountPath(): string {
  return findInPath('fusermount3') ?? fail('fusermount3 not found: install the fuse3 package (it unmounts the file system if the daemon dies)');
}

/** Lazy unmount through fusermount3 (works for root and for the user who mounted). */
export function detach(mountPoint: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(fusermountPath(), ['-u', '-z', mountPoint], { timeout: 10_000 }, (error, _stdout, stderr) =>
      error ? reject(new Error(`fusermount3 -u -z ${mountPoint}: ${stderr.trim() || error.message}`)) : resolve(),
    );
  });
}

type Probe = 'answers' | 'dead' | 'hung';

/** stat(2) of a mount point from the thread pool, with a deadline: a hung server cannot stall us. */
function probe(mountPoint: string): Promise<Probe> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('hung'), PROBE_TIMEOUT_MS);
    fs.promises.stat(mountPoint).then(
      () => {
        clearTimeout(timer);
        resolve('answers');
      },
      (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve(error.code === 'ENOTCONN' || error.code === 'ECONNABORTED' ? 'dead' : 'answers');
      },
    );
  });
}

/**
 * Make `mountPoint` (absolute) ready to mount on: the checks above, a dead
 * mount detached, a missing directory created (its parent must exist).
 */
export async function prepareMountPoint(mountPoint: string): Promise<void> {
  checkFuseDevice();
  fusermountPath();
  const mounted = mountsAt(mountPoint);
  if (mounted.length > 0) {
    const state = await probe(mountPoint);
    const type = mounted[mounted.length - 1].fsType;
    if (state === 'answers') fail(`${mountPoint} is already mounted (${type}): unmount it first or choose another mount point`);
    if (state === 'hung') fail(`${mountPoint} is mounted (${type}) and does not answer: unmount it with fusermount3 -u -z ${mountPoint}`);
    log.warn('mount point left dead by a daemon that exited without unmounting; detaching it', { mount: mountPoint, type });
    await detach(mountPoint);
    if (mountsAt(mountPoint).length > 0 && (await probe(mountPoint)) !== 'answers') fail(`${mountPoint}: a dead mount is still there after fusermount3 -u -z`);
  }
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(mountPoint);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') fail(`${mountPoint}: ${(error as Error).message}`);
    try {
      await fs.promises.mkdir(mountPoint);
    } catch (mkdirError) {
      fail(`cannot create mount point ${mountPoint}: ${(mkdirError as Error).message}`);
    }
    return;
  }
  if (!st.isDirectory()) fail(`mount point ${mountPoint} is not a directory`);
}
