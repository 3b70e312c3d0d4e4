// Real VMs through the `hypedeck` CLI (upstream's `hypeman` verbs): `run` pulls an image from a
// registry on 127.0.0.1 and boots it, `wait`, `ps`, `logs` (with `-f` following a guest that
// prints as it runs), `stop` and `rm`, each against `hypedeck serve` with a real QEMU guest.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { vmSuite } from "./suite.mjs";

const CLI = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
let s;
vmSuite((fixtures) => (s = fixtures));

const env = () => ({ ...process.env, HOME: "/nonexistent", HYPEMAN_BASE_URL: s.server.url, HYPEMAN_API_KEY: s.client.apiKey });
function cli(args, input) {
  const r = spawnSync(CLI, args, { env: env(), encoding: "utf8", timeout: 300_000, input });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("the CLI on real guests", () => {
  test("run, wait, ps, logs -f, stop and rm", { timeout: 600_000 }, async () => {
    const image = `${s.registry.host}/vm/busybox:1`;
    const run = cli([
      "run", image, "--name", "counter", "--cpus", "1", "--memory", "256MB",
      "--entrypoint", "/bin/sh", "--entrypoint", "-c",
      "--cmd", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
      "-l", "suite=cli",
    ]);
    assert.equal(run.code, 0, run.err);
    const id = run.out.trim();
    assert.match(id, /^[a-z0-9]{24}$/);
    assert.match(run.err, /Creating instance counter\.\.\./);
    const images = cli(["image", "ls"]);
    assert.match(images.out, new RegExp(`^NAME\\s+PLATFORM\\s+STATUS\\s+DIGEST\\s+SIZE\\s+CREATED\\n${image.replace(/[.:/]/g, "\\$&")}\\s+linux/amd64\\s+ready\\s+sha256:`, "m"), images.out);
    assert.equal(JSON.parse(cli(["image", "get", image]).out).status, "ready");
    const waited = cli(["wait", "counter", "--state", "Running", "--timeout", "240s"]);
    assert.equal(waited.out, "Running\n", waited.err);
    const ps = cli(["ps", "--tag", "suite=cli"]);
    assert.match(ps.out.split("\n")[1], new RegExp(`^${id.slice(0, 12)}\\s+counter\\s+${image.replace(/[.:/]/g, "\\$&")}\\s+Running\\s`));

    // -f follows: lines keep coming while the guest prints.
    const follow = spawn(CLI, ["logs", "-f", "--tail", "1", "counter"], { env: env() });
    let seen = "";
    follow.stdout.on("data", (d) => (seen += d));
    const ticks = () => [...seen.matchAll(/^tick-(\d+)$/gm)].map((m) => Number(m[1]));
    const deadline = Date.now() + 120_000;
    while (ticks().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
    follow.kill("SIGINT");
    const got = ticks();
    assert.ok(got.length >= 3, `followed lines: ${seen}`);
    assert.deepEqual(got, got.map((_, k) => got[0] + k), "consecutive lines, in order");

    const stop = cli(["stop", "counter"]);
    assert.equal(stop.code, 0, stop.err);
    assert.match(stop.err, /Stopped counter \(state: Stopped\)/);
    const rm = cli(["rm", "counter"]);
    assert.equal(rm.code, 0, rm.err);
    assert.equal(cli(["inspect", id]).code, 3);
  });

  test("exec: exit codes, stdin, and -it in a real terminal that follows a resize", { timeout: 600_000 }, async () => {
    const i = await s.client.instances.create({
      name: "shell", image: `${s.registry.host}/vm/busybox:1`, vcpus: 1, size: "256MB",
      entrypoint: ["/bin/sh", "-c"], cmd: ["while true; do sleep 1; done"],
    }, { timeout: 240_000 });
    await s.client.instances.wait(i.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });

    const seven = cli(["exec", "shell", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert.equal(seven.code, 7, seven.err);
    assert.match(seven.out, /out/);
    const cat = cli(["exec", "-T", "shell", "--", "/bin/cat"], "piped through\n");
    assert.equal(cat.code, 0, cat.err);
    assert.equal(cat.out, "piped through\n");
    const env = cli(["exec", "-e", "GREETING=hi", "--cwd", "/tmp", "shell", "--", "/bin/sh", "-c", "echo $GREETING $(pwd)"]);
    assert.equal(env.out.trim(), "hi /tmp");
    assert.equal(cli(["exec", "nope", "--", "true"]).code, 3);

    // -it through tmux: a real pseudo-terminal whose size the guest's shell sees, before and
    // after the window is resized; the shell's exit code comes back.
    const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-tty-"));
    const sock = path.join(dir, "tmux.sock");
    const script = path.join(dir, "run.sh");
    writeFileSync(script, [
      "#!/bin/sh",
      `export HYPEMAN_BASE_URL='${s.server.url}' HYPEMAN_API_KEY='${s.client.apiKey}' HOME=/nonexistent`,
      `'${CLI}' exec -it shell -- /bin/sh; echo "EXIT=$?" > '${path.join(dir, "code")}'`,
      "sleep 30",
      "",
    ].join("\n"), { mode: 0o700 });
    const tmux = (...args) => spawnSync("tmux", ["-S", sock, ...args], { encoding: "utf8" });
    try {
      assert.equal(tmux("new-session", "-d", "-x", "80", "-y", "24", script).status, 0);
      const screen = () => tmux("capture-pane", "-p").stdout;
      const until = async (re, what) => {
        const deadline = Date.now() + 60_000;
        while (!re.test(screen())) {
          if (Date.now() > deadline) {
            let code = "(still running)";
            try { code = readFileSync(path.join(dir, "code"), "utf8"); } catch {}
            assert.fail(`${what}: screen ${JSON.stringify(screen())}, exec ${code}`);
          }
          await new Promise((r) => setTimeout(r, 300));
        }
      };
      await until(/[#$]\s*$/m, "a prompt");
      tmux("send-keys", "stty size", "Enter");
      await until(/^24 80\s*$/m, "the first size");
      tmux("resize-window", "-x", "100", "-y", "30");
      await new Promise((r) => setTimeout(r, 1000));
      tmux("send-keys", "stty size", "Enter");
      await until(/^30 100\s*$/m, "the size after the resize");
      tmux("send-keys", "exit 3", "Enter");
      const deadline = Date.now() + 30_000;
      let code = "";
      while (!code && Date.now() < deadline) {
        try { code = readFileSync(path.join(dir, "code"), "utf8"); } catch { await new Promise((r) => setTimeout(r, 300)); }
      }
      assert.equal(code.trim(), "EXIT=3");
    } finally {
      tmux("kill-server");
      rmSync(dir, { recursive: true, force: true });
    }
    await s.client.instances.delete(i.id);
  });
});
