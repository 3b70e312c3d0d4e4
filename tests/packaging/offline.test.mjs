// A packaged Hypedeck (the .deb unpacked, or the AppImage: HYPEDECK_BIN runs its `hypedeck`) on
// a fresh data dir, run by scripts/check-offline.sh inside a network namespace whose only
// interface is loopback: no route to any mirror. The guest kernel that ships with the package
// boots the hello sandbox and an image from a registry on 127.0.0.1. apt-get, apt-cache and
// dpkg-deb on PATH are stand-ins that record any call and fail, so the test also proves that
// nothing asked for a package, and that the bundled kernel needs no dpkg.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { deleteAll, logLines, newDataDir, startRegistry, startServer, waitFor } from "../vm/harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const PACKAGE = process.env.PACKAGE_LABEL ?? "this build";
const BUNDLE = process.env.KERNEL_BUNDLE_DIR;

const stubs = mkdtempSync(path.join(tmpdir(), "hypedeck-offline-stubs-"));
const calls = path.join(stubs, "calls.log");
for (const tool of ["apt-get", "apt-cache", "dpkg-deb"]) {
  writeFileSync(path.join(stubs, tool), `#!/bin/sh\necho "${tool} $*" >> '${calls}'\nexit 100\n`);
  chmodSync(path.join(stubs, tool), 0o755);
}
const env = { PATH: `${stubs}:${process.env.PATH}`, HYPEDECK_KERNEL_DEB: "", HYPEDECK_KERNEL_BUNDLE: "" };
let registry, dataDir, server, client;

before(async () => {
  registry = await startRegistry();
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, env);
  client = server.client({ timeout: 300_000 });
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  rmSync(stubs, { recursive: true, force: true });
});

describe(`${PACKAGE} with no network`, () => {
  test("there is no route anywhere", () => {
    assert.equal(execFileSync("ip", ["-4", "route", "show"], { encoding: "utf8" }).trim(), "");
    assert.equal(execFileSync("ip", ["-6", "route", "show"], { encoding: "utf8" }).trim(), "");
  });

  test("doctor says the kernel ships with the app", () => {
    let out;
    try {
      out = execFileSync(BIN, ["--data-dir", dataDir, "doctor"], { encoding: "utf8", env: { ...process.env, ...env } });
    } catch (e) {
      out = e.stdout; // doctor exits 1 when something else (KVM, say) is missing
    }
    assert.match(out, /^\[ok\] Guest kernel: Linux \S+ \(linux-image-\S+ \S+\) ships with the app, in .*; it needs no network\.$/m, out);
  });

  test("the hello sandbox and an image from a loopback registry boot on the bundled kernel, and no package was asked for", { timeout: 900_000 }, async () => {
    const sample = await client.post("/system/samples/hello");
    assert.equal(sample.status, "ready");
    const hello = await client.instances.create({ name: "hello", image: "hypedeck.local/samples/hello:1", vcpus: 1, size: "256MB" });
    await client.instances.wait(hello.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    await waitFor(async () => (await logLines(client, hello.id)).some((l) => l.includes("Hello from a Hypedeck sandbox!")), "hello's greeting", 120_000);

    const image = `${registry.host}/vm/busybox:1`;
    await client.post("/images", { body: { name: image } });
    await waitFor(async () => (await client.get(`/images/${encodeURIComponent(image)}`)).status === "ready", "the image", 120_000);
    const box = await client.instances.create({ name: "box", image, vcpus: 1, size: "256MB", env: { GREETING: "offline" } });
    await waitFor(async () => (await logLines(client, box.id)).some((l) => l.includes("greeting=offline")), "the image's program", 250_000);

    // The kernel in the data dir is the bundle's, byte for byte.
    const kernels = path.join(dataDir, "system", "kernel");
    const releases = execFileSync("ls", [kernels], { encoding: "utf8" }).split("\n").filter((n) => n && !n.startsWith("."));
    assert.equal(releases.length, 1, releases.join(" "));
    if (BUNDLE) {
      const manifest = JSON.parse(readFileSync(path.join(BUNDLE, "kernel.json"), "utf8"));
      assert.equal(releases[0], manifest.release);
      const sha = createHash("sha256").update(readFileSync(path.join(kernels, releases[0], "vmlinuz"))).digest("hex");
      assert.equal(sha, manifest.files.vmlinuz);
    }
    assert.equal(existsSync(calls) ? readFileSync(calls, "utf8") : "", "", "apt or dpkg was called");
  });
});
