// Benchmark (not a test): stats for a fleet. 50 instances in one engine, each polled with
// upstream's GET /instances/{id}/stats once a second (all 50 at once) for 20 rounds: per-call
// p50/p99 and the round's wall time; GET /stats (the window's one call for the list and header);
// and the engine's CPU while its sampler takes a sample of every VM every 2 s with no client.
// The instances are the fake hypervisor's, whose VMs report the engine's own pid, so each
// sample reads a real process's /proc/<pid>/stat and statm as it would a QEMU's. A QEMU VM adds
// one QMP query-blockstats per sample (disk bytes), which the fake does not have.
//
//   HYPEDECK_FAKE_BIN=target/fake/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/stats-bench.mjs
import { readFileSync } from "node:fs";
import path from "node:path";

import { startServer } from "../sdk/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_FAKE_BIN ?? "target/debug/hypedeck-fake");
const COUNT = 50;
const ROUNDS = 20;

const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const ms = (x) => `${x.toFixed(2)} ms`;
const daemonPid = (dataDir) => Number(JSON.parse(readFileSync(path.join(dataDir, "engine.json"), "utf8")).pid);
/** utime + stime of `pid` in seconds. */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const server = await startServer({ bin: BIN, args: ["--hypervisor", "fake"] });
try {
  const client = server.client({ timeout: 120_000 });
  const pid = daemonPid(server.dataDir);
  const ids = [];
  for (let i = 0; i < COUNT; i++) {
    ids.push((await client.instances.create({ name: `s-${i}`, image: "docker.io/library/alpine:latest", vcpus: 1, size: "256MB" })).id);
  }
  const get = async (route) => {
    const t0 = performance.now();
    const res = await fetch(`${server.url}${route}`, { headers: { Authorization: `Bearer ${server.token}` } });
    if (res.status !== 200) throw new Error(`${route}: ${res.status}`);
    await res.json();
    return performance.now() - t0;
  };
  // The sampler's own cost: 20 s with no client.
  const cpu0 = cpuSeconds(pid);
  await new Promise((r) => setTimeout(r, 20_000));
  const idleCpu = (cpuSeconds(pid) - cpu0) / 20;

  const calls = [];
  const rounds = [];
  const fleet = [];
  for (let round = 0; round < ROUNDS; round++) {
    const t0 = performance.now();
    calls.push(...(await Promise.all(ids.map((id) => get(`/instances/${id}/stats`)))));
    rounds.push(performance.now() - t0);
    fleet.push(await get("/stats"));
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (performance.now() - t0))));
  }
  report(`Stats of ${COUNT} instances (fake VMs reading a real process's /proc)`, `${path.basename(path.dirname(BIN))} build`, [
    ["GET /instances/{id}/stats, p50 / p99", `${ms(pct(calls, 50))} / ${ms(pct(calls, 99))}`, `${calls.length} calls, ${COUNT} at a time once a second`],
    [`one round of ${COUNT} calls (wall)`, `${ms(pct(rounds, 50))} (p99 ${ms(pct(rounds, 99))})`, "all in flight together"],
    ["GET /stats (host + every instance's last minute), p50 / p99", `${ms(pct(fleet, 50))} / ${ms(pct(fleet, 99))}`, "the window's one call for the list and header"],
    [`engine CPU with the sampler alone (a sample of ${COUNT} VMs every 2 s)`, idleCpu > 0 ? `${(idleCpu * 100).toFixed(2)}% of one core` : "under 0.05% of one core", "no client, 20 s; /proc/<pid>/stat counts 10 ms ticks; /proc reads only (QEMU adds a QMP blockstats per VM)"],
  ]);
} finally {
  await server.stop();
}
