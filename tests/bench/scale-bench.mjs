// Benchmark (not a test): scale. 1,000 instances in one engine: GET /instances and
// GET /instances/{id} latency, and the daemon's resident memory idle and per extra instance.
// The instances are the fake hypervisor's (no VM behind them: what is measured is the engine's
// own bookkeeping, metadata and state derivation); QEMU's own memory per guest is in the boot
// benchmark.
//
//   HYPEDECK_FAKE_BIN=target/fake/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/scale-bench.mjs
import { readFileSync } from "node:fs";
import path from "node:path";

import { startServer } from "../sdk/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_FAKE_BIN ?? "target/debug/hypedeck-fake");
const COUNT = Number(process.env.BENCH_INSTANCES ?? 1000);
const LISTS = 50;

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const ms = (x) => `${x.toFixed(1)} ms`;

/** The serving daemon's pid (the one holding the data dir). */
function daemonPid(dataDir) {
  return Number(JSON.parse(readFileSync(path.join(dataDir, "engine.json"), "utf8")).pid);
}
const rssMiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;

const server = await startServer({ bin: BIN, args: ["--hypervisor", "fake"] });
try {
  const client = server.client({ timeout: 120_000 });
  const pid = daemonPid(server.dataDir);
  await client.instances.list();
  const idle = rssMiB(pid);

  const ids = [];
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(8, COUNT - i) }, (_, j) =>
        client.instances.create({ name: `scale-${i + j}`, image: "alpine", tags: { batch: String(i % 10) } })),
    );
    ids.push(...batch.map((b) => b.id));
  }
  const createMs = performance.now() - t0;
  const loaded = rssMiB(pid);

  const list = [];
  for (let i = 0; i < LISTS; i++) {
    const s = performance.now();
    const all = await client.instances.list();
    list.push(performance.now() - s);
    if (all.length !== COUNT) throw new Error(`listed ${all.length} of ${COUNT}`);
  }
  const filtered = [];
  for (let i = 0; i < LISTS; i++) {
    const s = performance.now();
    await client.instances.list({ tags: { batch: "3" } });
    filtered.push(performance.now() - s);
  }
  const one = [];
  for (let i = 0; i < 200; i++) {
    const s = performance.now();
    await client.instances.get(ids[(i * 7919) % ids.length]);
    one.push(performance.now() - s);
  }
  const after = rssMiB(pid);

  report(
    `Scale: ${COUNT} instances in one engine`,
    `fake hypervisor (engine bookkeeping only), ${BIN.includes("/release/") ? "release" : "debug"} build, SDK client over loopback`,
    [
      ["create ×" + COUNT, `${(createMs / 1000).toFixed(1)} s (${(COUNT / (createMs / 1000)).toFixed(0)}/s)`, "8 concurrent clients"],
      ["GET /instances", `p50 ${ms(pct(list, 50))}, p99 ${ms(pct(list, 99))}`, `${LISTS} calls, ${COUNT} instances each`],
      ["GET /instances?tags[batch]=3", `p50 ${ms(pct(filtered, 50))}, p99 ${ms(pct(filtered, 99))}`, `${LISTS} calls`],
      ["GET /instances/{id}", `p50 ${ms(pct(one, 50))}, p99 ${ms(pct(one, 99))}`, "200 calls, random ids"],
      ["daemon RSS idle", `${idle.toFixed(1)} MiB`, "after start-up, no instance"],
      ["daemon RSS per instance", `${(((loaded - idle) * 1024) / COUNT).toFixed(1)} KiB`, `(RSS with ${COUNT} − idle) / ${COUNT}`],
      ["daemon RSS after the reads", `${after.toFixed(1)} MiB`, "no growth expected from reads"],
    ],
  );
} finally {
  await server.stop();
}
