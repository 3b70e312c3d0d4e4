// Benchmark (not a test): exec through the guest agent — round-trip latency of `true` and
// throughput of 100 MiB on stdout (dd) — over upstream's WebSocket framing, once per agent
// channel: virtio-serial, and vsock through QEMU's vhost-user-vsock (hybrid `CONNECT`) when
// vhost-device-vsock is on PATH.
//
//   HYPEDECK_BIN=target/release/hypedeck node tests/bench/exec-bench.mjs
import { existsSync } from "node:fs";
import path from "node:path";
import WebSocket from "ws";

import { report } from "./report.mjs";
import { withVm } from "./vm-bench.mjs";

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

/** The rows for one agent channel (`HYPEDECK_QEMU_VSOCK` value and its label). */
function measure(vsock, channel) {
  return withVm({ name: "bench-exec", cmd: ["sleep", "3600"] }, async ({ server, client, vm, accel }) => {
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
      // dd with 64 KiB blocks: busybox head writes 4 KiB at a time, which under TCG measures
      // the guest's syscalls rather than the channel.
      const r = await exec(server.url, token, vm.id, ["sh", "-c", `dd if=/dev/zero bs=65536 count=${MIB * 16} 2>/dev/null`]);
      if (r.bytes !== MIB * 1024 * 1024) throw new Error(`got ${r.bytes} bytes`);
      big.push(MIB / (r.ms / 1000));
    }
    return [
      [`exec \`true\` round trip, ${channel} (WebSocket open → exit code)`, `p50 ${pct(latencies, 50).toFixed(1)} ms`, `p90 ${pct(latencies, 90).toFixed(1)} ms, n=${RUNS}; ${accel}`],
      [`exec stdout throughput, ${channel} (${MIB} MiB from dd)`, `${pct(big, 50).toFixed(1)} MiB/s`, `median of 3; ${accel}`],
    ];
  }, { env: { HYPEDECK_QEMU_VSOCK: vsock } });
}

const onPath = (name) => (process.env.PATH ?? "").split(":").some((d) => d && existsSync(path.join(d, name)));

async function main() {
  const rows = await measure("off", "virtio-serial");
  if (onPath("vhost-device-vsock")) rows.push(...(await measure("vhost-user", "vsock (vhost-user)")));
  else console.error("vhost-device-vsock is not on PATH: skipping the vsock channel");
  report("Exec through the guest agent", "", rows);
}

await main();
