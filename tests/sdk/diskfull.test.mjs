// A full disk: the data dir lives on a small tmpfs that the test fills up. Writes of metadata
// fail, and then: the old metadata stays whole and parseable, the API answers a clear
// `insufficient_resources` error (not a bare 500), a rotation that could not be saved is rolled
// back, a create leaves nothing half-made, no temporary file is left, and once space is free
// everything works again, across an engine restart too.
// Mounting needs root (CI runs as root); elsewhere the test says it is skipped and why.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";

import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const root = process.getuid?.() === 0;

/** Every file under `dir`. */
function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** Writes to `file` until the filesystem refuses with ENOSPC; returns the bytes written. */
function fill(file) {
  const fd = openSync(file, "w");
  let written = 0;
  try {
    for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
      const chunk = Buffer.alloc(size, 0x61);
      for (;;) {
        try {
          written += writeSync(fd, chunk);
        } catch (e) {
          if (e.code !== "ENOSPC") throw e;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

test("disk full: old metadata stays valid, the API says so, nothing is half-written", { skip: !root && "mounting a small tmpfs needs root", timeout: 120_000 }, async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "hypedeck-diskfull-"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", dataDir]);
  let server;
  try {
    server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"], dataDir });
    let client = server.client();
    const agent = await client.instances.create({
      name: "full-agent",
      image: "alpine",
      env: { KEY: "sk-before-the-disk-filled" },
      network: { egress: { enabled: true } },
      credentials: { KEY: { source: { env: "KEY" }, inject: [{ as: { header: "X-Key", format: "${value}" } }] } },
    });
    const metadata = path.join(dataDir, "instances", agent.id, "metadata.json");
    const before = readFileSync(metadata, "utf8");
    JSON.parse(before);

    const filler = path.join(dataDir, "filler");
    assert.ok(fill(filler) > 0);

    // A rotation whose metadata cannot be saved: a clear error, and nothing changed.
    await assert.rejects(client.instances.update(agent.id, { env: { KEY: "sk-after-the-disk-filled" } }), (e) =>
      e instanceof Hypeman.ConflictError && e.error.code === "insufficient_resources" &&
      /disk holding Hypedeck's data dir is full \(no space left on device\)/.test(e.error.message) &&
      !e.error.message.includes("sk-after"));
    assert.equal(readFileSync(metadata, "utf8"), before, "the old metadata is untouched");
    assert.equal((await client.instances.get(agent.id)).env.KEY, "sk-before-the-disk-filled", "the rotation was rolled back");

    // A create on a full disk fails the same way and leaves no instance behind.
    await assert.rejects(client.instances.create({ name: "no-room", image: "alpine" }), (e) =>
      e instanceof Hypeman.APIError && e.status < 500 && /no space left on device/.test(e.error.message));
    assert.deepEqual((await client.instances.list()).map((i) => i.name), ["full-agent"]);

    // Nothing half-written: every metadata file parses, no temporary file anywhere.
    const files = walk(dataDir);
    assert.deepEqual(files.filter((f) => /\.tmp-\d+(-\d+)?$/.test(f)), []);
    for (const f of files.filter((f) => f.endsWith(".json"))) JSON.parse(readFileSync(f, "utf8"));

    // Space again: the same requests work, and survive a restart.
    rmSync(filler);
    const rotated = await client.instances.update(agent.id, { env: { KEY: "sk-after-the-disk-filled" } });
    assert.equal(rotated.env.KEY, "sk-after-the-disk-filled");
    const made = await client.instances.create({ name: "room-again", image: "alpine" });
    await server.stop();
    server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"], dataDir });
    client = server.client();
    const names = (await client.instances.list()).map((i) => i.name).sort();
    assert.deepEqual(names, ["full-agent", "room-again"]);
    assert.equal((await client.instances.get(agent.id)).env.KEY, "sk-after-the-disk-filled");
    await client.instances.delete(agent.id);
    await client.instances.delete(made.id);
  } finally {
    await server?.stop();
    execFileSync("umount", ["-l", dataDir]);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
