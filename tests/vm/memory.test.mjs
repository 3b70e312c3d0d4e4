// Real VMs: memory back to the host. A 1 GiB guest fills 400 MiB of tmpfs (the VMM's RSS grows)
// and frees it; then `POST /resources/memory/reclaim` inflates its balloon: the guest hands
// the balloon its free memory (MemFree drops by the step, 256 MiB), the VMM's RSS ends well
// under what it was while full, and when the hold ends the balloon deflates and the guest has
// its memory back.
import { test, describe } from "node:test";
import assert from "node:assert/strict";

import { execWs, waitFor } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { state: "Running", timeout: "240s" };
const MiB = 2 ** 20;
let s;
vmSuite((fixtures) => (s = fixtures));

async function api(method, route, body) {
  const res = await fetch(`${s.server.url}${route}`, {
    method,
    headers: { Authorization: `Bearer ${s.client.apiKey}`, "Content-Type": "application/json" },
    body: body && JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function sh(id, line) {
  const { output, exitCode } = await execWs(s.server.url, s.client.apiKey, id, { command: ["/bin/busybox", "sh", "-c", line] });
  assert.equal(exitCode, 0, `${line}: ${output}`);
  return output;
}
const memFree = async (id) => Number((await sh(id, "grep MemFree /proc/meminfo")).match(/(\d+) kB/)[1]) * 1024;
const rss = async (id) => (await api("GET", `/instances/${id}/stats`)).json.memory_rss_bytes;

describe("memory", () => {
  test("freed guest memory and a reclaim go back to the host, and come back after the hold", { timeout: 600_000 }, async () => {
    const i = await s.client.instances.create({
      name: "roomy",
      image: `${s.registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "1GB",
      entrypoint: ["/bin/sh", "-c"],
      cmd: ["while true; do sleep 1; done"],
    }, { timeout: 240_000 });
    await s.client.instances.wait(i.id, BOOT, { timeout: 250_000 });
    await sh(i.id, "mkdir -p /fill && mount -t tmpfs -o size=500m tmpfs /fill && dd if=/dev/zero of=/fill/f bs=1048576 count=400 2>/dev/null");
    const full = await rss(i.id);
    await sh(i.id, "rm /fill/f && umount /fill");
    const free = await memFree(i.id);

    const r = await api("POST", "/resources/memory/reclaim", { reclaim_bytes: 512 * MiB, hold_for: "15s", reason: "test" });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const mine = r.json.actions.find((a) => a.instance_id === i.id);
    assert.equal(mine.status, "applied", JSON.stringify(r.json));
    assert.equal(mine.assigned_memory_bytes, 1024 * MiB);
    assert.equal(mine.protected_floor_bytes, 512 * MiB);
    assert.equal(mine.planned_target_guest_memory_bytes, 512 * MiB);
    assert.equal(mine.target_guest_memory_bytes, 768 * MiB, "one step of 256 MiB");
    assert.equal(mine.applied_reclaim_bytes, 256 * MiB);
    assert.ok(r.json.hold_until);

    // The guest gives the balloon its free pages; the host gets the memory back.
    await waitFor(async () => (await memFree(i.id)) < free - 200 * MiB, "the balloon to take the guest's free memory", 60_000);
    const after = await waitFor(async () => {
      const now = await rss(i.id);
      return now < full - 200 * MiB ? now : undefined;
    }, "the VMM's RSS to drop", 60_000);
    console.log(`# rss full ${Math.round(full / MiB)} MiB, after free + reclaim ${Math.round(after / MiB)} MiB`);

    // After the hold the balloon deflates: the guest has its memory again.
    await waitFor(async () => (await memFree(i.id)) > free - 64 * MiB, "the balloon to deflate after the hold", 90_000);
    const ops = await api("GET", `/instances/${i.id}/stats`);
    assert.equal(ops.status, 200);
    await s.client.instances.delete(i.id);
  });
});
