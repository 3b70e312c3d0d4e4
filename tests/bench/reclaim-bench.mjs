// Benchmark (not a test): memory an idle guest gives back to the laptop. A 1 GiB busybox guest
// boots and idles; its VMM's RSS is read after boot, after the guest filled and freed 400 MiB
// (free page reporting hands freed pages back on its own), and after
// `POST /resources/memory/reclaim` inflated its balloon by a step; then the hold ends and the
// balloon deflates. A second guest, 512 MiB with 512 MiB of hotplug_size, idles next to it:
// what the DIMM plugged after boot costs an idle guest.
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/reclaim-bench.mjs
import path from "node:path";
import { rmSync } from "node:fs";

import { deleteAll, execWs, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const MiB = 2 ** 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir);
const client = server.client();
const api = async (method, route, body) => {
  const res = await fetch(`${server.url}${route}`, {
    method,
    headers: { Authorization: `Bearer ${client.apiKey}`, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
  return res.json();
};
const sh = async (id, line) => {
  const { output, exitCode } = await execWs(server.url, client.apiKey, id, { command: ["/bin/busybox", "sh", "-c", line] });
  if (exitCode !== 0) throw new Error(`${line}: ${output}`);
  return output;
};
/** The VMM's RSS once it stopped moving (two reads 2 s apart within 8 MiB), in MiB. */
const settledRss = async (id) => {
  let last = -1;
  for (let n = 0; n < 30; n++) {
    const rss = (await api("GET", `/instances/${id}/stats`)).memory_rss_bytes / MiB;
    if (Math.abs(rss - last) < 8) return Math.round(rss);
    last = rss;
    await sleep(2000);
  }
  return Math.round(last);
};
const mib = (n) => `${n} MiB`;

try {
  const create = async (name, extra = {}) => {
    const i = await client.instances.create({
      name,
      image: `${registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "1GB",
      entrypoint: ["/bin/sh", "-c"],
      cmd: ["while true; do sleep 1; done"],
      ...extra,
    }, { timeout: 240_000 });
    await client.instances.wait(i.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    return i;
  };
  const i = await create("idle");
  const booted = await settledRss(i.id);
  await sh(i.id, "mkdir -p /fill && mount -t tmpfs -o size=500m tmpfs /fill && dd if=/dev/zero of=/fill/f bs=1048576 count=400 2>/dev/null");
  const full = await settledRss(i.id);
  await sh(i.id, "rm /fill/f && umount /fill");
  const freed = await settledRss(i.id);
  const r = await api("POST", "/resources/memory/reclaim", { reclaim_bytes: 512 * MiB, hold_for: "20s", reason: "bench" });
  const applied = r.actions?.find((a) => a.instance_id === i.id)?.applied_reclaim_bytes ?? 0;
  const reclaimed = await settledRss(i.id);
  await sleep(25_000);
  const afterHold = (await api("GET", `/instances/${i.id}/stats`)).memory_rss_bytes / MiB;
  await client.instances.delete(i.id);

  const h = await create("hotplug", { size: "512MB", hotplug_size: "512MB" });
  const hotplugged = await settledRss(h.id);

  const accel = process.env.HYPEDECK_QEMU_ACCEL ?? "TCG (no working KVM here)";
  report("Memory back to the laptop (real QEMU, 1 GiB busybox guest, idle)", `${path.basename(path.dirname(BIN))} build, ${accel}; RSS of the VMM process once settled`, [
    ["RSS after boot, idle", mib(booted), "free page reporting on from boot"],
    ["RSS with 400 MiB in use", mib(full), "tmpfs filled in the guest"],
    ["RSS after the guest freed it", mib(freed), "free page reporting gave the freed pages back, no reclaim yet"],
    ["RSS after `POST /resources/memory/reclaim`", mib(reclaimed), `balloon inflated by ${applied / MiB} MiB (one 256 MiB step), hold 20 s`],
    ["RSS after the hold ended", mib(Math.round(afterHold)), "balloon deflated; the guest's pages stay with the host until it uses them"],
    ["RSS of a 512 MiB + 512 MiB hotplug guest, idle", mib(hotplugged), `vs ${mib(booted)} for the 1 GiB guest booted whole: the kernel's page structures for the DIMM and what onlining it touched`],
  ]);
} finally {
  await deleteAll(client).catch(() => {});
  await server.stop();
  await registry.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
