// What every browser suite shares: a fake-backed `hypedeck serve` and headless Chromium
// (playwright-core) for the file's tests, a fresh page per test, and small lookups. Needs a
// D-Bus session with an unlocked Secret Service and HYPEDECK_FAKE_BIN; tests/desktop/run.sh
// sets all of that up and serves ui/dist at UI_URL.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { chromium } from "playwright-core";

import { startFakeEngine, waitFor } from "../desktop/fake-engine.mjs";

export const UI_URL = process.env.UI_URL ?? "http://127.0.0.1:4173/";
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const RESULTS = path.resolve("test-results");

/** Headless Chromium with the flags that work in CI's sandbox-less containers. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/**
 * A fake engine (data dir prefix `name`) and a browser for one test file: call `start()` in
 * the file's `before` and `stop()` in its `after`. `engine` and `browser` are set by `start()`.
 *
 *   const ui = browserUi("forms");
 *   before(() => ui.start());
 *   after(() => ui.stop());
 */
export function browserUi(name, env = {}) {
  const ui = {
    engine: null,
    browser: null,
    /**
     * A fresh page (own storage) at UI_URL with `query` in its address, recording every request
     * it sends to the API in `apiCalls` ("GET /instances").
     */
    async openPage(t, query, { viewport = { width: 1100, height: 720 }, colorScheme } = {}) {
      const context = await ui.browser.newContext({ viewport, colorScheme });
      t.after(() => context.close());
      const page = await context.newPage();
      const apiCalls = [];
      page.on("request", (r) => {
        if (r.url().startsWith(ui.engine.url)) apiCalls.push(`${r.method()} ${new URL(r.url()).pathname}`);
      });
      const url = new URL(UI_URL);
      for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
      await page.goto(url.href);
      return { page, apiCalls };
    },
    /** `openPage` already connected to this file's engine. */
    openConnected(t, options) {
      return ui.openPage(t, { api: ui.engine.url, token: ui.engine.token }, options);
    },
    /** A connected page showing instance `id`, its API calls and console errors. */
    async openInstance(t, id, options) {
      const { page, apiCalls } = await ui.openConnected(t, options);
      const consoleErrors = [];
      page.on("console", (m) => m.type() === "error" && consoleErrors.push(`${m.text()} @ ${m.location()?.url ?? ""}`));
      page.on("pageerror", (e) => consoleErrors.push(e.message));
      await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
      await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), id);
      await page.locator(`#instance-view[data-instance-id="${id}"]`).waitFor({ timeout: 10_000 });
      return { page, apiCalls, consoleErrors };
    },
    async start() {
      ui.engine = await startFakeEngine(name, env);
      ui.browser = await launchChromium();
    },
    async stop() {
      await ui.browser?.close();
      await ui.engine?.stop();
    },
  };
  return ui;
}

/** The instance list's row of instance `id`. */
export const row = (page, id) => page.locator(`tr[data-instance-id="${id}"]`);

/** A Running instance on the fake backend. */
export async function runningInstance(engine, name, extra = {}) {
  const created = await engine.client.instances.create({
    name,
    image: "docker.io/library/alpine:latest",
    vcpus: 1,
    size: "1GB",
    ...extra,
  });
  await waitFor(
    async () => (await engine.client.instances.get(created.id)).state === "Running",
    `${name} to run`,
  );
  return created;
}

const AXE = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

/** Runs axe-core on the page (WCAG 2 A and AA rules) and fails with every violation named. */
export async function assertAccessible(page, what) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa"] } });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n${v.nodes.map((n) => `    ${n.target.join(" ")}: ${n.failureSummary?.replaceAll("\n", " ")}`).join("\n")}`);
  });
  assert.deepEqual(violations, [], `${what}:\n${violations.join("\n")}`);
}
