// Benchmark (not a test): the egress proxy under load. `oha` (crates.io) drives HTTPS requests
// through an HTTP CONNECT proxy to nginx (Debian) on 127.0.0.1 serving 1 KiB and 1 MiB files,
// at concurrency 1 and 16: directly, through a running instance's Hypedeck egress proxy
// (injecting a credential), and through mitmproxy (PyPI) with a header-injecting addon, all
// in one run. nginx logs the Authorization header of every request: the run checks that every
// proxied request reached the upstream carrying the injected value.
//
//   HYPEDECK_BIN=target/release/hypedeck OHA=.bench-cache/oha/bin/oha MITMDUMP=.bench-venv/bin/mitmdump \
//     BENCH_OUT=BENCHMARKS.md node tests/bench/proxy-bench.mjs
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { freePort, makeTestPki, newDataDir, startRegistry, startServer, waitFor } from "../vm/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const OHA = path.resolve(process.env.OHA ?? ".bench-cache/oha/bin/oha");
const MITMDUMP = process.env.MITMDUMP;
const SCALE = Number(process.env.BENCH_SCALE ?? 1);

const work = mkdtempSync(path.join(tmpdir(), "hypedeck-proxy-bench-"));
const pki = makeTestPki("hypedeck-proxy-bench-pki-");

/** nginx on 127.0.0.1 with TLS, /1k and /1m, logging each request's Authorization header. */
async function startNginx() {
  const dir = path.join(work, "nginx");
  mkdirSync(path.join(dir, "www"), { recursive: true });
  // nginx's worker drops to an unprivileged user: it must be able to read the files.
  chmodSync(work, 0o755);
  writeFileSync(path.join(dir, "www/1k"), Buffer.alloc(1024, 0x61));
  writeFileSync(path.join(dir, "www/1m"), Buffer.alloc(1 << 20, 0x62));
  writeFileSync(path.join(dir, "srv.pem"), pki.cert);
  writeFileSync(path.join(dir, "srv.key"), pki.key);
  const port = await freePort();
  writeFileSync(path.join(dir, "nginx.conf"), `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  log_format auth '$http_authorization';
  access_log ${dir}/access.log auth buffer=64k flush=1s;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:${port} ssl;
    server_name localhost;
    ssl_certificate ${dir}/srv.pem;
    ssl_certificate_key ${dir}/srv.key;
    root ${dir}/www;
  }
}
`);
  mkdirSync(path.join(dir, "tmp"));
  const child = spawn("nginx", ["-c", path.join(dir, "nginx.conf"), "-p", dir], { stdio: "ignore" });
  process.on("exit", () => child.kill("SIGTERM"));
  await waitFor(() => {
    execFileSync("curl", ["-sSf", "--cacert", pki.ca, `https://localhost:${port}/1k`, "-o", "/dev/null"], { stdio: "pipe" });
    return true;
  }, "nginx", 10_000);
  return {
    port,
    pid: child.pid,
    /** Authorization values logged since the last call. */
    seen() {
      execFileSync("kill", ["-USR1", String(child.pid)]); // reopen logs: flushes the buffer
      execFileSync("sleep", ["0.3"]);
      const log = path.join(dir, "access.log");
      let text = "";
      try {
        text = readFileSync(log, "utf8");
      } catch {
        // nothing yet
      }
      writeFileSync(log, "");
      return text.split("\n").filter(Boolean);
    },
    stop: () => child.kill("SIGTERM"),
  };
}

/** CPU time (user + system) of `pid` and its children so far, in ms (nginx: master + worker). */
const TICK_MS = 1000 / Number(execFileSync("getconf", ["CLK_TCK"]).toString());
function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  const own = (Number(stat[11]) + Number(stat[12])) * TICK_MS; // utime, stime (fields 14, 15)
  const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
  return own + kids.reduce((a, k) => a + cpuMs(Number(k)), 0);
}

/** ms of CPU one MiB of AES-GCM costs here (openssl speed, 16 KiB blocks: TLS record size). */
function aesGcmMsPerMiB(cipher) {
  const out = execFileSync("openssl", ["speed", "-elapsed", "-seconds", "2", "-bytes", "16384", "-evp", cipher], { stdio: ["ignore", "pipe", "ignore"] }).toString();
  const kbps = Number(out.trim().split("\n").at(-1).trim().split(/\s+/).at(-1).replace("k", ""));
  return (1024 / kbps) * 1000;
}

/** One oha run; returns req/s and p50/p99 in ms. */
function oha(url, { n, c, proxy }) {
  const args = ["-n", String(n), "-c", String(c), "--no-tui", "--output-format", "json", "--insecure"];
  if (proxy) args.push("-x", `http://127.0.0.1:${proxy}`);
  const out = JSON.parse(execFileSync(OHA, [...args, url], { maxBuffer: 64 << 20 }).toString());
  const ok = Object.entries(out.statusCodeDistribution ?? {}).reduce((a, [code, k]) => a + (code === "200" ? k : 0), 0);
  if (ok !== n) throw new Error(`${url} via ${proxy ?? "direct"}: ${ok}/${n} answered 200: ${JSON.stringify(out.errorDistribution)}`);
  return { rps: out.summary.requestsPerSec, p50: out.latencyPercentiles.p50 * 1000, p99: out.latencyPercentiles.p99 * 1000 };
}

const nginx = await startNginx();
const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1", HYPEDECK_EGRESS_TEST_LISTENER: "1", HYPEDECK_LOG: "warn" });
const client = server.client();
let mitm;
try {
  const inst = await client.instances.create({
    name: "proxy-bench", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: ["sleep 3600"],
    env: { OPENAI_KEY: "sk-proxy-bench" }, network: { egress: { enabled: true } },
    credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
  }, { timeout: 240_000 });
  await client.instances.wait(inst.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  const proxyPort = JSON.parse(readFileSync(path.join(dataDir, "instances", inst.id, "metadata.json"), "utf8")).network.proxy_port;

  const paths = [["direct", null, null], ["Hypedeck", proxyPort, "Bearer sk-proxy-bench"]];
  if (MITMDUMP) {
    const confdir = path.join(work, "mitm");
    mkdirSync(confdir);
    const addon = path.join(confdir, "inject.py");
    writeFileSync(addon, "def request(flow):\n    if flow.request.pretty_host == 'localhost':\n        flow.request.headers['Authorization'] = 'Bearer sk-bench-mitm'\n");
    const port = await freePort();
    mitm = spawn(MITMDUMP, ["-q", "--listen-host", "127.0.0.1", "--listen-port", String(port), "-s", addon,
      "--set", `confdir=${confdir}`, "--set", `ssl_verify_upstream_trusted_ca=${pki.ca}`], { stdio: "ignore" });
    await waitFor(() => { try { oha(`https://localhost:${nginx.port}/1k`, { n: 1, c: 1, proxy: port }); return true; } catch { return false; } }, "mitmproxy", 30_000);
    paths.push(["mitmproxy + addon", port, "Bearer sk-bench-mitm"]);
  }
  nginx.seen();

  const cells = [["1 KiB", "1k", 1, 400], ["1 KiB", "1k", 16, 3000], ["1 MiB", "1m", 1, 100], ["1 MiB", "1m", 16, 400]];
  const results = {};
  const rows = [];
  for (const [size, file, c, n0] of cells) {
    for (const [label, proxy, expect] of paths) {
      // mitmproxy is an order of magnitude slower: fewer requests keep the run short.
      const n = Math.max(c, Math.round((label.startsWith("mitm") ? n0 / 5 : n0) * SCALE));
      const proxyPid = label === "Hypedeck" ? server.pid : label.startsWith("mitm") ? mitm.pid : null;
      const before = [cpuMs(nginx.pid), proxyPid ? cpuMs(proxyPid) : 0];
      const r = oha(`https://localhost:${nginx.port}/${file}`, { n, c, proxy });
      r.nginxCpu = (cpuMs(nginx.pid) - before[0]) / n;
      r.proxyCpu = proxyPid ? (cpuMs(proxyPid) - before[1]) / n : 0;
      results[`${file}/${c}/${label}`] = r;
      const seen = nginx.seen();
      if (seen.length !== n) throw new Error(`${label}: nginx saw ${seen.length} of ${n} requests`);
      if (expect && seen.some((a) => a !== expect)) throw new Error(`${label}: a request reached nginx without the injected header`);
      rows.push([`${size}, c=${c}, ${label}`, `${r.rps.toFixed(0)} req/s`, `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${n} requests${expect ? ", all injected" : ""}`]);
    }
  }
  const get = (k) => results[k];
  rows.push(["1 KiB c=16: Hypedeck / direct", `${((get("1k/16/Hypedeck").rps / get("1k/16/direct").rps) * 100).toFixed(0)} %`, "goal ≥ 25 %"]);
  if (MITMDUMP) rows.push(["1 KiB c=16: Hypedeck / mitmproxy", `${(get("1k/16/Hypedeck").rps / get("1k/16/mitmproxy + addon").rps).toFixed(1)}×`, "goal ≥ 15×"]);
  rows.push(["1 MiB c=16: Hypedeck / direct", `${((get("1m/16/Hypedeck").rps / get("1m/16/direct").rps) * 100).toFixed(0)} %`, "goal ≥ 70 %"]);
  // Where the 1 MiB c=16 time goes: CPU per request of each process on the shared cores, and
  // the AES-GCM floor of a proxy that must decrypt and re-encrypt every byte.
  const big = get("1m/16/Hypedeck");
  const aes = aesGcmMsPerMiB("aes-256-gcm");
  rows.push(["1 MiB c=16: CPU per request, nginx (direct / via Hypedeck)", `${get("1m/16/direct").nginxCpu.toFixed(2)} / ${big.nginxCpu.toFixed(2)} ms`, "utime + stime from /proc"]);
  rows.push(["1 MiB c=16: CPU per request, Hypedeck proxy", `${big.proxyCpu.toFixed(2)} ms`, `of which AES-256-GCM decrypt + encrypt ≥ ${(2 * aes).toFixed(2)} ms (openssl speed, 16 KiB blocks)`]);
  rows.push(["1 KiB c=1: added p50", `${(get("1k/1/Hypedeck").p50 - get("1k/1/direct").p50).toFixed(2)} ms`, "goal ≤ 0.3 ms"]);
  const version = (cmd) => execFileSync(cmd, ["--version"], { stdio: ["ignore", "pipe", "pipe"] }).toString().trim().split("\n")[0];
  report("Egress proxy under load: oha → nginx, direct vs Hypedeck vs mitmproxy",
    `HTTPS to nginx on 127.0.0.1 (${spawnSync("nginx", ["-v"]).stderr.toString().trim().replace("nginx version: ", "")}), ${version(OHA)}, connections kept alive through CONNECT tunnels; ${BIN.includes("/release/") ? "release" : "debug"} \`hypedeck\`; mitmproxy ${MITMDUMP ? version(MITMDUMP) : "not run"}`,
    rows);
  await client.instances.delete(inst.id);
} finally {
  mitm?.kill("SIGTERM");
  await server.stop();
  await registry.stop();
  nginx.stop();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
  rmSync(pki.dir, { recursive: true, force: true });
}
