#!/usr/bin/env python3
"""The fake internet of the netns suite, run inside the `hdi` namespace by scripts/netns.sh.

  internet.py <state-dir>

Serves, on the addresses scripts/netns.sh puts on hdi's loopback (TEST-NET, link-local and
private addresses only; nothing here ever sends to any other address):
  203.0.113.10:8080  TCP  HTTP "internet-ok"; GET /__requests is the HTTPS server's request log,
                          GET /__dns the names the DNS server was asked for
  203.0.113.10:443   TCP  HTTPS "internet-tls-ok" for internet.test (cert from <state-dir>/ca.pem's CA)
  203.0.113.10:5353  UDP  a TFTP read answers "udp-ok"; any other datagram is echoed
  203.0.113.10:53    UDP  DNS: A records for the names in NAMES, NXDOMAIN for the rest
  169.254.169.254:80 TCP  HTTP "metadata-reached" (a cloud metadata service)
  10.55.0.10:80      TCP  HTTP "private-reached" (a host on a private network)
"""
import json
import socket
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = sys.argv[1]
# Names the DNS server knows. `hostsonly.test` is deliberately missing: only the host's hosts
# file (/etc/netns/hdh/hosts) knows it.
NAMES = {
    "internet.test": "203.0.113.10",
    "metadata.test": "169.254.169.254",
    "private.test": "10.55.0.10",
}

requests_seen = []  # every request the HTTPS server answered: {path, headers}
names_seen = []  # every name the DNS server was asked for
lock = threading.Lock()


def handler(body, log=False, admin=False):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if log:
                with lock:
                    requests_seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers.items())})
            if admin and self.path in ("/__requests", "/__dns"):
                with lock:
                    data = json.dumps(requests_seen if self.path == "/__requests" else names_seen).encode()
            else:
                data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    return Handler


class TLSServer(ThreadingHTTPServer):
    """The TLS handshake runs in each connection's thread, so a silent client stalls only itself."""

    def finish_request(self, request, client_address):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{STATE}/internet.pem", f"{STATE}/internet.key")
        request.settimeout(15)
        try:
            request = ctx.wrap_socket(request, server_side=True)
        except OSError:
            return
        super().finish_request(request, client_address)


def serve_http(addr, port, body, tls=False, admin=False):
    server = (TLSServer if tls else ThreadingHTTPServer)((addr, port), handler(body, log=tls, admin=admin))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_udp_echo_tftp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def loop():
        while True:
            data, peer = s.recvfrom(2048)
            if len(data) >= 4 and data[:2] == b"\x00\x01":  # TFTP RRQ: one DATA block, the last
                s.sendto(b"\x00\x03\x00\x01udp-ok\n", peer)
            elif data[:2] == b"\x00\x04":  # TFTP ACK of that block
                continue
            else:
                s.sendto(data, peer)

    threading.Thread(target=loop, daemon=True).start()


def serve_dns(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def answer(q):
        ident, flags, qd = struct.unpack(">HHH", q[:6])
        if qd != 1:
            return None
        i, labels = 12, []
        while q[i] != 0:
            labels.append(q[i + 1 : i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qend = i + 5
        qtype = struct.unpack(">H", q[i + 1 : i + 3])[0]
        name = ".".join(labels).lower()
        with lock:
            names_seen.append(name)
        ip = NAMES.get(name)
        rd = flags & 0x0100
        rcode = 0 if ip else 3
        ancount = 1 if ip and qtype == 1 else 0
        head = struct.pack(">HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, ancount, 0, 0)
        out = head + q[12:qend]
        if ancount:
            out += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
        return out

    def loop():
        while True:
            data, peer = s.recvfrom(2048)
            try:
                out = answer(data)
            except Exception:
                out = None
            if out:
                s.sendto(out, peer)

    threading.Thread(target=loop, daemon=True).start()


serve_http("203.0.113.10", 8080, "internet-ok\n", admin=True)
serve_http("203.0.113.10", 443, "internet-tls-ok\n", tls=True)
serve_http("169.254.169.254", 80, "metadata-reached\n")
serve_http("10.55.0.10", 80, "private-reached\n")
serve_udp_echo_tftp("203.0.113.10", 5353)
serve_dns("203.0.113.10", 53)
print("fake internet up", flush=True)
threading.Event().wait()
