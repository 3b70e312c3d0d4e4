// Crash safety: the engine is SIGKILLed at random points while it creates, starts, stops,
// standbys, restores, rotates (PATCH) and deletes, then started again on the same data dir.
// After every restart: the API answers, no instance is duplicated or unreadable, every
// metadata file parses, no temporary file or half-created instance is left, and an Unknown
// instance says why. HYPEDECK_CRASH_ITERATIONS sets the count (100 in CI; more locally).
// The fake hypervisor keeps its VMs in the engine's memory, so every kill is also "the VMM
// died while the engine was down" for whatever was running.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const ITERATIONS = Number(process.env.HYPEDECK_CRASH_ITERATIONS ?? 100);
const STATES = new Set(["Created", "Initializing", "Running", "Paused", "Shutdown", "Stopped", "Standby", "Unknown"]);

/** `hypedeck serve` (fake backend) on `dataDir`, once it answers. */
async function serve(dataDir) {
  const server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"], dataDir });
  return { ...server, client: server.client() };
}

const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];

/** One random verb on a random instance (or a create), not awaited: the kill lands mid-way. */
function fire(client, instances, n) {
  const target = instances.length ? pick(instances) : null;
  const verbs = target ? ["create", "start", "stop", "standby", "restore", "patch", "delete"] : ["create"];
  const verb = pick(verbs);
  switch (verb) {
    case "create":
      return client.instances.create({
        name: `crash-${n}`,
        image: "docker.io/library/alpine:latest",
        env: { KEY: `value-${n}` },
        network: { enabled: true, egress: { enabled: true } },
        credentials: { KEY: { source: { env: "KEY" }, inject: [{ as: { header: "Authorization", format: "Bearer ${value}" } }] } },
      });
    case "patch":
      return client.instances.update(target.id, { env: { KEY: `rotated-${n}` } });
    default:
      return client.instances[verb](target.id);
  }
}

/** Every file below `dir`. */
function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : [p];
  });
}

function checkDataDir(dataDir, listed) {
  const all = files(dataDir);
  const temps = all.filter((f) => /^\..*\.tmp-\d+(-\d+)?$/.test(path.basename(f)));
  assert.deepEqual(temps, [], "temporary files left behind");
  const instancesDir = path.join(dataDir, "instances");
  const dirs = statSync(instancesDir, { throwIfNoEntry: false }) ? readdirSync(instancesDir) : [];
  for (const id of dirs) {
    // Every instance directory is a whole instance: its metadata parses and the API lists it.
    const metadata = JSON.parse(readFileSync(path.join(instancesDir, id, "metadata.json"), "utf8"));
    assert.equal(metadata.id, id);
  }
  assert.deepEqual([...dirs].sort(), listed.map((i) => i.id).sort(), "instance dirs and the API's list differ");
}

describe("crash safety", () => {
  test(`SIGKILL at random points, ${ITERATIONS} times: nothing lost, duplicated or half-written`, { timeout: 60 * 60_000 }, async (t) => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "hypedeck-crash-"));
    let server = await serve(dataDir);
    const seen = new Set();
    let repaired = 0;
    try {
      for (let n = 0; n < ITERATIONS; n++) {
        const before = await server.client.instances.list();
        const call = fire(server.client, before, n);
        call.catch(() => {}); // the kill cuts most calls off
        await new Promise((r) => setTimeout(r, Math.random() * 40));
        await server.kill();
        server = await serve(dataDir);
        const listed = await server.client.instances.list();
        repaired += (server.output().match(/half-created|temporary files a crash left/g) ?? []).length;
        const ids = listed.map((i) => i.id);
        assert.equal(new Set(ids).size, ids.length, "duplicated instance");
        const names = listed.map((i) => i.name);
        assert.equal(new Set(names).size, names.length, "duplicated name");
        for (const i of listed) {
          assert.ok(STATES.has(i.state), `state ${i.state}`);
          if (i.state === "Unknown") assert.ok(i.state_error, `${i.name} is Unknown without a state_error`);
          const again = await server.client.instances.get(i.id);
          assert.equal(again.id, i.id);
          seen.add(i.id);
        }
        // Instances only vanish through delete: whatever was listed before is listed now,
        // unless the interrupted call was a delete of it.
        const gone = before.filter((i) => !ids.includes(i.id));
        assert.ok(gone.length <= 1, `${gone.length} instances vanished`);
        checkDataDir(dataDir, listed);
        // Keep the population small so every verb meets instances in many states.
        if (listed.length > 6) await server.client.instances.delete(pick(listed).id).catch(() => {});
      }
      assert.ok(seen.size > 0, "no instance was ever created");
      // How often a kill landed mid-write (the engine repaired it on start).
      t.diagnostic(`${seen.size} instances seen; ${repaired} crash leftovers repaired on restart`);
      assert.doesNotMatch(server.output(), /panicked/);
    } finally {
      await server.kill();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
