// Real VMs through the `hypedeck` CLI (upstream's `hypeman` verbs): `run` pulls an image from a
// registry on 127.0.0.1 and boots it, `wait`, `ps`, `logs` (with `-f` following a guest that
// prints as it runs), `stop` and `rm`, `exec` (also in a real terminal), `cp` both ways (also as
// tar streams), rotations from the CLI that reach a real HTTPS upstream through the egress proxy
// with no restart, and the lifecycle, volume, snapshot, fork, stats, auto-standby, health and
// resources verbs, each against `hypedeck serve` with a real QEMU guest.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { startRecordingUpstream, waitFor } from "./harness.mjs";
import { vmSuite } from "./suite.mjs";

const CLI = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
// An HTTPS upstream on 127.0.0.1 that records each request's Authorization, and a server whose
// egress proxy trusts its CA and may reach loopback (the guest's `https://localhost:<port>`).
const upstream = await startRecordingUpstream("hypedeck-cli-pki-");
after(() => upstream.close());
let s;
vmSuite((fixtures) => (s = fixtures), {
  env: { HYPEDECK_EGRESS_EXTRA_CA: upstream.pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1" },
});

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

  test("cp in and out of a guest, as files, trees and tar streams; a guest's links stay links", { timeout: 600_000 }, async () => {
    const i = await s.client.instances.create({
      name: "files", image: `${s.registry.host}/vm/busybox:1`, vcpus: 1, size: "256MB",
      entrypoint: ["/bin/sh", "-c"], cmd: ["while true; do sleep 1; done"],
    }, { timeout: 240_000 });
    await s.client.instances.wait(i.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-cp-"));
    try {
      // A tree with a 3 MiB file (more than the guest's 2 MiB send window), a mode to keep,
      // and a link, which is skipped without -L.
      const tree = path.join(dir, "tree");
      mkdirSync(path.join(tree, "sub"), { recursive: true });
      const big = randomBytes(3 << 20);
      writeFileSync(path.join(tree, "sub", "big.bin"), big);
      writeFileSync(path.join(tree, "run.sh"), "#!/bin/sh\necho ran\n", { mode: 0o750 });
      symlinkSync("run.sh", path.join(tree, "link"));
      const into = cli(["cp", tree, "files:/tmp/"]);
      assert.equal(into.code, 0, into.err);
      assert.match(into.out, /^Copied \/tmp\/tree\/run\.sh$/m);
      assert.match(into.err, /skipping symlink .*link -> run\.sh/);
      const sum = (p) => cli(["exec", "files", "--", "/bin/sh", "-c", `md5sum ${p} | cut -d' ' -f1`]).out.trim();
      const { createHash } = await import("node:crypto");
      assert.equal(sum("/tmp/tree/sub/big.bin"), createHash("md5").update(big).digest("hex"));
      assert.equal(cli(["exec", "files", "--", "/tmp/tree/run.sh"]).out, "ran\n");
      assert.equal(cli(["exec", "files", "--", "/bin/sh", "-c", "stat -c %a /tmp/tree/run.sh"]).out.trim(), "750");

      // Out again, into a new directory; and one file onto a local name.
      const back = path.join(dir, "back");
      const out = cli(["cp", "files:/tmp/tree", back]);
      assert.equal(out.code, 0, out.err);
      const bytes = (3 << 20) + readFileSync(path.join(tree, "run.sh")).length;
      assert.equal(out.out, `Copied /tmp/tree -> ${back} (2 files, ${bytes} bytes)\n`);
      assert.ok(readFileSync(path.join(back, "sub", "big.bin")).equals(big));
      assert.equal(statSync(path.join(back, "run.sh")).mode & 0o777, 0o750);
      cli(["exec", "files", "--", "/bin/sh", "-c", "echo made-in-$(hostname) > /tmp/made"]);
      const one = cli(["cp", "files:/tmp/made", path.join(dir, "made.txt")]);
      assert.equal(one.code, 0, one.err);
      assert.equal(readFileSync(path.join(dir, "made.txt"), "utf8"), "made-in-files\n");

      // A link the guest made comes out as a link (never followed on the host), pointing where
      // the guest said; nothing lands where it points.
      const outside = path.join(dir, "outside");
      mkdirSync(outside);
      cli(["exec", "files", "--", "/bin/sh", "-c", `mkdir -p /tmp/evil && ln -s ${outside} /tmp/evil/esc && echo x > /tmp/evil/plain`]);
      const evil = cli(["cp", "files:/tmp/evil", path.join(dir, "evil")]);
      assert.equal(evil.code, 0, evil.err);
      assert.ok(lstatSync(path.join(dir, "evil", "esc")).isSymbolicLink());
      assert.equal(readlinkSync(path.join(dir, "evil", "esc")), outside);
      assert.deepEqual(readdirSync(outside), []);

      // Tar streams: `-` as the source (into the guest) and as the destination.
      writeFileSync(path.join(dir, "note.txt"), "from a tar stream\n");
      const tarball = spawnSync("tar", ["-C", dir, "-cf", "-", "note.txt"]).stdout;
      const fromTar = spawnSync(CLI, ["cp", "-", "files:/tmp/fromtar"], { env: env(), input: tarball, encoding: "utf8" });
      assert.equal(fromTar.status, 0, fromTar.stderr);
      assert.equal(cli(["exec", "files", "--", "/bin/cat", "/tmp/fromtar/note.txt"]).out, "from a tar stream\n");
      const toTar = spawnSync(CLI, ["cp", "files:/tmp/tree", "-"], { env: env(), maxBuffer: 64 << 20 });
      assert.equal(toTar.status, 0, String(toTar.stderr));
      const listed = spawnSync("tar", ["-tvf", "-"], { input: toTar.stdout, encoding: "utf8" });
      assert.equal(listed.status, 0, listed.stderr);
      assert.match(listed.stdout, /^-rwxr-x--- .* tree\/run\.sh$/m);
      assert.match(listed.stdout, new RegExp(`^-rw-r--r-- .* ${3 << 20} .* tree/sub/big\\.bin$`, "m"));

      // Errors: a missing source, a relative guest path, a stopped instance (409: exit 4).
      const missing = cli(["cp", "files:/nope", dir]);
      assert.equal(missing.code, 1);
      assert.equal(missing.err, "hypedeck: source path /nope does not exist in guest\n");
      assert.equal(cli(["cp", "files:tmp", dir]).code, 2);
      await s.client.instances.stop(i.id);
      const stopped = cli(["cp", path.join(dir, "note.txt"), "files:/tmp/x"]);
      assert.equal(stopped.code, 4, stopped.err);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await s.client.instances.delete(i.id);
  });

  test("a rotation from the CLI reaches the upstream through the proxy with no restart; the value is in no argv or output", { timeout: 600_000 }, async () => {
    const port = upstream.port();
    const i = await s.client.instances.create({
      name: "agent", image: `${s.registry.host}/vm/curl:1`, vcpus: 1, size: "256MB",
      env: { OPENAI_KEY: "sk-cli-first" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
      cmd: [`while true; do curl -sS -o /dev/null --max-time 20 -H "X-From: $(hostname)" https://localhost:${port}/; sleep 1; done`],
    }, { timeout: 240_000 });
    await s.client.instances.wait(i.id, { state: "Running", timeout: "240s" }, { timeout: 250_000 });
    const running = await s.client.instances.get(i.id);
    assert.ok(running.started_at);
    const carried = (value) => waitFor(
      () => upstream.requestsFrom("agent").some((r) => r.authorization === `Bearer ${value}`) || undefined,
      `a request from the guest carrying the value set`, 120_000);
    await carried("sk-cli-first");

    // Upstream's verb (the value in argv, as upstream takes it), then ours (stdin, no echo).
    const updated = cli(["update", "egress-credentials", "agent", "--env", "OPENAI_KEY=sk-cli-second"]);
    assert.equal(updated.code, 0, updated.err);
    await carried("sk-cli-second");
    const child = spawn(CLI, ["--data-dir", s.dataDir, "rotate", "agent", "OPENAI_KEY"], { env: env() });
    let printed = "";
    child.stdout.on("data", (d) => (printed += d));
    child.stderr.on("data", (d) => (printed += d));
    const argv = readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0");
    child.stdin.end("sk-cli-third\n");
    const code = await new Promise((r) => child.on("close", r));
    assert.equal(code, 0, printed);
    assert.ok(!argv.some((a) => a.includes("sk-cli-third")), argv.join(" "));
    assert.doesNotMatch(printed, /sk-cli-/);
    await carried("sk-cli-third");
    // The guest kept running (same start) and only ever saw the placeholder.
    const after = await s.client.instances.get(i.id);
    assert.equal(after.state, "Running");
    assert.equal(after.started_at, running.started_at);
    const seen = cli(["exec", "agent", "--", "/bin/sh", "-c", "echo OPENAI_KEY=$OPENAI_KEY"]);
    assert.equal(seen.out.trim(), "OPENAI_KEY=mock-OPENAI_KEY");
    const shown = cli(["credentials", "agent"]);
    assert.equal(shown.code, 0, shown.err);
    assert.doesNotMatch(shown.out + shown.err, /sk-cli-/);
    await s.client.instances.delete(i.id);
  });

  test("the lifecycle, volume, snapshot, fork, stats, auto-standby and server verbs on a real guest", { timeout: 900_000 }, async () => {
    const image = `${s.registry.host}/vm/busybox:1`;
    const run = cli(["run", image, "--name", "life", "--cpus", "1", "--memory", "256MB",
      "--entrypoint", "/bin/sh", "--entrypoint", "-c", "--cmd", "while true; do sleep 1; done"]);
    assert.equal(run.code, 0, run.err);
    const id = run.out.trim();
    assert.equal(cli(["wait", "life", "--state", "Running", "--timeout", "240s"]).out, "Running\n");
    const inspected = JSON.parse(cli(["inspect", "life"]).out);
    assert.deepEqual([inspected.id, inspected.state, inspected.vcpus], [id, "Running", 1]);

    // Health and resources, as the server reports them.
    assert.equal(JSON.parse(cli(["health"]).out).status, "ok");
    assert.ok(JSON.parse(cli(["resources"]).out).cpu);

    // Stats of a real VM: CPU time and memory are measured.
    const stats = JSON.parse(cli(["stats", "life", "--format", "json"]).out);
    assert.ok(stats.memory_rss_bytes > 0 && stats.allocated_vcpus === 1, JSON.stringify(stats));

    // A volume attached while it runs, written in the guest, detached.
    assert.equal(cli(["volume", "create", "--name", "notes", "--size", "1", "--id", "notes"]).code, 0);
    const attach = cli(["volume", "attach", "notes", "-i", "life", "-m", "/mnt/notes"]);
    assert.equal(attach.code, 0, attach.err);
    assert.equal(cli(["exec", "life", "--", "/bin/sh", "-c", "echo kept > /mnt/notes/n && cat /mnt/notes/n"]).out, "kept\n");
    assert.equal(cli(["volume", "detach", "notes", "-i", "life"]).code, 0);
    assert.equal(cli(["exec", "life", "--", "/bin/sh", "-c", "test -e /mnt/notes/n || echo gone"]).out, "gone\n");

    // Standby and restore keep the guest's memory: a file in tmpfs survives.
    cli(["exec", "life", "--", "/bin/sh", "-c", "echo alive > /tmp/mark"]);
    const standby = cli(["standby", "life"]);
    assert.equal(standby.code, 0, standby.err);
    assert.equal(JSON.parse(cli(["inspect", "life"]).out).state, "Standby");
    const restore = cli(["restore", "life"]);
    assert.equal(restore.code, 0, restore.err);
    assert.equal(cli(["exec", "life", "--", "/bin/cat", "/tmp/mark"]).out, "alive\n");

    // Auto-standby set through the CLI is what the API reports.
    assert.equal(cli(["update", "auto-standby", "life", "--idle-timeout", "10m"]).code, 0);
    assert.equal((await s.client.instances.get(id)).auto_standby?.enabled, true);

    // A Standby snapshot, a fork of the running guest (its own hostname), and a restore.
    const snap = cli(["snapshot", "create", "life", "--kind", "Standby", "--name", "life-1"]);
    assert.equal(snap.code, 0, snap.err);
    const snapId = snap.out.trim();
    assert.match(cli(["snapshot", "ls"]).out, new RegExp(`^${snapId}\\s+life-1\\s+Standby\\s+life\\s`, "m"));
    const fork = cli(["fork", "life", "life-copy", "--from-running"]);
    assert.equal(fork.code, 0, fork.err);
    assert.equal(cli(["exec", "life-copy", "--", "/bin/hostname"]).out, "life-copy\n");
    assert.equal(cli(["exec", "life-copy", "--", "/bin/cat", "/tmp/mark"]).out, "alive\n", "the fork continues the memory");
    assert.equal(cli(["rm", "-f", "life-copy"]).code, 0);
    assert.equal(cli(["stop", "life"]).code, 0);
    const restored = cli(["snapshot", "restore", "life", snapId]);
    assert.equal(restored.code, 0, restored.err);
    assert.equal(cli(["exec", "life", "--", "/bin/cat", "/tmp/mark"]).out, "alive\n");
    assert.equal(cli(["snapshot", "rm", snapId]).code, 0);

    // Stop, then a cold start: tmpfs is new.
    assert.equal(cli(["stop", "life"]).code, 0);
    const start = cli(["start", "life"]);
    assert.equal(start.code, 0, start.err);
    assert.equal(cli(["wait", "life", "--state", "Running", "--timeout", "240s"]).out, "Running\n");
    assert.equal(cli(["exec", "life", "--", "/bin/sh", "-c", "cat /tmp/mark 2>/dev/null || echo fresh"]).out, "fresh\n");
    assert.equal(cli(["rm", "-f", "life"]).code, 0);
    assert.equal(cli(["volume", "rm", "notes"]).code, 0);
  });
});
