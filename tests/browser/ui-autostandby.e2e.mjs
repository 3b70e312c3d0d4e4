// Auto-standby on the instance page, in headless Chromium against a fake-backed `hypedeck
// serve` (its controller runs every second): an idle instance with a long timeout shows the
// countdown and Hold places a hold the server agrees with; one with a 1 s timeout goes to
// standby and the card says it is asleep and what wakes it; a connection to its forwarded port
// wakes it (the engine held the port) and the card follows; an instance without a policy has
// no card; axe-core finds no WCAG 2 A/AA violation.
import assert from "node:assert/strict";
import { connect } from "node:net";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, assertAccessible, browserUi, runningInstance } from "./harness.mjs";

const ui = browserUi("autostandby");
before(() => ui.start());
after(() => ui.stop());

const api = () => ui.engine.client;
async function status(id) {
  const res = await fetch(`${ui.engine.url}/instances/${id}/auto-standby/status`, { headers: { Authorization: `Bearer ${ui.engine.token}` } });
  return res.json();
}
async function freePort() {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
describe("auto-standby", () => {
  test("the card counts down, holds, says asleep and follows a wake-up", async (t) => {
    const idle = await runningInstance(ui.engine, "idle", { network: { enabled: true }, auto_standby: { enabled: true, idle_timeout: "1h" } });
    const port = await freePort();
    const sleepy = await runningInstance(ui.engine, "sleepy", {
      network: { enabled: true },
      ports: [{ host_port: port, guest_port: 80 }],
      auto_standby: { enabled: true, idle_timeout: "1s" },
    });
    const plain = await runningInstance(ui.engine, "plain");
    t.after(async () => {
      for (const i of [idle, sleepy, plain]) await api().instances.delete(i.id).catch(() => {});
    });

    let page = (await ui.openInstance(t, idle.id)).page;
    const card = page.locator("#auto-standby-card");
    await card.waitFor();
    await page.locator("#auto-standby-title", { hasText: "Idle" }).waitFor();
    // Before the controller's first look it says the timeout; then it counts down.
    await page.locator("#auto-standby-text", { hasText: /^Nothing uses it: standby in \d+m\d+s\.$/ }).waitFor({ timeout: 10_000 });
    await page.click("#auto-standby-hold");
    await page.locator("#auto-standby-note", { hasText: "Held until" }).waitFor();
    assert.ok((await status(idle.id)).hold_until, "the server has the hold");
    await assertAccessible(page, "the auto-standby card");
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "ui-autostandby-idle.png"), fullPage: true });

    await waitFor(async () => (await status(sleepy.id)).asleep, "sleepy to fall asleep", 20_000);
    page = (await ui.openInstance(t, sleepy.id)).page;
    await page.locator('#auto-standby-card[data-asleep="true"]').waitFor();
    assert.equal((await page.locator("#auto-standby-title").textContent()).trim(), "Asleep");
    assert.match(await page.locator("#auto-standby-text").textContent(), /A connection to a forwarded port or an exec wakes it\./);
    assert.equal(await page.locator("#auto-standby-hold").isDisabled(), true);
    await assertAccessible(page, "the card of an asleep instance");
    await page.screenshot({ path: path.join(RESULTS, "ui-autostandby-asleep.png"), fullPage: true });

    // The engine holds the port: a connection wakes it, and the card follows. (With a longer
    // timeout first, so it stays awake long enough to be seen: the policy changes while it
    // sleeps, and it sleeps on.)
    await api().instances.update(sleepy.id, { auto_standby: { enabled: true, idle_timeout: "1h" } });
    assert.equal((await status(sleepy.id)).asleep, true);
    const socket = connect(port, "127.0.0.1");
    await new Promise((r, j) => socket.once("connect", r).once("error", j));
    socket.destroy();
    await page.locator('#auto-standby-card[data-asleep="false"]').waitFor({ timeout: 20_000 });

    page = (await ui.openInstance(t, plain.id)).page;
    await page.locator('dd[data-field="image"]').waitFor();
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(await page.locator("#auto-standby-card").count(), 0, "no policy, no card");
  });
});
