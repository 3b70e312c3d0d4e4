#!/usr/bin/env bash
# Builds Hypedeck's AppImage from the .deb `tauri build` made, with our own runtime
# (crates/appimage-runtime) instead of linuxdeploy/appimagetool, which only GitHub serves.
#   scripts/appimage.sh <package.deb> <runtime> <out.AppImage>
#
# The AppDir is the .deb's tree plus every shared library its programs need, except those
# every desktop Linux has and that must match the host's drivers or configuration (glibc,
# the C++ runtime, OpenGL/EGL/DRM, X11/xcb, fontconfig/freetype/harfbuzz, zlib, expat, ALSA,
# p11-kit): the list below. WebKitGTK starts its helper processes from a directory compiled
# into the library (/usr/lib/<multiarch>/webkit2gtk-4.1); the bundled copy has that path
# rewritten to the same-length relative `././/lib/...`, and AppRun starts the app from
# $APPDIR/usr, so the helpers come from the AppImage too. The same is done for the
# gdk-pixbuf loader list.
set -euo pipefail
deb=${1:?usage: appimage.sh <package.deb> <runtime> <out.AppImage>}
runtime=${2:?usage: appimage.sh <package.deb> <runtime> <out.AppImage>}
out=${3:?usage: appimage.sh <package.deb> <runtime> <out.AppImage>}
fail() { echo "appimage: $*" >&2; exit 1; }
command -v mksquashfs >/dev/null || fail "mksquashfs is missing (apt install squashfs-tools)"
command -v patchelf >/dev/null || fail "patchelf is missing (apt install patchelf)"

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
syslib=/usr/lib/$multiarch
webkit=$syslib/webkit2gtk-4.1
[[ -x $webkit/WebKitWebProcess ]] || fail "WebKitGTK 4.1 is not installed ($webkit)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
app=$work/Hypedeck.AppDir
dpkg -x "$deb" "$app"
lib=$app/usr/lib
mkdir -p "$lib/$multiarch"

# WebKit's helper processes and injected bundle, where the rewritten path points.
mkdir -p "$lib/$multiarch/webkit2gtk-4.1"
cp -a "$webkit/WebKitWebProcess" "$webkit/WebKitNetworkProcess" "$webkit/injected-bundle" \
  "$lib/$multiarch/webkit2gtk-4.1/"
[[ -x $webkit/WebKitGPUProcess ]] && cp -a "$webkit/WebKitGPUProcess" "$lib/$multiarch/webkit2gtk-4.1/"

# gdk-pixbuf loaders (icons, SVG), with their list pointing into the AppDir.
pixbuf=$(ls -d "$syslib"/gdk-pixbuf-2.0/2.10.0)
mkdir -p "$lib/$multiarch/gdk-pixbuf-2.0"
cp -a "$pixbuf" "$lib/$multiarch/gdk-pixbuf-2.0/"
sed -i "s#\"/usr/lib/#\"././/lib/#" "$lib/$multiarch/gdk-pixbuf-2.0/2.10.0/loaders.cache"

# GIO's TLS module (remote Hypeman servers over https) and the GSettings schemas GTK reads.
mkdir -p "$lib/gio/modules" "$app/usr/share/glib-2.0/schemas"
[[ -f $syslib/gio/modules/libgiognutls.so ]] && cp "$syslib/gio/modules/libgiognutls.so" "$lib/gio/modules/"
cp /usr/share/glib-2.0/schemas/gschemas.compiled "$app/usr/share/glib-2.0/schemas/"

# Libraries the host must provide (see the header).
excluded='^(ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl|libmvec|libBrokenLocale|libthread_db|libnss_.*|libcrypt|libgcc_s|libstdc\+\+|libGL|libEGL|libGLX|libGLdispatch|libOpenGL|libGLESv2|libgbm|libdrm|libglapi|libxcb|libX11|libX11-xcb|libfontconfig|libfreetype|libharfbuzz|libz|libexpat|libasound|libcom_err|libusb-1\.0|libp11-kit)\.so'

# Every ELF file in the AppDir, then the libraries they need, until nothing new appears.
elf_files() {
  find "$app" -type f -print0 | while IFS= read -r -d '' f; do
    [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]] && printf '%s\n' "$f"
  done
}
while :; do
  added=0
  while IFS= read -r f; do
    while read -r name path; do
      [[ -n $path && -f $path ]] || continue
      grep -qE "$excluded" <<<"$name" && continue
      [[ -e $lib/$name ]] && continue
      cp -L "$path" "$lib/$name"
      added=1
    done < <(LD_LIBRARY_PATH="$lib" ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
  done < <(elf_files)
  ((added)) || break
done
# (The guest init is static: ldd lists nothing for it, and it needs nothing.)

# The desktop app and WebKit's helpers look in usr/lib first: DT_RPATH, which also serves
# every library they load and wins over a user's LD_LIBRARY_PATH. So AppRun sets no
# LD_LIBRARY_PATH, and the host programs the engine starts (QEMU, mkfs.ext4, apt, dpkg-deb)
# never load the bundled libraries in place of their own.
patchelf --force-rpath --set-rpath '$ORIGIN/../lib' "$app/usr/bin/hypedeck-desktop"
for helper in "$lib/$multiarch/webkit2gtk-4.1"/WebKit*Process; do
  patchelf --force-rpath --set-rpath '$ORIGIN/../..' "$helper"
done

# Point WebKit at its bundled helpers (same length, so the library's layout is unchanged).
webkit_lib=$lib/libwebkit2gtk-4.1.so.0
[[ -f $webkit_lib ]] || fail "libwebkit2gtk-4.1 was not bundled"
python3 - "$webkit_lib" "$webkit" <<'EOF'
import sys
path, old = sys.argv[1], sys.argv[2].encode()
new = b"././" + old[len(b"/usr"):]
assert old.startswith(b"/usr/") and len(new) == len(old)
data = open(path, "rb").read()
count = data.count(old)
if count == 0:
    sys.exit(f"appimage: {old.decode()} not found in {path}")
open(path, "wb").write(data.replace(old, new))
print(f"appimage: pointed {count} WebKit path(s) into the AppDir")
EOF

cat >"$app/AppRun" <<EOF
#!/bin/sh
# Hypedeck's AppRun: the desktop app (or, with "hypedeck" as the first argument, the bundled
# command-line hypedeck). The programs find the bundled libraries through their RPATH.
here=\${APPDIR:-\$(dirname "\$(readlink -f "\$0")")}
if [ "\$1" = hypedeck ]; then
  shift
  exec "\$here/usr/bin/hypedeck" "\$@"
fi
# What GTK and WebKit read, for the window only (the CLI above needs none of it).
export GDK_PIXBUF_MODULE_FILE="\$here/usr/lib/$multiarch/gdk-pixbuf-2.0/2.10.0/loaders.cache"
export GIO_MODULE_DIR="\$here/usr/lib/gio/modules"
export GSETTINGS_SCHEMA_DIR="\$here/usr/share/glib-2.0/schemas"
export XDG_DATA_DIRS="\$here/usr/share:\${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"
# No host GStreamer plugins (built against another GStreamer); Hypedeck plays no media.
export GST_PLUGIN_SYSTEM_PATH_1_0="\$here/usr/lib/gstreamer-1.0"
# WebKit finds its helpers relative to the working directory (see appimage.sh).
cd "\$here/usr" || exit 1
# Tauri trusts APPIMAGE/APPDIR only for FUSE-mounted images (/tmp/.mount_*) and warns of a
# "security issue" otherwise; the app uses neither.
unset APPIMAGE APPDIR
exec "\$here/usr/bin/hypedeck-desktop" "\$@"
EOF
chmod 755 "$app/AppRun"

desktop=$(ls "$app"/usr/share/applications/*.desktop | head -1)
cp "$desktop" "$app/"
icon=$(grep -m1 '^Icon=' "$desktop" | cut -d= -f2)
icon_file=$(ls -S "$app"/usr/share/icons/hicolor/*/apps/"$icon".png | head -1)
cp "$icon_file" "$app/$icon.png"
ln -s "$icon.png" "$app/.DirIcon"

mkdir -p "$(dirname "$out")"
mksquashfs "$app" "$work/image.sqfs" -comp gzip -root-owned -noappend -quiet >/dev/null
cat "$runtime" "$work/image.sqfs" >"$out.tmp"
# The AppImage type 2 magic ("AI", 2) in the ELF identification padding.
printf 'AI\x02' | dd of="$out.tmp" bs=1 seek=8 conv=notrunc status=none
chmod 755 "$out.tmp"
mv "$out.tmp" "$out"
echo "appimage: $out ($(du -h "$out" | cut -f1))"
