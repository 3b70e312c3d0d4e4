// Volumes on the instance page, in headless Chromium against a fake-backed `hypedeck serve`
// (its guests "mount" at once, with no real disk, so the guest's "in use" 409 cannot happen
// here): attach a volume read-write by clicking and the row and the API agree; a system
// directory is the API's 400, shown under the form with the path field marked, and nothing is
// attached; a volume attached here is no longer offered and one attached read-write elsewhere
// is listed but not selectable (the API's 409 for it is checked directly); Detach empties the
// instance's volumes; a stopped instance attaches too (mounted at its next start); an instance
// in standby says why it cannot; the Volumes view detaches an attachment; with no volume at all
// the card points to the Volumes view. axe-core finds no WCAG 2 A/AA violation in light and
// dark. Run by tests/desktop/run.sh (SUITES=browser); screenshots go to test-results/ui-volumes-*.png.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, assertAccessible, browserUi, runningInstance } from "./harness.mjs";

const ui = browserUi("ui-volumes");
before(() => ui.start());
after(() => ui.stop());

const client = () => ui.engine.client;

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, `ui-volumes-${name}.png`), fullPage: true });
}

/** `GET /instances/{id}` straight from the API, as JSON. */
async function instance(id) {
  const res = await fetch(`${ui.engine.url}/instances/${id}`, { headers: { Authorization: `Bearer ${ui.engine.token}` } });
  assert.equal(res.status, 200, `GET /instances/${id}`);
  return res.json();
}

/** The ids in the Attach form's menu, and which of them can be selected. */
const menu = (page) =>
  page.locator("#volume-attach-volume option").evaluateAll((os) => os.map((o) => ({ id: o.value, disabled: o.disabled, text: o.textContent })));

/** Deletes the instances, then the volumes (a volume attached anywhere cannot be deleted). */
function cleanup(t, instances, volumes) {
  t.after(async () => {
    for (const i of instances) await client().instances.delete(i.id).catch(() => {});
    for (const v of volumes) await client().volumes.delete(v.id).catch(() => {});
  });
}

describe("volumes on the instance page", () => {
  test("attach by clicking, the API's 400 inline, nothing offered twice, detach, a stopped instance, a parked one", async (t) => {
    const data = await client().volumes.create({ name: "vol-data", size_gb: 1 });
    const cache = await client().volumes.create({ name: "vol-cache", size_gb: 1 });
    const web = await runningInstance(ui.engine, "vol-web");
    const other = await runningInstance(ui.engine, "vol-other");
    const cold = await runningInstance(ui.engine, "vol-cold");
    cleanup(t, [web, other, cold], [data, cache]);
    await client().instances.stop(cold.id);
    await waitFor(async () => (await instance(cold.id)).state === "Stopped", "vol-cold to stop");

    const { page, apiCalls, consoleErrors } = await ui.openInstance(t, web.id);
    const card = page.locator("#volumes-card");
    await card.waitFor();
    assert.equal((await card.locator("#volumes-none").textContent()).trim(), "No volumes.");
    await page.locator("#volume-attach-form").waitFor();
    // Both volumes are offered, by name; the first (by name) is selected.
    assert.deepEqual(
      (await menu(page)).map((o) => [o.id, o.disabled, o.text]),
      [
        [cache.id, false, "vol-cache (1 GB)"],
        [data.id, false, "vol-data (1 GB)"],
      ],
    );
    assert.equal(await page.locator("#volume-attach-volume").inputValue(), cache.id);
    // Every control has its label.
    assert.equal(await page.getByRole("combobox", { name: /^Volume/ }).getAttribute("id"), "volume-attach-volume");
    assert.equal(await page.getByLabel("Mount path").getAttribute("id"), "volume-attach-path");
    assert.equal(await page.getByLabel("Read-only").getAttribute("id"), "volume-attach-readonly");
    assert.equal(await page.locator("#volume-attach-path").getAttribute("placeholder"), "/mnt/data");
    assert.equal(await page.locator("#volumes-status").getAttribute("role"), "status");

    // No path: said before sending, on the path field.
    await page.selectOption("#volume-attach-volume", data.id);
    const before = apiCalls.length;
    await page.click("#volume-attach-submit");
    const error = page.locator("#volume-attach-error");
    await error.waitFor();
    assert.equal(await error.getAttribute("role"), "alert");
    assert.match(await error.textContent(), /Give the path to mount it at/);
    assert.equal(await page.locator("#volume-attach-path").getAttribute("aria-invalid"), "true");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "volume-attach-path");
    assert.equal(apiCalls.slice(before).filter((c) => c.startsWith("POST ")).length, 0, "nothing sent without a path");

    // A system directory: the API's 400, word for word, under the form; the field is marked.
    await page.fill("#volume-attach-path", "/etc");
    assert.equal(await page.locator("#volume-attach-path").getAttribute("aria-invalid"), "false", "typing clears the mark");
    await page.click("#volume-attach-submit");
    await page.locator("#volume-attach-error", { hasText: "system directory" }).waitFor();
    let refused;
    try {
      await client().instances.volumes.attach(data.id, { id: web.id, mount_path: "/etc" });
    } catch (e) {
      refused = e;
    }
    assert.equal(refused?.status, 400, "the API refuses /etc");
    assert.equal(refused.error.code, "invalid_request");
    assert.equal((await error.textContent()).trim(), `${refused.error.message} (invalid_request)`);
    assert.equal(await error.getAttribute("data-field"), "mount_path");
    assert.equal(await page.locator("#volume-attach-path").getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#volume-attach-path").getAttribute("aria-describedby"), "volume-attach-error");
    assert.deepEqual((await instance(web.id)).volumes ?? [], [], "nothing attached after a 400");
    await assertAccessible(page, "the volumes card with an error (light)");
    await page.locator("#volumes-card").scrollIntoViewIfNeeded();
    await shot(page, "error");

    // Read-write at /mnt/data: the row shows name, id, path and mode, the API agrees.
    await page.fill("#volume-attach-path", "/mnt/data");
    assert.equal(await page.locator("#volume-attach-readonly").isChecked(), false);
    await page.click("#volume-attach-submit");
    const dataRow = card.locator(`li.volume-mount[data-volume-id="${data.id}"]`);
    await dataRow.waitFor({ timeout: 10_000 });
    assert.equal(await error.count(), 0, "the error is gone");
    assert.equal(await dataRow.locator(".volume-mount-name").textContent(), "vol-data");
    assert.equal(await dataRow.locator('[data-field="mount_path"]').textContent(), "/mnt/data");
    assert.equal(await dataRow.locator('[data-field="mode"]').textContent(), "(read-write)");
    assert.match(await dataRow.textContent(), new RegExp(data.id));
    assert.equal((await page.locator("#volumes-status").textContent()).trim(), "Attached vol-data at /mnt/data.");
    const attached = await instance(web.id);
    assert.deepEqual(
      attached.volumes.map((v) => [v.volume_id, v.mount_path, Boolean(v.readonly)]),
      [[data.id, "/mnt/data", false]],
    );
    assert.deepEqual((await client().volumes.get(data.id)).attachments.map((a) => [a.instance_id, a.mount_path, a.readonly]), [[web.id, "/mnt/data", false]]);
    assert.ok(apiCalls.includes(`POST /instances/${web.id}/volumes/${data.id}`), apiCalls.join(", "));
    // The path field is empty again, the mark gone.
    assert.equal(await page.locator("#volume-attach-path").inputValue(), "");
    assert.equal(await page.locator("#volume-attach-path").getAttribute("aria-invalid"), "false");

    // The same volume again is not offered; the API would say 409 if asked.
    await waitFor(async () => !(await menu(page)).some((o) => o.id === data.id), "vol-data to leave the menu");
    assert.deepEqual((await menu(page)).map((o) => o.id), [cache.id]);
    await assert.rejects(
      client().instances.volumes.attach(data.id, { id: web.id, mount_path: "/mnt/again" }),
      (e) => e.status === 409 && /already attached/.test(e.error.message),
    );
    await assertAccessible(page, "the volumes card with a volume (light)");
    await shot(page, "attached-light");

    // On another instance, vol-data (read-write here) is listed but cannot be chosen.
    const otherPage = (await ui.openInstance(t, other.id)).page;
    await otherPage.locator("#volume-attach-form").waitFor();
    const offered = await menu(otherPage);
    assert.deepEqual(
      offered.map((o) => [o.id, o.disabled]),
      [
        [cache.id, false],
        [data.id, true],
      ],
    );
    assert.match(offered[1].text, /attached read-write to /);
    await assert.rejects(
      client().instances.volumes.attach(data.id, { id: other.id, mount_path: "/mnt/data", readonly: true }),
      (e) => e.status === 409 && e.error.code === "invalid_state",
    );

    // Detach: "Detaching…" then the row is gone and the instance has no volume.
    const detach = dataRow.locator('button[data-action="detach-volume"]');
    assert.equal(await detach.getAttribute("aria-label"), "Detach vol-data from /mnt/data");
    await detach.click();
    await dataRow.waitFor({ state: "detached", timeout: 10_000 });
    await card.locator("#volumes-none").waitFor();
    assert.equal((await page.locator("#volumes-status").textContent()).trim(), "Detached vol-data from /mnt/data.");
    assert.deepEqual((await instance(web.id)).volumes ?? [], []);
    assert.ok(apiCalls.includes(`DELETE /instances/${web.id}/volumes/${data.id}`), apiCalls.join(", "));
    assert.equal(await page.evaluate(() => document.activeElement?.id), "volumes-heading", "the focus returns to the card");
    await waitFor(async () => (await menu(page)).some((o) => o.id === data.id), "vol-data to be offered again");

    // Read-only, by keyboard: the checkbox and Enter.
    await page.selectOption("#volume-attach-volume", cache.id);
    await page.fill("#volume-attach-path", "/srv/cache");
    await page.locator("#volume-attach-readonly").focus();
    await page.keyboard.press("Space");
    assert.equal(await page.locator("#volume-attach-readonly").isChecked(), true);
    await page.locator("#volume-attach-path").focus();
    await page.keyboard.press("Enter");
    const cacheRow = card.locator(`li.volume-mount[data-volume-id="${cache.id}"]`);
    await cacheRow.waitFor({ timeout: 10_000 });
    assert.equal(await cacheRow.locator('[data-field="mode"]').textContent(), "(read-only)");
    assert.deepEqual((await instance(web.id)).volumes.map((v) => [v.volume_id, v.mount_path, v.readonly]), [[cache.id, "/srv/cache", true]]);
    // A path another volume of this instance uses: the API's 400, on the path field.
    await page.selectOption("#volume-attach-volume", data.id);
    await page.fill("#volume-attach-path", "/srv/cache");
    await page.click("#volume-attach-submit");
    await page.locator("#volume-attach-error", { hasText: "duplicate mount path" }).waitFor();
    assert.equal(await error.getAttribute("data-field"), "mount_path");
    assert.equal((await instance(web.id)).volumes.length, 1);

    // Dark: the same card, axe-clean.
    const dark = (await ui.openInstance(t, web.id, { colorScheme: "dark" })).page;
    await dark.locator(`#volumes-card li.volume-mount[data-volume-id="${cache.id}"]`).waitFor();
    await dark.locator("#volume-attach-form").waitFor();
    await dark.fill("#volume-attach-path", "/etc");
    await dark.click("#volume-attach-submit");
    await dark.locator("#volume-attach-error", { hasText: "system directory" }).waitFor();
    await assertAccessible(dark, "the volumes card (dark)");
    await dark.locator("#volumes-card").scrollIntoViewIfNeeded();
    await shot(dark, "dark");

    // A stopped instance attaches too: mounted at its next start.
    const coldPage = (await ui.openInstance(t, cold.id)).page;
    await coldPage.locator("#volume-attach-form").waitFor();
    assert.match(await coldPage.locator("#volume-attach-hint").textContent(), /mounted at the next start/);
    await coldPage.selectOption("#volume-attach-volume", data.id);
    await coldPage.fill("#volume-attach-path", "/mnt/data");
    await coldPage.click("#volume-attach-submit");
    await coldPage.locator(`#volumes-card li.volume-mount[data-volume-id="${data.id}"]`).waitFor({ timeout: 10_000 });
    assert.equal((await coldPage.locator("#volumes-status").textContent()).trim(), "Attached vol-data at /mnt/data; it is mounted at the next start.");
    const coldNow = await instance(cold.id);
    assert.equal(coldNow.state, "Stopped");
    assert.deepEqual(coldNow.volumes.map((v) => [v.volume_id, v.mount_path]), [[data.id, "/mnt/data"]]);
    await shot(coldPage, "stopped");

    // In standby: no form and no Detach, a sentence instead (the API would say 409).
    await client().instances.standby(web.id);
    await page.locator('#instance-view .detail-head .badge[data-state="Standby"]').waitFor({ timeout: 15_000 });
    await page.locator("#volumes-why").waitFor();
    assert.equal((await page.locator("#volumes-why").textContent()).trim(), "Volumes can be attached when the instance is running or stopped; this one is Standby.");
    assert.equal(await page.locator("#volume-attach-form").count(), 0);
    assert.equal(await card.locator('button[data-action="detach-volume"]').count(), 0);
    assert.equal(await cacheRow.count(), 1, "the mount is still listed");
    await assert.rejects(client().instances.volumes.detach(cache.id, { id: web.id }), (e) => e.status === 409 && e.error.code === "invalid_state");
    await assertAccessible(page, "the volumes card of an instance in standby");
    assert.deepEqual(consoleErrors.filter((e) => !/status of 4\d\d/.test(e)), []);
  });

  test("the Volumes view detaches an attachment; with no volume at all the card points to it", async (t) => {
    const web = await runningInstance(ui.engine, "vol-view");
    cleanup(t, [web], []);
    const { page } = await ui.openInstance(t, web.id);
    // No volume on the engine: say so and link to the Volumes view.
    const empty = page.locator("#volumes-empty");
    await empty.waitFor();
    assert.match(await empty.textContent(), /no volumes on this engine yet/);
    assert.equal(await empty.locator("a").getAttribute("href"), "#/volumes");
    await assertAccessible(page, "the volumes card without volumes");

    const vol = await client().volumes.create({ name: "vol-listed", size_gb: 1 });
    cleanup(t, [], [vol]);
    await client().instances.volumes.attach(vol.id, { id: web.id, mount_path: "/mnt/listed" });
    await empty.locator("a").click();
    const row = page.locator(`#volumes-table tr[data-volume-id="${vol.id}"]`);
    await row.waitFor({ timeout: 10_000 });
    const item = row.locator(`.attachments li[data-instance-id="${web.id}"]`);
    await item.waitFor({ timeout: 10_000 });
    assert.equal(await row.locator('button[data-action="delete-volume"]').isDisabled(), true);
    await assertAccessible(page, "the Volumes view with an attachment");
    await shot(page, "view");
    await item.locator('button[data-action="detach-volume"]').click();
    await item.waitFor({ state: "detached", timeout: 10_000 });
    assert.deepEqual((await instance(web.id)).volumes ?? [], []);
    await row.locator('button[data-action="delete-volume"]:not([disabled])').waitFor();
  });
});
