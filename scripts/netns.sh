#!/usr/bin/env bash
# A fake internet for the netns suite, in two network namespaces (root only):
#   hdh  the "host": the engine, the registry, the keyring and the guests run here
#   hdi  the "internet": tests/netns/internet.py serves on TEST-NET, link-local and private
#        addresses (see that file)
# hdh reaches hdi over a veth (198.51.100.1/24 <-> 198.51.100.2/24) and has routes to
# 203.0.113.10, 169.254.169.254 and 10.55.0.10 only: no default route, so nothing run inside
# can send to any other address.
#   scripts/netns.sh up            (re)creates both, starts the servers, waits until they answer
#   scripts/netns.sh down          stops every process left in them and deletes them
#   scripts/netns.sh exec CMD…     runs CMD in hdh
# State (pidfile, the test CA, the server's log) is in $HYPEDECK_NETNS_DIR
# (default /run/hypedeck-netns); the suite reads ca.pem from there.
set -euo pipefail
HOST_NS=hdh INET_NS=hdi
VETH_HOST=hdv0 VETH_INET=hdv1
HOST_ADDR=198.51.100.1 INET_ADDR=198.51.100.2
INET_HOSTS=(203.0.113.10 169.254.169.254 10.55.0.10)
STATE=${HYPEDECK_NETNS_DIR:-/run/hypedeck-netns}
here=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "netns.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# Every process still inside one of our namespaces (a crashed run's engine, QEMU, servers).
kill_ns_procs() {
  local ns=$1 pids
  ns_exists "$ns" || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

down() {
  if [ -f "$STATE/internet.pid" ]; then
    kill "$(cat "$STATE/internet.pid")" 2>/dev/null || true
  fi
  kill_ns_procs "$INET_NS"
  kill_ns_procs "$HOST_NS"
  for ns in "$HOST_NS" "$INET_NS"; do
    ns_exists "$ns" && ip netns del "$ns"
  done
  # Deleting hdh takes the veth pair with it; a half-made pair may be left in the root namespace.
  ip link show "$VETH_HOST" >/dev/null 2>&1 && ip link del "$VETH_HOST"
  rm -rf "/etc/netns/$HOST_NS" "$STATE"
  rmdir /etc/netns 2>/dev/null || true
}

certs() {
  local run=(openssl)
  "${run[@]}" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=hypedeck netns test CA" -keyout "$STATE/ca.key" -out "$STATE/ca.pem" 2>/dev/null
  "${run[@]}" req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=internet.test" \
    -keyout "$STATE/internet.key" -out "$STATE/internet.csr" 2>/dev/null
  printf 'subjectAltName=DNS:internet.test,IP:203.0.113.10\n' > "$STATE/ext.cnf"
  "${run[@]}" x509 -req -in "$STATE/internet.csr" -CA "$STATE/ca.pem" -CAkey "$STATE/ca.key" \
    -CAcreateserial -days 2 -extfile "$STATE/ext.cnf" -out "$STATE/internet.pem" 2>/dev/null
  rm -f "$STATE/ca.key" "$STATE/internet.csr" "$STATE/ext.cnf"
}

up() {
  command -v ip >/dev/null || die "ip (iproute2) is not installed"
  local py
  py=$(command -v python3) || die "python3 is not installed"
  down
  mkdir -p "$STATE" "/etc/netns/$HOST_NS"
  certs

  ip netns add "$HOST_NS"
  ip netns add "$INET_NS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_INET"
  ip link set "$VETH_HOST" netns "$HOST_NS"
  ip link set "$VETH_INET" netns "$INET_NS"
  ip -n "$HOST_NS" addr add "$HOST_ADDR/24" dev "$VETH_HOST"
  ip -n "$HOST_NS" link set "$VETH_HOST" up
  ip -n "$HOST_NS" link set lo up
  ip -n "$INET_NS" addr add "$INET_ADDR/24" dev "$VETH_INET"
  ip -n "$INET_NS" link set "$VETH_INET" up
  ip -n "$INET_NS" link set lo up
  for a in "${INET_HOSTS[@]}"; do
    ip -n "$INET_NS" addr add "$a/32" dev lo
    ip -n "$HOST_NS" route add "$a/32" via "$INET_ADDR"
  done

  # `ip netns exec hdh` bind-mounts these over /etc/hosts and /etc/resolv.conf: the engine's
  # getaddrinfo finds the test names in hosts; QEMU's slirp (and anything else that reads
  # resolv.conf) asks the fake internet's DNS server, which knows all of them but hostsonly.test.
  {
    grep -v -E '\s(internet|metadata|private|hostsonly)\.test(\s|$)' /etc/hosts 2>/dev/null || true
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    printf '203.0.113.10\tinternet.test\n203.0.113.10\thostsonly.test\n'
    printf '169.254.169.254\tmetadata.test\n10.55.0.10\tprivate.test\n'
  } > "/etc/netns/$HOST_NS/hosts"
  printf 'nameserver 203.0.113.10\noptions timeout:2 attempts:1\n' > "/etc/netns/$HOST_NS/resolv.conf"

  ip netns exec "$INET_NS" setsid "$py" "$here/tests/netns/internet.py" "$STATE" \
    >"$STATE/internet.log" 2>&1 </dev/null &
  echo $! > "$STATE/internet.pid"

  local ok=0
  for _ in $(seq 100); do
    if ip netns exec "$HOST_NS" curl -sf --max-time 2 http://203.0.113.10:8080/ 2>/dev/null | grep -qx internet-ok &&
       ip netns exec "$HOST_NS" curl -sf --max-time 2 --cacert "$STATE/ca.pem" https://internet.test/ 2>/dev/null | grep -qx internet-tls-ok; then
      ok=1; break
    fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || { cat "$STATE/internet.log" >&2; down; die "the fake internet did not come up"; }
  echo "netns: $HOST_NS (engine side, $HOST_ADDR) and $INET_NS (fake internet) are up; state in $STATE"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  exec) shift; [ $# -gt 0 ] || die "usage: $0 exec CMD [ARGS…]"; exec ip netns exec "$HOST_NS" "$@" ;;
  *) die "usage: $0 up|down|exec CMD…" ;;
esac
