// A running busybox VM for a benchmark: registry + `hypedeck serve` (HYPEDECK_BIN) + one
// instance created from `body` and waited to Running; everything is removed afterwards.
import { rmSync } from "node:fs";
import path from "node:path";

import { deleteAll, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";

/**
 * Runs `fn({server, client, vm, accel, dataDir})` with the VM up; `accel` is "KVM" or "TCG". `env` is
 * the engine's extra environment.
 */
export async function withVm(body, fn, { env = {} } = {}) {
  const bin = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
  const registry = await startRegistry();
  const dataDir = newDataDir();
  const server = await startServer(bin, dataDir, env);
  const client = server.client();
  try {
    const vm = await client.instances.create({
      image: `${registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "512MB",
      entrypoint: ["/bin/busybox"],
      ...body,
    });
    await client.instances.wait(vm.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    const log = server.output();
    const accel = /using TCG/.test(log) ? "TCG" : /hardware acceleration/.test(log) ? "KVM" : "see engine log";
    return await fn({ server, client, vm, accel, dataDir });
  } finally {
    await deleteAll(client);
    await server.stop();
    await registry.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
