// Templates in headless Chromium against a fake-backed `hypedeck serve` whose backend offers
// templates (one per vCPU count and memory size): the Images tab lists the template the first
// start of a shape made (image, shape, status, starts, size), an instance started from it says
// so on its Overview ("Started from template …") while a cold-booted one does not, Delete
// removes the template (the server's list agrees), and axe-core finds no WCAG 2 A/AA violation.
// Run by tests/desktop/run.sh (SUITES=browser).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, runningInstance, assertAccessible } from "./harness.mjs";


const ui = browserUi("templates", { HYPEDECK_FAKE_TEMPLATES: "1" });
before(() => ui.start());
after(() => ui.stop());

/** The engine's templates, through the API. */
async function templates() {
  const res = await fetch(`${ui.engine.url}/templates`, { headers: { Authorization: `Bearer ${ui.engine.token}` } });
  assert.equal(res.status, 200);
  return res.json();
}

describe("templates", () => {
  test("the Images tab lists templates, an instance says it started from one, Delete removes it", async (t) => {
    const cold = await runningInstance(ui.engine, "tpl-first", { vcpus: 2, size: "512MB" });
    const made = await waitFor(async () => (await templates()).find((x) => x.status === "ready"), "the template");
    const warm = await runningInstance(ui.engine, "tpl-second", { vcpus: 2, size: "512MB" });
    t.after(async () => {
      for (const i of [cold, warm]) await ui.engine.client.instances.delete(i.id).catch(() => {});
    });
    assert.equal((await ui.engine.client.instances.get(warm.id)).template_id, made.id);

    // The Overview of each says how its run started.
    let page = (await ui.openInstance(t, warm.id)).page;
    const field = page.locator('dd[data-field="template_id"]');
    await field.waitFor();
    assert.equal((await field.textContent()).trim(), `template ${made.id.slice(0, 8)}`);
    await assertAccessible(page, "overview of an instance started from a template");
    page = (await ui.openInstance(t, cold.id)).page;
    await page.locator('dd[data-field="image"]').waitFor();
    assert.equal(await page.locator('dd[data-field="template_id"]').count(), 0, "a cold boot names no template");

    // The Images tab's Templates section.
    await page.click('a.tab[href="#/images"]');
    const tr = page.locator(`#templates-table tr[data-template="${made.id}"]`);
    await tr.waitFor({ timeout: 10_000 });
    const cells = (await tr.locator("td").allTextContents()).map((c) => c.trim());
    assert.equal(cells[0], `docker.io/library/alpine:latest ${made.id.slice(0, 8)}`);
    assert.equal(cells[1], "2 vCPUs · 512 MiB");
    assert.equal(cells[2], "ready");
    await waitFor(async () => (await tr.locator("td").nth(3).textContent()).trim() === "1", "one start counted");
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "ui-templates.png"), fullPage: true });
    await assertAccessible(page, "images with templates");

    await tr.locator('button[data-template-action="delete"]').click();
    await tr.waitFor({ state: "detached", timeout: 10_000 });
    assert.equal((await templates()).some((x) => x.id === made.id), false);
    await page.locator("#templates .empty").waitFor();
  });
});
