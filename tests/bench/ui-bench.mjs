// Benchmark (not a test): the desktop window's cold start to first paint, and how long the
// instances list takes to render 1,000 instances. Writes a results table to stdout;
// `make bench-ui` appends it to BENCHMARKS.md (BENCH_OUT).
//
// Needs a display (Xvfb), a D-Bus session with an unlocked Secret Service, and:
//   APP_BIN            the desktop app (release build)
//   HYPEDECK_FAKE_BIN  `hypedeck` built with --features fake-hypervisor
//   CHROMIUM_BIN       headless Chromium (default /usr/bin/chromium)
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

import { freshDataDir, startFakeEngine, waitFor } from "../desktop/fake-engine.mjs";
import { median, report } from "./report.mjs";

const APP = path.resolve(process.env.APP_BIN ?? "target/release/hypedeck-desktop");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const LAUNCHES = Number(process.env.BENCH_LAUNCHES ?? 7);
const INSTANCES = Number(process.env.BENCH_INSTANCES ?? 1000);
const PAGE_LOADS = Number(process.env.BENCH_PAGE_LOADS ?? 5);

const fmt = (x) => x.toFixed(0);

/** Starts the app on a fresh data dir until it reports its first paint; returns the ms. */
async function launchOnce() {
  const dataDir = freshDataDir("bench-paint");
  const file = path.join(dataDir, "first-paint.ms");
  const child = spawn(APP, [], {
    stdio: "ignore",
    env: { ...process.env, HYPEDECK_DATA_DIR: dataDir, HYPEDECK_FIRST_PAINT_FILE: file, NO_AT_BRIDGE: "1" },
  });
  const exited = new Promise((r) => child.on("exit", r));
  try {
    const text = await waitFor(() => existsSync(file) && readFileSync(file, "utf8"), "the first paint", 60_000);
    return Number(text);
  } finally {
    child.kill("SIGTERM");
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Creates `n` instances on the fake engine, 16 at a time. */
async function populate(client, n) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await client.instances.create({
        name: `bench-${String(i).padStart(4, "0")}`,
        image: "docker.io/library/alpine:latest",
        vcpus: 1 + (i % 4),
        tags: { shard: String(i % 10) },
      });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/** Opens the UI against the engine and reads the list-render measures the page records. */
async function listRender(browser, uiUrl, engine) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  try {
    const url = new URL(uiUrl);
    url.searchParams.set("api", engine.url);
    url.searchParams.set("token", engine.token);
    const t0 = Date.now();
    await page.goto(url.href);
    await page.waitForFunction((n) => document.body.dataset.rows === String(n), INSTANCES, { timeout: 60_000 });
    const firstRows = Date.now() - t0;
    // Let two more polls re-render the same 1,000 instances.
    await page.waitForFunction(() => performance.getEntriesByName("hypedeck:list-render").length >= 3, null, { timeout: 20_000 });
    const measures = await page.evaluate(() => performance.getEntriesByName("hypedeck:list-render").map((e) => e.duration));
    const t1 = Date.now();
    await page.fill("#filter-text", "bench-09");
    const expected = Array.from({ length: INSTANCES }, (_, i) => `bench-${String(i).padStart(4, "0")}`).filter((n) => n.includes("bench-09")).length;
    await page.waitForFunction((n) => document.body.dataset.rows === String(n), expected, { timeout: 10_000 });
    const filter = Date.now() - t1;
    return { firstRows, first: measures[0], repoll: measures.at(-1), filter };
  } finally {
    await page.close();
  }
}

async function main() {
  const rows = [];
  if (existsSync(APP)) {
    const paints = [];
    await launchOnce(); // warms the page cache; not counted
    for (let i = 0; i < LAUNCHES; i++) paints.push(await launchOnce());
    rows.push(["Desktop cold start → first paint (process start to first frame)", `${fmt(median(paints))} ms`, `min ${fmt(Math.min(...paints))}, max ${fmt(Math.max(...paints))}, n=${LAUNCHES}`]);
  } else {
    console.error(`no ${APP}; skipping the start-up measure`);
  }

  const engine = await startFakeEngine("bench-ui");
  const preview = spawn("./node_modules/.bin/vite", ["preview", "--config", "ui/vite.config.ts", "--host", "127.0.0.1", "--port", "4179", "--strictPort"], { stdio: "ignore" });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const t0 = Date.now();
    await populate(engine.client, INSTANCES);
    const createMs = Date.now() - t0;
    await waitFor(async () => (await fetch("http://127.0.0.1:4179/")).ok, "vite preview");
    const runs = [];
    for (let i = 0; i < PAGE_LOADS; i++) runs.push(await listRender(browser, "http://127.0.0.1:4179/", engine));
    rows.push([`List render, ${INSTANCES} instances (data in → rows laid out)`, `${fmt(median(runs.map((r) => r.first)))} ms`, `median of ${PAGE_LOADS} page loads, headless Chromium`]);
    rows.push([`List re-render on a poll, ${INSTANCES} unchanged instances`, `${fmt(median(runs.map((r) => r.repoll)))} ms`, "every 2 s while the list is open"]);
    rows.push([`Page load → ${INSTANCES} rows on screen`, `${fmt(median(runs.map((r) => r.firstRows)))} ms`, "includes GET /instances (fake engine, debug build)"]);
    rows.push([`Filter ${INSTANCES} rows by name (typing in search)`, `${fmt(median(runs.map((r) => r.filter)))} ms`, "keystroke to rows laid out, via Playwright"]);
    rows.push([`Engine: create ${INSTANCES} instances (fake hypervisor, 16 in flight)`, `${fmt(createMs)} ms`, "context for the list figures"]);
  } finally {
    await browser.close();
    preview.kill("SIGTERM");
    await engine.stop();
  }

  report("UI: start-up and list rendering", "Xvfb, WebKitGTK (desktop), Chromium (list)", rows);
}

await main();
