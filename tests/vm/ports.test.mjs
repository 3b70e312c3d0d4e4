// Real VMs: a guest TCP port forwarded to the host's loopback (`ports`, a Hypedeck extension in
// upstream's PortMapping shape), reached with plain HTTP from the host; conflicts are 409
// `port_in_use`; the forward follows stop, standby and restore.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { freePort } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const BOOT = { timeout: "240s" };

let registry;
let client;

vmSuite((s) => ({ registry, client } = s));

/** busybox httpd serving the image's /app on guest port 8080, forwarded to `hostPort`. */
function httpd(name, hostPort) {
  return client.instances.create({
    name,
    image: `${registry.host}/vm/busybox:1`,
    vcpus: 1,
    size: "256MB",
    entrypoint: ["/bin/busybox"],
    cmd: ["httpd", "-f", "-p", "8080", "-h", "/app"],
    ports: [{ host_port: hostPort, guest_port: 8080 }],
  });
}

/** GET through the forward, retried while the guest's server comes up. */
async function fetchForwarded(port, deadlineMs = 60_000) {
  const deadline = Date.now() + deadlineMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/run.sh`, { signal: AbortSignal.timeout(5000) });
      if (r.ok) return await r.text();
      last = new Error(`HTTP ${r.status}`);
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`nothing answered on 127.0.0.1:${port}: ${last?.cause?.code ?? last}`);
}

async function refused(port) {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(3000) });
    return false;
  } catch {
    return true;
  }
}

async function conflict(promise) {
  try {
    await promise;
  } catch (e) {
    return { status: e.status, ...e.error };
  }
  assert.fail("expected a 409");
}

describe("port forwarding", () => {
  test("a guest HTTP server is reached on 127.0.0.1, across standby and restore", { timeout: 300_000 }, async () => {
    const port = await freePort();
    const web = await httpd("fwd-web", port);
    assert.deepEqual(web.ports, [{ host_port: port, guest_port: 8080, protocol: "tcp" }]);
    await client.instances.wait(web.id, { state: "Running", ...BOOT }, { timeout: 250_000 });
    // The file comes out of the guest's root disk, over the forward.
    assert.match(await fetchForwarded(port), /hello from \$\(hostname\)/);
    assert.deepEqual((await client.instances.get(web.id)).ports, web.ports);

    // Another instance cannot take the port while this one runs.
    const taken = await conflict(httpd("fwd-web-2", port));
    assert.deepEqual(taken, {
      status: 409,
      code: "port_in_use",
      message: `host port ${port}/tcp is already in use by instance "fwd-web"`,
    });
    assert.equal((await client.instances.list()).length, 1);

    // Standby releases the port; restore binds it again, to the same guest.
    await client.instances.standby(web.id);
    assert.equal(await refused(port), true);
    await client.instances.restore(web.id);
    assert.match(await fetchForwarded(port), /hello from/);

    // Stop releases it for good.
    await client.instances.stop(web.id);
    assert.equal(await refused(port), true);
    await client.instances.delete(web.id);
  });

  test("a port another program holds is 409 port_in_use, and nothing is created", async () => {
    const squatter = createServer();
    await new Promise((r) => squatter.listen(0, "127.0.0.1", r));
    const port = squatter.address().port;
    try {
      const held = await conflict(httpd("fwd-held", port));
      assert.deepEqual(held, {
        status: 409,
        code: "port_in_use",
        message: `host port ${port}/tcp is already in use on 127.0.0.1 by another program`,
      });
      assert.deepEqual(await client.instances.list(), []);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  });
});
