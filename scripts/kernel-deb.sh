#!/usr/bin/env bash
# Prints the path of the guest kernel's .deb (the versioned package linux-image-cloud-<arch>
# depends on, as crates/boot resolves it), downloading it into DIR with `apt-get download` if
# it is not there yet. For runs that cannot reach a package mirror (the netns suite), which then
# hand it to the engine as HYPEDECK_KERNEL_DEB.
#   scripts/kernel-deb.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
meta=linux-image-cloud-$(dpkg --print-architecture)
package() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
pkg=$(package)
if [ -z "$pkg" ]; then
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq >&2
  pkg=$(package)
fi
[ -n "$pkg" ] || { echo "kernel-deb.sh: apt knows no kernel for $meta" >&2; exit 1; }
mkdir -p "$dir"
deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -1)
if [ -z "$deb" ]; then
  # Older kernels' .debs are not needed once a newer ABI is out.
  find "$dir" -maxdepth 1 -name 'linux-image-*.deb' -delete
  # As root, apt would hand the download to its `_apt` user, who may not write in DIR.
  sandbox=(); [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
  (cd "$dir" && apt-get download -qq "${sandbox[@]}" "$pkg" >&2)
  deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -1)
fi
[ -n "$deb" ] || { echo "kernel-deb.sh: apt-get download $pkg left no .deb in $dir" >&2; exit 1; }
realpath "$deb"
