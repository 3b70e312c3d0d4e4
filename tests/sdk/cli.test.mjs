// `hypedeck` speaking upstream's `hypeman` CLI verbs against a real `hypedeck serve` (the fake
// hypervisor: lifecycle and output shapes; tests/vm covers real guests): the server from
// HYPEMAN_BASE_URL / HYPEMAN_API_KEY or, without them, the engine of --data-dir with the token
// from the keychain; tables and lines for people, the API's JSON with --format json; errors as
// one line with the documented exit codes (3 not found, 4 conflict, 5 unreachable).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";

import { binary, startServer } from "./harness.mjs";

const CLI = binary("HYPEDECK_BIN", "target/debug/hypedeck");
const FAKE = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");

let server;
let client;

/** Runs the CLI with `args`; `env` adds to (or, with `null` values, removes from) its env. */
function cli(args, env = {}) {
  const full = { ...process.env, HOME: "/nonexistent", HYPEMAN_BASE_URL: server.url, HYPEMAN_API_KEY: server.token, ...env };
  for (const [k, v] of Object.entries(env)) if (v === null) delete full[k];
  const r = spawnSync(CLI, args, { env: full, encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("the hypeman CLI verbs", () => {
  before(async () => {
    server = await startServer({ bin: FAKE, args: ["--hypervisor", "fake"] });
    client = server.client();
  });
  after(() => server?.stop());

  test("ps, inspect, the lifecycle, wait, logs and rm, as upstream prints them", async () => {
    const web = await client.instances.create({ name: "web", image: "docker.io/library/alpine:latest" });
    const idle = await client.instances.create({ name: "idle", image: "docker.io/library/alpine:latest" });
    await client.instances.stop(idle.id);

    const ps = cli(["ps"]);
    assert.equal(ps.code, 0, ps.err);
    const [header, ...rows] = ps.out.trimEnd().split("\n");
    assert.match(header, /^INSTANCE ID\s+NAME\s+IMAGE\s+STATE\s+GPU\s+HV\s+CREATED$/);
    assert.equal(rows.length, 1, "running only");
    assert.match(rows[0], new RegExp(`^${web.id.slice(0, 12)}\\s+web\\s+docker.io/library/alpine:latest\\s+Running\\s+-\\s+qemu\\s+\\d+ seconds ago$`));
    assert.deepEqual(cli(["ps", "-a", "-q"]).out.trim().split("\n").sort(), [web.id, idle.id].sort());
    const json = JSON.parse(cli(["ps", "--state", "Stopped", "--format", "json"]).out);
    assert.deepEqual(json.map((i) => i.name), ["idle"]);

    const inspect = cli(["inspect", "web"]);
    assert.equal(inspect.code, 0, inspect.err);
    assert.deepEqual(JSON.parse(inspect.out), await client.instances.get(web.id));

    const stop = cli(["stop", "web"]);
    assert.equal(stop.code, 0, stop.err);
    assert.equal(stop.err, "Stopping web...\nStopped web (state: Stopped)\n");
    assert.equal(cli(["wait", "web", "--state", "Stopped"]).out, "Stopped\n");
    const start = cli(["start", "web", "--format", "json"]);
    assert.equal(JSON.parse(start.out).name, "web");
    assert.equal(cli(["wait", web.id.slice(0, 6), "--state", "Running", "--timeout", "10s"]).out, "Running\n");
    const standby = cli(["standby", "web"]);
    assert.equal(standby.code, 0, standby.err);
    assert.match(standby.err, /web is in standby \(state: Standby\)/);
    const timedOut = cli(["wait", "web", "--state", "Running", "--timeout", "1s"]);
    assert.equal(timedOut.out, "Standby\n", "a state it cannot leave on its own ends the wait");
    assert.equal(cli(["restore", "web"]).code, 0);

    const logs = cli(["logs", "web", "--source", "hypeman", "--tail", "3"]);
    assert.equal(logs.code, 0, logs.err);
    const lines = logs.out.trimEnd().split("\n");
    assert.equal(lines.length, 3, logs.out);
    assert.match(lines.at(-1), /\[INFO\] /);

    // rm: a running instance needs --force (exit 4); several names in one go.
    const refused = cli(["rm", "web"]);
    assert.equal(refused.code, 4, refused.err);
    assert.match(refused.err, /cannot remove running instance web\. Stop it first or use --force/);
    const removed = cli(["rm", "--force", "web", "idle"]);
    assert.equal(removed.code, 0, removed.err);
    assert.deepEqual(removed.out.trim().split("\n"), ["web", "idle"]);
    assert.deepEqual(await client.instances.list(), []);
    assert.equal(cli(["rm", "--all"]).out, "No instances to remove\n");
  });

  test("errors are one line with documented exit codes; secrets stay out of them", async () => {
    const missing = cli(["inspect", "nope"]);
    assert.equal(missing.code, 3);
    assert.equal(missing.err, "hypedeck: not_found: resource not found\n");
    const usage = cli(["rm"]);
    assert.equal(usage.code, 2);
    const badKey = cli(["ps"], { HYPEMAN_API_KEY: "hdk_wrong" });
    assert.equal(badKey.code, 1);
    assert.match(badKey.err, /^hypedeck: Unauthorized: /);
    assert.doesNotMatch(badKey.err, /hdk_wrong/);
    const nowhere = cli(["ps"], { HYPEMAN_BASE_URL: "http://127.0.0.1:9" });
    assert.equal(nowhere.code, 5);
    assert.match(nowhere.err, /^hypedeck: cannot reach http:\/\/127\.0\.0\.1:9: /);
    const nothing = cli(["--data-dir", "/nonexistent/hypedeck", "ps"], { HYPEMAN_BASE_URL: null, HYPEMAN_API_KEY: null });
    assert.equal(nothing.code, 5);
    assert.match(nothing.err, /no Hypeman server: set HYPEMAN_BASE_URL and HYPEMAN_API_KEY, or start the engine for \/nonexistent\/hypedeck/);
  });

  test("update egress-credentials rotates a bound value and volume attach/detach follow the API", async () => {
    const agent = await client.instances.create({
      name: "agent", image: "docker.io/library/alpine:latest",
      env: { OUTBOUND_KEY: "sk-old-123" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { OUTBOUND_KEY: { source: { env: "OUTBOUND_KEY" }, inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    });
    const before = await client.get(`/instances/${agent.id}/credentials`);
    const rotated = cli(["update", "egress-credentials", "agent", "--env", "OUTBOUND_KEY=sk-new-456"]);
    assert.equal(rotated.code, 0, rotated.err);
    assert.equal(rotated.err, "Updated OUTBOUND_KEY on agent\n");
    const after = await client.get(`/instances/${agent.id}/credentials`);
    assert.notEqual(after[0].fingerprint, before[0].fingerprint, "the value in force changed");
    const shown = cli(["credentials", "agent"]);
    assert.equal(shown.code, 0, shown.err);
    assert.match(shown.out.trimEnd(), new RegExp(`^ENV\\s+FINGERPRINT\\s+HOSTS\\s+ROTATED\\s+LAST USED\\nOUTBOUND_KEY\\s+${after[0].fingerprint}\\s+api\\.example\\.com\\s+\\d+ seconds ago\\s+never$`));
    // `hypedeck rotate` takes the value on stdin: it is in no process's argv, and in no output.
    const child = spawn(CLI, ["--data-dir", server.dataDir, "rotate", "agent", "OUTBOUND_KEY"], { env: process.env });
    let printed = "";
    child.stdout.on("data", (d) => (printed += d));
    child.stderr.on("data", (d) => (printed += d));
    const argv = readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0");
    assert.ok(argv.includes("rotate") && !argv.some((a) => a.includes("sk-stdin-789")), argv.join(" "));
    child.stdin.end("sk-stdin-789\n");
    assert.equal(await new Promise((r) => child.on("exit", r)), 0, printed);
    assert.match(printed, /^rotated OUTBOUND_KEY of agent \(fingerprint [0-9a-f]+\)\n$/);
    assert.doesNotMatch(printed, /sk-stdin-789/);
    const unbound = cli(["update", "egress-credentials", "agent", "-e", "PATH=/x"]);
    assert.equal(unbound.code, 1);
    assert.match(unbound.err, /^hypedeck: invalid_request: /);
    for (const r of [rotated, unbound, shown]) assert.doesNotMatch(r.out + r.err, /sk-new-456|sk-old-123/);

    const vol = await client.volumes.create({ name: "data", size_gb: 1 });
    const attached = cli(["volume", "attach", "data", "-i", "agent", "-m", "/mnt/data", "--readonly"]);
    assert.equal(attached.code, 0, attached.err);
    assert.equal(attached.err, "Attached data to agent at /mnt/data\n");
    assert.deepEqual((await client.instances.get(agent.id)).volumes, [{ mount_path: "/mnt/data", readonly: true, volume_id: vol.id }]);
    const twice = cli(["volume", "attach", "data", "-i", "agent", "-m", "/mnt/other"]);
    assert.equal(twice.code, 4, twice.err);
    assert.equal(cli(["volume", "detach", "data", "-i", "agent"]).code, 0);
    assert.equal(cli(["volume", "detach", "data", "-i", "agent"]).code, 3);
    await client.instances.delete(agent.id);
    await client.volumes.delete(vol.id);
  });

  test("volume, snapshot, fork and stats verbs (images: tests/vm/cli.test.mjs)", async () => {
    const made = cli(["volume", "create", "--name", "cache", "--size", "1", "--id", "cache-vol"]);
    assert.equal(made.code, 0, made.err);
    assert.equal(made.out, "cache-vol\n");
    const vols = cli(["volume", "ls"]);
    assert.match(vols.out, /^ID\s+NAME\s+SIZE\s+ATTACHMENTS\s+CREATED\ncache-vol\s+cache\s+1 GB\s+0\s+\d+ seconds ago\n$/);
    assert.equal(cli(["volumes", "list", "-q"]).out, "cache-vol\n");
    assert.equal(JSON.parse(cli(["volume", "get", "cache-vol"]).out).name, "cache");

    const src = await client.instances.create({ name: "src", image: "docker.io/library/alpine:latest" });
    const snap = cli(["snapshot", "create", "src", "--kind", "Standby", "--name", "first"]);
    assert.equal(snap.code, 0, snap.err);
    const snapId = snap.out.trim();
    assert.match(cli(["snapshot", "ls"]).out, new RegExp(`^ID\\s+NAME\\s+KIND\\s+SOURCE\\s+CREATED\\n${snapId}\\s+first\\s+Standby\\s+src\\s`));
    const fork = cli(["fork", "src", "src-copy", "--from-running", "--target-state", "Stopped"]);
    assert.equal(fork.code, 0, fork.err);
    const copy = await client.instances.get(fork.out.trim());
    assert.deepEqual([copy.name, copy.state], ["src-copy", "Stopped"]);
    assert.equal(cli(["fork", "src", "src-copy"]).code, 4, "a taken name (or a running source) is a conflict");
    await client.instances.stop(src.id);
    const restored = cli(["snapshot", "restore", "src", snapId, "--target-state", "Stopped"]);
    assert.equal(restored.code, 0, restored.err);
    assert.equal(restored.out.trim(), src.id);
    assert.equal(cli(["snapshot", "rm", snapId]).out, `${snapId}\n`);
    assert.equal(cli(["snapshot", "get", snapId]).code, 3);

    await client.instances.start(src.id, {});
    const stats = cli(["stats", "src"]);
    assert.equal(stats.code, 0, stats.err);
    assert.match(stats.out, /^CPU SECONDS\s+MEMORY \(RSS\)\s+ALLOCATED\s+NET RX\s+NET TX\s+VCPUS\n[\d.]+\s+[\d.]+ MiB\s+1024\.0 MiB\s/);
    assert.equal(JSON.parse(cli(["stats", "src", "--format", "json"]).out).allocated_vcpus, 2);
    for (const i of await client.instances.list()) await client.instances.delete(i.id);
    assert.equal(cli(["volume", "rm", "cache-vol"]).code, 0);
  });

  test("completions load in bash and the man page names the verbs", () => {
    const r = spawnSync("bash", ["-c", `source <("${CLI}" completion bash) && complete -p hypedeck && COMP_WORDS=(hypedeck up); COMP_CWORD=1; _hypedeck hypedeck up hypedeck && echo "\${COMPREPLY[*]}"`], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /complete .* -F _hypedeck hypedeck/);
    assert.match(r.stdout.trim().split("\n").at(-1), /\bupdate\b/);
    const man = spawnSync(CLI, ["man"], { encoding: "utf8" });
    assert.equal(man.status, 0, man.stderr);
    assert.match(man.stdout, /^\.TH hypedeck 1/m);
    for (const verb of ["ps", "run", "logs", "rm", "wait", "update", "volume"]) assert.match(man.stdout, new RegExp(`\\b${verb}\\b`), verb);
  });

  test("without HYPEMAN_BASE_URL it finds the data dir's engine and its token in the keychain", async () => {
    await client.instances.create({ name: "local", image: "docker.io/library/alpine:latest" });
    const r = cli(["--data-dir", server.dataDir, "ps", "-q"], { HYPEMAN_BASE_URL: null, HYPEMAN_API_KEY: null });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), (await client.instances.list())[0].id);
    assert.deepEqual(JSON.parse(cli(["health"]).out), { status: "ok" });
    assert.ok(JSON.parse(cli(["resources"]).out).cpu);
    assert.equal(path.isAbsolute(server.dataDir), true);
  });
});
