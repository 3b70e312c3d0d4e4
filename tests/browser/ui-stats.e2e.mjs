// Resource use in headless Chromium against a fake-backed `hypedeck serve`, whose VMs report the
// engine process's own pid (real, non-zero CPU seconds and RSS, sampled every 2 s): the instance
// page's Stats tab draws CPU, memory, network and disk from `GET /instances/{id}/stats/history`
// and says in text what the engine's samples say; a stopped instance gets a sentence instead.
// axe-core finds no WCAG 2 A/AA violation in light and dark.
// Run by tests/desktop/run.sh (SUITES=browser); screenshots go to test-results/ui-stats-*.png.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, runningInstance } from "./harness.mjs";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");

const ui = browserUi("ui-stats");
before(() => ui.start());
after(() => ui.stop());

async function assertAccessible(page, what) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa"] } });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n${v.nodes.map((n) => `    ${n.target.join(" ")}: ${n.failureSummary?.replaceAll("\n", " ")}`).join("\n")}`);
  });
  assert.deepEqual(violations, [], `${what}:\n${violations.join("\n")}`);
}

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, `ui-stats-${name}.png`), fullPage: true });
}

/** GET on the engine's API, as JSON. */
async function api(route) {
  const res = await fetch(`${ui.engine.url}${route}`, { headers: { Authorization: `Bearer ${ui.engine.token}` } });
  assert.equal(res.status, 200, `GET ${route}`);
  return res.json();
}

const history = (id) => api(`/instances/${id}/stats/history`);

/** The instance's history once it has `n` samples. */
const samples = (id, n) => waitFor(async () => ((await history(id)).samples.length >= n ? history(id) : null), `${n} samples of ${id}`, 20_000);

/** `"231 MiB"` back to bytes (the UI's units, binary). */
function parseBytes(text) {
  const m = /^([\d.]+) (B|KiB|MiB|GiB|TiB)$/.exec(text.trim());
  assert.ok(m, `bytes: ${text}`);
  return Number(m[1]) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].indexOf(m[2]);
}

/** CPU % of each interval of a history (what the UI computes), newest last. */
function cpuRates(h) {
  const out = [];
  for (let i = 1; i < h.samples.length; i++) {
    const [a, b] = [h.samples[i - 1], h.samples[i]];
    const d = b.cpu_seconds - a.cpu_seconds;
    if (d >= 0) out.push(Math.min(100, Math.max(0, (d / ((b.at_ms - a.at_ms) / 1000) / Math.max(1, h.allocated_vcpus)) * 100)));
  }
  return out;
}

async function openInstance(t, id, options) {
  const { page, apiCalls } = await ui.openConnected(t, options);
  await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
  await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), id);
  await page.locator(`#instance-view[data-instance-id="${id}"]`).waitFor({ timeout: 10_000 });
  return { page, apiCalls };
}

/** The Stats tab of `id` with its four charts drawn from at least `points` points each. */
async function openStats(t, id, options, points = 3) {
  const opened = await openInstance(t, id, options);
  await opened.page.click("#detail-tab-stats");
  await opened.page.locator('figure.chart[data-chart="disk"]').waitFor({ timeout: 10_000 });
  await waitFor(
    async () => (await opened.page.locator("figure.chart[data-points]").evaluateAll((fs) => fs.map((f) => Number(f.dataset.points)))).filter((n) => n >= points).length === 4,
    `four charts with ${points} points`,
  );
  return opened;
}

const cleanup = (t, instances) =>
  t.after(async () => {
    for (const i of instances) await ui.engine.client.instances.delete(i.id).catch(() => {});
  });

describe("resource use", () => {
  test("the Stats tab draws four charts whose text agrees with the engine's samples; a stopped instance gets a sentence", async (t) => {
    const web = await runningInstance(ui.engine, "stats-web", { vcpus: 2 });
    const idle = await runningInstance(ui.engine, "stats-idle");
    cleanup(t, [web, idle]);
    await ui.engine.client.instances.stop(idle.id);
    const first = await samples(web.id, 4);
    // The fake's VMs are the engine process: real numbers.
    assert.ok(first.samples.at(-1).memory_rss_bytes > 0, "RSS");
    assert.ok(first.samples.at(-1).cpu_seconds > 0, "CPU seconds");
    assert.equal(first.allocated_vcpus, 2);

    const { page, apiCalls } = await openStats(t, web.id);
    // The tab follows the WAI-ARIA pattern like the others, between Snapshots and Network.
    assert.equal(await page.locator("#detail-tab-stats").getAttribute("aria-selected"), "true");
    assert.equal(await page.locator("#detail-panel-stats").isVisible(), true);
    await page.locator("#detail-tab-stats").focus();
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "detail-tab-network");
    await page.keyboard.press("ArrowLeft");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "detail-tab-stats");
    assert.equal(await page.locator("#detail-panel-stats").isVisible(), true);
    await page.locator("#chart-cpu .chart-plot canvas").waitFor();

    // Four figures, each named by its caption, with a drawn canvas and an image named by its values.
    const figures = page.locator("#stats figure.chart");
    assert.deepEqual(await figures.evaluateAll((fs) => fs.map((f) => f.dataset.chart)), ["cpu", "memory", "network", "disk"]);
    assert.deepEqual((await figures.locator("figcaption h3").allTextContents()).map((s) => s.trim()), ["CPU", "Memory", "Network", "Disk"]);
    for (const name of ["cpu", "memory", "network", "disk"]) {
      const figure = page.locator(`#chart-${name}`);
      assert.equal(await figure.getAttribute("aria-labelledby"), `chart-${name}-caption`);
      assert.equal(await figure.locator(".chart-plot canvas").count(), 1, `${name} canvas`);
      const box = await figure.locator(".chart-plot canvas").boundingBox();
      assert.ok(box.width > 200 && box.height > 100, `${name} canvas size ${JSON.stringify(box)}`);
      const label = await figure.locator('.chart-plot[role="img"]').getAttribute("aria-label");
      assert.match(label, /over the last \d+ seconds?: .+\. Peaks? .+\.$/, label);
    }

    // What the text says is what the engine sampled (read after the page, so the API has at
    // least the samples the page drew).
    const cpuNow = Number(await page.locator("#chart-cpu").getAttribute("data-now"));
    const cpuText = (await page.locator('#chart-cpu [data-field="now"]').textContent()).trim();
    const memNow = Number(await page.locator("#chart-memory").getAttribute("data-now"));
    const memText = (await page.locator('#chart-memory [data-field="now"]').textContent()).trim();
    const netText = (await page.locator('#chart-network [data-field="now"]').textContent()).trim();
    const diskText = (await page.locator('#chart-disk [data-field="now"]').textContent()).trim();
    const h = await history(web.id);
    const rates = cpuRates(h);
    assert.ok(
      rates.slice(-4).some((r) => Math.abs(r - cpuNow) < 1e-6),
      `the page's CPU ${cpuNow} is one of the engine's last rates ${rates.slice(-4).join(", ")}`,
    );
    const m = /^([\d.]+)% of 2 vCPUs$/.exec(cpuText);
    assert.ok(m, cpuText);
    assert.ok(Math.abs(Number(m[1]) - cpuNow) <= 0.51, `${cpuText} vs ${cpuNow}`);
    const rss = h.samples.slice(-4).map((s) => s.memory_rss_bytes);
    assert.ok(rss.includes(memNow), `the page's RSS ${memNow} is one of the engine's last ${rss.join(", ")}`);
    const mem = /^(.+) resident of (.+) allocated \(([\d.]+)%\)$/.exec(memText);
    assert.ok(mem, memText);
    assert.ok(Math.abs(parseBytes(mem[1]) - memNow) / memNow < 0.06, `${memText} vs ${memNow}`);
    assert.equal(parseBytes(mem[2]), h.allocated_memory_bytes);
    assert.match(netText, /^[\d.]+ (B|KiB|MiB)\/s received, [\d.]+ (B|KiB|MiB)\/s sent$/);
    assert.match(diskText, /^[\d.]+ (B|KiB|MiB)\/s read, [\d.]+ (B|KiB|MiB)\/s written$/);
    assert.match(await page.locator("#stats-source").textContent(), /Sampled by the engine every 2 s/);

    // It polls the history every 2 s while shown, and stops when another tab is.
    await page.waitForTimeout(4_500);
    const polls = apiCalls.filter((c) => c === `GET /instances/${web.id}/stats/history`).length;
    assert.ok(polls >= 3, `${polls} polls`);
    await page.click("#detail-tab-overview");
    const hidden = apiCalls.length;
    await page.waitForTimeout(4_500);
    assert.equal(apiCalls.slice(hidden).filter((c) => c.includes("/stats/history")).length, 0, apiCalls.slice(hidden).join(", "));
    await page.click("#detail-tab-stats");
    await page.locator("#chart-cpu .chart-plot canvas").waitFor();
    await shot(page, "tab-light");
    await assertAccessible(page, "the Stats tab (light)");

    // Hovering a chart reads out the values under the cursor, on every chart at once.
    const plot = await page.locator("#chart-cpu .u-over").boundingBox();
    await page.mouse.move(plot.x + plot.width * 0.6, plot.y + plot.height / 2);
    await waitFor(async () => /^\d{1,2}:\d\d:\d\d( [AP]M)? · CPU [\d.]+%$/.test(await page.locator("#chart-cpu .chart-readout").textContent()), "the CPU readout");
    assert.match(await page.locator("#chart-memory .chart-readout").textContent(), /· RSS [\d.]+ (KiB|MiB|GiB)$/);
    await shot(page, "tab-hover");

    // A stopped instance: a sentence, no chart, and no polling.
    const before = apiCalls.length;
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), idle.id);
    await page.locator(`#instance-view[data-instance-id="${idle.id}"]`).waitFor();
    await page.click("#detail-tab-stats");
    const none = page.locator("#stats-none");
    await none.waitFor();
    assert.equal(
      (await none.textContent()).trim(),
      "stats-idle is Stopped: no VMM runs, so there is no CPU, memory, network or disk use to show. Start it to see its graphs.",
    );
    assert.equal(await page.locator("#detail-panel-stats figure").count(), 0);
    await page.waitForTimeout(2_500);
    assert.equal(apiCalls.slice(before).filter((c) => c.includes(`/instances/${idle.id}/stats`)).length, 0);
    await assertAccessible(page, "the Stats tab of a stopped instance");
    await shot(page, "stopped");
  });

  test("dark: the charts take the theme's colours (and follow a switch), axe-core finds nothing", async (t) => {
    const web = await runningInstance(ui.engine, "stats-dark");
    cleanup(t, [web]);
    await samples(web.id, 4);
    const { page } = await openStats(t, web.id, { colorScheme: "dark" });
    await shot(page, "tab-dark");
    await assertAccessible(page, "the Stats tab (dark)");
    const colours = () =>
      page.evaluate(() => {
        // The CPU line's colour, read off the canvas: the most common non-background pixel.
        const canvas = document.querySelector("#chart-cpu canvas");
        const ctx = canvas.getContext("2d");
        const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
        const counts = new Map();
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] < 250) continue;
          const key = `${data[i]},${data[i + 1]},${data[i + 2]}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        return { pixels: [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k]) => k), chart: getComputedStyle(document.documentElement).getPropertyValue("--chart-1").trim() };
      });
    const hex = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)).join(",");
    const dark = await colours();
    assert.equal(dark.chart, "#8b96ff");
    assert.ok(dark.pixels.includes(hex("#8b96ff")), `the dark line colour is drawn: ${dark.pixels.join(" ")}`);
    // The settings' theme switch (data-theme) redraws the canvas in the light colours.
    const canvas = await page.locator("#chart-cpu canvas").elementHandle();
    await page.evaluate(() => (document.documentElement.dataset.theme = "light"));
    await waitFor(() => canvas.evaluate((c) => !c.isConnected), "the plot to be made again");
    await waitFor(async () => (await colours()).pixels.includes(hex("#4b5bdc")), "the light line colour");
    await assertAccessible(page, "the Stats tab switched to light");
  });
});
