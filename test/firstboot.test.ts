// First boot of the appliance: NVMe discovery against fake sysfs trees (AWS
// and Azure), and the whole first boot against a fake tree whose namespace is
// a file — including bad settings and a disk holding data, which must leave
// everything as it was.
import t from 'tap';
import type { Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chooseFlashNamespace, discoverNvme } from '../src/device/nvme';
import { firstboot, parseSettings } from '../src/daemon/firstboot';
import { formatFlashPath, openFileSystem, ROOT_CREDENTIALS, ROOT_INO } from '../src/fs/fs';
import { runCli } from './helpers/daemon';
import { scratchDir } from './helpers/fs';

const GiB = 2 ** 30;

interface FakeNamespace {
  name: string;
  model: string;
  sizeBytes: number;
  dev: string;
  partitions?: { name: string; dev: string }[];
  holders?: string[];
}

/** A sysfs tree, a mountinfo and a /dev with a sparse file per namespace. */
function fakeMachine(t: Test, namespaces: FakeNamespace[], mounts: [string, string][], flashFileBytes = 256 * 2 ** 20) {
  const root = scratchDir(t);
  const sys = path.join(root, 'sys');
  const dev = path.join(root, 'dev');
  fs.mkdirSync(path.join(sys, 'block', 'sda'), { recursive: true }); // not NVMe: ignored
  fs.mkdirSync(dev);
  for (const n of namespaces) {
    const dir = path.join(sys, 'block', n.name);
    fs.mkdirSync(path.join(dir, 'device'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'holders'));
    fs.writeFileSync(path.join(dir, 'size'), `${n.sizeBytes / 512}\n`);
    fs.writeFileSync(path.join(dir, 'dev'), `${n.dev}\n`);
    fs.writeFileSync(path.join(dir, 'device', 'model'), `${n.model.padEnd(40)}\n`);
    fs.writeFileSync(path.join(dir, 'device', 'serial'), `SN-${n.name}\n`);
    for (const holder of n.holders ?? []) fs.mkdirSync(path.join(dir, 'holders', holder));
    for (const p of n.partitions ?? []) {
      fs.mkdirSync(path.join(dir, p.name));
      fs.writeFileSync(path.join(dir, p.name, 'dev'), `${p.dev}\n`);
    }
    const file = path.join(dev, n.name);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, flashFileBytes);
  }
  const mountinfo = path.join(root, 'mountinfo');
  fs.writeFileSync(mountinfo, mounts.map(([device, at], i) => `${20 + i} 1 ${device} / ${at} rw,relatime shared:1 - ext4 /dev/x rw\n`).join(''));
  const swaps = path.join(root, 'swaps');
  fs.writeFileSync(swaps, 'Filename Type Size Used Priority\n');
  return { root, sys, dev, mountinfo, swaps, discover: { sysRoot: sys, mountinfo, swaps, devDir: dev } };
}

const aws: FakeNamespace[] = [
  { name: 'nvme0n1', model: 'Amazon Elastic Block Store', sizeBytes: 8 * GiB, dev: '259:0', partitions: [{ name: 'nvme0n1p1', dev: '259:1' }] },
  { name: 'nvme1n1', model: 'Amazon EC2 NVMe Instance Storage', sizeBytes: 1900 * GiB, dev: '259:2' },
  { name: 'nvme2n1', model: 'Amazon EC2 NVMe Instance Storage', sizeBytes: 1900 * GiB, dev: '259:3', holders: ['md0'] },
  { name: 'nvme3n1', model: 'Amazon Elastic Block Store', sizeBytes: 4000 * GiB, dev: '259:4' },
  { name: 'nvme4n1', model: 'Amazon Elastic Block Store', sizeBytes: 100 * GiB, dev: '259:5' },
];

t.test('discovery on an AWS instance: the root volume and busy disks are skipped, instance storage is preferred', async (t) => {
  const m = fakeMachine(t, aws, [['259:1', '/'], ['259:5', '/data']]);
  const found = discoverNvme(m.discover);
  t.same(found.map((n) => n.name), ['nvme3n1', 'nvme1n1', 'nvme2n1', 'nvme4n1', 'nvme0n1'], 'largest first');
  const by = Object.fromEntries(found.map((n) => [n.name, n]));
  t.match(by.nvme0n1, { kind: 'network-volume', inUse: 'holds the root file system (nvme0n1p1)', sizeBytes: 8 * GiB, model: 'Amazon Elastic Block Store', serial: 'SN-nvme0n1' });
  t.match(by.nvme1n1, { kind: 'instance-store', inUse: null, devicePath: path.join(m.dev, 'nvme1n1') });
  t.match(by.nvme2n1, { inUse: 'nvme2n1 is held by md0' });
  t.match(by.nvme3n1, { kind: 'network-volume', inUse: null });
  t.match(by.nvme4n1, { inUse: 'nvme4n1 is mounted at /data' });
  t.equal(chooseFlashNamespace(found)?.name, 'nvme1n1', 'instance storage beats a larger EBS volume');
  t.equal(chooseFlashNamespace(found.filter((n) => n.kind !== 'instance-store'))?.name, 'nvme3n1', 'without instance storage, a free volume');
});

t.test('discovery on Azure, on a machine with no NVMe, and with swap', async (t) => {
  const azure = fakeMachine(
    t,
    [
      { name: 'nvme0n1', model: 'MSFT NVMe Accelerator v1.0', sizeBytes: 30 * GiB, dev: '259:0', partitions: [{ name: 'nvme0n1p1', dev: '259:1' }] },
      { name: 'nvme1n1', model: 'Microsoft NVMe Direct Disk v2', sizeBytes: 440 * GiB, dev: '259:2' },
      { name: 'nvme2n1', model: 'QEMU NVMe Ctrl', sizeBytes: 100 * GiB, dev: '259:3' },
    ],
    [['259:1', '/']],
  );
  fs.writeFileSync(azure.swaps, 'Filename Type Size Used Priority\n/dev/nvme2n1 partition 1000 0 -2\n');
  const found = discoverNvme(azure.discover);
  t.match(found, [{ name: 'nvme1n1', kind: 'instance-store', inUse: null }, { name: 'nvme2n1', kind: 'local', inUse: 'nvme2n1 is swap' }, { name: 'nvme0n1', kind: 'network-volume' }]);
  t.equal(chooseFlashNamespace(found)?.name, 'nvme1n1');
  const none = fakeMachine(t, [], []);
  t.same(discoverNvme(none.discover), []);
  t.equal(chooseFlashNamespace([]), undefined);
  t.same(discoverNvme({ sysRoot: path.join(none.root, 'missing') }), [], 'no sysfs: nothing');
});

/** getent and groupadd that record their calls instead of changing this machine's groups. */
function fakeGroupTools(t: Test): Record<string, string> {
  const bin = scratchDir(t);
  const log = path.join(bin, 'calls');
  fs.writeFileSync(path.join(bin, 'getent'), `#!/bin/sh\necho "getent $*" >> ${log}\nexit 2\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'groupadd'), `#!/bin/sh\necho "groupadd $*" >> ${log}\n`, { mode: 0o755 });
  return { PATH: `${bin}:${process.env.PATH}`, TIERFS_TEST_GROUP_CALLS: log };
}

function paths(m: ReturnType<typeof fakeMachine>) {
  return {
    confFile: path.join(m.root, 'etc', 'tierfs.conf'),
    userDataFile: path.join(m.root, 'user-data.txt'),
    configFile: path.join(m.root, 'etc', 'tierfs.json'),
    stateDir: path.join(m.root, 'state'),
    discover: m.discover,
  };
}

t.test('first boot: settings merged, the instance-store disk formatted, the config written, once', async (t) => {
  const m = fakeMachine(t, aws, [['259:1', '/']]);
  const p = paths(m);
  const objects = path.join(m.root, 'objects');
  fs.mkdirSync(path.dirname(p.confFile));
  fs.writeFileSync(p.confFile, JSON.stringify({ coolAfter: '1d', compress: true, mount: path.join(m.root, 'mnt') }));
  const shares = [{ name: 'projects', path: '/projects/', nfs: ['10.1.0.0/16'], smb: true }, { name: 'pub', path: '/pub', smb: true, readOnly: true }];
  fs.writeFileSync(p.userDataFile, JSON.stringify({ tierfs: { target: `file://${objects}`, coolAfter: '2h', watermarkHighPercent: 85, watermarkLowPercent: 70, shares } }));
  let groups = 0;
  const probed: string[] = [];
  const result = await firstboot(p, { probeTarget: async (url) => void probed.push(url), ensureGroup: () => void (groups += 1) });
  t.match(result, { flash: path.join(m.dev, 'nvme1n1'), formatted: true, namespace: { name: 'nvme1n1' } });
  t.same(probed, [`file://${objects}`], 'the target was probed first');
  t.equal(groups, 1, 'the group was made sure of');
  const config = JSON.parse(fs.readFileSync(p.configFile, 'utf8'));
  t.same(config, {
    flash: path.join(m.dev, 'nvme1n1'),
    meta: path.join(p.stateDir, 'meta'),
    mount: path.join(m.root, 'mnt'),
    target: `file://${objects}`,
    adminSocket: '/run/tierfs/admin.sock',
    allowOther: true,
    manageShareServers: true,
    compress: true,
    watermarkHighPercent: 85,
    watermarkLowPercent: 70,
    coolAfter: '2h',
    initialShares: path.join(p.stateDir, 'initial-shares.json'),
  }, 'user data wins over the config file');
  t.same(JSON.parse(fs.readFileSync(config.initialShares, 'utf8')), [{ ...shares[0], path: '/projects' }, shares[1]], 'the shares, for tierfsd\'s first start');
  t.ok(fs.existsSync(path.join(m.root, 'mnt')), 'the mount point exists');
  t.match(fs.readFileSync(path.join(p.stateDir, 'firstboot.done'), 'utf8'), /nvme1n1/);
  t.equal(fs.readFileSync(path.join(m.dev, 'nvme1n1')).subarray(0, 8).toString('latin1').replace(/\0/g, '') !== '', true, 'a superblock was written');
  await t.rejects(firstboot(p, { probeTarget: async () => undefined, ensureGroup: () => undefined }), /first boot already done/);
  // Cut short after the format (no marker): the file system is kept.
  fs.rmSync(path.join(p.stateDir, 'firstboot.done'));
  const again = await firstboot(p, { probeTarget: async () => undefined, ensureGroup: () => undefined });
  t.equal(again.formatted, false, 'not formatted a second time');
});

t.test('first boot refuses bad settings, busy disks and disks holding data, and changes nothing', async (t) => {
  const m = fakeMachine(t, aws, [['259:1', '/']]);
  const p = paths(m);
  const digest = () => crypto.createHash('sha256').update(fs.readFileSync(path.join(m.dev, 'nvme1n1'))).digest('hex');
  const before = digest();
  const cli = (extra: string[] = [], machine = m) =>
    runCli(
      ['firstboot', '--conf', p.confFile, '--user-data', p.userDataFile, '--config', p.configFile, '--state', p.stateDir, '--sys', machine.sys, '--mountinfo', machine.mountinfo, '--dev', machine.dev, ...extra],
      fakeGroupTools(t),
    );
  const cases: [string, number, RegExp][] = [
    ['{"tierfs": {"target": ', 2, /user data .*: not JSON/],
    ['{"tierfs": {"taget": "s3://b/p"}}', 2, /unknown setting "taget"/],
    ['{"tierfs": {"target": "gopher://x"}}', 2, /scheme gopher: is not supported/],
    ['{"tierfs": {"watermarkHighPercent": 50, "watermarkLowPercent": 60}}', 2, /low watermark \(60%\) must be below the high one/],
    ['{"tierfs": {"flashDevice": "dev/nvme1n1"}}', 2, /flashDevice must be an absolute path/],
    ['{"tierfs": {"compress": "yes"}}', 2, /"compress" must be a boolean/],
    ['{"tierfs": {"coolAfter": "soon"}}', 2, /is not a duration/],
    ['{"tierfs": {"metrics": "0.0.0.0:9464"}}', 2, /loopback only/],
    ['{"tierfs": {"target": "s3://tierfs-test/p?endpoint=http://127.0.0.1:9"}}', 2, /cannot store objects there/],
    ['[1, 2]', 2, /expected a JSON object of tierfs settings/],
    ['{"tierfs": {"shares": {"name": "x"}}}', 2, /shares: expected a list of shares/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x", "nfs": ["10.0.0.1/8"]}]}}', 2, /shares: x: "10\.0\.0\.1\/8" has host bits set/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x", "nfs": ["0.0.0.0/0"]}]}}', 2, /shares: x: .*needs --allow-world/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "x"}]}}', 2, /shares: x: path "x" must be absolute/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/a/../b", "smb": true}]}}', 2, /without "\." or "\.\." segments/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x", "smb": true, "users": ["alice"]}]}}', 2, /Samba users are added on the appliance/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x", "smb": "yes"}]}}', 2, /"smb" must be a boolean/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x", "smb": true}, {"name": "X", "path": "/y", "smb": true}]}}', 2, /two shares named X/],
    ['{"tierfs": {"shares": [{"name": "x", "path": "/x"}]}}', 2, /give --nfs CIDR/],
    [`{"tierfs": {"flashDevice": "${path.join(m.dev, 'nvme9n1')}"}}`, 1, /flash device .*nvme9n1 does not exist/],
  ];
  for (const [userData, status, message] of cases) {
    fs.writeFileSync(p.userDataFile, userData);
    const result = cli();
    t.equal(result.status, status, `${userData}: ${result.stderr}`);
    t.match(result.stderr, message, userData);
    t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
  }
  // A disk that holds data is refused.
  fs.writeFileSync(p.userDataFile, '#cloud-config\nwrite_files: []\n'); // cloud-init's, not ours
  const fd = fs.openSync(path.join(m.dev, 'nvme1n1'), 'r+');
  fs.writeSync(fd, Buffer.from('an ext4 file system, say'), 0, 24, 1024);
  fs.closeSync(fd);
  const holding = digest();
  const refused = cli();
  t.equal(refused.status, 1);
  t.match(refused.stderr, /nvme1n1 holds data that is not tierfs/);
  t.equal(digest(), holding, 'the disk is untouched');
  // No free namespace.
  const busy = fakeMachine(t, aws.slice(0, 1), [['259:1', '/']]);
  const none = cli([], busy);
  t.equal(none.status, 1);
  t.match(none.stderr, /no free NVMe namespace for the flash tier: nvme0n1 \(Amazon Elastic Block Store\): holds the root file system/);
  t.notOk(fs.existsSync(p.configFile), 'no config written');
  t.notOk(fs.existsSync(path.join(p.stateDir, 'firstboot.done')), 'not marked done');
  t.notOk(fs.existsSync(path.join(p.stateDir, 'meta', 'tierfs.db')), 'no metadata');
  t.not(before, holding);
  t.throws(() => parseSettings({ prices: { storagePerGiBMonth: -1 } }, 'x'), /prices.storagePerGiBMonth/);
});

t.test('first boot through the CLI, end to end', async (t) => {
  const m = fakeMachine(t, aws, [['259:1', '/']]);
  const p = paths(m);
  const tools = fakeGroupTools(t);
  fs.writeFileSync(p.userDataFile, JSON.stringify({ tierfs: { target: `file://${path.join(m.root, 'objects')}`, mount: path.join(m.root, 'mnt') } }));
  const result = runCli(['firstboot', '--user-data', p.userDataFile, '--conf', p.confFile, '--config', p.configFile, '--state', p.stateDir, '--sys', m.sys, '--mountinfo', m.mountinfo, '--dev', m.dev], tools);
  t.equal(result.status, 0, result.stderr);
  t.match(result.stdout, /^first boot done: flash tier .*nvme1n1 \(Amazon EC2 NVMe Instance Storage, 1900\.0 GiB\) formatted, target file:\/\/.*, mount .*mnt, config .*tierfs\.json$/m);
  t.same(fs.readFileSync(tools.TIERFS_TEST_GROUP_CALLS, 'utf8').trim().split('\n'), ['getent group tierfs', 'groupadd --system tierfs']);
  const again = runCli(['firstboot', '--user-data', p.userDataFile, '--conf', p.confFile, '--config', p.configFile, '--state', p.stateDir, '--sys', m.sys, '--mountinfo', m.mountinfo, '--dev', m.dev], tools);
  t.equal(again.status, 1);
  t.match(again.stderr, /first boot already done/);
});

t.test('first boot on a replaced instance: the target already holds the file system, so it is restored, not formatted', async (t) => {
  // The first appliance: a file system replicated to the target, then gone.
  const objects = path.join(scratchDir(t), 'objects');
  const url = `file://${objects}`;
  const old = scratchDir(t);
  await formatFlashPath(path.join(old, 'flash'), path.join(old, 'meta'), { sizeBytes: 64 * 2 ** 20, target: url });
  const opened = await openFileSystem(path.join(old, 'flash'), path.join(old, 'meta'), {
    commitIntervalMs: 0,
    tier: { scanIntervalMs: 0, replication: { rpoMs: 1000, retentionMs: 86_400_000, snapshotLogBytes: 2 ** 26, snapshotIntervalMs: 86_400_000 } },
  });
  const { attr, fh } = await opened.fs.create(ROOT_INO, 'kept', 0o644, 2, ROOT_CREDENTIALS);
  await opened.fs.write(fh, 0, Buffer.from('from the old instance'));
  await opened.fs.release(fh);
  await opened.tier!.destage({ ino: attr.ino });
  await opened.tier!.flushReplication();
  const uuid = opened.tier!.fsUuid;
  await opened.close();

  // A new instance, its user data naming the same target: restore.
  const m = fakeMachine(t, aws, [['259:1', '/']]);
  const p = paths(m);
  fs.writeFileSync(p.userDataFile, JSON.stringify({ tierfs: { target: url, mount: path.join(m.root, 'mnt') } }));
  const result = await firstboot(p, { probeTarget: async () => undefined, ensureGroup: () => undefined });
  t.match(result, { formatted: false, restored: uuid }, 'restored instead of formatted');
  const served = await openFileSystem(result.flash, path.join(p.stateDir, 'meta'), { commitIntervalMs: 0, tier: { scanIntervalMs: 0 } });
  t.teardown(() => served.close().catch(() => undefined));
  const ino = (await served.fs.lookup(ROOT_INO, 'kept', ROOT_CREDENTIALS)).ino;
  const rh = await served.fs.open(ino, 0, ROOT_CREDENTIALS);
  t.equal((await served.fs.read(rh, 0, 100)).toString(), 'from the old instance', 'its data reads back from the bucket');
  await served.fs.release(rh);
  await served.close();

  // "restore": false on another new instance: refused, nothing formatted.
  const n = fakeMachine(t, aws, [['259:1', '/']]);
  const q = paths(n);
  fs.writeFileSync(q.userDataFile, JSON.stringify({ tierfs: { target: url, restore: false } }));
  await t.rejects(firstboot(q, { probeTarget: async () => undefined, ensureGroup: () => undefined }), /already holds file system .* "restore" is false/);
  t.notOk(fs.existsSync(path.join(q.stateDir, 'meta', 'tierfs.db')), 'nothing formatted');
});
