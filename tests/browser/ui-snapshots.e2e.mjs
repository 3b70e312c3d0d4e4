// Snapshots and forks in headless Chromium against a fake-backed `hypedeck serve`: the
// Snapshots tab takes a Stopped snapshot of a stopped instance and a Standby one of a running
// instance (listed with kind and size, newest first; the instance keeps running), a Standby one
// with its memory compressed (the level checked client-side and by the server; the row shows
// the compression under way, its sizes, or why it failed; none offered nor sent for Stopped),
// shows only the user's tags (not the internal `hypeman.*` ones), refuses a kind
// the state cannot take with its reason, restores (with the states the kind allows) and deletes;
// the Snapshot button opens the take form; the Fork button and a snapshot's Fork make a new
// instance whose page and list row say where it comes from; the server's refusals are shown in plain words; the schedule is
// set, edited and removed from the tab (checked client-side, the server's refusals translated;
// the snapshots stay) and the snapshots it took are marked, without the schedule's own
// `hypeman.*` tags; axe-core finds no WCAG 2 A/AA
// violation on the tab and its dialogs. Run by tests/desktop/run.sh (SUITES=browser).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, row, runningInstance, assertAccessible } from "./harness.mjs";


const ui = browserUi("snapshots");
before(() => ui.start());
after(() => ui.stop());

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, name), fullPage: true });
}

const api = () => ui.engine.client;
const stateOf = async (id) => (await api().instances.get(id)).state;
const snapshotsOf = (id) => api().snapshots.list({ source_instance_id: id });

/** Deletes what a test made (instances and snapshots), whatever it did with them. */
function cleanup(t, { instances = [], snapshotsOf: sources = [] }) {
  t.after(async () => {
    for (const id of sources) for (const s of await snapshotsOf(id).catch(() => [])) await api().snapshots.delete(s.id).catch(() => {});
    for (const i of instances) await api().instances.delete(typeof i === "string" ? i : i.id).catch(() => {});
  });
}

/** A Stopped instance on the fake backend. */
async function stoppedInstance(name) {
  const created = await runningInstance(ui.engine, name);
  await api().instances.stop(created.id);
  await waitFor(async () => (await stateOf(created.id)) === "Stopped", `${name} to stop`);
  return created;
}

/** A connected page showing instance `id`'s `tab`, its API calls, POST bodies and console errors. */
async function openTab(t, id, tab = "snapshots", options) {
  const { page, apiCalls } = await ui.openConnected(t, options);
  const bodies = [];
  page.on("request", (r) => r.method() === "POST" && r.url().startsWith(ui.engine.url) && bodies.push({ path: new URL(r.url()).pathname, body: r.postData() }));
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(e.message));
  await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
  await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), id);
  await page.locator(`#instance-view[data-instance-id="${id}"]`).waitFor({ timeout: 10_000 });
  if (tab !== "overview") await page.click(`#detail-tab-${tab}`);
  return { page, apiCalls, bodies, consoleErrors };
}

const snapshotRow = (page, id) => page.locator(`#snapshots-table tr[data-snapshot-id="${id}"]`);

/** `bytes()` of ui/src/model.ts, to check the size cell against the API's `size_bytes`. */
function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u += 1;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

describe("snapshots and forks", () => {
  test("a snapshot of a stopped instance: taken from the tab, listed newest first with kind, size and tags; names are checked", async (t) => {
    const src = await stoppedInstance("snap-take");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const { page, apiCalls, bodies, consoleErrors } = await openTab(t, src.id);

    await page.locator("#snapshots-empty").waitFor({ timeout: 10_000 });
    const take = page.locator("#snapshot-take");
    assert.equal(await take.isEnabled(), true);
    assert.equal(await take.getAttribute("aria-describedby"), null);

    // A name the rule refuses is said before anything is sent.
    await page.fill("#snapshot-name", "Before Upgrade");
    await take.click();
    assert.match(await page.locator("#snapshot-name-error").innerText(), /lowercase letters, digits and dashes/);
    assert.equal(await page.locator("#snapshot-name").getAttribute("aria-invalid"), "true");
    assert.ok(!apiCalls.includes(`POST /instances/${src.id}/snapshots`), apiCalls.join(", "));

    // A named, tagged snapshot.
    await page.fill("#snapshot-name", "before-upgrade");
    await page.fill("#snapshot-tags", "reason=test");
    await take.click();
    await page.locator('#snapshots-table tr[data-snapshot-name="before-upgrade"]').waitFor({ timeout: 10_000 });
    const [named] = await snapshotsOf(src.id);
    assert.equal(named.name, "before-upgrade");
    assert.equal(named.kind, "Stopped");
    assert.deepEqual(named.tags, { reason: "test" });
    assert.deepEqual(JSON.parse(bodies.find((b) => b.path === `/instances/${src.id}/snapshots`).body), { kind: "Stopped", name: "before-upgrade", tags: { reason: "test" } });
    const first = snapshotRow(page, named.id);
    assert.equal(await first.locator('[data-field="kind"]').getAttribute("data-kind"), "Stopped");
    assert.equal(await first.locator('[data-field="kind"]').innerText(), "Stopped (disks)");
    assert.equal(await first.locator('[data-field="size"]').innerText(), bytes(named.size_bytes));
    assert.equal(await first.locator('[data-field="tags"]').innerText(), "reason=test");
    assert.match(await page.locator("#snapshots-note").innerText(), /^Took snapshot before-upgrade \(\d/);
    // The form is empty again.
    assert.equal(await page.locator("#snapshot-name").inputValue(), "");

    // The same name again: the server's 409, in plain words, on the name.
    await page.fill("#snapshot-name", "before-upgrade");
    await take.click();
    await page.locator("#snapshot-name-error").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#snapshot-name-error").innerText(), 'This instance already has a snapshot named "before-upgrade". Choose another name.');
    assert.equal((await snapshotsOf(src.id)).length, 1);

    // An unnamed one comes first (newest first).
    await page.fill("#snapshot-name", "");
    await take.click();
    await waitFor(async () => (await page.locator("#snapshots-table tbody tr").count()) === 2, "two rows");
    const listed = await snapshotsOf(src.id);
    assert.equal(listed.length, 2);
    const unnamed = listed.find((s) => s.name === null);
    assert.ok(unnamed, JSON.stringify(listed));
    const ids = await page.locator("#snapshots-table tbody tr").evaluateAll((rs) => rs.map((r) => r.dataset.snapshotId));
    assert.deepEqual(ids, [unnamed.id, named.id]);
    assert.match(await snapshotRow(page, unnamed.id).locator(".snapshot-name").innerText(), /^unnamed/);
    assert.match(await page.locator("#snapshots-summary").innerText(), /2 \(/);

    await assertAccessible(page, "the Snapshots tab with two snapshots");
    await shot(page, "snapshots-tab.png");
    const dark = await openTab(t, src.id, "snapshots", { colorScheme: "dark" });
    await snapshotRow(dark.page, named.id).waitFor({ timeout: 10_000 });
    await assertAccessible(dark.page, "the Snapshots tab in dark");
    assert.deepEqual(consoleErrors, []);
  });

  test("a Standby snapshot of a running instance: the default kind, progress while it is taken, listed; the instance keeps running", async (t) => {
    const src = await runningInstance(ui.engine, "snap-hot");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const { page, bodies, consoleErrors } = await openTab(t, src.id);

    await page.locator("#snapshots-empty").waitFor({ timeout: 10_000 });
    // Standby is offered first for a running instance, and says what it does.
    assert.equal(await page.locator("#snapshot-kind-standby").isChecked(), true);
    assert.equal(await page.locator("#snapshot-kind-stopped").isChecked(), false);
    assert.equal(await page.locator('label:has(#snapshot-kind-standby)').innerText(), "Standby (disks and memory)");
    assert.equal(await page.locator("#snapshot-kind-hint").innerText(), "The VM is paused and saved, then resumes; it keeps running.");
    assert.equal(await page.locator("#snapshot-kind").getAttribute("aria-describedby"), "snapshot-kind-hint");
    const take = page.locator("#snapshot-take");
    assert.equal(await take.isEnabled(), true);
    assert.equal(await take.getAttribute("aria-describedby"), null);

    // The engine's answer is held back a moment, so the progress can be seen (and checked).
    let release;
    const held = new Promise((resolve) => (release = resolve));
    await page.route(`${ui.engine.url}/instances/${src.id}/snapshots`, async (route) => {
      if (route.request().method() === "POST") await held;
      await route.continue();
    });
    await page.fill("#snapshot-name", "hot");
    await take.click();
    await page.locator("#snapshot-take", { hasText: "Taking snapshot…" }).waitFor();
    assert.equal(await take.isDisabled(), true);
    assert.equal(await page.locator("#snapshot-form").getAttribute("aria-busy"), "true");
    assert.equal(await page.locator("#snapshot-kind-stopped").isDisabled(), true);
    await assertAccessible(page, "the take form while a Standby snapshot is taken");
    release();

    await page.locator('#snapshots-table tr[data-snapshot-name="hot"]').waitFor({ timeout: 15_000 });
    const [hot] = await snapshotsOf(src.id);
    assert.equal(hot.kind, "Standby");
    assert.deepEqual(JSON.parse(bodies.find((b) => b.path === `/instances/${src.id}/snapshots`).body), { kind: "Standby", name: "hot" });
    const listed = snapshotRow(page, hot.id).locator('[data-field="kind"]');
    assert.equal(await listed.getAttribute("data-kind"), "Standby");
    assert.equal(await listed.innerText(), "Standby (disks and memory)");
    assert.equal(await take.innerText(), "Take snapshot");
    // The VM was saved and resumed: the instance runs again.
    assert.equal(await stateOf(src.id), "Running");
    assert.match(await page.locator("#snapshots-note").innerText(), /^Took snapshot hot \(\d/);
    await assertAccessible(page, "the Snapshots tab of a running instance with a Standby snapshot");
    assert.deepEqual(consoleErrors, []);
  });

  test("a compressed Standby snapshot: the options, the level checked client-side and by the server, the body sent, the sizes once compressed", async (t) => {
    const src = await runningInstance(ui.engine, "snap-zip");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const { page, apiCalls, bodies, consoleErrors } = await openTab(t, src.id);
    const createPath = `/instances/${src.id}/snapshots`;
    const posts = () => bodies.filter((b) => b.path === createPath);

    await page.locator("#snapshots-empty").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#snapshot-kind-standby").isChecked(), true);
    // Off by default, the algorithm and level shown only once it is checked.
    const compress = page.locator("#snapshot-compress");
    assert.equal(await compress.isChecked(), false);
    assert.equal(await page.locator('label:has(#snapshot-compress)').innerText(), "Compress the saved memory");
    assert.equal(await compress.getAttribute("aria-describedby"), "snapshot-compress-hint");
    assert.equal(await page.locator("#snapshot-compression-algorithm").count(), 0);
    assert.equal(await page.locator("#snapshot-compression-level").count(), 0);
    await compress.check();
    const algorithm = page.locator("#snapshot-compression-algorithm");
    const level = page.locator("#snapshot-compression-level");
    const levelHint = page.locator("#snapshot-compression-level-hint");
    assert.deepEqual(await algorithm.locator("option").evaluateAll((os) => os.map((o) => o.value)), ["zstd", "lz4"]);
    assert.equal(await algorithm.inputValue(), "zstd");
    assert.equal(await level.inputValue(), "");
    assert.equal(await level.getAttribute("placeholder"), "1");
    assert.match(await levelHint.innerText(), /^1–19 for zstd; empty: 1, the engine's default\./);
    assert.equal(await level.getAttribute("aria-describedby"), "snapshot-compression-level-hint");
    await page.selectOption("#snapshot-compression-algorithm", "lz4");
    assert.match(await levelHint.innerText(), /^0–9 for lz4; empty: 0, the engine's default\./);
    assert.equal(await level.getAttribute("placeholder"), "0");
    await assertAccessible(page, "the take form with the compression options open");
    await shot(page, "snapshots-compression.png");

    // Out of range for the algorithm: said on the field, nothing sent.
    await page.fill("#snapshot-compression-level", "12");
    await page.click("#snapshot-take");
    const levelError = page.locator("#snapshot-compression-level-error");
    assert.equal(await levelError.innerText(), "The level must be between 0 and 9 for lz4, got 12");
    assert.equal(await levelError.getAttribute("role"), "alert");
    assert.equal(await level.getAttribute("aria-invalid"), "true");
    assert.equal(await level.getAttribute("aria-describedby"), "snapshot-compression-level-hint snapshot-compression-level-error");
    await page.selectOption("#snapshot-compression-algorithm", "zstd");
    assert.equal(await levelError.count(), 0, "a new algorithm clears the error");
    await page.fill("#snapshot-compression-level", "0");
    await page.click("#snapshot-take");
    assert.equal(await levelError.innerText(), "The level must be between 1 and 19 for zstd, got 0");
    await assertAccessible(page, "the take form with a level out of range");
    assert.equal(posts().length, 0, JSON.stringify(bodies));
    assert.ok(!apiCalls.includes(`POST ${createPath}`), apiCalls.join(", "));
    await page.fill("#snapshot-compression-level", "3");
    assert.equal(await levelError.count(), 0, "an edited level loses its error");
    assert.equal(await level.getAttribute("aria-invalid"), "false");

    // Hidden (not disabled) for the Stopped kind; back on Standby, the choice is as it was.
    await page.locator("#snapshot-kind-stopped").check();
    assert.equal(await page.locator("#snapshot-compression").count(), 0);
    assert.equal(await compress.count(), 0);
    await page.locator("#snapshot-kind-standby").check();
    assert.equal(await compress.isChecked(), true);
    assert.equal(await algorithm.inputValue(), "zstd");
    assert.equal(await level.inputValue(), "3");

    // The server's own refusal, on the level: the request is changed on its way to one only the
    // server sees (level 0 for zstd).
    const url = `${ui.engine.url}${createPath}`;
    await page.route(url, async (route) => {
      const r = route.request();
      if (r.method() !== "POST") return route.continue();
      const sent = JSON.parse(r.postData());
      await route.continue({ postData: JSON.stringify({ ...sent, compression: { ...sent.compression, level: 0 } }) });
    });
    const answer = page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === createPath);
    await page.fill("#snapshot-name", "zipped");
    await page.click("#snapshot-take");
    const refused = await answer;
    assert.equal(refused.status(), 400);
    assert.deepEqual(await refused.json(), { code: "invalid_snapshot_compression", message: "level must be between 1 and 19 for zstd, got 0" });
    await levelError.waitFor({ timeout: 10_000 });
    assert.equal(await levelError.innerText(), "The server refused the level: it must be between 1 and 19 for zstd, got 0.");
    assert.equal(await level.getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#snapshot-error").count(), 0);
    assert.deepEqual(await snapshotsOf(src.id), []);
    await page.unroute(url);

    // zstd level 3: the body says so, the row shows the compression under way or done, and
    // once done the sizes the API reports.
    await page.click("#snapshot-take");
    await page.locator('#snapshots-table tr[data-snapshot-name="zipped"]').waitFor({ timeout: 15_000 });
    assert.deepEqual(JSON.parse(posts().at(-1).body), { kind: "Standby", name: "zipped", compression: { enabled: true, algorithm: "zstd", level: 3 } });
    const done = await waitFor(async () => {
      const [s] = await snapshotsOf(src.id);
      return s?.compression_state === "compressed" ? s : null;
    }, "the snapshot to be compressed");
    assert.deepEqual(done.compression, { enabled: true, algorithm: "zstd", level: 3 });
    assert.ok(done.compressed_size_bytes > 0 && done.uncompressed_size_bytes > 0, JSON.stringify(done));
    const cell = snapshotRow(page, done.id).locator('[data-field="compression"]');
    await snapshotRow(page, done.id).locator('[data-field="compression"][data-state="compressed"]').waitFor({ timeout: 10_000 });
    const sizes = `${bytes(done.compressed_size_bytes)} of ${bytes(done.uncompressed_size_bytes)}`;
    assert.equal(await cell.innerText(), `zstd · ${sizes}`);
    assert.equal(await cell.getAttribute("title"), `The saved memory, compressed with zstd level 3: ${sizes}`);
    assert.equal(await cell.getAttribute("aria-busy"), null);
    await waitFor(
      async () => (await snapshotRow(page, done.id).locator('[data-field="size"]').getAttribute("title")) === `${done.size_bytes} bytes`,
      "the size after compression",
      10_000,
    );
    assert.equal(await stateOf(src.id), "Running");
    await assertAccessible(page, "the Snapshots tab with a compressed snapshot");
    await shot(page, "snapshots-compressed.png");
    assert.deepEqual(consoleErrors, []);
  });

  test("a stopped instance's form has no compression, and sends none; the table shows a compression under way or failed; hypeman.* tags are not shown", async (t) => {
    const src = await stoppedInstance("snap-zip-cold");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const tagged = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "tagged", tags: { "hypeman.scheduled": "true", team: "a" } });
    assert.deepEqual(tagged.tags, { "hypeman.scheduled": "true", team: "a" });
    const { page, bodies, consoleErrors } = await openTab(t, src.id);
    const createPath = `/instances/${src.id}/snapshots`;

    // Only the user's tag; the schedule's mark stays.
    await snapshotRow(page, tagged.id).waitFor({ timeout: 10_000 });
    assert.equal(await snapshotRow(page, tagged.id).locator('[data-field="tags"]').innerText(), "team=a");
    assert.equal(await snapshotRow(page, tagged.id).locator('[data-field="scheduled"]').innerText(), "scheduled");
    assert.equal(await snapshotRow(page, tagged.id).locator('[data-field="compression"]').count(), 0);

    // Stopped, the default here: no compression offered. Checked on Standby, then Stopped again: none sent.
    assert.equal(await page.locator("#snapshot-kind-stopped").isChecked(), true);
    assert.equal(await page.locator("#snapshot-compression").count(), 0);
    await page.locator("#snapshot-kind-standby").check();
    await page.locator("#snapshot-compress").check();
    await page.fill("#snapshot-compression-level", "5");
    await page.locator("#snapshot-kind-stopped").check();
    assert.equal(await page.locator("#snapshot-compress").count(), 0);
    await page.fill("#snapshot-name", "cold");
    await page.click("#snapshot-take");
    await page.locator('#snapshots-table tr[data-snapshot-name="cold"]').waitFor({ timeout: 10_000 });
    assert.deepEqual(JSON.parse(bodies.filter((b) => b.path === createPath).at(-1).body), { kind: "Stopped", name: "cold" });
    const cold = (await snapshotsOf(src.id)).find((s) => s.name === "cold");
    assert.equal(cold.compression_state, "none");

    // A compression under way, then failed (the engine's list amended: the fake compresses in a moment).
    let amend = { compression_state: "compressing", compression: { enabled: true, algorithm: "lz4", level: 0 } };
    const isList = (u) => u.href.startsWith(ui.engine.url) && u.pathname === "/snapshots";
    await page.route(isList, async (route) => {
      if (route.request().method() !== "GET") return route.continue();
      const response = await route.fetch();
      const list = await response.json();
      await route.fulfill({ response, json: list.map((s) => (s.id === cold.id ? { ...s, ...amend } : s)) });
    });
    const cell = snapshotRow(page, cold.id).locator('[data-field="compression"]');
    await cell.waitFor({ timeout: 10_000 });
    assert.equal(await cell.getAttribute("data-state"), "compressing");
    assert.equal(await cell.innerText(), "compressing…");
    assert.equal(await cell.getAttribute("aria-busy"), "true");
    assert.equal(await cell.getAttribute("title"), "The saved memory is being compressed (lz4 level 0)");
    await assertAccessible(page, "a snapshot being compressed");

    const why = "compress the saved memory: No space left on device (os error 28)";
    amend = { compression_state: "error", compression_error: why, compression: { enabled: true, algorithm: "lz4", level: 0 } };
    await snapshotRow(page, cold.id).locator('[data-field="compression"][data-state="error"]').waitFor({ timeout: 10_000 });
    assert.equal(await cell.getAttribute("title"), why);
    assert.equal(await cell.getAttribute("aria-busy"), null);
    assert.equal(await cell.textContent(), `compression failed: ${why}`);
    assert.equal(await cell.locator(".sr-only").textContent(), `: ${why}`);
    await assertAccessible(page, "a snapshot whose compression failed");
    await shot(page, "snapshots-compression-states.png");
    await page.unroute(isList);
    assert.deepEqual(consoleErrors, []);
  });

  test("on a running instance, the Stopped kind and Restore are disabled and say why", async (t) => {
    const src = await stoppedInstance("snap-running");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const snap = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "cold" });
    await api().instances.start(src.id, {});
    await waitFor(async () => (await stateOf(src.id)) === "Running", "snap-running to run");
    const { page, apiCalls } = await openTab(t, src.id);

    await snapshotRow(page, snap.id).waitFor({ timeout: 10_000 });
    const take = page.locator("#snapshot-take");
    assert.equal(await take.isEnabled(), true);
    // The Stopped kind, chosen with the keyboard: the submit is refused, with the reason.
    await page.locator("#snapshot-kind-standby").focus();
    await page.keyboard.press("ArrowDown");
    assert.equal(await page.locator("#snapshot-kind-stopped").isChecked(), true);
    assert.equal(await take.isDisabled(), true);
    assert.equal(await take.getAttribute("aria-describedby"), "snapshot-take-why");
    assert.equal(await page.locator("#snapshot-take-why").innerText(), "Stop the instance to take a Stopped snapshot (it is Running)");
    assert.match(await page.locator("#snapshot-kind-hint").innerText(), /^A copy of the disks and settings/);

    const restore = snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]');
    assert.equal(await restore.isDisabled(), true);
    const why = await restore.getAttribute("aria-describedby");
    assert.ok(why);
    assert.equal(await page.locator(`[id="${why}"]`).textContent(), "Stop the instance to restore a snapshot onto it (it is Running)");
    // Fork and Delete stay available.
    assert.equal(await snapshotRow(page, snap.id).locator('[data-action="fork-snapshot"]').isEnabled(), true);
    assert.equal(await snapshotRow(page, snap.id).locator('[data-action="delete-snapshot"]').isEnabled(), true);
    await assertAccessible(page, "the Snapshots tab of a running instance, Stopped kind chosen");

    // Once stopped, both come back (the kind chosen stays chosen).
    await api().instances.stop(src.id);
    await waitFor(async () => (await take.isEnabled()) && (await restore.isEnabled()), "Take and Restore to be enabled", 10_000);
    assert.equal(await page.locator("#snapshot-kind-stopped").isChecked(), true);
    assert.equal(await page.locator("#snapshot-take-why").count(), 0);
    // Standby, on the stopped instance: refused with its own reason.
    await page.locator("#snapshot-kind-standby").check();
    assert.equal(await take.isDisabled(), true);
    assert.equal(await page.locator("#snapshot-take-why").innerText(), "A Standby snapshot needs the instance running or in standby (it is Stopped)");
    await assertAccessible(page, "the Snapshots tab of a stopped instance, Standby kind chosen");
    assert.ok(!apiCalls.some((c) => c.startsWith("POST /instances/") && c.includes("/snapshots")), apiCalls.join(", "));
  });

  test("restore a Standby snapshot onto a stopped instance: memory and disks, the targets of the kind; ends in Standby", async (t) => {
    const src = await runningInstance(ui.engine, "snap-warm");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const snap = await api().instances.snapshots.create(src.id, { kind: "Standby", name: "warm" });
    await waitFor(async () => (await stateOf(src.id)) === "Running", "snap-warm to run again");
    await api().instances.stop(src.id);
    await waitFor(async () => (await stateOf(src.id)) === "Stopped", "snap-warm to stop");
    const { page, bodies } = await openTab(t, src.id);

    const restoreButton = snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]');
    await restoreButton.waitFor({ timeout: 10_000 });
    await waitFor(async () => await restoreButton.isEnabled(), "Restore to be enabled", 10_000);
    await restoreButton.click();
    const dialog = page.locator("#restore-dialog");
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /snap-warm's memory and disks go back to how they were/);
    assert.deepEqual(await page.locator("#restore-target option").evaluateAll((os) => os.map((o) => o.value)), ["Running", "Standby", "Stopped"]);
    assert.equal(await page.locator("#restore-target").inputValue(), "Running");
    const hint = dialog.locator('[data-field="restore-target-hint"]');
    assert.match(await hint.innerText(), /^It resumes from the saved moment/);
    await page.selectOption("#restore-target", "Standby");
    assert.match(await hint.innerText(), /saved in standby/);
    assert.equal(await page.locator("#restore-target").getAttribute("aria-describedby"), await hint.getAttribute("id"));
    await assertAccessible(page, "the restore dialog of a Standby snapshot");
    await shot(page, "snapshots-restore-standby.png");

    await page.click("#restore-confirm");
    await dialog.waitFor({ state: "detached", timeout: 15_000 });
    const sent = bodies.find((b) => b.path === `/instances/${src.id}/snapshots/${snap.id}/restore`);
    assert.ok(sent, JSON.stringify(bodies));
    assert.deepEqual(JSON.parse(sent.body), { target_state: "Standby" });
    await waitFor(async () => (await stateOf(src.id)) === "Standby", "the restored instance to be in standby");
    assert.equal(await page.locator("#snapshots-note").innerText(), "Restored snap-warm to snapshot warm; it is Standby now");
    // In standby, the take form offers a Standby snapshot again.
    await waitFor(async () => await page.locator("#snapshot-kind-standby").isChecked(), "the Standby kind to be offered", 10_000);
    assert.match(await page.locator("#snapshot-kind-hint").innerText(), /stays in standby/);
    assert.equal(await page.locator("#snapshot-take").isEnabled(), true);
  });

  test("restore: the dialog says the disks go back, the state asked for is sent, the instance ends in it", async (t) => {
    const src = await stoppedInstance("snap-restore");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const snap = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "good" });
    const { page, apiCalls, bodies } = await openTab(t, src.id);

    await snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]').click();
    const dialog = page.locator("#restore-dialog");
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /disks go back to how they were/);
    // The focus is on Cancel: a stray Enter does nothing.
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.confirm), "cancel");
    assert.deepEqual(await page.locator("#restore-target option").evaluateAll((os) => os.map((o) => o.value)), ["Stopped", "Running"]);
    assert.equal(await page.locator("#restore-target").inputValue(), "Stopped");
    await assertAccessible(page, "the restore dialog");
    await shot(page, "snapshots-restore-dialog.png");
    // Escape cancels, nothing is sent.
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    assert.ok(!apiCalls.some((c) => c.endsWith("/restore")), apiCalls.join(", "));

    // The instance starts (another client) while the dialog is open: the server's 409, in plain words.
    await snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]').click();
    await api().instances.start(src.id, {});
    await waitFor(async () => (await stateOf(src.id)) === "Running", "snap-restore to run");
    await page.click("#restore-confirm");
    await page.locator("#restore-error").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#restore-error").innerText(), "Stop the instance before restoring a snapshot onto it (it is Running).");
    await dialog.locator('[data-confirm="cancel"]').click();
    await api().instances.stop(src.id);
    const restoreButton = snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]');
    await waitFor(async () => (await stateOf(src.id)) === "Stopped" && (await restoreButton.isEnabled()), "Restore to be enabled again", 10_000);
    bodies.length = 0;

    await restoreButton.click();
    await page.selectOption("#restore-target", "Running");
    await page.click("#restore-confirm");
    await dialog.waitFor({ state: "detached", timeout: 15_000 });
    const sent = bodies.find((b) => b.path === `/instances/${src.id}/snapshots/${snap.id}/restore`);
    assert.ok(sent, JSON.stringify(bodies));
    assert.deepEqual(JSON.parse(sent.body), { target_state: "Running" });
    await waitFor(async () => (await stateOf(src.id)) === "Running", "the restored instance to run");
    assert.match(await page.locator("#snapshots-note").innerText(), /^Restored snap-restore to snapshot good; it is Running now$/);
    // The page follows: now running, Restore is refused.
    await waitFor(async () => await snapshotRow(page, snap.id).locator('[data-action="restore-snapshot"]').isDisabled(), "Restore to be disabled", 10_000);
  });

  test("delete: asked first, then gone from the tab and from the API", async (t) => {
    const src = await stoppedInstance("snap-delete");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    const keep = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "keep" });
    const gone = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "gone" });
    const { page, apiCalls } = await openTab(t, src.id);

    await snapshotRow(page, gone.id).locator('[data-action="delete-snapshot"]').click();
    const confirm = page.locator("#snapshot-delete-confirm");
    await confirm.waitFor();
    assert.match(await confirm.innerText(), /Delete snapshot gone\?/);
    await assertAccessible(page, "the delete confirmation");
    await confirm.locator('[data-confirm="cancel"]').click();
    assert.ok(!apiCalls.includes(`DELETE /snapshots/${gone.id}`), apiCalls.join(", "));

    await snapshotRow(page, gone.id).locator('[data-action="delete-snapshot"]').click();
    await confirm.locator('[data-confirm="ok"]').click();
    await snapshotRow(page, gone.id).waitFor({ state: "detached", timeout: 10_000 });
    await assert.rejects(api().snapshots.get(gone.id), (e) => e.status === 404);
    assert.deepEqual((await snapshotsOf(src.id)).map((s) => s.id), [keep.id]);
    assert.equal(await snapshotRow(page, keep.id).count(), 1);
    assert.equal(await page.locator("#snapshots-note").innerText(), "Deleted snapshot gone");
  });

  test("fork an instance: the new page says where it comes from, so does its list row", async (t) => {
    const src = await stoppedInstance("fork-src");
    const made = [src];
    cleanup(t, { instances: made });
    const { page, bodies } = await openTab(t, src.id, "overview");

    await page.click("#fork-instance");
    const dialog = page.locator("#fork-dialog");
    await dialog.waitFor();
    const name = dialog.locator("#fork-name");
    assert.equal(await name.inputValue(), "fork-src-fork");
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.field), "fork-name");
    assert.equal(await page.locator("#fork-target").inputValue(), "Stopped");
    assert.equal(await page.locator("#fork-running-note").count(), 0);
    await assertAccessible(page, "the fork dialog");
    await shot(page, "snapshots-fork-dialog.png");
    // The source's own name is taken: said before anything is sent.
    await name.fill("fork-src");
    await page.click("#fork-submit");
    assert.equal(await dialog.locator('p.field-error[data-field="fork-name"]').innerText(), 'An instance named "fork-src" already exists. Choose another name.');
    assert.equal(bodies.filter((b) => b.path.endsWith("/fork")).length, 0);

    await name.fill("fork-child");
    await page.click("#fork-submit");
    const child = await waitFor(async () => (await api().instances.list()).find((i) => i.name === "fork-child"), "the fork to exist");
    made.push(child);
    assert.deepEqual(JSON.parse(bodies.find((b) => b.path === `/instances/${src.id}/fork`).body), { name: "fork-child", target_state: "Stopped" });
    assert.equal(child.forked_from?.source_instance_id, src.id);
    // The new instance's page opens, and says where it comes from.
    await page.locator(`#instance-view[data-instance-id="${child.id}"]`).waitFor({ timeout: 10_000 });
    const origin = page.locator('[data-field="forked_from"]');
    assert.equal(await origin.innerText(), "fork-src");
    assert.equal(await origin.locator("a").getAttribute("href"), `#/instances/${src.id}`);
    assert.equal(await page.locator("#instance-missing").count(), 0);
    await shot(page, "snapshots-fork-overview.png");

    // The list row of the fork says it too; the source's does not.
    await page.evaluate(() => (window.location.hash = "#/"));
    await row(page, child.id).waitFor();
    assert.equal(await row(page, child.id).locator('[data-field="forked_from"]').innerText(), "fork of fork-src");
    assert.equal(await row(page, src.id).locator('[data-field="forked_from"]').count(), 0);
    await assertAccessible(page, "the list with a fork");

    // The source link goes to the source.
    await row(page, child.id).click();
    await page.locator('[data-field="forked_from"] a').click();
    await page.locator(`#instance-view[data-instance-id="${src.id}"]`).waitFor();

    // The source deleted: the fork still says where it came from, without a link.
    await api().instances.delete(src.id);
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), child.id);
    await page.locator('[data-field="forked_from"]', { hasText: "(deleted)" }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('[data-field="forked_from"]').innerText(), "fork-src (deleted)");
    assert.equal(await page.locator('[data-field="forked_from"] a').count(), 0);
  });

  test("fork a snapshot: the fork's page names the snapshot; a name taken meanwhile shows the server's answer", async (t) => {
    const src = await stoppedInstance("snapfork-src");
    const made = [src];
    cleanup(t, { instances: made, snapshotsOf: [src.id] });
    const snap = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "base" });
    const { page, bodies } = await openTab(t, src.id);

    await snapshotRow(page, snap.id).locator('[data-action="fork-snapshot"]').click();
    const dialog = page.locator("#fork-dialog");
    await dialog.waitFor();
    assert.equal(await dialog.getAttribute("data-source"), "snapshot");
    assert.deepEqual(await page.locator("#fork-target option").evaluateAll((os) => os.map((o) => o.value)), ["Stopped", "Running"]);
    // Another client takes the name while the dialog is open: the server refuses, in plain words.
    const other = await api().instances.create({ name: "snapfork-taken", image: "docker.io/library/alpine:latest", vcpus: 1, size: "1GB" });
    made.push(other);
    await dialog.locator("#fork-name").fill("snapfork-taken");
    await page.click("#fork-submit");
    const error = dialog.locator('p.field-error[data-field="fork-name"]');
    await error.waitFor({ timeout: 10_000 });
    assert.equal(await error.innerText(), 'An instance named "snapfork-taken" already exists. Choose another name.');
    assert.ok(bodies.some((b) => b.path === `/snapshots/${snap.id}/fork`), JSON.stringify(bodies));

    await dialog.locator("#fork-name").fill("snapfork-child");
    await page.click("#fork-submit");
    const child = await waitFor(async () => (await api().instances.list()).find((i) => i.name === "snapfork-child"), "the fork to exist");
    made.push(child);
    assert.deepEqual(child.forked_from, { source_instance_id: src.id, source_instance_name: "snapfork-src", snapshot_id: snap.id });
    await page.locator(`#instance-view[data-instance-id="${child.id}"]`).waitFor({ timeout: 10_000 });
    await page.locator('[data-field="forked_from"] [data-snapshot-id]', { hasText: "base" }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('[data-field="forked_from"]').innerText(), "snapfork-src, snapshot base");
    // The snapshot is still there, untouched.
    assert.equal((await api().snapshots.get(snap.id)).id, snap.id);
    // Once it is deleted, the fork's page names it by its id.
    await api().snapshots.delete(snap.id);
    await page.reload();
    await page.locator(`[data-field="forked_from"] code[title="${snap.id}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('[data-field="forked_from"]').innerText(), `snapfork-src, snapshot ${snap.id.slice(0, 8)}`);
  });

  test("fork a Standby snapshot from its row: Running by default, and the fork's page opens", async (t) => {
    const src = await runningInstance(ui.engine, "warmfork-src");
    const made = [src];
    cleanup(t, { instances: made, snapshotsOf: [src.id] });
    const snap = await api().instances.snapshots.create(src.id, { kind: "Standby", name: "warm" });
    const { page, bodies } = await openTab(t, src.id);

    await snapshotRow(page, snap.id).locator('[data-action="fork-snapshot"]').click();
    const dialog = page.locator("#fork-dialog");
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /from the memory and disks this snapshot saved/);
    assert.deepEqual(await page.locator("#fork-target option").evaluateAll((os) => os.map((o) => o.value)), ["Running", "Standby", "Stopped"]);
    assert.equal(await page.locator("#fork-target").inputValue(), "Running");
    assert.match(await dialog.locator('[data-field="fork-target-hint"]').innerText(), /^It resumes from the saved moment/);
    assert.equal(await page.locator("#fork-running-note").count(), 0);
    await assertAccessible(page, "the fork dialog of a Standby snapshot");

    await page.click("#fork-submit");
    const child = await waitFor(async () => (await api().instances.list()).find((i) => i.name === "warmfork-src-fork"), "the fork to exist");
    made.push(child);
    assert.deepEqual(JSON.parse(bodies.find((b) => b.path === `/snapshots/${snap.id}/fork`).body), { name: "warmfork-src-fork", target_state: "Running" });
    await page.locator(`#instance-view[data-instance-id="${child.id}"]`).waitFor({ timeout: 10_000 });
    await page.locator('[data-field="forked_from"] [data-snapshot-id]', { hasText: "warm" }).waitFor({ timeout: 10_000 });
    assert.equal(await stateOf(child.id), "Running");
    assert.equal(await stateOf(src.id), "Running");
  });

  test("the Snapshot button opens the Snapshots tab with the focus in the take form; a standby instance forks to Standby by default", async (t) => {
    const src = await runningInstance(ui.engine, "snap-button");
    const made = [src];
    cleanup(t, { instances: made, snapshotsOf: [src.id] });
    const { page } = await openTab(t, src.id, "overview");

    const button = page.locator("#snapshot-instance");
    assert.equal(await button.innerText(), "Snapshot");
    assert.equal(await page.locator("#detail-panel-snapshots").isHidden(), true);
    // With the keyboard: Enter on the button.
    await button.focus();
    await page.keyboard.press("Enter");
    await page.locator("#detail-panel-snapshots").waitFor({ state: "visible" });
    assert.equal(await page.locator("#detail-tab-snapshots").getAttribute("aria-selected"), "true");
    await waitFor(async () => (await page.evaluate(() => document.activeElement?.closest("form")?.id)) === "snapshot-form", "the focus in the take form", 5_000);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "snapshot-kind-standby");
    // From there, Tab goes on through the form: the Standby kind's compression, then the name.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "snapshot-compress");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "snapshot-name");
    await assertAccessible(page, "the Snapshots tab opened by the Snapshot button");

    // Again from another tab: the focus comes back into the form.
    await page.click("#detail-tab-overview");
    await button.click();
    await waitFor(async () => (await page.evaluate(() => document.activeElement?.id)) === "snapshot-kind-standby", "the focus in the take form again", 5_000);

    // A standby instance: its fork stays in standby unless asked otherwise.
    await api().instances.standby(src.id);
    await waitFor(async () => (await stateOf(src.id)) === "Standby", "snap-button to be in standby");
    await page.locator('#instance-view .detail-head [data-state="Standby"]').waitFor({ timeout: 10_000 });
    await page.click("#fork-instance");
    const dialog = page.locator("#fork-dialog");
    await dialog.waitFor();
    assert.deepEqual(await page.locator("#fork-target option").evaluateAll((os) => os.map((o) => o.value)), ["Standby", "Running", "Stopped"]);
    assert.equal(await page.locator("#fork-target").inputValue(), "Standby");
    assert.match(await dialog.innerText(), /copy of snap-button's memory, disks and settings/);
    assert.equal(await page.locator("#fork-running-note").count(), 0);
    await assertAccessible(page, "the fork dialog of a standby instance");
    await page.click("#fork-submit");
    const child = await waitFor(async () => (await api().instances.list()).find((i) => i.name === "snap-button-fork"), "the standby fork");
    made.push(child);
    await page.locator(`#instance-view[data-instance-id="${child.id}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await stateOf(child.id), "Standby");
  });

  test("fork a running instance: the dialog explains from_running, and with it the fork runs", async (t) => {
    const src = await runningInstance(ui.engine, "fork-running");
    const made = [src];
    cleanup(t, { instances: made });
    const { page, bodies } = await openTab(t, src.id, "overview");

    await page.click("#fork-instance");
    const dialog = page.locator("#fork-dialog");
    await dialog.waitFor();
    assert.match(
      await page.locator("#fork-running-note").innerText(),
      /^fork-running is running\. The instance is paused and saved for a moment, then resumes; the fork continues from the same point with its own name and address\./,
    );
    assert.equal(await page.locator("#fork-from-running").isChecked(), true);
    assert.equal(await page.locator("#fork-target").inputValue(), "Running");
    await assertAccessible(page, "the fork dialog of a running instance");
    await shot(page, "snapshots-fork-running.png");

    // Without from_running: the server's 409, explained.
    await page.locator("#fork-from-running").uncheck();
    await page.click("#fork-submit");
    await page.locator("#fork-error").waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#fork-error").innerText(), /^The instance is running: fork it with “from running”/);
    assert.equal(JSON.parse(bodies.filter((b) => b.path.endsWith("/fork")).at(-1).body).from_running, false);

    // With it: the source is saved, forked and resumed, and the fork's page opens.
    await page.locator("#fork-from-running").check();
    await page.click("#fork-submit");
    const child = await waitFor(
      async () => (await api().instances.list()).find((i) => i.name === "fork-running-fork"),
      "the running fork",
    );
    made.push(child);
    await page.locator(`#instance-view[data-instance-id="${child.id}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await stateOf(child.id), "Running");
    assert.equal(JSON.parse(bodies.filter((b) => b.path.endsWith("/fork")).at(-1).body).from_running, true);
    assert.equal(await stateOf(src.id), "Running");
  });

  test("a snapshot schedule: refused client-side, set through the form, edited, a server refusal translated", async (t) => {
    const src = await stoppedInstance("sched-set");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    t.after(() => api().instances.snapshotSchedule.delete(src.id).catch(() => {}));
    const { page, apiCalls, consoleErrors } = await openTab(t, src.id);
    const puts = [];
    page.on("request", (r) => r.method() === "PUT" && r.url().startsWith(ui.engine.url) && puts.push({ path: new URL(r.url()).pathname, body: r.postData() }));
    const schedulePath = `/instances/${src.id}/snapshot-schedule`;

    await page.locator("#schedule-none").waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#schedule-none").innerText(), /^No schedule: snapshots of sched-set are taken only by hand/);
    assert.deepEqual(await page.locator("#schedule-every option").evaluateAll((os) => os.map((o) => o.value)), ["15m", "1h", "6h", "24h", "custom"]);
    await assertAccessible(page, "the schedule form");

    // Every mistake at once, nothing sent: an interval under a minute, no limit, a bad prefix.
    await page.selectOption("#schedule-every", "custom");
    await page.fill("#schedule-custom", "30s");
    await page.fill("#schedule-keep", "");
    await page.fill("#schedule-prefix", "Nightly");
    await page.click("#schedule-save");
    assert.equal(await page.locator("#schedule-interval-error").innerText(), "The interval is at least 1 minute (1m); 30s is 30 seconds");
    assert.equal(await page.locator("#schedule-custom").getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#schedule-custom").getAttribute("aria-describedby"), "schedule-custom-hint schedule-interval-error");
    assert.match(await page.locator("#schedule-retention-error").innerText(), /how many snapshots to keep/);
    assert.match(await page.locator("#schedule-retention").getAttribute("aria-describedby"), /schedule-retention-error/);
    assert.match(await page.locator("#schedule-prefix-error").innerText(), /lowercase letters, digits and dashes/);
    assert.equal(await page.locator("#schedule-prefix").getAttribute("aria-describedby"), "schedule-prefix-hint schedule-prefix-error");
    await assertAccessible(page, "the schedule form with errors");
    assert.equal(puts.length, 0, JSON.stringify(puts));
    assert.ok(!apiCalls.includes(`PUT ${schedulePath}`), apiCalls.join(", "));
    // An edited field loses its error.
    await page.fill("#schedule-custom", "1m");
    assert.equal(await page.locator("#schedule-interval-error").count(), 0);

    // Every hour, keep 5, delete after 48h, prefix nightly.
    await page.selectOption("#schedule-every", "1h");
    assert.equal(await page.locator("#schedule-custom").count(), 0);
    await page.fill("#schedule-keep", "5");
    await page.fill("#schedule-max-age", "48h");
    await page.fill("#schedule-prefix", "nightly");
    await page.click("#schedule-save");
    await page.locator("#schedule-summary").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#schedule-summary").innerText(), "Every 1 hour, keeps the newest 5 and deletes those older than 2 days.");
    assert.deepEqual(JSON.parse(puts.at(-1).body), { interval: "1h", retention: { max_count: 5, max_age: "48h" }, name_prefix: "nightly" });
    const set = await api().instances.snapshotSchedule.get(src.id);
    assert.equal(set.interval, "1h0m0s");
    assert.deepEqual(set.retention, { max_count: 5, max_age: "48h0m0s" });
    assert.equal(set.name_prefix, "nightly");
    // The next run: an interval from now, plus the engine's jitter (up to 5 minutes).
    assert.equal(await page.locator("#schedule-next").getAttribute("data-at"), set.next_run_at);
    assert.match(await page.locator("#schedule-next").innerText(), /^in (59m \d+s|1h [0-5]m) \(/);
    assert.equal(await page.locator("#schedule-last").getAttribute("data-result"), "never");
    assert.equal(await page.locator("#schedule-last").innerText(), "Not run yet");
    assert.equal(await page.locator("#schedule-names").innerText(), "nightly-YYYYMMDD-HHMMSS");
    assert.match(await page.locator("#snapshots-note").innerText(), /^Schedule set: Every 1 hour/);
    await assertAccessible(page, "the schedule set");
    await shot(page, "snapshots-schedule.png");

    // Edit: the same form, prefilled; Cancel leaves it as it was.
    await page.click("#schedule-edit");
    assert.equal(await page.locator("#schedule-form").getAttribute("data-mode"), "edit");
    assert.equal(await page.locator("#schedule-every").inputValue(), "1h");
    assert.equal(await page.locator("#schedule-keep").inputValue(), "5");
    assert.equal(await page.locator("#schedule-max-age").inputValue(), "48h0m0s");
    assert.equal(await page.locator("#schedule-prefix").inputValue(), "nightly");
    await page.click("#schedule-cancel");
    await page.locator("#schedule-summary").waitFor();
    await page.click("#schedule-edit");
    await page.selectOption("#schedule-every", "6h");
    await page.fill("#schedule-keep", "");
    await page.click("#schedule-save");
    await page.locator("#schedule-summary", { hasText: "Every 6 hours" }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#schedule-summary").innerText(), "Every 6 hours, deletes those older than 2 days.");
    const edited = await api().instances.snapshotSchedule.get(src.id);
    assert.equal(edited.interval, "6h0m0s");
    assert.deepEqual(edited.retention, { max_count: 0, max_age: "48h0m0s" });

    // The server's own refusal, translated: the request is changed on its way to one only the
    // server sees (an interval under a minute).
    await page.route(`${ui.engine.url}${schedulePath}`, async (route) => {
      const r = route.request();
      if (r.method() !== "PUT") return route.continue();
      await route.continue({ postData: JSON.stringify({ ...JSON.parse(r.postData()), interval: "30s" }) });
    });
    const answer = page.waitForResponse((r) => r.request().method() === "PUT" && new URL(r.url()).pathname === schedulePath);
    await page.click("#schedule-edit");
    await page.selectOption("#schedule-every", "24h");
    await page.click("#schedule-save");
    const refused = await answer;
    assert.equal(refused.status(), 400);
    assert.deepEqual(await refused.json(), { code: "invalid_request", message: "invalid request: interval must be at least 1m0s" });
    await page.locator("#schedule-interval-error").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#schedule-interval-error").innerText(), "The server refused the interval: it is at least 1 minute (1m).");
    assert.equal(await page.locator("#schedule-every").getAttribute("aria-describedby"), "schedule-interval-error");
    assert.equal((await api().instances.snapshotSchedule.get(src.id)).interval, "6h0m0s");
    await assertAccessible(page, "the schedule form with the server's refusal");
    assert.deepEqual(consoleErrors, []);
  });

  test("scheduled snapshots are marked; removing the schedule asks first and keeps the snapshots", async (t) => {
    const src = await stoppedInstance("sched-remove");
    cleanup(t, { instances: [src], snapshotsOf: [src.id] });
    t.after(() => api().instances.snapshotSchedule.delete(src.id).catch(() => {}));
    const manual = await api().instances.snapshots.create(src.id, { kind: "Stopped", name: "by-hand" });
    const scheduled = await api().instances.snapshots.create(src.id, {
      kind: "Stopped",
      name: "scheduled-20261206-100000",
      tags: { "hypeman.scheduled": "true", "hypeman.schedule_instance_id": src.id },
    });
    await api().instances.snapshotSchedule.update(src.id, { interval: "24h", retention: { max_count: 3 } });
    const { page, apiCalls } = await openTab(t, src.id);

    await snapshotRow(page, scheduled.id).waitFor({ timeout: 10_000 });
    const mark = snapshotRow(page, scheduled.id).locator('[data-field="scheduled"]');
    assert.equal(await mark.innerText(), "scheduled");
    assert.equal(await mark.getAttribute("title"), "Taken by the snapshot schedule");
    assert.equal(await snapshotRow(page, manual.id).locator('[data-field="scheduled"]').count(), 0);
    // The schedule's own tags (hypeman.*) are not shown.
    assert.equal(await snapshotRow(page, scheduled.id).locator('[data-field="tags"]').innerText(), "");
    await page.locator("#schedule-summary").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#schedule-summary").innerText(), "Every 1 day, keeps the newest 3.");
    await assertAccessible(page, "a scheduled snapshot and the schedule");

    // A last run (the engine's answer amended, as a run is a minute away at best): the snapshot
    // it took links to its row; a failed one says why.
    const schedulePath = `${ui.engine.url}/instances/${src.id}/snapshot-schedule`;
    let lastRun = { last_run_at: new Date(Date.now() - 90_000).toISOString(), last_snapshot_id: scheduled.id, last_error: null };
    await page.route(schedulePath, async (route) => {
      if (route.request().method() !== "GET") return route.continue();
      const response = await route.fetch();
      await route.fulfill({ response, json: { ...(await response.json()), ...lastRun } });
    });
    const link = page.locator("#schedule-last button.link");
    await link.waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#schedule-last").getAttribute("data-result"), "took");
    assert.match(await page.locator("#schedule-last").innerText(), /\(1m \d+s ago\): took snapshot scheduled-20261206-100000$/);
    await link.click();
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.snapshotId), scheduled.id);
    assert.equal(await snapshotRow(page, scheduled.id).getAttribute("class"), "shown");
    lastRun = { ...lastRun, last_snapshot_id: null, last_error: "invalid state transition: scheduled snapshot requires source in Running, Standby, or Stopped, got Paused" };
    await page.locator("#schedule-last-error").waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#schedule-last-error").innerText(), /^failed: invalid state transition: .* got Paused$/);
    await assertAccessible(page, "the schedule's last runs");
    await page.unroute(schedulePath);

    // Remove: asked first; Cancel keeps it.
    await page.click("#schedule-remove");
    const dialog = page.locator("#schedule-remove-confirm");
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /The snapshots it took stay \(1 now\)/);
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.confirm), "cancel");
    await assertAccessible(page, "the remove-schedule dialog");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    assert.ok(!apiCalls.includes(`DELETE /instances/${src.id}/snapshot-schedule`), apiCalls.join(", "));
    assert.equal((await api().instances.snapshotSchedule.get(src.id)).interval, "24h0m0s");

    await page.click("#schedule-remove");
    await dialog.locator('[data-confirm="ok"]').click();
    await page.locator("#schedule-none").waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#snapshots-note").innerText(), "Removed the schedule; its snapshots stay");
    const gone = await api().instances.snapshotSchedule.get(src.id).then(
      () => null,
      (e) => e,
    );
    assert.equal(gone?.status, 404);
    assert.equal(gone.error?.code, "not_found");
    const left = (await snapshotsOf(src.id)).map((s) => s.id).sort();
    assert.deepEqual(left, [manual.id, scheduled.id].sort());
    assert.equal(await page.locator("#snapshots-table tbody tr").count(), 2);
    assert.equal(await snapshotRow(page, scheduled.id).locator('[data-field="scheduled"]').count(), 1);
    await assertAccessible(page, "the Snapshots tab after the schedule was removed");
  });
});
