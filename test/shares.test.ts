// Network shares for real: smbd started here on a loopback port with its own
// configuration, tierfsd managing its include file and its own exports file,
// smbclient writing, listing, renaming and reading back a large and a cold
// (released) file byte-identical, a wrong password and a user the share does
// not name refused, a read-only share refusing writes, DOS attributes in
// xattrs.  `tierfs share` bad input of every kind: one line, exit 2, both
// files byte-identical.  Shares withdrawn at stop and back at start.  The
// kernel NFS server is not on build machines: the exports file is checked
// here and NFS runs for real in the boot test.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseCidr, renderExports, ShareManager, type CommandRunner } from '../src/daemon/shares';
import { ROOT_CREDENTIALS as ROOT, ROOT_INO } from '../src/fs/fs';
import { cliJson as json, formatWithTarget, runCli, serve } from './helpers/daemon';
import { formatScratch, openScratch, scratchDir } from './helpers/fs';
import { freePort, stopChild } from './helpers/object_servers';

const MiB = 2 ** 20;

t.test('CIDRs: canonical forms, and each mistake refused', async (t) => {
  t.same(parseCidr('10.0.0.0/8'), { cidr: '10.0.0.0/8', world: false });
  t.same(parseCidr('192.168.1.7'), { cidr: '192.168.1.7/32', world: false });
  t.same(parseCidr('0.0.0.0/0'), { cidr: '0.0.0.0/0', world: true });
  t.same(parseCidr('2001:DB8:0:0::/32'), { cidr: '2001:db8::/32', world: false });
  t.same(parseCidr('fe80::1'), { cidr: 'fe80::1/128', world: false });
  t.same(parseCidr('::ffff:10.0.0.0/104'), { cidr: '::ffff:a00:0/104', world: false });
  t.same(parseCidr('::/0'), { cidr: '::/0', world: true });
  for (const [bad, message] of [
    ['10.0.0.0/8/1', /is not a CIDR/], ['10.0.0.256', /is not a CIDR/], ['host.example', /is not a CIDR/], ['10.0.0.0/', /prefix length/],
    ['10.0.0.0/-1', /prefix length/], ['2001:db8::/129', /0 to 128/], ['2001:db8::1/32', /host bits set \(the network is 2001:db8::\/32\)/],
  ] as const)
    t.throws(() => parseCidr(bad), { code: 'USAGE', message }, bad);
});

t.test('the exports file: escaped paths, one fsid per export, only available NFS shares', async (t) => {
  const share = (name: string, p: string, available: boolean) => ({
    name, path: p, readOnly: name === 'b', nfs: { clients: ['10.0.0.0/8'], rootSquash: name !== 'b' }, smb: null, allowWorld: false, createdMs: 0,
    exportPath: `/mnt/tier fs${p}`, available, smbConnections: [],
  });
  const text = renderExports([share('a', '/with space', true), share('b', '/plain', true), share('c', '/gone', false)], 'f00d', '/mnt/tier fs');
  t.match(text, /^\/mnt\/tier\\040fs\/with\\040space 10\.0\.0\.0\/8\(rw,sync,no_subtree_check,root_squash,sec=sys,fsid=([0-9a-f-]{36}),mountpoint=\/mnt\/tier\\040fs\)$/m);
  t.match(text, /^\/mnt\/tier\\040fs\/plain 10\.0\.0\.0\/8\(ro,sync,no_subtree_check,no_root_squash,/m);
  const fsids = [...text.matchAll(/fsid=([0-9a-f-]+)/g)].map((m) => m[1]);
  t.equal(new Set(fsids).size, 2, 'an fsid per export');
  t.notMatch(text, /gone/, 'a share whose directory is gone is left out');
});

t.test('the share manager: refused without allowOther; exportfs -r where an NFS server runs', async (t) => {
  const opened = await openScratch(t, await formatScratch(t));
  await opened.fs.mkdir(ROOT_INO, 'data', 0o755, ROOT);
  const dir = scratchDir(t);
  fs.mkdirSync(path.join(dir, 'nfsd'));
  fs.writeFileSync(path.join(dir, 'nfsd', 'threads'), '8\n');
  const ran: string[] = [];
  const run: CommandRunner = async (command, args) => {
    ran.push([command, ...args].join(' '));
    return command === 'smbcontrol' ? { code: 127, stdout: '', stderr: '' } : { code: 0, stdout: '', stderr: '' };
  };
  const config = { exportsFile: path.join(dir, 'tierfs.exports'), sambaInclude: path.join(dir, 'samba', 'tierfs-shares.conf'), sambaConfig: '/dev/null', nfsdDir: path.join(dir, 'nfsd') };
  const closed = new ShareManager(opened.fs, '/mnt/t', { config, allowOther: false, run });
  await t.rejects(closed.add({ name: 'data', path: '/mnt/t/data', nfs: ['10.0.0.0/8'] }), { code: 'USAGE', message: /mounted without allowOther/ });
  t.notOk(fs.existsSync(config.exportsFile), 'nothing written');
  t.same(opened.fs.shares(), []);

  const manager = new ShareManager(opened.fs, '/mnt/t', { config, allowOther: true, run });
  const added = await manager.add({ name: 'data', path: '/mnt/t/data', nfs: ['10.0.0.0/8'] });
  t.same(added.warnings, []);
  t.same(ran, ['exportfs -r'], 'the exports file written, then exportfs -r (Samba, with no SMB share, is not asked anything)');
  t.match(fs.readFileSync(config.exportsFile, 'utf8'), /^\/mnt\/t\/data 10\.0\.0\.0\/8\(rw,/m);
  t.match((await manager.list()).nfs, { served: true, detail: 'exported by the kernel NFS server' });
  // An SMB share where Samba is missing: refused before anything changes (its directory is not there).
  await t.rejects(manager.add({ name: 'win', path: '/mnt/t/data', smb: true }), { code: 'USAGE', message: /samba does not exist: install Samba/ });
  t.same(opened.fs.shares().map((s) => s.name), ['data']);
  // Shares first boot asked for: their directories made (writable ones sticky and open to all), added once, the file gone.
  const initial = path.join(dir, 'initial-shares.json');
  fs.writeFileSync(initial, JSON.stringify([{ name: 'team', path: '/team/docs', nfs: ['192.168.0.0/16'] }, { name: 'data2', path: '/data', smb: true }, { name: 'bad', path: '/bad', nfs: ['10.0.0.1/8'] }]));
  const fresh = new ShareManager(opened.fs, '/mnt/t', { config: { ...config, sambaInclude: path.join(dir, 'tierfs-shares.conf') }, allowOther: true, run });
  await fresh.start(initial);
  t.same(opened.fs.shares().map((s) => s.name), ['data', 'data2', 'team'], 'added; a bad entry (host bits) refused, the rest kept');
  t.equal(opened.fs.resolvePath('/team/docs').mode, 0o41777, 'made, sticky and writable');
  t.notOk(fs.existsSync(initial), 'added once: the file is gone');
  // The appliance: the firewall applied first (checked by nft itself where it is installed), then the servers started.
  const inputs: string[] = [];
  const applianceRun: CommandRunner = async (command, args, input) => {
    if (command === 'nft') inputs.push(input ?? '');
    return run(command, args, input);
  };
  ran.length = 0;
  const appliance = new ShareManager(opened.fs, '/mnt/t', { config: { ...config, sambaInclude: path.join(dir, 'tierfs-shares.conf'), manageServers: true }, allowOther: true, run: applianceRun });
  await appliance.remove('data2');
  t.equal(ran[0], 'nft -f -', 'the firewall first');
  t.ok(ran.includes('exportfs -r') && !ran.some((c) => c.startsWith('systemctl')), 'nfsd runs already (threads > 0): not started again; exports reloaded');
  t.match(inputs[0], /^table inet tierfs_shares\ndelete table inet tierfs_shares\ntable inet tierfs_shares \{\n  set nfs_v4 \{ type ipv4_addr; flags interval; elements = \{ 10\.0\.0\.0\/8, 192\.168\.0\.0\/16 \} \}/);
  t.match(inputs[0], /    tcp dport 445 drop\n/, 'no SMB share left: 445 closed too');
  if (spawnSync('nft', ['--version']).status === 0) {
    const checked = spawnSync('nft', ['-c', '-f', '-'], { input: inputs[0], encoding: 'utf8' });
    t.equal(checked.status, 0, `nft -c accepts the ruleset: ${checked.stderr}`);
  }
  ran.length = 0;
  await appliance.remove('team');
  await appliance.remove('data');
  t.same(ran.filter((c) => c.startsWith('systemctl')), ['systemctl stop nfs-server.service rpcbind.socket rpcbind.service'], 'the last NFS share removed: the NFS server stopped');
  fs.writeFileSync(path.join(dir, 'nfsd', 'threads'), '0\n'); // stopped
  ran.length = 0;
  const starting: CommandRunner = async (command, args, input) => {
    if (command === 'systemctl') fs.writeFileSync(path.join(dir, 'nfsd', 'threads'), '8\n'); // the unit starts nfsd's threads
    return applianceRun(command, args, input);
  };
  const again = new ShareManager(opened.fs, '/mnt/t', { config: { ...config, sambaInclude: path.join(dir, 'tierfs-shares.conf'), manageServers: true }, allowOther: true, run: starting });
  await again.add({ name: 'again', path: '/mnt/t/data', nfs: ['10.0.0.0/8'] });
  t.same(ran.filter((c) => c.startsWith('systemctl') || c.startsWith('exportfs')), ['systemctl start nfs-server.service', 'exportfs -r'], 'the first NFS share: the server started, then the exports');
  ran.length = 0;
  await again.withdraw();
  t.same(ran.filter((c) => c.startsWith('systemctl') || c.startsWith('exportfs')), ['exportfs -r', 'systemctl stop nfs-server.service'], 'before the unmount: unexported, and the NFS server stopped (its v4 opens hold files of the mount)');
  ran.length = 0;
  await manager.withdraw();
  t.equal(fs.readFileSync(config.exportsFile, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#')).length, 0, 'withdrawn: no export left');
  t.notOk(ran.some((c) => c.startsWith('systemctl')), 'a daemon that does not run the servers leaves them alone');
});

if (process.getuid?.() !== 0) {
  t.comment('network shares: needs root (smbd, Unix accounts for Samba users); CI runs as root');
} else {
  t.test('SMB shares through smbd, managed by tierfs share', async (t) => {
    const dir = scratchDir(t, 'tierfs-shares-');
    const samba = path.join(dir, 'samba');
    for (const sub of ['lock', 'state', 'cache', 'private', 'pid', 'ncalrpc']) fs.mkdirSync(path.join(samba, sub), { recursive: true });
    fs.mkdirSync(path.join(dir, 'exports.d'));
    const include = path.join(samba, 'tierfs-shares.conf');
    const exportsFile = path.join(dir, 'exports.d', 'tierfs.exports');
    const smbConf = path.join(samba, 'smb.conf');
    const port = await freePort();
    fs.writeFileSync(
      smbConf,
      [
        '[global]',
        `  smb ports = ${port}`,
        '  interfaces = 127.0.0.1',
        '  bind interfaces only = yes',
        '  server role = standalone server',
        '  server min protocol = SMB3',
        '  server smb encrypt = required',
        '  map to guest = never',
        '  restrict anonymous = 2',
        ...['lock', 'state', 'cache', 'pid', 'ncalrpc'].map((d) => `  ${d === 'lock' ? 'lock directory' : d === 'state' ? 'state directory' : d === 'cache' ? 'cache directory' : d === 'pid' ? 'pid directory' : 'ncalrpc dir'} = ${samba}/${d}`),
        `  private dir = ${samba}/private`,
        `  passdb backend = tdbsam:${samba}/private/passdb.tdb`,
        `  log file = ${samba}/log.%m`,
        '  load printers = no',
        '  printing = bsd',
        '  printcap name = /dev/null',
        '  disable spoolss = yes',
        `  include = ${include}`,
        '',
      ].join('\n'),
    );
    // In a process group of its own: smbd signals its whole group when it stops (and so would end this test).
    const smbd = spawn('smbd', ['--foreground', '--no-process-group', '--debug-stdout', '-s', smbConf], { stdio: ['ignore', 'ignore', 'ignore'], detached: true });
    t.teardown(async () => {
      await stopChild(smbd);
      // Its children (one per connection, notifyd, cleanupd) are in its group: any left over go with it.
      try {
        process.kill(-smbd.pid!, 'SIGKILL');
      } catch {
        // the group is gone already
      }
    });
    for (const deadline = Date.now() + 20_000; spawnSync('smbcontrol', ['-s', smbConf, 'smbd', 'ping']).status !== 0; ) {
      if (Date.now() > deadline || smbd.exitCode !== null) throw new Error('smbd did not start');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    const objects = path.join(dir, 'objects');
    const scratch = await formatWithTarget(t, `file://${objects}`);
    const mount = path.join(scratch.dir, 'mnt');
    fs.chmodSync(scratch.dir, 0o755); // smbd reaches the mount as the client's user
    const socket = path.join(scratch.dir, 'admin.sock');
    const config = path.join(dir, 'tierfs.json');
    fs.writeFileSync(config, JSON.stringify({ flash: scratch.flash, meta: scratch.meta, mount, adminSocket: socket, exportsFile, sambaInclude: include, sambaConfig: smbConf }));
    let served = await serve(t, scratch, mount, ['--config', config]);
    const env = { TIERFS_SOCKET: socket };
    const cli = (...args: string[]) => runCli(args, env);
    const cliWithInput = (input: string, ...args: string[]) => {
      const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'bin', 'tierfs.js'), ...args], { input, encoding: 'utf8', env: { ...process.env, ...env } });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };

    // Samba users (Unix accounts made for them, removed at the end).
    const alice = `tfs${process.pid % 100000}a`;
    const bob = `tfs${process.pid % 100000}b`;
    t.teardown(() => {
      for (const user of [alice, bob]) {
        spawnSync('smbpasswd', ['-c', smbConf, '-x', user]);
        spawnSync('userdel', [user]);
      }
    });
    const added = cliWithInput('alice-secret\n', 'share', 'user', 'add', alice, '--password-stdin');
    t.equal(added.status, 0, added.stderr);
    t.match(added.stdout, `Samba user ${alice} added (with a Unix account without login)`);
    t.equal(cliWithInput('bob-secret\n', 'share', 'user', 'add', bob).status, 0, 'stdin not a terminal: one line read');
    t.match(json(cli('share', 'user', 'list', '--json')), [{ name: alice, shares: [] }, { name: bob, shares: [] }]);
    t.equal(spawnSync('getent', ['passwd', alice], { encoding: 'utf8' }).stdout.split(':')[6]?.trim(), '/usr/sbin/nologin');

    for (const d of ['proj', 'readonly']) {
      fs.mkdirSync(path.join(mount, d));
      fs.chmodSync(path.join(mount, d), 0o777);
    }
    fs.writeFileSync(path.join(mount, 'plain-file'), 'x');

    const add = cli('share', 'add', 'proj', path.join(mount, 'proj'), '--smb', '--users', alice, '--nfs', '10.0.0.0/8,192.168.1.7');
    t.equal(add.status, 0, add.stderr);
    t.match(add.stderr, /warning: NFS: not served: no NFS server runs on this machine/, 'NFS unavailable here: said, not hidden');
    t.equal(cli('share', 'add', 'readonly', path.join(mount, 'readonly'), '--smb', '--ro').status, 0);
    const includeText = fs.readFileSync(include, 'utf8');
    t.match(includeText, new RegExp(`\\[proj\\]\\n   comment = tierfs share proj\\n   path = ${mount}/proj\\n   read only = no\\n   guest ok = no\\n   server smb encrypt = required\\n   valid users = ${alice}\\n`));
    t.match(includeText, /   oplocks = no\n   level2 oplocks = no/, 'shared over NFS too: no oplocks');
    t.match(includeText, /\[readonly\]\n(.*\n)*   read only = yes/);
    const exportsText = fs.readFileSync(exportsFile, 'utf8');
    t.match(exportsText, new RegExp(`^${mount}/proj 10\\.0\\.0\\.0/8\\(rw,sync,no_subtree_check,root_squash,sec=sys,fsid=[0-9a-f-]{36},mountpoint=${mount}\\) 192\\.168\\.1\\.7/32\\(`, 'm'));
    t.notMatch(exportsText, /readonly/, 'an SMB-only share is not exported over NFS');

    const smbclient = (user: string, password: string, share: string, commands: string) =>
      spawnSync('smbclient', [`//127.0.0.1/${share}`, '-p', String(port), '-U', `${user}%${password}`, '-m', 'SMB3', '--option=client min protocol=SMB3', '--client-protection=encrypt', '-c', commands], { encoding: 'utf8', timeout: 120_000 });

    t.test('smbclient writes, lists, renames and reads back', async (t) => {
      const local = path.join(dir, 'local');
      fs.mkdirSync(local);
      const big = crypto.randomBytes(24 * MiB);
      fs.writeFileSync(path.join(local, 'big.bin'), big);
      const r = smbclient(alice, 'alice-secret', 'proj', `put ${local}/big.bin big.bin; ls; rename big.bin renamed.bin; get renamed.bin ${local}/back.bin`);
      t.equal(r.status, 0, r.stderr + r.stdout);
      t.match(r.stdout, /big\.bin +A +25165824/);
      t.ok(fs.readFileSync(path.join(local, 'back.bin')).equals(big), 'read back over SMB: byte-identical');
      t.ok(fs.readFileSync(path.join(mount, 'proj', 'renamed.bin')).equals(big), 'and through the mount');
      t.notOk(fs.existsSync(path.join(mount, 'proj', 'big.bin')));
      const dosattrib = spawnSync('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "user.DOSATTRIB").hex())', path.join(mount, 'proj', 'renamed.bin')], { encoding: 'utf8' });
      t.equal(dosattrib.status, 0, `Samba keeps DOS attributes in an xattr of tierfs: ${dosattrib.stderr}`);

      // A cold file: destaged, its flash copy dropped, then read over SMB (recalled on demand).
      const cold = crypto.randomBytes(6 * MiB);
      fs.writeFileSync(path.join(mount, 'proj', 'cold.bin'), cold);
      t.equal(cli('destage', '--wait', path.join(mount, 'proj', 'cold.bin')).status, 0);
      t.equal(cli('release', path.join(mount, 'proj', 'cold.bin')).status, 0);
      t.match(json(cli('stat', '--json', path.join(mount, 'proj', 'cold.bin'))), { flashBytes: 0, objectBytes: 6 * MiB });
      const g = smbclient(alice, 'alice-secret', 'proj', `get cold.bin ${local}/cold.bin`);
      t.equal(g.status, 0, g.stderr + g.stdout);
      t.ok(fs.readFileSync(path.join(local, 'cold.bin')).equals(cold), 'a released file read over SMB: byte-identical');
    });

    t.test('refusals: wrong password, a user the share does not name, writes to a read-only share', async (t) => {
      const wrong = smbclient(alice, 'not-her-password', 'proj', 'ls');
      t.not(wrong.status, 0);
      t.match(wrong.stdout + wrong.stderr, /NT_STATUS_LOGON_FAILURE/);
      const notNamed = smbclient(bob, 'bob-secret', 'proj', 'ls');
      t.not(notNamed.status, 0);
      t.match(notNamed.stdout + notNamed.stderr, /NT_STATUS_ACCESS_DENIED/);
      const local = path.join(dir, 'small.txt');
      fs.writeFileSync(local, 'hello');
      const ro = smbclient(bob, 'bob-secret', 'readonly', `put ${local} small.txt`);
      t.match(ro.stdout + ro.stderr, /NT_STATUS_(ACCESS_DENIED|MEDIA_WRITE_PROTECTED)/);
      t.notOk(fs.existsSync(path.join(mount, 'readonly', 'small.txt')), 'nothing written');
      const listed = smbclient(bob, 'bob-secret', 'readonly', 'ls');
      t.equal(listed.status, 0, 'reading a read-only share works');
    });

    t.test('list, show and status', async (t) => {
      const list = json(cli('share', 'list', '--json'));
      t.match(list, {
        shares: [
          { name: 'proj', path: '/proj', exportPath: `${mount}/proj`, readOnly: false, available: true, nfs: { clients: ['10.0.0.0/8', '192.168.1.7/32'], rootSquash: true }, smb: { users: [alice] } },
          { name: 'readonly', readOnly: true, nfs: null, smb: { users: [] } },
        ],
        nfs: { served: false },
        smb: { served: true, detail: 'shared by smbd' },
      });
      const human = cli('share', 'list');
      t.match(human.stdout, new RegExp(`^proj +${mount}/proj  read-write, NFS to 10\\.0\\.0\\.0/8, 192\\.168\\.1\\.7/32; SMB for ${alice}$`, 'm'));
      t.match(json(cli('share', 'show', 'readonly', '--json')), { name: 'readonly', readOnly: true });
      t.match(json(cli('status', '--json')), { shares: { count: 2, smb: { served: true }, nfs: { served: false } } });
      t.match(cli('status').stdout, /^shares +2; NFS not served: .*; SMB \d+ connection\(s\)$/m);
    });

    t.test('bad input: one line, exit 2, both files and the share list unchanged', async (t) => {
      const before = { include: fs.readFileSync(include), exports: fs.readFileSync(exportsFile), list: cli('share', 'list', '--json').stdout };
      const p = path.join(mount, 'proj');
      const cases: [string, string[], RegExp][] = [
        ['a path outside the mount', ['share', 'add', 'x', dir, '--smb'], /is outside the mount/],
        ['a path with ..', ['share', 'add', 'x', `${p}/../readonly`, '--smb'], /must not contain "\." or "\.\." segments/],
        ['a path with %', ['share', 'add', 'x', `${p}%U`, '--smb'], /"%" \(Samba would expand it\)/],
        ['a file, not a directory', ['share', 'add', 'x', path.join(mount, 'plain-file'), '--smb'], /is not a directory of the file system/],
        ['a missing directory', ['share', 'add', 'x', path.join(mount, 'nowhere'), '--smb'], /is not a directory of the file system/],
        ['a bad CIDR', ['share', 'add', 'x', p, '--nfs', 'not-an-address'], /is not a CIDR/],
        ['a prefix too long', ['share', 'add', 'x', p, '--nfs', '10.0.0.0/33'], /prefix length must be 0 to 32/],
        ['host bits set', ['share', 'add', 'x', p, '--nfs', '10.1.2.3/8'], /has host bits set \(the network is 10\.0\.0\.0\/8\)/],
        ['the world with write access', ['share', 'add', 'x', p, '--nfs', '0.0.0.0/0'], /needs --allow-world/],
        ['IPv6 world with write access', ['share', 'add', 'x', p, '--nfs', '::/0'], /needs --allow-world/],
        ['a duplicate name', ['share', 'add', 'proj', p, '--smb'], /a share named proj exists/],
        ['a duplicate name in other case', ['share', 'add', 'PROJ', p, '--smb'], /a share named PROJ exists/],
        ['an unknown user', ['share', 'add', 'x', p, '--smb', '--users', 'nosuchuserx'], /no Samba user nosuchuserx/],
        ['a bad share name', ['share', 'add', 'bad name', p, '--smb'], /name "bad name"/],
        ['a reserved share name', ['share', 'add', 'global', p, '--smb'], /name "global"/],
        ['neither protocol', ['share', 'add', 'x', p], /give --nfs CIDR/],
        ['--users without --smb', ['share', 'add', 'x', p, '--nfs', '10.0.0.0/8', '--users', alice], /--users goes with --smb/],
        ['the same path exported twice', ['share', 'add', 'x', p, '--nfs', '172.16.0.0/12'], /already exported over NFS by share proj/],
        ['a CIDR given twice', ['share', 'add', 'x', path.join(mount, 'readonly'), '--nfs', '10.0.0.0/8,10.0.0.0/8'], /10\.0\.0\.0\/8 is given twice/],
        ['edit of a missing share', ['share', 'edit', 'nosuch', '--ro'], /no share named nosuch/],
        ['edit with contradicting flags', ['share', 'edit', 'proj', '--ro', '--rw'], /contradict/],
        ['edit to the world', ['share', 'edit', 'proj', '--nfs', '0.0.0.0/0'], /needs --allow-world/],
        ['edit with nothing', ['share', 'edit', 'proj'], /give something to change/],
        ['rm of a missing share', ['share', 'rm', 'nosuch'], /no share named nosuch/],
        ['an unknown subcommand', ['share', 'frob'], /unknown subcommand "frob"/],
        ['a flag that does not apply', ['share', 'rm', 'proj', '--ro'], /--ro does not apply/],
        ['user rm of a user a share names', ['share', 'user', 'rm', alice], /is named by share proj/],
        ['a bad user name', ['share', 'user', 'add', 'Bad;Name', '--password-stdin'], /not a valid user name/],
      ];
      for (const [what, args, message] of cases) {
        const r = args.includes('--password-stdin') ? cliWithInput('pw\n', ...args) : cli(...args);
        t.equal(r.status, r.stderr.includes('no share named') ? 1 : 2, `${what}: exit status`);
        t.match(r.stderr, message, what);
        t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
      }
      t.ok(fs.readFileSync(include).equals(before.include), 'the Samba include: byte-identical');
      t.ok(fs.readFileSync(exportsFile).equals(before.exports), 'the exports file: byte-identical');
      t.equal(cli('share', 'list', '--json').stdout, before.list, 'the shares: unchanged');
    });

    t.test('edit, rm, then withdrawn at stop and back at start', async (t) => {
      t.equal(cli('share', 'edit', 'proj', '--no-nfs', '--users', `${alice},${bob}`).status, 0);
      t.notMatch(fs.readFileSync(exportsFile, 'utf8'), /proj/, 'no longer exported over NFS');
      t.notMatch(fs.readFileSync(include, 'utf8'), /oplocks = no/, 'SMB only now: oplocks allowed');
      t.equal(smbclient(bob, 'bob-secret', 'proj', 'ls').status, 0, 'bob is named now');
      t.equal(cli('share', 'rm', 'readonly').status, 0);
      const gone = smbclient(bob, 'bob-secret', 'readonly', 'ls');
      t.match(gone.stdout + gone.stderr, /NT_STATUS_BAD_NETWORK_NAME/, 'a removed share is refused');

      t.equal(await served.stop(), 0);
      t.notMatch(fs.readFileSync(include, 'utf8'), /\[proj\]/, 'withdrawn before the unmount: smbd does not share the empty mount point');
      const refused = smbclient(alice, 'alice-secret', 'proj', 'ls');
      t.match(refused.stdout + refused.stderr, /NT_STATUS_BAD_NETWORK_NAME/);
      served = await serve(t, scratch, mount, ['--config', config]);
      for (const deadline = Date.now() + 10_000; !fs.readFileSync(include, 'utf8').includes('[proj]') && Date.now() < deadline; )
        await new Promise((resolve) => setTimeout(resolve, 50));
      t.match(fs.readFileSync(include, 'utf8'), /\[proj\]/, 'back once the mount serves (kept in the metadata)');
      const back = smbclient(bob, 'bob-secret', 'proj', 'ls');
      t.match(back.stdout, /renamed\.bin/, 'the share serves again after the restart');

      t.equal(cli('share', 'edit', 'proj', '--users', alice).status, 0);
      const removed = cli('share', 'user', 'rm', bob);
      t.equal(removed.status, 0, removed.stderr);
      t.match(removed.stdout, `Samba user ${bob} removed with its Unix account`);
      t.not(spawnSync('getent', ['passwd', bob]).status, 0, 'the Unix account made for it is gone');
    });
  });
}

t.test('a read-only appliance (a follower, or one that lost the writer role) exports every share read-only and refuses share changes', async (t) => {
  const opened = await openScratch(t, await formatScratch(t));
  await opened.fs.mkdir(ROOT_INO, 'data', 0o755, ROOT);
  const dir = scratchDir(t);
  const run: CommandRunner = async () => ({ code: 0, stdout: '', stderr: '' });
  const config = { exportsFile: path.join(dir, 'tierfs.exports'), sambaInclude: path.join(dir, 'tierfs-shares.conf'), sambaConfig: '/dev/null', nfsdDir: path.join(dir, 'nfsd') };
  const manager = new ShareManager(opened.fs, '/mnt/t', { config, allowOther: true, run });
  await manager.add({ name: 'data', path: '/mnt/t/data', nfs: ['10.0.0.0/8'] });
  t.match(fs.readFileSync(config.exportsFile, 'utf8'), /\(rw,/);
  opened.fs.setReadOnly('a follower (test)');
  const restarted = new ShareManager(opened.fs, '/mnt/t', { config, allowOther: true, run });
  await restarted.start();
  t.match(fs.readFileSync(config.exportsFile, 'utf8'), /^\/mnt\/t\/data 10\.0\.0\.0\/8\(ro,/m, 'exported read-only');
  await t.rejects(restarted.add({ name: 'more', path: '/mnt/t/data', nfs: ['10.1.0.0/16'] }), { code: 'READ_ONLY' }, 'no share added');
  await t.rejects(restarted.remove('data'), { code: 'READ_ONLY' }, 'none removed');
  t.same(opened.fs.shares().map((s) => s.name), ['data']);
});
