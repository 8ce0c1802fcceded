// The packer template: `packer fmt -check` and `packer validate` pass offline
// (Debian's packer 1.6.6), with stand-ins for the build's inputs; and
// validate really validates (a source missing a required setting fails).
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './helpers/daemon';
import { scratchDir } from './helpers/fs';

const have = spawnSync('packer', ['version']).status === 0;

function inputs(t: Test): string[] {
  const dir = scratchDir(t);
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(path.join(dir, 'key'), privateKey.export({ type: 'pkcs1', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'bundle.tar.gz'), '');
  fs.writeFileSync(path.join(dir, 'base.qcow2'), '');
  return ['-var', `bundle=${dir}/bundle.tar.gz`, '-var', `qemu_ssh_private_key_file=${dir}/key`, '-var', `qemu_base_image=${dir}/base.qcow2`];
}

t.test('packer fmt -check and validate pass offline', { skip: !have && 'packer is not installed' }, async (t) => {
  const fmt = spawnSync('packer', ['fmt', '-check', 'packer/'], { cwd: repoRoot, encoding: 'utf8' });
  t.equal(fmt.status, 0, `fmt: ${fmt.stdout}${fmt.stderr}`);
  const env = { ...process.env, CHECKPOINT_DISABLE: '1', PACKER_LOG: '' };
  const validate = spawnSync('packer', ['validate', ...inputs(t), 'packer/'], { cwd: repoRoot, encoding: 'utf8', env });
  t.equal(validate.status, 0, `validate: ${validate.stdout}${validate.stderr}`);
  const template = fs.readFileSync(path.join(repoRoot, 'packer', 'tierfs.pkr.hcl'), 'utf8');
  for (const source of ['amazon-ebs', 'azure-arm', 'qemu']) t.match(template, new RegExp(`^source "${source}" "tierfs" \\{`, 'm'), source);
  t.match(template, /^ {2}accelerator +?= "tcg"$/m, 'qemu never picks the broken KVM of these machines');
  t.match(template, /appliance\/provision\.sh[\s\S]*appliance\/cleanup\.sh/, 'the shared provisioning scripts, cleanup last');

  // A broken copy fails: validate is not a formality.
  const broken = scratchDir(t);
  fs.writeFileSync(path.join(broken, 'tierfs.pkr.hcl'), template.replace(/^ {2}image_sku .*\n/m, ''));
  const refused = spawnSync('packer', ['validate', ...inputs(t), broken], { cwd: repoRoot, encoding: 'utf8', env });
  t.not(refused.status, 0);
  t.match(`${refused.stdout}${refused.stderr}`, /image_sku/i);
  fs.writeFileSync(path.join(broken, 'tierfs.pkr.hcl'), template.replace('  region        = var.region', 'region = var.region'));
  t.equal(spawnSync('packer', ['fmt', '-check', broken], { encoding: 'utf8' }).status, 3, 'fmt -check notices');
});

t.test('the image scripts keep the marketplace rules', async (t) => {
  const provision = fs.readFileSync(path.join(repoRoot, 'appliance', 'provision.sh'), 'utf8');
  const cleanup = fs.readFileSync(path.join(repoRoot, 'appliance', 'cleanup.sh'), 'utf8');
  t.match(provision, /passwd -l root/, 'root locked');
  t.match(provision, /PermitRootLogin no\\nPasswordAuthentication no/, 'root login off, keys only');
  t.match(provision, /ssh_pwauth: false/, 'cloud-init sets no password');
  for (const line of [/rm -f \/etc\/ssh\/ssh_host_\*/, /truncate -s 0 \/etc\/machine-id/, /cloud-init clean --logs/, /\/var\/log -type f -exec truncate/, /\.bash_history/, /authorized_keys/])
    t.match(cleanup, line);
  for (const script of ['bundle.sh', 'provision.sh', 'cleanup.sh', 'build-image.sh', 'boot-test.sh', 'selftest.sh']) {
    const syntax = spawnSync(script.endsWith('.sh') && fs.readFileSync(path.join(repoRoot, 'appliance', script), 'utf8').startsWith('#!/bin/sh') ? 'sh' : 'bash', ['-n', path.join(repoRoot, 'appliance', script)], { encoding: 'utf8' });
    t.equal(syntax.status, 0, `${script}: ${syntax.stderr}`);
  }
});
