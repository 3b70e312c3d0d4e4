// The window a Docker Desktop or OrbStack user keeps open: the instance list, images, connecting
// and accessibility, in headless Chromium against a fake-backed `hypedeck serve` (and, for
// images, the shipped `hypedeck serve`, whose image cache the fake lacks). Accessibility is
// checked with axe-core against WCAG 2 A/AA in light and dark. tests/desktop/run.sh sets up
// the session; screenshots go to test-results/.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";

import { waitFor } from "../desktop/fake-engine.mjs";
import { newDataDir, startServer } from "../vm/harness.mjs";
import { RESULTS, browserUi, row, runningInstance, assertAccessible } from "./harness.mjs";


const ui = browserUi("ui-fleet");
before(() => ui.start());
after(() => ui.stop());

/** What has the keyboard focus: `#id`, `row:<instance id>` or the tag name. */
const focused = (page) =>
  page.evaluate(() => {
    const e = document.activeElement;
    if (!e) return null;
    if (e.dataset.instanceId) return `row:${e.dataset.instanceId}`;
    return e.id ? `#${e.id}` : e.tagName.toLowerCase();
  });

/** Deletes the instances a test made, whatever it did with them. */
const cleanup = (t, engine, instances) =>
  t.after(async () => {
    for (const i of instances) await engine.client.instances.delete(i.id).catch(() => {});
  });

const stateOf = async (engine, id) => (await engine.client.instances.get(id)).state;

/**
 * A registry on 127.0.0.1 serving one image (`<host>/slow/blob:1`, one file of random bytes in a
 * gzip layer) whose layer it sends slowly, so a pull stays in flight long enough to watch.
 */
async function startSlowRegistry({ layerBytes = 3 * 1024 * 1024, bytesPerSecond = 600 * 1024 } = {}) {
  const sha = (b) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
  // One regular file in a ustar archive.
  const data = randomBytes(layerBytes);
  const header = Buffer.alloc(512);
  const field = (text, at, len) => header.write(text, at, len, "ascii");
  field("payload.bin", 0, 100);
  field("0000644\0", 100, 8);
  field("0000000\0", 108, 8);
  field("0000000\0", 116, 8);
  field(`${data.length.toString(8).padStart(11, "0")}\0`, 124, 12);
  field("00000000000\0", 136, 12);
  field("        ", 148, 8);
  field("0", 156, 1);
  field("ustar\0", 257, 6);
  field("00", 263, 2);
  let sum = 0;
  for (const b of header) sum += b;
  field(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  const tar = Buffer.concat([header, data, pad, Buffer.alloc(1024)]);
  const layer = gzipSync(tar, { level: 1 });
  const arch = process.arch === "arm64" ? "arm64" : "amd64";
  const config = Buffer.from(JSON.stringify({ architecture: arch, os: "linux", config: { Cmd: ["/payload.bin"] }, rootfs: { type: "layers", diff_ids: [sha(tar)] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha(layer), size: layer.length }],
    }),
  );
  const blobs = new Map([
    [sha(config), config],
    [sha(layer), layer],
  ]);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/v2/" || url.pathname === "/v2") return res.end("{}");
    if (/^\/v2\/slow\/blob\/manifests\//.test(url.pathname)) {
      res.writeHead(200, { "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": sha(manifest), "Content-Length": manifest.length });
      return res.end(req.method === "HEAD" ? undefined : manifest);
    }
    const blob = blobs.get(url.pathname.match(/^\/v2\/slow\/blob\/blobs\/(.+)$/)?.[1] ?? "");
    if (!blob) {
      res.writeHead(404, { "Content-Type": "application/json" });
      return res.end('{"errors":[{"code":"NOT_FOUND"}]}');
    }
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": blob.length, "Docker-Content-Digest": sha(blob) });
    if (req.method === "HEAD") return res.end();
    if (blob === config) return res.end(blob);
    // The layer: a slice every 100 ms.
    const slice = Math.ceil(bytesPerSecond / 10);
    let at = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      res.write(blob.subarray(at, at + slice));
      at += slice;
      if (at >= blob.length) {
        clearInterval(timer);
        res.end();
      }
    }, 100);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    image: `127.0.0.1:${server.address().port}/slow/blob:1`,
    layerSize: layer.length,
    stop: () => new Promise((r) => server.close(r)),
  };
}

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, name) });
}

describe("the instance list, images, connecting and accessibility", () => {
  for (const scheme of ["light", "dark"]) {
    test(`WCAG 2 AA (axe-core) in ${scheme}: the connect form, the list, images, settings, volumes and setup`, async (t) => {
      const a = await runningInstance(ui.engine, `axe-${scheme}-a`, { tags: { team: "web" } });
      const b = await runningInstance(ui.engine, `axe-${scheme}-b`);
      await ui.engine.client.instances.stop(b.id);
      t.after(async () => {
        for (const i of [a, b]) await ui.engine.client.instances.delete(i.id).catch(() => {});
      });

      const { page: form } = await ui.openPage(t, {}, { colorScheme: scheme });
      await form.locator("#connect").waitFor();
      await assertAccessible(form, `connect form (${scheme})`);
      await shot(form, `ui-fleet-connect-${scheme}.png`);

      const { page } = await ui.openConnected(t, { colorScheme: scheme });
      await row(page, a.id).waitFor({ timeout: 10_000 });
      await page.locator(`tr[data-instance-id="${b.id}"][data-state="Stopped"]`).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator('nav.tabs a[aria-current="page"]').textContent(), `Instances 2`);
      await assertAccessible(page, `instance list (${scheme})`);
      await shot(page, `ui-fleet-list-${scheme}.png`);

      await page.click('a.tab[href="#/images"]');
      await page.locator("#images-view").waitFor();
      await page.locator("#images-view [role=alert], #images-table, #images-view .empty:not([aria-busy])").first().waitFor();
      assert.equal(await page.locator('nav.tabs a[aria-current="page"]').textContent(), "Images");
      await assertAccessible(page, `images (${scheme})`);

      await page.click("#settings-tab");
      await page.locator("#settings-save").waitFor();
      await assertAccessible(page, `settings (${scheme})`);
      await shot(page, `ui-fleet-settings-${scheme}.png`);

      await page.click('a.tab[href="#/volumes"]');
      await page.locator("#volumes-view, #volumes-table").first().waitFor();
      await assertAccessible(page, `volumes (${scheme})`);

      await page.click("#setup-tab");
      await page.locator("#check-kernel").waitFor();
      // The Setup tab says which kernel sandboxes boot and where it comes from (this build's
      // bundle: target/guest-kernel, made by `make bins`).
      assert.match(await page.locator("#check-kernel .check-detail").textContent(), /^Linux \S+ \(linux-image-\S+ \S+\) ships with the app, in .+guest-kernel.+; it needs no network\.$/);
      await assertAccessible(page, `setup (${scheme})`);
    });
  }

  test("keyboard: Down from the search box enters the list, Up returns; Space selects; few Tab stops to the first row", async (t) => {
    const a = await runningInstance(ui.engine, "kb-a");
    const b = await runningInstance(ui.engine, "kb-b");
    const c = await runningInstance(ui.engine, "kb-c");
    cleanup(t, ui.engine, [a, b, c]);
    const { page } = await ui.openConnected(t);
    for (const i of [a, b, c]) await row(page, i.id).waitFor({ timeout: 10_000 });
    const order = await page.locator("#instances tr").evaluateAll((rs) => rs.map((r) => r.dataset.instanceId));
    assert.deepEqual([...order].sort(), [a.id, b.id, c.id].sort());

    // "/" focuses the search; Down enters the list at its first row and walks it.
    await page.keyboard.press("/");
    assert.equal(await focused(page), "#filter-text");
    await page.keyboard.press("ArrowDown");
    assert.equal(await focused(page), `row:${order[0]}`);
    await page.keyboard.press("ArrowDown");
    assert.equal(await focused(page), `row:${order[1]}`);
    await page.keyboard.press("End");
    assert.equal(await focused(page), `row:${order[2]}`);
    // Space selects the focused row (and the bulk bar says so); Enter is left for opening.
    await page.keyboard.press("Space");
    assert.equal(await page.locator("#bulk-count").textContent(), "1 selected");
    assert.equal(await page.locator(`input[data-select="${order[2]}"]`).isChecked(), true);
    await page.keyboard.press("Home");
    assert.equal(await focused(page), `row:${order[0]}`);
    await page.keyboard.press("ArrowUp");
    assert.equal(await focused(page), "#filter-text");

    // Typing narrows the rows, and Down still lands on the first row shown.
    await page.keyboard.type("kb-b");
    await waitFor(async () => (await page.locator("#instances tr").count()) === 1, "the filter to narrow the list");
    await page.keyboard.press("ArrowDown");
    assert.equal(await focused(page), `row:${b.id}`);
    await page.keyboard.press("Enter");
    await page.locator("#instance-view").waitFor();
    await page.goBack();
    await page.locator("#filter-text").fill("");

    // The list and the state chips are one Tab stop each: from the search box, the first row
    // is 10 stops away (tag filter, chips, select-all, six sort headers), not 8 chips more.
    await page.focus("#filter-text");
    const stops = [];
    for (let n = 0; n < 30 && !(stops.at(-1) ?? "").startsWith("row:"); n++) {
      await page.keyboard.press("Tab");
      stops.push(await focused(page));
    }
    assert.equal(stops.filter((s) => s === "button").length, 1 + 6, stops.join(", "));
    assert.equal(stops.length, 10, stops.join(", "));
    assert.ok(stops.at(-1).startsWith("row:"), stops.join(", "));
    // Arrows move between chips inside their one stop.
    await page.focus('[data-filter-state="Created"]');
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.filterState), "Initializing");
    // From the top of the page the skip link is the first stop and lands on the list.
    await page.reload();
    await row(page, a.id).waitFor({ timeout: 10_000 });
    await page.keyboard.press("Tab");
    assert.equal(await focused(page), "#skip-to-list");
    await page.keyboard.press("Enter");
    await waitFor(async () => (await focused(page))?.startsWith("row:"), "the skip link to focus a row");
    assert.equal(await page.locator('nav.tabs a[aria-current="page"]').count(), 1);
  });

  test("the Add remote popover closes on Escape and outside clicks, gives the focus back and blocks nothing", async (t) => {
    const { page } = await ui.openConnected(t);
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    const form = page.locator("#remote-form");
    await page.click("#remote-new");
    await form.waitFor();
    assert.equal(await page.getAttribute("#remote-new", "aria-expanded"), "true");
    assert.equal(await focused(page), "#remote-name");
    // Its fields have labels, not just placeholders.
    assert.equal(await page.getByLabel("API key").getAttribute("id"), "remote-key");
    await page.keyboard.press("Escape");
    await form.waitFor({ state: "detached" });
    assert.equal(await focused(page), "#remote-new");
    assert.equal(await page.getAttribute("#remote-new", "aria-expanded"), "false");

    // Open again, then click elsewhere: it closes, and what it covered works with one click.
    await page.click("#remote-new");
    await form.waitFor();
    await page.fill("#remote-name", "half-typed");
    await page.click("#new-instance");
    await form.waitFor({ state: "detached" });
    await page.locator("#create-image").waitFor();
    await page.keyboard.press("Escape");
    await page.locator("#create-image").waitFor({ state: "detached" });
    // Nothing was added by closing.
    assert.deepEqual(await page.locator("#conn-switch option").allTextContents(), ["This browser's API"]);
  });

  test("a wrong token says so (no endless Loading…), and Change keeps the URL in the form", async (t) => {
    const { page } = await ui.openPage(t, { api: ui.engine.url, token: "hdk_wrong_fleet" });
    const refused = page.locator("#list-problem");
    await refused.waitFor({ timeout: 10_000 });
    assert.match(await refused.innerText(), /The API refused the token in use\.[\s\S]*invalid token/);
    assert.equal(await page.locator("#loading").count(), 0);
    await assertAccessible(page, "the list with a refused token");
    await shot(page, "ui-fleet-wrong-token.png");

    // Enter another token: the connect form, with the URL kept and the token empty.
    await page.click("#list-reconnect");
    await page.locator("#connect").waitFor();
    assert.equal(await page.locator("#connect-api").inputValue(), ui.engine.url);
    assert.equal(await page.locator("#connect-token").inputValue(), "");
    assert.equal(await focused(page), "#connect-token");

    // The form checks before it connects: a wrong token is named there.
    await page.fill("#connect-token", "hdk_still_wrong");
    await page.click("#connect button[type=submit]");
    const error = page.locator("#connect-error");
    await error.waitFor({ timeout: 10_000 });
    assert.equal(await error.textContent(), `${new URL(ui.engine.url).host} refused this token (401). Run \`hypedeck token\` on the machine running it and paste what it prints.`);
    assert.equal(await page.locator("#connect-token").getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#instances-view").count(), 0);
    await assertAccessible(page, "the connect form with an error");
    // Nowhere to connect: named too.
    await page.fill("#connect-api", "http://127.0.0.1:9");
    await page.fill("#connect-token", "hdk_any");
    await page.click("#connect button[type=submit]");
    await page.locator("#connect-error", { hasText: "Cannot reach 127.0.0.1:9" }).waitFor({ timeout: 10_000 });

    // The right token connects.
    await page.fill("#connect-api", ui.engine.url);
    await page.fill("#connect-token", ui.engine.token);
    await page.click("#connect button[type=submit]");
    await page.locator("#instances-view").waitFor({ timeout: 10_000 });
    await page.locator("#instances-table, #empty").first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-url").textContent(), ui.engine.url);

    // Change: back to the form with the URL kept (also after a reload), the token forgotten.
    await page.click("#disconnect");
    await page.locator("#connect").waitFor();
    assert.equal(await page.locator("#connect-api").inputValue(), ui.engine.url);
    assert.equal(await page.locator("#connect-token").inputValue(), "");
    await page.reload();
    await page.locator("#connect").waitFor();
    assert.equal(await page.locator("#connect-api").inputValue(), ui.engine.url);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }));
    assert.ok(!stored.includes(ui.engine.token), "the token stayed in the browser's storage");
    assert.ok(!(await page.locator("body").innerText()).includes(ui.engine.token));
  });

  test("row actions and bulk stop/delete act on the engine; delete asks in a dialog that keeps the focus", async (t) => {
    const made = [];
    for (const name of ["row-a", "row-b", "row-c", "row-d"]) made.push(await runningInstance(ui.engine, name));
    cleanup(t, ui.engine, made);
    const [ra, rb, rc, rd] = made;
    const { page } = await ui.openConnected(t);
    for (const i of made) await row(page, i.id).waitFor({ timeout: 10_000 });

    // Row actions appear on hover; Stop really stops.
    const stop = row(page, ra.id).locator('[data-row-action="stop"]');
    await page.mouse.move(0, 0);
    assert.equal(await stop.evaluate((e) => getComputedStyle(e).opacity), "0");
    await row(page, ra.id).hover();
    assert.equal(await stop.evaluate((e) => getComputedStyle(e).opacity), "1");
    await stop.click();
    await waitFor(async () => (await stateOf(ui.engine, ra.id)) === "Stopped", "row-a to stop");
    await page.locator(`tr[data-instance-id="${ra.id}"][data-state="Stopped"]`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#instance-view").count(), 0, "a row action does not open the row");
    // Now it can start; a stopped row offers Start.
    await row(page, ra.id).locator('[data-row-action="start"]').waitFor();

    // Delete asks first: a dialog with the focus on Cancel; Tab stays inside; Escape cancels
    // and gives the focus back to the row's Delete.
    const del = row(page, rd.id).locator('[data-row-action="delete"]');
    await row(page, rd.id).hover();
    await del.click();
    const dialog = page.locator("#delete-confirm");
    await dialog.waitFor();
    assert.equal(await dialog.getAttribute("aria-modal"), "true");
    assert.equal(await page.locator("#delete-confirm h2").textContent(), "Delete row-d?");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.confirm), "cancel");
    for (let n = 0; n < 3; n++) {
      await page.keyboard.press("Tab");
      assert.ok(await page.evaluate(() => document.querySelector("#delete-confirm").contains(document.activeElement)), "the focus left the dialog");
    }
    // The page's single-key shortcuts wait behind the dialog ("n" is New instance).
    await page.keyboard.press("n");
    assert.equal(await page.locator("#create-image").count(), 0);
    await assertAccessible(page, "the delete question");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute("aria-label")), "Delete row-d");
    assert.equal(await stateOf(ui.engine, rd.id), "Running");
    await del.click();
    await page.click('#delete-confirm [data-confirm="ok"]');
    await row(page, rd.id).waitFor({ state: "detached", timeout: 10_000 });
    assert.ok(!(await ui.engine.client.instances.list()).some((i) => i.id === rd.id), "row-d is still on the engine");

    // Bulk: select a (Stopped), b and c (Running). Stop applies to the two running ones.
    for (const i of [ra, rb, rc]) await page.check(`input[data-select="${i.id}"]`);
    assert.equal(await page.locator("#bulk-count").textContent(), "3 selected");
    assert.equal(await page.locator("#bulk-stop").textContent(), "Stop 2");
    assert.equal(await page.locator("#bulk-start").textContent(), "Start 1");
    await assertAccessible(page, "the list with a selection");
    await shot(page, "ui-fleet-bulk.png");
    await page.click("#bulk-stop");
    await waitFor(async () => (await stateOf(ui.engine, rb.id)) === "Stopped" && (await stateOf(ui.engine, rc.id)) === "Stopped", "b and c to stop");
    await page.locator("#notice", { hasText: "2 instances stopped" }).waitFor({ timeout: 10_000 });
    // All three are stopped now: Stop is disabled, and says why.
    await page.locator(`tr[data-instance-id="${rc.id}"][data-state="Stopped"]`).waitFor({ timeout: 10_000 });
    await page.locator(`tr[data-instance-id="${rb.id}"][data-state="Stopped"]`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#bulk-stop").isDisabled(), true);
    assert.equal(await page.locator("#bulk-stop-why").textContent(), "None of the selected instances is running or initializing");
    assert.equal(await page.locator("#bulk-stop").getAttribute("aria-describedby"), "bulk-stop-why");

    await page.click("#bulk-delete");
    await page.locator("#delete-confirm").waitFor();
    assert.equal(await page.locator("#delete-confirm h2").textContent(), "Delete 3 instances?");
    assert.deepEqual((await page.locator("#delete-confirm-names li").allTextContents()).sort(), ["row-a", "row-b", "row-c"]);
    await page.click('#delete-confirm [data-confirm="ok"]');
    await page.locator("#notice", { hasText: "3 instances deleted" }).waitFor({ timeout: 15_000 });
    const left = (await ui.engine.client.instances.list()).map((i) => i.id);
    for (const i of [ra, rb, rc]) assert.ok(!left.includes(i.id), `${i.name} is still on the engine`);
    await page.locator("#bulk-bar").waitFor({ state: "detached" });
  });
});

describe("images on an engine with an image cache", () => {
  const bin = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");
  let server;
  let dataDir;
  before(async () => {
    dataDir = newDataDir();
    server = await startServer(bin, dataDir);
  });
  after(async () => {
    if (!server) return;
    for (const i of await server.client().instances.list().catch(() => [])) await server.client().instances.delete(i.id).catch(() => {});
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("each image says how many instances use it; Run prefills the create form; Delete asks, naming them", async (t) => {
    const api = server.client();
    const hello = "hypedeck.local/samples/hello:1";
    await api.post("/system/samples/hello");
    const user = await api.instances.create({ name: "uses-hello", image: hello, size: "256MB", vcpus: 1 });
    const token = execFileSync(bin, ["--data-dir", dataDir, "token"]).toString().trim();
    const { page } = await ui.openPage(t, { api: server.url, token });
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    await page.click('a.tab[href="#/images"]');
    const imageRow = page.locator(`#images-table tr[data-image="${hello}"]`);
    await imageRow.waitFor({ timeout: 10_000 });
    await imageRow.locator('td.usage[data-uses="1"]').waitFor({ timeout: 10_000 });
    assert.equal(await imageRow.locator("td.usage").textContent(), "in use by 1 instance");
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await assertAccessible(page, `images with a table (${scheme})`);
      await shot(page, `ui-fleet-images-${scheme}.png`);
    }

    // Run: the create form with this image.
    await imageRow.locator('[data-image-action="run"]').click();
    await page.locator("#create-image").waitFor();
    assert.equal(await page.locator("#create-image").inputValue(), hello);
    await page.keyboard.press("Escape");
    await page.locator("#create-image").waitFor({ state: "detached" });
    await page.click('a.tab[href="#/images"]');

    // Delete names who uses it; Cancel keeps it.
    await imageRow.locator('[data-image-action="delete"]').click();
    await page.locator("#image-delete-confirm").waitFor();
    assert.equal(await page.locator("#image-delete-users").textContent(), "It is in use by 1 instance: uses-hello. Creating another instance from it pulls it again.");
    await page.click('#image-delete-confirm [data-confirm="cancel"]');
    await page.locator("#image-delete-confirm").waitFor({ state: "detached" });
    assert.ok((await api.images.list()).some((i) => i.name === hello));

    // Once its instance is gone the count follows, and Delete removes it from the engine.
    await api.instances.delete(user.id);
    await imageRow.locator('td.usage[data-uses="0"]').waitFor({ timeout: 10_000 });
    assert.equal(await imageRow.locator("td.usage").textContent(), "not in use");
    await imageRow.locator('[data-image-action="delete"]').click();
    assert.equal(await page.locator("#image-delete-users").textContent(), "No instance uses it. Creating an instance from it later pulls it again.");
    await page.click('#image-delete-confirm [data-confirm="ok"]');
    await imageRow.waitFor({ state: "detached", timeout: 10_000 });
    assert.ok(!(await api.images.list()).some((i) => i.name === hello), "the image is still on the engine");
  });

  test("a pull in flight shows its status and a progress bar in the list, then the image is ready", async (t) => {
    const registry = await startSlowRegistry();
    t.after(() => registry.stop());
    const token = execFileSync(bin, ["--data-dir", dataDir, "token"]).toString().trim();
    const { page } = await ui.openPage(t, { api: server.url, token });
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    await page.click('a.tab[href="#/images"]');
    // Pull is disabled until there is a name, and its description says so.
    assert.equal(await page.locator("#pull-submit").isDisabled(), true);
    assert.equal(await page.locator("#pull-hint").textContent(), "Type an image reference to pull it.");
    await page.fill("#pull-name", registry.image);
    await page.click("#pull-submit");

    // The registry sends the layer slowly: the pull is seen in flight, with its bytes so far.
    const imageRow = page.locator(`#images-table tr[data-image="${registry.image}"]`);
    const pull = imageRow.locator('.pull[data-status="pulling"]');
    await pull.waitFor({ timeout: 15_000 });
    const text = await pull.locator(".pull-text").textContent();
    assert.match(text, /^pulling — .* of .* \(\d+%\)$/);
    const bar = pull.locator("progress");
    assert.equal(await bar.getAttribute("aria-label"), `Pull of ${registry.image}`);
    assert.equal(await bar.getAttribute("aria-valuetext"), text.replace(/^pulling — /, ""));
    await assertAccessible(page, "images with a pull in flight");
    await shot(page, "ui-fleet-pull-progress.png");

    await imageRow.locator("td", { hasText: /^ready$/ }).waitFor({ timeout: 60_000 });
    const pulled = (await server.client().images.list()).find((i) => i.name === registry.image);
    assert.equal(pulled?.status, "ready");
  });
});
