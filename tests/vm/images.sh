#!/usr/bin/env bash
# The suite's two images, pushed to the registry given as $1:
#   vm/busybox:1  busybox + /app/run.sh (prints env/args, exits with $CODE)
#   vm/jq:1       Debian's jq with the shared libraries it links (a real dynamically linked program)
set -euo pipefail
registry=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

bb=$work/busybox
mkdir -p "$bb"/{bin,app,proc,sys,dev,tmp,etc,run,root}
cp /bin/busybox "$bb/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$bb/bin/$a"; done
cat > "$bb/app/run.sh" <<'SH'
#!/bin/sh
echo "hello from $(hostname) in $(pwd) greeting=$GREETING args=$*"
exit ${CODE:-0}
SH
chmod 755 "$bb/app/run.sh"
"$here/build-image.sh" "$bb" "$registry" vm/busybox:1 \
  '{"Entrypoint":["/app/run.sh"],"Cmd":["default-arg"],"Env":["PATH=/bin","GREETING=from-image"],"WorkingDir":"/app"}'

jqroot=$work/jq
mkdir -p "$jqroot"/{usr/bin,proc,sys,dev,tmp,etc}
cp "$(command -v jq)" "$jqroot/usr/bin/jq"
for lib in $(ldd "$(command -v jq)" | grep -o '/[^ ]*'); do
  mkdir -p "$jqroot$(dirname "$lib")"; cp -L "$lib" "$jqroot$lib"
done
"$here/build-image.sh" "$jqroot" "$registry" vm/jq:1 \
  '{"Entrypoint":["/usr/bin/jq"],"Cmd":["-M","-n","1+2"],"Env":["PATH=/usr/bin"]}'

# vm/curl:1  Debian's curl with its shared libraries (an HTTPS client honouring HTTPS_PROXY).
curlroot=$work/curl
mkdir -p "$curlroot"/{usr/bin,bin,proc,sys,dev,tmp,etc,root}
cp "$(command -v curl)" "$curlroot/usr/bin/curl"
for lib in $(ldd "$(command -v curl)" | grep -o '/[^ ]*'); do
  mkdir -p "$curlroot$(dirname "$lib")"; cp -L "$lib" "$curlroot$lib"
done
cp /bin/busybox "$curlroot/bin/busybox"
for a in sh env cat echo sleep ip awk grep hostname sync; do ln -sf busybox "$curlroot/bin/$a"; done
"$here/build-image.sh" "$curlroot" "$registry" vm/curl:1 \
  '{"Entrypoint":["/bin/sh","-c"],"Cmd":["env"],"Env":["PATH=/usr/bin:/bin"]}'
