# Hypedeck: two commands for a fresh Debian/Ubuntu machine.
#   make run    installs what is missing, builds the UI and opens the desktop app
#   make test   installs what is missing and runs every check and test suite
SHELL := /bin/bash
.DEFAULT_GOAL := run
CARGO ?= cargo

.PHONY: ci-free-disk run test deps deps-test deps-bench ui guest-init lint unit bins kernel-bundle kernel-bundle-arm64 sdk-test vm-test netns-test desktop-test dist serve bench bench-net bench-ui clean check-macos

MUSL_TARGET := $(shell uname -m)-unknown-linux-musl
KERNEL_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

deps:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test
deps-bench:
	@scripts/install-deps.sh bench

ui:
	npm run build:ui

# The guest's PID 1, a static binary the engine packs into the initramfs.
guest-init:
	$(CARGO) build --locked --release --target $(MUSL_TARGET) -p hypedeck-guest-init

# The vz backend and its hypedeck-vz helper, type-checked for macOS from any host.
check-macos:
	rustup target list --installed | grep -qx aarch64-apple-darwin || rustup target add aarch64-apple-darwin
	$(CARGO) check --locked --target aarch64-apple-darwin -p hypedeck-hv-vz --all-targets

# The guest kernel that ships with the app (pinned in packaging/guest-kernel.pin), unpacked for
# a cargo build into target/guest-kernel/<arch>, where target/*/hypedeck* find it.
kernel-bundle:
	$(CARGO) build --locked -p hypedeck-cli
	scripts/kernel-bundle.sh target/debug/hypedeck target/guest-kernel/$(KERNEL_ARCH)

run: deps ui guest-init kernel-bundle
	$(CARGO) run -p hypedeck-desktop

# Headless daemon for scripts and the official SDKs/CLI.
serve: deps guest-init kernel-bundle
	$(CARGO) run -p hypedeck-cli -- serve

lint: ui check-macos
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	npm run typecheck

unit: ui
	$(CARGO) test --workspace --locked
	npm run test:ui

# hypedeck-fake: the CLI with `--hypervisor fake` for suites that need instances before the
# QEMU backend lands; hypedeck: the shipped build.
bins: ui guest-init
	$(CARGO) build --locked -p hypedeck-cli --features fake-hypervisor
	cp target/debug/hypedeck target/debug/hypedeck-fake
	$(CARGO) build --locked -p hypedeck-cli -p hypedeck-desktop
	scripts/kernel-bundle.sh target/debug/hypedeck target/guest-kernel/$(KERNEL_ARCH)

sdk-test: bins
	scripts/test-session.sh bash -c '$(CARGO) test --locked -p hypedeck-secrets -- --include-ignored && \
	  HYPEDECK_BIN=target/debug/hypedeck HYPEDECK_FAKE_BIN=target/debug/hypedeck-fake \
	  SCHEMATHESIS=$(CURDIR)/.ci/tools/venv/bin/schemathesis node --test tests/sdk/'

# Real VMs under QEMU (KVM when it really boots, TCG otherwise), images from a registry on
# 127.0.0.1 built by the suite itself, driven through the official SDK.
vm-test: bins
	$(CARGO) test --locked -p hypedeck-hv-qemu --test qemu_boot -- --include-ignored --test-threads=2
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/debug/hypedeck \
	  node --test --test-concurrency=1 tests/vm/

# What a sandbox on the default network can and cannot reach, proved from inside real guests
# (root: network namespaces). scripts/netns.sh makes a "host" namespace (engine, registry,
# keyring, guests) and a fake internet on TEST-NET addresses; nothing leaves the machine. There
# is no package mirror inside, so the guest kernel's .deb is fetched first and handed over (the
# bundled kernel is switched off here: this suite keeps the .deb path booting real guests;
# `dist` proves the bundle offline).
# HYPEDECK_BIN=<other build> in the environment runs the suite against that build instead.
netns-test: bins
	deb=$$(scripts/kernel-deb.sh .ci/cache/kernel) && trap 'scripts/netns.sh down' EXIT && \
	  scripts/netns.sh up && \
	  ip netns exec hdh scripts/test-session.sh env HYPEDECK_BIN="$${HYPEDECK_BIN:-target/debug/hypedeck}" HYPEDECK_KERNEL_DEB="$$deb" \
	  HYPEDECK_KERNEL_BUNDLE=off node --test --test-concurrency=1 tests/netns/

desktop-test: bins
	mkdir -p test-results
	xvfb-run -a -s "-screen 0 1280x800x24 -nolisten tcp" scripts/test-session.sh \
	  env APP_BIN=target/debug/hypedeck-desktop HYPEDECK_FAKE_BIN=target/debug/hypedeck-fake \
	  HYPEDECK_BIN=target/debug/hypedeck \
	  PATH="$(CURDIR)/.ci/tools/bin:$$PATH" bash tests/desktop/run.sh

# Installable bundles (release): the .deb (tauri), checked by unpacking it into an empty
# directory, and the AppImage, made from the .deb's tree by scripts/appimage.sh with our own
# runtime (tauri's AppImage step needs linuxdeploy, which only GitHub serves) and checked by
# running it in a Debian root without GTK or WebKitGTK. macOS bundles are built on a Mac (see
# crates/hv-vz/README.md for signing).
BUNDLE_NAME := Hypedeck_$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)_$(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB := target/release/bundle/deb/$(BUNDLE_NAME).deb
APPIMAGE := target/release/bundle/appimage/$(BUNDLE_NAME).AppImage
# Both carry the guest kernel (target/guest-kernel/<arch>) and are proved to boot sandboxes on it
# with no network (scripts/check-offline.sh). KERNEL_PIN=strict fails when the archive no longer
# has the pinned kernel instead of bundling its newest one.
dist: deps-test guest-init
	$(CARGO) build --locked --release -p hypedeck-cli
	scripts/kernel-bundle.sh target/release/hypedeck target/guest-kernel/$(KERNEL_ARCH)
	$(CARGO) build --locked --release --target $(MUSL_TARGET) -p hypedeck-appimage-runtime
	npx tauri build --ci --bundles deb -- --locked
	scripts/check-deb.sh $(DEB)
	scripts/appimage.sh $(DEB) target/$(MUSL_TARGET)/release/hypedeck-appimage-runtime $(APPIMAGE)
	scripts/check-appimage.sh $(APPIMAGE)
	scripts/check-offline.sh deb $(DEB)
	scripts/check-offline.sh appimage $(APPIMAGE)
	$(MAKE) kernel-bundle-arm64

# The macOS bundle's kernel (tauri.conf.json: Contents/Resources/kernel), made here as the
# packages' is: Debian's arm64 cloud kernel as the raw Image Virtualization.framework boots.
kernel-bundle-arm64:
	scripts/kernel-bundle.sh target/release/hypedeck target/guest-kernel/arm64 arm64
	test "$$(od -An -c -j 56 -N 4 target/guest-kernel/arm64/vmlinuz | tr -d ' ')" = ARMd

test: deps-test lint unit sdk-test vm-test netns-test desktop-test ci-free-disk dist
	@echo "all suites passed"

# On CI only (CI=true): the debug build (about 7 GB) is not needed by `dist`, whose release build
# needs about 3 GB more; a small CI disk ran out there. Locally the debug build is kept.
ci-free-disk:
	@if [ "$${CI:-}" = true ]; then echo "CI: removing target/debug before the release build"; rm -rf target/debug; fi
	@df -h . | tail -1

# Benchmarks (not tests): release build, real QEMU guest, real keychain, mitmproxy from PyPI
# as the comparison. Appends a dated table to BENCHMARKS.md.
bench: deps-bench guest-init
	$(CARGO) build --locked --release -p hypedeck-cli
	test -x .bench-venv/bin/mitmdump || (python3 -m venv .bench-venv && .bench-venv/bin/pip install -q mitmproxy)
	scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck MITMDUMP=.bench-venv/bin/mitmdump \
	  node tests/bench/egress-bench.mjs | tee -a BENCHMARKS.md
	scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=$(CURDIR)/BENCHMARKS.md \
	  node tests/bench/ports-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/exec-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/flood-bench.mjs
	scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=$(CURDIR)/BENCHMARKS.md \
	  node tests/bench/boot-bench.mjs
	scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=$(CURDIR)/BENCHMARKS.md \
	  node tests/bench/images-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/fork-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/template-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/wake-bench.mjs
	PATH="$(CURDIR)/.ci/tools/bin:$$PATH" scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/reclaim-bench.mjs
	scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck OHA=.bench-cache/oha/bin/oha \
	  MITMDUMP=.bench-venv/bin/mitmdump BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/proxy-bench.mjs
	$(CARGO) build --locked --release -p hypedeck-cli --features fake-hypervisor --target-dir target/fake
	scripts/test-session.sh env HYPEDECK_FAKE_BIN=target/fake/release/hypedeck BENCH_OUT=$(CURDIR)/BENCHMARKS.md \
	  node tests/bench/scale-bench.mjs
	scripts/test-session.sh env HYPEDECK_FAKE_BIN=target/fake/release/hypedeck BENCH_OUT=$(CURDIR)/BENCHMARKS.md \
	  node tests/bench/stats-bench.mjs
	$(MAKE) bench-net

# The guest network from inside real guests (root: network namespaces, as netns-test), this
# tree against an older commit built in a git worktree (default: the last QEMU user-mode/slirp
# build): plain and proxied downloads from a fake internet, connects/s, a forwarded port.
NET_BENCH_BEFORE ?= 2704e3b
NET_BENCH_BEFORE_DIR ?= target/bench-before/$(NET_BENCH_BEFORE)
bench-net: guest-init
	$(CARGO) build --locked --release -p hypedeck-cli
	test -d $(NET_BENCH_BEFORE_DIR) || git worktree add --detach $(NET_BENCH_BEFORE_DIR) $(NET_BENCH_BEFORE)
	test "$$(git -C $(NET_BENCH_BEFORE_DIR) rev-parse HEAD)" = "$$(git rev-parse $(NET_BENCH_BEFORE)^{commit})"
	cd $(NET_BENCH_BEFORE_DIR) && $(CARGO) build --locked --release -p hypedeck-cli && \
	  $(CARGO) build --locked --release --target $(MUSL_TARGET) -p hypedeck-guest-init
	deb=$$(scripts/kernel-deb.sh .ci/cache/kernel) && trap 'scripts/netns.sh down' EXIT && \
	  scripts/netns.sh up && \
	  ip netns exec hdh scripts/test-session.sh env HYPEDECK_BIN=target/release/hypedeck \
	  HYPEDECK_BIN_BEFORE="$(abspath $(NET_BENCH_BEFORE_DIR))/target/release/hypedeck" HYPEDECK_KERNEL_DEB="$$deb" \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/net-bench.mjs

# UI benchmarks (not tests): release desktop app's start to first paint under Xvfb, and the
# list rendering 1,000 instances in headless Chromium. Appends a dated table to BENCHMARKS.md.
bench-ui: deps-test ui bins
	$(CARGO) build --locked --release -p hypedeck-desktop
	xvfb-run -a -s "-screen 0 1280x800x24 -nolisten tcp" scripts/test-session.sh \
	  env APP_BIN=target/release/hypedeck-desktop HYPEDECK_FAKE_BIN=target/debug/hypedeck-fake \
	  BENCH_OUT=$(CURDIR)/BENCHMARKS.md node tests/bench/ui-bench.mjs

clean:
	$(CARGO) clean
	rm -rf ui/dist test-results
