# tierfs: `make run` serves an embedded default at ./mnt, `make test` runs every test.
# Both install what a fresh Debian 12 machine lacks (apt packages, then npm ci).

SHELL := /bin/bash
# libfuse3-dev and pkg-config build our FUSE binding; fuse3 brings fusermount3 (auto_unmount);
# liburing-dev's static library goes into the device addon (nothing needed at run time).
APT_PACKAGES := libfuse3-dev fuse3 pkg-config fio liburing-dev
# make bench also mounts the reference file system on fuse-native, which links libfuse 2.
BENCH_APT_PACKAGES := libfuse2
# The tests also check the unit files and the packer template with these.
TEST_APT_PACKAGES := systemd packer samba smbclient nftables
# make image and make boot-test build and boot a Debian 12 disk image.
IMAGE_APT_PACKAGES := mmdebstrap qemu-system-x86 qemu-utils extlinux syslinux-common fdisk e2fsprogs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TS_SOURCES := $(shell find src bench -name '*.ts' 2>/dev/null)
TIERFS := node bin/tierfs.js

.PHONY: all deps apt-deps test-apt-deps image-apt-deps bench-deps build run test soak bench bundle image boot-test clean

all: build

define install_apt
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

apt-deps:
	$(call install_apt,$(APT_PACKAGES))

test-apt-deps:
	$(call install_apt,$(TEST_APT_PACKAGES))

image-apt-deps:
	$(call install_apt,$(IMAGE_APT_PACKAGES))

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

deps: apt-deps node_modules/.installed

# npm ci builds both native addons (package.json's install script); a changed C file rebuilds them.
NATIVE_ADDONS := src/device/native/build/Release/tierfs_device.node src/fuse/native/build/Release/tierfs_fuse.node
$(NATIVE_ADDONS) &: $(wildcard src/*/native/*.c src/*/native/*.h src/*/native/binding.gyp src/native/*.h) | node_modules/.installed
	npm run install --silent
	@touch $(NATIVE_ADDONS)

dist/.built: node_modules/.installed $(NATIVE_ADDONS) tsconfig.json $(TS_SOURCES)
	npx tsc -p tsconfig.json
	@touch $@

build: deps dist/.built

# Formats ./var on first use (a sparse 4 GiB flash file, metadata beside it, packs in
# ./var/objects), then serves at ./mnt; the admin socket is ./var/admin.sock
# (export TIERFS_SOCKET=$PWD/var/admin.sock for tierfs status, stat, destage ...).
OBJECTS := file://$(CURDIR)/var/objects
run: build
	@mkdir -p var/objects
	@test -e var/meta/tierfs.db || $(TIERFS) format --flash var/flash --size 4G --meta var/meta --target $(OBJECTS)
	@echo "From another shell: export PATH=$(CURDIR)/bin:\$$PATH TIERFS_SOCKET=$(CURDIR)/var/admin.sock; then tierfs status, tierfs --help"
	@echo "(bash completion: source $(CURDIR)/bin/completion.bash)"
	$(TIERFS) serve --flash var/flash --meta var/meta --mount mnt --target $(OBJECTS) --admin-socket var/admin.sock

# test/ is type-checked too (tap runs it through ts-node, which does not stop at type errors).
test: build test-apt-deps
	npx tsc -p test/tsconfig.json
	TIERFS_LOG=$${TIERFS_LOG:-warn} npx tap

# The deterministic simulation (test/sim) across seeds for SOAK_SECONDS (default 10 minutes;
# make test runs it for 45 s); prints the seeds that failed.  Replay one: TIERFS_SEED=<seed>
# TIERFS_SIM_VERBOSE=1 make soak.
SOAK_SECONDS ?= 600
soak: build
	TIERFS_SIM_SECONDS=$(SOAK_SECONDS) npx tap --disable-coverage --timeout 0 test/simulation.test.ts

bench-deps:
	$(call install_apt,$(BENCH_APT_PACKAGES))

bench/reference/node_modules/.installed: bench/reference/package.json bench/reference/package-lock.json
	npm ci --prefix bench/reference --no-audit --no-fund
	@touch $@

bench: build bench-deps bench/reference/node_modules/.installed
	node dist/bench/run.js

# The appliance: the bundle packer and make image install, a bootable Debian 12
# image (output/tierfs.qcow2, about 2 minutes), and its boot test in qemu
# (software emulation, about 2.5 minutes; see README).
bundle: build
	appliance/bundle.sh

IMAGE_INPUTS := dist/.built $(wildcard appliance/* systemd/*) test/scripts/posix_checks.py
output/tierfs.qcow2: $(IMAGE_INPUTS) | image-apt-deps
	appliance/build-image.sh

image: build image-apt-deps output/tierfs.qcow2

boot-test: image
	appliance/boot-test.sh

clean:
	rm -rf dist .tap src/device/native/build src/fuse/native/build bench/reference/node_modules output
