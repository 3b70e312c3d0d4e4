// Real VMs through the `hypedeck` CLI (upstream's `hypeman` verbs): `run` pulls an image from a
// registry on 127.0.0.1 and boots it, `wait`, `ps`, `logs` (with `-f` following a guest that
// prints as it runs), `stop` and `rm`, each against `hypedeck serve` with a real QEMU guest.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import path from "node:path";

import { vmSuite } from "./suite.mjs";

const CLI = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
let s;
vmSuite((fixtures) => (s = fixtures));

const env = () => ({ ...process.env, HOME: "/nonexistent", HYPEMAN_BASE_URL: s.server.url, HYPEMAN_API_KEY: s.client.apiKey });
function cli(args) {
  const r = spawnSync(CLI, args, { env: env(), encoding: "utf8", timeout: 300_000 });
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
});
