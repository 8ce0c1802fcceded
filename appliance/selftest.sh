#!/bin/sh
# The guest side of make boot-test: checks what first boot and tierfsd did,
# writes a file, destages, releases, reads it back from the object tier,
# recalls it (all of it over NVMe passthrough, which it checks), checks the
# daemon falls back to psync when a seccomp drop-in refuses io_uring, reboots; after the reboot checks the data is still there and
# that the watchdog restarts a hung daemon, writes a file it does not destage,
# and powers off.  The host then boots it again with a new, blank NVMe disk
# (a wiped instance store): tierfsd must come up on it, list the file that
# was only on the old disk as lost (EIO on read), and read the destaged one
# back byte-identical from the bucket; it powers off again, and the host boots
# a fresh copy of the image (a replaced instance) with a blank NVMe disk and
# the same bucket disk (tierfs-selftest-bucket.service names it in
# /etc/tierfs/tierfs.conf): first boot must restore the file system from the
# bucket instead of formatting, and its data read back.  Each check is one
# line "PASS name" or "FAIL name: why" on the second serial port (/dev/ttyS1;
# the first one is the console, whose getty hangs up writers).
export TIERFS_SOCKET=/run/tierfs/admin.sock PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
state=/var/lib/tierfs-selftest
file=/mnt/tierfs/selftest.bin
mkdir -p $state
say() { echo "$*" > /dev/ttyS1; }
check() {
  name=$1; shift
  if "$@" > $state/$name.log 2>&1; then say "PASS $name"; else say "FAIL $name: $(tail -c 400 $state/$name.log | tr '\n' ' ')"; fi
}
stat_field() { tierfs stat "$file" --json | sed -n "s/^  \"$1\": \([0-9]*\).*/\1/p"; }
sum() { sha256sum "$file" | cut -d' ' -f1; }
ready() {
  systemctl is-active tierfsd && mountpoint -q /mnt/tierfs &&
    systemctl show -p StatusText --value tierfsd | grep '^serving /mnt/tierfs'
}
wait_ready() {
  for i in $(seq 1 90); do ready >/dev/null 2>&1 && return 0; sleep 2; done
  ready || { journalctl -b -u tierfsd -n 15 --no-pager -o cat; return 1; }
}

# Network shares over loopback inside the guest: NFSv4.1 and NFSv3 through the kernel server, SMB 3 through
# Samba and the kernel's cifs client.
exp=/mnt/tierfs/exp
same_sum() { test "$(sha256sum "$1" | cut -d' ' -f1)" = "$(sha256sum "$2" | cut -d' ' -f1)"; }
nothing_but_ssh() {
  ! systemctl is-active nfs-server smbd rpcbind && ! ss -ltnH | grep -v ':22 ' | grep -q .
}
share_add() {
  mkdir -p $exp && chmod 1777 $exp &&
    tierfs share add exp $exp --nfs 127.0.0.1 --no-root-squash --smb &&
    systemctl is-active nfs-server && systemctl is-active smbd && grep -q "^$exp 127.0.0.1/32(rw," /etc/exports.d/tierfs.exports
}
nfs_mounts() {
  mkdir -p /mnt/nfs41 /mnt/nfs3 &&
    mount -t nfs -o vers=4.1,hard,timeo=50 127.0.0.1:$exp /mnt/nfs41 &&
    mount -t nfs -o vers=3,hard,nolock,timeo=50 127.0.0.1:$exp /mnt/nfs3 &&
    grep -q ' /mnt/nfs41 nfs4 .*vers=4.1' /proc/mounts && grep -q ' /mnt/nfs3 nfs .*vers=3' /proc/mounts
}
nfs_big_file() {
  head -c 268435456 /dev/urandom > /mnt/nfs41/big.bin && sync &&
    same_sum /mnt/nfs41/big.bin $exp/big.bin && same_sum $exp/big.bin /mnt/nfs3/big.bin
}
nfs_posix() { # the project's POSIX checks over NFSv4.2, v4.1 and v3 (python3 is cloud-init's); what differs: SEMANTICS
  mkdir -p /mnt/nfs42 && mount -t nfs -o vers=4.2,hard,timeo=50 127.0.0.1:$exp /mnt/nfs42 || return 1
  for v in 4.2 4.1 3; do
    dir=/mnt/nfs$(echo $v | tr -d .)/posix-v$v
    mkdir $dir && python3 /opt/tierfs/appliance/posix_checks.py $dir --nfs $v > $state/posix-v$v.log 2>&1 ||
      { echo "over NFSv$v: $(tail -n 3 $state/posix-v$v.log)"; umount /mnt/nfs42; return 1; }
  done
  umount /mnt/nfs42
}
# The daemon under its unit's seccomp filter sends NVMe commands to the namespace's generic device (io_uring
# passthrough); with io_uring refused by a drop-in filter it falls back to psync, says why, and serves the same
# bytes.
flash_io_fallback() {
  dropin=/run/systemd/system/tierfsd.service.d
  mkdir -p $dropin && printf '[Service]\nSystemCallFilter=~io_uring_setup io_uring_enter io_uring_register\n' > $dropin/no-io-uring.conf &&
    systemctl daemon-reload && systemctl restart tierfsd && wait_ready > /dev/null &&
    tierfs status | grep "^device     /dev/nvme0n1: psync (io_uring_setup: Operation not permitted" &&
    echo 3 > /proc/sys/vm/drop_caches && test "$(sum)" = "$(cat $state/sum)" || { rm -f $dropin/no-io-uring.conf; systemctl daemon-reload; return 1; }
  rm $dropin/no-io-uring.conf && systemctl daemon-reload && systemctl restart tierfsd && wait_ready > /dev/null &&
    tierfs status | grep "^device     /dev/nvme0n1: nvme-passthrough via /dev/ng0n1"
}
nfs_cold_file() {
  head -c 8388608 /dev/urandom > $exp/cold.bin && sha256sum $exp/cold.bin | cut -d' ' -f1 > $state/cold.sum &&
    tierfs destage $exp/cold.bin --wait && tierfs release $exp/cold.bin --wait &&
    tierfs stat $exp/cold.bin --json | grep -q '"flashBytes": 0,' && echo 3 > /proc/sys/vm/drop_caches &&
    test "$(sha256sum /mnt/nfs3/cold.bin | cut -d' ' -f1)" = "$(cat $state/cold.sum)"
}
nfs_open_across_restart() {
  head -c 33554432 /dev/urandom > $exp/held.bin && sync
  exec 3< /mnt/nfs41/held.bin
  dd bs=1M count=1 iflag=fullblock <&3 > /dev/null 2>&1 && systemctl restart tierfsd && wait_ready > /dev/null && echo 3 > /proc/sys/vm/drop_caches
  got=$(dd bs=1M iflag=fullblock <&3 2> $state/dd.err | sha256sum | cut -d' ' -f1)
  exec 3<&-
  want=$(tail -c +1048577 $exp/held.bin | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] && return 0
  echo "read after the restart: $(tail -c 120 $state/dd.err) $(dmesg | tail -n 3) $(journalctl -b -u tierfsd -n 3 --no-pager -o cat)"
  return 1
}
firewall_open_only_to_shares() {
  nft list table inet tierfs_shares | grep -q 'elements = { 127.0.0.1 }' &&
    /opt/tierfs/node/bin/node -e "
      const net = require('net');
      const probe = (localAddress) => new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: 2049, localAddress });
        const timer = setTimeout(() => (s.destroy(), resolve('dropped')), 3000);
        s.on('connect', () => (clearTimeout(timer), s.destroy(), resolve('open')));
        s.on('error', (e) => (clearTimeout(timer), resolve(e.code)));
      });
      (async () => {
        const allowed = await probe('127.0.0.1'), other = await probe('127.0.0.2');
        console.log('from 127.0.0.1:', allowed, 'from 127.0.0.2:', other);
        process.exit(allowed === 'open' && other === 'dropped' ? 0 : 1);
      })();"
}
smb_mount() {
  echo 'selftest-Passw0rd' | tierfs share user add selftest --password-stdin &&
    mkdir -p /mnt/smb && mount -t cifs //127.0.0.1/exp /mnt/smb -o username=selftest,password=selftest-Passw0rd,vers=3.1.1,seal,cache=strict &&
    head -c 33554432 /dev/urandom > /mnt/smb/smb.bin && sync && same_sum /mnt/smb/smb.bin $exp/smb.bin && same_sum /mnt/smb/held.bin $exp/held.bin
}
share_rm_refuses() {
  umount /mnt/nfs41 /mnt/nfs3; umount /mnt/smb 2>/dev/null
  tierfs share rm exp &&
    ! mount -t nfs -o vers=4.1,soft,retrans=1,timeo=20 127.0.0.1:$exp /mnt/nfs41 &&
    ! systemctl is-active nfs-server && ! systemctl is-active smbd && nothing_but_ssh &&
    rm -rf $exp # the later boots count exactly the one file left only on flash
}

# NFS through tierfs against the same server exporting an ext4 directory of this guest (make boot-test with
# BOOT_TEST_NFS_BENCH=1): sequential 1 MiB writes (fsync at the end) and reads (caches dropped), and creates;
# then the same on the two directories directly, to tell NFS's share of the cost from FUSE's and the disks'.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
nfs_bench_round() { # $1: mount; prints write MiB/s, read MiB/s, creates/s
  m=$1; rm -rf $m/c; mkdir $m/c
  t0=$(now_ms); dd if=/dev/zero of=$m/seq.bin bs=1M count=256 conv=fsync 2>/dev/null; t1=$(now_ms)
  echo 3 > /proc/sys/vm/drop_caches
  dd if=$m/seq.bin of=/dev/null bs=1M 2>/dev/null; t2=$(now_ms)
  i=0; while [ $i -lt 500 ]; do : > $m/c/f$i; i=$((i + 1)); done; sync; t3=$(now_ms)
  echo "$((256000 / (t1 - t0 + 1))) $((256000 / (t2 - t1 + 1))) $((500000 / (t3 - t2 + 1)))"
}
nfs_bench() {
  mkdir -p /srv/nfsbase /mnt/tierfs/bench /mnt/b-ext4 /mnt/b-tierfs && chmod 1777 /mnt/tierfs/bench
  echo '/srv/nfsbase 127.0.0.1/32(rw,sync,no_subtree_check,no_root_squash,fsid=4242)' > /etc/exports.d/bench.exports
  tierfs share add bench /mnt/tierfs/bench --nfs 127.0.0.1 --no-root-squash > /dev/null && exportfs -r &&
    mount -t nfs -o vers=4.2,hard 127.0.0.1:/srv/nfsbase /mnt/b-ext4 && mount -t nfs -o vers=4.2,hard 127.0.0.1:/mnt/tierfs/bench /mnt/b-tierfs || return 1
  for round in 1 2 3; do # over NFS, then the same directories without NFS (what FUSE and the guest's disks give alone)
    say "MEASURE round $round tierfs $(nfs_bench_round /mnt/b-tierfs) ext4 $(nfs_bench_round /mnt/b-ext4)" \
      "local-tierfs $(nfs_bench_round /mnt/tierfs/bench) local-ext4 $(nfs_bench_round /srv/nfsbase)"
  done
}

systemctl is-system-running --wait > /dev/null 2>&1
mode=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/org.tierfs.selftest/raw 2>/dev/null)
if [ "$mode" = nfs-bench ]; then
  check tierfsd-ready wait_ready
  check nfs-bench nfs_bench
  say "DONE"
  systemctl poweroff
elif [ "$mode" = restore ]; then
  say "PHASE 4"
  check firstboot-restored sh -c 'journalctl -b -u tierfs-firstboot | grep "restoring it instead of formatting" && journalctl -b -u tierfs-firstboot | grep "restored from the target"'
  check tierfsd-ready-after-restore wait_ready
  check restored-data-reads-back sh -c "test \"\$(sha256sum $file | cut -d' ' -f1)\" = \"\$(cat /srv/disk/selftest.sum)\""
  check restored-lost-listed sh -c 'tierfs lost | grep /only-on-flash.bin'
  say "DONE"
  systemctl poweroff
elif [ ! -e $state/phase1 ]; then
  say "PHASE 1"
  check firstboot-formatted-nvme sh -c 'test -e /var/lib/tierfs/firstboot.done && grep "\"flash\": \"/dev/nvme0n1\"" /etc/tierfs/tierfs.json && journalctl -b -u tierfs-firstboot | grep "first boot done: flash tier /dev/nvme0n1"'
  check tierfsd-ready wait_ready
  check flash-io-nvme-passthrough sh -c 'tierfs status | grep "^device     /dev/nvme0n1: nvme-passthrough via /dev/ng0n1 (namespace 1, " && journalctl -b -u tierfsd | grep "flash tier opened.*io=\"nvme-passthrough (/dev/ng0n1"'
  check write sh -c "head -c 8388608 /dev/urandom > $file && sync && sha256sum $file | cut -d' ' -f1 > $state/sum && cp $state/sum /srv/disk/selftest.sum"
  check destage sh -c "tierfs destage $file --wait && test \"\$(tierfs stat $file --json | sed -n 's/^  \"objectBytes\": \([0-9]*\).*/\1/p')\" = 8388608"
  check release sh -c "tierfs release $file --wait && test \"\$(tierfs stat $file --json | sed -n 's/^  \"flashBytes\": \([0-9]*\).*/\1/p')\" = 0"
  check read-from-object-tier sh -c "echo 3 > /proc/sys/vm/drop_caches && test \"\$(sha256sum $file | cut -d' ' -f1)\" = \"\$(cat $state/sum)\""
  check recall sh -c "tierfs recall $file --wait && test \"\$(tierfs stat $file --json | sed -n 's/^  \"flashBytes\": \([0-9]*\).*/\1/p')\" = 8388608"
  check flash-io-passthrough-carried-the-checks sh -c 'tierfs status --json | grep -q "\"io\": \"nvme-passthrough\"" && test "$(tierfs status --json | sed -n "s/.*\"operationCount\": \([0-9]*\).*/\1/p")" -gt 20'
  check flash-io-psync-fallback flash_io_fallback
  check bash-completion bash -c 'source /usr/share/bash-completion/completions/tierfs && COMP_WORDS=(tierfs policy a) && COMP_CWORD=2 && _tierfs && test "${COMPREPLY[*]}" = add'
  check status sh -c 'tierfs status | grep "target     default: file:///srv/disk/bucket: reachable"'
  check no-share-nothing-listens nothing_but_ssh
  check share-add share_add
  check nfs-mount-v41-v3 nfs_mounts
  check firewall-nfs-only-to-share-clients firewall_open_only_to_shares
  check nfs-256mib-byte-identical nfs_big_file
  check nfs-workload-v41 /opt/tierfs/node/bin/node /opt/tierfs/appliance/nfs-workload.js /mnt/nfs41 $exp 41 300
  check nfs-workload-v3 /opt/tierfs/node/bin/node /opt/tierfs/appliance/nfs-workload.js /mnt/nfs3 $exp 3 300
  check nfs-posix-checks-v42-v41-v3 nfs_posix
  check nfs-released-file-recalled nfs_cold_file
  check nfs-open-file-across-restart nfs_open_across_restart
  check smb-mount-cifs smb_mount
  check smb-workload /opt/tierfs/node/bin/node /opt/tierfs/appliance/nfs-workload.js /mnt/smb $exp 445 200
  check share-status sh -c 'tierfs status | grep "^shares     1;" && systemctl show -p StatusText --value tierfsd | grep "1 share(s)"'
  check share-rm-refuses-clients share_rm_refuses
  touch $state/phase1
  sync
  say "REBOOT"
  systemctl reboot
elif [ ! -e $state/phase2 ]; then
  say "PHASE 2"
  check tierfsd-ready-after-reboot wait_ready
  check data-kept-across-reboot sh -c "test \"\$(sha256sum $file | cut -d' ' -f1)\" = \"\$(cat $state/sum)\""
  check firstboot-ran-once sh -c '! journalctl -b -u tierfs-firstboot | grep -q "first boot done"'
  pid=$(systemctl show -p MainPID --value tierfsd)
  kill -STOP "$pid"
  check watchdog-restarts-hung-daemon sh -c "for i in \$(seq 1 90); do n=\$(systemctl show -p NRestarts --value tierfsd); p=\$(systemctl show -p MainPID --value tierfsd); if [ \"\$n\" -ge 1 ] && [ \"\$p\" != $pid ] && systemctl is-active tierfsd; then journalctl -b -u tierfsd | grep -i 'watchdog timeout'; exit \$?; fi; sleep 2; done; exit 1"
  check ready-after-watchdog wait_ready
  check data-after-watchdog sh -c "test \"\$(sha256sum $file | cut -d' ' -f1)\" = \"\$(cat $state/sum)\""
  check metadata-replicated sh -c 'tierfs status | grep "^metadata   in the bucket" && ls /srv/disk/bucket/*/meta/snap'
  check write-not-destaged sh -c "head -c 1048576 /dev/urandom > /mnt/tierfs/only-on-flash.bin && sync"
  touch $state/phase2
  sync
  say "POWEROFF"
  systemctl poweroff
else
  say "PHASE 3"
  check tierfsd-ready-on-blank-flash wait_ready
  check blank-flash-adopted sh -c 'journalctl -b -u tierfsd | grep "the flash tier was blank"'
  check lost-file-listed sh -c 'tierfs lost | grep /only-on-flash.bin && tierfs status | grep "^LOST .*1 file" && systemctl show -p StatusText --value tierfsd | grep "LOST: 1 file"'
  check lost-file-reads-eio sh -c "! cat /mnt/tierfs/only-on-flash.bin > /dev/null 2> $state/eio.err && grep 'Input/output error' $state/eio.err"
  check destaged-data-after-blank-flash sh -c "echo 3 > /proc/sys/vm/drop_caches && test \"\$(sha256sum $file | cut -d' ' -f1)\" = \"\$(cat $state/sum)\""
  systemctl stop tierfsd # a clean stop: the metadata in the bucket is current
  say "POWEROFF"
  systemctl poweroff
fi
