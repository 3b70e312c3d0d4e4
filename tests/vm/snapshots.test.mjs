// Real VMs: a Stopped snapshot keeps the instance's disk as it was; restoring it brings back
// what the guest had written then, and what it wrote after is gone. The refusals carry
// upstream's codes and texts (409 `conflict` while running or for a taken name, 400 for
// another instance's snapshot, 409 `invalid_state` for a restore while running). A Standby
// snapshot keeps the whole VM: a program counting in memory and on disk goes back to the
// snapshot's number, in the same process, with the disk agreeing. See
// docs/design/snapshots.md.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execWs, logLines, waitFor } from "./harness.mjs";
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

  test("a Standby snapshot of a running guest brings back its memory and its disk", { timeout: 600_000 }, async () => {
    const counter = "i=0; while true; do i=$((i+1)); echo $i > /root/count; echo \"count=$i pid=$$\"; sleep 1; done";
    const vm = await client.instances.create({
      name: "counter", image: `${registry.host}/vm/busybox:1`, vcpus: 1, size: "256MB",
      entrypoint: ["/bin/sh", "-c"], cmd: [counter],
    });
    await client.instances.wait(vm.id, BOOT, { timeout: 250_000 });
    const counts = async (since = 0) => (await logLines(client, vm.id)).slice(since).filter((l) => l.startsWith("count=")).map((l) => {
      const [, n, pid] = l.match(/^count=(\d+) pid=(\d+)$/);
      return { n: Number(n), pid };
    });
    await waitFor(async () => (await counts()).length >= 3, "counting", 120_000);

    // Taken while it runs: standby, copy, restore; it goes on counting.
    const snap = await client.instances.snapshots.create(vm.id, { kind: "Standby", name: "at-three" });
    assert.equal(snap.kind, "Standby");
    const atSnapshot = (await counts()).at(-1).n;
    assert.equal((await client.instances.get(vm.id)).state, "Running");
    // An exec right after the resume finds the agent (the clock sync shares its one link).
    const right = await execWs(server.url, client.apiKey, vm.id, { command: ["/bin/true"] });
    assert.equal(right.exitCode, 0, JSON.stringify(right));
    await waitFor(async () => (await counts()).at(-1).n >= atSnapshot + 4, "counting on after the snapshot", 120_000);
    const before = await counts();
    const pid = before[0].pid;
    assert.ok(before.every((c) => c.pid === pid), "one process until now");
    await client.instances.stop(vm.id);

    // Restored (to Running, the kind's default): the count goes back to the snapshot's,
    // in the same process, and the disk says the same.
    const mark = (await logLines(client, vm.id)).length;
    const restored = await client.instances.snapshots.restore(snap.id, { id: vm.id });
    assert.equal(restored.state, "Running");
    await waitFor(async () => (await counts(mark)).length >= 2, "counting after the restore", 120_000);
    const after = await counts(mark);
    assert.equal(after[0].pid, pid, "the program restarted");
    assert.ok(after[0].n <= atSnapshot + 1 && after[0].n < before.at(-1).n, `resumed at ${after[0].n}; the snapshot was at ${atSnapshot}, the stop at ${before.at(-1).n}`);
    const { output } = await execWs(server.url, client.apiKey, vm.id, { command: ["/bin/sh", "-c", "cat /root/count"] });
    const onDisk = Number(output.trim());
    const inMemory = (await counts(mark)).at(-1).n;
    assert.ok(Math.abs(onDisk - inMemory) <= 2 && onDisk < before.at(-1).n, `disk ${onDisk}, memory ${inMemory}, before ${before.at(-1).n}`);

    // A fork of the snapshot counts on from the same number, as another guest.
    const fork = await client.snapshots.fork(snap.id, { name: "counter-fork" });
    assert.equal(fork.state, "Running");
    await waitFor(async () => (await logLines(client, fork.id)).some((l) => l.startsWith("count=")), "the fork counting", 120_000);
    const forkFirst = (await logLines(client, fork.id)).find((l) => l.startsWith("count="));
    assert.match(forkFirst, new RegExp(`^count=\\d+ pid=${pid}$`));
    assert.ok(Number(forkFirst.match(/count=(\d+)/)[1]) <= atSnapshot + 1, forkFirst);
    const { output: host } = await execWs(server.url, client.apiKey, fork.id, { command: ["/bin/sh", "-c", "hostname"] });
    assert.equal(host.trim(), "counter-fork");

    // Compressed (zstd, in the background): a fork of it still counts on from its number.
    const beforePacked = (await counts(mark)).at(-1).n;
    const packed = await client.instances.snapshots.create(vm.id, { kind: "Standby", name: "packed", compression: { enabled: true, algorithm: "zstd", level: 3 } });
    assert.deepEqual([packed.compression_state, packed.compression], ["compressing", { enabled: true, algorithm: "zstd", level: 3 }]);
    const compressed = await waitFor(async () => {
      const s = await client.snapshots.get(packed.id);
      return s.compression_state !== "compressing" && s;
    }, "the compression", 240_000);
    assert.equal(compressed.compression_state, "compressed", JSON.stringify(compressed));
    // Guest memory compresses well (about half here; zero pages are not in the stream at all).
    assert.ok(compressed.compressed_size_bytes < compressed.uncompressed_size_bytes * 0.8, JSON.stringify(compressed));
    const atPacked = (await counts(mark)).at(-1).n;
    const unpacked = await client.snapshots.fork(packed.id, { name: "counter-unpacked" });
    await waitFor(async () => (await logLines(client, unpacked.id)).some((l) => l.startsWith("count=")), "the unpacked fork counting", 120_000);
    const firstUnpacked = Number((await logLines(client, unpacked.id)).find((l) => l.startsWith("count=")).match(/count=(\d+)/)[1]);
    assert.ok(firstUnpacked >= beforePacked && firstUnpacked <= atPacked + 1, `${firstUnpacked} vs ${beforePacked}..${atPacked}`);

    await client.instances.delete(unpacked.id);
    await client.snapshots.delete(packed.id);
    await client.instances.delete(fork.id);
    await client.snapshots.delete(snap.id);
    await client.instances.delete(vm.id);
  });
});
