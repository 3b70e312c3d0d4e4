#!/usr/bin/env bash
# Runs tests/packaging/offline.test.mjs against a built package inside a network namespace
# whose only interface is loopback (root: `ip netns`): the .deb unpacked into an empty
# directory, or the AppImage.
#   scripts/check-offline.sh deb <package.deb>
#   scripts/check-offline.sh appimage <Hypedeck.AppImage>
#   scripts/check-offline.sh bin target/debug/hypedeck     (a cargo build, after make kernel-bundle)
set -euo pipefail
kind=${1:?usage: check-offline.sh deb|appimage <file>} file=$(readlink -f "${2:?usage: check-offline.sh deb|appimage <file>}")
here=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "check-offline: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root (network namespaces)"
ns=hdoff-$$
work=$(mktemp -d)
cleanup() {
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
case $kind in
  deb)
    dpkg -x "$file" "$work/root"
    bin=$work/root/usr/bin/hypedeck
    bundle=$work/root/usr/lib/hypedeck/kernel
    label="the .deb (unpacked)"
    ;;
  appimage)
    # The AppImage's own `hypedeck`: `Hypedeck.AppImage hypedeck <args>`.
    printf '#!/bin/sh\nexec %q hypedeck "$@"\n' "$file" >"$work/hypedeck"
    chmod +x "$work/hypedeck"
    bin=$work/hypedeck
    (cd "$work" && "$file" --appimage-extract usr/lib/hypedeck/kernel >/dev/null)
    bundle=$work/squashfs-root/usr/lib/hypedeck/kernel
    label="the AppImage"
    ;;
  bin)
    bin=$file
    bundle=$(dirname "$file")/../guest-kernel/$(dpkg --print-architecture)
    label="$(basename "$file") (cargo build)"
    ;;
  *) fail "unknown kind $kind" ;;
esac
[[ -f $bundle/kernel.json ]] || fail "$label carries no kernel bundle"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" env -C "$here" scripts/test-session.sh env HYPEDECK_BIN="$bin" PACKAGE_LABEL="$label" \
  KERNEL_BUNDLE_DIR="$bundle" PATH="$here/.ci/tools/bin:$PATH" node --test --test-concurrency=1 tests/packaging/
echo "check-offline: $label booted the hello sandbox and a loopback registry's image with no network"
