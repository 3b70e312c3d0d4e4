// The window a Docker Desktop or OrbStack user keeps open: the instance list, images, connecting
// and accessibility, in headless Chromium against a fake-backed `hypedeck serve` (and, for
// images, the shipped `hypedeck serve`, whose image cache the fake lacks). Accessibility is
// checked with axe-core against WCAG 2 A/AA in light and dark. tests/desktop/run.sh sets up
// the session; screenshots go to test-results/.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, row, runningInstance } from "./harness.mjs";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");

const ui = browserUi("ui-fleet");
before(() => ui.start());
after(() => ui.stop());

/** Runs axe-core on the page (WCAG 2 A and AA rules) and fails with every violation named. */
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
  await page.screenshot({ path: path.join(RESULTS, name) });
}

describe("the instance list, images, connecting and accessibility", () => {
  for (const scheme of ["light", "dark"]) {
    test(`WCAG 2 AA (axe-core) in ${scheme}: the connect form, the list, images and settings`, async (t) => {
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
    });
  }
});
