// Benchmark (not a test): boot. Hypedeck's create → Running for a busybox image that is
// already pulled, against raw QEMU booting the very same kernel, initramfs and disks with the
// very same flags (the command line Hypedeck ran, read back from /proc, minus its daemonize,
// pidfile and QMP socket), in one run, alternating, so the ratio is fair on a noisy machine.
//
// Running for Hypedeck means the guest agent answered (upstream's definition); raw QEMU is
// timed to the same serial marker (HYPEMAN-AGENT-READY) and to its first output.
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/boot-bench.mjs
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { deleteAll, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { median, msRange, report } from "./report.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const RUNS = Number(process.env.BENCH_BOOTS ?? 5);
const BODY = { vcpus: 1, size: "256MB", entrypoint: ["/bin/sh", "-c", "while true; do sleep 1; done"] };

/** Resident set of process `pid` in MiB. */
const rssMiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;

const fmt = msRange;

/** The argv of the QEMU running instance `id`, without what only a daemon needs. */
function qemuArgv(dataDir, id, serialLog, scratch) {
  const pid = readFileSync(path.join(dataDir, "instances", id, "run", "qemu.pid"), "utf8").trim();
  const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-daemonize") continue;
    if (a === "-pidfile" || a === "-qmp") { i++; continue; }
    if (a === "-chardev") {
      const spec = argv[++i];
      // The console goes to our own file; control/agent sockets to a scratch dir.
      if (spec.startsWith("file,id=serial0,")) out.push(a, `file,id=serial0,path=${serialLog}`);
      else out.push(a, spec.replace(/path=[^,]+/, (m) => `path=${path.join(scratch, path.basename(m.slice(5)))}`));
      continue;
    }
    out.push(a);
  }
  return out;
}

/** Raw QEMU from `argv`: ms to the first serial byte and to the agent-ready marker. */
async function rawBoot(argv, serialLog) {
  rmSync(serialLog, { force: true });
  const t0 = performance.now();
  const child = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
  let first = null;
  try {
    // Polled every 10 ms (the engine's own wait polls every 100 ms: raw QEMU is not penalized).
    const deadline = t0 + 240_000;
    for (;;) {
      let text = "";
      try {
        if (statSync(serialLog).size > 0) text = readFileSync(serialLog, "utf8");
      } catch {
        // not created yet
      }
      const now = performance.now();
      if (text && first === null) first = now - t0;
      if (text.includes("HYPEMAN-AGENT-READY")) return { first, ready: now - t0, rss: rssMiB(child.pid) };
      if (now > deadline || child.exitCode !== null) throw new Error(`raw QEMU did not boot:\n${text.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
  }
}

const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir);
const client = server.client();
const scratch = mkdtempSync(path.join(tmpdir(), "hypedeck-boot-"));
try {
  const image = `${registry.host}/vm/busybox:1`;
  // Warm-up: the image is pulled and converted, the kernel and initramfs are built.
  const warm = await client.instances.create({ name: "warm", image, ...BODY });
  await client.instances.wait(warm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
  const accel = /using TCG/.test(server.output()) ? "TCG" : "KVM";

  // The raw QEMU replays an instance Hypedeck made, once its own VM is gone (disks free).
  const serialLog = path.join(scratch, "serial.log");
  const argv = qemuArgv(dataDir, warm.id, serialLog, scratch);
  await client.instances.stop(warm.id);

  const hypedeck = [];
  const rawFirst = [];
  const rawReady = [];
  const hypedeckRss = [];
  const rawRss = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const vm = await client.instances.create({ name: `boot-${i}`, image, ...BODY });
    await client.instances.wait(vm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    hypedeck.push(performance.now() - t0);
    const pid = readFileSync(path.join(dataDir, "instances", vm.id, "run", "qemu.pid"), "utf8").trim();
    hypedeckRss.push(rssMiB(pid));
    await client.instances.delete(vm.id);

    const raw = await rawBoot(argv, serialLog);
    rawFirst.push(raw.first);
    rawReady.push(raw.ready);
    rawRss.push(raw.rss);
  }
  const ratio = median(hypedeck) / median(rawReady);
  report(
    "Boot: create → Running vs raw QEMU",
    `${accel}, q35, 1 vCPU, 256 MiB, busybox image already pulled, ${RUNS} boots each, alternating; ${BIN.includes("/release/") ? "release" : "debug"} \`hypedeck\``,
    [
      ["Hypedeck create → Running (agent ready)", fmt(hypedeck), "API call to `wait` returning Running: disks, config, QEMU spawn, boot, agent"],
      ["raw QEMU → agent-ready marker", fmt(rawReady), "same argv as Hypedeck's QEMU, same kernel/initramfs/disks"],
      ["raw QEMU → first guest output", fmt(rawFirst), "first byte on the serial console"],
      ["ratio Hypedeck / raw (to agent ready)", `${ratio.toFixed(2)}×`, "goal ≤ 1.10×"],
      ["QEMU RSS at Running, Hypedeck", `${median(hypedeckRss).toFixed(1)} MiB`, "VmRSS of the instance's QEMU"],
      ["QEMU RSS at agent ready, raw", `${median(rawRss).toFixed(1)} MiB`, "same argv"],
    ],
  );
} finally {
  await deleteAll(client).catch(() => {});
  await server.stop();
  await registry.stop();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
}
