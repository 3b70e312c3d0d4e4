#!/usr/bin/env bash
# Proves a built .deb is complete without installing it (no root, no container): its control
# fields declare what Hypedeck needs at run time, and its files, unpacked with `dpkg -x` into an
# empty directory, run from there, every shared library resolves, and the packaged `hypedeck`
# finds the packaged guest init rather than anything in the build tree.
#   scripts/check-deb.sh target/release/bundle/deb/Hypedeck_*.deb
set -euo pipefail
deb=${1:?usage: check-deb.sh <package.deb>}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

info=$(dpkg-deb --info "$deb")
for dep in "qemu-system-x86 | qemu-system-arm" e2fsprogs dpkg libwebkit2gtk-4.1-0 libgtk-3-0; do
  grep -qF -- "$dep" <<<"$(grep '^ Depends:' <<<"$info")" || fail "Depends lacks $dep"
done
grep -q '^ Recommends:.*gnome-keyring' <<<"$info" || fail "Recommends lacks gnome-keyring"

dpkg -x "$deb" "$root"
for f in usr/bin/hypedeck usr/bin/hypedeck-desktop usr/lib/hypedeck/hypedeck-guest-init; do
  [[ -x $root/$f ]] || fail "$f is missing or not executable"
done
# The guest kernel ships inside: its boot files, license and manifest (checked by the packaged
# hypedeck itself through `doctor`, below).
kernel=$root/usr/lib/hypedeck/kernel
for f in kernel.json vmlinuz copyright guest-modules; do
  [[ -f $kernel/$f ]] || fail "the bundled kernel lacks $f"
done
ls "$root"/usr/share/applications/*.desktop >/dev/null 2>&1 || fail "no .desktop entry"
ls "$root"/usr/share/icons/hicolor/*/apps/* >/dev/null 2>&1 || fail "no icons"
# The guest init runs as the guest's PID 1: it must be static (no program interpreter).
if readelf -l "$root/usr/lib/hypedeck/hypedeck-guest-init" | grep -q 'Requesting program interpreter'; then
  fail "hypedeck-guest-init is dynamically linked"
fi
for bin in hypedeck hypedeck-desktop; do
  missing=$(ldd "$root/usr/bin/$bin" | grep 'not found' || true)
  [[ -z $missing ]] || fail "$bin needs libraries that are not installed: $missing"
done

"$root/usr/bin/hypedeck" --version
"$root/usr/bin/hypedeck-desktop" --version
# `doctor` exits 1 when something (e.g. the keychain) is missing here; only its guest-init
# line matters: the packaged binary, found from the packaged CLI.
doctor=$(env -u HYPEDECK_GUEST_INIT "$root/usr/bin/hypedeck" --data-dir "$root/data" doctor 2>&1 || true)
grep -qF "[ok] Guest init: Found at $root/usr/bin/../lib/hypedeck/hypedeck-guest-init." <<<"$doctor" ||
  fail "the packaged hypedeck does not find the packaged guest init: $doctor"
grep -qE "^\[ok\] Guest kernel: Linux .* ships with the app, in $root/usr/bin/\.\./lib/hypedeck/kernel; it needs no network\.$" <<<"$doctor" ||
  fail "the packaged hypedeck does not use the packaged kernel: $doctor"

echo "check-deb: $(basename "$deb") ($(du -h "$deb" | cut -f1)) is complete"
# Package size, and the guest kernel's share of it (the README states it).
kernel_deb=$(mktemp -d)/k.tar.xz
tar -C "$kernel" -cJf "$kernel_deb" .
echo "check-deb: size: .deb $(stat -c %s "$deb") bytes; guest kernel $(du -sb "$kernel" | cut -f1) bytes unpacked, $(stat -c %s "$kernel_deb") bytes xz-compressed ($(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['package'], m['version'])" "$kernel/kernel.json"))"
rm -rf "$(dirname "$kernel_deb")"
grep -E '^ (Package|Version|Architecture|Depends|Recommends):' <<<"$info"
