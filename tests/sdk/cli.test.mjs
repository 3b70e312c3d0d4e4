// `hypedeck` speaking upstream's `hypeman` CLI verbs against a real `hypedeck serve` (the fake
// hypervisor: lifecycle and output shapes; tests/vm covers real guests): the server from
// HYPEMAN_BASE_URL / HYPEMAN_API_KEY or, without them, the engine of --data-dir with the token
// from the keychain; tables and lines for people, the API's JSON with --format json; errors as
// one line with the documented exit codes (3 not found, 4 conflict, 5 unreachable); every
// --format, --transform, colour only on a terminal (or FORCE_COLOR=1), a spinner in a real
// pseudo-terminal, and https/wss through a TLS terminator with a private CA.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";

import { binary, startServer } from "./harness.mjs";

const CLI = binary("HYPEDECK_BIN", "target/debug/hypedeck");
const FAKE = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");

let server;
let client;

/** The CLI's env: the test server, no colour settings unless `env` gives them; `env` adds to
 * (or, with `null` values, removes from) it. */
function cliEnv(env = {}) {
  const full = { ...process.env, HOME: "/nonexistent", HYPEMAN_BASE_URL: server.url, HYPEMAN_API_KEY: server.token };
  delete full.FORCE_COLOR;
  delete full.NO_COLOR;
  Object.assign(full, env);
  for (const [k, v] of Object.entries(env)) if (v === null) delete full[k];
  return full;
}

/** Runs the CLI with `args`; `env` as in cliEnv. */
function cli(args, env = {}) {
  const r = spawnSync(CLI, args, { env: cliEnv(env), encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** `cli` without blocking this process (for servers it runs itself), stdin closed. */
function cliAsync(args, env = {}, program = CLI) {
  return new Promise((resolve) => {
    const child = spawn(program, args, { env: cliEnv(env) });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.stdin.end();
    const timer = setTimeout(() => child.kill(), 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** YAML text parsed by python3's PyYAML (safe_load), as JSON. */
function parseYaml(text) {
  const r = spawnSync("python3", ["-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"], { input: text, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const ANSI = /\x1b\[[0-9;]*m/;

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
  test("--format json, jsonl, raw, yaml, pretty and explore for inspect and a list; --transform", async () => {
    const inst = await client.instances.create({ name: "fmt", image: "docker.io/library/alpine:latest", tags: { team: "core", "app.kind": "api" } });
    const api = await client.instances.get(inst.id);
    const headers = { authorization: `Bearer ${server.token}` };
    const rawOne = await (await fetch(`${server.url}/instances/${inst.id}`, { headers })).text();
    const rawList = await (await fetch(`${server.url}/instances`, { headers })).text();
    const list = JSON.parse(rawList);

    // json (and auto, for a verb that only prints the document): two-space indented.
    for (const args of [["inspect", "fmt", "--format", "json"], ["inspect", "fmt"]]) {
      const r = cli(args);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(JSON.parse(r.out), api);
      assert.equal(r.out, JSON.stringify(JSON.parse(r.out), null, 2) + "\n");
      assert.doesNotMatch(r.out, ANSI, "no colour in a pipe");
    }
    const psJson = cli(["ps", "-a", "--format", "json"]);
    assert.deepEqual(JSON.parse(psJson.out), list);
    assert.equal(psJson.out, JSON.stringify(list, null, 2) + "\n");

    // jsonl: the document on one line.
    const line = cli(["inspect", "fmt", "--format", "jsonl"]).out;
    assert.equal(line, JSON.stringify(JSON.parse(line)) + "\n");
    assert.equal(line.split("\n").length, 2);
    assert.deepEqual(JSON.parse(line), api);
    const psLine = cli(["ps", "-a", "--format", "jsonl"]).out;
    assert.equal(psLine.split("\n").length, 2);
    assert.deepEqual(JSON.parse(psLine), list);

    // raw: the bytes as the server sent them.
    assert.equal(cli(["inspect", "fmt", "--format", "raw"]).out, rawOne + "\n");
    assert.equal(cli(["ps", "-a", "--format", "raw"]).out, rawList + "\n");

    // yaml: block YAML that PyYAML reads back as the same data.
    const yaml = cli(["inspect", "fmt", "--format", "yaml"]);
    assert.equal(yaml.code, 0, yaml.err);
    assert.match(yaml.out, /^name: fmt$/m);
    assert.match(yaml.out, /^tags:\n {2}app\.kind: api\n {2}team: core$/m);
    assert.deepEqual(parseYaml(yaml.out), api);
    const psYaml = cli(["ps", "-a", "--format", "yaml"]).out;
    assert.match(psYaml, /^- /);
    assert.deepEqual(parseYaml(psYaml), list);

    // pretty (explore prints the same): a title, then key: value lines.
    const pretty = cli(["inspect", "fmt", "--format", "pretty"]);
    assert.equal(pretty.code, 0, pretty.err);
    assert.match(pretty.out, /^instance inspect\n {2}/);
    assert.match(pretty.out, /^ {2}name: fmt$/m);
    assert.match(pretty.out, /^ {2}tags:\n {4}app\.kind: api\n {4}team: core$/m);
    assert.match(pretty.out, new RegExp(`^ {2}id: ${inst.id}$`, "m"));
    assert.equal(cli(["inspect", "fmt", "--format", "explore"]).out, pretty.out);
    assert.match(cli(["ps", "-a", "--format", "pretty"]).out, /^instance list\n {2}1\.\n {4}\S+: /);
    assert.equal(cli(["inspect", "fmt", "--format", "xml"]).code, 2, "an unknown format is a usage error");

    // --transform: a path, an escaped dot, #, #.key, and a path that matches nothing.
    assert.equal(cli(["inspect", "fmt", "--transform", "name"]).out, '"fmt"\n');
    assert.equal(cli(["inspect", "fmt", "--format", "yaml", "--transform", "tags.app\\.kind"]).out, "api\n");
    assert.equal(cli(["ps", "-a", "--format", "json", "--transform", "#"]).out, `${list.length}\n`);
    assert.equal(cli(["ps", "-a", "--format", "jsonl", "--transform", "#.name"]).out, JSON.stringify(list.map((i) => i.name)) + "\n");
    assert.equal(cli(["ps", "-a", "--format", "jsonl", "--transform", "0.name"]).out, JSON.stringify(list[0].name) + "\n");
    assert.equal(cli(["inspect", "fmt", "--format", "jsonl", "--transform", "no.such.path"]).out, line, "no match: the whole document");
    assert.equal(cli(["inspect", "fmt", "--format", "raw", "--transform", "name"]).out, rawOne + "\n", "raw ignores --transform");

    // Errors: one line on stderr; with --format-error also the {code, message} document.
    const missing = cli(["inspect", "nope", "--format-error", "json"]);
    assert.equal(missing.code, 3);
    assert.equal(missing.err, "hypedeck: not_found: resource not found\n");
    assert.deepEqual(JSON.parse(missing.out), { code: "not_found", message: "resource not found" });
    assert.equal(cli(["inspect", "nope", "--format-error", "jsonl", "--transform-error", "code"]).out, '"not_found"\n');
    assert.equal(cli(["inspect", "nope"]).out, "", "auto: no error document");
    await client.instances.delete(inst.id);
  });

  test("colour: states and JSON on a terminal or with FORCE_COLOR=1, never in a pipe", async () => {
    const run = await client.instances.create({ name: "green", image: "docker.io/library/alpine:latest" });
    const off = await client.instances.create({ name: "dim", image: "docker.io/library/alpine:latest" });
    await client.instances.stop(off.id);

    const forced = cli(["ps", "-a"], { FORCE_COLOR: "1" });
    assert.equal(forced.code, 0, forced.err);
    assert.match(forced.out, /\x1b\[32mRunning\x1b\[0m/);
    assert.match(forced.out, /\x1b\[2mStopped\x1b\[0m/);
    const [header, ...rows] = forced.out.trimEnd().split("\n");
    const stateAt = header.indexOf("STATE");
    for (const row of rows) assert.match(row.replace(/\x1b\[[0-9;]*m/g, "").slice(stateAt), /^(Running|Stopped) /, "columns stay aligned");
    for (const env of [{}, { FORCE_COLOR: "0" }, { NO_COLOR: "1" }, { FORCE_COLOR: "0", NO_COLOR: "1" }]) {
      const plain = cli(["ps", "-a"], env);
      assert.equal(plain.code, 0, plain.err);
      assert.match(plain.out, /Running/);
      assert.doesNotMatch(plain.out + plain.err, ANSI, JSON.stringify(env));
    }
    const json = cli(["inspect", "green", "--format", "json"], { FORCE_COLOR: "1" });
    assert.match(json.out, /\x1b\[34m"name"\x1b\[0m: \x1b\[32m"green"\x1b\[0m/);
    assert.deepEqual(JSON.parse(json.out.replace(/\x1b\[[0-9;]*m/g, "")), await client.instances.get(run.id));
    const stop = cli(["stop", "green"], { FORCE_COLOR: "1" });
    assert.equal(stop.err, "Stopping green...\nStopped green (state: \x1b[2mStopped\x1b[0m)\n");
    assert.equal(cli(["wait", "green", "--state", "Stopped"], { FORCE_COLOR: "1" }).out, "\x1b[2mStopped\x1b[0m\n");
    for (const i of [run, off]) await client.instances.delete(i.id);
  });

  test("wait shows a spinner on a terminal's stderr while piped stdout stays clean", async () => {
    const inst = await client.instances.create({ name: "spin", image: "docker.io/library/alpine:latest" });
    const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-pty-"));
    try {
      const outFile = path.join(dir, "stdout");
      // script(1) gives the CLI a pseudo-terminal; its stdout goes to a file instead.
      const inner = `exec '${CLI}' wait spin --state Stopped --timeout 20s > '${outFile}'`;
      const waiting = cliAsync(["-qec", inner, "/dev/null"], {}, "script");
      await new Promise((r) => setTimeout(r, 1500));
      await client.instances.stop(inst.id);
      const r = await waiting;
      assert.equal(r.code, 0, r.err + r.out);
      assert.match(r.out, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] Waiting for spin to reach Stopped\.\.\. \(\d+\.\ds\)/, JSON.stringify(r.out));
      assert.match(r.out, /\r\x1b\[2K$/, "the spinner's line is erased at the end");
      assert.equal(readFileSync(outFile, "utf8"), "Stopped\n", "stdout has the answer only");
      // Off a terminal: no spinner, nothing on stderr.
      const piped = cli(["wait", "spin", "--state", "Stopped"]);
      assert.deepEqual([piped.out, piped.err], ["Stopped\n", ""]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await client.instances.delete(inst.id);
    }
  });

  test("update auto-standby and snapshot schedule set/get/delete change what the API reports", async () => {
    const inst = await client.instances.create({ name: "sched", image: "docker.io/library/alpine:latest" });
    const none = cli(["update", "auto-standby", "sched"]);
    assert.equal(none.code, 2);
    assert.match(none.err, /at least one auto-standby flag is required/);
    assert.equal(cli(["update", "auto-standby", "sched", "--ignore-destination-port", "70000"]).code, 2);

    const on = cli(["update", "auto-standby", "sched", "--idle-timeout", "10m", "--ignore-destination-port", "22", "--ignore-source-cidr", "10.0.0.0/8"]);
    assert.equal(on.code, 0, on.err);
    assert.equal(on.out, `${inst.id}\n`);
    assert.equal(on.err, "Updating auto-standby for sched...\n");
    const policy = (await client.instances.get(inst.id)).auto_standby;
    assert.equal(policy.enabled, true);
    assert.equal(policy.idle_timeout, "10m0s", "the server's normal form of 10m");
    assert.deepEqual(policy.ignore_destination_ports, [22]);
    assert.deepEqual(policy.ignore_source_cidrs, ["10.0.0.0/8"]);
    const offJson = cli(["update", "auto-standby", "sched", "--enabled=false", "--format", "json"]);
    assert.equal(offJson.code, 0, offJson.err);
    assert.equal(JSON.parse(offJson.out).auto_standby.enabled, false);
    assert.equal((await client.instances.get(inst.id)).auto_standby.enabled, false);

    const missing = cli(["snapshot", "schedule", "set", "sched", "--interval", "1h"]);
    assert.equal(missing.code, 2);
    assert.match(missing.err, /at least one of --max-age or --max-count is required/);
    const set = cli(["snapshot", "schedule", "set", "sched", "--interval", "1h", "--max-count", "3", "--name-prefix", "hourly", "--metadata", "k=v"]);
    assert.equal(set.code, 0, set.err);
    const schedule = await client.get(`/instances/${inst.id}/snapshot-schedule`);
    assert.equal(schedule.interval, "1h0m0s", "the server's normal form of 1h");
    assert.deepEqual(schedule.retention.max_count, 3);
    assert.equal(schedule.name_prefix, "hourly");
    const summary = `INSTANCE       ${inst.id}\nINTERVAL       1h0m0s\nMAX AGE        -\nMAX COUNT      3\nPREFIX         hourly\nNEXT RUN       ${schedule.next_run_at}\nCREATED        ${schedule.created_at}\nMETADATA       k=v\n`;
    assert.equal(set.out, summary);
    assert.equal(cli(["snapshot", "schedule", "get", "sched"]).out, summary);
    assert.deepEqual(JSON.parse(cli(["snapshot", "schedule", "get", "sched", "--format", "json"]).out), schedule);
    const changed = cli(["snapshot", "schedule", "set", "sched", "--interval", "2h", "--max-age", "24h", "--format", "jsonl", "--transform", "retention"]);
    assert.equal(changed.code, 0, changed.err);
    assert.deepEqual(JSON.parse(changed.out), (await client.get(`/instances/${inst.id}/snapshot-schedule`)).retention);
    assert.equal((await client.get(`/instances/${inst.id}/snapshot-schedule`)).interval, "2h0m0s");
    const del = cli(["snapshot", "schedule", "rm", "sched"]);
    assert.equal(del.code, 0, del.err);
    assert.equal(del.err, "Deleted snapshot schedule for sched\n");
    assert.equal(cli(["snapshot", "schedule", "get", "sched"]).code, 3);
    await client.instances.delete(inst.id);
  });

  test("https and exec's wss through a TLS terminator, trusting the CA in SSL_CERT_FILE", async () => {
    const inst = await client.instances.create({ name: "tls", image: "docker.io/library/alpine:latest" });
    const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-tls-"));
    const sh = (cmd) => execFileSync("bash", ["-c", cmd], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(`openssl req -x509 ${ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=hypedeck-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`);
    sh(`openssl req ${ec} -keyout srv.key -out srv.csr -subj /CN=localhost`);
    writeFileSync(path.join(dir, "ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
    sh("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile ext");
    sh(`openssl req -x509 ${ec} -keyout other.key -out other.pem -days 1 -subj /CN=another-ca -addext basicConstraints=critical,CA:TRUE`);
    const backend = new URL(server.url);
    const seen = [];
    const terminator = tls.createServer({ key: readFileSync(path.join(dir, "srv.key")), cert: readFileSync(path.join(dir, "srv.pem")) }, (socket) => {
      const back = net.connect(Number(backend.port), backend.hostname);
      socket.once("data", (d) => seen.push(d.toString("latin1").split("\r\n")[0] + (/\r\nupgrade: websocket\r\n/i.test(d.toString("latin1")) ? " (upgrade)" : "")));
      socket.pipe(back).pipe(socket);
      socket.on("error", () => back.destroy());
      back.on("error", () => socket.destroy());
    });
    terminator.on("tlsClientError", () => seen.push("refused TLS"));
    await new Promise((r) => terminator.listen(0, "127.0.0.1", r));
    const https = `https://127.0.0.1:${terminator.address().port}`;
    const trusted = { HYPEMAN_BASE_URL: https, SSL_CERT_FILE: path.join(dir, "ca.pem") };
    try {
      const ps = await cliAsync(["ps", "-q"], trusted);
      assert.equal(ps.code, 0, ps.err);
      assert.equal(ps.out, cli(["ps", "-q"]).out, "the same as over plain http");
      assert.match(ps.out, new RegExp(`^${inst.id}$`, "m"));
      assert.match(seen.at(-1), /^GET \/instances HTTP\/1\.1$/);

      // The fake hypervisor's guests run no programs: the server's answer over wss proves the
      // whole round trip (handshake through TLS, request frame, output, exit code).
      const exec = await cliAsync(["exec", "tls", "--", "echo", "hi"], trusted);
      assert.equal(exec.code, 127, exec.err);
      assert.match(exec.out, /Error: the fake hypervisor runs no programs/);
      assert.match(seen.at(-1), new RegExp(`^GET /instances/tls/exec HTTP/1\\.1 \\(upgrade\\)$`));

      // Trusting another CA only, the certificate is refused, by the HTTP client and by exec.
      const before = seen.length;
      for (const args of [["ps"], ["exec", "tls", "--", "echo", "hi"]]) {
        const r = await cliAsync(args, { HYPEMAN_BASE_URL: https, SSL_CERT_FILE: path.join(dir, "other.pem") });
        assert.equal(r.code, 5, r.err);
        assert.match(r.err, /^hypedeck: cannot reach https:\/\/127\.0\.0\.1:\d+: .*(certificate|UnknownIssuer)/i);
        assert.doesNotMatch(r.err, new RegExp(server.token));
      }
      assert.ok(seen.slice(before).every((s) => !s.startsWith("GET")), "no request got through untrusted TLS");
    } finally {
      terminator.close();
      rmSync(dir, { recursive: true, force: true });
      await client.instances.delete(inst.id);
    }
  });
});
