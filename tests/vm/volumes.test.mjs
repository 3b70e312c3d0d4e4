// Real VMs: volumes (upstream §9) — created empty or from a tar.gz, attached at create
// read-only, read-write or as an overlay, and read and written by real guests.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { apiError, logLines, waitStopped } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";


let registry;
let client;

vmSuite((s) => ({ registry, client } = s));

/** A tar.gz of `files` ({path: content}), made with the system tar. */
function tarGz(files) {
  const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-vol-"));
  try {
    for (const [p, content] of Object.entries(files)) {
      execFileSync("mkdir", ["-p", path.dirname(path.join(dir, "root", p))]);
      writeFileSync(path.join(dir, "root", p), content);
    }
    execFileSync("tar", ["-czf", path.join(dir, "a.tar.gz"), "-C", path.join(dir, "root"), "."]);
    return readFileSync(path.join(dir, "a.tar.gz"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `script` in busybox with `volumes` until it exits; returns its output lines. */
async function run(name, script, volumes) {
  const created = await client.instances.create({
    name,
    image: `${registry.host}/vm/busybox:1`,
    vcpus: 1,
    size: "256MB",
    entrypoint: ["/bin/busybox"],
    cmd: ["sh", "-c", script],
    volumes,
  });
  assert.equal(await waitStopped(client, created.id), "Stopped");
  const done = await client.instances.get(created.id);
  const lines = await logLines(client, created.id);
  assert.equal(done.exit_code, 0, lines.join("\n"));
  return { instance: done, lines };
}

describe("volumes", () => {
  test("an archive's files in a read-only volume and an overlay that leaves the base unchanged", { timeout: 400_000 }, async () => {
    const seed = await client.volumes.createFromArchive(tarGz({ "hello.txt": "hello from a volume\n", "sub/deep.txt": "deep\n" }), {
      name: "seed",
      size_gb: 1,
    });
    assert.equal(seed.name, "seed");
    assert.equal(seed.size_gb, 1);
    assert.deepEqual(seed.attachments, []);

    // Overlay: the guest writes over the volume; the writes land on its own disk.
    const writer = await run(
      "vol-overlay",
      "cat /data/hello.txt; echo overlay-write > /data/hello.txt; cat /data/hello.txt /data/sub/deep.txt",
      [{ volume_id: seed.id, mount_path: "/data", readonly: true, overlay: true, overlay_size: "64MB" }],
    );
    const out = writer.lines.filter((l) => !l.includes("["));
    assert.deepEqual(out.slice(0, 3), ["hello from a volume", "overlay-write", "deep"], writer.lines.join("\n"));
    assert.deepEqual(writer.instance.volumes, [
      { mount_path: "/data", overlay: true, overlay_size: "64.0 MB", readonly: true, volume_id: seed.id },
    ]);

    // A second read-only attachment sees the base as it was, and cannot write.
    const reader = await run("vol-reader", "cat /data/hello.txt; touch /data/x 2>/dev/null || echo read-only", [
      { volume_id: seed.id, mount_path: "/data", readonly: true },
    ]);
    assert.deepEqual(reader.lines.filter((l) => !l.includes("[")).slice(0, 2), ["hello from a volume", "read-only"], reader.lines.join("\n"));

    const attached = await client.volumes.get(seed.id);
    assert.deepEqual(
      attached.attachments.map((a) => [a.instance_id, a.mount_path, a.readonly]).sort(),
      [[writer.instance.id, "/data", true], [reader.instance.id, "/data", true]].sort(),
    );
    // An attached volume is not deleted.
    const busy = await apiError(client.volumes.delete(seed.id));
    assert.equal(busy.status, 409);
    assert.match(busy.message, new RegExp(`volume ${seed.id} is attached to instance`));
  });

  test("a read-write volume keeps what a guest wrote; a second writer is refused", { timeout: 400_000 }, async () => {
    const work = await client.volumes.create({ name: "work", size_gb: 1, id: "work-vol" });
    assert.equal(work.id, "work-vol");
    const writer = await run("vol-writer", "echo persisted > /work/f && cat /work/f", [
      { volume_id: "work-vol", mount_path: "/work", readonly: false },
    ]);
    assert.ok(writer.lines.includes("persisted"), writer.lines.join("\n"));

    const second = await apiError(
      client.instances.create({ name: "vol-second", image: `${registry.host}/vm/busybox:1`, volumes: [{ volume_id: "work-vol", mount_path: "/work" }] }),
    );
    assert.equal(second.status, 409);
    assert.match(second.message, /already attached to instance .* read-write/);

    await client.instances.delete(writer.instance.id);
    const later = await run("vol-later", "cat /work/f", [{ volume_id: "work-vol", mount_path: "/work", readonly: true }]);
    assert.ok(later.lines.includes("persisted"), later.lines.join("\n"));
    await client.instances.delete(later.instance.id);
    await client.volumes.delete("work-vol");
    assert.equal((await apiError(client.volumes.get("work-vol"))).status, 404);
  });

  test("bad volumes are clear 4xx errors and leave nothing behind", async () => {
    const missing = await apiError(
      client.instances.create({ name: "vol-missing", image: `${registry.host}/vm/busybox:1`, volumes: [{ volume_id: "nope", mount_path: "/x" }] }),
    );
    assert.deepEqual(missing, { status: 404, code: "not_found", message: "volume nope not found" });
    const evil = await apiError(client.volumes.createFromArchive(tarGzRaw("../escape.txt"), { name: "evil", size_gb: 1 }));
    assert.equal(evil.status, 400);
    assert.match(evil.message, /invalid archive: .*escapes/);
    const tooBig = await apiError(client.volumes.create({ name: "big", size_gb: 5000 }));
    assert.deepEqual(tooBig, { status: 400, code: "invalid_request", message: "invalid request: size_gb must be between 1 and 1024" });
    assert.deepEqual((await client.volumes.list()).map((v) => v.name), ["seed"]);
  });
});

/** A tar.gz with one entry named exactly `name` (even `../x`), written by hand. */
function tarGzRaw(name) {
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write("0000644\0", 100);
  header.write("0000000\0", 108);
  header.write("0000000\0", 116);
  header.write("00000000001\0", 124);
  header.write("00000000000\0", 136);
  header.write("        ", 148);
  header.write("0", 156);
  header.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  const body = Buffer.alloc(512);
  body.write("x");
  const tar = Buffer.concat([header, body, Buffer.alloc(1024)]);
  return execFileSync("gzip", ["-c"], { input: tar });
}
