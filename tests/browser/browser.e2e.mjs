// The web UI in headless Chromium (playwright-core), served by `vite preview` of ui/dist at
// UI_URL and talking to a fake-backed `hypedeck serve` through the SDK. Needs a D-Bus session
// with an unlocked Secret Service and HYPEDECK_FAKE_BIN (`hypedeck` built with
// --features fake-hypervisor). tests/desktop/run.sh sets all of that up.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { startFakeEngine, waitFor } from "../desktop/fake-engine.mjs";
import { RESULTS, UI_URL, row, runningInstance as harnessRunningInstance, browserUi } from "./harness.mjs";
import { assertKeyedFingerprint } from "../fingerprint.mjs";

const ui = browserUi("browser");
let browser;
let engine;
before(async () => {
  await ui.start();
  ({ browser, engine } = ui);
});
after(() => ui.stop());

const openPage = (t, query) => ui.openPage(t, query);
const runningInstance = (name) => harnessRunningInstance(engine, name);

describe("web UI in a browser", () => {
  test("lists the engine's instances from ?api=&token= and only reads while listing", async (t) => {
    const first = await runningInstance("browser-e2e");
    const { page, apiCalls } = await openPage(t, { api: engine.url, token: engine.token });

    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    assert.equal(await page.locator("#conn-mode").textContent(), "browser");
    assert.equal(await page.locator("#conn-url").textContent(), engine.url);
    assert.equal(await page.title(), "Hypedeck");

    const r = row(page, first.id);
    await r.waitFor({ timeout: 10_000 });
    assert.equal(await r.locator("td.name").textContent(), "browser-e2e");
    assert.equal(await r.locator("td.state").textContent(), "Running");
    assert.equal(await r.locator("td.image").textContent(), "docker.io/library/alpine:latest");
    assert.equal(await page.locator("#empty").isVisible(), false);
    assert.equal(await page.locator("#error").isVisible(), false);

    // The token is used, never shown, and does not stay in the address bar.
    assert.ok(!(await page.locator("body").innerText()).includes(engine.token));
    assert.ok(!page.url().includes(engine.token), page.url());

    // An instance created elsewhere shows up on the next refresh (every 2 s).
    const second = await runningInstance("browser-e2e-2");
    await row(page, second.id).waitFor({ timeout: 6_000 });
    assert.equal(await page.locator("#instances tr").count(), 2);

    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "browser.png") });

    // The UI lists; it creates nothing (only GET /instances, the backends, the setup checks, the
    // fleet's resource use and CORS preflights went out).
    assert.ok(apiCalls.includes("GET /instances"), apiCalls.join(", "));
    const writes = apiCalls.filter((c) => !/^(GET|OPTIONS) \/(instances|hypervisors|system\/checks|stats)$/.test(c));
    assert.deepEqual(writes, []);
    assert.equal((await engine.client.instances.list()).length, 2);
  });

  test("instances run on the backend they asked for, and the form says what a backend lacks", async (t) => {
    const created = await engine.client.instances.create({
      name: "browser-on-ch",
      image: "docker.io/library/alpine:latest",
      hypervisor: "cloud-hypervisor",
    });
    const { page } = await openPage(t, { api: engine.url, token: engine.token });
    await page.evaluate((id) => (window.location.hash = `#/instances/${id}`), created.id);
    await page.locator('#instance-view [data-field="hypervisor"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#instance-view [data-field="hypervisor"]').innerText(), "cloud-hypervisor");
    // Cloud Hypervisor can snapshot: standby stays available (what it lacks is refused at create).
    const standby = page.locator("#instance-view [data-action=standby]");
    await waitFor(async () => (await page.locator('[data-field="state"]').first().innerText()).includes("Running"), "Running shown");
    assert.equal(await standby.isDisabled(), false);

    // The create form offers the backends; one that cannot run here is listed but not choosable.
    await page.evaluate(() => (window.location.hash = "#/new"));
    const select = page.locator("#create-hypervisor");
    await select.waitFor();
    const options = await select.locator("option").evaluateAll((os) => os.map((o) => [o.value, o.disabled, o.textContent]));
    assert.deepEqual(options, [
      ["", false, "qemu (default)"],
      ["cloud-hypervisor", false, "cloud-hypervisor"],
      ["vz", true, "vz — unavailable: Apple Virtualization.framework is only available on macOS"],
    ]);
    await select.selectOption("cloud-hypervisor");
    // Cloud Hypervisor's NIC is on the engine's network stack: ports and the credential proxy
    // work there too, so the form names no limit and takes the ports.
    assert.doesNotMatch(await page.locator(".field", { has: select }).innerText(), /No .* on cloud-hypervisor/);
    await page.fill("#create-image", "docker.io/library/alpine:latest");
    await page.fill("#create-name", "browser-ch-ports");
    await page.fill("#create-ports", "18090:80");
    await page.click("#create-submit");
    // The form sends it (this test engine then stops at its missing image cache, as for any
    // backend): no refusal of the ports.
    await page.locator('.field-error[data-field="image"]').waitFor({ timeout: 10_000 });
    const shown = (await page.locator(".field-error").allInnerTexts()).join(" ");
    assert.doesNotMatch(shown, /forward ports|not_supported/, shown);
    assert.equal(await page.locator('.field-error[data-field="ports"]').count(), 0);
    // And the API takes ports and the credential proxy on cloud-hypervisor.
    const onCh = await engine.client.instances.create({
      name: "browser-ch-ports",
      image: "docker.io/library/alpine:latest",
      hypervisor: "cloud-hypervisor",
      ports: [{ host_port: 18090, guest_port: 80 }],
      network: { enabled: true, egress: { enabled: true } },
    });
    assert.equal(onCh.hypervisor, "cloud-hypervisor");
    await engine.client.instances.delete(onCh.id);
    await engine.client.instances.delete(created.id);
  });

  test("a second Hypeman server as a remote: switch, rotate there, and a wrong key is a clear 401", async (t) => {
    const remote = await startFakeEngine("browser-remote");
    t.after(() => remote.stop());
    const created = await remote.client.instances.create({
      name: "remote-agent",
      image: "docker.io/library/alpine:latest",
      env: { AGENT_TOKEN: "tok-remote-initial" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: {
        AGENT_TOKEN: {
          source: { env: "AGENT_TOKEN" },
          inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }],
        },
      },
    });
    const running = await waitFor(async () => {
      const i = await remote.client.instances.get(created.id);
      return i.state === "Running" && i;
    }, "the remote's VM to run");

    const { page } = await openPage(t, { api: engine.url, token: engine.token });
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    await page.click("#remote-new");
    await page.fill("#remote-name", "lab");
    await page.fill("#remote-url", `${remote.url}/`);
    await page.fill("#remote-key", remote.token);
    await page.click("#remote-save");

    // Switched: the current connection is always visible, with its health.
    await page.locator("#conn-mode", { hasText: "remote" }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-url").textContent(), remote.url);
    await page.locator('#conn-health[data-code="ok"]').waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#conn-health").textContent(), /^\d+ ms$/);
    await row(page, created.id).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-switch option:checked").textContent(), "lab");

    // The rotation flow, against the remote.
    await row(page, created.id).locator("td.name").click();
    await page.fill('#rotate-form input[data-key="AGENT_TOKEN"]', "tok-remote-rotated");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 10_000 });
    const after = await remote.client.instances.get(created.id);
    assert.equal(after.env.AGENT_TOKEN === "tok-remote-rotated", true, "the remote did not get the new value");
    assert.equal(after.started_at, running.started_at);

    // Back home and the local list is back; then a remote with a wrong key.
    await page.selectOption("#conn-switch", "");
    await page.locator("#conn-mode", { hasText: "browser" }).waitFor();
    assert.equal(await page.locator("#conn-url").textContent(), engine.url);
    await page.click("#remote-new");
    await page.fill("#remote-name", "lab-wrong-key");
    await page.fill("#remote-url", remote.url);
    await page.fill("#remote-key", "hdk_wrong_remote_key");
    await page.click("#remote-save");
    const health = page.locator('#conn-health[data-code="unauthorized"]');
    await health.waitFor({ timeout: 10_000 });
    assert.equal(await health.textContent(), `${remote.url.replace("http://", "")} refused the API key (401: security requirements failed: invalid token)`);
    assert.match(await page.locator("#error-message").textContent(), /invalid token/);

    // A bad URL is refused in the form, and nothing is added.
    await page.click("#remote-new");
    await page.fill("#remote-name", "nope");
    await page.fill("#remote-url", "ftp://example.com");
    await page.fill("#remote-key", "k");
    await page.click("#remote-save");
    assert.match(await page.locator("#remote-error").textContent(), /only http and https URLs are supported/);
    assert.deepEqual(await page.locator("#conn-switch option").allTextContents(), ["This browser's API", "lab", "lab-wrong-key"]);

    // Neither engine wrote the remote's key or the rotated value to its logs.
    for (const text of [engine.output(), remote.output()]) {
      assert.ok(!text.includes(remote.token) && !text.includes("tok-remote-rotated"));
    }
  });

  test("shows the API's {code, message} when the token is wrong", async (t) => {
    const { page } = await openPage(t, { api: engine.url, token: "hdk_wrong" });
    const banner = page.locator("#error");
    await banner.waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#error-code").textContent(), "Unauthorized"); // upstream spells this code capitalised
    assert.match(await page.locator("#error-message").textContent(), /invalid token/);
  });

  test("asks for the API with a form when it has none, then remembers it", async (t) => {
    const { page } = await openPage(t);
    await page.locator("#connect").waitFor();
    assert.equal(await page.locator("#instances-view").isVisible(), false);
    await page.fill("#connect-api", engine.url);
    await page.fill("#connect-token", engine.token);
    await page.click("#connect button[type=submit]");
    await page.locator("#instances tr[data-instance-id]").first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-url").textContent(), engine.url);

    await page.reload();
    await page.locator("#instances tr[data-instance-id]").first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#connect").isVisible(), false);
  });

  test("a link to another server is confirmed before use, and its token leaves the address bar at once", async (t) => {
    // Engine A is this browser's saved connection; B is where a crafted link points.
    const a = engine;
    const b = await startFakeEngine("browser-link");
    t.after(() => b.stop());
    const onA = await a.client.instances.create({ name: "link-on-a", image: "docker.io/library/alpine:latest" });
    t.after(() => a.client.instances.delete(onA.id));
    const onB = await b.client.instances.create({ name: "link-on-b", image: "docker.io/library/alpine:latest" });
    const [aHost, bHost] = [new URL(a.url).host, new URL(b.url).host];
    assert.notEqual(aHost, bHost);

    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    t.after(() => context.close());
    const page = await context.newPage();
    const toB = [];
    page.on("request", (r) => {
      if (r.url().startsWith(b.url)) toB.push(`${r.method()} ${new URL(r.url()).pathname}`);
    });
    const saved = () => page.evaluate(() => JSON.parse(localStorage.getItem("hypedeck.connection") ?? "null"));
    const home = new URL(UI_URL).href;
    const queryLink = (e) => {
      const u = new URL(UI_URL);
      u.searchParams.set("api", e.url);
      u.searchParams.set("token", e.token);
      return u.href;
    };
    const fragmentLink = (e) => `${home}#api=${encodeURIComponent(e.url)}&token=${encodeURIComponent(e.token)}`;
    const noLinkIn = (url) => {
      for (const secret of [a.token, b.token, "token=", "api="]) assert.ok(!url.includes(secret), url);
    };

    // A first-time link to this machine's loopback is used as is and remembered.
    await page.goto(queryLink(a));
    await row(page, onA.id).waitFor({ timeout: 10_000 });
    assert.deepEqual(await saved(), { url: a.url, token: a.token });
    assert.equal(page.url(), home);

    // The crafted link to B (the old query form): a question naming B, the token already gone.
    await page.goto(queryLink(b));
    const confirm = page.locator("#link-confirm");
    await confirm.waitFor({ timeout: 10_000 });
    assert.equal(page.url(), home);
    assert.equal(await page.evaluate(() => window.location.href), home);
    assert.equal(await page.locator("#link-host").textContent(), bHost);
    assert.equal(await page.locator("#link-url").textContent(), b.url);
    assert.equal(await page.locator("#link-saved-host").textContent(), aHost);
    assert.equal(await page.locator("#link-connect").textContent(), `Connect to ${bHost}`);
    assert.equal(await page.locator("#link-keep").textContent(), `Keep ${aHost}`);
    assert.match(await page.locator("#link-warning").textContent(), /credential values/);
    assert.ok(!(await page.locator("body").innerText()).includes(b.token), "the page shows B's token");
    assert.deepEqual(await saved(), { url: a.url, token: a.token });
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "browser-link-confirm.png") });

    // Keep A: A's instances, nothing of B's, and B never heard from this page.
    await page.click("#link-keep");
    await row(page, onA.id).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-url").textContent(), a.url);
    assert.equal(await confirm.count(), 0);
    assert.equal(await row(page, onB.id).count(), 0);
    assert.deepEqual(await saved(), { url: a.url, token: a.token });
    // The history entries hold no link either: back and forward land on plain pages on A.
    await page.goBack();
    noLinkIn(page.url());
    await page.goForward();
    noLinkIn(page.url());
    await row(page, onA.id).waitFor({ timeout: 10_000 });
    assert.equal(await confirm.count(), 0);
    assert.deepEqual(toB, []);

    // The fragment form, clicked while the page is open (no reload): the same question.
    await page.goto(fragmentLink(b));
    await confirm.waitFor({ timeout: 10_000 });
    assert.equal(page.url(), home);
    assert.equal(await page.locator("#link-host").textContent(), bHost);
    assert.deepEqual(await saved(), { url: a.url, token: a.token });
    assert.deepEqual(toB, []);

    // Connect: the page switches to B and remembers it.
    await page.click("#link-connect");
    await row(page, onB.id).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#conn-url").textContent(), b.url);
    assert.equal(await row(page, onA.id).count(), 0);
    assert.deepEqual(await saved(), { url: b.url, token: b.token });
    assert.ok(toB.includes("GET /instances"), toB.join(", "));

    // A fragment link loaded in a fresh page, to the server already in use: no question.
    await page.goto("about:blank");
    await page.goto(fragmentLink(b));
    await row(page, onB.id).waitFor({ timeout: 10_000 });
    assert.equal(await confirm.count(), 0);
    assert.equal(page.url(), home);
  });

  test("first run: a missing guest kernel gets the setup screen with its fix, and re-check clears it", async (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), "hypedeck-kernel-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const deb = path.join(dir, "linux-image-test.deb");
    // A build without a kernel of its own (the bundle off), as on a machine that must fetch one.
    const fresh = await startFakeEngine("browser-setup", { HYPEDECK_KERNEL_DEB: deb, HYPEDECK_KERNEL_BUNDLE: "off" });
    t.after(() => fresh.stop());
    const { page } = await openPage(t, { api: fresh.url, token: fresh.token });

    // The setup screen comes first: the kernel is missing, with why and the exact fix.
    await page.locator("#setup").waitFor();
    const kernel = page.locator("#check-kernel");
    await kernel.waitFor();
    assert.equal(await kernel.getAttribute("data-status"), "missing");
    assert.equal(
      await kernel.locator(".check-detail").textContent(),
      `kernel package: HYPEDECK_KERNEL_DEB points at ${deb}, which does not exist`,
    );
    assert.match(await kernel.locator(".check-fix").textContent(), /apt-get download linux-image-cloud-(amd64|arm64)/);
    assert.match(await kernel.locator(".hint").textContent(), /^Why: .*Linux kernel/);
    assert.equal(await page.locator("#check-keychain").getAttribute("data-status"), "ok");
    assert.equal(await page.locator("#check-guest_init").getAttribute("data-status"), "ok");
    assert.equal(await page.locator("#setup-continue").isDisabled(), true);
    assert.equal(await page.locator("#instances-table, #empty").count(), 0, "the workspace waits");
    mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, "browser-setup-missing.png") });

    // The user follows the fix (here: a kernel package at that path), then re-checks.
    const root = path.join(dir, "pkg");
    mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
    writeFileSync(
      path.join(root, "DEBIAN/control"),
      "Package: linux-image-0.0.0-test\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
    );
    execFileSync("dpkg-deb", ["--build", "--root-owner-group", root, deb], { stdio: "pipe" });
    await page.click("#recheck");
    await page.locator('#check-kernel[data-status="ok"]').waitFor();
    assert.match(await kernel.locator(".check-detail").textContent(), /^linux-image-0\.0\.0-test from .* will be unpacked/);
    assert.equal(await kernel.locator(".check-fix").count(), 0);
    await page.click("#setup-continue");
    await page.locator("#empty").waitFor();
    assert.equal(await page.locator("#hello").isVisible(), true);
    // The checks stay one click away.
    await page.click("#setup-tab");
    await page.locator('#check-kernel[data-status="ok"]').waitFor();
  });

  test("settings: create-form defaults and theme kept in the browser; the API token rotates in place", async (t) => {
    const own = await startFakeEngine("browser-settings");
    t.after(() => own.stop());
    const { page } = await openPage(t, { api: own.url, token: own.token });
    await page.locator("#empty").waitFor();
    await page.click("#settings-tab");
    await page.locator("#settings-save").waitFor();
    // Desktop-only settings are not offered in a browser.
    assert.equal(await page.locator("#settings-data-dir").count(), 0);

    await page.fill("#settings-default-vcpus", "0");
    await page.fill("#settings-default-memory", "16MB");
    await page.click("#settings-save");
    await page.locator('.field-error[data-field="default_vcpus"]', { hasText: "0 is not between 1 and 64" }).waitFor();
    assert.equal(await page.locator('.field-error[data-field="default_memory"]').textContent(), "16MB is less than 64MB, too little to boot");

    await page.fill("#settings-default-vcpus", "3");
    await page.fill("#settings-default-memory", "768MB");
    await page.selectOption("#settings-theme", "dark");
    await page.click("#settings-save");
    await page.locator("#settings-saved").waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");
    await page.click("#new-instance");
    assert.equal(await page.locator("#create-vcpus").inputValue(), "3");
    assert.equal(await page.locator("#create-memory").inputValue(), "768MB");
    await page.keyboard.press("Escape");
    // Kept for the next visit.
    await page.reload();
    await page.locator("#empty").waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");

    // Token rotation: the old token stops working, the page goes on with the new one.
    await page.click("#settings-tab");
    await page.click("#rotate-token");
    await page.click("#rotate-token-confirm");
    await page.locator("#rotate-token-result", { hasText: "A new API token is in effect" }).waitFor();
    await assert.rejects(own.client.instances.list(), (e) => e.status === 401);
    const fresh = execFileSync(process.env.HYPEDECK_FAKE_BIN, ["--data-dir", own.dataDir, "token"]).toString().trim();
    assert.notEqual(fresh, own.token);
    assert.ok(!(await page.locator("body").innerText()).includes(fresh), "the page shows the token");
    await own.client.instances.create({ name: "after-rotation", image: "docker.io/library/alpine:latest" }, { headers: { Authorization: `Bearer ${fresh}` } });
    await page.click('a.tab[href="#/"]');
    await page.locator("td.name", { hasText: "after-rotation" }).waitFor();
    assert.equal(await page.locator("#error").isVisible(), false);
  });

  test("in a browser the keychain picker is refused: references are for the user at this machine", async (t) => {
    const created = await engine.client.instances.create({
      name: "browser-no-refs",
      image: "docker.io/library/alpine:latest",
      env: { AGENT_TOKEN: "tok-no-refs" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { AGENT_TOKEN: { source: { env: "AGENT_TOKEN" }, inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    });
    t.after(() => engine.client.instances.delete(created.id));
    await waitFor(async () => (await engine.client.instances.get(created.id)).state === "Running", "the VM to run");
    const { page } = await openPage(t, { api: engine.url, token: engine.token });
    await page.evaluate((id) => (window.location.hash = `#/instances/${id}`), created.id);
    await page.click("#rotate-keychain-AGENT_TOKEN-open");
    const refused = page.locator(".keychain-error");
    await refused.waitFor();
    assert.match(await refused.textContent(), /only by the user at this machine/);
  });

  test("a credential rotated to a keychain item picked in the page (engine opted in to HTTP references): the host resolves it, the page never sees it", async (t) => {
    const engine = await startFakeEngine("browser-refs", { HYPEDECK_ALLOW_HTTP_SECRET_REFERENCES: "1" });
    t.after(() => engine.stop());
    const service = `hypedeck-browser-picker-${process.pid}`;
    const value = "sk-from-the-keychain-picker";
    execFileSync("secret-tool", ["store", "--label", "picker test", "service", service, "username", "bot"], { input: value });
    t.after(() => execFileSync("secret-tool", ["clear", "service", service, "username", "bot"]));
    const created = await engine.client.instances.create({
      name: "browser-picker",
      image: "docker.io/library/alpine:latest",
      env: { AGENT_TOKEN: "tok-before-picker" },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { AGENT_TOKEN: { source: { env: "AGENT_TOKEN" }, inject: [{ hosts: ["api.example.com"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    });
    // The instance goes with the engine when the test ends.
    await waitFor(async () => (await engine.client.instances.get(created.id)).state === "Running", "the VM to run");
    const [initial] = await engine.client.get(`/instances/${created.id}/credentials`);
    assertKeyedFingerprint(initial.fingerprint, "tok-before-picker");
    const { page } = await openPage(t, { api: engine.url, token: engine.token });
    await page.evaluate((id) => (window.location.hash = `#/instances/${id}`), created.id);
    await page.click("#rotate-keychain-AGENT_TOKEN-open");
    const select = page.locator("#rotate-keychain-AGENT_TOKEN");
    await select.waitFor();
    const offered = await select.locator("option").allTextContents();
    assert.ok(offered.includes(`${service} / bot`), offered.join(", "));
    assert.ok(!offered.some((o) => o.startsWith("hypedeck /")), "Hypedeck's own items are not offered");
    await select.selectOption(`${service}/bot`);
    assert.equal(await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').inputValue(), `keychain:${service}/bot`);
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 15_000 });
    const after = await engine.client.instances.get(created.id);
    assert.equal(after.env.AGENT_TOKEN, `keychain:${service}/bot`, "the API shows the reference");
    const [status] = await engine.client.get(`/instances/${created.id}/credentials`);
    assertKeyedFingerprint(status.fingerprint, value);
    assert.notEqual(status.fingerprint, initial.fingerprint, "the fingerprint did not follow the rotation");
    assert.equal(status.reference_kind, "keychain");
    const card = page.locator('#credentials-card [data-credential="AGENT_TOKEN"]');
    await page.click("#detail-tab-credentials");
    await card.locator('[data-field="fingerprint"]', { hasText: status.fingerprint }).waitFor({ timeout: 10_000 });
    assert.ok(!(await page.locator("body").innerText()).includes(value), "the value is on the page");
    // The reference resolved to exactly the keychain item: the same value set as a literal has
    // the same fingerprint.
    await engine.client.instances.update(created.id, { env: { AGENT_TOKEN: value } });
    const [literal] = await engine.client.get(`/instances/${created.id}/credentials`);
    assert.equal(literal.reference, undefined);
    assert.equal(literal.fingerprint, status.fingerprint);
  });
});
