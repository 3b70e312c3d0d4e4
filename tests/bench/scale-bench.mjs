// Benchmark (not a test): scale. 1,000 instances in one engine: GET /instances and
// GET /instances/{id} latency, and the daemon's resident memory idle and per extra instance.
// The instances are the fake hypervisor's (no VM behind them: what is measured is the engine's
// own bookkeeping, metadata and state derivation); QEMU's own memory per guest is in the boot
// benchmark.
//
//   HYPEDECK_FAKE_BIN=target/fake/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/scale-bench.mjs
//
// With HYPEDECK_FAKE_BIN_BEFORE (another build, e.g. the previous commit's), both run in this
// one process, one after the other, and the table compares them.
import { readFileSync } from "node:fs";
import path from "node:path";

import { startServer } from "../sdk/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_FAKE_BIN ?? "target/debug/hypedeck-fake");
const BEFORE = process.env.HYPEDECK_FAKE_BIN_BEFORE ? path.resolve(process.env.HYPEDECK_FAKE_BIN_BEFORE) : null;
const COUNT = Number(process.env.BENCH_INSTANCES ?? 1000);
const LISTS = 50;

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const ms = (x) => `${x.toFixed(1)} ms`;

/** The serving daemon's pid (the one holding the data dir). */
function daemonPid(dataDir) {
  return Number(JSON.parse(readFileSync(path.join(dataDir, "engine.json"), "utf8")).pid);
}
const rssMiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;

/** One engine, filled and read; the numbers. */
async function measure(bin) {
  const server = await startServer({ bin, args: ["--hypervisor", "fake"] });
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

    return { createMs, list, filtered, one, idle, loaded, after };
  } finally {
    await server.stop();
}
}

const before = BEFORE ? await measure(BEFORE) : null;
const now = await measure(BIN);
const rows = (r, label) => [
  [`create ×${COUNT}${label}`, `${(r.createMs / 1000).toFixed(1)} s (${(COUNT / (r.createMs / 1000)).toFixed(0)}/s)`, "8 concurrent clients"],
  [`GET /instances${label}`, `p50 ${ms(pct(r.list, 50))}, p99 ${ms(pct(r.list, 99))}`, `${LISTS} calls, ${COUNT} instances each`],
  [`GET /instances?tags[batch]=3${label}`, `p50 ${ms(pct(r.filtered, 50))}, p99 ${ms(pct(r.filtered, 99))}`, `${LISTS} calls`],
  [`GET /instances/{id}${label}`, `p50 ${ms(pct(r.one, 50))}, p99 ${ms(pct(r.one, 99))}`, "200 calls, random ids"],
  [`daemon RSS idle${label}`, `${r.idle.toFixed(1)} MiB`, "after start-up, no instance"],
  [`daemon RSS per instance${label}`, `${(((r.loaded - r.idle) * 1024) / COUNT).toFixed(1)} KiB`, `(RSS with ${COUNT} − idle) / ${COUNT}`],
  [`daemon RSS after the reads${label}`, `${r.after.toFixed(1)} MiB`, "no growth expected from reads"],
];
const table = before ? [...rows(before, " (before)"), ...rows(now, " (this build)")] : rows(now, "");
if (before) {
  table.push(["GET /instances p50: this build / before", `${(pct(now.list, 50) / pct(before.list, 50)).toFixed(2)}×`, "same run, same machine"]);
  table.push(["GET /instances p99: this build / before", `${(pct(now.list, 99) / pct(before.list, 99)).toFixed(2)}×`, ""]);
}
report(
  `Scale: ${COUNT} instances in one engine`,
  `fake hypervisor (engine bookkeeping only), ${process.env.BENCH_BUILD ?? (BIN.includes("/release/") ? "release" : "debug")} build, SDK client over loopback${before ? `; before = ${path.relative(process.cwd(), BEFORE)}` : ""}`,
  table,
);
