#!/usr/bin/env bash
# make boot-test: boot output/tierfs.qcow2 (through its own boot loader) in
# qemu with software emulation, an emulated NVMe disk and no network, with
# the self-test switched on (fw_cfg opt/org.tierfs.selftest).  The guest
# (appliance/selftest.sh) checks first boot, READY, destage/release/recall
# byte-identical, a reboot, and the watchdog restarting a hung daemon, and
# reports on its second serial port; then it powers off and is booted again
# with a new, blank NVMe disk (a wiped instance store), where it checks that
# tierfsd comes up, lists what was only on the old disk as lost and reads the
# destaged data back from the bucket; then a fresh copy of the image with a
# blank disk and the same bucket disk (a replaced instance), whose first boot
# must restore the file system from the bucket.  Prints one summary line;
# exit 1 on any failure.  The image itself is left untouched (a copy-on-write overlay).
set -euo pipefail
cd "$(dirname "$0")/.."
image=output/tierfs.qcow2
timeout_s=${BOOT_TEST_TIMEOUT_S:-1500}
[ -s "$image" ] || { echo "boot-test: FAIL: $image is missing (make image)"; exit 1; }
work=$(mktemp -d /tmp/tierfs-boot-test.XXXXXX)
qemu_pid=
finish() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ "${KEEP_BOOT_TEST:-}" = 1 ] || rm -rf "$work"
}
trap finish EXIT
qemu-img create -q -f qcow2 -b "$PWD/$image" -F qcow2 "$work/root.qcow2"
truncate -s 1G "$work/nvme.img"
truncate -s 512M "$work/bucket.img" && mkfs.ext4 -q -F "$work/bucket.img" # the shared bucket disk
accel=tcg,thread=multi
[ "${BOOT_TEST_KVM:-}" = 1 ] && accel=kvm # only where KVM really works (not on these machines)
started=$(date +%s)
# One run of the guest (root disk $2, self-test mode $3) until it powers off (or the time is up); its results are appended.
boot() {
  qemu-system-x86_64 -accel "$accel" -cpu max -smp 2 -m 2048 -display none -no-user-config -nodefaults \
    -serial "file:$work/console-$1.log" -serial "file:$work/results-$1.log" \
    -nic none \
    -drive "file=$work/$2,if=virtio,format=qcow2" \
    -drive "file=$work/bucket.img,if=virtio,format=raw" \
    -drive "file=$work/nvme.img,if=none,id=nvm,format=raw" -device nvme,serial="tierfs0$1",drive=nvm \
    -fw_cfg name=opt/org.tierfs.selftest,string="$3" &
  qemu_pid=$!
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ $(( $(date +%s) - started )) -gt "$timeout_s" ]; then
      echo "boot-test: timed out after ${timeout_s} s" >&2
      kill "$qemu_pid"
      break
    fi
    sleep 2
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  tr -d '\r' < "$work/results-$1.log" >> "$work/results.log" 2>/dev/null || true
  cat "$work/console-$1.log" >> "$work/console.log" 2>/dev/null || true
}
if [ "${BOOT_TEST_NFS_BENCH:-}" = 1 ]; then
  # Not the test: NFS through tierfs vs the same server exporting ext4, in a fresh guest (medians of 3 rounds).
  boot 1 root.qcow2 nfs-bench
  tr -d '\r' < "$work/results.log"
  median() { grep '^MEASURE' "$work/results.log" | awk -v f="$1" '{ print $f }' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
  column=5 # MEASURE round N tierfs w r c ext4 w r c local-tierfs w r c local-ext4 w r c
  for name in 'sequential 1 MiB writes (MiB/s)' 'sequential 1 MiB reads (MiB/s)' 'creates (files/s)'; do
    ours=$(median $column) base=$(median $((column + 4))) local_ours=$(median $((column + 8))) local_base=$(median $((column + 12)))
    echo "nfs-bench: $name: over NFS tierfs $ours, ext4 $base, ratio $(ratio "$ours" "$base");" \
      "without NFS tierfs $local_ours, ext4 $local_base, ratio $(ratio "$local_ours" "$local_base")"
    column=$((column + 1))
  done
  exit 0
fi
boot 1 root.qcow2 1
if [ "$(grep -cx POWEROFF "$work/results.log")" = 1 ]; then
  # The instance store is wiped: a new, blank disk in place of the old one.
  rm -f "$work/nvme.img"
  truncate -s 1G "$work/nvme.img"
  boot 2 root.qcow2 1
fi
if [ "$(grep -cx POWEROFF "$work/results.log")" = 2 ]; then
  # The instance is replaced: a fresh copy of the image, a blank disk, the same bucket.
  qemu-img create -q -f qcow2 -b "$PWD/$image" -F qcow2 "$work/fresh.qcow2"
  rm -f "$work/nvme.img"
  truncate -s 1G "$work/nvme.img"
  boot 3 fresh.qcow2 restore
fi
elapsed=$(( $(date +%s) - started ))
results=$(cat "$work/results.log" 2>/dev/null || true)
expected="firstboot-formatted-nvme tierfsd-ready flash-io-nvme-passthrough write destage release read-from-object-tier recall flash-io-passthrough-carried-the-checks flash-io-psync-fallback bash-completion status no-share-nothing-listens share-add nfs-mount-v41-v3 firewall-nfs-only-to-share-clients nfs-256mib-byte-identical nfs-workload-v41 nfs-workload-v3 nfs-posix-checks-v42-v41-v3 nfs-released-file-recalled nfs-open-file-across-restart smb-mount-cifs smb-workload share-status share-rm-refuses-clients tierfsd-ready-after-reboot data-kept-across-reboot firstboot-ran-once watchdog-restarts-hung-daemon ready-after-watchdog data-after-watchdog metadata-replicated write-not-destaged tierfsd-ready-on-blank-flash blank-flash-adopted lost-file-listed lost-file-reads-eio destaged-data-after-blank-flash firstboot-restored tierfsd-ready-after-restore restored-data-reads-back restored-lost-listed"
missing=""; failed=""; passed=0; total=0
for name in $expected; do
  total=$((total + 1))
  if printf '%s\n' "$results" | grep -qx "PASS $name"; then passed=$((passed + 1))
  elif printf '%s\n' "$results" | grep -q "^FAIL $name"; then failed="$failed $name"
  else missing="$missing $name"; fi
done
done_seen=$(printf '%s\n' "$results" | grep -cx DONE || true)
if [ "$passed" = "$total" ] && [ "$done_seen" = 1 ]; then
  echo "boot-test: PASS ($passed/$total checks, four boots: a reboot, a blank NVMe disk, a fresh image restored from the bucket; ${elapsed} s under $accel)"
  exit 0
fi
{
  echo "--- guest results"; printf '%s\n' "$results"
  echo "--- console (last 60 lines)"; tail -n 60 "$work/console.log" 2>/dev/null | tr -d '\r'
} >&2
echo "boot-test: FAIL ($passed/$total checks passed${failed:+; failed:$failed}${missing:+; missing:$missing}; ${elapsed} s)"
exit 1
