/**
 * Network shares (tierfs share): directories of the mounted file system
 * exported over NFS by the kernel's NFS server and shared over SMB 3 by
 * Samba.  Shares live in the metadata (they travel with the file system and
 * its bucket); the daemon renders them into two files it owns and nothing
 * else — one exports file under /etc/exports.d and one Samba include — and
 * asks the servers to reload (`exportfs -r`, `smbcontrol smbd
 * reload-config`).  It withdraws them before it unmounts and puts them back
 * once the mount serves, so neither server ever shares the empty directory
 * under the mount point.
 *
 * Every field of a share is checked before anything changes; the files are
 * written (whole, by rename) before the metadata commits, and put back as
 * they were if anything after them fails.  Samba users live in Samba's own
 * password database; `share user add` makes the Unix account Samba needs
 * when there is none (marked as ours, so `rm` removes only those).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { systemClock, type Clock } from '../clock';
import { TierfsError } from '../errors';
import { ROOT_CREDENTIALS, ROOT_INO, type FileSystem } from '../fs/fs';
import type { ShareRecord } from '../meta/meta_store';
import { log } from '../log';

export interface ShareConfig {
  /** The exports file the daemon owns (exports(5)). */
  exportsFile: string;
  /** The Samba include file the daemon owns (smb.conf includes it). */
  sambaInclude: string;
  /** The smb.conf Samba's tools read (its passdb, pid and lock directories). */
  sambaConfig: string;
  /** Where nfsd shows its state (/proc/fs/nfsd): served when it runs threads. */
  nfsdDir: string;
  /**
   * Start the NFS server and smbd (systemd units nfs-server and smbd) when a
   * share needs them, and stop them when the last share that did is removed
   * (the appliance: nothing listens but SSH until a share exists).
   */
  manageServers: boolean;
}

export const defaultShareConfig: ShareConfig = {
  exportsFile: '/etc/exports.d/tierfs.exports',
  sambaInclude: '/etc/samba/tierfs-shares.conf',
  sambaConfig: '/etc/samba/smb.conf',
  nfsdDir: '/proc/fs/nfsd',
  manageServers: false,
};

/** What a client of the admin API sends to add a share (and, all optional, to edit one). */
export interface ShareBody {
  name: string;
  /** An absolute path on the mount (a directory). */
  path: string;
  readOnly?: boolean;
  /** NFS clients as CIDRs (or single addresses); absent or empty: no NFS. */
  nfs?: string[];
  rootSquash?: boolean;
  smb?: boolean;
  /** Samba users who may connect (absent or empty: every Samba user). */
  users?: string[];
  allowWorld?: boolean;
}

/** An edit: only the fields given change (`nfs: []` stops NFS, `smb: false` stops SMB). */
export type ShareEditBody = Partial<Omit<ShareBody, 'name'>>;

export interface ServerState {
  served: boolean;
  /** Why not, or what serves it. */
  detail: string;
}

export interface ShareReport extends ShareRecord {
  /** The directory as the servers see it (under the mount point). */
  exportPath: string;
  /** False when the path no longer names a directory (renamed or removed): the share is left out until it does. */
  available: boolean;
  /** SMB connections to this share (user@address). */
  smbConnections: string[];
}

export type SharesSummary = { count: number; nfs: ServerState & { clientCount: number }; smb: ServerState & { clientCount: number } };

export interface SharesResponse {
  shares: ShareReport[];
  nfs: ServerState & { clients: string[] };
  smb: ServerState;
}

const shareNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const reservedShareNames = ['global', 'homes', 'printers', 'print$', 'ipc$'];
const userNamePattern = /^[a-z_][a-z0-9_-]{0,31}$/;
const accountComment = 'tierfs SMB user';
const commandTimeoutMs = 15_000;

function usage(message: string): never {
  throw new TierfsError('USAGE', message);
}

/** A CIDR (or one address) in canonical form; refused with one line otherwise. */
export function parseCidr(text: string): { cidr: string; world: boolean } {
  const [address, prefixText, extra] = text.split('/');
  const family = net.isIP(address ?? '');
  if (extra !== undefined || family === 0) usage(`share: ${JSON.stringify(text)} is not a CIDR (such as 10.0.0.0/8 or 2001:db8::/32)`);
  const bits = family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) usage(`share: ${JSON.stringify(text)}: the prefix length must be 0 to ${bits}`);
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) usage(`share: ${JSON.stringify(text)}: the prefix length must be 0 to ${bits}`);
  const value = family === 4 ? ipv4Value(address!) : ipv6Value(address!);
  const host = value & ((1n << BigInt(bits - prefix)) - 1n);
  if (host !== 0n) {
    const network = formatAddress(value - host, family);
    usage(`share: ${JSON.stringify(text)} has host bits set (the network is ${network}/${prefix})`);
  }
  return { cidr: `${formatAddress(value, family)}/${prefix}`, world: prefix === 0 };
}

function ipv4Value(address: string): bigint {
  return address.split('.').reduce((v, part) => (v << 8n) | BigInt(Number(part)), 0n);
}

function ipv6Value(address: string): bigint {
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = ipv4Value(v4[1]!);
    text = `${text.slice(0, -v4[1]!.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const headParts = head === '' ? [] : head!.split(':');
  const tailParts = tail === undefined || tail === '' ? [] : tail.split(':');
  const parts = tail === undefined ? headParts : [...headParts, ...Array(8 - headParts.length - tailParts.length).fill('0'), ...tailParts];
  return parts.reduce((v, part) => (v << 16n) | BigInt(parseInt(part, 16)), 0n);
}

function formatAddress(value: bigint, family: number): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((value >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  // The longest run of zero groups (two or more) becomes "::" (RFC 5952).
  let best = { at: -1, length: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  if (best.at < 0) return groups.join(':');
  return `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.length).join(':')}`;
}

/** What can be checked of a share without the file system and the servers: its name, protocols, CIDRs (made canonical) and users' names. */
export function checkShareFields(share: ShareRecord): ShareRecord {
  if (!shareNamePattern.test(share.name) || reservedShareNames.includes(share.name.toLowerCase()))
    usage(`share: name ${JSON.stringify(share.name)}: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit (not ${reservedShareNames.join(', ')})`);
  if (!share.nfs && !share.smb) usage('share: give --nfs CIDR[,CIDR...], --smb, or both');
  let checked = share;
  if (share.nfs) {
    if (share.nfs.clients.length === 0) usage('share: --nfs needs at least one CIDR');
    const parsed = share.nfs.clients.map(parseCidr);
    const seen = new Set<string>();
    for (const p of parsed) {
      if (seen.has(p.cidr)) usage(`share: ${p.cidr} is given twice`);
      seen.add(p.cidr);
    }
    if (parsed.some((p) => p.world) && !share.readOnly && !share.allowWorld)
      usage('share: a client range of the whole internet (/0) with write access needs --allow-world (or --ro)');
    checked = { ...share, nfs: { ...share.nfs, clients: parsed.map((p) => p.cidr) } };
  }
  if (share.smb) {
    const seen = new Set<string>();
    for (const user of share.smb.users) {
      if (!userNamePattern.test(user)) usage(`share: user ${JSON.stringify(user)} is not a valid user name`);
      if (seen.has(user)) usage(`share: user ${user} is given twice`);
      seen.add(user);
    }
  }
  return checked;
}

/** A share first boot creates (user data "shares"): as `tierfs share add` takes, its path from the file system's root. */
export type InitialShare = Omit<ShareBody, 'users'>;

const initialShareKeys: Record<keyof InitialShare, 'string' | 'boolean' | 'string[]'> = {
  name: 'string', path: 'string', readOnly: 'boolean', nfs: 'string[]', rootSquash: 'boolean', smb: 'boolean', allowWorld: 'boolean',
};

/** Check user data's shares completely, short of the file system (their directories are made at the first start). */
export function parseInitialShares(value: unknown, source: string): InitialShare[] {
  const fail = (message: string): never => usage(`${source}: shares: ${message}`);
  if (!Array.isArray(value)) fail('expected a list of shares ({"name", "path", "nfs": [CIDR...], "smb": true, ...})');
  const shares = value as unknown[];
  const names = new Set<string>();
  const nfsPaths = new Set<string>();
  return shares.map((raw, i) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`entry ${i + 1} is not an object`);
    const entry = raw as Record<string, unknown>;
    for (const [key, v] of Object.entries(entry)) {
      if (key === 'users') fail(`entry ${i + 1}: Samba users are added on the appliance (tierfs share user add, then tierfs share edit NAME --users)`);
      const type = initialShareKeys[key as keyof InitialShare];
      if (!type) fail(`entry ${i + 1}: unknown key "${key}" (known: ${Object.keys(initialShareKeys).join(', ')})`);
      const ok = type === 'string[]' ? Array.isArray(v) && v.every((x) => typeof x === 'string') : typeof v === type;
      if (!ok) fail(`entry ${i + 1}: "${key}" must be ${type === 'string[]' ? 'a list of strings' : `a ${type}`}`);
    }
    if (typeof entry.name !== 'string' || typeof entry.path !== 'string') fail(`entry ${i + 1}: "name" and "path" are required`);
    const share = entry as unknown as InitialShare;
    const p = share.path;
    if (!p.startsWith('/') || /[\x00-\x1f\x7f\\"%]/.test(p) || p.split('/').some((part) => part === '.' || part === '..'))
      fail(`${share.name}: path ${JSON.stringify(p)} must be absolute in the file system ("/projects"), without "." or ".." segments or control characters`);
    const normal = path.posix.normalize(p).replace(/\/+$/, '') || '/';
    let record: ShareRecord;
    try {
      record = checkShareFields({
        name: share.name, path: normal, readOnly: share.readOnly === true,
        nfs: share.nfs && share.nfs.length > 0 ? { clients: share.nfs, rootSquash: share.rootSquash ?? true } : null,
        smb: share.smb ? { users: [] } : null, allowWorld: share.allowWorld === true, createdMs: 0,
      });
    } catch (error) {
      return fail(`${share.name}: ${(error as Error).message.replace(/^share: /, '')}`);
    }
    if (names.has(share.name.toLowerCase())) fail(`two shares named ${share.name}`);
    names.add(share.name.toLowerCase());
    if (record.nfs) {
      if (nfsPaths.has(normal)) fail(`${normal} is exported over NFS twice`);
      nfsPaths.add(normal);
    }
    return { ...share, path: normal, ...(record.nfs ? { nfs: record.nfs.clients } : {}) };
  });
}

/** A share's path given as an absolute path on the mount: its path from the file system's root. */
export function sharePathOf(mountPath: string, given: string): string {
  if (given === '' || given.includes('\0')) usage('share: give the directory to share as an absolute path on the mount');
  if (/[\x00-\x1f\x7f\\"%]/.test(given)) usage(`share: path ${JSON.stringify(given)}: control characters, backslashes, double quotes and "%" (Samba would expand it) are not allowed`);
  if (!path.isAbsolute(given)) usage(`share: path ${JSON.stringify(given)} must be absolute (on the mount ${mountPath})`);
  if (given.split('/').some((part) => part === '..' || part === '.')) usage(`share: path ${JSON.stringify(given)} must not contain "." or ".." segments`);
  const normal = path.normalize(given).replace(/\/+$/, '') || '/';
  if (normal !== mountPath && !normal.startsWith(`${mountPath}/`)) usage(`share: path ${given} is outside the mount ${mountPath}`);
  return normal === mountPath ? '/' : normal.slice(mountPath.length);
}

/** An fsid for one export: the file system's UUID mixed with the share's path (unique per export, stable). */
function fsidOf(fsUuid: string, sharePath: string): string {
  const hex = createHash('sha256').update(`${fsUuid}\0${sharePath}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** A path in exports(5): characters other than letters, digits and a few safe ones as octal escapes. */
function exportsPath(p: string): string {
  return p.replace(/[^A-Za-z0-9/._+@,:=-]/g, (c) => [...Buffer.from(c)].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join(''));
}

export function renderExports(shares: ShareReport[], fsUuid: string, mountPath: string): string {
  const lines = [`# Written by tierfsd (file system ${fsUuid}); change it with tierfs share, not here.`];
  for (const s of shares) {
    if (!s.nfs || !s.available) continue;
    const options = [
      s.readOnly ? 'ro' : 'rw',
      'sync',
      'no_subtree_check',
      s.nfs.rootSquash ? 'root_squash' : 'no_root_squash',
      'sec=sys',
      `fsid=${fsidOf(fsUuid, s.path)}`,
      `mountpoint=${exportsPath(mountPath)}`,
    ].join(',');
    lines.push(`# share ${s.name}`, `${exportsPath(s.exportPath)} ${s.nfs.clients.map((c) => `${c}(${options})`).join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The NFS ports the appliance pins (nfs.conf.d/tierfs.conf): rpcbind, nfsd, mountd, statd, lockd. */
export const nfsPorts = [111, 2049, 20048, 32765, 32768];
const firewallTable = 'inet tierfs_shares';

/**
 * The appliance's firewall for shares (nftables, a table of its own): the
 * NFS ports open only to the NFS shares' client ranges, dropped for every
 * other source; SMB (445) open, since every SMB session is authenticated and
 * encrypted, unless no SMB share exists (then dropped too).  Everything else
 * is left to the other tables and to the cloud's security groups.
 */
export function renderFirewall(shares: ShareRecord[]): string {
  const nfs = shares.flatMap((s) => (s.nfs ? s.nfs.clients : []));
  const v4 = [...new Set(nfs.filter((c) => !c.includes(':')))];
  const v6 = [...new Set(nfs.filter((c) => c.includes(':')))];
  const anySmb = shares.some((s) => s.smb);
  const set = (name: string, type: string, cidrs: string[]) =>
    `  set ${name} { type ${type}; flags interval;${cidrs.length > 0 ? ` elements = { ${cidrs.join(', ')} }` : ''} }`;
  const ports = `{ ${nfsPorts.join(', ')} }`;
  return [
    `table ${firewallTable} {`,
    set('nfs_v4', 'ipv4_addr', v4),
    set('nfs_v6', 'ipv6_addr', v6),
    '  chain input {',
    '    type filter hook input priority filter - 1; policy accept;',
    ...['tcp', 'udp'].flatMap((proto) => [
      `    ${proto} dport ${ports} ip saddr @nfs_v4 accept`,
      `    ${proto} dport ${ports} ip6 saddr @nfs_v6 accept`,
      `    ${proto} dport ${ports} drop`,
    ]),
    ...(anySmb ? [] : ['    tcp dport 445 drop']),
    '  }',
    '}',
    '',
  ].join('\n');
}

export function renderSambaInclude(shares: ShareReport[], fsUuid: string): string {
  const lines = [`# Written by tierfsd (file system ${fsUuid}); change it with tierfs share, not here.`];
  for (const s of shares) {
    if (!s.smb || !s.available) continue;
    lines.push(
      '',
      `[${s.name}]`,
      `   comment = tierfs share ${s.name}`,
      `   path = ${s.exportPath}`,
      `   read only = ${s.readOnly ? 'yes' : 'no'}`,
      '   guest ok = no',
      '   server smb encrypt = required',
      ...(s.smb.users.length > 0 ? [`   valid users = ${s.smb.users.join(' ')}`] : []),
      '   ea support = yes',
      '   store dos attributes = yes',
      '   strict sync = yes',
      // NFS clients of the same files would not break a lease: no oplocks or leases then.
      ...(s.nfs ? ['   oplocks = no', '   level2 oplocks = no'] : []),
    );
  }
  return `${lines.join('\n')}\n`;
}

interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type CommandRunner = (command: string, args: string[], input?: string) => Promise<CommandResult>;

/** Run a program (no shell) with a deadline; a program that is not installed answers code 127. */
export const runCommand: CommandRunner = (command, args, input) =>
  new Promise((resolve) => {
    const child = execFile(command, args, { timeout: commandTimeoutMs, env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 16 * 2 ** 20 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : (error as NodeJS.ErrnoException).code === 'ENOENT' ? 127 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (error && code !== 0 ? error.message : '') });
    });
    if (input !== undefined) child.stdin?.end(input);
  });

function lastLine(result: CommandResult): string {
  return (result.stderr.trim() || result.stdout.trim()).split('\n').pop() ?? `exit ${result.code}`;
}

/** Write a file whole (a temporary beside it, then rename); no change when its content is already that. */
function writeWhole(file: string, content: string): boolean {
  let current: string | undefined;
  try {
    current = fs.readFileSync(file, 'utf8');
  } catch {
    current = undefined;
  }
  if (current === content) return false;
  const temporary = `${file}.tierfs-new`;
  fs.writeFileSync(temporary, content, { mode: 0o644 });
  fs.renameSync(temporary, file);
  return true;
}

function readOrUndefined(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export class ShareManager {
  private nfsState: ServerState = { served: false, detail: 'no NFS share' };
  private smbState: ServerState = { served: false, detail: 'no SMB share' };
  /** Client counts from the last look (status and metrics read these; looking runs programs). */
  private clientCounts = { nfs: 0, smb: 0, atMs: 0 };
  /** One change at a time: each renders from the metadata as the last one left it. */
  private queue: Promise<unknown> = Promise.resolve();
  private withdrawn = false;

  private readonly config: ShareConfig;
  private readonly allowOther: boolean;
  private readonly run: CommandRunner;
  private readonly clock: Clock;

  constructor(
    private readonly fileSystem: FileSystem,
    private readonly mountPath: string,
    /** allowOther: whether the mount lets users other than the daemon's in (the servers act as their clients' users). */
    options: { config?: Partial<ShareConfig>; allowOther: boolean; run?: CommandRunner; clock?: Clock },
  ) {
    this.config = { ...defaultShareConfig, ...options.config };
    this.allowOther = options.allowOther;
    this.run = options.run ?? runCommand;
    this.clock = options.clock ?? systemClock;
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private report(share: ShareRecord): ShareReport {
    const exportPath = share.path === '/' ? this.mountPath : `${this.mountPath}${share.path}`;
    let available = false;
    try {
      available = (this.fileSystem.resolvePath(share.path).mode & 0o170000) === 0o040000;
    } catch {
      available = false;
    }
    return { ...share, exportPath, available, smbConnections: [] };
  }

  /** Render `shares` into the two files and reload the servers; on a failure to write, the files are put back. */
  private async render(shares: ShareRecord[], servers: 'start' | 'start-stop' | 'keep' = 'start'): Promise<string[]> {
    // A read-only appliance (a follower, or one that lost the writer role) exports every share read-only.
    const reports = shares.map((s) => this.report(this.fileSystem.readOnly === undefined ? s : { ...s, readOnly: true }));
    const anyNfs = reports.some((s) => s.nfs);
    const anySmb = reports.some((s) => s.smb);
    const warnings: string[] = [];
    const before = { exports: readOrUndefined(this.config.exportsFile), samba: readOrUndefined(this.config.sambaInclude) };
    const files: [string, string, boolean][] = [
      [this.config.exportsFile, renderExports(reports, this.fileSystem.uuid, this.mountPath), anyNfs],
      [this.config.sambaInclude, renderSambaInclude(reports, this.fileSystem.uuid), anySmb],
    ];
    const changed: string[] = [];
    try {
      for (const [file, content, wanted] of files) {
        if (!wanted && !fs.existsSync(file)) continue; // never shared that way here: nothing to own yet
        if (!fs.existsSync(path.dirname(file)))
          usage(`share: ${path.dirname(file)} does not exist: ${file === this.config.exportsFile ? 'install the NFS server (nfs-kernel-server)' : 'install Samba (samba)'} first`);
        if (writeWhole(file, content)) changed.push(file);
      }
    } catch (error) {
      this.restoreFiles(before);
      if (error instanceof TierfsError) throw error;
      throw new TierfsError('IO', `share: cannot write ${(error as NodeJS.ErrnoException).path ?? ''}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    for (const r of reports) if ((r.nfs || r.smb) && !r.available) warnings.push(`share ${r.name}: ${r.path} is not a directory now; it is left out until it is`);
    if (this.config.manageServers && servers !== 'keep') {
      // The firewall first: a server started below is never open to more than the shares allow.
      const rules = await this.run('nft', ['-f', '-'], `table ${firewallTable}\ndelete table ${firewallTable}\n${renderFirewall(shares)}`);
      if (rules.code !== 0) warnings.push(`the shares' firewall (nftables) was not applied: ${lastLine(rules)}`);
      // rpcbind comes with the NFS server (NFSv3) and goes with it.
      warnings.push(...(await this.startOrStop(['nfs-server.service', 'rpcbind.socket', 'rpcbind.service'], anyNfs, servers === 'start-stop', () => this.nfsRunning())));
      warnings.push(...(await this.startOrStop(['smbd.service'], anySmb, servers === 'start-stop', async () => (await this.run('smbcontrol', ['-s', this.config.sambaConfig, 'smbd', 'ping'])).code === 0)));
    }
    // A server with no share of ours, before or now, is not asked anything (a daemon without shares runs no program).
    const nfsChanged = changed.includes(this.config.exportsFile);
    const smbChanged = changed.includes(this.config.sambaInclude);
    this.nfsState = anyNfs || nfsChanged ? await this.reloadNfs(anyNfs, nfsChanged) : { served: false, detail: 'no NFS share' };
    this.smbState = anySmb || smbChanged ? await this.reloadSamba(anySmb, smbChanged) : { served: false, detail: 'no SMB share' };
    if (anyNfs && !this.nfsState.served) warnings.push(`NFS: ${this.nfsState.detail}`);
    if (anySmb && !this.smbState.served) warnings.push(`SMB: ${this.smbState.detail}`);
    return warnings;
  }

  /** Start a server a share needs, or stop one no share needs (not enabled: tierfsd starts it at each start when a share needs it). */
  private async startOrStop(units: string[], needed: boolean, mayStop: boolean, running: () => boolean | Promise<boolean>): Promise<string[]> {
    if (needed && !(await running())) {
      const r = await this.run('systemctl', ['start', units[0]!]);
      if (r.code !== 0) return [`cannot start ${units[0]}: ${lastLine(r)}`];
      for (let i = 0; i < 50 && !(await running()); i++) await this.clock.sleep(100);
      log.info('share server started', { unit: units[0] });
    } else if (!needed && mayStop && (await running())) {
      const r = await this.run('systemctl', ['stop', ...units]);
      if (r.code !== 0) return [`cannot stop ${units.join(' ')}: ${lastLine(r)}`];
      log.info('share server stopped: no share needs it', { units: units.join(' ') });
    }
    return [];
  }

  private restoreFiles(before: { exports: string | undefined; samba: string | undefined }): void {
    for (const [file, content] of [[this.config.exportsFile, before.exports], [this.config.sambaInclude, before.samba]] as const) {
      try {
        if (content === undefined) fs.rmSync(file, { force: true });
        else writeWhole(file, content);
      } catch (error) {
        log.error('share files: cannot put back', { file, error: (error as Error).message });
      }
    }
  }

  private nfsRunning(): boolean {
    const threads = readOrUndefined(path.join(this.config.nfsdDir, 'threads'));
    return threads !== undefined && Number(threads.trim()) > 0;
  }

  private async reloadNfs(any: boolean, changed: boolean): Promise<ServerState> {
    if (!this.nfsRunning()) return { served: false, detail: `not served: no NFS server runs on this machine (${this.config.nfsdDir}/threads)` };
    if (changed || any) {
      const r = await this.run('exportfs', ['-r']);
      if (r.code !== 0) return { served: false, detail: `exportfs -r failed: ${lastLine(r)}` };
    }
    return { served: any, detail: any ? 'exported by the kernel NFS server' : 'no NFS share' };
  }

  private async reloadSamba(any: boolean, changed: boolean): Promise<ServerState> {
    const ping = await this.run('smbcontrol', ['-s', this.config.sambaConfig, 'smbd', 'ping']);
    if (ping.code === 127) return { served: false, detail: 'not served: Samba is not installed (smbcontrol not found)' };
    if (ping.code !== 0) return { served: false, detail: 'not served: smbd is not running' };
    if (changed || any) {
      const r = await this.run('smbcontrol', ['-s', this.config.sambaConfig, 'smbd', 'reload-config']);
      if (r.code !== 0) return { served: false, detail: `smbd reload failed: ${lastLine(r)}` };
    }
    return { served: any, detail: any ? 'shared by smbd' : 'no SMB share' };
  }

  /**
   * Put the shares in place (after the mount serves).  `initialSharesFile`:
   * shares first boot asked for, added once (their directories made,
   * mode 1777 when writable), the file removed after.
   */
  async start(initialSharesFile?: string): Promise<void> {
    this.withdrawn = false;
    if (initialSharesFile !== undefined && fs.existsSync(initialSharesFile)) await this.addInitial(initialSharesFile);
    return this.serial(async () => {
      const shares = this.fileSystem.shares();
      try {
        const warnings = await this.render(shares);
        for (const warning of warnings) log.warn(warning);
        if (shares.length > 0) log.info('shares in place', { count: shares.length, nfs: this.nfsState.detail, smb: this.smbState.detail });
      } catch (error) {
        log.error('shares not in place', { error: (error as Error).message });
      }
    });
  }

  private async addInitial(file: string): Promise<void> {
    let entries: unknown[] = [];
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
      entries = Array.isArray(parsed) ? parsed : [];
    } catch (error) {
      log.error('first boot shares not added', { file, error: (error as Error).message });
    }
    for (const entry of entries) {
      try {
        const share = parseInitialShares([entry], file)[0]!; // each on its own: one bad entry does not hold the others back
        await this.makeDirectory(share.path, share.readOnly ? 0o755 : 0o1777);
        await this.add({ ...share, path: share.path === '/' ? this.mountPath : `${this.mountPath}${share.path}` });
        log.info('share added (first boot)', { share: share.name, path: share.path });
      } catch (error) {
        log.error('first boot share not added', { share: JSON.stringify(entry), error: (error as Error).message });
      }
    }
    fs.rmSync(file, { force: true });
  }

  /** mkdir -p in the file system (as root); an existing directory is kept as it is. */
  private async makeDirectory(dirPath: string, mode: number): Promise<void> {
    let ino = ROOT_INO;
    for (const name of dirPath.split('/').filter((part) => part !== '')) {
      const found = await this.fileSystem.lookup(ino, name, ROOT_CREDENTIALS).catch(() => undefined);
      if (found) ino = found.ino;
      else {
        ino = (await this.fileSystem.mkdir(ino, name, mode, ROOT_CREDENTIALS)).ino;
      }
    }
  }

  /** Take every share away (before unmounting): the servers must not share the empty directory under the mount point. */
  withdraw(): Promise<void> {
    this.withdrawn = true;
    return this.serial(async () => {
      try {
        await this.render([], 'keep');
        // nfsd keeps the files of NFSv4 opens open: on the mount about to go, they would fail for good.  Where
        // tierfsd runs the NFS server it stops it instead, and starts it again once the mount serves: to its
        // clients that is a server reboot, after which they reclaim their opens and locks against the new mount
        // (hard mounts wait meanwhile).  smbd stays up; its connections to the withdrawn shares are closed.
        if (this.config.manageServers && this.nfsRunning()) {
          const r = await this.run('systemctl', ['stop', 'nfs-server.service']);
          if (r.code !== 0) log.error('the NFS server was not stopped before the unmount', { error: lastLine(r) });
        }
      } catch (error) {
        log.error('shares not withdrawn', { error: (error as Error).message });
      }
    });
  }

  private find(name: string): ShareRecord {
    return this.fileSystem.shares().find((s) => s.name === name) ?? (() => { throw new TierfsError('NOT_FOUND', `no share named ${name} (tierfs share list)`); })();
  }

  /** Check a share completely against the rest; returns it in canonical form. */
  private async check(given: ShareRecord, others: ShareRecord[]): Promise<ShareRecord> {
    const share = checkShareFields(given);
    if (others.some((s) => s.name.toLowerCase() === share.name.toLowerCase())) usage(`share: a share named ${share.name} exists (tierfs share edit changes it)`);
    if (!this.allowOther) usage('share: the file system is mounted without allowOther, so NFS and SMB clients could not reach it (serve config "allowOther": true)');
    const report = this.report(share);
    if (!report.available) usage(`share: ${report.exportPath} is not a directory of the file system`);
    const clash = share.nfs && others.find((s) => s.nfs && s.path === share.path);
    if (clash) usage(`share: ${share.path} is already exported over NFS by share ${clash.name}`);
    if (share.smb && share.smb.users.length > 0) {
      const known = await this.sambaUsers();
      const unknown = share.smb.users.filter((u) => !known.includes(u));
      if (unknown.length > 0) usage(`share: no Samba user ${unknown.join(', ')} (tierfs share user add NAME)`);
    }
    return share;
  }

  /** Shares are metadata: a read-only appliance changes none. */
  private writable(): void {
    const reason = this.fileSystem.readOnly;
    if (reason !== undefined) throw new TierfsError('READ_ONLY', `shares cannot change here: read-only: ${reason}`);
  }

  async add(body: ShareBody): Promise<{ share: ShareReport; warnings: string[] }> {
    this.writable();
    return this.serial(async () => {
      const nfs = body.nfs !== undefined && body.nfs.length > 0 ? { clients: body.nfs, rootSquash: body.rootSquash ?? true } : null;
      if (body.rootSquash !== undefined && !nfs) usage('share: --no-root-squash goes with --nfs');
      if (body.users !== undefined && !body.smb) usage('share: --users goes with --smb');
      const share = await this.check(
        {
          name: body.name,
          path: sharePathOf(this.mountPath, body.path),
          readOnly: body.readOnly === true,
          nfs,
          smb: body.smb ? { users: body.users ?? [] } : null,
          allowWorld: body.allowWorld === true,
          createdMs: this.clock.nowMs(),
        },
        this.fileSystem.shares(),
      );
      const warnings = await this.commit([...this.fileSystem.shares(), share], () => this.fileSystem.putShare(share));
      return { share: this.report(share), warnings };
    });
  }

  async edit(name: string, body: ShareEditBody): Promise<{ share: ShareReport; warnings: string[] }> {
    this.writable();
    return this.serial(async () => {
      const current = this.find(name);
      const nfsClients = body.nfs === undefined ? current.nfs?.clients : body.nfs.length === 0 ? undefined : body.nfs;
      if (body.rootSquash !== undefined && !nfsClients) usage('share edit: --root-squash/--no-root-squash goes with an NFS share');
      const smb = body.smb === undefined ? current.smb !== null : body.smb;
      if (body.users !== undefined && !smb) usage('share edit: --users goes with an SMB share');
      const share = await this.check(
        {
          ...current,
          path: body.path === undefined ? current.path : sharePathOf(this.mountPath, body.path),
          readOnly: body.readOnly ?? current.readOnly,
          nfs: nfsClients ? { clients: nfsClients, rootSquash: body.rootSquash ?? current.nfs?.rootSquash ?? true } : null,
          smb: smb ? { users: body.users ?? current.smb?.users ?? [] } : null,
          allowWorld: body.allowWorld ?? current.allowWorld,
        },
        this.fileSystem.shares().filter((s) => s.name !== name),
      );
      const others = this.fileSystem.shares().filter((s) => s.name !== name);
      const warnings = await this.commit([...others, share], () => this.fileSystem.putShare(share));
      return { share: this.report(share), warnings };
    });
  }

  async remove(name: string): Promise<string[]> {
    this.writable();
    return this.serial(async () => {
      this.find(name);
      return this.commit(this.fileSystem.shares().filter((s) => s.name !== name), async () => void (await this.fileSystem.deleteShare(name)));
    });
  }

  /** Files first (put back if the metadata cannot commit), then the metadata. */
  private async commit(shares: ShareRecord[], save: () => Promise<void>): Promise<string[]> {
    const before = { exports: readOrUndefined(this.config.exportsFile), samba: readOrUndefined(this.config.sambaInclude) };
    const warnings = this.withdrawn ? ['the daemon is stopping: the change applies at the next start'] : await this.render(shares, 'start-stop');
    try {
      await save();
    } catch (error) {
      this.restoreFiles(before);
      await this.reloadAfterRestore();
      throw error;
    }
    return warnings;
  }

  private async reloadAfterRestore(): Promise<void> {
    const shares = this.fileSystem.shares();
    this.nfsState = await this.reloadNfs(shares.some((s) => s.nfs), true);
    this.smbState = await this.reloadSamba(shares.some((s) => s.smb), true);
  }

  /** The shares with the servers' state and their clients (runs smbstatus; NFS clients from nfsd). */
  async list(): Promise<SharesResponse> {
    const reports = this.fileSystem.shares().map((s) => this.report(s));
    const connections = await this.smbConnections();
    for (const r of reports) r.smbConnections = connections.get(r.name) ?? [];
    const nfsClients = this.nfsClients();
    this.clientCounts = { nfs: nfsClients.length, smb: [...connections.values()].reduce((n, c) => n + c.length, 0), atMs: this.clock.nowMs() };
    return { shares: reports, nfs: { ...this.nfsState, clients: nfsClients }, smb: this.smbState };
  }

  async show(name: string): Promise<ShareReport> {
    this.find(name);
    return (await this.list()).shares.find((s) => s.name === name)!;
  }

  /** For status and metrics: no program run here; the client counts are refreshed in the background at most every 10 s. */
  summary(): SharesSummary {
    const shares = this.fileSystem.shares();
    if (shares.length > 0 && this.clock.nowMs() - this.clientCounts.atMs > 10_000) {
      this.clientCounts.atMs = this.clock.nowMs();
      void this.list().catch(() => undefined);
    }
    return {
      count: shares.length,
      nfs: { ...this.nfsState, clientCount: this.clientCounts.nfs },
      smb: { ...this.smbState, clientCount: this.clientCounts.smb },
    };
  }

  /** NFSv4 clients nfsd knows (one directory each under clients/, with their address), and NFSv3 mounts from mountd's table. */
  private nfsClients(): string[] {
    const found = new Set<string>();
    const clientsDir = path.join(this.config.nfsdDir, 'clients');
    let ids: string[] = [];
    try {
      ids = fs.readdirSync(clientsDir);
    } catch {
      ids = [];
    }
    for (const id of ids) {
      const info = readOrUndefined(path.join(clientsDir, id, 'info')) ?? '';
      const address = /^address: "?([^"\n]+?)"?$/m.exec(info)?.[1];
      if (address) found.add(address.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1'));
    }
    for (const line of (readOrUndefined('/var/lib/nfs/rmtab') ?? '').split('\n')) {
      const [host, exported] = line.split(':');
      if (host && exported?.startsWith(this.mountPath)) found.add(host);
    }
    return [...found].sort();
  }

  private async smbConnections(): Promise<Map<string, string[]>> {
    const found = new Map<string, string[]>();
    if (!this.fileSystem.shares().some((s) => s.smb)) return found;
    const r = await this.run('smbstatus', ['-s', this.config.sambaConfig, '--json']);
    if (r.code !== 0) return found;
    try {
      const status = JSON.parse(r.stdout) as { sessions?: Record<string, { username?: string; remote_machine?: string }>; tcons?: Record<string, { service?: string; session_id?: string; machine?: string }> };
      for (const tcon of Object.values(status.tcons ?? {})) {
        if (!tcon.service) continue;
        const session = Object.entries(status.sessions ?? {}).find(([id]) => id === tcon.session_id)?.[1];
        const who = `${session?.username ?? '?'}@${tcon.machine ?? session?.remote_machine ?? '?'}`;
        found.set(tcon.service, [...(found.get(tcon.service) ?? []), who]);
      }
    } catch {
      // an smbstatus we cannot read: no connections shown
    }
    return found;
  }

  // ---- Samba users ----

  private async sambaUsers(): Promise<string[]> {
    const r = await this.run('pdbedit', ['-s', this.config.sambaConfig, '-L']);
    if (r.code === 127) usage('share: Samba is not installed (pdbedit not found)');
    if (r.code !== 0) throw new TierfsError('IO', `pdbedit -L failed: ${lastLine(r)}`);
    return r.stdout.split('\n').filter((l) => l.includes(':')).map((l) => l.slice(0, l.indexOf(':')));
  }

  async users(): Promise<{ name: string; shares: string[] }[]> {
    const shares = this.fileSystem.shares();
    return (await this.sambaUsers()).sort().map((name) => ({ name, shares: shares.filter((s) => s.smb?.users.includes(name)).map((s) => s.name) }));
  }

  /** Add a Samba user (or set the password of one); the Unix account is made when missing. */
  async addUser(name: string, password: string): Promise<{ name: string; accountCreated: boolean; passwordChanged: boolean }> {
    return this.serial(async () => {
      if (!userNamePattern.test(name)) usage(`share user: ${JSON.stringify(name)} is not a valid user name (lower-case letters, digits, "_" and "-", 1-32, not starting with a digit or "-")`);
      if (password.length === 0 || password.length > 127 || /[\n\r\0]/.test(password)) usage('share user: the password must be 1-127 characters on one line');
      const existing = await this.sambaUsers();
      let accountCreated = false;
      if ((await this.run('getent', ['passwd', name])).code !== 0) {
        const made = await this.run('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--comment', accountComment, name]);
        if (made.code !== 0) throw new TierfsError('IO', `share user: useradd ${name} failed: ${lastLine(made)}`);
        accountCreated = true;
      }
      const r = await this.run('smbpasswd', ['-c', this.config.sambaConfig, '-a', '-s', name], `${password}\n${password}\n`);
      if (r.code !== 0) {
        if (accountCreated) await this.run('userdel', [name]);
        throw new TierfsError('IO', `share user: smbpasswd failed: ${lastLine(r)}`);
      }
      return { name, accountCreated, passwordChanged: existing.includes(name) };
    });
  }

  async removeUser(name: string): Promise<{ name: string; accountRemoved: boolean }> {
    return this.serial(async () => {
      if (!(await this.sambaUsers()).includes(name)) throw new TierfsError('NOT_FOUND', `no Samba user ${name} (tierfs share user list)`);
      const using = this.fileSystem.shares().filter((s) => s.smb?.users.includes(name));
      if (using.length > 0) usage(`share user: ${name} is named by share ${using.map((s) => s.name).join(', ')} (tierfs share edit NAME --users ...)`);
      const r = await this.run('smbpasswd', ['-c', this.config.sambaConfig, '-x', name]);
      if (r.code !== 0) throw new TierfsError('IO', `share user: smbpasswd -x failed: ${lastLine(r)}`);
      const entry = await this.run('getent', ['passwd', name]);
      const ours = entry.code === 0 && entry.stdout.split(':')[4] === accountComment;
      if (ours) {
        const gone = await this.run('userdel', [name]);
        if (gone.code !== 0) log.warn('share user: userdel failed', { user: name, error: lastLine(gone) });
      }
      return { name, accountRemoved: ours };
    });
  }
}
