#!/bin/sh
# Last step of every image build: nothing of the build stays in the image —
# no SSH host keys (made at first boot), an empty machine-id, no cloud-init
# state, no logs, shell history, apt lists or build files.
set -eu
rm -f /etc/ssh/ssh_host_*
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id && ln -s /etc/machine-id /var/lib/dbus/machine-id 2>/dev/null || true
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs --seed >/dev/null 2>&1 || true; fi
rm -rf /tmp/tierfs-bundle.tar.gz /tmp/tierfs-appliance /var/lib/tierfs /etc/tierfs/tierfs.json
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
find /var/log -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -f /root/.bash_history /home/*/.bash_history /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
echo "image cleaned"
