#!/usr/bin/env bash
# Builds an OCI image from directories (one layer each, in order) and pushes it to a registry
# with plain HTTP.
#   build-image.sh <rootfs-dir> <registry host:port> <repo:tag> <config-json> [<layer-dir>…]
# <config-json> is the OCI image `config` object, e.g. '{"Entrypoint":["/app/run.sh"],"Env":["PATH=/bin"]}'.
# Extra layer dirs are applied over the first one; OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`)
# in them are passed through as they are. Files are owned by root in the image unless
# KEEP_OWNERS=1 (then the directories' own uid/gid go in, e.g. a debootstrap tree's).
set -euo pipefail
rootfs=$1 registry=$2 ref=$3 config=$4
shift 4
repo=${ref%%:*} tag=${ref##*:}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
desc() { jq -cn --arg m "$1" --arg d "sha256:$(sha256sum "$2" | cut -d' ' -f1)" --argjson s "$(stat -c %s "$2")" '{mediaType:$m,digest:$d,size:$s}'; }
diffs=() layers=() n=0
for dir in "$rootfs" "$@"; do
  n=$((n + 1))
  owners=(--owner=0 --group=0)
  [ "${KEEP_OWNERS:-0}" = 1 ] && owners=()
  tar --sort=name --mtime=@0 "${owners[@]}" --numeric-owner -C "$dir" -cf "$work/layer$n.tar" .
  diffs+=("sha256:$(sha256sum "$work/layer$n.tar" | cut -d' ' -f1)")
  gzip -n "$work/layer$n.tar"
  layers+=("$(desc application/vnd.oci.image.layer.v1.tar+gzip "$work/layer$n.tar.gz")")
done
jq -cn --arg arch "$arch" --argjson c "$config" --args '{architecture:$arch,os:"linux",created:"1970-01-01T00:00:00Z",config:$c,rootfs:{type:"layers",diff_ids:$ARGS.positional}}' \
  "${diffs[@]}" > "$work/config.json"
jq -cn --argjson c "$(desc application/vnd.oci.image.config.v1+json "$work/config.json")" --jsonargs \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:$c,layers:$ARGS.positional}' \
  "${layers[@]}" > "$work/manifest.json"
R="http://$registry"
for f in "$work"/layer*.tar.gz "$work/config.json"; do
  loc=$(curl -sf -X POST -D - -o /dev/null "$R/v2/$repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  case $loc in http*) ;; *) loc=$R$loc;; esac
  case $loc in *\?*) sep='&';; *) sep='?';; esac
  curl -sf -X PUT -H "Content-Type: application/octet-stream" --data-binary "@$f" \
    "$loc${sep}digest=sha256:$(sha256sum "$f" | cut -d' ' -f1)" -o /dev/null
done
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$work/manifest.json" "$R/v2/$repo/manifests/$tag" -o /dev/null
echo "pushed $registry/$repo:$tag ($n layer$([ $n = 1 ] || echo s))"
