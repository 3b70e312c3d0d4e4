// Benchmark (not a test): snapshots and forks of a real 256 MiB QEMU guest, side by side with a
// cold boot of the same image, in one run: create → Running (cold), a Standby snapshot of the
// running guest (time, size), a fork of the running guest (`from_running`) → Running, a fork
// of the Standby snapshot → Running, a restore in place of that snapshot → Running, and a fork
// of a Stopped instance → Running (a cold boot of a disk copy). Running means the guest agent
// answered (upstream's definition); every fork is also checked to answer an exec.
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/fork-bench.mjs
import path from "node:path";
import { statSync } from "node:fs";
import { rmSync } from "node:fs";

import { deleteAll, execWs, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { median, msRange, report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const RUNS = Number(process.env.BENCH_FORKS ?? 3);
const BOOT = { state: "Running", timeout: "240s" };

const fmt = msRange;
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir);
const client = server.client();
const body = (name) => ({
  name,
  image: `${registry.host}/vm/busybox:1`,
  vcpus: 1,
  size: "256MB",
  entrypoint: ["/bin/sh", "-c"],
  cmd: ["i=0; while true; do i=$((i+1)); echo count=$i; sleep 1; done"],
});

/** ms for `f` to resolve, then until instance `id()` is Running and answers an exec. */
async function timed(f, id) {
  const t0 = performance.now();
  const result = await f();
  await client.instances.wait(id(result), BOOT, { timeout: 250_000 });
  const ms = performance.now() - t0;
  const { exitCode } = await execWs(server.url, client.apiKey, id(result), { command: ["/bin/true"] });
  if (exitCode !== 0) throw new Error(`exec in ${id(result)} failed`);
  return { ms, result };
}

const rows = { cold: [], snap: [], snapSize: [], memory: [], fork: [], pause: [], snapFork: [], restore: [], stoppedFork: [], zstd: [], zstdSize: [], lz4: [], lz4Size: [] };

/** ms until snapshot `id`'s compression is done, and its compressed size. */
async function compressed(id, t0) {
  for (;;) {
    const s = await client.snapshots.get(id);
    if (s.compression_state === "compressed") return { ms: performance.now() - t0, bytes: s.compressed_size_bytes };
    if (s.compression_state !== "compressing") throw new Error(`compression ended ${s.compression_state}: ${s.compression_error}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
try {
  // A first create pulls the image and builds the initramfs: not timed.
  const warm = await client.instances.create(body("warm"));
  await client.instances.wait(warm.id, BOOT, { timeout: 250_000 });
  await client.instances.delete(warm.id);
  for (let run = 0; run < RUNS; run++) {
    const cold = await timed(() => client.instances.create(body(`parent-${run}`)), (i) => i.id);
    rows.cold.push(cold.ms);
    const parent = cold.result;

    let t0 = performance.now();
    const snap = await client.instances.snapshots.create(parent.id, { kind: "Standby" });
    rows.snap.push(performance.now() - t0);
    rows.snapSize.push(snap.size_bytes);
    rows.memory.push(statSync(path.join(dataDir, "snapshots", snap.id, "guest", "standby", "memory.bin")).size);

    for (const algorithm of ["zstd", "lz4"]) {
      t0 = performance.now();
      const packed = await client.instances.snapshots.create(parent.id, { kind: "Standby", compression: { enabled: true, algorithm } });
      const done = await compressed(packed.id, t0);
      rows[algorithm].push(done.ms);
      rows[`${algorithm}Size`].push(done.bytes);
      await client.snapshots.delete(packed.id);
    }

    // The parent is paused for the save and the restore; the fork runs when both are done.
    const fork = await timed(() => client.instances.fork(parent.id, { name: `fork-${run}`, from_running: true }), (i) => i.id);
    rows.fork.push(fork.ms);
    const ops = (await client.instances.logs(parent.id, { source: "hypeman", tail: 50 }));
    const lines = [];
    for await (const l of ops) lines.push(l);
    const at = (text) => Date.parse(lines.filter((l) => l.includes(text)).at(-1)?.slice(0, 30) ?? "");
    const paused = at("vm restored") - at("standby requested");
    if (Number.isFinite(paused)) rows.pause.push(paused);

    const snapFork = await timed(() => client.snapshots.fork(snap.id, { name: `snapfork-${run}` }), (i) => i.id);
    rows.snapFork.push(snapFork.ms);

    await client.instances.stop(parent.id);
    const restored = await timed(() => client.instances.snapshots.restore(snap.id, { id: parent.id }), () => parent.id);
    rows.restore.push(restored.ms);

    await client.instances.stop(parent.id);
    const stopped = await timed(() => client.instances.fork(parent.id, { name: `cold-fork-${run}`, target_state: "Running" }), (i) => i.id);
    rows.stoppedFork.push(stopped.ms);

    await deleteAll(client);
    await client.snapshots.delete(snap.id);
  }
  const accel = process.env.HYPEDECK_QEMU_ACCEL ?? "TCG (no working KVM here)";
  report("Snapshots and forks (real QEMU, 256 MiB busybox guest)", `${RUNS} runs, ${path.basename(path.dirname(BIN))} build, ${accel}`, [
    ["create → Running (cold boot, image cached)", fmt(rows.cold), "the baseline"],
    ["Standby snapshot of the running guest", fmt(rows.snap), "standby + copy + restore; the guest runs on"],
    ["its size (`size_bytes`)", mib(median(rows.snapSize)), `apparent; the saved memory is ${mib(median(rows.memory))}, a hard link of the standby file`],
    ["Standby snapshot compressed with zstd (until `compressed`)", fmt(rows.zstd), `memory ${mib(median(rows.zstdSize))} (pure-Rust encoder, zstd level 1 speed)`],
    ["Standby snapshot compressed with lz4 (until `compressed`)", fmt(rows.lz4), `memory ${mib(median(rows.lz4Size))}`],
    ["fork of the running guest (`from_running`) → Running", fmt(rows.fork), `${(median(rows.fork) / median(rows.cold)).toFixed(2)}× the cold boot; reidentified, exec answers`],
    ["the parent's pause during that fork", rows.pause.length ? fmt(rows.pause) : "n/a", "from `standby requested` to `vm restored` in its hypeman.log"],
    ["fork of the Standby snapshot → Running", fmt(rows.snapFork), `${(median(rows.snapFork) / median(rows.cold)).toFixed(2)}× the cold boot`],
    ["restore in place of the Standby snapshot → Running", fmt(rows.restore), ""],
    ["fork of the Stopped instance → Running", fmt(rows.stoppedFork), "a cold boot of a sparse copy of its disk"],
  ]);
} finally {
  await deleteAll(client).catch(() => {});
  await server.stop();
  await registry.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
