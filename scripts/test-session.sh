#!/usr/bin/env bash
# Runs a command inside a private D-Bus session with an unlocked gnome-keyring (a real Secret
# Service), with throw-away XDG dirs so no test touches the user's own keychain.
#   scripts/test-session.sh <command> [args…]
set -euo pipefail
export XDG_RUNTIME_DIR XDG_DATA_HOME XDG_CACHE_HOME XDG_CONFIG_HOME
XDG_RUNTIME_DIR=$(mktemp -d); chmod 700 "$XDG_RUNTIME_DIR"
XDG_DATA_HOME=$(mktemp -d); XDG_CACHE_HOME=$(mktemp -d); XDG_CONFIG_HOME=$(mktemp -d)
cleanup() { rm -rf "$XDG_RUNTIME_DIR" "$XDG_DATA_HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME"; }
trap cleanup EXIT
dbus-run-session -- bash -c '
  set -euo pipefail
  printf "%s" hypedeck-test-keyring | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  # Prove the Secret Service works before any test relies on it.
  printf probe | secret-tool store --label=hypedeck-probe service hypedeck-probe user ci
  secret-tool clear service hypedeck-probe user ci
  "$@"
' bash "$@" 2> >(grep -v "Failed to set fd limit" >&2)
