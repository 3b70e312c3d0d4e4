// Secret references (op://, keychain:, cmd:) run programs and read keychain items as the user
// at this machine, so only that user may set them: a client of the engine's Unix socket
// running as the engine's OS user (the desktop window through its shell, `hypedeck rotate`).
// A token holder over HTTP may be anywhere (an SSH tunnel or a TLS proxy ends on loopback
// too) and is refused, unless the engine was started with --allow-http-secret-references.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";

import { binary, startServer } from "./harness.mjs";

const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const root = process.getuid?.() === 0;

/** One request to the engine's Unix socket. */
function local(server, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: path.join(server.dataDir, "api.sock"),
        method,
        path: urlPath,
        headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      },
      (res) => {
        let text = "";
        res.on("data", (d) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, json: text ? JSON.parse(text) : null }));
      },
    );
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** A command reference that leaves `marker` behind when it runs, and prints `value`. */
const leaving = (marker, value) => `cmd:sh -c touch\${IFS}${marker};echo\${IFS}${value}`;

const agent = (name, value) => ({
  name,
  image: "alpine",
  env: { OPENAI_KEY: value },
  network: { egress: { enabled: true } },
  credentials: { OPENAI: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["api.openai.com"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
});

test("references: refused over HTTP, set by the user at this machine over the Unix socket", async () => {
  const server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
  try {
    const client = server.client();
    const marker = path.join(server.dataDir, "ran-over-http");
    await assert.rejects(client.instances.create(agent("remote", leaving(marker, "sk-remote"))), (e) =>
      e instanceof Hypeman.BadRequestError && /only by the user at this machine/.test(e.error.message));
    assert.equal(existsSync(marker), false, "a token holder over HTTP ran a command on the host");
    assert.deepEqual(await client.instances.list(), []);

    // The Unix socket: the same request is the user's own, and runs.
    const ranLocally = path.join(server.dataDir, "ran-locally");
    const created = await local(server, "POST", "/instances", agent("mine", leaving(ranLocally, "sk-local")));
    assert.equal(created.status, 201, JSON.stringify(created.json));
    assert.ok(existsSync(ranLocally));
    assert.equal(created.json.env.OPENAI_KEY, leaving(ranLocally, "sk-local"), "the reference is shown, not its value");

    // Never Hypedeck's own keychain items, not even for the user.
    const own = await local(server, "PATCH", "/instances/mine", { env: { OPENAI_KEY: "keychain:hypedeck/api-token" } });
    assert.equal(own.status, 400);
    assert.match(own.json.message, /cannot be referenced/);

    // A failing command's error has its exit status, not what it printed or its arguments.
    const failing = await local(server, "PATCH", "/instances/mine", { env: { OPENAI_KEY: "cmd:sh -c echo${IFS}sk-leak;echo${IFS}oops>&2;exit${IFS}4" } });
    assert.equal(failing.status, 400);
    assert.equal(failing.json.message, "secret reference cmd:sh …: failed (exit status: 4)");

    // `hypedeck rotate`: the value from stdin (never argv), or a reference with --from.
    const rotate = (args, input) =>
      spawnSync(FAKE_BIN, ["--data-dir", server.dataDir, "rotate", "mine", "OPENAI_KEY", ...args], { input, encoding: "utf8" });
    let out = rotate([], "sk-from-stdin\n");
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stdout, /^rotated OPENAI_KEY of mine \(fingerprint [0-9a-f]{16}\)/);
    assert.ok(!out.stdout.includes("sk-from-stdin"));
    assert.equal((await client.instances.get("mine")).env.OPENAI_KEY, "sk-from-stdin");
    out = rotate(["--from", "cmd:echo sk-from-cli"]);
    assert.equal(out.status, 0, out.stderr);
    assert.equal((await client.instances.get("mine")).env.OPENAI_KEY, "cmd:echo sk-from-cli");

    // Re-running a stored reference over HTTP is refused too.
    const credentials = await fetch(`${server.url}/instances/mine/credentials/OPENAI/resolve`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.token}` },
    });
    assert.equal(credentials.status, 400);

    if (root) {
      // Another OS user who can reach the socket file is still not the user: the engine
      // closes the connection before reading a byte.
      chmodSync(server.dataDir, 0o755);
      chmodSync(path.join(server.dataDir, "api.sock"), 0o666);
      const probe = spawnSync("runuser", ["-u", "nobody", "--", process.execPath, "-e", `
        const s = require("node:net").connect(${JSON.stringify(path.join(server.dataDir, "api.sock"))});
        s.on("connect", () => s.write("GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"));
        let got = ""; s.on("data", (d) => (got += d));
        s.on("close", () => { console.log(JSON.stringify(got)); });
        s.on("error", (e) => console.log("error " + e.code));`], { encoding: "utf8", timeout: 10_000 });
      // It reached the socket (so the engine, not file permissions, refused it) and got nothing.
      assert.doesNotMatch(probe.stdout, /EACCES|ENOENT|ECONNREFUSED/, probe.stderr);
      assert.doesNotMatch(probe.stdout, /HTTP\//, `another user got an answer: ${probe.stdout}`);
      assert.match(probe.stdout, /""|EPIPE|ECONNRESET/, probe.stderr);
    }
  } finally {
    await server.stop();
  }
});

test("references: an engine started with --allow-http-secret-references takes them over HTTP", async () => {
  const server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake", "--allow-http-secret-references"] });
  try {
    assert.match(server.output(), /--allow-http-secret-references: any holder of the API token/);
    const created = await server.client().instances.create(agent("opted-in", "cmd:echo sk-opted-in"));
    assert.equal(created.env.OPENAI_KEY, "cmd:echo sk-opted-in");
  } finally {
    await server.stop();
  }
});
