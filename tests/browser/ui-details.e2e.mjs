// The instance details page in headless Chromium against a fake-backed `hypedeck serve`: its
// ARIA tabs, the rotation card and what it refuses, credentials kept off the Environment card,
// the effective command, the Run box's shell, and a page load that sends no probe PATCH and
// logs no console error. Run by tests/desktop/run.sh (SUITES=browser).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, browserUi, runningInstance } from "./harness.mjs";

const ui = browserUi("details");
before(() => ui.start());
after(() => ui.stop());

const SECRET = "tok-details-secret-value";
const withCredential = (name, extra = {}) =>
  runningInstance(ui.engine, name, {
    env: { AGENT_TOKEN: SECRET, GREETING: "hello-plain-value" },
    network: { enabled: true, egress: { enabled: true } },
    credentials: {
      AGENT_TOKEN: {
        source: { env: "AGENT_TOKEN" },
        inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }],
      },
    },
    ...extra,
  });

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, name), fullPage: true });
}

const selectedTabs = (page) => page.locator('#detail-tabs [role="tab"][aria-selected="true"]').evaluateAll((ts) => ts.map((t) => t.dataset.tab));
const visiblePanels = (page) => page.locator('[role="tabpanel"]:not([hidden])').evaluateAll((ps) => ps.map((p) => p.dataset.tab));

/** Whether this engine has Hypedeck's `GET /instances/{id}/command`. */
async function commandEndpoint(id) {
  const r = await fetch(`${ui.engine.url}/instances/${id}/command`, { headers: { Authorization: `Bearer ${ui.engine.token}` } });
  return r.status === 404 ? null : r.json();
}

describe("instance details page", () => {
  test("tabs: click and arrow keys switch panels, aria-selected follows, reload keeps the tab", async (t) => {
    const created = await withCredential("details-tabs");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page } = await ui.openInstance(t, created.id);

    const tablist = page.locator('#detail-tabs[role="tablist"]');
    await tablist.waitFor();
    const tabs = tablist.locator('[role="tab"]');
    assert.deepEqual(await tabs.allTextContents(), ["Overview", "Logs", "Terminal", "Credentials", "Snapshots", "Stats", "Network"]);
    assert.deepEqual(await selectedTabs(page), ["overview"]);
    assert.deepEqual(await visiblePanels(page), ["overview"]);
    // Each tab controls its panel, and the panel is labelled by its tab.
    for (const id of ["overview", "logs", "terminal", "credentials", "snapshots", "stats", "network"]) {
      const tab = page.locator(`#detail-tab-${id}`);
      assert.equal(await tab.getAttribute("aria-controls"), `detail-panel-${id}`);
      assert.equal(await page.locator(`#detail-panel-${id}`).getAttribute("aria-labelledby"), `detail-tab-${id}`);
      assert.equal(await tab.getAttribute("tabindex"), id === "overview" ? "0" : "-1");
    }
    await page.locator('[data-field="hypervisor"]').waitFor();
    await shot(page, "details-overview.png");

    // A click: Logs is one click away.
    await page.click("#detail-tab-logs");
    assert.deepEqual(await selectedTabs(page), ["logs"]);
    assert.deepEqual(await visiblePanels(page), ["logs"]);
    assert.equal(await page.locator("#log-lines").isVisible(), true);
    assert.equal(await page.locator('[data-field="hypervisor"]').isVisible(), false);
    await shot(page, "details-logs.png");

    // The keyboard: arrows move the selection and the focus, wrapping; Home and End.
    await page.locator("#detail-tab-logs").focus();
    await page.keyboard.press("ArrowRight");
    assert.deepEqual(await selectedTabs(page), ["terminal"]);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "detail-tab-terminal");
    assert.equal(await page.locator("#run-command").isVisible(), true);
    await shot(page, "details-terminal.png");
    await page.keyboard.press("ArrowRight");
    assert.deepEqual(await visiblePanels(page), ["credentials"]);
    await page.locator('#credentials-card [data-credential="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });
    await shot(page, "details-credentials.png");
    await page.keyboard.press("End");
    assert.deepEqual(await selectedTabs(page), ["network"]);
    await page.locator("#detail-panel-network #network-card").waitFor({ timeout: 10_000 });
    await shot(page, "details-network.png");
    await page.keyboard.press("ArrowRight");
    assert.deepEqual(await selectedTabs(page), ["overview"]);
    await page.keyboard.press("ArrowLeft");
    assert.deepEqual(await selectedTabs(page), ["network"]);
    await page.keyboard.press("Home");
    assert.deepEqual(await selectedTabs(page), ["overview"]);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "detail-tab-overview");

    // The dark theme: the selected tab is drawn in the panel's colour, like the cards.
    const dark = await ui.openInstance(t, created.id, { colorScheme: "dark" });
    await dark.page.locator("#overview-card").waitFor();
    const [tabBg, cardBg, bodyBg] = await dark.page.evaluate(() => [
      getComputedStyle(document.querySelector(".detail-tab.on")).backgroundColor,
      getComputedStyle(document.querySelector("#overview-card")).backgroundColor,
      getComputedStyle(document.body).backgroundColor,
    ]);
    assert.equal(tabBg, cardBg);
    assert.notEqual(cardBg, "rgb(255, 255, 255)", "the dark theme is not applied");
    assert.notEqual(tabBg, bodyBg);
    await shot(dark.page, "details-overview-dark.png");

    // The selected tab is kept for a reload of the same page.
    await page.click("#detail-tab-terminal");
    await page.reload();
    await page.locator(`#instance-view[data-instance-id="${created.id}"]`).waitFor({ timeout: 10_000 });
    assert.deepEqual(await selectedTabs(page), ["terminal"]);
    assert.deepEqual(await visiblePanels(page), ["terminal"]);
  });

  test("opening a details page sends no PATCH and logs no console error", async (t) => {
    const created = await withCredential("details-quiet");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page, apiCalls, consoleErrors } = await ui.openInstance(t, created.id);
    // The page knows the credential keys (the rotation form) and has read its cards.
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });
    await waitFor(() => apiCalls.includes(`GET /instances/${created.id}/credentials/events`), "the credential trail to be read");
    for (const tab of ["logs", "terminal", "credentials", "network", "overview"]) await page.click(`#detail-tab-${tab}`);
    // Two refreshes of the list and of the cards.
    await page.waitForTimeout(4_500);
    assert.deepEqual(apiCalls.filter((c) => !c.startsWith("GET ") && !c.startsWith("OPTIONS ")), [], apiCalls.join(", "));
    assert.ok(apiCalls.includes(`GET /instances/${created.id}/credentials`), apiCalls.join(", "));
    assert.deepEqual(consoleErrors, []);
  });

  test("a server without Hypedeck's credential list (upstream): the keys come from the probe PATCH, refused whole", async (t) => {
    const created = await withCredential("details-upstream");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page, apiCalls } = await ui.openConnected(t);
    const answered = [];
    await page.route(`${ui.engine.url}/instances/${created.id}/credentials`, (route) =>
      answered.push(route.request().method()) &&
      route.fulfill({ status: 404, contentType: "application/json", headers: { "access-control-allow-origin": "*" }, body: '{"code":"not_found","message":"no matching operation was found"}' }),
    );
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), created.id);
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });
    assert.ok(answered.includes("GET"), answered.join(", "));
    assert.ok(apiCalls.includes(`PATCH /instances/${created.id}`), apiCalls.join(", "));
    assert.equal(await page.locator("#rotate-form input[data-key]").count(), 1);
    assert.equal(await page.locator('#env-list [data-env="AGENT_TOKEN"]').getAttribute("data-kind"), "credential");
    // The probe changed nothing.
    const after = await ui.engine.client.instances.get(created.id);
    assert.deepEqual(Object.keys(after.env).sort(), ["AGENT_TOKEN", "GREETING"]);
    assert.equal(after.env.AGENT_TOKEN, SECRET);
    await page.click("#detail-tab-credentials");
    assert.match(await page.locator("#detail-panel-credentials").innerText(), /This server does not report how its credentials are used/);
  });

  test("Overview: the rotation card only with credentials; the Environment card never shows a credential's value", async (t) => {
    const withCreds = await withCredential("details-env");
    t.after(() => ui.engine.client.instances.delete(withCreds.id));
    const plain = await runningInstance(ui.engine, "details-plain", { env: { GREETING: "hello-plain-value" } });
    t.after(() => ui.engine.client.instances.delete(plain.id));

    const { page } = await ui.openInstance(t, withCreds.id);
    await page.locator('#rotate-card #rotate-form input[data-key="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });
    // The rotation card comes first on the Overview.
    const first = await page.locator("#detail-panel-overview > *").first().getAttribute("id");
    assert.equal(first, "rotate-card");
    assert.equal(await page.locator("#rotate-form input[data-key]").count(), 1);

    // The credential's env var: named, valueless, not revealable, pointing at its tab.
    const credRow = page.locator('#env-list [data-env="AGENT_TOKEN"]');
    await credRow.waitFor();
    assert.equal(await credRow.getAttribute("data-kind"), "credential");
    assert.equal(await credRow.locator("dd").innerText(), "credential — see Credentials tab");
    assert.equal(await credRow.locator("details, summary").count(), 0);
    assert.equal(await page.locator(`text=${SECRET}`).count(), 0);
    const html = await page.content();
    assert.ok(!html.includes(SECRET), "the credential's value is in the page's DOM");
    // A plain variable stays hidden until revealed, and then shows its value.
    const plainRow = page.locator('#env-list [data-env="GREETING"]');
    assert.equal(await plainRow.getAttribute("data-kind"), "plain");
    assert.equal(await plainRow.locator(".env-value").isVisible(), false);
    await plainRow.locator("summary").click();
    assert.equal(await plainRow.locator(".env-value").innerText(), "hello-plain-value");
    // The raw JSON hides every value too.
    assert.match(await page.locator("details.raw pre").textContent(), /"AGENT_TOKEN": "<credential: see the Credentials tab>"/);
    // "see Credentials tab" goes there.
    await credRow.locator("button").click();
    assert.deepEqual(await selectedTabs(page), ["credentials"]);
    const title = page.locator('#credentials-card [data-credential="AGENT_TOKEN"] [data-field="title"]');
    await title.waitFor({ timeout: 10_000 });
    // Plain words: the name once, and where the proxy sends it.
    assert.equal(await title.innerText(), "AGENT_TOKEN");
    assert.equal(await page.locator('#credentials-card [data-credential="AGENT_TOKEN"] [data-field="injection"]').innerText(), "Sent as the Authorization header to api.example.com");
    assert.doesNotMatch(await page.locator("#credentials-card").innerText(), /AGENT_TOKEN from AGENT_TOKEN/);
    assert.ok(!(await page.locator("body").innerText()).includes(SECRET));

    // Without credentials: no rotation card, and the Credentials tab says there are none.
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), plain.id);
    await page.locator(`#instance-view[data-instance-id="${plain.id}"]`).waitFor();
    await page.locator('#env-list [data-env="GREETING"][data-kind="plain"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#rotate-card, #rotate-form").count(), 0);
    assert.deepEqual(await selectedTabs(page), ["overview"], "another instance opens on its Overview");
    await page.click("#detail-tab-credentials");
    assert.match(await page.locator("#credentials-none").innerText(), /^This instance has no credentials\./);
    // No network tab for an instance without a network.
    const noNet = await runningInstance(ui.engine, "details-nonet", { network: { enabled: false } });
    t.after(() => ui.engine.client.instances.delete(noNet.id));
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), noNet.id);
    await page.locator(`#instance-view[data-instance-id="${noNet.id}"]`).waitFor();
    assert.deepEqual(await page.locator('#detail-tabs [role="tab"]').allTextContents(), ["Overview", "Logs", "Terminal", "Credentials", "Snapshots", "Stats"]);
  });

  test("rotation: notes expire on edit and state change; a stopped instance's Rotate is disabled with the reason", async (t) => {
    const created = await withCredential("details-rotate");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page } = await ui.openInstance(t, created.id);
    const field = page.locator('#rotate-form input[data-key="AGENT_TOKEN"]');
    await field.waitFor({ timeout: 10_000 });
    // No "Reveal" that would reveal nothing: Show appears with a typed value and shows it.
    assert.equal(await page.locator("#rotate-form button.reveal").count(), 0);
    assert.equal(await field.getAttribute("placeholder"), "new value");
    await field.fill("tok-details-rotated");
    assert.equal(await field.getAttribute("type"), "password");
    await page.click('#rotate-form button.reveal:has-text("Show")');
    assert.equal(await field.getAttribute("type"), "text");
    assert.equal(await field.inputValue(), "tok-details-rotated");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result", { hasText: "Applied live" }).waitFor({ timeout: 10_000 });
    assert.equal((await ui.engine.client.instances.get(created.id)).env.AGENT_TOKEN, "tok-details-rotated");
    // The fingerprint next to the key follows the rotation.
    const [status] = await ui.engine.client.get(`/instances/${created.id}/credentials`);
    await page.locator('#rotate-form [data-field="current-fingerprint"]', { hasText: status.fingerprint }).waitFor({ timeout: 10_000 });

    // Editing the value again clears the old note.
    await field.fill("x");
    assert.equal(await page.locator("#rotate-result").count(), 0);
    // An error clears on the next edit too.
    await field.fill("");
    await page.click("#rotate-submit");
    await page.locator("#rotate-error", { hasText: "Enter a new value for at least one key." }).waitFor();
    await field.fill("y");
    assert.equal(await page.locator("#rotate-error").count(), 0);

    // A note from Running goes when the state changes; Stopped refuses with the reason.
    await field.fill("tok-details-second");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 10_000 });
    await ui.engine.client.instances.stop(created.id);
    await page.locator('#instance-view .detail-head .badge[data-state="Stopped"]').waitFor({ timeout: 15_000 });
    await page.locator("#rotate-result").waitFor({ state: "detached", timeout: 5_000 });
    const submit = page.locator("#rotate-submit");
    assert.equal(await submit.isDisabled(), true);
    const reason = page.locator("#rotate-refused");
    assert.equal(await reason.isVisible(), true);
    assert.equal(await reason.innerText(), "Rotation applies live to a running instance; this one is Stopped. Start it first.");
    assert.equal(await submit.getAttribute("aria-describedby"), "rotate-refused");
    await shot(page, "details-rotate-stopped.png");
    // Nothing was sent while Stopped: the engine still has the second value.
    await field.fill("tok-details-late");
    await page.keyboard.press("Enter");
    await page.waitForTimeout(500);
    assert.equal((await ui.engine.client.instances.get(created.id)).env.AGENT_TOKEN, "tok-details-second");
  });

  test("rotation offers the allowed keys for a pasted one, and a refusal says which keys rotate", async (t) => {
    const created = await withCredential("details-keys");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page } = await ui.openInstance(t, created.id);
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });

    // A pasted key that is not a credential: marked, with the allowed keys offered.
    await page.fill("#rotate-paste", "OPENAI_TOKEN=tok-pasted-value");
    await page.click("#rotate-submit");
    const error = page.locator("#rotate-error");
    await error.waitFor({ timeout: 10_000 });
    const text = await error.innerText();
    assert.match(text, /^OPENAI_TOKEN is not a credential of this instance; only AGENT_TOKEN can be rotated\./);
    assert.match(text, /invalid_request.*allowed keys: \[AGENT_TOKEN\]/);
    assert.equal((await ui.engine.client.instances.get(created.id)).env.OPENAI_TOKEN, undefined);

    // Pasting it in the paste box through the clipboard event puts it in its own row.
    await page.fill("#rotate-paste", "");
    await page.locator("#rotate-paste").evaluate((el) => {
      const data = new DataTransfer();
      data.setData("text", "OPENAI_TOKEN=tok-pasted-value");
      el.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    });
    const unknown = page.locator('#rotate-form .rotate-row.unknown[data-row="OPENAI_TOKEN"]');
    await unknown.waitFor();
    assert.match(await unknown.innerText(), /OPENAI_TOKEN is not a credential of this instance/);
    const offer = unknown.locator("select.rotate-move-to");
    assert.deepEqual(await offer.locator("option").allTextContents(), ["choose a credential…", "AGENT_TOKEN"]);
    await offer.selectOption("AGENT_TOKEN");
    await unknown.waitFor({ state: "detached" });
    assert.equal(await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').inputValue(), "tok-pasted-value");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result", { hasText: "AGENT_TOKEN" }).waitFor({ timeout: 10_000 });
    assert.equal((await ui.engine.client.instances.get(created.id)).env.AGENT_TOKEN, "tok-pasted-value");
  });

  test("a note does not follow to another instance's page", async (t) => {
    const a = await withCredential("details-note-a");
    t.after(() => ui.engine.client.instances.delete(a.id));
    const b = await withCredential("details-note-b");
    t.after(() => ui.engine.client.instances.delete(b.id));
    const { page } = await ui.openInstance(t, a.id);
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').fill("tok-note-a");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 10_000 });
    await page.click("#detail-tab-credentials");
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), b.id);
    await page.locator(`#instance-view[data-instance-id="${b.id}"]`).waitFor();
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#rotate-result").count(), 0);
    assert.equal(await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').inputValue(), "");
    // Back goes to A's page with the tab it had.
    await page.goBack();
    await page.locator(`#instance-view[data-instance-id="${a.id}"]`).waitFor();
    assert.deepEqual(await selectedTabs(page), ["credentials"]);
  });

  test("the effective command on the Overview (hidden when the server does not say)", async (t) => {
    // The fake engine has no image config: with both parts set for the instance, the command is
    // known; with a part from the image, it is not (and the page says so, not "none").
    const known = await runningInstance(ui.engine, "details-command", { entrypoint: ["/bin/sh", "-c"], cmd: ["echo ready; exec sleep 600"] });
    t.after(() => ui.engine.client.instances.delete(known.id));
    const partial = await runningInstance(ui.engine, "details-command-partial", { cmd: ["sleep", "600"] });
    t.after(() => ui.engine.client.instances.delete(partial.id));
    const expected = await commandEndpoint(known.id);
    const { page, consoleErrors } = await ui.openInstance(t, known.id);
    await page.locator('[data-field="hypervisor"]').waitFor();
    if (expected === null) {
      // A server without Hypedeck's command extension: no card, nothing made up.
      await page.waitForTimeout(1_000);
      assert.equal(await page.locator("#command-card").count(), 0);
      t.diagnostic("this engine has no GET /instances/{id}/command: only the 404 fallback was tested");
      return;
    }
    assert.deepEqual(expected.argv, ["/bin/sh", "-c", "echo ready; exec sleep 600"]);
    const card = page.locator("#command-card");
    await card.waitFor({ timeout: 10_000 });
    assert.equal(await card.locator('[data-field="command"] code').innerText(), "/bin/sh -c 'echo ready; exec sleep 600'");
    assert.equal(await card.locator('[data-field="entrypoint"]').innerText(), "/bin/sh -c (set for this instance)");
    assert.equal(await card.locator('[data-field="cmd"]').innerText(), "'echo ready; exec sleep 600' (set for this instance)");
    await shot(page, "details-command.png");

    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), partial.id);
    await page.locator(`#instance-view[data-instance-id="${partial.id}"]`).waitFor();
    assert.deepEqual((await commandEndpoint(partial.id)).argv, []);
    await card.locator('[data-field="cmd"]', { hasText: "sleep 600 (set for this instance)" }).waitFor({ timeout: 10_000 });
    assert.equal(await card.locator('[data-field="command"]').innerText(), "not known yet: the image is not on this machine");
    assert.equal(await card.locator('[data-field="entrypoint"]').innerText(), "unknown until the image is on this machine (from the image)");
    assert.deepEqual(consoleErrors, []);
  });

  test("an engine without the command extension: no command card and no console error", async (t) => {
    const created = await runningInstance(ui.engine, "details-no-command");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page, consoleErrors } = await ui.openConnected(t).then(async ({ page, apiCalls }) => {
      const errors = [];
      page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
      return { page, apiCalls, consoleErrors: errors };
    });
    // The route answers 404 as an upstream Hypeman server would.
    const answered = [];
    await page.route(`${ui.engine.url}/instances/${created.id}/command`, (route) =>
      answered.push(route.request().method()) && route.fulfill({ status: 404, contentType: "application/json", headers: { "access-control-allow-origin": "*" }, body: '{"code":"not_found","message":"no matching operation was found"}' }),
    );
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    await page.evaluate((i) => (window.location.hash = `#/instances/${i}`), created.id);
    await page.locator('[data-field="hypervisor"]').waitFor({ timeout: 10_000 });
    await page.waitForTimeout(1_000);
    assert.equal(await page.locator("#command-card").count(), 0);
    assert.ok(answered.includes("GET"), answered.join(", "));
    // The 404 itself is the browser's resource log, not the page's; nothing else.
    assert.deepEqual(consoleErrors.filter((e) => !/status of 404/.test(e)), []);
    assert.equal(await page.locator("#error").isVisible(), false);
  });

  test("logs: one click away, and they follow the instance into its next run", async (t) => {
    const created = await runningInstance(ui.engine, "details-logs");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page } = await ui.openInstance(t, created.id);
    await page.click("#detail-tab-logs");
    // The fake has no guest console; the engine's operations log has a line per boot.
    await page.selectOption("#logs-source", "hypeman");
    const starts = page.locator("#log-lines .log-line", { hasText: "vm started" });
    await starts.first().waitFor({ timeout: 10_000 });
    assert.equal(await starts.count(), 1);
    await ui.engine.client.instances.stop(created.id);
    await page.locator('#instance-view .detail-head .badge[data-state="Stopped"]').waitFor({ timeout: 15_000 });
    await ui.engine.client.instances.start(created.id, {});
    await page.locator('#instance-view .detail-head .badge[data-state="Running"]').waitFor({ timeout: 15_000 });
    await waitFor(async () => (await starts.count()) === 2, "the second run's start in the log");
    assert.equal(await page.locator("#logs-status").getAttribute("data-status"), "following");
  });

  test("the Run box runs the line in /bin/sh -c and echoes it above the output", async (t) => {
    const created = await runningInstance(ui.engine, "details-run");
    t.after(() => ui.engine.client.instances.delete(created.id));
    const { page } = await ui.openInstance(t, created.id);
    const sent = [];
    page.on("websocket", (ws) => {
      if (!ws.url().endsWith(`/instances/${created.id}/exec`)) return;
      ws.on("framesent", (f) => typeof f.payload === "string" && sent.push(f.payload));
    });
    await page.click("#detail-tab-terminal");
    assert.match(await page.locator("#run-shell").innerText(), /runs in \/bin\/sh -c/);
    // An empty line is refused with a message, and the message goes when typing.
    await page.click("#run-submit");
    assert.equal(await page.locator("#run-invalid").innerText(), "Type a command to run, e.g. ls -la /");
    await page.fill("#run-command", "env | grep X");
    assert.equal(await page.locator("#run-invalid").count(), 0);
    await page.click("#run-submit");
    assert.equal(await page.locator("#run-echo").innerText(), "$ env | grep X");
    await waitFor(() => sent.length > 0, "the exec request to be sent");
    assert.deepEqual(JSON.parse(sent[0]), { command: ["/bin/sh", "-c", "env | grep X"] });
    // The fake backend has no guest: the session ends, and the page says how.
    await page.locator("#run-exit").waitFor({ timeout: 15_000 });
    assert.notEqual(await page.locator("#run-exit").innerText(), "");
    assert.equal(await page.locator("#run-submit").isDisabled(), false);
    await shot(page, "details-run.png");
  });
});
