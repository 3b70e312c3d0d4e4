// Benchmark (not a test): throughput of a forwarded guest port (QEMU user networking
// `hostfwd` to 127.0.0.1), against the same download from a server on the host's loopback.
// Writes a results table to stdout (and appends it to $BENCH_OUT when set).
//
//   HYPEDECK_BIN=target/release/hypedeck node tests/bench/ports-bench.mjs
import { createServer } from "node:http";

import { freePort } from "../vm/harness.mjs";
import { median, report } from "./report.mjs";
import { withVm } from "./vm-bench.mjs";

const MIB = Number(process.env.BENCH_MIB ?? 64);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);


/** Downloads `url` to nowhere; resolves with MiB/s. */
async function download(url) {
  const t0 = performance.now();
  const r = await fetch(url);
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  let bytes = 0;
  for await (const chunk of r.body) bytes += chunk.length;
  if (bytes !== MIB * 1024 * 1024) throw new Error(`got ${bytes} bytes`);
  return MIB / ((performance.now() - t0) / 1000);
}

async function main() {
  const port = await freePort();
  const rows = await withVm(
    {
      name: "bench-fwd",
      cmd: ["sh", "-c", `dd if=/dev/zero of=/tmp/big bs=1M count=${MIB} 2>/dev/null && exec httpd -f -p 8080 -h /tmp`],
      ports: [{ host_port: port, guest_port: 8080 }],
    },
    async ({ accel }) => {
      const url = `http://127.0.0.1:${port}/big`;
      for (let i = 0; ; i++) {
        try {
          await download(url); // warm-up, also waits for the file and the server
          break;
        } catch (e) {
          if (i > 100) throw e;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      const forwarded = [];
      for (let i = 0; i < RUNS; i++) forwarded.push(await download(url));

      const body = Buffer.alloc(MIB * 1024 * 1024);
      const direct = createServer((_, res) => res.end(body));
      await new Promise((r) => direct.listen(0, "127.0.0.1", r));
      const directUrl = `http://127.0.0.1:${direct.address().port}/`;
      await download(directUrl);
      const baseline = [];
      for (let i = 0; i < RUNS; i++) baseline.push(await download(directUrl));
      direct.close();
      return [
        [`Forwarded guest port (busybox httpd in the VM → 127.0.0.1), ${MIB} MiB`, `${median(forwarded).toFixed(0)} MiB/s`, `median of ${RUNS}; QEMU user networking hostfwd; ${accel}`],
        [`Same download from a server on the host's loopback (baseline)`, `${median(baseline).toFixed(0)} MiB/s`, `median of ${RUNS}; node http`],
      ];
    },
  );
  report("Port forwarding", "", rows);
}

await main();
