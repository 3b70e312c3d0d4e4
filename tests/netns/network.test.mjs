// What a sandbox on the default network can and cannot reach, proved from inside real guests.
// Runs inside the `hdh` namespace that scripts/netns.sh makes (`make netns-test`): the engine,
// the registry and these host-side servers live there, and a fake internet (tests/netns/
// internet.py, in `hdi`) answers on 203.0.113.10, 169.254.169.254 and 10.55.0.10.
//
// Guest A (network on, egress off) must reach the internet, by address and by name through its
// own resolver, over TCP and UDP; it must not reach the host (loopback through its gateway, a
// host interface address, the API, any loopback listener), cloud metadata, private networks or
// another instance's egress proxy. Guest B (egress on, with a credential) reaches the internet
// only through its proxy. Every probe is curl (or busybox) inside the guest, run over the exec
// WebSocket; a denied probe must end within curl's --max-time 5.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { createServer } from "node:http";
import { existsSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { networkInterfaces } from "node:os";
import path from "node:path";
import { execWs, waitFor } from "../vm/harness.mjs";
import { vmSuite } from "../vm/suite.mjs";

const STATE = process.env.HYPEDECK_NETNS_DIR ?? "/run/hypedeck-netns";
const CA = path.join(STATE, "ca.pem");
const INTERNET = "203.0.113.10";
const HOST_ADDR = "198.51.100.1"; // hdh's end of the veth: a host address that is not loopback
const SECRET = "sk-fixture-netns-secret";
const BOOT = { timeout: "240s" };

let registry, client, server, dataDir;
vmSuite((s) => ({ registry, client, server, dataDir } = s), { env: { HYPEDECK_EGRESS_EXTRA_CA: CA } });

/** curl's exit codes a probe may end with, for messages. */
const CURL_ERRORS = {
  0: "ok", 1: "unsupported protocol or reply", 6: "could not resolve host", 7: "could not connect (refused or unreachable)", 28: "timed out",
  35: "TLS handshake failed", 52: "empty reply", 56: "connection reset while receiving", 60: "certificate not trusted",
  97: "proxy handshake failed",
};

/** An HTTP server on the host side answering `body` to everything, counting requests. */
async function hostServer(host, body) {
  const srv = createServer((req, res) => {
    srv.hits += 1;
    res.end(body);
  });
  srv.hits = 0;
  await new Promise((r, j) => srv.listen(0, host, r).on("error", j));
  return srv;
}

/**
 * GET on the fake internet's admin endpoint (from the host side): "requests" (the HTTPS
 * server's, header names lower-cased, as a proxy may send them either way) or "dns" (names).
 */
async function internetLog(which) {
  const r = await fetch(`http://${INTERNET}:8080/__${which}`, { signal: AbortSignal.timeout(5000) });
  const log = await r.json();
  if (which !== "requests") return log;
  return log.map((s) => ({ ...s, headers: Object.fromEntries(Object.entries(s.headers).map(([k, v]) => [k.toLowerCase(), v])) }));
}

/** One DNS query for `name` (type A) from the host side to the fake internet's server. */
function hostLookup(name) {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const query = Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
  const sock = createSocket("udp4");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (sock.close(), reject(new Error(`no DNS answer for ${name} from ${INTERNET}:53`))), 5000);
    sock.on("message", () => (clearTimeout(timer), sock.close(), resolve()));
    sock.send(query, 53, INTERNET);
  });
}

/** TCP ports listening in this namespace (v4 and v6), with their socket inodes. */
function listeners() {
  const out = [];
  for (const [file, any] of [["/proc/net/tcp", "00000000"], ["/proc/net/tcp6", null]]) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, "utf8").trim().split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] !== "0A") continue; // LISTEN
      const [addr, port] = f[1].split(":");
      out.push({ addr: addr === any ? "0.0.0.0" : addr, port: parseInt(port, 16), inode: f[9], v6: !any });
    }
  }
  return out;
}

/** Socket inodes a process holds. */
function socketInodes(pid) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

describe("the default network, seen from inside guests", () => {
  let a, b; // the instances
  let gwA, gwB, subnetA, subnetB;
  let loopback, hostAddr; // host-side servers
  let proxyPortB; // B's egress proxy listener on the host's loopback, if it has one

  /** Runs `script` with sh in the guest; resolves {output, exitCode, ms}. */
  async function sh(id, script, env = {}) {
    const started = Date.now();
    const r = await execWs(server.url, client.apiKey, id, { command: ["/bin/sh", "-c", script], env });
    assert.equal(r.status, undefined, `exec refused: ${JSON.stringify(r)}`);
    return { ...r, ms: Date.now() - started };
  }

  /**
   * One curl in the guest (`args` as curl gets them). Returns {rc, code, size, body, ms,
   * reached, text}: reached means anything answered (an HTTP status, a proxy's answer to
   * CONNECT, or any byte of a body); text says what happened, for messages.
   */
  async function curl(id, args) {
    const script = `rm -f /tmp/p.body; curl -s --http0.9 -o /tmp/p.body --max-time 5 -w '%{http_code} %{size_download} %{http_connect}' "$@" > /tmp/p.meta; rc=$?; echo "$rc $(cat /tmp/p.meta)"; head -c 300 /tmp/p.body 2>/dev/null`;
    const started = Date.now();
    const r = await execWs(server.url, client.apiKey, id, { command: ["/bin/sh", "-c", script, "probe", ...args] });
    assert.equal(r.status, undefined, `exec refused: ${JSON.stringify(r)}`);
    const nl = r.output.indexOf("\n");
    const [rc, code, size, connect] = r.output.slice(0, nl).split(" ");
    const body = r.output.slice(nl + 1);
    const out = { rc: Number(rc), code, size: Number(size), body, ms: Date.now() - started };
    const answered = (c) => c !== undefined && c !== "000";
    out.reached = answered(code) || answered(connect) || out.size > 0 || body.length > 0;
    out.text = out.reached
      ? `answered${answered(code) ? ` HTTP ${code}` : ""}${answered(connect) ? ` (proxy CONNECT ${connect})` : ""} with ` +
        `${JSON.stringify(body.slice(0, 120))} (curl exit ${rc}, ${out.ms} ms)`
      : `curl exit ${rc}: ${CURL_ERRORS[rc] ?? "failed"} after ${out.ms} ms`;
    return out;
  }

  /** Asserts the guest got exactly `expected` from `args`. */
  async function allowed(id, what, args, expected) {
    const r = await curl(id, args);
    assert.ok(r.rc === 0 && r.body === expected, `${what} must be reachable and answer ${JSON.stringify(expected)}, but: ${r.text}`);
  }

  /**
   * Runs every probe ([what, curl args]) and returns what the guest reached (or what took too
   * long to fail), one line each; [] when every probe was refused in time.
   */
  async function reachedBy(id, probes) {
    const problems = [];
    for (const [what, args] of probes) {
      const r = await curl(id, args);
      if (r.reached) problems.push(`reached ${what}: ${r.text}`);
      // --max-time 5 bounds curl; the exec round trip under TCG adds a little.
      else if (r.ms > 15_000) problems.push(`${what}: the refusal took ${r.ms} ms`);
    }
    return problems;
  }

  /** Asserts that no probe reached anything; the message names everything the guest reached. */
  async function denied(id, probes, also = []) {
    const problems = [...(await reachedBy(id, probes)), ...also.flatMap((check) => check())];
    assert.ok(problems.length === 0, `must be unreachable from ${id === a.id ? "guest A" : "guest B"}, but:\n${problems.join("\n")}`);
  }

  /** A check for denied(): the host-side server `srv` got no request since now. */
  function noHits(srv, what) {
    const before = srv.hits;
    return () => (srv.hits === before ? [] : [`${what} received ${srv.hits - before} request(s)`]);
  }

  before(async () => {
    const inside = Object.values(networkInterfaces()).flat().some((i) => i.address === HOST_ADDR);
    assert.ok(inside && existsSync(CA), `run this suite inside the hdh namespace of scripts/netns.sh (make netns-test); ${HOST_ADDR} or ${CA} is missing`);
    loopback = await hostServer("127.0.0.1", "host-loopback-secret\n");
    hostAddr = await hostServer(HOST_ADDR, "host-address-secret\n");

    const base = { image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: ["sleep 3600"] };
    a = await client.instances.create({ ...base, name: "net-a", network: { enabled: true } }, { timeout: 240_000 });
    b = await client.instances.create({
      ...base,
      name: "net-b",
      env: { NETNS_KEY: SECRET },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        NETNS_KEY: { source: { env: "NETNS_KEY" }, inject: [{ hosts: ["internet.test"], as: { header: "Authorization", format: "Bearer ${value}" } }] },
      },
    }, { timeout: 240_000 });
    for (const i of [a, b]) {
      await client.instances.wait(i.id, { state: "Running", ...BOOT }, { timeout: 250_000 });
      await waitFor(async () => (await sh(i.id, "echo up")).output === "up\n", `exec in ${i.name}`, 120_000);
    }
    a = await client.instances.get(a.id);
    b = await client.instances.get(b.id);
    subnetA = a.network.ip.split(".").slice(0, 3).join(".");
    subnetB = b.network.ip.split(".").slice(0, 3).join(".");
    gwA = (await sh(a.id, "ip route | awk '/^default/{print $3}'")).output.trim();
    gwB = (await sh(b.id, "ip route | awk '/^default/{print $3}'")).output.trim();
    assert.match(gwA, /^\d+\.\d+\.\d+\.\d+$/, "guest A has a default route");
    const meta = JSON.parse(readFileSync(path.join(dataDir, "instances", b.id, "metadata.json"), "utf8"));
    proxyPortB = meta.network?.proxy_port ?? null;
    // The fake internet's test CA, for curl --cacert inside A.
    const copied = await sh(a.id, 'printf "%s\\n" "$CA_PEM" > /tmp/ca.pem && echo copied', { CA_PEM: readFileSync(CA, "utf8").trim() });
    assert.equal(copied.output, "copied\n");
  });

  after(async () => {
    loopback?.close();
    hostAddr?.close();
    // The suite's after() deletes the instances.
  });

  describe("guest A (network on, egress off)", () => {
    test("its resolver is the network's DNS address", async () => {
      const r = await sh(a.id, "cat /etc/resolv.conf");
      assert.match(r.output, new RegExp(`^nameserver ${subnetA.replaceAll(".", "\\.")}\\.3$`, "m"), `guest A's /etc/resolv.conf: ${r.output}`);
    });

    test("ALLOWED: plain HTTP to an internet address", { timeout: 60_000 }, async () => {
      await allowed(a.id, `http://${INTERNET}:8080/`, [`http://${INTERNET}:8080/`], "internet-ok\n");
    });

    test("ALLOWED: HTTPS to internet.test, resolved by the guest's resolver", { timeout: 60_000 }, async () => {
      await allowed(a.id, "https://internet.test/ (by name)", ["--cacert", "/tmp/ca.pem", "https://internet.test/"], "internet-tls-ok\n");
    });

    test("ALLOWED: a name only the host's hosts file knows resolves (the host's resolver answers the guest)", { timeout: 60_000 }, async () => {
      await allowed(a.id, "http://hostsonly.test:8080/ (a name in /etc/hosts of the host only)", ["http://hostsonly.test:8080/"], "internet-ok\n");
    });

    test("ALLOWED: a UDP round trip to an internet address", { timeout: 60_000 }, async () => {
      // busybox nc has no UDP mode; curl's TFTP client is a UDP request and reply.
      await allowed(a.id, `UDP (TFTP) to ${INTERNET}:5353`, [`tftp://${INTERNET}:5353/probe`], "udp-ok\n");
    });

    test("DENIED: the host's loopback through the gateway", { timeout: 60_000 }, async () => {
      const port = loopback.address().port;
      await denied(a.id, [[`the host's loopback server via the gateway ${gwA}:${port}`, [`http://${gwA}:${port}/`]]],
        [noHits(loopback, "the host's loopback server")]);
    });

    test("DENIED: a host interface address", { timeout: 60_000 }, async () => {
      await denied(a.id, [
        [`the host's server on its interface address ${HOST_ADDR}:${hostAddr.address().port}`, [`http://${HOST_ADDR}:${hostAddr.address().port}/`]],
        [`the host's loopback server's port via the host address ${HOST_ADDR}:${loopback.address().port}`, [`http://${HOST_ADDR}:${loopback.address().port}/`]],
      ], [noHits(hostAddr, "the host-address server"), noHits(loopback, "the host's loopback server")]);
    });

    test("DENIED: the Hypedeck API through the gateway", { timeout: 60_000 }, async () => {
      const port = new URL(server.url).port;
      await denied(a.id, [[`the Hypedeck API's /health via the gateway ${gwA}:${port}`, [`http://${gwA}:${port}/health`]]]);
    });

    test("DENIED: cloud metadata (169.254.169.254), by address and by name", { timeout: 60_000 }, async () => {
      await denied(a.id, [
        ["the cloud metadata service http://169.254.169.254/", ["http://169.254.169.254/latest/meta-data/"]],
        ["the cloud metadata service by name http://metadata.test/", ["http://metadata.test/"]],
      ]);
    });

    test("DENIED: a host on a private network (10.55.0.10)", { timeout: 60_000 }, async () => {
      await denied(a.id, [
        ["the private-network host http://10.55.0.10/", ["http://10.55.0.10/"]],
        ["the private-network host by name http://private.test/", ["http://private.test/"]],
      ]);
    });

    test("DENIED: instance B's egress proxy, and B's credential never reaches the upstream", { timeout: 120_000 }, async () => {
      const tries = [
        [`B's proxy address ${subnetB}.100:18080`, `http://${subnetB}.100:18080`],
        [`the proxy address of A's own subnet ${subnetA}.100:18080`, `http://${subnetA}.100:18080`],
      ];
      if (proxyPortB) tries.push([`B's proxy listener on the host's loopback via the gateway ${gwA}:${proxyPortB}`, `http://${gwA}:${proxyPortB}`]);
      const problems = await reachedBy(a.id, tries.map(([what, proxy]) =>
        [`${what} as its proxy`, ["-k", "-x", proxy, "-H", "X-Probe: guest-a", "https://internet.test/"]]));
      const seen = await internetLog("requests");
      for (const s of seen.filter((x) => x.headers["x-probe"] === "guest-a")) {
        problems.push(`the upstream https://internet.test got guest A's request through a proxy, with authorization ${JSON.stringify(s.headers.authorization ?? null)}`);
      }
      for (const s of seen.filter((x) => JSON.stringify(x.headers).includes(SECRET) && x.headers["x-probe"] !== "guest-b")) {
        problems.push(`the upstream saw B's credential on a request B did not send: ${JSON.stringify(s.headers)}`);
      }
      assert.ok(problems.length === 0, `guest A must not use another instance's egress proxy, but:\n${problems.join("\n")}`);
    });

    test("DENIED: every TCP port listening on the host (the engine's among them) via the gateway", { timeout: 180_000 }, async () => {
      const engine = socketInodes(server.pid);
      const all = listeners();
      const enginePorts = [...new Set(all.filter((l) => engine.has(l.inode)).map((l) => l.port))];
      const apiPort = Number(new URL(server.url).port);
      assert.ok(enginePorts.includes(apiPort), `the engine's listeners ${enginePorts} include its API port ${apiPort}`);
      const labels = new Map();
      const label = (port, name) => labels.set(port, labels.has(port) ? `${labels.get(port)}, ${name}` : name);
      for (const p of enginePorts) label(p, "engine");
      label(apiPort, "API");
      if (proxyPortB) label(proxyPortB, "B's egress proxy");
      label(Number(registry.host.split(":")[1]), "registry");
      label(loopback.address().port, "test loopback server");
      label(hostAddr.address().port, "test host-address server");
      const ports = [...new Set(all.map((l) => l.port))].sort((x, y) => x - y);
      const reached = await reachedBy(a.id, ports.map((port) => [`${gwA}:${port} (${labels.get(port) ?? "other"})`, [`http://${gwA}:${port}/`]]));
      assert.ok(reached.length === 0, `guest A must reach no host listener via its gateway (probed ports ${ports.join(", ")}), but:\n${reached.join("\n")}`);
    });

    test("the flow log names what was let through and what was refused, and why", async () => {
      const flows = await client.get(`/instances/${a.id}/network/flows`, { query: { limit: 1000 } });
      const has = (pred, what) => assert.ok(flows.some(pred), `guest A's flow log has ${what}: ${JSON.stringify(flows.slice(0, 40))}`);
      has((f) => f.destination === `${INTERNET}:8080` && f.verdict === "allowed" && f.protocol === "tcp", `an allowed TCP flow to ${INTERNET}:8080`);
      has((f) => f.destination === "169.254.169.254:80" && f.verdict === "denied" && f.reason === "link_local", "the metadata address denied as link_local");
      has((f) => f.destination === "10.55.0.10:80" && f.verdict === "denied" && f.reason === "private_range", "the private host denied as private_range");
      has((f) => f.destination === `${HOST_ADDR}:${hostAddr.address().port}` && f.verdict === "denied" && f.reason === "host_address", "the host address denied as host_address");
      has((f) => f.protocol === "dns" && f.name === "internet.test" && f.verdict === "allowed", "the lookup of internet.test");
      has((f) => f.destination.startsWith("169.254.169.254:") && f.name === "metadata.test", "the denied metadata flow named by the name the guest resolved");
      // Newest first, and the limit holds.
      assert.ok(flows.every((f, i) => i === 0 || flows[i - 1].at_ms >= f.at_ms), "newest first");
      assert.equal((await client.get(`/instances/${a.id}/network/flows`, { query: { limit: 2 } })).length, 2);
    });

    test("an allow-list set live answers only its names, and a PATCH widens it with no restart", { timeout: 120_000 }, async () => {
      const before = await client.instances.get(a.id);
      await client.instances.update(a.id, { network: { egress: { allow: ["internet.test"] } } });
      assert.deepEqual((await client.get(`/instances/${a.id}/network/policy`)).allow, ["internet.test"]);
      await allowed(a.id, "https://internet.test/ (on the list)", ["--cacert", "/tmp/ca.pem", "https://internet.test/"], "internet-tls-ok\n");
      const off = await curl(a.id, ["http://hostsonly.test:8080/"]);
      assert.ok(!off.reached && off.rc === 6, `hostsonly.test is off the list: its lookup must fail (curl exit 6), but: ${off.text}`);
      const flows = await client.get(`/instances/${a.id}/network/flows`, { query: { limit: 1000 } });
      assert.ok(flows.some((f) => f.protocol === "dns" && f.name === "hostsonly.test" && f.verdict === "denied" && f.reason === "not_allowed"),
        `the refused lookup is in the flow log: ${JSON.stringify(flows.slice(0, 10))}`);

      await client.instances.update(a.id, { network: { egress: { allow: ["internet.test", "hostsonly.test"] } } });
      await allowed(a.id, "http://hostsonly.test:8080/ (added live)", ["http://hostsonly.test:8080/"], "internet-ok\n");
      const after = await client.instances.get(a.id);
      assert.equal(after.started_at, before.started_at, "the allow-list changed without a restart");
      assert.equal(after.state, "Running");
      await assert.rejects(client.instances.update(a.id, { network: { egress: { allow: ["not a host"] } } }),
        (e) => e.status === 400 && /not a host/.test(e.error?.message ?? e.message));
      // Back to no list is not a PATCH (null is refused); the widest list keeps the rest of the suite's probes meaningful.
    });
  });

  describe("guest B (egress on, with a credential)", () => {
    test("ALLOWED: HTTPS to internet.test through its proxy, with the credential injected", { timeout: 60_000 }, async () => {
      const r = await curl(b.id, ["-H", "X-Probe: guest-b", "https://internet.test/"]);
      assert.ok(r.rc === 0 && r.body === "internet-tls-ok\n", `guest B's https://internet.test/ through its proxy: ${r.text}`);
      const seen = await internetLog("requests");
      const fromB = seen.filter((s) => s.headers["x-probe"] === "guest-b");
      assert.ok(fromB.length > 0 && fromB.every((s) => s.headers.authorization === `Bearer ${SECRET}`),
        `the upstream's requests from B carry the injected credential: ${JSON.stringify(fromB.map((s) => s.headers.authorization))}`);
      const env = await sh(b.id, "env");
      assert.ok(!env.output.includes(SECRET), "guest B's env holds the credential's real value");
    });

    test("DENIED: direct TCP around the proxy", { timeout: 60_000 }, async () => {
      await denied(b.id, [
        [`http://${INTERNET}:8080/ directly (bypassing its proxy)`, ["--noproxy", "*", `http://${INTERNET}:8080/`]],
        [`the host's loopback server via B's gateway ${gwB}:${loopback.address().port}`, ["--noproxy", "*", `http://${gwB}:${loopback.address().port}/`]],
        [`the host's loopback server's port via the host address ${HOST_ADDR}`, ["--noproxy", "*", `http://${HOST_ADDR}:${loopback.address().port}/`]],
      ], [noHits(loopback, "the host's loopback server")]);
    });

    test("ALLOWED: HTTPS that ignores the proxy settings is intercepted and goes through the proxy, credential injected", { timeout: 60_000 }, async () => {
      const r = await curl(b.id, ["--noproxy", "*", "-H", "X-Probe: guest-b-direct", "https://internet.test/"]);
      assert.ok(r.rc === 0 && r.body === "internet-tls-ok\n", `guest B's https://internet.test/ with --noproxy: ${r.text}`);
      const fromB = (await internetLog("requests")).filter((s) => s.headers["x-probe"] === "guest-b-direct");
      assert.ok(fromB.length === 1 && fromB[0].headers.authorization === `Bearer ${SECRET}`,
        `the intercepted request reached the upstream once, with the injected credential: ${JSON.stringify(fromB.map((s) => s.headers.authorization))}`);
      const flows = await client.get(`/instances/${b.id}/network/flows`, { query: { limit: 1000 } });
      assert.ok(flows.some((f) => f.name === "internet.test" && f.destination.endsWith(":443") && f.verdict === "allowed" && f.destination.startsWith("198.18.")),
        `B's flow log shows the intercepted connection to internet.test's synthetic address: ${JSON.stringify(flows.slice(0, 20))}`);
    });

    test("DENIED: intercepted HTTPS fails closed for a client that does not trust the egress CA", { timeout: 60_000 }, async () => {
      const copied = await sh(b.id, 'printf "%s\\n" "$CA_PEM" > /tmp/ca.pem && echo copied', { CA_PEM: readFileSync(CA, "utf8").trim() });
      assert.equal(copied.output, "copied\n");
      // Trusting only the real server's CA: the proxy's certificate is refused, nothing is sent.
      const r = await curl(b.id, ["--noproxy", "*", "--cacert", "/tmp/ca.pem", "-H", "X-Probe: guest-b-noca", "https://internet.test/"]);
      const fromB = (await internetLog("requests")).filter((s) => s.headers["x-probe"] === "guest-b-noca");
      assert.ok(r.rc !== 0 && !r.reached && fromB.length === 0,
        `a guest that does not trust the egress CA must get no answer and send nothing upstream, but: ${r.text}; upstream saw ${fromB.length}`);
      assert.ok(r.rc === 60 || r.rc === 35, `curl failed on the certificate (exit ${r.rc})`);
    });

    test("DENIED: its proxy refuses what its network refuses (metadata, private hosts)", { timeout: 60_000 }, async () => {
      const problems = [];
      for (const [what, args] of [
        ["http://169.254.169.254/ through its proxy", ["http://169.254.169.254/"]],
        ["https://10.55.0.10/ through its proxy", ["https://10.55.0.10/"]],
        ["http://private.test/ through its proxy", ["http://private.test/"]],
        ["http://metadata.test/ ignoring its proxy (intercepted)", ["--noproxy", "*", "http://metadata.test/"]],
      ]) {
        const r = await curl(b.id, ["-k", ...args]);
        const refused = r.code === "403" || r.text.includes("CONNECT 403");
        if (!refused || /metadata-reached|private-reached/.test(r.body)) problems.push(`${what}: ${r.text}`);
      }
      assert.ok(problems.length === 0, `guest B's proxy must answer 403 for these, but:\n${problems.join("\n")}`);
    });

    test("DENIED: an allow-list without the host stops its proxy too, and the refusal is logged", { timeout: 60_000 }, async () => {
      await client.instances.update(b.id, { network: { egress: { allow: ["elsewhere.test"] } } });
      try {
        const r = await curl(b.id, ["-H", "X-Probe: guest-b-offlist", "https://internet.test/"]);
        const fromB = (await internetLog("requests")).filter((s) => s.headers["x-probe"] === "guest-b-offlist");
        assert.ok(fromB.length === 0 && (r.text.includes("CONNECT 403") || !r.reached),
          `internet.test is off B's list: the proxy must refuse it, but: ${r.text}; upstream saw ${fromB.length}`);
        const flows = await client.get(`/instances/${b.id}/network/flows`, { query: { limit: 1000 } });
        assert.ok(flows.some((f) => f.name === "internet.test" && f.verdict === "denied" && f.reason === "not_allowed"),
          `the proxy's refusal is in B's flow log: ${JSON.stringify(flows.slice(0, 10))}`);
      } finally {
        await client.instances.update(b.id, { network: { egress: { allow: ["internet.test", "*.test"] } } });
      }
    });

    test("DENIED: UDP, and names never leave through DNS", { timeout: 60_000 }, async () => {
      const udp = await reachedBy(b.id, [[`UDP (TFTP) to ${INTERNET}:5353`, ["--noproxy", "*", `tftp://${INTERNET}:5353/probe`]]]);
      // A lookup is a way out too: a unique name must reach no DNS server in the internet,
      // neither directly nor through the guest's resolver.
      const name = `b-exfil-${Date.now()}.internet.test`;
      const direct = await sh(b.id, `busybox timeout 8 busybox nslookup -timeout=2 -retry=1 direct-${name} ${INTERNET}; echo "rc=$?"`);
      const viaResolver = await sh(b.id, `busybox timeout 8 busybox nslookup -timeout=2 -retry=1 resolver-${name}; echo "rc=$?"`);
      // The DNS server's log works: a lookup from the host side shows up in it.
      await hostLookup(`host-${name}`);
      const names = await internetLog("dns");
      assert.ok(names.includes(`host-${name}`), `the fake internet's DNS log misses the host's own lookup: ${names}`);
      const problems = [...udp];
      if (names.includes(`direct-${name}`)) problems.push(`reached the DNS server ${INTERNET}:53 directly (UDP): ${direct.output.trim()}`);
      if (names.includes(`resolver-${name}`)) {
        problems.push(`a name looked up through its resolver reached the internet's DNS server: ${viaResolver.output.trim()}`);
      }
      assert.ok(problems.length === 0, `must be unreachable from guest B, but:\n${problems.join("\n")}`);
    });
  });
});
