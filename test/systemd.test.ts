// The unit files: `systemd-analyze verify` finds nothing to say about them
// (it exits 0 even on warnings, so any output fails the test), checked in a
// scratch root that has systemd's own units and a tierfs executable.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './helpers/daemon';
import { scratchDir } from './helpers/fs';

const unitDir = path.join(repoRoot, 'systemd');
const units = fs.readdirSync(unitDir).filter((name) => /\.(service|timer)$/.test(name));
const have = spawnSync('systemd-analyze', ['--version']).status === 0 && fs.existsSync('/usr/lib/systemd/system/sysinit.target');

function verify(t: Test, edit?: (name: string, text: string) => string) {
  const root = scratchDir(t);
  fs.mkdirSync(path.join(root, 'usr', 'local', 'bin'), { recursive: true });
  fs.writeFileSync(path.join(root, 'usr', 'local', 'bin', 'tierfs'), '#!/bin/sh\n', { mode: 0o755 });
  fs.mkdirSync(path.join(root, 'etc', 'systemd', 'system'), { recursive: true });
  fs.cpSync('/usr/lib/systemd/system', path.join(root, 'usr', 'lib', 'systemd', 'system'), { recursive: true, verbatimSymlinks: true });
  fs.symlinkSync('usr/lib', path.join(root, 'lib'));
  for (const name of units) {
    const text = fs.readFileSync(path.join(unitDir, name), 'utf8');
    fs.writeFileSync(path.join(root, 'etc', 'systemd', 'system', name), edit ? edit(name, text) : text);
  }
  return spawnSync('systemd-analyze', ['verify', `--root=${root}`, ...units.map((name) => `/etc/systemd/system/${name}`)], { encoding: 'utf8' });
}

t.test('systemd-analyze verify is silent on every unit', { skip: !have && 'systemd-analyze is not installed' }, async (t) => {
  t.same(units.sort(), ['tierfs-firstboot.service', 'tierfs-scrub.service', 'tierfs-scrub.timer', 'tierfsd.service']);
  const result = verify(t);
  t.equal(result.status, 0);
  t.equal(`${result.stdout}${result.stderr}`, '', 'no warnings');
  const broken = verify(t, (name, text) => (name === 'tierfsd.service' ? text.replace('Type=notify\n', 'Type=notifyy\n') : text));
  t.match(broken.stderr, /Failed to parse service type, ignoring: notifyy/, 'the check can fail');
});

t.test('the daemon unit keeps the promises of the issue', async (t) => {
  const text = fs.readFileSync(path.join(unitDir, 'tierfsd.service'), 'utf8');
  for (const line of ['Type=notify', 'WatchdogSec=30', 'Restart=on-failure', 'NoNewPrivileges=yes', 'RestrictNamespaces=yes'])
    t.match(text, new RegExp(`^${line}$`, 'm'), line);
  for (const key of ['ProtectSystem', 'ProtectHome', 'PrivateTmp', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups', 'PrivateMounts', 'ReadOnlyPaths', 'ReadWritePaths'])
    t.notMatch(text, new RegExp(`^${key}=`, 'm'), `no ${key}: it would hide the FUSE mount in a namespace of the service's own (regression found by make boot-test)`);
  t.match(text, /^CapabilityBoundingSet=CAP_SYS_ADMIN( CAP_\w+)*$/m);
  t.match(text, /^SystemCallFilter=@system-service @mount$/m, 'the system-call filter stays');
  t.match(text, /^SystemCallFilter=io_uring_setup io_uring_enter io_uring_register$/m, 'and lets the flash tier\'s io_uring through (make boot-test checks the daemon uses it)');
  t.match(text, /^After=tierfs-firstboot\.service /m, 'after first boot');
  t.match(fs.readFileSync(path.join(unitDir, 'tierfs-firstboot.service'), 'utf8'), /^Type=oneshot$[\s\S]*^ConditionPathExists=!\/var\/lib\/tierfs\/firstboot\.done$|^ConditionPathExists=!\/var\/lib\/tierfs\/firstboot\.done$[\s\S]*^Type=oneshot$/m);
});
