// Real VMs: auto-standby. A guest serving HTTP on a forwarded port, with a 3 s idle timeout,
// goes to Standby once nothing uses it; the next connection to its forwarded port wakes it and
// is answered (not refused) by the restored guest, in the same process; an open connection
// keeps it awake past the timeout; an exec wakes it too. The status endpoint says why at each
// step (upstream's `AutoStandbyStatus`, with Hypedeck's `asleep` and `activity`).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";

import { execWs, freePort, waitFor, logLines } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { state: "Running", timeout: "240s" };
let s;
vmSuite((fixtures) => (s = fixtures));

async function api(method, route) {
  const res = await fetch(`${s.server.url}${route}`, { method, headers: { Authorization: `Bearer ${s.client.apiKey}` } });
  return { status: res.status, json: await res.json() };
}

const stateOf = async (id) => (await s.client.instances.get(id)).state;

describe("auto-standby", () => {
  test("an idle guest sleeps, and a connection to its forwarded port or an exec wakes it", { timeout: 600_000 }, async () => {
    const port = await freePort();
    const i = await s.client.instances.create({
      name: "sleepy",
      image: `${s.registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "256MB",
      network: { enabled: true },
      ports: [{ host_port: port, guest_port: 80 }],
      auto_standby: { enabled: true, idle_timeout: "3s" },
      entrypoint: ["/bin/sh", "-c"],
      cmd: ["mkdir -p /www && echo \"pid $$ of $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www"],
    }, { timeout: 240_000 });
    assert.deepEqual(i.auto_standby, { enabled: true, idle_timeout: "3s" });
    await s.client.instances.wait(i.id, BOOT, { timeout: 250_000 });
    const first = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      return r.ok ? r.text() : undefined;
    }, "the guest's web server", 120_000);
    assert.match(first, /^pid \d+ of sleepy\n$/);

    // An open connection keeps it awake past the timeout.
    const held = connect(port, "127.0.0.1");
    await new Promise((r) => held.once("connect", r));
    await new Promise((r) => setTimeout(r, 6000));
    const busy = (await api("GET", `/instances/${i.id}/auto-standby/status`)).json;
    assert.equal(await stateOf(i.id), "Running");
    assert.equal(busy.status, "active", JSON.stringify(busy));
    assert.equal(busy.active_inbound_connections, 1);
    assert.equal(busy.activity.inbound, 1);
    held.destroy();

    // Idle: a countdown, then standby, asleep.
    await waitFor(async () => (await stateOf(i.id)) === "Standby", "auto-standby", 120_000);
    const asleep = (await api("GET", `/instances/${i.id}/auto-standby/status`)).json;
    assert.equal(asleep.asleep, true, JSON.stringify(asleep));
    assert.equal(asleep.reason, "instance_not_running");
    const hold = await api("POST", `/instances/${i.id}/auto-standby/hold`);
    assert.equal(hold.status, 409);
    assert.equal(hold.json.code, "instance_in_standby");

    // The next connection wakes it and is answered by the same guest process.
    const t0 = performance.now();
    const woken = await fetch(`http://127.0.0.1:${port}/`);
    const body = await woken.text();
    const wakeMs = performance.now() - t0;
    assert.equal(body, first, "the restored guest answers, as the same process");
    assert.equal(await stateOf(i.id), "Running");
    const ops = (await logLines(s.client, i.id, { source: "hypeman" })).join("\n");
    assert.match(ops, /idle: auto-standby/);
    assert.match(ops, /woken: restoring/);
    console.log(`# woken by a connection: first byte after ${Math.round(wakeMs)} ms`);
    assert.equal((await api("GET", `/instances/${i.id}/auto-standby/status`)).json.asleep, false);

    // Asleep again; an exec wakes it.
    await waitFor(async () => (await stateOf(i.id)) === "Standby", "auto-standby again", 120_000);
    const { output, exitCode } = await execWs(s.server.url, s.client.apiKey, i.id, { command: ["/bin/busybox", "cat", "/www/index.html"] });
    assert.equal(exitCode, 0);
    assert.equal(output, first);
    assert.equal(await stateOf(i.id), "Running");

    // Turned off: it stays up.
    await s.client.instances.update(i.id, { auto_standby: { enabled: false } });
    await new Promise((r) => setTimeout(r, 6000));
    assert.equal(await stateOf(i.id), "Running");
    const off = (await api("GET", `/instances/${i.id}/auto-standby/status`)).json;
    assert.deepEqual([off.status, off.reason], ["disabled", "policy_disabled"]);
    await s.client.instances.delete(i.id);
  });
});
