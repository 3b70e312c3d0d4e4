// Benchmark (not a test): starts from a template vs cold boots of the same image, one run side
// by side. Two engines on their own data dirs: one with templates off (every start boots
// cold), one with them on (a first start boots cold and makes the template; the timed starts
// restore it). For each: create → Running (the guest agent answered; every instance then
// answers an exec), and the host memory (PSS, from /proc/<pid>/smaps_rollup) of five 256 MiB
// sandboxes running side by side, measured after they settle.
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/template-bench.mjs
import path from "node:path";
import { readFileSync, rmSync, statSync } from "node:fs";

import { deleteAll, execWs, newDataDir, startRegistry, startServer, waitFor } from "../vm/harness.mjs";
import { median, msRange, report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const RUNS = Number(process.env.BENCH_STARTS ?? 5);
const FLEET = 5;
const BOOT = { state: "Running", timeout: "240s" };

const fmt = msRange;
const mib = (kib) => `${(kib / 1024).toFixed(1)} MiB`;

const registry = await startRegistry();
const body = (name) => ({
  name,
  image: `${registry.host}/vm/busybox:1`,
  vcpus: 1,
  size: "256MB",
  entrypoint: ["/bin/sh", "-c"],
  cmd: ["i=0; while true; do i=$((i+1)); echo count=$i; sleep 1; done"],
});

/** Sums `field` (kB) of smaps_rollup over the QEMU processes of `ids`. */
function memory(dataDir, ids) {
  const sum = { Pss: 0, Rss: 0 };
  for (const id of ids) {
    const pid = readFileSync(path.join(dataDir, "instances", id, "run", "qemu.pid"), "utf8").trim();
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    for (const k of Object.keys(sum)) sum[k] += Number(rollup.match(new RegExp(`^${k}:\\s+(\\d+) kB`, "m"))[1]);
  }
  return sum;
}

/** One engine's timed starts and fleet memory. */
async function measure(templates) {
  const dataDir = newDataDir();
  const server = await startServer(BIN, dataDir, { HYPEDECK_TEMPLATES: templates ? "auto" : "off" });
  const client = server.client();
  const out = { starts: [], template: null };
  const start = async (name) => {
    const t0 = performance.now();
    const i = await client.instances.create(body(name));
    await client.instances.wait(i.id, BOOT, { timeout: 250_000 });
    const ms = performance.now() - t0;
    const { exitCode } = await execWs(server.url, client.apiKey, i.id, { command: ["/bin/true"] });
    if (exitCode !== 0) throw new Error(`exec in ${name} failed`);
    if (templates !== (i.template_id !== undefined)) throw new Error(`${name}: template_id ${i.template_id}`);
    return { ms, id: i.id };
  };
  try {
    // The first start pulls the image, builds the initramfs and (templates on) makes the
    // template in the background: not timed.
    const warm = await client.instances.create(body("warm"));
    await client.instances.wait(warm.id, BOOT, { timeout: 250_000 });
    if (templates) {
      const list = async () => (await (await fetch(`${server.url}/templates`, { headers: { Authorization: `Bearer ${client.apiKey}` } })).json());
      out.template = await waitFor(async () => (await list()).find((t) => t.status === "ready"), "the template", 300_000);
      out.stateBytes = statSync(path.join(dataDir, "templates", out.template.id, "saved", "state.bin")).size;
    }
    await client.instances.delete(warm.id);
    for (let run = 0; run < RUNS; run++) {
      const s = await start(`timed-${run}`);
      out.starts.push(s.ms);
      await client.instances.delete(s.id);
    }
    const fleet = [];
    for (let n = 0; n < FLEET; n++) fleet.push((await start(`fleet-${n}`)).id);
    await new Promise((r) => setTimeout(r, 5000));
    out.memory = memory(dataDir, fleet);
  } finally {
    await deleteAll(client).catch(() => {});
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return out;
}

try {
  const cold = await measure(false);
  const warm = await measure(true);
  const t = warm.template;
  const accel = process.env.HYPEDECK_QEMU_ACCEL ?? "TCG (no working KVM here)";
  report("Templates: starts from a booted template vs cold boots (real QEMU, 256 MiB busybox guest)", `${RUNS} starts each, ${path.basename(path.dirname(BIN))} build, ${accel}`, [
    ["create → Running, cold boot (image cached)", fmt(cold.starts), "the baseline"],
    ["create → Running, from the template", fmt(warm.starts), `${(median(warm.starts) / median(cold.starts)).toFixed(2)}× the cold boot (goal ≤ 0.25×)`],
    ["making the template (background, once per shape)", `${t.build_ms} ms`, `on disk ${(t.disk_bytes / 2 ** 20).toFixed(1)} MiB (sparse RAM file: the pages the guest touched); devices ${(warm.stateBytes / 1024).toFixed(0)} KiB`],
    [`host memory of ${FLEET} cold-booted sandboxes (PSS)`, mib(cold.memory.Pss), `RSS ${mib(cold.memory.Rss)}`],
    [`host memory of ${FLEET} sandboxes from one template (PSS)`, mib(warm.memory.Pss), `${(warm.memory.Pss / cold.memory.Pss).toFixed(2)}× (goal ≤ 0.5×); RSS ${mib(warm.memory.Rss)} counts the shared pages in each`],
  ]);
} finally {
  await registry.stop();
}
