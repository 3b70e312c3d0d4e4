// The engine's process holds credential values, the API token and the egress CA key: it
// writes no core file (a crash would put them on disk) and, on Linux, is not dumpable (another
// process of the same user cannot ptrace it or read its memory through /proc).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";

import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");

test("hardening: the engine writes no core file", async () => {
  const server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
  try {
    const pid = Number(JSON.parse(readFileSync(path.join(server.dataDir, "engine.json"), "utf8")).pid);
    const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
    assert.match(limits, /^Max core file size\s+0\s+0\s+bytes/m, limits);
  } finally {
    await server.stop();
  }
});
