// Benchmark (not a test): the guest network, measured from inside real guests, for two builds
// in one run: "before" (HYPEDECK_BIN_BEFORE, e.g. the QEMU user-mode/slirp build) and "now"
// (HYPEDECK_BIN, the userspace stack in crates/netstack). Per build, one after the other:
//
//   1. plain HTTP download of BENCH_MIB MiB from a server in the fake internet, guest without
//      egress (curl in the guest, `%{speed_download}`);
//   2. the same download over HTTPS through the instance's credential proxy (egress on, a
//      credential injected for internet.test; the server answers 401 without it);
//   3. TCP connects per second from the guest: one curl process fetching an empty answer
//      BENCH_CONNECTS times with `Connection: close` (URL globbing), so every request is a new
//      TCP connection (checked with `%{num_connects}`); rate = requests / summed `%{time_total}`;
//   4. a forwarded port: busybox httpd in the guest serving a BENCH_MIB MiB file from tmpfs,
//      downloaded with curl from the host side via 127.0.0.1:<host_port>.
//
// Root only, inside the `hdh` namespace of scripts/netns.sh (`make bench-net` does all of it):
// guests of the new stack cannot reach any host address, so the servers run in `hdi` (this
// file, started there with `ip netns exec hdi … serve`) on 203.0.113.10.
//
//   HYPEDECK_BIN=target/release/hypedeck HYPEDECK_BIN_BEFORE=../old/target/release/hypedeck \
//     HYPEDECK_KERNEL_DEB=… BENCH_OUT=BENCHMARKS.md node tests/bench/net-bench.mjs
import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { once } from "node:events";
import { cpus, networkInterfaces } from "node:os";
import path from "node:path";

const MIB = Number(process.env.BENCH_MIB ?? 64);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 200);
const STATE = process.env.HYPEDECK_NETNS_DIR ?? "/run/hypedeck-netns";
const INTERNET = "203.0.113.10";
const HTTP_PORT = 9080;
const HTTPS_PORT = 9443;
const SECRET = "sk-bench-net-credential";
const BYTES = MIB * 1024 * 1024;

// ---- the servers in `hdi` (this file run with `serve`) ------------------------------------
if (process.argv[2] === "serve") {
  const { createServer: createHttp } = await import("node:http");
  const { createServer: createHttps } = await import("node:https");
  const chunk = Buffer.alloc(1024 * 1024); // zeros: nothing on these paths compresses
  let authorized = 0;
  let refused = 0;
  const big = async (res) => {
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": BYTES });
    for (let sent = 0; sent < BYTES && !res.destroyed; sent += chunk.length) {
      if (!res.write(chunk)) await Promise.race([once(res, "drain"), once(res, "close")]);
    }
    res.end();
  };
  const handler = (tls) => (req, res) => {
    const url = new URL(req.url, "http://x");
    if (tls) {
      if (req.headers.authorization !== `Bearer ${SECRET}`) {
        refused++;
        res.writeHead(401).end("credential missing\n");
        return;
      }
      authorized++;
    }
    if (url.pathname === "/big") return void big(res);
    if (url.pathname === "/__hits") return void res.end(JSON.stringify({ authorized, refused }));
    res.writeHead(204).end(); // /small: an empty answer, the connection rate's request
  };
  const plain = createHttp(handler(false));
  const secure = createHttps(
    { cert: readFileSync(path.join(STATE, "internet.pem")), key: readFileSync(path.join(STATE, "internet.key")) },
    handler(true),
  );
  for (const s of [plain, secure]) s.keepAliveTimeout = 5000;
  await new Promise((r) => plain.listen(HTTP_PORT, INTERNET, r));
  await new Promise((r) => secure.listen(HTTPS_PORT, INTERNET, r));
  console.log("ready");
  await new Promise(() => {});
}

// ---- the benchmark (in `hdh`) --------------------------------------------------------------
const { deleteAll, execWs, freePort, newDataDir, startRegistry, startServer, waitFor } = await import("../vm/harness.mjs");

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What a binary is: its checkout's commit (and whether crates/ had uncommitted changes), profile. */
function describe(bin) {
  const dir = path.dirname(bin);
  let rev = "unknown commit";
  try {
    rev = execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"]).toString().trim();
    const dirty = execFileSync("git", ["-C", dir, "status", "--porcelain", "--untracked-files=no", "--", "crates"]).toString().trim();
    if (dirty) rev += " + uncommitted changes in crates/";
  } catch {
    // not in a checkout
  }
  const profile = /\/release\//.test(bin) ? "release" : /\/debug\//.test(bin) ? "debug" : "unknown profile";
  return { rev, profile };
}

/** Runs `script` with sh in the guest; resolves its stdout (throws on a refused exec). */
async function sh(server, token, id, script) {
  const r = await execWs(server.url, token, id, { command: ["/bin/sh", "-c", script] });
  if (r.status !== undefined) throw new Error(`exec refused: ${JSON.stringify(r)}`);
  return r;
}

/** One curl download in the guest; MiB/s from curl's own `%{speed_download}`. */
async function guestDownload(server, token, id, url) {
  const r = await sh(server, token, id,
    `curl -sS -f --max-time 600 -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\\n' '${url}' 2>&1`);
  const [code, size, speed] = r.output.trim().split(/\s+/);
  if (code !== "200" || Number(size) !== BYTES) throw new Error(`guest download of ${url}: ${r.output.trim()}`);
  return Number(speed) / (1024 * 1024);
}

/** One curl download on the host side (this namespace); MiB/s. */
function hostDownload(url) {
  const out = execFileSync("curl", ["-sS", "-f", "--max-time", "600", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url])
    .toString().trim();
  const [code, size, speed] = out.split(/\s+/);
  if (code !== "200" || Number(size) !== BYTES) throw new Error(`host download of ${url}: ${out}`);
  return Number(speed) / (1024 * 1024);
}

/** CONNECTS sequential requests, each on a new TCP connection; connects/s and p50 connect ms. */
async function guestConnects(server, token, id) {
  const url = `http://${INTERNET}:${HTTP_PORT}/small?i=[1-${CONNECTS}]`;
  const r = await sh(server, token, id,
    `curl -sS --max-time 600 -H 'Connection: close' -o /dev/null -w '%{http_code} %{num_connects} %{time_connect} %{time_total}\\n' '${url}' 2>&1`);
  const lines = r.output.trim().split("\n").map((l) => l.trim().split(/\s+/));
  const bad = lines.filter(([code, n]) => code !== "204" || n !== "1");
  if (lines.length !== CONNECTS || bad.length) throw new Error(`connect loop: ${lines.length} answers, ${bad.length} not 204 on a new connection: ${r.output.slice(0, 300)}`);
  const total = lines.reduce((s, l) => s + Number(l[3]), 0);
  return { rate: CONNECTS / total, connectMs: median(lines.map((l) => Number(l[2]) * 1000)) };
}

/** `-netdev …` of the QEMU running instance `id`, to show which network a build really used. */
function netdev(dataDir, id) {
  try {
    const pid = readFileSync(path.join(dataDir, "instances", id, "run", "qemu.pid"), "utf8").trim();
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const spec = argv[argv.indexOf("-netdev") + 1] ?? "";
    return spec.split(",")[0];
  } catch {
    return "unknown";
  }
}

async function bootGuest(client, server, body) {
  const vm = await client.instances.create({ vcpus: 1, ...body }, { timeout: 240_000 });
  await client.instances.wait(vm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  await waitFor(async () => (await sh(server, client.apiKey, vm.id, "echo up")).output === "up\n", `exec in ${body.name}`, 120_000);
  return vm;
}

/** Every row for one build; the engine, its guests and its data dir are gone afterwards. */
async function measureBuild(label, bin, registry) {
  const dataDir = newDataDir();
  const server = await startServer(bin, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: path.join(STATE, "ca.pem") });
  const client = server.client();
  const token = client.apiKey;
  const out = { label, ...describe(bin) };
  try {
    // Guest A: network on, egress off; busybox httpd on 8080 behind a forwarded port.
    const hostPort = await freePort();
    const a = await bootGuest(client, server, {
      name: "net-bench-a",
      image: `${registry.host}/vm/curl:1`,
      size: "512MB",
      network: { enabled: true },
      ports: [{ host_port: hostPort, guest_port: 8080, protocol: "tcp" }],
      cmd: [`busybox dd if=/dev/zero of=/tmp/big bs=1M count=${MIB} 2>/dev/null && exec busybox httpd -f -p 8080 -h /tmp`],
    });
    const log = server.output();
    out.accel = process.env.HYPEDECK_ACCEL?.toUpperCase() ?? (/using TCG/.test(log) ? "TCG" : /hardware acceleration/.test(log) ? "KVM" : "see engine log");
    out.netdev = netdev(dataDir, a.id);

    const plainUrl = `http://${INTERNET}:${HTTP_PORT}/big`;
    await guestDownload(server, token, a.id, plainUrl); // warm-up
    out.plain = [];
    for (let i = 0; i < RUNS; i++) out.plain.push(await guestDownload(server, token, a.id, plainUrl));
    console.error(`${label}: plain download ${out.plain.map((x) => x.toFixed(1)).join(", ")} MiB/s`);

    await guestConnects(server, token, a.id); // warm-up
    out.connects = [];
    for (let i = 0; i < RUNS; i++) out.connects.push(await guestConnects(server, token, a.id));
    console.error(`${label}: connects ${out.connects.map((x) => x.rate.toFixed(0)).join(", ")} /s`);

    const fwdUrl = `http://127.0.0.1:${hostPort}/big`;
    await waitFor(() => hostDownload(fwdUrl), "the guest's httpd behind the forwarded port", 120_000); // warm-up
    out.forwarded = [];
    for (let i = 0; i < RUNS; i++) out.forwarded.push(hostDownload(fwdUrl));
    console.error(`${label}: forwarded port ${out.forwarded.map((x) => x.toFixed(1)).join(", ")} MiB/s`);
    await client.instances.delete(a.id);

    // Guest B: egress on, a credential injected for internet.test (the server refuses without).
    const b = await bootGuest(client, server, {
      name: "net-bench-b",
      image: `${registry.host}/vm/curl:1`,
      size: "256MB",
      cmd: ["sleep 3600"],
      env: { NETBENCH_KEY: SECRET },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        NETBENCH_KEY: { source: { env: "NETBENCH_KEY" }, inject: [{ hosts: ["internet.test"], as: { header: "Authorization", format: "Bearer ${value}" } }] },
      },
    });
    const hits0 = await (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).json();
    const tlsUrl = `https://internet.test:${HTTPS_PORT}/big`;
    await guestDownload(server, token, b.id, tlsUrl); // warm-up
    out.proxied = [];
    for (let i = 0; i < RUNS; i++) out.proxied.push(await guestDownload(server, token, b.id, tlsUrl));
    const hits1 = await (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).json();
    if (hits1.authorized - hits0.authorized !== RUNS + 1 || hits1.refused !== hits0.refused) {
      throw new Error(`the upstream did not see the credential on every proxied download: ${JSON.stringify([hits0, hits1])}`);
    }
    console.error(`${label}: HTTPS via proxy ${out.proxied.map((x) => x.toFixed(1)).join(", ")} MiB/s`);
    await client.instances.delete(b.id);
  } catch (e) {
    console.error(server.output().slice(-4000));
    throw e;
  } finally {
    await deleteAll(client);
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return out;
}

async function main() {
  const before = process.env.HYPEDECK_BIN_BEFORE && path.resolve(process.env.HYPEDECK_BIN_BEFORE);
  const now = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
  if (!before) throw new Error("set HYPEDECK_BIN_BEFORE to the build to compare against");
  const inside = Object.values(networkInterfaces()).flat().some((i) => i.address === "198.51.100.1");
  if (!inside || !existsSync(path.join(STATE, "internet.pem"))) {
    throw new Error("run inside the hdh namespace of scripts/netns.sh, as root (make bench-net)");
  }

  const internet = spawn("ip", ["netns", "exec", "hdi", process.execPath, new URL(import.meta.url).pathname, "serve"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, BENCH_MIB: String(MIB), HYPEDECK_NETNS_DIR: STATE },
  });
  const started = Date.now();
  let registry;
  try {
    await waitFor(async () => (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).ok, "the benchmark's servers in hdi");
    // The ceiling without a guest: curl in this namespace straight to the server.
    hostDownload(`http://${INTERNET}:${HTTP_PORT}/big`);
    const ceiling = median(Array.from({ length: RUNS }, () => hostDownload(`http://${INTERNET}:${HTTP_PORT}/big`)));
    registry = await startRegistry();
    const b = await measureBuild("before", before, registry);
    const n = await measureBuild("now", now, registry);
    print(b, n, ceiling, (Date.now() - started) / 1000);
  } finally {
    await registry?.stop();
    internet.kill("SIGTERM");
  }
}

function print(b, n, ceiling, seconds) {
  const mib = (xs) => `${median(xs).toFixed(1)} MiB/s`;
  const range = (xs, f = (x) => x.toFixed(1)) => `min ${f(Math.min(...xs))}, max ${f(Math.max(...xs))}`;
  const rates = (r) => r.connects.map((c) => c.rate);
  const verdict = (ratio, goal) => `${goal === 1 ? "≥ 1× (not slower)" : `≥ ${goal}×`}: ${ratio >= goal ? "met" : "**missed**"}`;
  const rows = [
    [`plain HTTP download, ${MIB} MiB (guest curl ← ${INTERNET}, egress off)`, median(b.plain), median(n.plain), mib(b.plain), mib(n.plain), 2,
      `median of ${RUNS}; before ${range(b.plain)}; now ${range(n.plain)}`],
    [`HTTPS download through the credential proxy, ${MIB} MiB (egress on, credential injected)`, median(b.proxied), median(n.proxied), mib(b.proxied), mib(n.proxied), 1,
      `median of ${RUNS}; before ${range(b.proxied)}; now ${range(n.proxied)}; the upstream saw the credential on every request`],
    [`TCP connects/s (guest curl, ${CONNECTS} sequential requests, each a new connection)`, median(rates(b)), median(rates(n)),
      `${median(rates(b)).toFixed(0)}/s`, `${median(rates(n)).toFixed(0)}/s`, 1,
      `median of ${RUNS} loops; p50 connect ${median(b.connects.map((c) => c.connectMs)).toFixed(2)} ms before, ${median(n.connects.map((c) => c.connectMs)).toFixed(2)} ms now`],
    [`forwarded port, ${MIB} MiB (busybox httpd in the guest → curl on 127.0.0.1:host_port)`, median(b.forwarded), median(n.forwarded), mib(b.forwarded), mib(n.forwarded), 2,
      `median of ${RUNS}; before ${range(b.forwarded)}; now ${range(n.forwarded)}`],
  ];
  const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const accel = b.accel === n.accel ? b.accel : `before ${b.accel}, now ${n.accel}`;
  const text = [
    `\n## Guest network: slirp (before) vs sandbox network (now) — ${new Date().toISOString().slice(0, 10)}\n`,
    `Machine: ${cpu}, ${cpus().length} cores; ${accel}, q35, 1 vCPU; before = ${b.rev} (${b.profile}, QEMU \`-netdev ${b.netdev}\`), ` +
      `now = ${n.rev} (${n.profile}, QEMU \`-netdev ${n.netdev}\`); network namespaces of scripts/netns.sh; run took ${Math.round(seconds)} s.\n`,
    "| measure | slirp (before) | sandbox network (now) | now / before | goal | notes |\n|---|---|---|---|---|---|",
    ...rows.map(([m, rb, rn, fb, fn, goal, notes]) => `| ${m} | ${fb} | ${fn} | ${(rn / rb).toFixed(2)}× | ${verdict(rn / rb, goal)} | ${notes} |`),
    "",
    `Ceiling without a guest: curl in \`hdh\` straight to the same server, ${ceiling.toFixed(0)} MiB/s (median of ${RUNS}).`,
  ].join("\n");
  if (process.env.BENCH_OUT) appendFileSync(process.env.BENCH_OUT, `${text}\n`);
  console.log(text);
}

await main();
