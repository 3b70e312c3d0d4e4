// Benchmark (not a test): what a guest's output costs the engine's memory. Two floods, each
// against the build in HYPEDECK_BIN and, with HYPEDECK_BIN_BEFORE, an earlier build in the
// same run:
// - exec: the guest writes FLOOD_MIB MiB to stdout (dd) for a WebSocket client that stopped
//   reading (its socket paused, like a stalled network); the daemon's peak RSS growth, and
//   how the session ended;
// - console: a console log of CONSOLE_MIB MiB (appended on the host, as hours of a chatty
//   guest leave it), read by 5 × `GET /logs?tail=100`; peak RSS growth, and the log's size 3 s
//   later (the cap rotates it).
//
//   HYPEDECK_BIN=target/release/hypedeck [HYPEDECK_BIN_BEFORE=…] node tests/bench/flood-bench.mjs
import { appendFileSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import WebSocket from "ws";

import { report } from "./report.mjs";
import { withVm } from "./vm-bench.mjs";

const FLOOD_MIB = Number(process.env.FLOOD_MIB ?? 256);
const CONSOLE_MIB = Number(process.env.CONSOLE_MIB ?? 512);

const rssMiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Samples `pid`'s RSS every 100 ms while `work` runs; resolves with [result, peak MiB]. */
async function peakDuring(pid, work) {
  let peak = rssMiB(pid);
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, rssMiB(pid));
      await sleep(100);
    }
  })();
  try {
    return [await work(), peak];
  } finally {
    running = false;
    await sampler;
  }
}

/** An exec whose client reads nothing for `pauseMs`, then everything; how it ended. */
function stalledExec(url, token, id, command, pauseMs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/instances/${id}/exec`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    let bytes = 0;
    let last = "";
    ws.on("open", () => {
      ws.send(JSON.stringify({ command }));
      ws._socket.pause();
      setTimeout(() => ws._socket.resume(), pauseMs);
    });
    ws.on("message", (data, binary) => {
      if (binary) bytes += data.length;
      else last = data.toString();
    });
    ws.on("close", () => resolve({ bytes, last }));
    ws.on("error", reject);
  });
}

async function measure(bin, label) {
  process.env.HYPEDECK_BIN = bin;
  return withVm({ name: "bench-flood", cmd: ["sleep", "3600"] }, async ({ server, client, vm, accel, dataDir }) => {
    const pid = server.pid;
    const token = client.apiKey;
    await stalledExec(server.url, token, vm.id, ["true"], 0); // the agent link
    await sleep(500);
    const idle = rssMiB(pid);
    const [ended, execPeak] = await peakDuring(pid, () =>
      stalledExec(server.url, token, vm.id, ["sh", "-c", `dd if=/dev/zero bs=65536 count=${FLOOD_MIB * 16} 2>/dev/null`], 20_000));
    const how = ended.bytes >= FLOOD_MIB * 1024 * 1024 ? `all ${FLOOD_MIB} MiB delivered` : `ended after ${(ended.bytes / 1048576).toFixed(1)} MiB: ${ended.last.slice(0, 120)}`;

    const log = path.join(dataDir, "instances", vm.id, "logs", "app.log");
    const chunk = Buffer.from(`${"y".repeat(99)}\n`.repeat((64 << 20) / 100));
    for (let i = 0; i < CONSOLE_MIB / 64; i++) appendFileSync(log, chunk);
    appendFileSync(log, "the last line\n");
    await sleep(200);
    const before = rssMiB(pid);
    const [, logsPeak] = await peakDuring(pid, async () => {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${server.url}/instances/${vm.id}/logs?tail=100`, { headers: { authorization: `Bearer ${token}` } });
        for await (const _ of res.body) {
          // drained
        }
      }
    });
    await sleep(3000);
    const size = statSync(log).size / 1048576;
    return [
      [`exec: ${FLOOD_MIB} MiB to a client that stopped reading, peak daemon RSS growth (${label})`, `${(execPeak - idle).toFixed(1)} MiB`, `${how}; ${accel}`],
      [`console: 5 × GET /logs?tail=100 of a ${CONSOLE_MIB} MiB app.log, peak daemon RSS growth (${label})`, `${(logsPeak - before).toFixed(1)} MiB`, `app.log 3 s later: ${size.toFixed(1)} MiB`],
    ];
  });
}

const now = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const before = process.env.HYPEDECK_BIN_BEFORE ? path.resolve(process.env.HYPEDECK_BIN_BEFORE) : null;
const rows = [];
if (before) rows.push(...(await measure(before, "before")));
rows.push(...(await measure(now, "this build")));
report("A flooding guest and the engine's memory", process.env.BENCH_CONTEXT ?? "", rows);
