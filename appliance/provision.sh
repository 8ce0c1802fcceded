#!/bin/sh
# Installs tierfs into an image (run as root inside it: by packer's shell
# provisioner, or in the chroot of make image).  Expects the bundle at
# $TIERFS_BUNDLE and these packages present: libfuse3-3 fuse3 cloud-init
# (and, for network shares, nfs-kernel-server samba cifs-utils).
# Marketplace rules: no default password, root login off, SSH keys only.
set -eu
bundle=${TIERFS_BUNDLE:-/tmp/tierfs-bundle.tar.gz}
rm -rf /opt/tierfs
tar -xzf "$bundle" -C /opt
chown -R root:root /opt/tierfs
cat > /usr/local/bin/tierfs <<'WRAPPER'
#!/bin/sh
exec /opt/tierfs/node/bin/node /opt/tierfs/bin/tierfs.js "$@"
WRAPPER
chmod 755 /usr/local/bin/tierfs
install -D -m 644 /opt/tierfs/bin/completion.bash /usr/share/bash-completion/completions/tierfs
install -m 644 /opt/tierfs/systemd/*.service /opt/tierfs/systemd/*.timer /etc/systemd/system/
mkdir -p /etc/tierfs /mnt/tierfs
chmod 755 /etc/tierfs
# The appliance's defaults; cloud user data ({"tierfs": {...}}) overrides them.
[ -e /etc/tierfs/tierfs.conf ] || echo '{}' > /etc/tierfs/tierfs.conf
# The administrators' group for the admin socket (firstboot makes sure of it too).
getent group tierfs >/dev/null || groupadd --system tierfs
systemctl enable tierfs-firstboot.service tierfsd.service tierfs-scrub.timer
# Network shares: the NFS server and Samba are installed but off until tierfs share needs them
# (tierfsd starts them): by default nothing listens but SSH.
if [ -x /usr/sbin/smbd ]; then
  install -m 644 /opt/tierfs/appliance/smb.conf /etc/samba/smb.conf
  touch /etc/samba/tierfs-shares.conf
  systemctl disable smbd.service nmbd.service samba-ad-dc.service >/dev/null 2>&1 || true
  systemctl mask nmbd.service samba-ad-dc.service >/dev/null 2>&1 || true
fi
if [ -x /usr/sbin/exportfs ]; then
  mkdir -p /etc/exports.d /etc/nfs.conf.d
  # NFSv3, v4.1, v4.2; the ports the shares' firewall opens pinned; a short grace period (clients reclaim
  # their state after each restart of tierfsd, which restarts the NFS server).
  printf '[nfsd]\nvers3=y\nvers4.0=n\nvers4.1=y\nvers4.2=y\nlease-time=30\ngrace-time=30\n[mountd]\nport=20048\n[statd]\nport=32765\noutgoing-port=32766\n[lockd]\nport=32768\nudp-port=32768\n' > /etc/nfs.conf.d/tierfs.conf
  systemctl disable nfs-server.service rpcbind.service rpcbind.socket >/dev/null 2>&1 || true
fi
# FUSE: let the daemon mount with allow_other.
grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
# No passwords: root locked, SSH by key only, no root login.
passwd -l root >/dev/null 2>&1 || true
if [ -d /etc/ssh ]; then
  mkdir -p /etc/ssh/sshd_config.d
  printf 'PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n' > /etc/ssh/sshd_config.d/50-tierfs.conf
fi
# cloud-init: the datasources of the clouds we ship to, and no default user password.
if [ -d /etc/cloud/cloud.cfg.d ]; then
  printf 'datasource_list: [ Ec2, Azure, NoCloud, None ]\n' > /etc/cloud/cloud.cfg.d/90-tierfs-datasources.cfg
  printf 'ssh_pwauth: false\ndisable_root: true\n' > /etc/cloud/cloud.cfg.d/91-tierfs-ssh.cfg
fi
echo "tierfs installed in /opt/tierfs ($(/usr/local/bin/tierfs --help >/dev/null && echo runs))"
