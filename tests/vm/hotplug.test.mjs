// Real VMs: what is plugged into a running guest. A volume attached to a running instance is
// mounted by the guest (found by its disk's serial) and readable and writable at once; a volume
// in use stays attached (409); detached, its disk and mount are gone from the guest. A guest
// saved with a volume attached while it ran restores with it (same PCIe port), and the next
// cold start mounts it at boot. Memory hotplug: `hotplug_size` is plugged as a DIMM right
// after boot and onlined by the guest, and stays through a standby and restore.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { apiError, execWs } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { state: "Running", timeout: "240s" };
const MiB = 2 ** 20;
let s;
vmSuite((fixtures) => (s = fixtures));

function tarGz(files) {
  const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-vol-"));
  try {
    for (const [p, content] of Object.entries(files)) {
      writeFileSync(path.join(dir, p), content);
    }
    execFileSync("tar", ["-czf", path.join(dir, "a.tar.gz"), "-C", dir, ...Object.keys(files)]);
    return readFileSync(path.join(dir, "a.tar.gz"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function exec(id, line) {
  return execWs(s.server.url, s.client.apiKey, id, { command: ["/bin/busybox", "sh", "-c", line] });
}

async function sh(id, line) {
  const { output, exitCode } = await exec(id, line);
  assert.equal(exitCode, 0, `${line}: ${output}`);
  return output.trim();
}

async function sleeper(name, extra = {}) {
  const i = await s.client.instances.create(
    {
      name,
      image: `${s.registry.host}/vm/busybox:1`,
      vcpus: 1,
      size: "256MB",
      entrypoint: ["/bin/sh", "-c"],
      cmd: ["while true; do sleep 1; done"],
      ...extra,
    },
    { timeout: 240_000 },
  );
  await s.client.instances.wait(i.id, BOOT, { timeout: 250_000 });
  return i;
}

const disks = async (id) => (await sh(id, "ls /sys/block")).split(/\s+/).filter((d) => d.startsWith("vd")).sort();

describe("hotplug", () => {
  test("a volume attached to a running guest is mounted at once, and detached is gone", { timeout: 900_000 }, async () => {
    const boot = await s.client.volumes.createFromArchive(tarGz({ "boot.txt": "from boot\n" }), { name: "boot", size_gb: 1 });
    const hot = await s.client.volumes.createFromArchive(tarGz({ "hello.txt": "hot hello\n" }), { name: "hot", size_gb: 1 });
    const i = await sleeper("plugged", { volumes: [{ volume_id: boot.id, mount_path: "/boot-vol", readonly: true }] });
    const before = await disks(i.id);
    assert.equal(before.length, 4, `root, overlay, config and the boot volume: ${before}`);

    // Attached by name, read-write: mounted before the call returns.
    const attached = await s.client.instances.volumes.attach("hot", { id: i.id, mount_path: "/mnt/hot" });
    assert.deepEqual(
      attached.volumes.map((v) => [v.volume_id, v.mount_path, v.readonly ?? false]),
      [[boot.id, "/boot-vol", true], [hot.id, "/mnt/hot", false]],
    );
    assert.equal(await sh(i.id, "cat /mnt/hot/hello.txt"), "hot hello");
    assert.equal(await sh(i.id, "echo written > /mnt/hot/w && sync && cat /mnt/hot/w"), "written");
    assert.equal(await sh(i.id, "cat /boot-vol/boot.txt"), "from boot", "the boot volume is untouched");
    const plugged = await disks(i.id);
    assert.equal(plugged.length, 5, `${plugged}`);
    assert.match(await sh(i.id, "grep ' /mnt/hot ' /proc/mounts"), /^\/dev\/vd[a-z] \/mnt\/hot ext4 rw/);
    assert.deepEqual(
      (await s.client.volumes.get(hot.id)).attachments.map((a) => [a.instance_id, a.mount_path]),
      [[i.id, "/mnt/hot"]],
    );

    // Upstream's rules on a running instance.
    const twice = await apiError(s.client.instances.volumes.attach(hot.id, { id: i.id, mount_path: "/mnt/again" }));
    assert.equal(twice.status, 409);
    assert.match(twice.message, /already attached to this instance at \/mnt\/hot/);
    const spare = await s.client.volumes.create({ name: "spare", size_gb: 1 });
    const system = await apiError(s.client.instances.volumes.attach(spare.id, { id: "plugged", mount_path: "/etc" }));
    assert.equal(system.status, 400);
    assert.match(system.message, /cannot mount to system directory "\/etc"/);

    // In use (a process's working directory): refused, and still mounted.
    const busy = exec(i.id, "cd /mnt/hot && sleep 25");
    await new Promise((r) => setTimeout(r, 3000));
    const inUse = await apiError(s.client.instances.volumes.detach(hot.id, { id: i.id }));
    assert.equal(inUse.status, 409, JSON.stringify(inUse));
    assert.match(inUse.message, /\/mnt\/hot is in use in the guest/);
    assert.equal((await busy).exitCode, 0);
    assert.equal(await sh(i.id, "cat /mnt/hot/w"), "written");

    // Detached: the mount and the disk are gone from the guest, and the volume is free.
    const detached = await s.client.instances.volumes.detach(hot.id, { id: i.id });
    assert.deepEqual(detached.volumes.map((v) => v.volume_id), [boot.id]);
    assert.equal(await sh(i.id, "grep -c ' /mnt/hot ' /proc/mounts || true"), "0");
    assert.deepEqual(await disks(i.id), before);
    assert.deepEqual((await s.client.volumes.get(hot.id)).attachments, []);

    // Attached again (read-only), it survives a standby and restore on its port, and a cold
    // start mounts it at boot.
    await s.client.instances.volumes.attach(hot.id, { id: i.id, mount_path: "/mnt/hot", readonly: true });
    assert.equal(await sh(i.id, "cat /mnt/hot/w"), "written", "what the guest wrote is on the volume");
    assert.match(await sh(i.id, "grep ' /mnt/hot ' /proc/mounts"), / ext4 ro/);
    await s.client.instances.standby(i.id);
    await s.client.instances.restore(i.id);
    assert.equal(await sh(i.id, "cat /mnt/hot/w /boot-vol/boot.txt"), "written\nfrom boot");
    await s.client.instances.stop(i.id);
    await s.client.instances.start(i.id, {});
    await s.client.instances.wait(i.id, BOOT, { timeout: 250_000 });
    assert.equal(await sh(i.id, "cat /mnt/hot/w /boot-vol/boot.txt"), "written\nfrom boot");

    // Detached after the cold start too (its disk was attached at boot).
    await s.client.instances.volumes.detach(hot.id, { id: i.id });
    assert.deepEqual(await disks(i.id), before);
    await s.client.instances.delete(i.id);
  });

  test("hotplug_size is plugged right after boot and the guest uses it, through a standby", { timeout: 600_000 }, async () => {
    const memTotal = async (id) => Number((await sh(id, "grep MemTotal /proc/meminfo")).match(/(\d+) kB/)[1]) * 1024;
    const plain = await sleeper("fixed");
    const fixed = await memTotal(plain.id);
    await s.client.instances.delete(plain.id);

    const i = await sleeper("growing", { hotplug_size: "256MB" });
    assert.equal(i.hotplug_size, "256.0 MB");
    // The DIMM is onlined as it arrives; the guest's total grows by it (less the page
    // structures the kernel keeps for it).
    const grown = fixed + 160 * MiB;
    let total = 0;
    for (let t = 0; t < 60 && total < grown; t++) {
      total = await memTotal(i.id);
      if (total < grown) await new Promise((r) => setTimeout(r, 1000));
    }
    const blocks = await sh(i.id, "cat /sys/devices/system/memory/memory*/state | sort | uniq -c");
    assert.ok(total >= grown, `MemTotal ${total / MiB} MiB, ${fixed / MiB} MiB without hotplug; memory blocks: ${blocks}`);
    assert.doesNotMatch(blocks, /offline/, blocks);
    assert.match(await sh(i.id, "cat /sys/devices/system/memory/auto_online_blocks"), /online_movable/);
    // The memory is really usable: 280 MiB in tmpfs does not fit in the 256 MiB guest.
    await sh(i.id, "mkdir -p /fill && mount -t tmpfs -o size=400m tmpfs /fill && dd if=/dev/zero of=/fill/f bs=1048576 count=280 2>/dev/null && rm /fill/f && umount /fill");
    const stats = await (await fetch(`${s.server.url}/instances/${i.id}/stats`, { headers: { Authorization: `Bearer ${s.client.apiKey}` } })).json();
    assert.equal(stats.allocated_memory_bytes, 512 * MiB);

    // A restore brings the DIMM back (the saved devices include it).
    await s.client.instances.standby(i.id);
    await s.client.instances.restore(i.id);
    assert.equal(await memTotal(i.id), total);
    await s.client.instances.delete(i.id);
  });
});
