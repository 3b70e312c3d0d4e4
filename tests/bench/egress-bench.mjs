// Benchmark (not a test): credential rotation and the egress proxy, measured against a
// direct connection and against mitmproxy with a header-injecting addon, all on 127.0.0.1.
// Writes the results table to stdout; `make bench` appends it to BENCHMARKS.md.
//
//   HYPEDECK_BIN=target/debug/hypedeck MITMDUMP=/path/to/mitmdump node tests/bench/egress-bench.mjs
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:https";
import { request as httpRequest } from "node:http";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import path from "node:path";
import { startRegistry, startServer, newDataDir, waitFor, freePort, makeTestPki } from "../vm/harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const MITMDUMP = process.env.MITMDUMP;
const N = Number(process.env.BENCH_REQUESTS ?? 300);
const CONCURRENCY = 8;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => x.toFixed(2);

/// One HTTPS GET, directly or through an HTTP CONNECT proxy; resolves with the latency in ms.
function get({ upPort, proxyPort, ca }) {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const send = (socket) => {
      const tls = tlsConnect({ socket, host: "127.0.0.1", port: upPort, ca, servername: "localhost" }, () => {
        tls.write(`GET / HTTP/1.1\r\nHost: localhost:${upPort}\r\nConnection: close\r\n\r\n`);
      });
      let body = "";
      tls.on("data", (d) => (body += d));
      tls.on("end", () => (body.startsWith("HTTP/1.1 200") ? resolve(performance.now() - t0) : reject(new Error(body.slice(0, 80)))));
      tls.on("error", reject);
    };
    if (!proxyPort) return send(undefined);
    const req = httpRequest({ host: "127.0.0.1", port: proxyPort, method: "CONNECT", path: `localhost:${upPort}` });
    req.on("connect", (res, socket) => (res.statusCode === 200 ? send(socket) : reject(new Error(`CONNECT ${res.statusCode}`))));
    req.on("error", reject);
    req.end();
  });
}

async function measure(label, opts, check) {
  for (let i = 0; i < 20; i++) await get(opts); // warm-up
  const lat = [];
  for (let i = 0; i < N; i++) lat.push(await get(opts));
  const t0 = performance.now();
  let done = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (done < N) {
      done++;
      await get(opts);
    }
  }));
  const rps = N / ((performance.now() - t0) / 1000);
  check?.();
  return { label, p50: pct(lat, 50), p99: pct(lat, 99), rps };
}

const p = makeTestPki("hypedeck-bench-pki-");
let lastAuth = null;
const upstream = createServer({ cert: p.cert, key: p.key }, (req, res) => {
  lastAuth = req.headers.authorization ?? null;
  res.end("ok");
});
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const upPort = upstream.address().port;
const upCa = readFileSync(p.ca);

const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: p.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1", HYPEDECK_EGRESS_TEST_LISTENER: "1", HYPEDECK_LOG: "warn" });
const client = server.client();
const results = [];
let mitm;
try {
  const inst = await client.instances.create({
    name: "bench", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: ["sleep 3600"],
    env: { OPENAI_KEY: "sk-bench-0" }, network: { egress: { enabled: true } },
    credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
  }, { timeout: 240_000 });
  await client.instances.wait(inst.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  const meta = JSON.parse(readFileSync(path.join(dataDir, "instances", inst.id, "metadata.json"), "utf8"));
  const hypedeckCa = readFileSync(path.join(dataDir, "egress", "ca.crt"));

  results.push(await measure("direct (no proxy)", { upPort, ca: upCa }));
  results.push(await measure("Hypedeck egress proxy (injecting)", { upPort, proxyPort: meta.network.proxy_port, ca: hypedeckCa },
    () => { if (lastAuth !== "Bearer sk-bench-0") throw new Error(`proxy did not inject: ${lastAuth}`); }));

  if (MITMDUMP) {
    const confdir = mkdtempSync(path.join(tmpdir(), "hypedeck-bench-mitm-"));
    const addon = path.join(confdir, "inject.py");
    writeFileSync(addon, "def request(flow):\n    if flow.request.pretty_host == 'localhost':\n        flow.request.headers['Authorization'] = 'Bearer sk-bench-mitm'\n");
    const port = await freePort();
    mitm = spawn(MITMDUMP, ["-q", "--listen-host", "127.0.0.1", "--listen-port", String(port), "-s", addon,
      "--set", `confdir=${confdir}`, "--set", `ssl_verify_upstream_trusted_ca=${p.ca}`], { stdio: "ignore" });
    await waitFor(() => { try { readFileSync(path.join(confdir, "mitmproxy-ca-cert.pem")); return true; } catch { return false; } }, "mitmproxy CA", 30_000);
    await waitFor(async () => { try { await get({ upPort, proxyPort: port, ca: readFileSync(path.join(confdir, "mitmproxy-ca-cert.pem")) }); return true; } catch { return false; } }, "mitmproxy", 30_000);
    results.push(await measure("mitmproxy + header addon", { upPort, proxyPort: port, ca: readFileSync(path.join(confdir, "mitmproxy-ca-cert.pem")) },
      () => { if (lastAuth !== "Bearer sk-bench-mitm") throw new Error(`mitmproxy did not inject: ${lastAuth}`); }));
  }

  // PATCH latency: each call writes the keychain, swaps the proxy rules and persists metadata.
  const patch = [];
  for (let i = 1; i <= 100; i++) {
    const t0 = performance.now();
    await client.instances.update(inst.id, { env: { OPENAI_KEY: `sk-bench-${i}` } });
    patch.push(performance.now() - t0);
  }
  await get({ upPort, proxyPort: meta.network.proxy_port, ca: hypedeckCa });
  if (lastAuth !== "Bearer sk-bench-100") throw new Error("rotation not in force");

  // Time until the proxy uses the new value: PATCH sent → the upstream receives a request
  // carrying it (the first request after PATCH returns must already carry it).
  const inForce = [];
  let stale = 0;
  for (let i = 101; i <= 150; i++) {
    const t0 = performance.now();
    await client.instances.update(inst.id, { env: { OPENAI_KEY: `sk-bench-${i}` } });
    await get({ upPort, proxyPort: meta.network.proxy_port, ca: hypedeckCa });
    if (lastAuth !== `Bearer sk-bench-${i}`) stale++;
    inForce.push(performance.now() - t0);
  }

  const direct = results[0];
  const lines = [
    `### Egress proxy and rotation (${new Date().toISOString().slice(0, 10)}, ${N} requests, concurrency ${CONCURRENCY}, 127.0.0.1, new TLS connection per request)`,
    "",
    "| path | p50 latency (ms) | p99 latency (ms) | added p50 vs direct (ms) | req/s |",
    "|---|---|---|---|---|",
    ...results.map((r) => `| ${r.label} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p50 - direct.p50)} | ${r.rps.toFixed(0)} |`),
    "",
    `PATCH /instances/{id} (keychain write + rule swap + metadata write), 100 calls: p50 ${ms(pct(patch, 50))} ms, p99 ${ms(pct(patch, 99))} ms.`,
    "",
    `PATCH sent → upstream sees the new value (PATCH + one proxied request), 50 rotations: p50 ${ms(pct(inForce, 50))} ms, p99 ${ms(pct(inForce, 99))} ms; first requests after PATCH carrying an old value: ${stale}.`,
    "",
  ];
  console.log(lines.join("\n"));
  await client.instances.delete(inst.id);
} finally {
  mitm?.kill("SIGTERM");
  await server.stop();
  await registry.stop();
  upstream.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(p.dir, { recursive: true, force: true });
}
