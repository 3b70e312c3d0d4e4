#!/usr/bin/env bash
# Proves a built AppImage is complete: its runtime finds and unpacks the image, and it runs
# (command line, and the desktop window up to the UI's first paint) inside a Debian 12 root
# that has only what every Linux desktop has (glibc, OpenGL/Mesa, X11, fontconfig, fonts)
# and no GTK, WebKitGTK or libsoup, so everything else must come from the AppImage.
#   scripts/check-appimage.sh target/release/bundle/appimage/Hypedeck_*.AppImage
# Then, on this host, it boots the hello sandbox from the AppImage's window (part 4, below).
# Needs root (chroot, mount namespace), debootstrap and Xvfb. The Debian root is kept in
# $APPIMAGE_CHECK_ROOT (default .ci/tools/appimage-root) and built on first use.
set -euo pipefail
image=$(readlink -f "${1:?usage: check-appimage.sh <Hypedeck.AppImage>}")
fail() { echo "check-appimage: $*" >&2; exit 1; }
# Whether process $1 runs with LD_LIBRARY_PATH into an unpacked AppImage (its children would
# load the bundled libraries in place of their own).
libpath_into_appimage() {
  tr '\0' '\n' <"/proc/$1/environ" | grep -q '^LD_LIBRARY_PATH=.*hypedeck/appimage'
}
# Part 4, run inside scripts/test-session.sh (a private D-Bus session with a keychain): the
# AppImage's window runs the engine, which builds the hello sample and boots it under the
# host's QEMU; QEMU, a host program, must not inherit a library path into the AppImage.
if [[ ${2:-} == --boot-hello ]]; then
  data=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  export HYPEDECK_CONFIG_DIR=$data/config
  mkdir -p "$HYPEDECK_CONFIG_DIR"
  echo "{\"listen\": \"127.0.0.1:$port\"}" >"$HYPEDECK_CONFIG_DIR/settings.json"
  # No templates: this check is about the AppImage's environment; a template build would boot a
  # second VM beside hello (templates have their own suite).
  NO_AT_BRIDGE=1 HYPEDECK_TEMPLATES=off HYPEDECK_DATA_DIR=$data/data "$image" >"$data/app.log" 2>&1 &
  app=$!
  trap 'kill $app 2>/dev/null; wait $app 2>/dev/null || true; rm -rf "$data"' EXIT
  url=http://127.0.0.1:$port
  for _ in $(seq 1 120); do curl -sf "$url/health" >/dev/null && break; sleep 0.5; done
  token=$("$image" hypedeck --data-dir "$data/data" token) || fail "no API token: $(tail "$data/app.log")"
  api() { curl -sS -m 300 -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
  api -X POST "$url/system/samples/hello" | grep -q '"status":"ready"' || fail "the hello sample was not built"
  id=$(api -X POST "$url/instances" -d '{"name":"hello","image":"hypedeck.local/samples/hello:1","vcpus":1,"size":"256MB"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])') || fail "create failed: $(tail "$data/app.log")"
  state=$(api "$url/instances/$id/wait?state=Running&timeout=240s") ||
    fail "waiting for hello failed: $(tail "$data/app.log")"
  grep -q '"state":"Running"' <<<"$state" || fail "hello did not reach Running: $state"
  greeted=0
  for _ in $(seq 1 60); do
    # Read whole, then matched: `grep -q` leaving early would fail curl (and the pipe).
    logs=$(api "$url/instances/$id/logs?source=app") || logs=
    if grep -q 'Hello from a Hypedeck sandbox!' <<<"$logs"; then greeted=1; break; fi
    sleep 0.5
  done
  ((greeted)) || fail "hello did not greet"
  qemu=
  for _ in $(seq 1 20); do
    qemu=$(pgrep -f "qemu-system.*$id" | head -1) || qemu=
    [[ -n $qemu ]] && break
    sleep 0.5
  done
  [[ -n $qemu ]] || fail "no QEMU runs for $id: $(api "$url/instances/$id" || true); $(tail "$data/app.log")"
  if libpath_into_appimage "$qemu"; then fail "QEMU inherited a library path into the AppImage"; fi
  [[ $(api -o /dev/null -w '%{http_code}' -X DELETE "$url/instances/$id") == 204 ]] || fail "delete failed"
  echo "check-appimage: the AppImage's window booted the hello sandbox under the host's QEMU"
  exit 0
fi

# chroot and debootstrap need root.
if [[ $(id -u) != 0 ]]; then command -v sudo >/dev/null || fail "needs root (chroot)"; exec sudo "$0" "$@"; fi

# 1. The runtime and the image behind it.
[[ $(head -c4 "$image" | od -An -c | tr -d ' ') == '177ELF' ]] || fail "not an ELF file"
[[ $(dd if="$image" bs=1 skip=8 count=3 status=none | od -An -tx1 | tr -d ' ') == 414902 ]] ||
  fail "no AppImage type 2 magic at byte 8"
offset=$("$image" --appimage-offset)
[[ $(tail -c +$((offset + 1)) "$image" | head -c4) == hsqs ]] ||
  fail "no SquashFS image at the offset the runtime names ($offset)"
"$image" --appimage-version
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && "$image" --appimage-extract usr/bin >/dev/null)
for f in squashfs-root/usr/bin/hypedeck squashfs-root/usr/bin/hypedeck-desktop; do
  [[ -x $scratch/$f ]] || fail "--appimage-extract usr/bin did not give $f"
done
[[ ! -e $scratch/squashfs-root/usr/lib ]] || fail "--appimage-extract usr/bin unpacked more than usr/bin"
# `doctor` exits 1 when something (e.g. the keychain) is missing here; only its guest-init
# line matters: the bundled one, found from the bundled CLI.
doctor=$(env -u HYPEDECK_GUEST_INIT "$image" hypedeck --data-dir "$scratch/data" doctor 2>&1 || true)
grep -qE "^\[ok\] Guest init: Found at .*/hypedeck/appimage/[0-9a-f]{16}/usr/bin/\.\./lib/hypedeck/hypedeck-guest-init\.$" <<<"$doctor" ||
  fail "the bundled hypedeck does not find the bundled guest init: $doctor"
if "$image" --appimage-bogus 2>/dev/null; then fail "an unknown --appimage- option was accepted"; fi

# 2. A Debian 12 root without the desktop stack.
root=$(readlink -f "${APPIMAGE_CHECK_ROOT:-.ci/tools/appimage-root}")
host_libs=libc6,libgcc-s1,libstdc++6,zlib1g,libexpat1,libcom-err2,libp11-kit0,libasound2,libusb-1.0-0
host_libs+=,libgl1,libegl1,libgles2,libopengl0,libglx0,libgbm1,libdrm2,libgl1-mesa-dri,libegl-mesa0,libglx-mesa0
host_libs+=,libx11-6,libx11-xcb1,libxcb1,libfontconfig1,libfreetype6,libharfbuzz0b,fonts-dejavu-core
if [[ ! -f $root/.complete || $(cat "$root/.complete") != "$host_libs" ]]; then
  rm -rf "$root"
  debootstrap --variant=minbase --include="$host_libs" bookworm "$root" http://deb.debian.org/debian >/dev/null ||
    fail "debootstrap failed"
  echo "$host_libs" >"$root/.complete"
fi
for absent in libgtk-3.so.0 libwebkit2gtk-4.1.so.0 libsoup-3.0.so.0 libjavascriptcoregtk-4.1.so.0; do
  [[ -z $(find "$root/usr/lib" -name "$absent*" 2>/dev/null) ]] ||
    fail "the check root has $absent: it would not prove the AppImage brings it"
done
rm -rf "$root/tmp/check" "$root/root/.cache/hypedeck"
mkdir -p "$root/tmp/check"
cp "$image" "$root/tmp/check/Hypedeck.AppImage"

# 3. Run it there: the command line, then the window on a private X server.
Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3>"$scratch/display" >"$scratch/xvfb.log" 2>&1 &
xvfb=$!
trap 'kill $xvfb 2>/dev/null || true; rm -rf "$scratch"' EXIT
for _ in $(seq 1 100); do [[ -s $scratch/display ]] && break; sleep 0.2; done
display=$(cat "$scratch/display")
[[ -n $display ]] || fail "Xvfb did not start: $(cat "$scratch/xvfb.log")"

# Runs a command in the check root, with /proc, /dev and the X socket in a private namespace.
in_root() {
  unshare --mount --propagation private -- sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
      mkdir -p "$root/tmp/.X11-unix" && mount --bind /tmp/.X11-unix "$root/tmp/.X11-unix" &&
      exec chroot "$root" env -i HOME=/root PATH=/usr/bin:/bin "$@"' sh "$root" "$@"
}
# Processes running a program from the check root (the app, its engine, WebKit's helpers).
from_root() {
  for pid in $(pgrep -f .); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    [[ $exe == "$root/"* ]] && echo "$pid $exe"
  done
  return 0
}

in_root /tmp/check/Hypedeck.AppImage --version | grep -qx "hypedeck-desktop [0-9.]*" ||
  fail "--version failed in the check root"
in_root /tmp/check/Hypedeck.AppImage hypedeck --version | grep -qx "hypedeck [0-9.]*" ||
  fail "hypedeck --version failed in the check root"

in_root DISPLAY=":$display" NO_AT_BRIDGE=1 HYPEDECK_DATA_DIR=/tmp/check/data \
  HYPEDECK_FIRST_PAINT_FILE=/tmp/check/paint RUST_LOG=info \
  timeout 120 /tmp/check/Hypedeck.AppImage >"$scratch/app.log" 2>&1 &
app=$!
for _ in $(seq 1 240); do
  [[ -s $root/tmp/check/paint ]] && break
  kill -0 $app 2>/dev/null || break
  sleep 0.5
done
if [[ ! -s $root/tmp/check/paint ]]; then
  kill $app 2>/dev/null || true
  fail "the window never painted its UI; its log:
$(tail -30 "$scratch/app.log")"
fi
# The page was rendered by the bundled WebKit helper, not one from the (absent) system copy.
helpers=$(from_root | awk '$2 ~ /WebKitWebProcess$/ {print $2}')
[[ -n $helpers ]] || fail "no WebKitWebProcess runs from the check root"
while read -r exe; do
  [[ $exe == "$root/root/.cache/hypedeck/appimage/"*/usr/lib/*/webkit2gtk-4.1/WebKitWebProcess ]] ||
    fail "a WebKit helper came from $exe, not from the AppImage"
done <<<"$helpers"
# The bundled libraries come from RPATHs: nothing the app starts (QEMU, mkfs.ext4, apt)
# inherits a library path into the AppImage.
desktop=$(from_root | awk '$2 ~ /hypedeck-desktop$/ {print $1}' | head -1)
[[ -n $desktop ]] || fail "the desktop app is not running"
if libpath_into_appimage "$desktop"; then
  fail "the desktop app runs with LD_LIBRARY_PATH into the AppImage; its children would inherit it"
fi
if grep -q "security issue" "$scratch/app.log"; then fail "tauri warned about the AppImage environment"; fi
kill $app 2>/dev/null || true
wait $app 2>/dev/null || true
from_root | awk '{print $1}' | xargs -r kill 2>/dev/null || true
DISPLAY=":$display" "$(dirname "$0")/test-session.sh" "$0" "$image" --boot-hello
echo "check-appimage: $(basename "$image") ($(du -h "$image" | cut -f1)) runs without GTK or WebKitGTK installed; first paint after $(cat "$root/tmp/check/paint") ms"
