// Real VMs started from a template (issue 22, item 3). The first start of a shape boots cold
// and makes a template in the background: a VM booted until its init waits for a config, saved
// with its RAM in a file. Later starts of that shape restore it, mapping the RAM file
// privately, and init reads their own config. Each must behave exactly like a cold-started
// instance: its own env, hostname, address, MAC, clock and randomness, its own credential
// through the real egress proxy (rotated without touching the other), exec with exit codes
// passed through, the program's exit code, standby and restore. The template itself never holds
// an instance's env and is never written by the VMs started from it.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { startRegistry, startServer, newDataDir, waitFor, logLines, deleteAll, execWs, waitStopped, startRecordingUpstream } from "./harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const BOOT = { state: "Running", timeout: "240s" };

let registry, dataDir, server, client, upstream, pki;

before(async () => {
  upstream = await startRecordingUpstream("hypedeck-template-pki-");
  pki = upstream.pki;
  registry = await startRegistry();
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, {
    HYPEDECK_EGRESS_EXTRA_CA: pki.ca,
    HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1",
    HYPEDECK_TEMPLATES: "auto",
  });
  client = server.client();
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  upstream?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function api(method, route) {
  const res = await fetch(`${server.url}${route}`, { method, headers: { Authorization: `Bearer ${client.apiKey}` } });
  return { status: res.status, json: res.status === 204 ? null : await res.json() };
}

/** The last `key=value` line the program printed, by key. */
async function said(id, key, since = 0) {
  return waitFor(async () => {
    const lines = (await logLines(client, id)).slice(since);
    const line = lines.filter((l) => l.startsWith(`${key}=`)).at(-1);
    return line === undefined ? undefined : line.slice(key.length + 1);
  }, `${key}= in the log of ${id}`, 250_000);
}

const requestsFrom = (name) => upstream.requestsFrom(name);
const sha256 = (file) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** A curl guest saying who it is, then calling the upstream with its injected OPENAI_KEY. */
function sandbox(name, { mark, key, cmd }) {
  const port = upstream.port();
  const bb = "/bin/busybox";
  const script = cmd ?? [
    "echo \"mark=$MARK\"",
    "echo \"key=$OPENAI_KEY\"",
    "echo \"host=$(hostname)\"",
    "echo \"addr=$(ip -4 -o addr show eth0 | awk '{print $4}') $(cat /sys/class/net/eth0/address)\"",
    `echo "rand=$(${bb} head -c 16 /dev/urandom | ${bb} od -An -tx1 | ${bb} tr -d ' \\n')"`,
    `echo "clock=$(${bb} date +%s)"`,
    `while true; do curl -sS -o /dev/null --max-time 20 -H "X-From: $(hostname)" https://localhost:${port}/; sleep 1; done`,
  ].join("; ");
  return {
    name,
    image: `${registry.host}/vm/curl:1`,
    vcpus: 1,
    size: "256MB",
    env: { MARK: mark, OPENAI_KEY: key },
    network: { enabled: true, egress: { enabled: true } },
    credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    cmd: [script],
  };
}

describe("templates", () => {
  test("an instance started from a template behaves exactly like a cold-started one", { timeout: 900_000 }, async () => {
    // The first start of this shape boots cold and asks for its template.
    const first = await client.instances.create(sandbox("first", { mark: "mark-of-first", key: "sk-first-secret" }), { timeout: 240_000 });
    assert.equal(first.template_id, undefined, "the first start of a shape boots cold");
    const tmpl = await waitFor(async () => {
      const { json } = await api("GET", "/templates");
      const failed = json.find((t) => t.status === "failed");
      if (failed) throw new Error(`the template failed: ${failed.error}`);
      return json.find((t) => t.status === "ready");
    }, "a ready template", 300_000);
    assert.equal(tmpl.image, `${registry.host}/vm/curl:1`);
    assert.equal(tmpl.vcpus, 1);
    assert.equal(tmpl.memory_bytes, 256 * 1024 * 1024);
    assert.equal(tmpl.network, true);
    const saved = path.join(dataDir, "templates", tmpl.id, "saved");
    const ram = path.join(saved, "memory.ram");
    const ramHash = sha256(ram);
    // The template never read a config: nothing of the instance whose start made it is in it.
    for (const file of [ram, path.join(saved, "state.bin")]) {
      const bytes = readFileSync(file);
      for (const value of ["mark-of-first", "sk-first-secret", "mock-OPENAI_KEY", "first"]) {
        assert.equal(bytes.indexOf(Buffer.from(`MARK=${value}`)), -1, `${value} in ${file}`);
      }
      assert.equal(bytes.indexOf(Buffer.from("sk-first-secret")), -1, `the credential in ${file}`);
      assert.equal(bytes.indexOf(Buffer.from("mark-of-first")), -1, `first's env in ${file}`);
    }

    // Two starts from it, side by side, each with its own env and credential.
    const [a, b] = await Promise.all([
      client.instances.create(sandbox("tpl-a", { mark: "mark-of-a", key: "sk-a-value" }), { timeout: 240_000 }),
      client.instances.create(sandbox("tpl-b", { mark: "mark-of-b", key: "sk-b-value" }), { timeout: 240_000 }),
    ]);
    assert.equal(a.template_id, tmpl.id);
    assert.equal(b.template_id, tmpl.id);
    const hostNow = () => Math.floor(Date.now() / 1000);
    const facts = {};
    for (const [i, name] of [[first, "first"], [a, "tpl-a"], [b, "tpl-b"]]) {
      await client.instances.wait(i.id, BOOT, { timeout: 250_000 });
      const n = (await client.instances.get(i.id)).network;
      facts[name] = {
        mark: await said(i.id, "mark"),
        key: await said(i.id, "key"),
        host: await said(i.id, "host"),
        addr: await said(i.id, "addr"),
        rand: await said(i.id, "rand"),
        clock: Number(await said(i.id, "clock")),
        api: n,
      };
      const f = facts[name];
      assert.equal(f.host, name);
      assert.equal(f.key, "mock-OPENAI_KEY", "the guest sees the mock, never the value");
      assert.ok(f.addr.startsWith(`${n.ip}/`) && f.addr.endsWith(n.mac), `${name}: ${f.addr} vs ${JSON.stringify(n)}`);
      assert.ok(Math.abs(f.clock - hostNow()) < 120, `${name}'s clock ${f.clock} is far from the host's ${hostNow()}`);
      assert.match(f.rand, /^[0-9a-f]{32}$/);
    }
    assert.equal(facts.first.mark, "mark-of-first");
    assert.equal(facts["tpl-a"].mark, "mark-of-a");
    assert.equal(facts["tpl-b"].mark, "mark-of-b");
    assert.equal(new Set(Object.values(facts).map((f) => f.api.ip)).size, 3);
    assert.equal(new Set(Object.values(facts).map((f) => f.api.mac)).size, 3);
    assert.notEqual(facts["tpl-a"].rand, facts["tpl-b"].rand, "two starts of one template draw the same randomness");

    // Credentials through the real proxy: each its own, a rotation changes only its own.
    await waitFor(() => ["first", "tpl-a", "tpl-b"].every((n) => requestsFrom(n).length > 0), "requests from all three", 120_000);
    assert.ok(requestsFrom("first").every((s) => s.authorization === "Bearer sk-first-secret"));
    assert.ok(requestsFrom("tpl-a").every((s) => s.authorization === "Bearer sk-a-value"), JSON.stringify(requestsFrom("tpl-a")));
    assert.ok(requestsFrom("tpl-b").every((s) => s.authorization === "Bearer sk-b-value"), JSON.stringify(requestsFrom("tpl-b")));
    await client.instances.update(a.id, { env: { OPENAI_KEY: "sk-a-rotated" } });
    await waitFor(() => requestsFrom("tpl-a").at(-1)?.authorization === "Bearer sk-a-rotated", "tpl-a's rotated value at the upstream", 60_000);
    const fromB = requestsFrom("tpl-b").length;
    await waitFor(() => requestsFrom("tpl-b").length >= fromB + 2, "more requests from tpl-b", 60_000);
    assert.ok(requestsFrom("tpl-b").every((s) => s.authorization === "Bearer sk-b-value"));

    // Exec, with its exit code, as on a cold-started instance.
    for (const [i, mark] of [[first, "mark-of-first"], [a, "mark-of-a"]]) {
      const echoed = await execWs(server.url, client.apiKey, i.id, { command: ["/bin/busybox", "sh", "-c", "echo $MARK; exit 7"] });
      assert.equal(echoed.output.trim(), mark);
      assert.equal(echoed.exitCode, 7);
    }

    // Standby and restore of a VM started from a template.
    await client.instances.standby(a.id, {});
    // The saved VM names its versioned machine type, and the restore boots that one (a newer
    // QEMU keeps older machine types, so the save outlives an upgrade).
    const machine = readFileSync(path.join(dataDir, "instances", a.id, "snapshots", "latest", "machine"), "utf8");
    assert.match(machine, /^pc-q35-\d+\.\d+$/);
    const lines = (await logLines(client, a.id)).length;
    await client.instances.restore(a.id);
    await client.instances.wait(a.id, BOOT, { timeout: 250_000 });
    const pid = readFileSync(path.join(dataDir, "instances", a.id, "run", "qemu.pid"), "utf8").trim();
    assert.ok(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(machine), "the restore runs the saved machine type");
    const after = requestsFrom("tpl-a").length;
    await waitFor(() => requestsFrom("tpl-a").length > after, "tpl-a calling on after its restore", 120_000);
    assert.equal(requestsFrom("tpl-a").at(-1).authorization, "Bearer sk-a-rotated");
    const again = await execWs(server.url, client.apiKey, a.id, { command: ["/bin/busybox", "sh", "-c", "echo $MARK"] });
    assert.equal(again.output.trim(), "mark-of-a");
    assert.ok((await logLines(client, a.id)).length >= lines);

    // The program's exit code, from a template start.
    const exits = await client.instances.create({ ...sandbox("tpl-exit", { mark: "m", key: "k-exit", cmd: "echo bye; exit 3" }) }, { timeout: 240_000 });
    assert.equal(exits.template_id, tmpl.id);
    assert.equal(await waitStopped(client, exits.id), "Stopped");
    const ended = await client.instances.get(exits.id);
    assert.equal(ended.exit_code, 3);
    assert.ok((await logLines(client, exits.id)).includes("bye"));

    // The VMs started from the template never wrote to it.
    assert.equal(sha256(ram), ramHash, "a VM started from the template changed its RAM file");
    const listed = (await api("GET", "/templates")).json.find((t) => t.id === tmpl.id);
    assert.ok(listed.starts >= 3, JSON.stringify(listed));

    // Removing the template: running instances run on, the next start boots cold.
    assert.equal((await api("DELETE", `/templates/${tmpl.id}`)).status, 204);
    assert.equal((await api("DELETE", `/templates/${tmpl.id}`)).status, 404);
    const stillB = requestsFrom("tpl-b").length;
    await waitFor(() => requestsFrom("tpl-b").length > stillB, "tpl-b calling on after the template is gone", 60_000);
    for (const i of [first, a, b, exits]) await client.instances.delete(i.id);
  });
});
