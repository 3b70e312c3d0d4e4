// Resource use in headless Chromium against a fake-backed `hypedeck serve`, whose VMs report the
// engine process's own pid (real, non-zero CPU seconds and RSS, sampled every 2 s): the instance
// page's Stats tab draws CPU, memory, network and disk from `GET /instances/{id}/stats/history`
// and says in text what the engine's samples say; a stopped instance gets a sentence instead; the
// list draws a CPU sparkline per running instance from one `GET /stats` poll; the header sums the
// sandboxes' memory and names each one's share; servers without these extensions get no header
// summary and no CPU column, and the tab keeps its own history of upstream's
// `GET /instances/{id}/stats`. axe-core finds no WCAG 2 A/AA violation in light and dark.
// Run by tests/desktop/run.sh (SUITES=browser); screenshots go to test-results/ui-stats-*.png.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, row, runningInstance, assertAccessible } from "./harness.mjs";


const ui = browserUi("ui-stats");
before(() => ui.start());
after(() => ui.stop());

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

/** The Stats tab of `id` with its four charts drawn from at least `points` points each. */
async function openStats(t, id, options, points = 3) {
  const opened = await ui.openInstance(t, id, options);
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

  test("the list draws a CPU sparkline per running instance from one GET /stats poll; the header sums the sandboxes' memory", async (t) => {
    const a = await runningInstance(ui.engine, "spark-a");
    const b = await runningInstance(ui.engine, "spark-b");
    const off = await runningInstance(ui.engine, "spark-off");
    cleanup(t, [a, b, off]);
    await ui.engine.client.instances.stop(off.id);
    await samples(a.id, 3);
    await samples(b.id, 3);

    for (const scheme of ["light", "dark"]) {
      const { page, apiCalls } = await ui.openConnected(t, { colorScheme: scheme });
      await row(page, off.id).waitFor({ timeout: 10_000 });
      const spark = row(page, a.id).locator('svg.spark[role="img"]');
      await spark.waitFor({ timeout: 10_000 });
      assert.match(await spark.getAttribute("aria-label"), /^CPU of spark-a, last minute: [\d.]+% now$/);
      await waitFor(async () => Number(await spark.getAttribute("data-spark-points")) >= 2, "a line of two points");
      assert.match(await spark.locator("path").getAttribute("d"), /^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)+/);
      await row(page, b.id).locator("svg.spark").waitFor();
      assert.equal(await row(page, off.id).locator("svg.spark").count(), 0, "no sparkline for a stopped instance");
      assert.equal(await page.locator("#instances-table th.cpu").textContent(), "CPU");
      // The column fits: the table does not overflow the window.
      const overflow = await page.evaluate(() => document.querySelector("#instances-table").getBoundingClientRect().right - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `the table is ${overflow}px too wide`);

      // The header: the guests' resident memory of the host's, and each one's share.
      const summary = (await page.locator("#host-summary-text").textContent()).trim();
      const m = /^Sandboxes: ([\d.]+ (?:B|KiB|MiB|GiB)) of ([\d.]+ (?:MiB|GiB|TiB))$/.exec(summary);
      assert.ok(m, summary);
      const fleet = await api("/stats");
      assert.ok(Math.abs(parseBytes(m[2]) - fleet.host_memory_bytes) / fleet.host_memory_bytes < 0.06, `${m[2]} vs ${fleet.host_memory_bytes}`);
      assert.ok(parseBytes(m[1]) > 0);
      const bar = page.locator("#host-summary .host-bar > span");
      const titles = await bar.evaluateAll((s) => s.map((x) => x.title));
      for (const name of ["spark-a", "spark-b"]) assert.ok(titles.some((x) => x.startsWith(`${name}: `)), titles.join(" | "));
      assert.ok(!titles.some((x) => x.startsWith("spark-off")), titles.join(" | "));
      await page.click("#host-summary-button");
      assert.equal(await page.getAttribute("#host-summary-button", "aria-expanded"), "true");
      const shares = page.locator("#host-shares li");
      await shares.first().waitFor();
      const listed = (await shares.allTextContents()).map((s) => s.trim());
      for (const name of ["spark-a", "spark-b"]) {
        assert.ok(
          listed.some((s) => new RegExp(`^${name}: [\\d.]+ (KiB|MiB|GiB), [\\d.]+% of sandboxes' memory, [\\d.]+% of the host's$`).test(s)),
          listed.join(" | "),
        );
      }
      assert.ok(!listed.some((s) => s.startsWith("spark-off")), listed.join(" | "));
      await shot(page, `list-${scheme}`);
      await assertAccessible(page, `the list with sparklines and the open summary (${scheme})`);
      // Escape closes the popover, gives the focus back, and leaves the page where it is.
      await page.keyboard.press("Escape");
      await page.locator("#host-panel").waitFor({ state: "detached" });
      assert.equal(await page.getAttribute("#host-summary-button", "aria-expanded"), "false");
      assert.equal(await page.evaluate(() => document.activeElement?.id), "host-summary-button");
      assert.equal(await page.locator("#instances-view").isVisible(), true);

      // One poll of GET /stats every 2 s for the whole list, and no request per row.
      const start = apiCalls.length;
      await page.waitForTimeout(4_500);
      const since = apiCalls.slice(start);
      const polls = since.filter((c) => c === "GET /stats").length;
      assert.ok(polls >= 2 && polls <= 3, `${polls} polls of GET /stats: ${since.join(", ")}`);
      assert.deepEqual(
        since.filter((c) => /\/instances\/[^/]+\/stats/.test(c)),
        [],
      );
    }
  });

  test("servers without the extensions: no summary, no CPU column, no error; the tab keeps its own history of upstream's stats", async (t) => {
    const web = await runningInstance(ui.engine, "stats-upstream");
    cleanup(t, [web]);
    const { page, apiCalls } = await ui.openConnected(t, {}).then(async (opened) => {
      // Connected first: the page takes the link off its address at once but remembers the
      // connection only once it is using it; a reload in between would open the connect form.
      await opened.page.locator("#conn-mode", { hasText: "browser" }).waitFor();
      // Answer like upstream Hypeman: 404 for Hypedeck's routes (with CORS, as the server would).
      await opened.page.route(/\/(stats|stats\/history)$/, (route) =>
        route.request().method() === "OPTIONS" || route.request().url().endsWith(`/instances/${web.id}/stats`)
          ? route.continue()
          : route.fulfill({
              status: 404,
              contentType: "application/json",
              headers: { "access-control-allow-origin": "*" },
              body: JSON.stringify({ code: "not_found", message: "no such route" }),
            }),
      );
      await opened.page.reload();
      return opened;
    });
    await row(page, web.id).waitFor({ timeout: 10_000 });
    await page.waitForTimeout(2_500);
    assert.ok(apiCalls.includes("GET /stats"), apiCalls.join(", "));
    assert.equal(await page.locator("#host-summary").count(), 0);
    assert.equal(await page.locator("#instances-table th.cpu").count(), 0);
    assert.equal(await page.locator("svg.spark").count(), 0);
    assert.equal(await page.locator("#banner:visible, .banner:visible").count(), 0);

    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), web.id);
    await page.click("#detail-tab-stats");
    await waitFor(async () => Number(await page.locator("#chart-cpu").getAttribute("data-points").catch(() => 0)) >= 2, "two samples kept by the page", 20_000);
    assert.ok(apiCalls.includes(`GET /instances/${web.id}/stats`), apiCalls.join(", "));
    assert.match(await page.locator("#stats-source").textContent(), /Sampled by this page/);
    assert.match(await page.locator("#chart-disk").textContent(), /does not count the bytes guests read and write/);
    assert.equal(await page.locator("#stats-error").count(), 0);
    await assertAccessible(page, "the Stats tab kept by the page");
    await shot(page, "upstream");
  });
});
