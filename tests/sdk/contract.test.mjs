// Contract fuzzing: schemathesis (PyPI) generates requests from upstream Hypeman's
// openapi.yaml and checks every response of a real `hypedeck serve` against it: no 5xx, status
// codes, content types, headers and bodies as the spec says, auth enforced, schema-violating
// requests rejected. tests/contract/overlay.py writes the spec it checks against: upstream's
// file plus what upstream's own server adds to every operation (401 from its auth layer, 400
// from its request validator), minus the operations Hypedeck answers 501 `not_implemented`.
//
//   SCHEMATHESIS        the schemathesis CLI (make test installs it into .ci/tools/venv)
//   CONTRACT_EXAMPLES   examples per operation and phase (default 30; more locally)
//   CONTRACT_SEED       replay a run (every run prints its seed)
//
// Two runs: instances and volumes on the fake hypervisor (so fuzzed creates boot nothing),
// then images through the real image pipeline, docker.io mirrored to a registry on 127.0.0.1
// that serves the spec's example image (library/alpine:latest) built here.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { binary, startServer } from "./harness.mjs";
import { startEmptyRegistry } from "../vm/harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const FAKE_BIN = binary("HYPEDECK_FAKE_BIN", "target/debug/hypedeck-fake");
const REAL_BIN = binary("HYPEDECK_BIN", "target/debug/hypedeck");
const SCHEMATHESIS = path.resolve(process.env.SCHEMATHESIS ?? ".ci/tools/venv/bin/schemathesis");
const PYTHON = path.join(path.dirname(SCHEMATHESIS), "python");
const EXAMPLES = Number(process.env.CONTRACT_EXAMPLES ?? 30);

/** Runs schemathesis against `server` for the operations `filter` selects. */
function fuzz(server, filter, work) {
  const spec = path.join(work, "spec.yaml");
  const overlay = execFileSync(PYTHON, [
    path.join(root, "tests/contract/overlay.py"),
    path.join(root, "crates/api/openapi.yaml"),
    server.url,
    server.token,
    spec,
  ]).toString();
  // Every run must still drop what Hypedeck does not serve, and check the rest.
  assert.match(overlay, /overlay: (\d+) operations checked, (\d+) not implemented/);
  // One restriction: a `tags` filter (a deepObject query object) that schemathesis makes
  // invalid by its types (a boolean value, …) reaches the server as plain strings, which are
  // valid (`tags[__main__]=false`): its "schema-violating request accepted" is about its own
  // serialization. So the lists with that filter are not held to negative_data_rejection;
  // the filter's rules (names, values, at most 50) have API tests (routes::tests, instances).
  // And: a snapshot schedule, a snapshot and a volume attachment are resources of their own
  // (made by PUT …/snapshot-schedule, POST …/snapshots and POST …/volumes/{volumeId}), not
  // parts of the instance POST /instances makes; upstream answers 404 for them on a fresh
  // instance too. Schemathesis's stateful phase infers links from POST /instances to them and
  // reads that 404 as "created resource not found" (ST302) when its seed takes such a link.
  writeFileSync(
    path.join(work, "schemathesis.toml"),
    [
      "[[operations]]",
      'include-name-regex = "^GET /(instances|images|snapshots)$"',
      "checks.negative_data_rejection.enabled = false",
      "",
      "[[operations]]",
      'include-name-regex = "^((GET|DELETE) /instances/[{]id[}]/snapshot-schedule|POST /instances/[{]id[}]/snapshots/[{]snapshotId[}]/restore|(POST|DELETE) /instances/[{]id[}]/volumes/[{]volumeId[}])$"',
      "checks.ensure_resource_availability.enabled = false",
      "",
    ].join("\n"),
  );
  const args = [
    "run", spec,
    "--url", server.url,
    "--header", `Authorization: Bearer ${server.token}`,
    // Upstream itself rejects schema-valid requests for reasons a schema cannot say (a name
    // taken, a credential whose env key is missing, a timeout that is not a duration).
    "--exclude-checks", "positive_data_acceptance",
    "--max-examples", String(EXAMPLES),
    "--workers", "1",
    // Longer than the longest wait GET /instances/{id}/wait may be asked for (its timeout is
    // capped at 5 minutes; the spec's own values, example 30s and default 60s, are what the
    // fuzzer sends), so an instance that never reaches the state is a 200 `timed_out`, not a
    // network error.
    "--request-timeout", "310",
    "--no-color",
    ...filter,
  ];
  if (process.env.CONTRACT_SEED) args.push("--seed", process.env.CONTRACT_SEED);
  return new Promise((resolve) => {
    const child = spawn(SCHEMATHESIS, args, {
      cwd: work,
      stdio: ["ignore", "pipe", "pipe"],
      env: process.env,
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code) => resolve({ code, output: `${overlay}${output}` }));
  });
}

function report(name, { code, output }) {
  const seed = output.match(/Seed: (\d+)/)?.[1];
  console.log(`# ${name}: schemathesis exit ${code}, seed ${seed} (CONTRACT_SEED=${seed} replays it)`);
  const summary = output.slice(output.lastIndexOf("SUMMARY"));
  assert.equal(code, 0, `${name}: schemathesis found contract violations\n${output}`);
  // A run that tested nothing proves nothing.
  const tested = Number(summary.match(/Tested: (\d+)/)?.[1] ?? 0);
  assert.ok(tested > 0, `${name}: no operation was tested\n${summary}`);
  return tested;
}

describe("contract (schemathesis, upstream's openapi.yaml)", { timeout: 30 * 60_000 }, () => {
  let work;
  before(() => {
    work = mkdtempSync(path.join(tmpdir(), "hypedeck-contract-"));
    execFileSync(SCHEMATHESIS, ["--version"]);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test("instances, volumes and resources on the fake hypervisor", async () => {
    const server = await startServer({ bin: FAKE_BIN, args: ["--hypervisor", "fake"] });
    try {
      // POST /volumes/from-archive takes application/gzip, which schemathesis cannot
      // generate (the API unit tests and tests/vm/volumes.test.mjs cover it); GET
      // /instances/{id}/stat asks the guest agent, whose files the fake hypervisor's VMs do
      // not have (tests/vm/exec.test.mjs covers it against real guests); GET
      // /instances/{id}/wait answers when its timeout runs out (30 s in the spec's example,
      // 60 s by default): with the ids of instances that exist, which schemathesis reuses from
      // earlier answers, each case waits it out and a run took over half an hour (its states,
      // timeouts and errors have API tests, crates/api/src/tests/lifecycle.rs, and the VM
      // suite waits through the SDK on every boot).
      const result = await fuzz(server, [
        "--exclude-path-regex", "^/images",
        "--exclude-path", "/volumes/from-archive",
        "--exclude-path", "/instances/{id}/stat",
        "--exclude-path", "/instances/{id}/wait",
      ], work);
      const tested = report("instances", result);
      assert.ok(tested >= 15, `only ${tested} operations tested`);
      // The server survived the run and still answers.
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
    } finally {
      await server.stop();
    }
  });

  test("images through the real pipeline, docker.io mirrored to a loopback registry", async () => {
    const registry = await startMirror(work);
    const server = await startServer({
      bin: REAL_BIN,
      env: {
        HYPEDECK_REGISTRY_MIRRORS: `docker.io=${registry.host}`,
        // Image operations only: no VM may boot.
        HYPEDECK_QEMU: "/nonexistent/qemu-system",
      },
    });
    try {
      const result = await fuzz(server, ["--include-path-regex", "^/images"], work);
      const tested = report("images", result);
      assert.equal(tested, 4, "GET/POST /images, GET/DELETE /images/{name}");
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
    } finally {
      await server.stop();
      await registry.stop();
    }
  });
});

/** A registry on 127.0.0.1 serving library/alpine:latest (a busybox rootfs). */
async function startMirror(work) {
  const registry = await startEmptyRegistry();
  const rootfs = path.join(work, "mirror-rootfs");
  mkdirSync(path.join(rootfs, "bin"), { recursive: true });
  execFileSync("cp", ["/bin/busybox", path.join(rootfs, "bin/busybox")]);
  execFileSync("ln", ["-s", "busybox", path.join(rootfs, "bin/sh")]);
  execFileSync(path.join(root, "tests/vm/build-image.sh"), [
    rootfs, registry.host, "library/alpine:latest", '{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]}',
  ], { stdio: ["ignore", "ignore", "inherit"] });
  return registry;
}
