// Real VMs: upstream's `GET /instances/{id}/stats` moves with what the guest does. A busy loop
// in the guest raises the VMM's CPU seconds, filling a tmpfs raises its RSS, pinging the
// gateway moves the NIC's byte counters both ways, and a file written to disk shows in the
// history's disk bytes; the history (`/instances/{id}/stats/history`) samples every 2 s while the
// VM runs, and `GET /stats` lists it with the host's memory. Stopped, the stats are zeros.
import { test, describe } from "node:test";
import assert from "node:assert/strict";

import { execWs, waitFor, waitStopped } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { state: "Running", timeout: "240s" };
let s;
vmSuite((fixtures) => (s = fixtures));

async function api(route) {
  const res = await fetch(`${s.server.url}${route}`, { headers: { Authorization: `Bearer ${s.client.apiKey}` } });
  assert.equal(res.status, 200, route);
  return res.json();
}

async function sh(id, line) {
  const { output, exitCode } = await execWs(s.server.url, s.client.apiKey, id, { command: ["/bin/busybox", "sh", "-c", line] });
  assert.equal(exitCode, 0, `${line}: ${output}`);
  return output;
}

describe("stats", () => {
  test("stats move with the guest's CPU, memory, network and disk", { timeout: 600_000 }, async () => {
    const i = await s.client.instances.create({
      name: "stats",
      image: `${s.registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "256MB",
      network: { enabled: true },
      entrypoint: ["/bin/sh", "-c"],
      cmd: ["while true; do sleep 1; done"],
    }, { timeout: 240_000 });
    await s.client.instances.wait(i.id, BOOT, { timeout: 250_000 });
    const net = (await s.client.instances.get(i.id)).network;
    const before = await api(`/instances/${i.id}/stats`);
    assert.equal(before.instance_id, i.id);
    assert.equal(before.allocated_vcpus, 1);
    assert.equal(before.allocated_memory_bytes, 256 * 2 ** 20);
    assert.ok(before.cpu_seconds > 0 && before.memory_rss_bytes > 0, JSON.stringify(before));

    // CPU: a busy loop of a few seconds.
    await sh(i.id, "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done");
    // Memory: 96 MiB of tmpfs pages the guest never touched before.
    await sh(i.id, "mkdir -p /fill && mount -t tmpfs -o size=120m tmpfs /fill && dd if=/dev/zero of=/fill/f bs=1048576 count=96 2>/dev/null");
    // Network: the gateway answers pings.
    await sh(i.id, `ping -c 5 -s 1000 ${net.ip.replace(/\.\d+$/, ".2")} >/dev/null`);
    // Disk: 8 MiB through the overlay disk.
    await sh(i.id, "dd if=/dev/zero of=/root/blob bs=1048576 count=8 2>/dev/null && sync");
    const after = await api(`/instances/${i.id}/stats`);
    assert.ok(after.cpu_seconds > before.cpu_seconds + 1, `cpu ${before.cpu_seconds} → ${after.cpu_seconds}`);
    assert.ok(after.memory_rss_bytes > before.memory_rss_bytes + 64 * 2 ** 20, `rss ${before.memory_rss_bytes} → ${after.memory_rss_bytes}`);
    assert.ok(after.network_tx_bytes > before.network_tx_bytes + 5000, `tx ${before.network_tx_bytes} → ${after.network_tx_bytes}`);
    assert.ok(after.network_rx_bytes > before.network_rx_bytes + 5000, `rx ${before.network_rx_bytes} → ${after.network_rx_bytes}`);
    assert.ok(Math.abs(after.memory_utilization_ratio - after.memory_rss_bytes / after.allocated_memory_bytes) < 1e-9);

    // The history samples every 2 s; its disk bytes count the guest's writes.
    const history = await waitFor(async () => {
      const h = await api(`/instances/${i.id}/stats/history`);
      const last = h.samples.at(-1);
      return h.samples.length >= 3 && last.disk_write_bytes >= 8 * 2 ** 20 ? h : undefined;
    }, "samples with the disk writes", 60_000);
    assert.equal(history.interval_ms, 2000);
    const [first, last] = [history.samples[0], history.samples.at(-1)];
    assert.ok(last.at_ms > first.at_ms && last.cpu_seconds >= first.cpu_seconds);
    assert.ok(last.disk_read_bytes > 0);
    const fleet = await api("/stats");
    assert.ok(fleet.host_memory_bytes > 0 && fleet.host_cpus >= 1);
    const mine = fleet.instances.find((x) => x.instance_id === i.id);
    assert.ok(mine && mine.samples.length > 0, JSON.stringify(fleet));
    assert.ok(fleet.guest_memory_rss_bytes >= mine.samples.at(-1).memory_rss_bytes);

    await s.client.instances.stop(i.id);
    assert.equal(await waitStopped(s.client, i.id), "Stopped");
    const stopped = await api(`/instances/${i.id}/stats`);
    assert.equal(stopped.cpu_seconds, 0);
    assert.equal(stopped.memory_rss_bytes, 0);
    await s.client.instances.delete(i.id);
  });
});
