#!/usr/bin/env bash
# Builds the guest-kernel bundle the packages carry (see crates/boot/src/bundle.rs) for ARCH
# (default: this machine's) into OUT, with BIN (a built `hypedeck`): Debian's cloud kernel as
# pinned in packaging/guest-kernel.pin, checked against the pinned checksum.
#
# When the archive has moved on from the pinned version (Debian keeps only its newest kernel
# once a point release is out), the build says so and bundles the newest one, whose package,
# version and checksum its manifest records; KERNEL_PIN=strict (release builds) fails instead.
# `scripts/kernel-bundle.sh --pin` prints the pin lines for what the archive has now.
#   scripts/kernel-bundle.sh BIN OUT [ARCH]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pins=$here/packaging/guest-kernel.pin
cache=$here/.ci/cache/kernel
if [ "${1:-}" = --pin ]; then
  for arch in amd64 arm64; do
    deb=$("$here/scripts/kernel-deb.sh" "$cache" "$arch")
    echo "$arch $(dpkg-deb --field "$deb" Package)=$(dpkg-deb --field "$deb" Version) $(sha256sum "$deb" | cut -d' ' -f1)"
  done
  exit 0
fi
bin=${1:?usage: $0 BIN OUT [ARCH] | --pin} out=${2:?usage: $0 BIN OUT [ARCH]}
arch=${3:-$(dpkg --print-architecture)}
fail() { echo "kernel-bundle: $*" >&2; exit 1; }
read -r pin sha < <(awk -v a="$arch" '$1 == a {print $2, $3}' "$pins") || fail "no pin for $arch in $pins"
deb=$("$here/scripts/kernel-deb.sh" "$cache" "$arch" "$pin")
got="$(dpkg-deb --field "$deb" Package)=$(dpkg-deb --field "$deb" Version)"
if [ "$got" = "$pin" ]; then
  [ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$sha" ] ||
    fail "$(basename "$deb") does not match the checksum pinned in $pins"
  "$bin" kernel-bundle --deb "$deb" --out "$out" --pin "$pin"
else
  [ "${KERNEL_PIN:-}" != strict ] || fail "the archive no longer has the pinned $pin (it has $got); update $pins (scripts/kernel-bundle.sh --pin)"
  echo "kernel-bundle: warning: bundling $got, not the pinned $pin (no longer in the archive); the bundle's kernel.json records it" >&2
  "$bin" kernel-bundle --deb "$deb" --out "$out"
fi
