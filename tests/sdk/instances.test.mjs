// The official TS SDK (@onkernel/hypeman) against a real `hypedeck serve`.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import Hypeman from "@onkernel/hypeman";
import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const REAL_BIN = binary("HYPEDECK_BIN", "target/debug/hypedeck");

async function rejects(promise, ErrorClass, status, code, message) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof ErrorClass, `expected ${ErrorClass.name}, got ${e?.constructor?.name}: ${e}`);
    assert.equal(e.status, status);
    assert.equal(e.error.code, code);
    if (message instanceof RegExp) assert.match(e.error.message, message);
    else if (message !== undefined) assert.equal(e.error.message, message);
    return true;
  });
}

describe("hypedeck serve with the fake hypervisor", () => {
  let server;
  let client;
  before(async () => {
    server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
    client = server.client();
  });
  after(async () => server?.stop());

  test("health answers without a token", async () => {
    const anonymous = new Hypeman({ baseURL: server.url, apiKey: "", maxRetries: 0 });
    assert.deepEqual(await anonymous.health.check(), { status: "ok" });
  });

  test("a wrong token is 401 with upstream's body", async () => {
    const wrong = server.client({ apiKey: "hdk_wrong" });
    await rejects(wrong.instances.list(), Hypeman.AuthenticationError, 401, "Unauthorized",
      "security requirements failed: invalid token");
  });

  test("create, list, get (id, name, prefix), delete", async () => {
    assert.deepEqual(await client.instances.list(), []);
    const created = await client.instances.create({
      name: "sdk-web",
      image: "docker.io/library/alpine:latest",
      size: "2GB",
      vcpus: 1,
      tags: { team: "sdk" },
      env: { PORT: "3000" },
    });
    assert.match(created.id, /^[a-z][a-z0-9]{23}$/);
    assert.equal(created.name, "sdk-web");
    assert.equal(created.state, "Running");
    assert.equal(created.size, "2.0 GB");
    assert.equal(created.overlay_size, "10.0 GB");
    assert.equal(created.hotplug_size, "0 B");
    assert.equal(created.vcpus, 1);
    assert.deepEqual(created.env, { PORT: "3000" });
    assert.equal(created.exit_code, null);

    for (const key of [created.id, "sdk-web", created.id.slice(0, 6)]) {
      const got = await client.instances.get(key);
      assert.equal(got.id, created.id, key);
    }
    const listed = await client.instances.list({ state: "Running", tags: { team: "sdk" } });
    assert.deepEqual(listed.map((i) => i.id), [created.id]);
    assert.deepEqual(await client.instances.list({ tags: { team: "other" } }), []);

    assert.equal(await client.instances.delete(created.id), null);
    await rejects(client.instances.get(created.id), Hypeman.NotFoundError, 404, "not_found", "resource not found");
    await rejects(client.instances.delete(created.id), Hypeman.NotFoundError, 404, "not_found");
  });

  test("validation errors are 400 with upstream codes and nothing is created", async () => {
    await rejects(client.instances.create({ name: "Bad_Name", image: "alpine" }), Hypeman.BadRequestError, 400,
      "Bad Request", /Error at "\/name": string doesn't match the regular expression/);
    await rejects(client.instances.create({ name: "a", image: "alpine", size: "lots" }), Hypeman.BadRequestError, 400,
      "invalid_size", 'invalid size format: strconv.UnmarshalText: parsing "lots": invalid syntax');
    await rejects(client.instances.create({ name: "a", image: "alpine", network: { bandwidth_download: "fast" } }),
      Hypeman.BadRequestError, 400, "invalid_bandwidth_download", /^invalid bandwidth_download format: /);
    await rejects(client.instances.create({
      name: "a", image: "alpine", network: { egress: { enabled: true } },
      credentials: { KEY: { source: { env: "KEY" }, inject: [{ as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    }), Hypeman.BadRequestError, 400, "invalid_request",
      'invalid request: credentials["KEY"].source.env "KEY" must be present in env');
    assert.deepEqual(await client.instances.list(), []);
  });

  test("resources report host capacity and what running instances reserve", async () => {
    const a = await client.instances.create({ name: "sized", image: "alpine", vcpus: 3, size: "512MB" });
    const res = await client.resources.get();
    assert.ok(res.cpu.capacity >= 1);
    assert.equal(res.cpu.allocated, 3);
    assert.equal(res.memory.allocated, 512 * 1024 * 1024);
    assert.deepEqual(res.allocations.map((x) => x.instance_name), ["sized"]);
    await client.instances.delete(a.id);
  });

  test("duplicate names are 400 name_conflict", async () => {
    const a = await client.instances.create({ name: "dup", image: "alpine" });
    await rejects(client.instances.create({ name: "dup", image: "alpine" }), Hypeman.BadRequestError, 400,
      "name_conflict", 'instance name "dup" already exists');
    await client.instances.delete(a.id);
  });

  test("PATCH rotates a credential source value and refuses other keys", async () => {
    const agent = await client.instances.create({
      name: "sdk-agent",
      image: "alpine",
      env: { OUTBOUND_OPENAI_KEY: "sk-sdk-first", PORT: "3000" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        OUTBOUND_OPENAI_KEY: {
          source: { env: "OUTBOUND_OPENAI_KEY" },
          inject: [{ hosts: ["api.openai.com"], as: { header: "Authorization", format: "Bearer ${value}" } }],
        },
      },
    });
    await rejects(client.instances.update(agent.id, { env: { PORT: "4000" } }), Hypeman.BadRequestError, 400,
      "invalid_request",
      "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OUTBOUND_OPENAI_KEY]");
    await rejects(client.instances.update(agent.id, { env: {} }), Hypeman.BadRequestError, 400, "Bad Request",
      /there must be at least 1 properties/);
    const rotated = await client.instances.update("sdk-agent", { env: { OUTBOUND_OPENAI_KEY: "sk-sdk-rotated" } });
    assert.equal(rotated.env.OUTBOUND_OPENAI_KEY, "sk-sdk-rotated");
    assert.equal(rotated.env.PORT, "3000");
    assert.equal((await client.instances.get(agent.id)).env.OUTBOUND_OPENAI_KEY, "sk-sdk-rotated");
    await rejects(client.instances.update("nope", { env: { A: "b" } }), Hypeman.NotFoundError, 404, "not_found");
    await client.instances.delete(agent.id);
  });

  test("the real value never lands in the data dir", async () => {
    const { readdirSync, readFileSync, statSync } = await import("node:fs");
    const path = await import("node:path");
    const agent = await client.instances.create({
      name: "sdk-secret",
      image: "alpine",
      env: { KEY: "sk-sdk-must-not-be-on-disk" },
      network: { egress: { enabled: true } },
      credentials: { KEY: { source: { env: "KEY" }, inject: [{ as: { header: "X-Key", format: "${value}" } }] } },
    });
    const walk = (dir) => readdirSync(dir).flatMap((n) => {
      const p = path.join(dir, n);
      const st = statSync(p);
      return st.isDirectory() ? walk(p) : st.isFile() ? [p] : []; // not the engine's socket
    });
    for (const file of walk(server.dataDir)) {
      assert.ok(!readFileSync(file).toString().includes("sk-sdk-must-not-be-on-disk"), file);
    }
    assert.ok(!server.output().includes("sk-sdk-must-not-be-on-disk"));
    await client.instances.delete(agent.id);
  });
});

describe("hypedeck serve on a non-loopback address", () => {
  test("warns loudly that the API is reachable from other machines; loopback does not", async () => {
    const open = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"], listen: "0.0.0.0:0" });
    const local = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
    try {
      assert.match(open.output(), /WARNING: the Hypeman API listens on 0\.0\.0\.0:\d+, reachable from other machines/);
      assert.doesNotMatch(local.output(), /WARNING/);
      assert.ok(!open.output().includes(open.token));
    } finally {
      await open.stop();
      await local.stop();
    }
  });
});

describe("hypedeck serve without a VM backend", () => {
  let server;
  before(async () => {
    // The shipped binary on a host without QEMU (simulated by pointing at a missing binary).
    server = await startServer({ bin: REAL_BIN, env: { HYPEDECK_QEMU: "/nonexistent/qemu-system-x86_64" } });
  });
  after(async () => server?.stop());

  test("create says clearly that no hypervisor is available, and creates nothing", async () => {
    const client = server.client();
    await rejects(client.instances.create({ name: "x", image: "alpine" }), Hypeman.InternalServerError, 500,
      "dependency_missing",
      "no hypervisor is available on this host: /nonexistent/qemu-system-x86_64 was not found (install the Debian package qemu-system-x86)");
    assert.deepEqual(await client.instances.list(), []);
  });
});
