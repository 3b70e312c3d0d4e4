#!/usr/bin/env bash
# Runs the desktop (real Tauri window) and browser (headless Chromium) suites. Builds nothing.
#
# Assumes it already runs inside `xvfb-run` (DISPLAY) and `dbus-run-session` with an unlocked
# gnome-keyring, e.g. `make desktop-test`, and takes the binaries from the environment:
#   APP_BIN            the desktop app            (default target/debug/hypedeck-desktop)
#   HYPEDECK_FAKE_BIN  `hypedeck` built with --features fake-hypervisor (required)
#   HYPEDECK_BIN       the shipped `hypedeck` (QEMU backend)  (default target/debug/hypedeck)
#   TAURI_DRIVER_PORT  tauri-driver's port        (default 4444; WebKitWebDriver gets +1)
#   UI_PORT            `vite preview` port        (default 4173)
#   SUITES             which to run, of "desktop browser vm" (default all three)
#   BROWSER_FILES      the browser suite's files  (default browser.e2e.mjs and ui-*.e2e.mjs)
# Screenshots go to test-results/. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${DISPLAY:?run inside xvfb-run}"
: "${DBUS_SESSION_BUS_ADDRESS:?run inside dbus-run-session with an unlocked gnome-keyring}"
: "${HYPEDECK_FAKE_BIN:?set HYPEDECK_FAKE_BIN to hypedeck built with --features fake-hypervisor}"
export APP_BIN="${APP_BIN:-target/debug/hypedeck-desktop}"
export TAURI_DRIVER_PORT="${TAURI_DRIVER_PORT:-4444}"
UI_PORT="${UI_PORT:-4173}"
export UI_URL="http://127.0.0.1:${UI_PORT}/"
export NO_AT_BRIDGE=1

export HYPEDECK_BIN="${HYPEDECK_BIN:-target/debug/hypedeck}"
for bin in "$APP_BIN" "$HYPEDECK_FAKE_BIN" "$HYPEDECK_BIN"; do
  [[ -x $bin ]] || { echo "run.sh: $bin is not built" >&2; exit 1; }
done
[[ -f ui/dist/index.html ]] || { echo "run.sh: ui/dist is not built (npm run build:ui)" >&2; exit 1; }
driver=$(command -v tauri-driver || true)
[[ -n $driver ]] || driver=.ci/tools/bin/tauri-driver
[[ -x $driver ]] || {
  echo "run.sh: no tauri-driver; cargo install tauri-driver --version '^2' --locked --root .ci/tools" >&2
  exit 1
}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

mkdir -p test-results
"$driver" --port "$TAURI_DRIVER_PORT" --native-port "$((TAURI_DRIVER_PORT + 1))" \
  >test-results/tauri-driver.log 2>&1 &
pids+=($!)
# Started directly (not through npx) so that killing the pid stops the server.
./node_modules/.bin/vite preview --config ui/vite.config.ts \
  --host 127.0.0.1 --port "$UI_PORT" --strictPort >test-results/vite-preview.log 2>&1 &
pids+=($!)
wait_port "$TAURI_DRIVER_PORT"
wait_port "$UI_PORT"

SUITES="${SUITES:-desktop browser vm}"
status=0
if [[ " $SUITES " == *" desktop "* ]]; then
  echo "== desktop suite (real Tauri window via tauri-driver)"
  node --test --test-concurrency=1 tests/desktop/desktop.e2e.mjs || status=1
fi
if [[ " $SUITES " == *" browser "* ]]; then
  echo "== browser suites (headless Chromium against vite preview)"
  # browser.e2e.mjs and every tests/browser/ui-*.e2e.mjs (one area of the UI each), one file
  # at a time: each starts its own fake engine and browser.
  shopt -s nullglob
  read -r -a files <<<"${BROWSER_FILES:-tests/browser/browser.e2e.mjs $(echo tests/browser/ui-*.e2e.mjs)}"
  node --test --test-concurrency=1 "${files[@]}" || status=1
fi
if [[ " $SUITES " == *" vm "* ]]; then
  echo "== browser suite on real VMs (headless Chromium, hypedeck serve with QEMU)"
  node --test --test-concurrency=1 tests/browser/vm.e2e.mjs || status=1
fi
exit "$status"
