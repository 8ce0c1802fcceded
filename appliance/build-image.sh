#!/usr/bin/env bash
# make image: a bootable Debian 12 disk image of the appliance, without a
# cloud account — mmdebstrap from the Debian mirror, tierfs installed by the
# same provision.sh and cleanup.sh packer runs, an ext4 root filled with
# mkfs.ext4 -d, extlinux on an MBR disk (grub-install cannot map a loop
# device's partitions to a BIOS drive).  Output: output/tierfs.qcow2, and the
# kernel and initrd beside it (make boot-test boots those directly to pass
# the self-test switch on the command line).
set -euo pipefail
cd "$(dirname "$0")/.."
out=output
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
disk_mib=${IMAGE_DISK_MIB:-3072}
started=$(date +%s)

appliance/bundle.sh
rm -f "$out/disk.raw" "$out/root.ext4"
if [ "${IMAGE_REUSE_ROOTFS:-}" = 1 ] && [ -d "$out/rootfs/opt/tierfs" ]; then
  echo "reusing $out/rootfs (IMAGE_REUSE_ROOTFS=1); tierfs refreshed from the bundle"
  rm -rf "$out/rootfs/opt/tierfs" && tar -xzf "$out/tierfs-bundle.tar.gz" -C "$out/rootfs/opt"
  install -m 644 systemd/*.service systemd/*.timer appliance/tierfs-selftest.service appliance/tierfs-selftest-bucket.service "$out/rootfs/etc/systemd/system/"
  chroot "$out/rootfs" systemctl enable tierfs-selftest-bucket.service
  echo qemu_fw_cfg > "$out/rootfs/etc/modules-load.d/qemu-fw-cfg.conf"
else
rm -rf "$out/rootfs"
packages=systemd-sysv,dbus,udev,kmod,linux-image-cloud-amd64,initramfs-tools,libfuse3-3,fuse3,e2fsprogs,ca-certificates,openssh-server,cloud-init,cloud-guest-utils,nvme-cli,procps,less,iproute2,bash-completion,nfs-kernel-server,samba,cifs-utils,nftables
mmdebstrap --variant=minbase --include="$packages" --quiet \
  --customize-hook='copy-in output/tierfs-bundle.tar.gz /tmp' \
  --customize-hook='mkdir -p "$1/tmp/tierfs-appliance"' \
  --customize-hook='sync-in appliance /tmp/tierfs-appliance' \
  --customize-hook='chroot "$1" env TIERFS_BUNDLE=/tmp/tierfs-bundle.tar.gz sh /tmp/tierfs-appliance/provision.sh' \
  --customize-hook='install -m 644 appliance/tierfs-selftest.service appliance/tierfs-selftest-bucket.service "$1/etc/systemd/system/" && chroot "$1" systemctl enable tierfs-selftest.service tierfs-selftest-bucket.service' \
  --customize-hook='echo qemu_fw_cfg > "$1/etc/modules-load.d/qemu-fw-cfg.conf"' \
  --customize-hook='echo tierfs > "$1/etc/hostname" && printf "127.0.0.1 localhost\n127.0.1.1 tierfs\n" > "$1/etc/hosts"' \
  --customize-hook='printf "LABEL=root / ext4 errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/ssh.service.d" && printf "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n" > "$1/etc/systemd/system/ssh.service.d/10-host-keys.conf"' \
  --customize-hook='chroot "$1" sh /tmp/tierfs-appliance/cleanup.sh' \
  bookworm "$out/rootfs" "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
fi
cp -L "$out/rootfs/vmlinuz" "$out/vmlinuz"
cp -L "$out/rootfs/initrd.img" "$out/initrd.img"
kernel=$(basename "$(readlink -f "$out/rootfs/vmlinuz")")
initrd=$(basename "$(readlink -f "$out/rootfs/initrd.img")")

# The disk: an MBR partition from 1 MiB, ext4 labelled root, filled from the tree.
truncate -s "${disk_mib}M" "$out/disk.raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$out/disk.raw"
mkfs.ext4 -q -O ^64bit,^metadata_csum -L root -d "$out/rootfs" "$out/root.ext4" "$((disk_mib - 1))M"
dd if="$out/root.ext4" of="$out/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$out/root.ext4"

# extlinux (BIOS), so the image boots by itself in any hypervisor.
loop=$(losetup --find --show "$out/disk.raw")
mnt=$(mktemp -d)
cleanup() { umount "$mnt" 2>/dev/null || true; partx -d "$loop" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
partx -a "$loop"
mount "${loop}p1" "$mnt"
mkdir -p "$mnt/boot/extlinux"
extlinux --install "$mnt/boot/extlinux" 2>&1 | grep -v "geometry\|usually harmless\|is device" || true
cat > "$mnt/boot/extlinux/extlinux.conf" <<CONF
SERIAL 0 115200
DEFAULT tierfs
TIMEOUT 10
LABEL tierfs
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=LABEL=root ro console=tty0 console=ttyS0,115200
CONF
umount "$mnt"
cleanup
trap - EXIT
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$out/disk.raw" bs=440 count=1 conv=notrunc status=none

qemu-img convert -O qcow2 "$out/disk.raw" "$out/tierfs.qcow2"
rm -f "$out/disk.raw"
echo "output/tierfs.qcow2: $(du -h "$out/tierfs.qcow2" | cut -f1) on disk, ${disk_mib} MiB virtual; built in $(( $(date +%s) - started )) s"
