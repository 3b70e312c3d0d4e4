// Credentials the guest never sees: a curl guest talks HTTPS to a local upstream through the
// host egress proxy, which injects the real value; PATCH rotates it with no restart.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:https";
import { request as httpRequest } from "node:http";
import { connect as tlsConnect } from "node:tls";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";
import { startRegistry, startServer, newDataDir, waitFor, logLines, deleteAll, makeTestPki, localClient } from "./harness.mjs";
import { assertKeyedFingerprint } from "../fingerprint.mjs";

const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
const SECRETS = ["sk-egress-first-value", "sk-egress-rotated-value", "real-token-never-in-guest"];

/** Every secret stored under `service` in the session's Secret Service (secret-tool). */
function keychainValues(service) {
  const out = execFileSync("secret-tool", ["search", "--all", "--unlock", "service", service], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  const values = [];
  for (const block of out.split(/^\[\/.*\]$/m).slice(1)) {
    const m = block.match(/^secret = ([\s\S]*?)\ncreated = /m);
    if (m) values.push(m[1]);
  }
  return values;
}

let registry, dataDir, server, client, upstream, pki;
const pastOutputs = []; // stdout+stderr of engines that were killed or replaced
const seen = []; // {host, authorization, direct}
const bodies = []; // every request body the upstream received

before(async () => {
  pki = makeTestPki();
  upstream = createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    seen.push({
      host: req.headers.host,
      authorization: req.headers.authorization ?? null,
      token: req.headers["x-token"] ?? null,
      direct: req.headers["x-direct"] === "1",
      id: req.headers["x-req"] ?? null,
      agent: req.headers["user-agent"] ?? null,
    });
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => bodies.push(Buffer.concat(chunks).toString("latin1")));
    res.end("upstream ok\n"); // never echo the header: the guest must not learn it
  });
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
  registry = await startRegistry();
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1", HYPEDECK_EGRESS_TEST_LISTENER: "1" });
  client = server.client();
});

after(async () => {
  if (client) await deleteAll(client);
  await server?.stop();
  await registry?.stop();
  upstream?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

describe("egress proxy with credential injection", () => {
  test("the guest sees mocks; the upstream sees the real value; PATCH rotates it live", async () => {
    const port = upstream.address().port;
    const script = [
      "env | grep -E '^(OPENAI_KEY|API_TOKEN|REAL_TOKEN|HTTPS_PROXY|PORT)=' | sort",
      "GW=$(ip route | awk '/default/{print $3}')",
      `if curl -s --noproxy '*' --max-time 3 -H 'X-Direct: 1' https://$GW:${port}/ -k >/dev/null 2>&1; then echo DIRECT-OK; else echo DIRECT-FAILED; fi`,
      `while true; do curl -sS --max-time 20 -H 'Authorization: guest-own' https://localhost:${port}/; sleep 1; done`,
    ].join("; ");
    const created = await client.instances.create({
      name: "agent",
      image: `${registry.host}/vm/curl:1`,
      vcpus: 1,
      size: "256MB",
      env: { OPENAI_KEY: SECRETS[0], REAL_TOKEN: SECRETS[2], PORT: "3000" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] },
        API_TOKEN: { source: { env: "REAL_TOKEN" }, inject: [{ hosts: ["api.example.com"], as: { header: "X-Token", format: "${value}" } }] },
      },
      cmd: [script],
    }, { timeout: 240_000 });
    assert.equal(created.env.OPENAI_KEY, SECRETS[0], "the API echoes real values like upstream");

    try {
      await waitFor(() => seen.some((s) => s.host.startsWith("localhost")), "a request through the proxy", 180_000);
    } catch (e) {
      const log = await logLines(client, created.id).catch(() => []);
      throw new Error(`${e.message}\nseen=${JSON.stringify(seen)}\nguest log:\n${log.join("\n")}\nengine:\n${server.output().slice(-3000)}`);
    }
    const lines = await logLines(client, created.id);
    assert.ok(lines.includes("OPENAI_KEY=mock-OPENAI_KEY"), lines.join("\n"));
    assert.ok(lines.includes("API_TOKEN=mock-API_TOKEN"), lines.join("\n"));
    assert.ok(!lines.some((l) => l.startsWith("REAL_TOKEN=")), "a source.env var named differently never reaches the guest");
    assert.ok(lines.some((l) => /^HTTPS_PROXY=http:\/\/10\.100\.\d+\.100:18080$/.test(l)), lines.join("\n"));
    assert.ok(lines.includes("DIRECT-FAILED"), "direct egress bypassing the proxy must fail");
    assert.ok(!seen.some((s) => s.direct), "the upstream never saw a direct request");
    for (const line of lines) for (const secret of SECRETS) assert.ok(!line.includes(secret), `secret in guest output: ${line}`);

    const viaLocalhost = seen.filter((s) => s.host.startsWith("localhost"));
    assert.ok(viaLocalhost.every((s) => s.authorization === `Bearer ${SECRETS[0]}`), JSON.stringify(viaLocalhost));
    // API_TOKEN's rule only matches api.example.com: requests to localhost never carry it.
    assert.ok(viaLocalhost.every((s) => s.token === null), JSON.stringify(viaLocalhost));

    // PATCH error cases, then the rotation.
    await assert.rejects(client.instances.update(created.id, { env: { PORT: "1" } }), (e) =>
      e instanceof Hypeman.BadRequestError &&
      e.error.message === "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OPENAI_KEY REAL_TOKEN]");
    await assert.rejects(client.instances.update(created.id, { env: { OPENAI_KEY: " " } }), (e) =>
      e instanceof Hypeman.BadRequestError && /must be non-empty/.test(e.error.message));
    await assert.rejects(client.instances.update(created.id, {}), (e) =>
      e instanceof Hypeman.BadRequestError &&
      e.error.message === "invalid request: request must include env, auto_standby, health_check, and/or restart_policy");
    await assert.rejects(client.instances.update(created.id, { env: {} }), (e) =>
      e instanceof Hypeman.BadRequestError && e.error.code === "Bad Request");
    const plain = await client.instances.create({ name: "plain", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: ["sleep 600"] },
      { timeout: 240_000 });
    await assert.rejects(client.instances.update(plain.id, { env: { OPENAI_KEY: "x" } }), (e) =>
      e instanceof Hypeman.BadRequestError &&
      e.error.message === "invalid request: instance has no credential-backed env vars to update");
    await client.instances.delete(plain.id);
    const before = await client.instances.get(created.id);
    const pidFile = path.join(dataDir, "instances", created.id, "run", "qemu.pid");
    const pidBefore = readFileSync(pidFile, "utf8").trim();
    const rotated = await client.instances.update(created.id, { env: { OPENAI_KEY: SECRETS[1] } });
    assert.equal(rotated.env.OPENAI_KEY, SECRETS[1]);
    const mark = seen.length;
    await waitFor(() => seen.slice(mark).some((s) => s.host.startsWith("localhost")), "a request after the rotation", 60_000);
    const after = seen.slice(mark).filter((s) => s.host.startsWith("localhost"));
    assert.ok(after.every((s) => s.authorization === `Bearer ${SECRETS[1]}`), JSON.stringify(after));
    const now = await client.instances.get(created.id);
    assert.equal(now.state, "Running");
    assert.equal(now.started_at, before.started_at, "no restart");
    assert.equal(readFileSync(pidFile, "utf8").trim(), pidBefore, "same QEMU process");

    // Restart-safe: a new engine re-registers the rules from the keychain.
    await server.stop("SIGKILL");
    pastOutputs.push(server.output());
    server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1", HYPEDECK_EGRESS_TEST_LISTENER: "1" });
    client = server.client();
    const mark2 = seen.length;
    await waitFor(() => seen.slice(mark2).some((s) => s.host.startsWith("localhost")), "requests after an engine restart", 60_000);
    assert.ok(seen.slice(mark2).filter((s) => s.host.startsWith("localhost")).every((s) => s.authorization === `Bearer ${SECRETS[1]}`));
    const again = await client.instances.update(created.id, { env: { OPENAI_KEY: SECRETS[0] } });
    assert.equal(again.env.OPENAI_KEY, SECRETS[0]);

    await client.instances.stop(created.id);
    await assert.rejects(client.instances.update(created.id, { env: { OPENAI_KEY: "x" } }), (e) =>
      e instanceof Hypeman.ConflictError &&
      e.error.message === "invalid state transition: instance must be running or initializing to update env (current state: Stopped)");
    await client.instances.delete(created.id);
  });

  test("rotating every few ms under load: each request carries one value, never a stale one", async () => {
    const created = await client.instances.create({
      name: "rotator", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB",
      env: { OPENAI_KEY: "sk-load-0" },
      network: { egress: { enabled: true } },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
      cmd: ["sleep 3600"],
    }, { timeout: 240_000 });
    const meta = JSON.parse(readFileSync(path.join(dataDir, "instances", created.id, "metadata.json"), "utf8"));
    const proxyPort = meta.network.proxy_port;
    assert.ok(proxyPort > 0, JSON.stringify(meta.network));
    const ca = readFileSync(path.join(dataDir, "egress", "ca.crt"));
    const upPort = upstream.address().port;

    // One HTTPS request through the instance's proxy listener (what the guest's traffic uses).
    const viaProxy = (id) => new Promise((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: proxyPort, method: "CONNECT", path: `localhost:${upPort}` });
      req.on("connect", (res, socket) => {
        if (res.statusCode !== 200) return reject(new Error(`CONNECT ${res.statusCode}`));
        const tls = tlsConnect({ socket, ca, servername: "localhost" }, () => {
          tls.write(`GET / HTTP/1.1\r\nHost: localhost:${upPort}\r\nX-Req: ${id}\r\nConnection: close\r\n\r\n`);
        });
        let body = "";
        tls.on("data", (d) => (body += d));
        tls.on("end", () => resolve(body));
        tls.on("error", reject);
      });
      req.on("error", reject);
      req.end();
    });

    const rotations = []; // [index, completedAt]
    let stop = false;
    const rotate = (async () => {
      for (let i = 1; !stop; i++) {
        await client.instances.update(created.id, { env: { OPENAI_KEY: `sk-load-${i}` } });
        rotations.push([i, Date.now()]);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const sent = []; // [id, sentAt]
    const deadline = Date.now() + 4000;
    for (let n = 0; Date.now() < deadline; n++) {
      const id = `load-${n}`;
      sent.push([id, Date.now()]);
      await viaProxy(id);
    }
    stop = true;
    await rotate;
    assert.ok(rotations.length >= 10, `only ${rotations.length} rotations`);
    assert.ok(sent.length >= 20, `only ${sent.length} requests`);
    for (const [id, sentAt] of sent) {
      const got = seen.find((s) => s.id === id);
      assert.ok(got, `request ${id} never arrived`);
      const m = /^Bearer sk-load-(\d+)$/.exec(got.authorization ?? "");
      assert.ok(m, `request ${id} carried ${got.authorization}`);
      const carried = Number(m[1]);
      // Every rotation that completed before this request was sent must be visible.
      const newest = rotations.filter(([, at]) => at < sentAt).reduce((a, [i]) => Math.max(a, i), 0);
      assert.ok(carried >= newest, `request ${id} carried sk-load-${carried} after sk-load-${newest} was in force`);
    }
    await client.instances.delete(created.id);
  });

  test("the trail shows each use and its fingerprint; leaks and plain HTTP are blocked; a command supplies the value", async () => {
    const port = upstream.address().port;
    const [first, second] = ["sk-trail-from-command", "sk-trail-rotated-value"];
    const H = `https://localhost:${port}/`;
    const O = `https://127.0.0.1:${port}/`;
    const probe = (label, args) => `curl -s -o /dev/null --max-time 20 -w '${label}-%{http_code}\\n' ${args}`;
    const script = [
      probe("CRED", `-H 'X-Req: trail-cred' ${H}`),
      probe("MOCKBODY", `-d "key=$OPENAI_KEY" ${O}`),
      // The guest learns a real value some other way and tries to send it elsewhere.
      probe("LEAK", `-H 'X-Req: trail-leak' -d 'key=${first}' ${O}`),
      probe("PLAIN", `http://localhost:${port}/`),
      probe("MOCKHDR", `-H "Authorization: Bearer $OPENAI_KEY" ${O}`),
      "echo PROBES-DONE",
      `while true; do curl -s -o /dev/null --max-time 20 -H 'X-Req: trail-loop' ${H}; sleep 1; done`,
    ].join("; ");
    // References are the local user's: set over the engine's Unix socket (over HTTP they are
    // refused; tests/sdk/references.test.mjs).
    const local = localClient(dataDir, client.apiKey);
    const created = await local.instances.create({
      name: "trail", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: [script],
      env: { OPENAI_KEY: `cmd:printf ${first}` },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    }, { timeout: 240_000 });
    // The reference is what the API shows; the value came from the command, on the host.
    assert.equal(created.env.OPENAI_KEY, `cmd:printf ${first}`);
    const lines = await waitFor(async () => {
      const l = await logLines(client, created.id);
      return l.includes("PROBES-DONE") && l;
    }, "the guest's probes", 180_000);
    for (const expected of ["CRED-200", "MOCKBODY-200", "LEAK-403", "PLAIN-403", "MOCKHDR-200"]) {
      assert.ok(lines.includes(expected), `${expected} missing:\n${lines.join("\n")}`);
    }
    assert.ok(seen.some((s) => s.id === "trail-cred" && s.authorization === `Bearer ${first}`), JSON.stringify(seen.slice(-10)));
    assert.ok(!bodies.some((b) => b.includes(first)), "the upstream never received the leaked value");
    assert.ok(bodies.some((b) => b === "key=mock-OPENAI_KEY"), "the mock in a body goes anywhere");

    const path_ = `/instances/${created.id}/credentials/events`;
    const events = await waitFor(async () => {
      const e = await client.get(path_, { query: { limit: 100 } });
      return e.some((x) => x.outcome === "leak_blocked") && e.some((x) => x.reason?.startsWith("plain http")) && e;
    }, "the trail", 30_000);
    const byOutcome = (o) => events.filter((e) => e.outcome === o);
    const injected = byOutcome("injected");
    assert.ok(injected.length >= 1);
    // The fingerprint the API reports for the value in force (the engine's) is the one the
    // proxy recorded for the requests that carried it.
    const [{ fingerprint: fpFirst }] = await client.get(`/instances/${created.id}/credentials`);
    assertKeyedFingerprint(fpFirst, first);
    assert.deepEqual(
      [injected.at(-1).credential, injected.at(-1).host, injected.at(-1).status, injected.at(-1).fingerprint, injected.at(-1).method],
      ["OPENAI_KEY", "localhost", 200, fpFirst, "GET"]);
    assert.deepEqual(
      [byOutcome("leak_blocked")[0].host, byOutcome("leak_blocked")[0].method, byOutcome("leak_blocked")[0].fingerprint],
      ["127.0.0.1", "POST", fpFirst]);
    assert.ok(byOutcome("blocked").some((e) => e.host === "localhost" && e.reason === "plain http to a credential host is refused; use https"));
    assert.ok(byOutcome("blocked").some((e) => e.host === "127.0.0.1" && e.status === 200 && e.reason.startsWith("host not allowed")));
    // Newest first.
    assert.ok(events[0].time >= events.at(-1).time);

    // Rotation: the very next request carries (and records) the new fingerprint.
    await local.instances.update(created.id, { env: { OPENAI_KEY: `cmd:printf ${second}` } });
    const status = await waitFor(async () => {
      const [c] = await client.get(`/instances/${created.id}/credentials`);
      return c.first_use_of_current && c;
    }, "a request with the rotated value", 60_000);
    const fpSecond = status.fingerprint;
    assertKeyedFingerprint(fpSecond, second);
    assert.notEqual(fpSecond, fpFirst, "the fingerprint did not follow the rotation");
    assert.equal(status.first_use_of_current.fingerprint, fpSecond);
    assert.equal(status.last_used.fingerprint, fpSecond);
    assert.equal(status.reference, `cmd:printf ${second}`);
    assert.ok(status.first_use_of_current.time > status.rotated_at || status.first_use_of_current.time.slice(0, 19) >= status.rotated_at.slice(0, 19));
    assert.ok(status.blocked >= 3, JSON.stringify(status));

    // Test credential: from the host, through the same rules; recorded as a test.
    const tested = await client.post(`/instances/${created.id}/credentials/test`, { body: { url: H } });
    assert.deepEqual(tested, { status: 200, injected: [["OPENAI_KEY", fpSecond]] });
    assert.ok(seen.some((s) => s.agent === "hypedeck-credential-test" && s.authorization === `Bearer ${second}`));
    const latest = await client.get(path_, { query: { limit: 5 } });
    assert.ok(latest.some((e) => e.outcome === "test" && e.fingerprint === fpSecond));
    await assert.rejects(client.post(`/instances/${created.id}/credentials/test`, { body: { url: O } }), (e) =>
      e instanceof Hypeman.BadRequestError && /no credential of this instance is injected for 127\.0\.0\.1/.test(e.error.message));

    // No value in the trail file.
    const trailFile = readFileSync(path.join(dataDir, "instances", created.id, "credentials.jsonl"), "utf8");
    assert.ok(trailFile.includes("leak_blocked"));
    for (const v of [first, second]) {
      assert.ok(!trailFile.includes(v), "a value in the trail file");
      // Nor an unkeyed hash anyone could test guesses against.
      assert.ok(!trailFile.includes(createHash("sha256").update(v).digest("hex").slice(0, 8)), "an unkeyed hash in the trail file");
    }
    await client.instances.delete(created.id);
  });

  test("no secret value is left in the data dir, the engines' output or test artifacts", async () => {
    // Secrets of requests that are refused must not come back in the error either.
    const refused = ["sk-refused-patch-value", "sk-refused-create-value", "sk-pull-password-value"];
    const created = await client.instances.create({
      name: "sweep", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: ["sleep 600"],
      env: { OPENAI_KEY: "sk-sweep-value" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    }, { timeout: 240_000 });
    SECRETS.push("sk-sweep-value");
    await assert.rejects(client.instances.update(created.id, { env: { NOT_A_CREDENTIAL: refused[0] } }), (e) =>
      e instanceof Hypeman.BadRequestError && !JSON.stringify(e.error).includes(refused[0]));
    await assert.rejects(client.instances.create({
      name: "Not_A_Name", image: `${registry.host}/vm/curl:1`, env: { OPENAI_KEY: refused[1] },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "${value}" } }] } },
    }), (e) => e instanceof Hypeman.BadRequestError && !JSON.stringify(e.error).includes(refused[1]));
    // Pull credentials are borrowed for one pull, never kept.
    const pulled = await client.images.create({
      name: `${registry.host}/vm/busybox:1`, credentials: { username: "ci", password: refused[2] },
    });
    assert.ok(!JSON.stringify(pulled).includes(refused[2]));
    await waitFor(async () => (await client.images.get(pulled.name)).status === "ready", "the credentialed pull");
    // A crash: the killed engine's output is swept too.
    await server.stop("SIGKILL");
    pastOutputs.push(server.output());
    server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1", HYPEDECK_EGRESS_TEST_LISTENER: "1" });
    client = server.client();
    // The VM outlived its engine: the new one reattaches to it.
    await waitFor(async () => (await client.instances.get(created.id)).state === "Running", "the sweep VM after the restart", 120_000);

    // The sweep instance stays until the scan: its metadata, console, VMM and ops logs count.
    // Every value Hypedeck keeps in the keychain (the API token, the egress CA key, credential
    // values) is a needle too; PEM keys by their base64 lines.
    const needles = new Set([...SECRETS, ...refused]);
    for (const value of keychainValues("hypedeck")) {
      const lines = value.split("\n").map((l) => l.trim());
      if (lines.length > 1) lines.filter((l) => l.length >= 40 && !l.startsWith("-----")).forEach((l) => needles.add(l));
      else if (value.length >= 8) needles.add(value);
    }
    assert.ok([...needles].some((n) => n.length >= 60), "the CA key and the API token were found in the keychain");

    const walk = (dir) => readdirSync(dir).flatMap((n) => {
      const p = path.join(dir, n);
      const st = statSync(p);
      if (st.isDirectory()) return walk(p);
      return st.isFile() && st.size < 64 * 1024 * 1024 ? [p] : [];
    });
    const artifacts = existsSync("test-results") ? walk("test-results") : [];
    const files = [...walk(dataDir), ...artifacts];
    assert.ok(files.some((f) => f.endsWith("app.log")) && files.some((f) => f.endsWith("metadata.json")), files.join("\n"));
    for (const file of files) {
      const text = readFileSync(file).toString("latin1");
      for (const needle of needles) assert.ok(!text.includes(needle), `a secret (${needle.slice(0, 6)}…) found in ${file}`);
    }
    const outputs = [...pastOutputs, server.output()];
    assert.equal(outputs.length >= 3, true, "outputs of the killed engines are kept");
    for (const [i, output] of outputs.entries()) {
      for (const needle of needles) assert.ok(!output.includes(needle), `a secret (${needle.slice(0, 6)}…) in engine output #${i}`);
    }
    await client.instances.delete(created.id);
  });

});
