#!/usr/bin/env bash
# Regenerates Hypedeck's app icon (a deck of sandboxes with a prompt) from scratch with
# ImageMagick 6, then the platform sizes with the Tauri CLI. Run from the repository root.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
convert -size 1024x1024 gradient:'#5866ee'-'#8a3fd1' "$work/grad.png"
convert -size 1024x1024 xc:none -fill white -draw "roundrectangle 64,64 960,960 210,210" "$work/mask.png"
convert "$work/grad.png" "$work/mask.png" -alpha off -compose CopyOpacity -composite "$work/base.png"
convert "$work/base.png" \
  -fill 'rgba(255,255,255,0.35)' -draw "roundrectangle 330,240 800,540 48,48" \
  -fill 'rgba(255,255,255,0.62)' -draw "roundrectangle 280,340 750,640 48,48" \
  -fill 'rgba(255,255,255,1.0)' -draw "roundrectangle 230,440 700,740 48,48" \
  -stroke '#6a55e3' -strokewidth 36 -fill none \
  -draw "stroke-linejoin round stroke-linecap round polyline 325,530 405,590 325,650" \
  -draw "stroke-linecap round line 450,650 560,650" \
  -depth 8 "$work/icon.png"
./node_modules/.bin/tauri icon "$work/icon.png" -o "$work/out" >/dev/null 2>&1
for f in 32x32.png 128x128.png 128x128@2x.png icon.png icon.icns icon.ico; do
  cp "$work/out/$f" icons/
done
cp icons/32x32.png ui/public/favicon.png
