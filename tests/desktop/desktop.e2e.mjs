// The real Hypedeck window (Tauri + WebKitGTK) driven through tauri-driver. Needs a display
// (Xvfb), a D-Bus session with an unlocked Secret Service, tauri-driver on TAURI_DRIVER_PORT,
// and the binaries in APP_BIN (the desktop app) and HYPEDECK_FAKE_BIN (`hypedeck` built with
// --features fake-hypervisor). tests/desktop/run.sh sets all of that up.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { describe, test } from "node:test";
import { remote } from "webdriverio";

import {
  binary,
  engineToken,
  engineUrl,
  freshDataDir,
  sdk,
  startFakeEngine,
  waitFor,
} from "./fake-engine.mjs";
import { assertKeyedFingerprint } from "../fingerprint.mjs";

const APP = binary("APP_BIN", "target/debug/hypedeck-desktop");
const FAKE = binary("HYPEDECK_FAKE_BIN");
const DRIVER_PORT = Number(process.env.TAURI_DRIVER_PORT ?? 4444);
const RESULTS = path.resolve("test-results");

/**
 * Replaces the text of a filled input as a user does: select all, then type. WebDriver's
 * `setValue` clears the field behind React's back (no input event React counts), and a
 * re-render in between puts the old text back, so the new text would be appended to it.
 */
async function retype(app, selector, text) {
  const input = app.$(selector);
  await input.click();
  await app.keys(["Control", "a"]);
  // Element send keys keeps a focused field's selection, so the typing replaces it.
  await input.addValue(text);
  assert.equal(await input.getValue(), text, `${selector} holds what was typed`);
}

/** Registers cleanups for test `t` that run last-in, first-out once it ends. */
function deferrer(t) {
  const stack = [];
  t.after(async () => {
    while (stack.length) await stack.pop()();
  });
  return (fn) => stack.push(fn);
}

const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * Opens the app's window with `env` added to its environment. tauri-driver only passes a binary
 * and arguments, so the app is started through a two-line launcher script.
 */
async function openApp(defer, env) {
  const dir = freshDataDir("launcher");
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const launcher = path.join(dir, "hypedeck-desktop");
  // Each launch has its own settings file unless the test names one.
  env = { HYPEDECK_CONFIG_DIR: path.join(dir, "config"), ...env };
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`);
  writeFileSync(launcher, ["#!/bin/sh", ...exports, `exec ${shellQuote(APP)} "$@"`, ""].join("\n"));
  chmodSync(launcher, 0o755);
  const app = await remote({
    hostname: "127.0.0.1",
    port: DRIVER_PORT,
    logLevel: "warn",
    capabilities: {
      "tauri:options": { application: launcher },
      "wdio:enforceWebDriverClassic": true,
    },
  });
  defer(() => app.deleteSession().catch(() => {})); // closes the app
  return app;
}

/** Waits until `selector` reads `expected`; on timeout, says what it read and what the banner said. */
async function textOf(app, selector, expected, timeout = 20_000) {
  const el = app.$(selector);
  try {
    await el.waitUntil(async () => (await el.getText()) === expected, { timeout });
  } catch {
    const last = await el.getText().catch(() => "?");
    const banner = await app.$("#error").getText().catch(() => "?");
    assert.fail(`${selector} reads ${JSON.stringify(last)}, not ${JSON.stringify(expected)}; banner: ${JSON.stringify(banner)}`);
  }
}

/**
 * Listens on `port` so the app cannot. The previous test's app may still be letting go of it,
 * so retry for a while; a port still busy after that is taken anyway, which is the point.
 */
async function occupy(port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const server = createServer();
    const error = await new Promise((resolve) => {
      server.once("error", resolve);
      server.listen(port, "127.0.0.1", () => resolve(null));
    });
    if (error === null) return server;
    if (error.code !== "EADDRINUSE") throw error;
    if (Date.now() > deadline) return server;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Saves what the window shows once the page has painted its latest DOM. */
async function screenshot(app, name) {
  await app.executeAsync((done) => requestAnimationFrame(() => requestAnimationFrame(() => done())));
  mkdirSync(RESULTS, { recursive: true });
  await app.saveScreenshot(path.join(RESULTS, name));
}

describe("desktop window", () => {
  test("embedded: starts its own engine on a fresh data dir and shows it empty", async (t) => {
    const defer = deferrer(t);
    const dataDir = freshDataDir("desktop-embedded");
    defer(() => rmSync(dataDir, { recursive: true, force: true }));
    const paintFile = path.join(dataDir, "first-paint.ms");
    const app = await openApp(defer, { HYPEDECK_DATA_DIR: dataDir, HYPEDECK_FIRST_PAINT_FILE: paintFile });

    await textOf(app, "#conn-mode", "embedded");
    assert.equal(await app.getTitle(), "Hypedeck");
    // The page told the shell it painted, and the shell measured it from process start.
    const painted = await waitFor(() => existsSync(paintFile) && readFileSync(paintFile, "utf8"), "first_paint");
    assert.match(painted, /^\d+\n$/);
    assert.ok(Number(painted) > 0 && Number(painted) < 60_000, painted);
    assert.equal(await app.$("h1").getText(), "Hypedeck");
    await app.$("#empty").waitForDisplayed({ timeout: 10_000 });
    assert.equal(await app.$("#empty p").getText(), "No instances yet");
    assert.equal(await app.$("#error").isDisplayed(), false);

    // The window's API is the app's own engine: it answers, it is the one advertised for the
    // data dir, and its token (kept in the keychain) works with the SDK.
    const url = await app.$("#conn-url").getText();
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    assert.equal(engineUrl(FAKE, dataDir), url);
    const token = engineToken(FAKE, dataDir);
    assert.deepEqual(await sdk(url, token).instances.list(), []);
    assert.ok(!(await app.$("body").getText()).includes(token), "the page shows the token");
  });

  test("embedded: serves on another port when 4973 is taken", async (t) => {
    const defer = deferrer(t);
    const squatter = await occupy(4973);
    defer(() => new Promise((resolve) => squatter.close(() => resolve())));
    const dataDir = freshDataDir("desktop-port");
    defer(() => rmSync(dataDir, { recursive: true, force: true }));
    const app = await openApp(defer, { HYPEDECK_DATA_DIR: dataDir });

    await textOf(app, "#conn-mode", "embedded");
    const url = await app.$("#conn-url").getText();
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(new URL(url).port, "4973");
    assert.equal((await fetch(`${url}/health`)).status, 200);
    await app.$("#empty").waitForDisplayed({ timeout: 10_000 });
  });

  test("attached: finds the engine `hypedeck serve` runs and lists its instances", async (t) => {
    const defer = deferrer(t);
    const engine = await startFakeEngine("desktop-attached");
    defer(() => engine.stop());
    const created = await engine.client.instances.create({
      name: "desktop-e2e",
      image: "docker.io/library/alpine:latest",
      vcpus: 1,
      size: "1GB",
    });
    await waitFor(
      async () => (await engine.client.instances.get(created.id)).state === "Running",
      "the fake VM to run",
    );

    const app = await openApp(defer, { HYPEDECK_DATA_DIR: engine.dataDir });
    await textOf(app, "#conn-mode", "attached");
    assert.equal(await app.$("#conn-url").getText(), engine.url);

    const row = app.$(`tr[data-instance-id="${created.id}"]`);
    await row.waitForDisplayed({ timeout: 10_000 });
    assert.equal(await row.$("td.name").getText(), "desktop-e2e");
    await waitFor(async () => (await row.$("td.state").getText()) === "Running", "Running badge");
    assert.equal(await row.$("td.image").getText(), "docker.io/library/alpine:latest");
    assert.equal(await row.$("td.vcpus").getText(), "1");
    assert.equal(await app.$("#empty").isDisplayed(), false);
    assert.equal(await app.$("#error").isDisplayed(), false);

    await screenshot(app, "desktop.png");
  });

  test("rotation: two clicks in the window change the credential live", async (t) => {
    const defer = deferrer(t);
    const engine = await startFakeEngine("desktop-rotate");
    defer(() => engine.stop());
    const created = await engine.client.instances.create({
      name: "rotate-e2e",
      image: "docker.io/library/alpine:latest",
      env: { AGENT_TOKEN: "tok-desktop-initial" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        AGENT_TOKEN: {
          source: { env: "AGENT_TOKEN" },
          inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }],
        },
      },
    });
    const running = await waitFor(async () => {
      const i = await engine.client.instances.get(created.id);
      return i.state === "Running" && i;
    }, "the fake VM to run");

    const app = await openApp(defer, { HYPEDECK_DATA_DIR: engine.dataDir });
    await textOf(app, "#conn-mode", "attached");
    const row = app.$(`tr[data-instance-id="${created.id}"]`);
    await row.waitForDisplayed({ timeout: 10_000 });
    await row.$("td.name").click(); // WebKit's WebDriver clicks cells, not rows

    // The form lists exactly the instance's credential source keys.
    const field = app.$('#rotate-form input[data-key="AGENT_TOKEN"]');
    await field.waitForDisplayed({ timeout: 10_000 });
    assert.equal(await app.$$("#rotate-form input[data-key]").length, 1);
    assert.equal(await field.getAttribute("type"), "password");
    await field.setValue("tok-desktop-rotated");
    await app.$("#rotate-submit").click();
    const result = app.$("#rotate-result");
    await result.waitForDisplayed({ timeout: 10_000 });
    assert.match(await result.getText(), /AGENT_TOKEN\. No restart/);

    // The engine has the new value (it reads it back from the keychain) on the same run.
    const after = await engine.client.instances.get(created.id);
    assert.equal(after.env.AGENT_TOKEN === "tok-desktop-rotated", true, "the engine did not get the new value");
    assert.equal(after.started_at, running.started_at);
    assert.equal(after.state, "Running");
    const [{ fingerprint: rotatedFingerprint }] = await engine.client.get(`/instances/${created.id}/credentials`);
    assertKeyedFingerprint(rotatedFingerprint, "tok-desktop-rotated");
    await app.execute(() => window.scrollTo(0, 0));
    await screenshot(app, "desktop-rotation.png");

    // A secret reference typed in the window: the window is the user at this machine, so the
    // shell sends the rotation over the engine's Unix socket and the engine runs it. The same
    // request over HTTP (any token holder) is refused.
    await assert.rejects(
      engine.client.instances.update(created.id, { env: { AGENT_TOKEN: "cmd:echo tok-over-http" } }),
      /only by the user at this machine/,
    );
    await field.setValue("cmd:echo tok-from-the-window");
    await app.$("#rotate-submit").click();
    await waitFor(async () => {
      if (await app.$("#rotate-error").isDisplayed()) throw new Error(`the window says: ${await app.$("#rotate-error").getText()}`);
      return (await engine.client.instances.get(created.id)).env.AGENT_TOKEN === "cmd:echo tok-from-the-window";
    }, "the window's reference rotation");
    const [status] = await engine.client.get(`/instances/${created.id}/credentials`);
    assert.equal(status.reference_kind, "cmd");
    assertKeyedFingerprint(status.fingerprint, "tok-from-the-window");
    assert.notEqual(status.fingerprint, rotatedFingerprint, "the fingerprint did not follow the rotation");
    // The command printed exactly that value: the same value set as a literal has the same
    // fingerprint.
    await engine.client.instances.update(created.id, { env: { AGENT_TOKEN: "tok-from-the-window" } });
    const [literal] = await engine.client.get(`/instances/${created.id}/credentials`);
    assert.equal(literal.reference, undefined);
    assert.equal(literal.fingerprint, status.fingerprint);

    // A key the policies do not name: the API's 400, with the allowed keys, shown inline.
    await app.$("#rotate-paste").setValue("PORT=8080");
    await app.$("#rotate-submit").click();
    const error = app.$("#rotate-error");
    await error.waitForDisplayed({ timeout: 10_000 });
    assert.match(await error.getText(), /env keys \[PORT\] are not credential source env vars; allowed keys: \[AGENT_TOKEN\]/);
    assert.equal((await engine.client.instances.get(created.id)).env.PORT, undefined);
  });

  test("remote: a second server is added in the window, its key kept in the keychain only", async (t) => {
    const defer = deferrer(t);
    const home = await startFakeEngine("desktop-home");
    defer(() => home.stop());
    const remote = await startFakeEngine("desktop-remote");
    defer(() => remote.stop());
    const created = await remote.client.instances.create({ name: "on-the-remote", image: "docker.io/library/alpine:latest" });

    const app = await openApp(defer, { HYPEDECK_DATA_DIR: home.dataDir });
    await textOf(app, "#conn-mode", "attached");
    await app.$("#remote-new").click();
    await app.$("#remote-name").setValue("lab");
    await app.$("#remote-url").setValue(remote.url);
    await app.$("#remote-key").setValue(remote.token);
    await app.$("#remote-save").click();
    await textOf(app, "#conn-mode", "remote");
    assert.equal(await app.$("#conn-url").getText(), remote.url);
    const row = app.$(`tr[data-instance-id="${created.id}"]`);
    await row.waitForDisplayed({ timeout: 10_000 });
    // The shell measured the remote (Rust client, authenticated call).
    const health = app.$("#conn-health");
    await health.waitUntil(async () => (await health.getAttribute("data-code")) === "ok", { timeout: 10_000 });
    assert.match(await health.getText(), /^\d+ ms$/);

    // The list file names the remote; the key is only in the keychain.
    const file = path.join(home.dataDir, "desktop", "remotes.json");
    const listed = readFileSync(file, "utf8");
    assert.match(listed, /"name": "lab"/);
    assert.ok(!listed.includes(remote.token), "the API key is in remotes.json");

    // A wrong key: the shell's health check says so in words.
    await app.$("#remote-new").click();
    await app.$("#remote-name").setValue("lab-wrong");
    await app.$("#remote-url").setValue(remote.url);
    await app.$("#remote-key").setValue("hdk_wrong_desktop_key");
    await app.$("#remote-save").click();
    await health.waitUntil(async () => (await health.getAttribute("data-code")) === "unauthorized", { timeout: 10_000 });
    assert.equal(
      await health.getText(),
      `${remote.url.replace("http://", "")} refused the API key (401: security requirements failed: invalid token)`,
    );
    // Nothing of the previous remote's list stays on screen under the refused one.
    await row.waitForDisplayed({ reverse: true, timeout: 10_000 });
    await screenshot(app, "desktop-remote.png");

    // Neither key is anywhere the app or the engines wrote: the app's data dir (list file,
    // engine logs), both engines' output, the app's output (tauri-driver's log).
    const keys = [remote.token, "hdk_wrong_desktop_key"];
    const walk = (dir) => readdirSync(dir).flatMap((n) => {
      const p = path.join(dir, n);
      const st = statSync(p);
      return st.isDirectory() ? walk(p) : st.isFile() ? [p] : [];
    });
    const written = walk(home.dataDir).map((f) => [f, readFileSync(f).toString("latin1")]);
    written.push(["home engine output", home.output()], ["remote engine output", remote.output()]);
    if (existsSync("test-results/tauri-driver.log")) {
      written.push(["tauri-driver.log", readFileSync("test-results/tauri-driver.log", "latin1")]);
    }
    assert.ok(written.some(([f]) => f.endsWith("remotes.json")), written.map(([f]) => f).join("\n"));
    for (const [where, text] of written) {
      for (const key of keys) assert.ok(!text.includes(key), `a remote's API key is in ${where}`);
    }
  });

  test("without a keychain the window still opens and says why", async (t) => {
    const defer = deferrer(t);
    const dataDir = freshDataDir("desktop-nokeychain");
    defer(() => rmSync(dataDir, { recursive: true, force: true }));
    const app = await openApp(defer, {
      HYPEDECK_DATA_DIR: dataDir,
      DBUS_SESSION_BUS_ADDRESS: `unix:path=${path.join(dataDir, "no-bus")}`,
    });

    await textOf(app, "#conn-mode", "unavailable");
    const banner = app.$("#error");
    await banner.waitForDisplayed({ timeout: 10_000 });
    assert.equal(await app.$("#error-code").getText(), "engine_unavailable");
    assert.match(await app.$("#error-message").getText(), /keychain/);
    // The shell's own checks say what is missing and how to fix it; nothing can start yet.
    const check = app.$("#check-keychain");
    await check.waitForDisplayed({ timeout: 15_000 });
    assert.equal(await check.getAttribute("data-status"), "missing");
    assert.match(await app.$("#check-keychain .check-fix").getText(), /gnome-keyring/);
    assert.equal(await app.$("#setup-continue").isEnabled(), false);
    await screenshot(app, "desktop-no-keychain.png");
  });

  test("settings: saved to the config file with per-field errors; start-time ones ask for a restart", async (t) => {
    const defer = deferrer(t);
    const dataDir = freshDataDir("desktop-settings");
    const configDir = freshDataDir("desktop-config");
    defer(() => rmSync(dataDir, { recursive: true, force: true }));
    defer(() => rmSync(configDir, { recursive: true, force: true }));
    const app = await openApp(defer, { HYPEDECK_DATA_DIR: dataDir, HYPEDECK_CONFIG_DIR: configDir });
    await textOf(app, "#conn-mode", "embedded");
    await app.$("#settings-tab").click();
    await app.$("#settings-save").waitForDisplayed({ timeout: 10_000 });
    // Desktop-only fields are there.
    assert.equal(await app.$("#settings-data-dir").isDisplayed(), true);

    // Bad values: each error lands next to its field, nothing is written.
    await app.$("#settings-data-dir").setValue("relative/dir");
    await app.$("#settings-listen").setValue("localhost");
    await app.$("#settings-console-log-max").setValue("1KB");
    await app.$("#settings-save").click();
    const dataError = app.$('.field-error[data-field="data_dir"]');
    await dataError.waitForDisplayed({ timeout: 10_000 });
    assert.equal(await dataError.getText(), "relative/dir is not an absolute path");
    assert.equal(await app.$('.field-error[data-field="listen"]').getText(), '"localhost" is not an address like 127.0.0.1:4973');
    assert.equal(await app.$('.field-error[data-field="console_log_max"]').getText(), "1KB is less than 64KB");
    const file = path.join(configDir, "settings.json");
    assert.equal(existsSync(file), false);

    // Good values: saved, and the data dir change waits for a restart.
    const newData = path.join(configDir, "data");
    await retype(app, "#settings-data-dir", newData);
    await retype(app, "#settings-listen", "127.0.0.1:4999");
    await retype(app, "#settings-console-log-max", "256MB");
    await app.$("#settings-default-memory").setValue("768MB");
    await app.$("#settings-theme").selectByAttribute("value", "dark");
    await app.$("#settings-save").click();
    const saved = app.$("#settings-saved");
    // Whatever the save ends in (saved, field errors, a failure), say which.
    const outcome = async () => {
      if (await saved.isDisplayed()) return "saved";
      const errors = [];
      for (const e of await app.$$(".field-error, #settings-error")) errors.push(await e.getText());
      return errors.length ? `not saved: ${errors.join("; ")}` : null;
    };
    await app.waitUntil(outcome, { timeout: 10_000, timeoutMsg: "the save neither finished nor failed in 10 s" });
    assert.equal(await outcome(), "saved");
    assert.match(await saved.getText(), /restart Hypedeck/);
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), {
      data_dir: newData,
      default_memory: "768MB",
      listen: "127.0.0.1:4999",
      console_log_max: "256MB",
      theme: "dark",
    });
    assert.equal(await app.execute(() => document.documentElement.dataset.theme), "dark");
    // The create form starts from the defaults.
    await app.$("#new-instance").click();
    await app.$("#create-memory").waitForDisplayed();
    assert.equal(await app.$("#create-memory").getValue(), "768MB");
  });
});
