// Real VMs: exec over upstream's WebSocket framing (first text frame ExecRequest, binary
// stdio, final {"exitCode":N}) and stat. Shared by exec.test.mjs (the agent on a virtio-serial
// port) and exec-vsock.test.mjs (the agent on vsock, through vhost-user-vsock's hybrid socket).
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { execWs, startServer, waitFor } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

/**
 * Registers the exec suite. `channel` is what guest init must report serving exec over
 * (a regexp), `env` the engine's extra environment, `standby` whether the backend can save
 * the VM (when not, standby must be a clear 400).
 */
export function execSuite({ channel, env = {}, standby = true }) {
  let registry;
  let client;
  let server;
  let dataDir;
  let token;
  let running;

  const suite = vmSuite((s) => ({ registry, client, server, dataDir } = s), { env });

  /** One exec session against the current engine (see execWs). */
  const exec = (id, request, input = []) => execWs(server.url, token, id, request, input);

  describe(`exec and stat (${channel.source})`, () => {
    before(async () => {
      token = client.apiKey;
      running = await client.instances.create({
        name: "exec-target",
        image: `${registry.host}/vm/busybox:1`,
        vcpus: 1,
        size: "256MB",
        entrypoint: ["/bin/busybox"],
        cmd: ["sleep", "600"],
        env: { FROM_INSTANCE: "yes" },
      });
      await client.instances.wait(running.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    });

    test("the agent serves the expected channel", () => {
      const log = readFileSync(path.join(dataDir, "instances", running.id, "logs", "app.log"), "utf8");
      assert.match(log, new RegExp(`serving exec over ${channel.source}`, "m"));
    });

    test("output, exit codes, stderr, env and cwd", { timeout: 120_000 }, async () => {
      assert.deepEqual(await exec(running.id, { command: ["echo", "hello", "from", "exec"] }), {
        output: "hello from exec\n",
        exitCode: 0,
      });
      assert.deepEqual(await exec(running.id, { command: ["sh", "-c", "exit 3"] }), { output: "", exitCode: 3 });
      const both = await exec(running.id, { command: ["sh", "-c", "echo out; echo err >&2"] });
      assert.equal(both.exitCode, 0);
      assert.deepEqual(both.output.split("\n").filter(Boolean).sort(), ["err", "out"]);
      const env = await exec(running.id, {
        command: ["sh", "-c", 'echo "$FOO $FROM_INSTANCE $(pwd)"'],
        env: { FOO: "bar" },
        cwd: "/app",
      });
      assert.deepEqual(env, { output: "bar yes /app\n", exitCode: 0 });
      // By name as well as by id; a missing program is upstream's 127 with an Error line.
      assert.deepEqual(await exec("exec-target", { command: ["no-such-program"] }), {
        output: "Error: no-such-program: command not found\r\n",
        exitCode: 127,
      });
    });

    test("stdin, and a terminal that follows resizes", { timeout: 120_000 }, async () => {
      // An empty binary frame closes stdin, so cat ends.
      const cat = await exec(running.id, { command: ["cat"] }, [Buffer.from("ping over stdin\n"), Buffer.alloc(0)]);
      assert.deepEqual(cat, { output: "ping over stdin\n", exitCode: 0 });

      const size = await exec(running.id, { command: ["stty", "size"], tty: true, rows: 40, cols: 100 });
      assert.equal(size.exitCode, 0);
      assert.equal(size.output.trim(), "40 100");

      const resized = await exec(running.id, { command: ["sh", "-c", "read line; stty size"], tty: true, rows: 24, cols: 80 }, [
        { resize: { rows: 50, cols: 132 } },
        Buffer.from("go\r"),
      ]);
      assert.equal(resized.exitCode, 0);
      assert.match(resized.output, /50 132/);
    });

    test("stat describes guest paths", async () => {
      const file = await client.instances.stat(running.id, { path: "/app/run.sh" });
      assert.equal(file.exists, true);
      assert.equal(file.is_file, true);
      assert.equal(file.mode, 0o755);
      const link = await client.instances.stat(running.id, { path: "/bin/sh" });
      assert.deepEqual([link.is_symlink, link.link_target], [true, "busybox"]);
      const followed = await client.instances.stat(running.id, { path: "/bin/sh", follow_links: true });
      assert.equal(followed.is_file, true);
      assert.deepEqual(await client.instances.stat(running.id, { path: "/nope" }), { exists: false });
    });

    test("exec works again after the engine is killed and restarted", { timeout: 120_000 }, async () => {
      assert.deepEqual(await exec(running.id, { command: ["echo", "before"] }), { output: "before\n", exitCode: 0 });
      await server.stop("SIGKILL");
      server = await startServer(path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck"), dataDir, env);
      client = server.client();
      Object.assign(suite, { server, client }); // stopped and cleaned by the suite's after()
      assert.equal((await client.instances.get(running.id)).state, "Running");
      assert.deepEqual(await exec(running.id, { command: ["sh", "-c", "echo after; exit 4"] }), { output: "after\n", exitCode: 4 });
    });

    if (!standby) {
      // The vsock port is reachable by any process on a host with kernel vsock; only the
      // engine knows the instance's agent key, and a link that does not start with it is
      // closed by the guest before anything runs.
      test("a vsock link without the instance's agent key is closed and runs nothing", { timeout: 60_000 }, async () => {
        const frame = (kind, session, payload) => {
          const body = Buffer.concat([Buffer.from([kind]), Buffer.from([0, 0, 0, session]), payload]);
          const len = Buffer.alloc(4);
          len.writeUInt32BE(body.length);
          return Buffer.concat([len, body]);
        };
        const attempt = (first) =>
          new Promise((resolve, reject) => {
            const socket = net.connect(path.join(dataDir, "instances", running.id, "run", "vsock.sock"));
            let got = Buffer.alloc(0);
            let connected = false;
            socket.on("connect", () => socket.write("CONNECT 1024\n"));
            socket.on("data", (d) => {
              got = Buffer.concat([got, d]);
              if (!connected && got.includes(0x0a)) {
                connected = true;
                assert.match(got.toString("latin1"), /^OK /);
                got = got.subarray(got.indexOf(0x0a) + 1);
                const open = frame(10, 7, Buffer.from(JSON.stringify({ command: ["sh", "-c", "touch /tmp/no-key; echo ran"] })));
                socket.write(first ? Buffer.concat([first, open]) : open);
              }
            });
            socket.on("close", () => resolve(got));
            socket.on("error", reject);
            setTimeout(() => socket.destroy(), 5_000);
          });
        const wrongKey = await attempt(frame(3, 0, Buffer.from("0".repeat(64))));
        const noKey = await attempt(null);
        assert.equal(noKey.length, 0, "the agent answered a link without the key");
        assert.equal(wrongKey.length, 0, "the agent answered a link with a wrong key");
        assert.deepEqual(await exec(running.id, { command: ["sh", "-c", "test -e /tmp/no-key && echo ran || echo nothing"] }), {
          output: "nothing\n",
          exitCode: 0,
        });
      });

      test("standby is refused with a clear 400 and the instance keeps running", async () => {
        await assert.rejects(
          client.instances.standby(running.id),
          (e) => e.status === 400 && e.error.code === "not_supported" && /standby is not supported/.test(e.error.message),
        );
        assert.equal((await client.instances.get(running.id)).state, "Running");
        assert.deepEqual(await exec(running.id, { command: ["echo", "still"] }), { output: "still\n", exitCode: 0 });
      });
    }

    if (standby) {
      // While saved the guest's clock stands still; after a restore the engine sets it to the
      // host's through the agent (without that it runs behind by the time spent in standby).
      test("after a restore the guest's clock is within 2 s of the host's", { timeout: 240_000 }, async () => {
        const skew = async () => {
          const before = Date.now() / 1000;
          const { output, exitCode } = await exec(running.id, { command: ["date", "+%s"] });
          const after = Date.now() / 1000;
          assert.equal(exitCode, 0, output);
          const guest = Number(output.trim());
          // `date +%s` truncates to the second: compare with the host's window around the call.
          return guest < before - 1 ? before - 1 - guest : guest > after ? guest - after : 0;
        };
        assert.ok((await skew()) <= 2, "the guest's clock was off before standby");
        await client.instances.standby(running.id);
        const saved = Date.now();
        // Long enough that a clock left standing would be far off.
        await new Promise((r) => setTimeout(r, 12_000));
        await client.instances.restore(running.id);
        // The engine sets the clock in the background once the agent answers again.
        let off = Infinity;
        await waitFor(async () => (off = await skew()) <= 2, "the guest's clock to be set", 30_000).catch(() => {});
        assert.ok(off <= 2, `the guest's clock is ${off.toFixed(1)} s off the host's after ${((Date.now() - saved) / 1000).toFixed(0)} s in standby`);
        const log = readFileSync(path.join(dataDir, "instances", running.id, "logs", "hypeman.log"), "utf8");
        assert.match(log, /guest clock set to the host's/);
      });
    }

    test("exec and stat on a stopped instance are 409 before any upgrade", { timeout: 120_000 }, async () => {
      await client.instances.stop(running.id);
      const refused = await exec(running.id, { command: ["true"] });
      assert.deepEqual(refused, {
        status: 409,
        body: { code: "invalid_state", message: "instance must be running (current state: Stopped)" },
      });
      await assert.rejects(client.instances.stat(running.id, { path: "/" }), (e) => e.status === 409 && e.error.code === "invalid_state");
    });
  });
}
