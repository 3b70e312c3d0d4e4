// Starts `$HYPEDECK_FAKE_BIN serve --hypervisor fake` on a fresh data dir and a free loopback
// port, the way a user runs `hypedeck serve` next to the desktop app. Shared by the desktop and
// browser suites. Needs a keychain (Secret Service) in the session.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Hypeman from "@onkernel/hypeman";

/** Absolute path of a binary named by an environment variable. */
export function binary(envName, fallback) {
  const value = process.env[envName] ?? fallback;
  if (!value) throw new Error(`set ${envName}`);
  return path.resolve(value);
}

/** Polls `fn` until it returns something truthy. */
export async function waitFor(fn, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** A fresh, empty data dir. */
export function freshDataDir(prefix) {
  return mkdtempSync(path.join(tmpdir(), `hypedeck-${prefix}-`));
}

/** `hypedeck status` for a data dir: the URL of the engine serving it, or null. */
export function engineUrl(bin, dataDir) {
  const out = execFileSync(bin, ["--data-dir", dataDir, "status"]).toString();
  return out.match(/^running: (\S+)/)?.[1] ?? null;
}

/** `hypedeck token` for a data dir (from the keychain). */
export function engineToken(bin, dataDir) {
  return execFileSync(bin, ["--data-dir", dataDir, "token"]).toString().trim();
}

/** An SDK client that fails fast. */
export function sdk(url, token) {
  return new Hypeman({ baseURL: url, apiKey: token, maxRetries: 0, timeout: 10_000 });
}

/** Runs a fake-backed `hypedeck serve` until `stop()`; `env` adds to the environment. */
export async function startFakeEngine(prefix = "fake", env = {}) {
  const bin = binary("HYPEDECK_FAKE_BIN");
  const dataDir = freshDataDir(prefix);
  const child = spawn(
    bin,
    ["--data-dir", dataDir, "serve", "--listen", "127.0.0.1:0", "--hypervisor", "fake"],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HYPEDECK_LOG: "warn", ...env } },
  );
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  try {
    const url = await waitFor(() => {
      if (child.exitCode !== null) throw new Error(`serve exited: ${output}`);
      return engineUrl(bin, dataDir);
    }, "hypedeck serve to listen");
    const token = engineToken(bin, dataDir);
    return {
      url,
      token,
      dataDir,
      client: sdk(url, token),
      output: () => output,
      async stop() {
        if (child.exitCode === null) {
          child.kill("SIGTERM");
          await exited;
        }
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
}
