// Real VMs: forks of a Stopped instance and of a Stopped snapshot are sandboxes of their own.
// Each boots from a copy of the parent's disk, then writes its own; each has its own name,
// address and MAC; and each has its own credential: a rotation of one fork reaches the real
// egress proxy for that fork only (a local HTTPS upstream sees which guest sent what, by a
// header the guest sets to its hostname). Also upstream's 409 for a Running source without
// `from_running`. A fork of a running VM (`from_running`) continues its memory: its program
// keeps counting from the parent's number in one process, while the guest learns its own
// hostname, address and MAC and gets fresh entropy. See docs/design/snapshots.md.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { startRegistry, startServer, newDataDir, waitFor, logLines, deleteAll, execWs, startRecordingUpstream } from "./harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const BOOT = { state: "Running", timeout: "240s" };
const FIRST = "sk-fork-parent-value";
const ROTATED = "sk-fork-a-rotated-value";

let registry, dataDir, server, client, upstream, pki;

before(async () => {
  upstream = await startRecordingUpstream("hypedeck-fork-pki-");
  pki = upstream.pki;
  registry = await startRegistry();
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1" });
  client = server.client();
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  upstream?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** The last `key=value` line the program printed, by key (its newest run's). */
async function said(id, key, since = 0) {
  return waitFor(async () => {
    const lines = (await logLines(client, id)).slice(since);
    const line = lines.filter((l) => l.startsWith(`${key}=`)).at(-1);
    return line === undefined ? undefined : line.slice(key.length + 1);
  }, `${key}= in the log of ${id}`, 250_000);
}

const requestsFrom = (name) => upstream.requestsFrom(name);

/** A curl guest running `script` whose OPENAI_KEY is injected for https://localhost. */
const withCredential = (name, script) => ({
  name,
  image: `${registry.host}/vm/curl:1`,
  vcpus: 1,
  size: "256MB",
  env: { OPENAI_KEY: FIRST },
  network: { enabled: true, egress: { enabled: true } },
  credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
  cmd: [script],
});

describe("forks", () => {
  test("forks boot from the parent's disk with their own identity, disk and credentials", { timeout: 900_000 }, async () => {
    const port = upstream.port();
    // Prints what the disk held and who it is, marks the disk as its own, then keeps calling
    // the upstream through the proxy, saying who it is.
    const script = [
      "echo \"mark=$(cat /root/mark 2>/dev/null || echo none)\"",
      "echo \"host=$(hostname)\"",
      "echo \"addr=$(ip -4 -o addr show eth0 | awk '{print $4}') $(cat /sys/class/net/eth0/address)\"",
      "hostname > /root/mark && sync",
      `while true; do curl -sS -o /dev/null --max-time 20 -H "X-From: $(hostname)" https://localhost:${port}/; sleep 1; done`,
    ].join("; ");
    const parent = await client.instances.create(withCredential("parent", script), { timeout: 240_000 });
    assert.equal(await said(parent.id, "mark"), "none");
    await waitFor(() => requestsFrom("parent").length > 0, "a request from the parent", 120_000);

    await assert.rejects(client.instances.fork(parent.id, { name: "too-early" }), (e) =>
      e.status === 409 && e.error.code === "invalid_state" &&
      e.error.message === "invalid state transition: cannot fork from state Running (set from_running=true to allow standby+restore flow)");
    await client.instances.stop(parent.id);
    const snap = await client.instances.snapshots.create(parent.id, { kind: "Stopped", name: "base" });

    // Two forks, booting side by side: one of the instance, one of its snapshot.
    const [a, b] = await Promise.all([
      client.instances.fork(parent.id, { name: "fork-a", target_state: "Running" }),
      client.snapshots.fork(snap.id, { name: "fork-b", target_state: "Running" }),
    ]);
    assert.deepEqual(a.forked_from, { source_instance_id: parent.id, source_instance_name: "parent" });
    assert.deepEqual(b.forked_from, { source_instance_id: parent.id, source_instance_name: "parent", snapshot_id: snap.id });
    await assert.rejects(client.instances.fork(parent.id, { name: "fork-a" }), (e) =>
      e.status === 409 && e.error.code === "name_conflict" && e.error.message === "instance already exists: instance name 'fork-a' already exists");

    for (const [fork, name] of [[a, "fork-a"], [b, "fork-b"]]) {
      assert.equal(await said(fork.id, "mark"), "parent", `${name} starts from the parent's disk`);
      assert.equal(await said(fork.id, "host"), name);
    }
    const addrs = await Promise.all([parent, a, b].map(async (i) => (await client.instances.get(i.id)).network));
    const guestA = await said(a.id, "addr");
    const guestB = await said(b.id, "addr");
    assert.notEqual(guestA, guestB, "the forks share an address or MAC");
    assert.ok(guestA.startsWith(`${addrs[1].ip}/`) && guestA.endsWith(addrs[1].mac), `${guestA} vs ${JSON.stringify(addrs[1])}`);
    assert.equal(new Set(addrs.map((n) => n.ip)).size, 3, JSON.stringify(addrs));
    assert.equal(new Set(addrs.map((n) => n.mac)).size, 3, JSON.stringify(addrs));

    // Each fork's requests carry the value it inherited; rotating fork-a changes only its own.
    await waitFor(() => requestsFrom("fork-a").length > 0 && requestsFrom("fork-b").length > 0, "requests from both forks", 120_000);
    for (const name of ["fork-a", "fork-b"]) {
      assert.ok(requestsFrom(name).every((s) => s.authorization === `Bearer ${FIRST}`), JSON.stringify(requestsFrom(name)));
    }
    await client.instances.update(a.id, { env: { OPENAI_KEY: ROTATED } });
    await waitFor(() => requestsFrom("fork-a").at(-1)?.authorization === `Bearer ${ROTATED}`, "fork-a's rotated value at the upstream", 60_000);
    const fromB = requestsFrom("fork-b").length;
    await waitFor(() => requestsFrom("fork-b").length >= fromB + 2, "more requests from fork-b", 60_000);
    assert.ok(requestsFrom("fork-b").every((s) => s.authorization === `Bearer ${FIRST}`), "fork-b's value changed with fork-a's rotation");
    assert.equal((await client.instances.get(parent.id)).env.OPENAI_KEY, FIRST);

    // The parent's disk is its own: the forks' marks never reached it.
    const before = (await logLines(client, parent.id)).length;
    await client.instances.start(parent.id, {});
    await client.instances.wait(parent.id, BOOT, { timeout: 250_000 });
    assert.equal(await said(parent.id, "mark", before), "parent");
    const fromParent = requestsFrom("parent").length;
    await waitFor(() => requestsFrom("parent").length > fromParent, "a request from the restarted parent", 120_000);
    assert.equal(requestsFrom("parent").at(-1).authorization, `Bearer ${FIRST}`);

    for (const i of [a, b, parent]) await client.instances.delete(i.id);
    await client.snapshots.delete(snap.id);
  });

  test("a fork of a running VM continues its program under its own identity", { timeout: 900_000 }, async () => {
    const port = upstream.port();
    // One process that counts in memory and calls the upstream as whoever the guest now is.
    const script = [
      "i=0",
      `while true; do i=$((i+1)); echo "count=$i pid=$$"; curl -sS -o /dev/null --max-time 5 -H "X-From: $(hostname)" https://localhost:${port}/; sleep 1; done`,
    ].join("; ");
    const parent = await client.instances.create(withCredential("runner", script), { timeout: 240_000 });
    await client.instances.wait(parent.id, BOOT, { timeout: 250_000 });
    const counts = async (id) => (await logLines(client, id)).filter((l) => l.startsWith("count=")).map((l) => {
      const [, n, pid] = l.match(/^count=(\d+) pid=(\d+)$/);
      return { n: Number(n), pid };
    });
    await waitFor(async () => (await counts(parent.id)).length >= 3, "the parent counting", 120_000);

    const kid = await client.instances.fork(parent.id, { name: "runner-kid", from_running: true });
    assert.equal(kid.state, "Running", "a fork of a running VM runs by default");
    assert.deepEqual(kid.forked_from, { source_instance_id: parent.id, source_instance_name: "runner" });
    assert.equal((await client.instances.get(parent.id)).state, "Running", "the parent runs again");

    // The fork's program goes on from where the parent's was, in the same process.
    const parentCounts = await counts(parent.id);
    await waitFor(async () => (await counts(kid.id)).length >= 2, "the fork counting", 120_000);
    const kidCounts = await counts(kid.id);
    assert.ok(kidCounts[0].n > 1, `the fork started counting again: ${JSON.stringify(kidCounts.slice(0, 3))}`);
    assert.equal(kidCounts[0].pid, parentCounts[0].pid, "another process");
    // The parent never restarted either.
    await waitFor(async () => (await counts(parent.id)).length > parentCounts.length, "the parent counting on", 60_000);
    const again = await counts(parent.id);
    assert.ok(again.every((c, i) => i === 0 || c.n === again[i - 1].n + 1), `the parent's count restarted: ${again.map((c) => c.n)}`);

    // Who the fork is now: its name, its address and MAC (what the API says), its own calls.
    const sh = async (id, line) => {
      const { output, exitCode } = await execWs(server.url, client.apiKey, id, { command: ["/bin/busybox", "sh", "-c", line] });
      assert.equal(exitCode, 0, output);
      return output.trim();
    };
    const net = (await client.instances.get(kid.id)).network;
    const parentNet = (await client.instances.get(parent.id)).network;
    assert.notEqual(net.ip, parentNet.ip);
    assert.notEqual(net.mac, parentNet.mac);
    assert.equal(await sh(kid.id, "hostname"), "runner-kid");
    assert.equal(await sh(parent.id, "hostname"), "runner");
    assert.equal(await sh(kid.id, "ip -4 -o addr show eth0 | awk '{print $4}'; cat /sys/class/net/eth0/address"), `${net.ip}/24\n${net.mac}`);
    await waitFor(() => requestsFrom("runner-kid").length >= 2, "requests from the fork, as the fork", 60_000);
    assert.ok(requestsFrom("runner-kid").every((s) => s.authorization === `Bearer ${FIRST}`), JSON.stringify(requestsFrom("runner-kid")));
    // Fresh entropy: the two kernels' random streams no longer agree.
    const random = "busybox head -c 16 /dev/urandom | busybox od -An -tx1";
    assert.notEqual(await sh(kid.id, random), await sh(parent.id, random));
    const ops = await logLines(client, kid.id, { source: "hypeman" });
    assert.ok(ops.some((l) => l.includes(`guest reidentified as runner-kid (${net.ip}, ${net.mac})`)), ops.join("\n"));

    for (const i of [kid, parent]) await client.instances.delete(i.id);
  });
});
