// Starts a real `hypedeck serve` on a fresh data dir and a free loopback port, and hands the
// official Hypeman SDK a client for it. Needs a keychain (Secret Service) in the session.
import { spawn, execFileSync } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";
import { waitFor } from "../vm/harness.mjs";

export function binary(envName, fallback) {
  return path.resolve(process.env[envName] ?? fallback);
}

/**
 * `dataDir`: serve an existing data dir (kept on stop; e.g. to restart on it) instead of a
 * fresh one (removed on stop).
 */
export async function startServer({ bin, args = [], env = {}, listen = "127.0.0.1:0", dataDir: given }) {
  const dataDir = given ?? mkdtempSync(path.join(tmpdir(), "hypedeck-sdk-"));
  const child = spawn(bin, ["--data-dir", dataDir, "serve", "--listen", listen, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HYPEDECK_LOG: process.env.HYPEDECK_SERVER_LOG_LEVEL ?? "warn", ...env },
  });
  let output = "";
  // HYPEDECK_SERVER_LOG=<file>: the server's output goes there too, as it comes (for a run
  // that hangs; HYPEDECK_SERVER_LOG_LEVEL=debug says more).
  const log = process.env.HYPEDECK_SERVER_LOG;
  const keep = (d) => {
    output += d;
    if (log) appendFileSync(log, d);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const url = await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`serve exited: ${output}`);
    const status = execFileSync(bin, ["--data-dir", dataDir, "status"]).toString();
    const m = status.match(/^running: (\S+)/);
    // The URL must answer: never hand out a stale endpoint.
    return m && (await fetch(`${m[1]}/health`)).ok ? m[1] : undefined;
  }, "hypedeck serve to listen", 15_000);
  const token = execFileSync(bin, ["--data-dir", dataDir, "token"]).toString().trim();
  const client = (options = {}) =>
    new Hypeman({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 10_000, ...options });
  return {
    url,
    token,
    dataDir,
    client,
    output: () => output,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      if (!given) rmSync(dataDir, { recursive: true, force: true });
    },
    /** SIGKILL, as a crash: the data dir stays as the engine left it. */
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}
