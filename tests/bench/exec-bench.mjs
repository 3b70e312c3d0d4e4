// Benchmark (not a test): exec through the guest agent — round-trip latency of `true` and
// throughput of 100 MiB on stdout — over upstream's WebSocket framing.
//
//   HYPEDECK_BIN=target/release/hypedeck node tests/bench/exec-bench.mjs
import { rmSync } from "node:fs";
import path from "node:path";
import WebSocket from "ws";

import { deleteAll, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const MIB = Number(process.env.BENCH_MIB ?? 100);

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

/** One exec; resolves with {ms, bytes, exitCode}. */
function exec(url, token, id, command) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/instances/${id}/exec`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    let bytes = 0;
    let exitCode;
    ws.on("open", () => ws.send(JSON.stringify({ command })));
    ws.on("message", (data, binary) => {
      if (binary) bytes += data.length;
      else exitCode = JSON.parse(data.toString()).exitCode;
    });
    ws.on("close", () => resolve({ ms: performance.now() - t0, bytes, exitCode }));
    ws.on("error", reject);
  });
}

async function main() {
  const registry = await startRegistry();
  const dataDir = newDataDir();
  const server = await startServer(BIN, dataDir);
  const client = server.client();
  const rows = [];
  try {
    const vm = await client.instances.create({
      name: "bench-exec",
      image: `${registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "512MB",
      entrypoint: ["/bin/busybox"],
      cmd: ["sleep", "3600"],
    });
    await client.instances.wait(vm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    const token = client.apiKey;
    await exec(server.url, token, vm.id, ["true"]); // connects the agent link
    const latencies = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await exec(server.url, token, vm.id, ["true"]);
      if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
      latencies.push(r.ms);
    }
    const big = [];
    for (let i = 0; i < 3; i++) {
      const r = await exec(server.url, token, vm.id, ["head", "-c", String(MIB * 1024 * 1024), "/dev/zero"]);
      if (r.bytes !== MIB * 1024 * 1024) throw new Error(`got ${r.bytes} bytes`);
      big.push(MIB / (r.ms / 1000));
    }
    const log = server.output();
    const accel = /using TCG/.test(log) ? "TCG" : /hardware acceleration/.test(log) ? "KVM" : "see engine log";
    rows.push([
      "exec `true` round trip (WebSocket open → exit code)",
      `p50 ${pct(latencies, 50).toFixed(1)} ms`,
      `p90 ${pct(latencies, 90).toFixed(1)} ms, n=${RUNS}; ${accel}`,
    ]);
    rows.push([`exec stdout throughput (${MIB} MiB of head -c)`, `${pct(big, 50).toFixed(1)} MiB/s`, `median of 3; virtio-serial agent port; ${accel}`]);
  } finally {
    await deleteAll(client);
    await server.stop();
    await registry.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  report("Exec through the guest agent", "", rows);
}

await main();
