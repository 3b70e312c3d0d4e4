// Real VMs: a Stopped snapshot keeps the instance's disk as it was; restoring it brings back
// what the guest had written then, and what it wrote after is gone. The refusals carry
// upstream's codes and texts (409 `conflict` while running or for a taken name, 501 for the
// Standby kind this increment does not serve, 400 for another instance's snapshot, 409
// `invalid_state` for a restore while running); see docs/design/snapshots.md.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execWs } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { state: "Running", timeout: "240s" };

let registry;
let client;
let server;

vmSuite((s) => ({ registry, client, server } = s));

const sh = async (id, script) => {
  const { output, exitCode } = await execWs(server.url, client.apiKey, id, { command: ["/bin/sh", "-c", script] });
  assert.equal(exitCode, 0, output);
  return output;
};

describe("snapshots", () => {
  test("a Stopped snapshot restores the guest's disk as it was", { timeout: 600_000 }, async () => {
    const base = { image: `${registry.host}/vm/busybox:1`, vcpus: 1, size: "256MB", entrypoint: ["/bin/busybox"], cmd: ["sleep", "3600"] };
    const vm = await client.instances.create({ name: "snap-vm", ...base });
    const other = await client.instances.create({ name: "snap-other", ...base, network: { enabled: false } });
    await client.instances.wait(vm.id, BOOT, { timeout: 250_000 });
    await sh(vm.id, "echo before > /root/state && sync");

    await assert.rejects(client.instances.snapshots.create(vm.id, { kind: "Stopped" }), (e) =>
      e.status === 409 && e.error.code === "conflict" && e.error.message === "invalid state transition: stopped snapshot requires source in Stopped, got Running");
    await assert.rejects(client.instances.snapshots.create(vm.id, { kind: "Standby" }), (e) => e.status === 501 && e.error.code === "not_implemented");

    await client.instances.stop(vm.id);
    const snap = await client.instances.snapshots.create(vm.id, { kind: "Stopped", name: "before", tags: { step: "1" } });
    assert.deepEqual(
      [snap.kind, snap.name, snap.source_instance_id, snap.source_instance_name, snap.source_hypervisor],
      ["Stopped", "before", vm.id, "snap-vm", "qemu"],
    );
    // Upstream's shape: the apparent size (the sparse overlay's whole length), nulls kept.
    assert.ok(snap.size_bytes >= 10 * 1000 ** 3, `size_bytes ${snap.size_bytes}`);
    assert.deepEqual([snap.compression_state, snap.compression_error, snap.compressed_size_bytes, snap.tags], ["none", null, null, { step: "1" }]);
    await assert.rejects(client.instances.snapshots.create(vm.id, { kind: "Stopped", name: "before" }), (e) =>
      e.status === 409 && e.error.code === "conflict" && e.error.message.endsWith(`snapshot name "before" already exists for source instance ${vm.id}`));
    assert.deepEqual(await client.snapshots.get(snap.id), snap);
    assert.deepEqual((await client.snapshots.list({ source_instance_id: vm.id })).map((s) => s.id), [snap.id]);
    assert.deepEqual(await client.snapshots.list({ source_instance_id: other.id }), []);
    assert.deepEqual((await client.snapshots.list({ kind: "Stopped", name: "before" })).map((s) => s.id), [snap.id]);
    assert.deepEqual(await client.snapshots.list({ kind: "Standby" }), []);

    // The guest writes on; then the snapshot is restored and the instance started again.
    await client.instances.start(vm.id, {});
    await client.instances.wait(vm.id, BOOT, { timeout: 250_000 });
    await sh(vm.id, "echo after > /root/state && echo extra > /root/extra && sync");
    await client.instances.stop(vm.id);
    await assert.rejects(client.instances.snapshots.restore(snap.id, { id: other.id }), (e) =>
      e.status === 400 && e.error.message === `invalid request: snapshot ${snap.id} belongs to instance ${vm.id}`);
    const restored = await client.instances.snapshots.restore(snap.id, { id: vm.id, target_state: "Running" });
    assert.ok(["Initializing", "Running"].includes(restored.state), restored.state);
    await client.instances.wait(vm.id, BOOT, { timeout: 250_000 });
    assert.equal(await sh(vm.id, "cat /root/state; test -e /root/extra && echo extra-still-there || echo no-extra"), "before\nno-extra\n");
    await assert.rejects(client.instances.snapshots.restore(snap.id, { id: vm.id }), (e) =>
      e.status === 409 && e.error.code === "invalid_state" && e.error.message === "invalid state transition: cannot restore snapshot while source is Running");

    await client.snapshots.delete(snap.id);
    await assert.rejects(client.snapshots.get(snap.id), (e) => e.status === 404);
    await client.instances.delete(vm.id);
    await client.instances.delete(other.id);
  });
});
