// Benchmark (not a test): the guest network, measured from inside real guests, for two builds
// in one run: "before" (HYPEDECK_BIN_BEFORE, e.g. the QEMU user-mode/slirp build) and "now"
// (HYPEDECK_BIN, the userspace stack in crates/netstack). Both engines run side by side and the
// runs alternate between them (before, now, before, now, …), so drift on the host hits both:
//
//   1. plain HTTP download of BENCH_MIB MiB from a server in the fake internet, guest without
//      egress (curl in the guest, `%{speed_download}`);
//   2. the same download over HTTPS through the instance's credential proxy (egress on, a
//      credential injected for internet.test; the server answers 401 without it);
//   3. TCP connects per second from the guest: one curl process fetching an empty answer
//      BENCH_CONNECTS times with `Connection: close` (URL globbing), so every request is a new
//      TCP connection (checked with `%{num_connects}`); rate = answered requests / summed
//      `%{time_total}`; then one burst of BENCH_BURST such requests, counting refusals;
//   4. a forwarded port: busybox httpd in the guest serving a BENCH_MIB MiB file from tmpfs,
//      downloaded with curl from the host side via 127.0.0.1:<host_port>.
// For the downloads it also reads where the CPU went (/proc): the guest's vCPU thread, the rest
// of QEMU (slirp runs in its main loop; children it reaped included) and the engine.
//
// Root only, inside the `hdh` namespace of scripts/netns.sh (`make bench-net` does all of it):
// guests of the new stack cannot reach any host address, so the servers run in `hdi` (this
// file, started there with `ip netns exec hdi … serve`) on 203.0.113.10.
//
//   HYPEDECK_BIN=target/release/hypedeck HYPEDECK_BIN_BEFORE=../old/target/release/hypedeck \
//     HYPEDECK_KERNEL_DEB=… BENCH_OUT=BENCHMARKS.md node tests/bench/net-bench.mjs
import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, networkInterfaces } from "node:os";
import path from "node:path";
import { median } from "./report.mjs";

const MIB = Number(process.env.BENCH_MIB ?? 64);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 200);
const BURST = Number(process.env.BENCH_BURST ?? 1500);
const FLOW_DRAIN_MS = 11_000;
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
      if (!res.write(chunk)) {
        await new Promise((resolve) => {
          const done = () => (res.off("drain", done), res.off("close", done), resolve());
          res.on("drain", done).on("close", done);
        });
      }
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

/**
 * CONNECTS sequential requests, each on a new TCP connection. Resolves {rate (successful
 * connects/s over the loop's summed time), connectMs (p50), failed (transfers that got no
 * answer), firstFailed (1-based index or null)}.
 */
async function guestConnects(server, token, id, count = CONNECTS) {
  const url = `http://${INTERNET}:${HTTP_PORT}/small?i=[1-${count}]`;
  const r = await sh(server, token, id,
    `curl -s --max-time 600 -H 'Connection: close' -o /dev/null -w '%{exitcode} %{http_code} %{num_connects} %{time_connect} %{time_total}\\n' '${url}'`);
  const lines = r.output.trim().split("\n").map((l) => l.trim().split(/\s+/));
  if (lines.length !== count) throw new Error(`connect loop: ${lines.length} transfers: ${r.output.slice(0, 300)}`);
  const ok = lines.filter(([rc, code, n]) => rc === "0" && code === "204" && n === "1");
  const total = lines.reduce((s, l) => s + Number(l[4]), 0);
  const firstFailed = lines.findIndex(([rc, code, n]) => !(rc === "0" && code === "204" && n === "1"));
  return {
    rate: ok.length / total,
    connectMs: ok.length ? median(ok.map((l) => Number(l[3]) * 1000)) : NaN,
    failed: count - ok.length,
    firstFailed: firstFailed < 0 ? null : firstFailed + 1,
    exitCodes: [...new Set(lines.filter((l) => l[0] !== "0").map((l) => l[0]))],
  };
}

/** The flow log's verdicts since `since` (ms), counted (the sandbox network only; {} before it). */
async function flowVerdicts(server, token, id, since) {
  try {
    const r = await fetch(`${server.url}/instances/${id}/network/flows`, { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) return {};
    const counts = {};
    for (const f of await r.json()) {
      if (f.at_ms < since) continue;
      const v = f.reason ? `${f.verdict} (${f.reason})` : String(f.verdict);
      counts[v] = (counts[v] ?? 0) + 1;
    }
    return counts;
  } catch {
    return {};
  }
}

/** Logs why connects failed (the flow log's verdicts, the guest's sockets); keeps the verdicts in `c.flows`. */
async function explainFailures(server, token, id, since, c, what) {
  c.flows = await flowVerdicts(server, token, id, since);
  const sockets = (await sh(server, token, id, "busybox netstat -tan | busybox awk 'NR>2{print $6}' | busybox sort | busybox uniq -c")).output;
  console.error(`${what}: ${c.failed} failed (curl exit ${c.exitCodes}), first at #${c.firstFailed}; ` +
    `flow log: ${JSON.stringify(c.flows)}; guest sockets: ${sockets.trim().replace(/\s+/g, " ")}`);
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

async function bootGuest(e, body) {
  const vm = await e.client.instances.create({ vcpus: 1, ...body }, { timeout: 240_000 });
  await e.client.instances.wait(vm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  await waitFor(async () => (await sh(e.server, e.token, vm.id, "echo up")).output === "up\n", `exec in ${body.name}`, 120_000);
  return vm;
}

const TICK = 100; // USER_HZ: /proc's CPU times are in 1/100 s on Linux

/** CPU seconds (user + system) of each of a process's threads, by thread id. */
function threadCpu(pid) {
  const out = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(tid), (Number(f[11]) + Number(f[12])) / TICK);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** CPU seconds of a process (all its threads) and of its waited-for children. */
function processCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICK;
}

/**
 * Where the CPU went while `fn` ran: the guest's vCPU thread, the rest of QEMU (its main loop,
 * where slirp runs, other threads, reaped children), the engine. QEMU names no threads unless
 * told to, so the vCPU thread is taken to be the busiest thread other than the main one (under
 * TCG it has run the whole boot).
 */
async function withCpu(e, id, fn) {
  const qemu = Number(readFileSync(path.join(e.dataDir, "instances", id, "run", "qemu.pid"), "utf8").trim());
  const first = threadCpu(qemu);
  const vcpuTid = [...first].filter(([tid]) => tid !== qemu).sort((x, y) => y[1] - x[1])[0]?.[0];
  const snap = (threads) => {
    const vcpu = threads.get(vcpuTid) ?? 0;
    return { vcpu, qemuRest: processCpu(qemu) - vcpu, engine: processCpu(e.server.pid) };
  };
  const a = snap(first);
  const t0 = performance.now();
  const value = await fn();
  const wall = (performance.now() - t0) / 1000;
  const b = snap(threadCpu(qemu));
  return { value, cpu: { wall, vcpu: b.vcpu - a.vcpu, qemuRest: b.qemuRest - a.qemuRest, engine: b.engine - a.engine } };
}

/** Runs `fn(e)` for each engine in turn, `runs` times, so drift on the host hits both builds alike. */
async function alternate(engines, runs, fn) {
  for (let i = 0; i < runs; i++) for (const e of engines) await fn(e, i);
}

/** An engine of `bin` on a fresh data dir. */
async function startEngine(label, bin) {
  const dataDir = newDataDir();
  const server = await startServer(bin, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: path.join(STATE, "ca.pem") });
  const client = server.client();
  return { label, bin, dataDir, server, client, token: client.apiKey, ...describe(bin),
    plain: [], proxied: [], connects: [], forwarded: [], lastLoop: 0 };
}

/**
 * Every row for both builds, both engines up, runs alternating between them (before, now,
 * before, now, …). One guest per build at a time: A (egress off, forwarded port), then B (egress
 * on); the other build's guest idles meanwhile.
 */
async function measure(engines, registry) {
  const hostPort = new Map();
  for (const e of engines) {
    hostPort.set(e, await freePort());
    // Guest A: network on, egress off; busybox httpd on 8080 behind a forwarded port.
    e.a = await bootGuest(e, {
      name: "net-bench-a",
      image: `${registry.host}/vm/curl:1`,
      size: "512MB",
      network: { enabled: true },
      ports: [{ host_port: hostPort.get(e), guest_port: 8080, protocol: "tcp" }],
      cmd: [`busybox dd if=/dev/zero of=/tmp/big bs=1M count=${MIB} 2>/dev/null && exec busybox httpd -f -p 8080 -h /tmp`],
    });
    const log = e.server.output();
    e.accel = process.env.HYPEDECK_ACCEL?.toUpperCase() ?? (/using TCG/.test(log) ? "TCG" : /hardware acceleration/.test(log) ? "KVM" : "see engine log");
    e.netdev = netdev(e.dataDir, e.a.id);
  }

  const plainUrl = `http://${INTERNET}:${HTTP_PORT}/big`;
  for (const e of engines) await guestDownload(e.server, e.token, e.a.id, plainUrl); // warm-up
  await alternate(engines, RUNS, async (e) => {
    e.plain.push(await withCpu(e, e.a.id, () => guestDownload(e.server, e.token, e.a.id, plainUrl)));
  });
  for (const e of engines) console.error(`${e.label}: plain download ${e.plain.map((x) => x.value.toFixed(1)).join(", ")} MiB/s`);

  // Each loop starts with an empty flow table: the sandbox network keeps a connection whose
  // host side closed first in TIME-WAIT for 10 s (smoltcp) and counts it against its 1,024
  // flows, so back-to-back loops would measure that cap instead (the burst below does).
  const drained = async (e) => {
    const wait = FLOW_DRAIN_MS - (Date.now() - e.lastLoop);
    if (wait > 0) await sleep(wait);
  };
  await alternate(engines, RUNS + 1, async (e, i) => { // the first loop is a warm-up
    await drained(e);
    const since = Date.now();
    const c = await guestConnects(e.server, e.token, e.a.id);
    e.lastLoop = Date.now();
    if (c.failed) await explainFailures(e.server, e.token, e.a.id, since, c, `${e.label}: connect loop ${i}`);
    if (i > 0) e.connects.push(c);
  });
  for (const e of engines) {
    console.error(`${e.label}: connects ${e.connects.map((x) => `${x.rate.toFixed(0)}/s (${x.failed} failed)`).join(", ")}`);
  }
  for (const e of engines) {
    await drained(e);
    const since = Date.now();
    e.burst = await guestConnects(e.server, e.token, e.a.id, BURST);
    e.lastLoop = Date.now();
    if (e.burst.failed) await explainFailures(e.server, e.token, e.a.id, since, e.burst, `${e.label}: burst`);
    console.error(`${e.label}: burst of ${BURST}: ${e.burst.failed} failed`);
  }

  const fwdUrl = (e) => `http://127.0.0.1:${hostPort.get(e)}/big`;
  for (const e of engines) await waitFor(() => hostDownload(fwdUrl(e)), "the guest's httpd behind the forwarded port", 120_000); // warm-up
  await alternate(engines, RUNS, async (e) => {
    e.forwarded.push(await withCpu(e, e.a.id, async () => hostDownload(fwdUrl(e))));
  });
  for (const e of engines) {
    console.error(`${e.label}: forwarded port ${e.forwarded.map((x) => x.value.toFixed(1)).join(", ")} MiB/s`);
    await e.client.instances.delete(e.a.id);
  }

  // Guest B: egress on, a credential injected for internet.test (the server refuses without).
  for (const e of engines) {
    e.b = await bootGuest(e, {
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
  }
  const hits0 = await (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).json();
  const tlsUrl = `https://internet.test:${HTTPS_PORT}/big`;
  for (const e of engines) await guestDownload(e.server, e.token, e.b.id, tlsUrl); // warm-up
  await alternate(engines, RUNS, async (e) => {
    e.proxied.push(await withCpu(e, e.b.id, () => guestDownload(e.server, e.token, e.b.id, tlsUrl)));
  });
  const hits1 = await (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).json();
  const expected = engines.length * (RUNS + 1);
  if (hits1.authorized - hits0.authorized !== expected || hits1.refused !== hits0.refused) {
    throw new Error(`the upstream did not see the credential on every proxied download: ${JSON.stringify([hits0, hits1])}`);
  }
  for (const e of engines) {
    console.error(`${e.label}: HTTPS via proxy ${e.proxied.map((x) => x.value.toFixed(1)).join(", ")} MiB/s`);
    await e.client.instances.delete(e.b.id);
  }
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
  const engines = [];
  try {
    await waitFor(async () => (await fetch(`http://${INTERNET}:${HTTP_PORT}/__hits`)).ok, "the benchmark's servers in hdi");
    // The ceiling without a guest: curl in this namespace straight to the server.
    hostDownload(`http://${INTERNET}:${HTTP_PORT}/big`);
    const ceiling = median(Array.from({ length: RUNS }, () => hostDownload(`http://${INTERNET}:${HTTP_PORT}/big`)));
    registry = await startRegistry();
    engines.push(await startEngine("before", before), await startEngine("now", now));
    try {
      await measure(engines, registry);
    } catch (e) {
      for (const x of engines) console.error(`${x.label} engine log (tail):\n${x.server.output().slice(-3000)}`);
      throw e;
    }
    print(engines[0], engines[1], ceiling, (Date.now() - started) / 1000);
  } finally {
    for (const e of engines) {
      await deleteAll(e.client);
      await e.server.stop();
      rmSync(e.dataDir, { recursive: true, force: true });
    }
    await registry?.stop();
    internet.kill("SIGTERM");
  }
}

function print(b, n, ceiling, seconds) {
  const v = (xs) => xs.map((x) => x.value);
  const mib = (xs) => `${median(v(xs)).toFixed(1)} MiB/s`;
  const range = (xs) => `min ${Math.min(...v(xs)).toFixed(1)}, max ${Math.max(...v(xs)).toFixed(1)}`;
  const cpu = (xs) => ["vcpu", "qemuRest", "engine"].map((k) => median(xs.map((x) => x.cpu[k])).toFixed(2)).join(" / ") +
    ` of ${median(xs.map((x) => x.cpu.wall)).toFixed(2)}`;
  const cpuNote = (key) => `CPU s per download (QEMU vCPU thread / rest of QEMU / engine, of wall s): before ${cpu(b[key])}; now ${cpu(n[key])}`;
  const rates = (r) => r.connects.map((c) => c.rate);
  const denials = (c) => Object.keys(c.flows ?? {}).filter((k) => k !== "allowed");
  const burst = (c) => `${BURST - c.failed} of ${BURST}`;
  const refused = (c) => c.failed
    ? `${c.failed}, from #${c.firstFailed} on (curl exit ${c.exitCodes.join(", ")}${denials(c).length ? `; flow log: ${denials(c).join(", ")}` : ""})`
    : "none";
  const failures = (r) => {
    const failed = r.connects.reduce((s, c) => s + c.failed, 0);
    return failed ? `${failed} of ${RUNS * CONNECTS}` : "none";
  };
  const verdict = (ratio, goal) => `${goal === 1 ? "≥ 1× (no worse)" : `≥ ${goal}×`}: ${ratio >= goal ? "met" : "**missed**"}`;
  const rows = [
    [`plain HTTP download, ${MIB} MiB (guest curl ← ${INTERNET}, egress off)`, median(v(b.plain)), median(v(n.plain)), mib(b.plain), mib(n.plain), 2,
      `median of ${RUNS}; before ${range(b.plain)}; now ${range(n.plain)}; ${cpuNote("plain")}`],
    [`HTTPS download through the credential proxy, ${MIB} MiB (egress on, credential injected)`, median(v(b.proxied)), median(v(n.proxied)), mib(b.proxied), mib(n.proxied), 1,
      `median of ${RUNS}; before ${range(b.proxied)}; now ${range(n.proxied)}; the upstream saw the credential on every request; ${cpuNote("proxied")}`],
    [`TCP connects/s (guest curl, ${CONNECTS} sequential requests, each a new connection)`, median(rates(b)), median(rates(n)),
      `${median(rates(b)).toFixed(0)}/s`, `${median(rates(n)).toFixed(0)}/s`, 1,
      `median of ${RUNS} loops; p50 connect ${median(b.connects.map((c) => c.connectMs)).toFixed(2)} ms before, ` +
      `${median(n.connects.map((c) => c.connectMs)).toFixed(2)} ms now; each loop ≥ 11 s after the last; failed connects: before ${failures(b)}, now ${failures(n)}`],
    [`burst of ${BURST} sequential connects (as above, no pause): answered`, BURST - b.burst.failed, BURST - n.burst.failed,
      burst(b.burst), burst(n.burst), 1, `refused: before ${refused(b.burst)}; now ${refused(n.burst)}`],
    [`forwarded port, ${MIB} MiB (busybox httpd in the guest → curl on 127.0.0.1:host_port)`, median(v(b.forwarded)), median(v(n.forwarded)), mib(b.forwarded), mib(n.forwarded), 2,
      `median of ${RUNS}; before ${range(b.forwarded)}; now ${range(n.forwarded)}; ${cpuNote("forwarded")}`],
  ];
  const model = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const accel = b.accel === n.accel ? b.accel : `before ${b.accel}, now ${n.accel}`;
  const text = [
    `\n## Guest network: slirp (before) vs sandbox network (now) — ${new Date().toISOString().slice(0, 10)}\n`,
    `Machine: ${model}, ${cpus().length} cores; ${accel}, 1 vCPU guests; before = ${b.rev} (${b.profile}, QEMU \`-netdev ${b.netdev}\`), ` +
      `now = ${n.rev} (${n.profile}, QEMU \`-netdev ${n.netdev}\`); network namespaces of scripts/netns.sh; runs alternate between the builds; the run took ${Math.round(seconds)} s.\n`,
    "| measure | slirp (before) | sandbox network (now) | now / before | goal | notes |\n|---|---|---|---|---|---|",
    ...rows.map(([m, rb, rn, fb, fn, goal, notes]) => `| ${m} | ${fb} | ${fn} | ${(rn / rb).toFixed(2)}× | ${verdict(rn / rb, goal)} | ${notes} |`),
    "",
    `Ceiling without a guest: curl in \`hdh\` straight to the same server, ${ceiling.toFixed(0)} MiB/s (median of ${RUNS}).`,
  ].join("\n");
  if (process.env.BENCH_OUT) appendFileSync(process.env.BENCH_OUT, `${text}\n`);
  console.log(text);
}

await main();
