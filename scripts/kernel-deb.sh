#!/usr/bin/env bash
# Prints the path of the guest kernel's .deb for ARCH (default: this machine's), downloading
# it into DIR with `apt-get download` if it is not there yet: the versioned package
# linux-image-cloud-<arch> depends on (as crates/boot resolves it), or PIN
# (`package=version`) while the archive still has that version. Another architecture's
# package needs that architecture in dpkg (added, with an apt update, when missing). For the
# packages' bundled kernel (scripts/kernel-bundle.sh) and for runs that cannot reach a
# package mirror (the netns suite), which hand it to the engine as HYPEDECK_KERNEL_DEB.
#   scripts/kernel-deb.sh DIR [ARCH [PIN]]
set -euo pipefail
dir=${1:?usage: $0 DIR [ARCH [PIN]]}
host=$(dpkg --print-architecture)
arch=${2:-$host}
pin=${3:-}
sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
qual=; [ "$arch" = "$host" ] || qual=":$arch"
if [ -n "$qual" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  "${sudo_cmd[@]}" dpkg --add-architecture "$arch"
  "${sudo_cmd[@]}" apt-get update -qq >&2
fi
meta=linux-image-cloud-$arch$qual
package() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub(/:.*/, "", $2); print $2; exit}'; }
pkg=$(package)
if [ -z "$pkg" ]; then
  "${sudo_cmd[@]}" apt-get update -qq >&2
  pkg=$(package)
fi
[ -n "$pkg" ] || { echo "kernel-deb.sh: apt knows no kernel for $meta" >&2; exit 1; }
want=$pkg$qual version=
if [ -n "$pin" ]; then
  if apt-cache show "${pin%%=*}$qual=${pin#*=}" >/dev/null 2>&1; then
    pkg=${pin%%=*} version=${pin#*=} want="$pkg$qual=$version"
  else
    echo "kernel-deb.sh: the archive no longer has the pinned $pin; the newest is $pkg" >&2
  fi
fi
mkdir -p "$dir"
found() { find "$dir" -maxdepth 1 -name "${pkg}_${version:-*}_${arch}.deb" | sort | tail -1; }
deb=$(found)
if [ -z "$deb" ]; then
  # Older kernels' .debs (of this architecture) are not needed once a newer one is used.
  find "$dir" -maxdepth 1 -name "linux-image-*_${arch}.deb" -delete
  # As root, apt would hand the download to its `_apt` user, who may not write in DIR.
  sandbox=(); [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
  (cd "$dir" && apt-get download -qq "${sandbox[@]}" "$want" >&2)
  deb=$(found)
fi
[ -n "$deb" ] || { echo "kernel-deb.sh: apt-get download $want left no .deb in $dir" >&2; exit 1; }
realpath "$deb"
