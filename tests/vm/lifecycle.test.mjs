// Real VMs: OCI images from a registry on 127.0.0.1 booted under QEMU by `hypedeck serve`,
// driven through the official Hypeman TypeScript SDK.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";
import { startServer, waitFor, logLines, waitStopped } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const BOOT_TIMEOUT = { timeout: "240s" };

let registry;
let dataDir;
let server;
let client;

const suite = vmSuite((s) => ({ registry, dataDir, server, client } = s));

const image = (name) => `${registry.host}/vm/${name}:1`;

async function waitState(id, state) {
  const r = await client.instances.wait(id, { state, ...BOOT_TIMEOUT }, { timeout: 250_000 });
  return r.state;
}

async function runToExit(name, body) {
  const created = await client.instances.create({ name, image: image("busybox"), vcpus: 1, size: "256MB", ...body });
  assert.equal(await waitStopped(client, created.id), "Stopped");
  return client.instances.get(created.id);
}

describe("instances boot real OCI images under QEMU", () => {
  test("the image's entrypoint runs with its env, cmd and workdir; exit 0 is success", async () => {
    const done = await runToExit("exit-zero", { env: { GREETING: "from-request" } });
    assert.equal(done.state, "Stopped");
    assert.equal(done.exit_code, 0);
    assert.equal(done.exit_message, "success");
    assert.ok(done.started_at && done.stopped_at);
    assert.match(done.network.ip, /^10\.100\.\d+\.15$/);
    const lines = await logLines(client, done.id);
    assert.ok(lines.includes("hello from exit-zero in /app greeting=from-request args=default-arg"), lines.join("\n"));
    assert.ok(lines.some((l) => l.includes('HYPEMAN-EXIT code=0 message="success"')));
    assert.ok(!lines.some((l) => l.includes("HYPEMAN-PROGRAM-START")), "markers are hidden");
    await client.instances.delete(done.id);
  });

  test("exit codes and messages match upstream (3, 127, 137)", async () => {
    const three = await runToExit("exit-three", { env: { CODE: "3" } });
    assert.deepEqual([three.exit_code, three.exit_message], [3, "exit code 3"]);
    const missing = await runToExit("exit-127", { cmd: ["no-such-program"], entrypoint: ["no-such-program"] });
    assert.deepEqual([missing.exit_code, missing.exit_message], [127, "command not found"]);
    const killed = await runToExit("exit-137", { entrypoint: ["/bin/sh", "-c", "kill -9 $$"] });
    assert.deepEqual([killed.exit_code, killed.exit_message], [137, "killed by signal 9 (killed)"]);
    for (const i of [three, missing, killed]) await client.instances.delete(i.id);
  });

  test("a real program from Debian packages (jq with its shared libraries)", async () => {
    const created = await client.instances.create({ name: "jq", image: image("jq"), vcpus: 1, size: "256MB" });
    assert.equal(await waitStopped(client, created.id), "Stopped");
    const lines = await logLines(client, created.id);
    assert.ok(lines.includes("3"), lines.join("\n"));
    assert.equal((await client.instances.get(created.id)).exit_code, 0);
    await client.instances.delete(created.id);
  });

  test("stop, start, logs follow, and the VM outlives an engine restart", async () => {
    const created = await client.instances.create({
      name: "long",
      image: image("busybox"),
      vcpus: 1,
      size: "256MB",
      entrypoint: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"],
    });
    assert.equal(await waitState(created.id, "Running"), "Running");
    const running = await client.instances.get("long");
    assert.equal(running.state, "Running");
    assert.equal(running.exit_code, null);

    // follow=true streams new lines as the guest prints them.
    const stream = await client.instances.logs(created.id, { follow: true, tail: 0 });
    const seen = [];
    for await (const line of stream) {
      seen.push(line);
      if (seen.filter((l) => l.startsWith("tick")).length >= 2) break;
    }
    stream.controller?.abort?.();
    assert.ok(seen.some((l) => l.startsWith("tick")), seen.join("\n"));

    // Kill the engine outright: the VM keeps running and a new engine takes it over.
    await server.stop("SIGKILL");
    server = await startServer(BIN, dataDir);
    client = server.client();
    Object.assign(suite, { server, client }); // stopped and cleaned by the suite's after()
    assert.equal((await client.instances.get(created.id)).state, "Running");

    const stopped = await client.instances.stop(created.id);
    assert.equal(stopped.state, "Stopped");
    assert.equal(stopped.exit_code, 143);
    assert.equal(stopped.exit_message, "killed by signal 15 (terminated)");
    assert.equal((await client.instances.stop(created.id)).state, "Stopped", "stop is idempotent");

    const restarted = await client.instances.start(created.id, {});
    // The previous run's boot markers are still in the console log: they must not count.
    assert.equal(restarted.state, "Initializing");
    assert.equal(restarted.exit_code, null);
    assert.equal(await waitState(created.id, "Running"), "Running");
    await client.instances.delete(created.id);
    await assert.rejects(client.instances.get(created.id), (e) => e instanceof Hypeman.NotFoundError);
  });

  test("the VMM dies while the engine is down: the new engine reports it, start and delete work", async () => {
    const created = await client.instances.create({
      name: "orphan", image: image("busybox"), vcpus: 1, size: "256MB",
      entrypoint: ["/bin/sh", "-c", "while true; do sleep 1; done"],
    });
    assert.equal(await waitState(created.id, "Running"), "Running");
    const pid = Number(readFileSync(path.join(dataDir, "instances", created.id, "run", "qemu.pid"), "utf8").trim());
    assert.ok(pid > 1);

    await server.stop("SIGKILL");
    process.kill(pid, "SIGKILL");
    await waitFor(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, "QEMU to die");
    server = await startServer(BIN, dataDir);
    client = server.client();
    Object.assign(suite, { server, client });

    const after = await client.instances.get(created.id);
    // Not silently dropped, not claimed to be running: Stopped (startable again), with an
    // exit message saying the guest never reported an exit. (Upstream says Unknown and only
    // allows delete; a user can do more with this.)
    assert.equal(after.state, "Stopped", JSON.stringify(after));
    assert.equal(after.exit_code, null);
    assert.equal(after.exit_message, "the VM ended without an exit status from the guest (its VMM was killed or crashed)");
    assert.ok(after.stopped_at, "stopped_at is set");
    assert.ok((await client.instances.list()).some((i) => i.id === created.id), "listed");
    const logs = await logLines(client, created.id, { source: "hypeman" });
    assert.ok(logs.some((l) => l.includes("without an exit status")), logs.join("\n"));
    const again = await client.instances.start(created.id, {});
    assert.equal(again.exit_message ?? null, null, "a new run clears it");
    assert.equal(await waitState(created.id, "Running"), "Running");
    await client.instances.delete(created.id);
    await assert.rejects(client.instances.get(created.id), (e) => e instanceof Hypeman.NotFoundError);
  });

  test("standby saves the whole VM and restore continues the same process", async () => {
    const created = await client.instances.create({
      name: "napper",
      image: image("busybox"),
      vcpus: 1,
      size: "256MB",
      entrypoint: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo count $i; sleep 1; done"],
    });
    assert.equal(await waitState(created.id, "Running"), "Running");
    await waitFor(async () => (await logLines(client, created.id)).some((l) => l === "count 3"), "count 3", 60_000);

    const saved = await client.instances.standby(created.id);
    assert.equal(saved.state, "Standby");
    assert.equal(saved.has_snapshot, true);
    const before = (await logLines(client, created.id)).filter((l) => l.startsWith("count ")).length;
    await assert.rejects(client.instances.start(created.id, {}), (e) => e instanceof Hypeman.ConflictError);

    const restored = await client.instances.restore(created.id);
    assert.equal(restored.state, "Running");
    assert.equal(restored.has_snapshot, false);
    assert.equal(restored.started_at, saved.started_at, "restore keeps the boot epoch");
    await waitFor(async () => {
      const counts = (await logLines(client, created.id)).filter((l) => l.startsWith("count "));
      return counts.length >= before + 2;
    }, "counting to continue", 60_000);
    const counts = (await logLines(client, created.id)).filter((l) => l.startsWith("count "));
    // One process counting on: no second "count 1", numbers keep increasing.
    assert.equal(counts.filter((l) => l === "count 1").length, 1, counts.join(","));
    const numbers = counts.map((l) => Number(l.split(" ")[1]));
    assert.deepEqual(numbers, numbers.map((_, i) => i + 1), counts.join(","));
    await client.instances.delete(created.id);
  });

  test("images: pull (202), status until ready, config fields, list, delete", async () => {
    const name = `${registry.host}/vm/jq:1`;
    const accepted = await client.images.create({ name });
    assert.equal(accepted.name, name);
    assert.match(accepted.digest, /^sha256:[0-9a-f]{64}$/);
    assert.ok(["pending", "pulling", "converting", "ready"].includes(accepted.status), accepted.status);
    // Right after the 202 the image is visible (with progress) even before it is ready.
    const early = await client.images.get(name);
    assert.equal(early.digest, accepted.digest);
    if (early.status !== "ready") assert.ok(early.bytes_total >= early.bytes_done, JSON.stringify(early));
    const ready = await waitFor(async () => {
      const i = await client.images.get(name);
      return i.status === "ready" ? i : null;
    }, "the image to be ready", 120_000);
    assert.deepEqual(ready.entrypoint, ["/usr/bin/jq"]);
    assert.deepEqual(ready.cmd, ["-M", "-n", "1+2"]);
    assert.deepEqual(ready.env, { PATH: "/usr/bin" });
    assert.ok(ready.size_bytes > 0);
    assert.ok((await client.images.list()).some((i) => i.digest === ready.digest));
    assert.equal((await client.images.get(ready.digest)).name, name);
    await client.images.delete(name);
    await assert.rejects(client.images.get(name), (e) => e instanceof Hypeman.NotFoundError);
    await assert.rejects(client.images.create({ name: `${registry.host}/vm/nope:1` }),
      (e) => e instanceof Hypeman.NotFoundError && e.error.code === "not_found");
    await assert.rejects(client.images.create({ name: "Bad::Ref" }),
      (e) => e instanceof Hypeman.BadRequestError && e.error.code === "invalid_name");
    await assert.rejects(client.images.get("Bad::Ref"),
      (e) => e instanceof Hypeman.BadRequestError && e.error.code === "invalid_name");
  });

  test("pull errors are clean and create nothing", async () => {
    await assert.rejects(
      client.instances.create({ name: "ghost", image: `${registry.host}/vm/does-not-exist:1` }),
      (e) => e instanceof Hypeman.NotFoundError && e.error.code === "not_found",
    );
    await assert.rejects(
      client.instances.create({ name: "bad-ref", image: "UPPER::case" }),
      (e) => e instanceof Hypeman.BadRequestError && e.error.code === "invalid_name",
    );
    const names = (await client.instances.list()).map((i) => i.name);
    assert.ok(!names.includes("ghost") && !names.includes("bad-ref"), names.join(","));
  });

  test("the hello sample is built on this machine (no registry), boots, greets and stops cleanly", async () => {
    const image = await client.post("/system/samples/hello");
    assert.equal(image.name, "hypedeck.local/samples/hello:1");
    assert.equal(image.status, "ready");
    assert.deepEqual(image.cmd, ["/hello"]);
    // Same guest-init binary, same image.
    assert.equal((await client.post("/system/samples/hello")).digest, image.digest);
    const checks = await client.get("/system/checks");
    assert.equal(checks.ready, true, JSON.stringify(checks));
    assert.ok(checks.checks.every((c) => c.status !== "missing"));
    const hello = await client.instances.create({ name: "hello", image: image.name, vcpus: 1, size: "256MB" });
    assert.equal(await waitState(hello.id, "Running"), "Running");
    await waitFor(async () => (await logLines(client, hello.id)).includes("Hello from a Hypedeck sandbox!"), "the greeting", 60_000);
    const stopped = await client.instances.stop(hello.id);
    assert.equal(stopped.state, "Stopped");
    assert.deepEqual([stopped.exit_code, stopped.exit_message], [0, "success"]);
    assert.ok((await logLines(client, hello.id)).includes("Goodbye."));
    await client.instances.delete(hello.id);
  });
});
