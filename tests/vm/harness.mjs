// Real-VM suite harness: a registry on 127.0.0.1 serving images this suite builds, and
// `hypedeck serve` (the shipped binary, QEMU backend) on a fresh data dir.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";
import WebSocket from "ws";

const here = path.dirname(new URL(import.meta.url).pathname);

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export async function waitFor(fn, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message ?? last}` : ""}`);
}

/**
 * Waits until the instance is Stopped and returns the state it ended in. Upstream's wait
 * also returns at Shutdown (the guest powered off, its VMM not gone yet), a state that
 * passes on its own within moments, so this waits again while it lasts.
 */
export async function waitStopped(client, id, timeoutMs = 250_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = Math.max(1, Math.min(240, Math.floor((deadline - Date.now()) / 1000)));
    const r = await client.instances.wait(id, { state: "Stopped", timeout: `${left}s` }, { timeout: left * 1000 + 10_000 });
    if (r.state !== "Shutdown" || Date.now() >= deadline) return r.state;
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** A registry on 127.0.0.1 with the suite's images (tests/vm/images.sh). */
export async function startRegistry() {
  const registry = await startEmptyRegistry();
  execFileSync(path.join(here, "images.sh"), [registry.host], { stdio: ["ignore", process.stderr, "inherit"] });
  return registry;
}

/** An empty `docker-registry` on a free port of 127.0.0.1, its storage in a temp dir. */
export async function startEmptyRegistry() {
  const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-registry-"));
  const port = await freePort();
  const config = path.join(dir, "config.yml");
  writeFileSync(config, `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${dir}/data}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:${port}"}\n`);
  const child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  const exited = new Promise((r) => child.on("exit", r));
  const host = `127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`http://${host}/v2/`)).ok, "the registry");
  return {
    host,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `hypedeck serve` on `dataDir`. Templates are off unless `env` turns them on
 * (`HYPEDECK_TEMPLATES: "auto"`): each first start of a shape would boot one more VM in the
 * background, and the suites other than templates.test.mjs test cold boots.
 */
export async function startServer(bin, dataDir, env = {}) {
  const child = spawn(bin, ["--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HYPEDECK_LOG: "info", HYPEDECK_TEMPLATES: "off", ...env },
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise((r) => child.on("exit", r));
  const url = await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`serve exited: ${output}`);
    const m = execFileSync(bin, ["--data-dir", dataDir, "status"]).toString().match(/^running: (\S+)/);
    // The URL must answer: never hand out a stale endpoint.
    return m && (await fetch(`${m[1]}/health`)).ok ? m[1] : undefined;
  }, "hypedeck serve");
  const token = execFileSync(bin, ["--data-dir", dataDir, "token"]).toString().trim();
  return {
    url,
    pid: child.pid,
    output: () => output,
    client: (o = {}) => new Hypeman({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 120_000, ...o }),
    async stop(signal = "SIGTERM") {
      child.kill(signal);
      await exited;
    },
  };
}

export function newDataDir() {
  return mkdtempSync(path.join(tmpdir(), "hypedeck-vm-"));
}

/// Collects a log stream (follow=false) into lines.
export async function logLines(client, id, params = {}) {
  const lines = [];
  for await (const line of await client.instances.logs(id, { tail: 1000, ...params })) lines.push(line);
  return lines;
}

/// Deletes every instance the engine knows (so a failed test never leaves a VM running).
export async function deleteAll(client) {
  try {
    for (const i of await client.instances.list()) {
      await client.instances.delete(i.id).catch(() => {});
    }
  } catch {
    // The engine is already gone; nothing to clean through it.
  }
}

/// A throw-away test CA and a server certificate for `localhost`/127.0.0.1 (openssl), for
/// HTTPS upstreams on loopback. The caller removes `dir`.
export function makeTestPki(prefix = "hypedeck-pki-") {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  const run = (args) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", "/CN=hypedeck test upstream CA", "-keyout", "ca.key", "-out", "ca.pem"]);
  run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
    "-keyout", "srv.key", "-out", "srv.csr"]);
  writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run(["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
    "-extfile", "ext.cnf", "-out", "srv.pem"]);
  return {
    dir,
    ca: path.join(dir, "ca.pem"),
    cert: readFileSync(path.join(dir, "srv.pem")),
    key: readFileSync(path.join(dir, "srv.key")),
  };
}

/**
 * Runs one exec session over upstream's WebSocket framing against the engine at `url`: sends
 * `request` (upstream's ExecRequest), then `input` (an array of frames: Buffers are binary,
 * strings and objects are text), collecting output until {"exitCode":N}. Resolves
 * {output, exitCode}, or {status, body} when the engine refuses before the upgrade.
 */
export function execWs(url, token, id, request, input = []) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/instances/${id}/exec`, { headers: { Authorization: `Bearer ${token}` } });
    const chunks = [];
    let exitCode;
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
    });
    ws.on("open", async () => {
      ws.send(JSON.stringify(request));
      for (const frame of input) {
        await new Promise((r) => setTimeout(r, 300));
        if (Buffer.isBuffer(frame)) ws.send(frame, { binary: true });
        else ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
      }
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) chunks.push(Buffer.from(data));
      else exitCode = JSON.parse(data.toString()).exitCode;
    });
    ws.on("close", () => resolve({ output: Buffer.concat(chunks).toString(), exitCode }));
    ws.on("error", reject);
  });
}

/**
 * A Hypeman client over the engine's Unix socket (`<dataDir>/api.sock`): the user at this
 * machine, who may set secret references (op://, keychain:, cmd:); over HTTP they are refused.
 */
export function localClient(dataDir, token, options = {}) {
  const socketPath = path.join(dataDir, "api.sock");
  const fetchOverSocket = (url, init = {}) =>
    new Promise((resolve, reject) => {
      const u = new URL(url);
      const headers = {};
      new Headers(init.headers).forEach((v, k) => (headers[k] = v));
      const req = http.request({ socketPath, method: init.method ?? "GET", path: u.pathname + u.search, headers }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const flat = Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]);
          resolve(new Response(res.statusCode === 204 ? null : Buffer.concat(chunks), { status: res.statusCode, headers: flat }));
        });
      });
      req.on("error", reject);
      init.signal?.addEventListener("abort", () => req.destroy(new Error("aborted")));
      req.end(init.body ?? undefined);
    });
  return new Hypeman({ baseURL: "http://localhost", apiKey: token, maxRetries: 0, timeout: 120_000, fetch: fetchOverSocket, ...options });
}

/**
 * An HTTPS upstream on 127.0.0.1 (its own test CA, `pki.ca` for the egress proxy) that records
 * every request's `X-From` (the guest's hostname, which guests set) and `Authorization` (what
 * the proxy injected). `requestsFrom(name)` lists one guest's.
 */
export async function startRecordingUpstream(prefix) {
  const { createServer } = await import("node:https");
  const pki = makeTestPki(prefix);
  const seen = [];
  const server = createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    seen.push({ from: req.headers["x-from"] ?? null, authorization: req.headers.authorization ?? null });
    res.end("ok\n");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    pki,
    seen,
    port: () => server.address().port,
    requestsFrom: (name) => seen.filter((s) => s.from === name),
    close() {
      server.close();
      rmSync(pki.dir, { recursive: true, force: true });
    },
  };
}

/** The API error an SDK call fails with, as `{status, code, message}` (fails when it succeeds). */
export async function apiError(promise) {
  try {
    await promise;
  } catch (e) {
    return { status: e.status, ...e.error };
  }
  throw new Error("expected an error");
}
