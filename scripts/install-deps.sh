#!/usr/bin/env bash
# Installs what Hypedeck needs on a Debian/Ubuntu machine, skipping what is already there.
#   scripts/install-deps.sh run    # build and run the desktop app
#   scripts/install-deps.sh test   # also everything the test suites use
#   scripts/install-deps.sh bench  # also what the benchmarks compare against
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-run}
# `bench`: everything `test` needs, plus the tools the benchmarks compare against.
bench=0
if [ "$purpose" = bench ]; then purpose=test; bench=1; fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

pkgs=(libwebkit2gtk-4.1-dev libsoup-3.0-dev librsvg2-dev libayatana-appindicator3-dev
      libxdo-dev libssl-dev build-essential pkg-config file curl ca-certificates
      e2fsprogs)
# The VM backend: QEMU for the host architecture.
case "$(uname -m)" in
  aarch64) pkgs+=(qemu-system-arm) ;;
  *) pkgs+=(qemu-system-x86) ;;
esac
if [ "$purpose" = test ]; then
  pkgs+=(xvfb xauth webkit2gtk-driver dbus dbus-x11 gnome-keyring libsecret-tools keyutils
         chromium fonts-dejavu-core imagemagick x11-utils
         busybox-static docker-registry cpio jq openssl python3 python3-venv iproute2
         squashfs-tools patchelf debootstrap tmux)
fi

if [ "$bench" = 1 ]; then
  pkgs+=(skopeo umoci nginx-light)
fi

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing Debian packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
else
  echo "warning: not a Debian/Ubuntu machine; install the equivalents of: ${pkgs[*]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust is not installed; get it from rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  # hypedeck-guest-init is a static musl binary (the guest's PID 1).
  musl="$(uname -m)-unknown-linux-musl"
  rustup target list --installed 2>/dev/null | grep -q "^$musl$" || rustup target add "$musl"
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "error: Node.js 20+ with npm is not installed" >&2
  exit 1
fi

# npm ci is fast and exact; skip it when node_modules matches the lock file already.
stamp=node_modules/.hypedeck-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "== npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# The vsock exec suite runs QEMU's vhost-user-vsock device against rust-vmm's daemon (the
# hybrid-vsock protocol Cloud Hypervisor and the vz helper speak too).
if [ "$purpose" = test ] && [ ! -x .ci/tools/bin/vhost-device-vsock ]; then
  echo "== cargo install vhost-device-vsock"
  cargo install vhost-device-vsock --version 0.3.0 --locked --root "$PWD/.ci/tools" --quiet
fi
# The proxy benchmark runs its own nginx on a free loopback port; the service the Debian package
# just installed (port 80) is not wanted. An nginx the user had before is left alone.
if [ "$bench" = 1 ] && [[ " ${missing[*]:-} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
  "${sudo_cmd[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
fi
# The proxy benchmark's load client.
if [ "$bench" = 1 ] && [ ! -x .bench-cache/oha/bin/oha ]; then
  echo "== cargo install oha"
  cargo install oha --version 1.16.0 --locked --root "$PWD/.bench-cache/oha" --quiet
fi
# The macOS backend (hv-vz) is type-checked on every run.
if [ "$purpose" = test ] && command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -q '^aarch64-apple-darwin$' ||
    rustup target add aarch64-apple-darwin
fi

# Contract fuzzing (tests/sdk/contract.test.mjs): schemathesis from PyPI, pinned.
if [ "$purpose" = test ] && ! .ci/tools/venv/bin/schemathesis --version 2>/dev/null | grep -q ' 4\.32\.5$'; then
  echo "== pip install schemathesis"
  python3 -m venv .ci/tools/venv
  .ci/tools/venv/bin/pip install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

if [ "$purpose" = test ] && [ ! -x .ci/tools/bin/tauri-driver ]; then
  echo "== cargo install tauri-driver"
  cargo install tauri-driver --version '^2' --locked --root "$PWD/.ci/tools" --quiet
fi
