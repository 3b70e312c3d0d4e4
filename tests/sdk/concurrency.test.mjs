// Concurrency: 50 clients at once creating, rotating and stopping different and the same
// instances. No deadlock (everything answers), no lost or torn update (each rotation answers
// with its own value; the value left is one that was sent, and the engine reads it back the
// same way twice), same-name creates race to exactly one winner.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";

import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const CLIENTS = 50;

const credentialed = (name, value) => ({
  name,
  image: "docker.io/library/alpine:latest",
  env: { KEY: value },
  network: { enabled: true, egress: { enabled: true } },
  credentials: { KEY: { source: { env: "KEY" }, inject: [{ as: { header: "Authorization", format: "Bearer ${value}" } }] } },
});

describe("50 concurrent clients", () => {
  let server;
  before(async () => {
    server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
  });
  after(async () => server?.stop());

  test("create, rotate and stop at once: no deadlock, no lost or torn update", { timeout: 120_000 }, async () => {
    const setup = server.client();
    const shared = await setup.instances.create(credentialed("shared", "v-initial"));
    const own = [];
    for (let i = 0; i < 5; i++) own.push(await setup.instances.create(credentialed(`own-${i}`, "x")));

    const sent = new Set(["v-initial"]);
    const work = Array.from({ length: CLIENTS }, (_, n) => {
      const client = server.client({ timeout: 60_000 });
      switch (n % 5) {
        case 0:
        case 1: {
          const value = `v-${n}`;
          sent.add(value);
          return client.instances.update(shared.id, { env: { KEY: value } }).then((i) => ({ kind: "patch", value, i }));
        }
        case 2:
          return client.instances.create(credentialed(`fresh-${n}`, `f-${n}`)).then((i) => ({ kind: "create", i }));
        case 3:
          // Everyone races for the same name.
          return client.instances.create(credentialed("contested", `c-${n}`)).then((i) => ({ kind: "contested", i }));
        default: {
          const target = own[Math.floor(n / 5) % own.length];
          return client.instances.stop(target.id).then((i) => ({ kind: "stop", i }));
        }
      }
    });
    const results = await Promise.allSettled(work);

    for (const r of results) {
      if (r.status === "fulfilled") {
        if (r.value.kind === "patch") assert.equal(r.value.i.env.KEY, r.value.value, "a rotation answered with another's value");
        continue;
      }
      const e = r.reason;
      // Only refusals the API documents: the contested name, or stopping an instance another
      // client stopped first. Never a 5xx or a timeout.
      assert.ok(e.status === 409 || e.status === 400, `unexpected ${e.status ?? e.name}: ${e.message}`);
      assert.ok(["name_conflict", "invalid_state"].includes(e.error?.code), JSON.stringify(e.error));
    }
    const patches = results.filter((r) => r.status === "fulfilled" && r.value.kind === "patch");
    assert.equal(patches.length, 20, "every rotation succeeds");
    assert.equal(results.filter((r) => r.status === "fulfilled" && r.value.kind === "create").length, 10);
    assert.equal(results.filter((r) => r.status === "fulfilled" && r.value.kind === "contested").length, 1);

    const final = await setup.instances.get(shared.id);
    assert.ok(sent.has(final.env.KEY), `left with ${final.env.KEY}, which nobody sent`);
    assert.equal((await setup.instances.get(shared.id)).env.KEY, final.env.KEY);
    assert.equal(final.state, "Running");
    assert.equal(final.started_at, shared.started_at, "rotation restarted the instance");
    const names = (await setup.instances.list()).map((i) => i.name);
    assert.equal(names.filter((n) => n === "contested").length, 1);
    assert.equal(new Set(names).size, names.length);
    for (const o of own) assert.equal((await setup.instances.get(o.id)).state, "Stopped");
  });
});
