// Benchmark (not a test): waking from auto-standby. A 256 MiB busybox guest serving HTTP on a
// forwarded port, with a 2 s idle timeout, goes to Standby; then a request to the port is timed
// from connect to the first byte of the answer (the engine restores the VM on the connection
// and hands it to the restored stack), five times, next to the same request to the awake guest.
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/wake-bench.mjs
import path from "node:path";
import { rmSync } from "node:fs";
import { request } from "node:http";

import { deleteAll, freePort, newDataDir, startRegistry, startServer, waitFor } from "../vm/harness.mjs";
import { median, msRange, report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const RUNS = Number(process.env.BENCH_WAKES ?? 5);
const fmt = msRange;

/** ms from the request to the first byte of the answer. */
function firstByte(port) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: "127.0.0.1", port, path: "/" }, (res) => {
      res.once("data", () => {
        resolve(performance.now() - t0);
        res.resume();
      });
    });
    req.on("error", reject);
    req.end();
  });
}

const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir);
const client = server.client();
try {
  const port = await freePort();
  const i = await client.instances.create({
    name: "sleeper",
    image: `${registry.host}/vm/busybox:1`,
    vcpus: 1,
    size: "256MB",
    network: { enabled: true },
    ports: [{ host_port: port, guest_port: 80 }],
    auto_standby: { enabled: true, idle_timeout: "2s" },
    entrypoint: ["/bin/sh", "-c"],
    cmd: ["mkdir -p /www && echo awake > /www/index.html && exec httpd -f -p 80 -h /www"],
  });
  await client.instances.wait(i.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`)).ok, "the web server", 120_000);
  const awake = [];
  for (let n = 0; n < RUNS; n++) awake.push(await firstByte(port));
  const wakes = [];
  for (let n = 0; n < RUNS; n++) {
    await waitFor(async () => (await client.instances.get(i.id)).state === "Standby", "auto-standby", 120_000);
    wakes.push(await firstByte(port));
  }
  const accel = process.env.HYPEDECK_QEMU_ACCEL ?? "TCG (no working KVM here)";
  report("Auto-standby: waking on a connection (real QEMU, 256 MiB busybox guest, httpd)", `${RUNS} wakes, ${path.basename(path.dirname(BIN))} build, ${accel}`, [
    ["request → first byte, guest awake", fmt(awake), "through the forwarded port and the sandbox network"],
    ["request → first byte, guest asleep (Standby)", fmt(wakes), "the engine held the port; restore, then the restored stack serves the held connection"],
  ]);
} finally {
  await deleteAll(client).catch(() => {});
  await server.stop();
  await registry.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
