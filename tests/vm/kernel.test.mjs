// The guest kernel that ships with the app, across an app update: an instance saved (Standby)
// under the old kernel is restored on it, a new one boots on the new kernel, and the old
// kernel stays cached while anything still uses it, then goes. A bundle with another release
// name stands in for the update's kernel (HYPEDECK_KERNEL_BUNDLE), with the same real kernel
// inside, so both boot. The Setup checks say where the kernel comes from.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { deleteAll, logLines, newDataDir, startRegistry, startServer, waitFor } from "./harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const arch = process.arch === "arm64" ? "arm64" : "amd64";
const OLD = path.resolve(path.dirname(BIN), "..", "guest-kernel", arch);
const BOOT = { state: "Running", timeout: "240s" };

let registry, dataDir, server, client, work, NEW, oldRelease, newRelease;

async function serve(bundle) {
  await server?.stop();
  server = await startServer(BIN, dataDir, { HYPEDECK_KERNEL_BUNDLE: bundle });
  client = server.client({ timeout: 300_000 });
}

const booted = (id) => JSON.parse(readFileSync(path.join(dataDir, "instances", id, "metadata.json"), "utf8")).boot;
const cached = () => readdirSync(path.join(dataDir, "system", "kernel")).filter((n) => !n.startsWith(".")).sort();

before(async () => {
  assert.ok(existsSync(path.join(OLD, "kernel.json")), `no kernel bundle in ${OLD} (make kernel-bundle)`);
  work = mkdtempSync(path.join(tmpdir(), "hypedeck-kernel-"));
  NEW = path.join(work, "next");
  cpSync(OLD, NEW, { recursive: true });
  const manifest = JSON.parse(readFileSync(path.join(NEW, "kernel.json"), "utf8"));
  oldRelease = manifest.release;
  newRelease = `${manifest.release}-next`;
  writeFileSync(path.join(NEW, "kernel.json"), JSON.stringify({ ...manifest, release: newRelease }));
  registry = await startRegistry();
  dataDir = newDataDir();
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the bundled kernel across an update", () => {
  test("saved instances keep their kernel until they restart; unused kernels are removed", { timeout: 900_000 }, async () => {
    await serve(OLD);
    const { checks } = await client.get("/system/checks");
    const kernel = checks.find((c) => c.id === "kernel");
    assert.equal(kernel.status, "ok");
    assert.match(kernel.detail, new RegExp(`^Linux ${oldRelease.replace(/\./g, "\\.")} \\(linux-image-\\S+ \\S+\\) ships with the app, in .+; it needs no network\\.$`));

    const image = `${registry.host}/vm/busybox:1`;
    const keeper = await client.instances.create({ name: "keeper", image, vcpus: 1, size: "256MB", entrypoint: ["/bin/sh", "-c"], cmd: ["i=0; while true; do i=$((i+1)); echo n=$i; sleep 1; done"] });
    await client.instances.wait(keeper.id, BOOT, { timeout: 250_000 });
    assert.equal(path.basename(path.dirname(booted(keeper.id).kernel)), oldRelease);
    await client.instances.standby(keeper.id);

    // The update: the app now ships another kernel.
    await serve(NEW);
    const fresh = await client.instances.create({ name: "fresh", image, vcpus: 1, size: "256MB" });
    await waitFor(async () => (await logLines(client, fresh.id)).some((l) => l.includes("hello from fresh")), "fresh's output", 250_000);
    assert.equal(path.basename(path.dirname(booted(fresh.id).kernel)), newRelease);
    // The first cold boot pruned the cache: the saved instance's kernel stays.
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(cached(), [oldRelease, newRelease].sort());

    // Restored, the saved instance goes on counting on its own kernel.
    await client.instances.restore(keeper.id);
    const counted = (await logLines(client, keeper.id)).filter((l) => l.startsWith("n=")).length;
    await waitFor(async () => (await logLines(client, keeper.id)).filter((l) => l.startsWith("n=")).length > counted + 2, "keeper counting again", 120_000);
    assert.equal(path.basename(path.dirname(booted(keeper.id).kernel)), oldRelease);
    const initrds = readdirSync(path.join(dataDir, "system", "initrd"));
    assert.equal(initrds.length, 2, initrds.join(" "));

    // Once nothing uses the old kernel (the instance is gone), the next start removes it.
    await client.instances.delete(keeper.id);
    await serve(NEW);
    const third = await client.instances.create({ name: "third", image, vcpus: 1, size: "256MB" });
    await waitFor(async () => (await logLines(client, third.id)).some((l) => l.includes("hello from third")), "third's output", 250_000);
    await waitFor(() => cached().length === 1 || undefined, "the old kernel removed", 10_000).catch(() => {});
    assert.deepEqual(cached(), [newRelease]);
    assert.deepEqual(readdirSync(path.join(dataDir, "system", "initrd")), [path.basename(path.dirname(booted(third.id).initrd))]);
  });
});
