// A boot that fails after provisioning leaves nothing behind: not the instance, not its keychain
// entries, and not its attachment to the egress proxy (a listener and rules holding the real
// credential). QEMU is the real one behind a wrapper that refuses one memory size, so the
// failure comes after the engine provisioned everything, as a VMM that cannot start would.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";
import { startRegistry, startServer, newDataDir, deleteAll } from "./harness.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const SECRET = "sk-failed-boot-value";

let registry, dataDir, server, client, wrapperDir;

/** TCP ports `pid` listens on (ss from iproute2). */
function listening(pid) {
  const out = execFileSync("ss", ["-Hltnp"]).toString();
  return out
    .split("\n")
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.trim().split(/\s+/)[3])
    .sort();
}

/** An instance whose credential the egress proxy injects. */
function agent(name, size) {
  return {
    name,
    image: `${registry.host}/vm/curl:1`,
    vcpus: 1,
    size,
    env: { API_TOKEN: SECRET },
    network: { egress: { enabled: true } },
    credentials: {
      API_TOKEN: { source: { env: "API_TOKEN" }, inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }] },
    },
  };
}

function keychainHas(value) {
  const out = execFileSync("secret-tool", ["search", "--all", "--unlock", "service", "hypedeck"], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  return out.includes(value);
}

before(async () => {
  wrapperDir = mkdtempSync(path.join(tmpdir(), "hypedeck-qemu-wrapper-"));
  const qemu = execFileSync("sh", ["-c", "command -v qemu-system-x86_64 || command -v qemu-system-aarch64"]).toString().trim();
  const wrapper = path.join(wrapperDir, path.basename(qemu));
  writeFileSync(
    wrapper,
    `#!/bin/sh\ncase " $* " in *" -m 320M "*) echo "qemu: refused by the test wrapper" >&2; exit 1;; esac\nexec ${qemu} "$@"\n`,
  );
  chmodSync(wrapper, 0o755);
  registry = await startRegistry();
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, { HYPEDECK_QEMU: wrapper, HYPEDECK_EGRESS_TEST_LISTENER: "1" });
  client = server.client();
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  if (wrapperDir) rmSync(wrapperDir, { recursive: true, force: true });
});

describe("a boot that fails after provisioning", () => {
  test("a failed create leaves no instance, no keychain entry and no proxy listener", async () => {
    const ports = listening(server.pid);
    const failed = await client.instances
      .create(agent("never-boots", "320MB"))
      .then(
        () => null,
        (e) => e,
      );
    assert.ok(failed instanceof Hypeman.APIError, `the create failed: ${failed}`);
    assert.equal(failed.status, 500);
    // The API says what upstream says; the engine's log has QEMU's reason.
    assert.match(server.output(), /refused by the test wrapper/);
    assert.deepEqual(await client.instances.list(), []);
    assert.equal(keychainHas(SECRET), false, "the credential stayed in the keychain");
    assert.deepEqual(listening(server.pid), ports, "a proxy listener outlived the failed create");
    assert.doesNotMatch(server.output(), new RegExp(SECRET));

    // The same request with a size the wrapper lets through boots: the failure was the VMM's.
    const ok = await client.instances.create(agent("boots", "256MB"));
    assert.equal(listening(server.pid).length, ports.length + 1, "the booted instance has its test listener");
    await client.instances.delete(ok.id);
    assert.deepEqual(listening(server.pid), ports);
  });
});
