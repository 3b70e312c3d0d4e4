// The fixtures every real-VM suite starts the same way, registered with node:test: a registry
// on 127.0.0.1 with the suite's images and `hypedeck serve` (the shipped binary) on a fresh
// data dir. Kept apart from harness.mjs so the benchmarks can use the harness without
// node:test.
import { after, before } from "node:test";
import { rmSync } from "node:fs";
import path from "node:path";

import { deleteAll, newDataDir, startRegistry, startServer } from "./harness.mjs";

/**
 * Starts the fixtures before the file's tests and stops them (deleting every instance and
 * volume first) after them. `ready({registry, dataDir, server, client})` runs once they are up.
 */
export function vmSuite(ready, { env = {} } = {}) {
  const bin = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
  const s = {};
  before(async () => {
    s.registry = await startRegistry();
    s.dataDir = newDataDir();
    s.server = await startServer(bin, s.dataDir, env);
    s.client = s.server.client();
    ready(s);
  });
  after(async () => {
    if (s.client) {
      await deleteAll(s.client);
      for (const v of await s.client.volumes.list().catch(() => [])) await s.client.volumes.delete(v.id).catch(() => {});
    }
    await s.server?.stop();
    await s.registry?.stop();
    if (s.dataDir) rmSync(s.dataDir, { recursive: true, force: true });
  });
  return s;
}
