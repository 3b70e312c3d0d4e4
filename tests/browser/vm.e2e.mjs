// The web UI in headless Chromium against the shipped `hypedeck serve` with real QEMU guests:
// create an instance from the form (its image pulled from a registry on 127.0.0.1), see it
// reach Running, follow its log, rotate its credential, see the API's 400 for a disallowed key
// and a 409-free rotation, see a field error from the API, then stop and delete it, all by
// clicking; and the Stats tab of a guest burning CPU (four charts, non-zero CPU and memory).
// Needs HYPEDECK_BIN, a D-Bus session with an unlocked Secret Service and the UI at
// UI_URL (tests/desktop/run.sh sets all of that up). Screenshots go to test-results/.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";

import { createServer as createHttpsServer } from "node:https";

import { deleteAll, execWs, freePort, makeTestPki, newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { assertKeyedFingerprint } from "../fingerprint.mjs";

const UI_URL = process.env.UI_URL ?? "http://127.0.0.1:4173/";
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const RESULTS = path.resolve("test-results");
const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/debug/hypedeck");

let browser;
let registry;
let server;
let dataDir;
let token;
let pki;
let upstream;

before(async () => {
  registry = await startRegistry();
  // An HTTPS upstream on 127.0.0.1 for the credentials card (the proxy trusts its CA).
  pki = makeTestPki("hypedeck-browser-pki-");
  upstream = createHttpsServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    req.resume();
    req.on("end", () => res.end("ok\n"));
  });
  await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
  dataDir = newDataDir();
  server = await startServer(BIN, dataDir, { HYPEDECK_EGRESS_EXTRA_CA: pki.ca, HYPEDECK_EGRESS_ALLOW_LOOPBACK: "1" });
  token = (await import("node:child_process")).execFileSync(BIN, ["--data-dir", dataDir, "token"]).toString().trim();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  if (server) {
    await deleteAll(server.client());
    await server.stop();
  }
  await registry?.stop();
  upstream?.close();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function shot(page, name) {
  mkdirSync(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, name) });
}

/** A page of the UI on `server` (at `hash`, e.g. an instance's), closed when `t` ends, and the
 * page errors it raised. */
async function openUi(t, { height = 900, hash } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height } });
  t.after(() => context.close());
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  const url = new URL(UI_URL);
  url.searchParams.set("api", server.url);
  url.searchParams.set("token", token);
  if (hash) url.hash = hash;
  await page.goto(url.href);
  return { page, pageErrors };
}

describe("web UI on real VMs", () => {
  test("create, run, follow logs, rotate, refuse a bad key, stop and delete — by clicking", async (t) => {
    const { page, pageErrors } = await openUi(t);
    await page.locator("#empty").waitFor({ timeout: 15_000 });

    // Create from the form: image from the loopback registry, a long-running command, and a
    // credential with the default header and format.
    await page.click("#new-instance");
    const image = `${registry.host}/vm/curl:1`;
    await page.fill("#create-image", image);
    await page.fill("#create-name", "ui-vm");
    await page.fill("#create-memory", "256MB");
    await page.fill("#create-cmd", "'echo ui-vm is up; exec sleep 600'");
    await page.fill("#create-tags", "suite=browser");
    const forwarded = await freePort();
    await page.fill("#create-ports", `${forwarded}:8080`);
    await page.click("#add-credential");
    assert.equal(await page.locator("#cred-format-0").inputValue(), "Bearer ${value}");
    assert.equal(await page.locator("#cred-header-0").inputValue(), "Authorization");
    assert.equal(await page.locator("#create-egress").isChecked(), true);
    await page.fill("#cred-key-0", "AGENT_TOKEN");
    await page.fill("#cred-value-0", "tok-browser-initial");
    await page.fill("#cred-hosts-0", "api.example.com");
    await page.click("#create-submit");

    // The details page opens and the badge goes to Running by itself (live updates).
    const view = page.locator("#instance-view");
    await view.waitFor({ timeout: 90_000 });
    const id = await view.getAttribute("data-instance-id");
    assert.ok(id);
    const badge = view.locator(".detail-head .badge");
    await page.locator('#instance-view .detail-head .badge[data-state="Running"]').waitFor({ timeout: 90_000 });
    assert.equal(await badge.textContent(), "Running");
    const created = await server.client().instances.get(id);
    assert.equal(created.name, "ui-vm");
    assert.equal(created.image, image);
    assert.deepEqual(created.tags, { suite: "browser" });
    assert.equal(created.size, "256.0 MB");

    // Every field of the Instance is on the page, with the real IP and MAC from the VM.
    assert.equal(await view.locator('[data-field="id"] code').textContent(), id);
    assert.equal(await view.locator('[data-field="network.ip"] code').textContent(), created.network.ip);
    assert.equal(await view.locator('[data-field="network.mac"] code').textContent(), created.network.mac);
    assert.equal(await view.locator('[data-field="hypervisor"]').textContent(), "qemu");
    assert.equal(await view.locator('[data-field="size"]').textContent(), "256.0 MB");
    assert.deepEqual(created.ports, [{ host_port: forwarded, guest_port: 8080, protocol: "tcp" }]);
    const portLink = view.locator(`[data-field="ports"] li[data-port="${forwarded}"] a`);
    assert.equal(await portLink.getAttribute("href"), `http://127.0.0.1:${forwarded}/`);
    assert.equal(await view.locator(`[data-field="ports"] li[data-port="${forwarded}"]`).textContent(), `127.0.0.1:${forwarded} → 8080/tcp`);
    // Lifecycle buttons follow the state; disabled ones say why.
    assert.equal(await page.locator('[data-action="start"]').isDisabled(), true);
    assert.match(await page.locator('[data-action="start"]').getAttribute("title"), /Only a stopped instance starts/);
    assert.equal(await page.locator('[data-action="stop"]').isEnabled(), true);

    // The guest's console arrives over SSE (the Logs tab).
    await page.click("#detail-tab-logs");
    await page.locator("#log-lines", { hasText: "ui-vm is up" }).waitFor({ timeout: 60_000 });
    // Search narrows the lines; pause holds them; download saves what arrived.
    await page.fill("#logs-search", "ui-vm is up");
    assert.equal(await page.locator("#log-lines .log-line").count(), 1);
    await page.fill("#logs-search", "no such line anywhere");
    await page.locator("#log-lines", { hasText: "No line matches." }).waitFor();
    await page.fill("#logs-search", "");
    await page.click("#logs-pause");
    assert.equal(await page.locator("#logs-status").textContent(), "paused");
    await page.click("#logs-pause");
    assert.equal(await page.locator("#logs-status").textContent(), "following");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#logs-download")]);
    assert.equal(download.suggestedFilename(), "ui-vm-app.log");
    const saved = await download.path();
    assert.match((await import("node:fs")).readFileSync(saved, "utf8"), /ui-vm is up/);

    // Rotate (on the Overview): the form lists exactly the credential's source key.
    await page.click("#detail-tab-overview");
    const field = page.locator('#rotate-form input[data-key="AGENT_TOKEN"]');
    await field.waitFor();
    assert.equal(await page.locator("#rotate-form input[data-key]").count(), 1);
    assert.equal(await field.getAttribute("type"), "password");
    await field.fill("tok-browser-rotated");
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 15_000 });
    assert.match(await page.locator("#rotate-result").textContent(), /AGENT_TOKEN\. No restart/);
    const rotated = await server.client().instances.get(id);
    assert.equal(rotated.env.AGENT_TOKEN === "tok-browser-rotated", true, "the engine did not get the new value");
    assert.equal(rotated.started_at, created.started_at);
    assert.equal(rotated.state, "Running");
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, "browser-details.png");

    // Run a one-shot command, then use the terminal (a TTY exec session over the WebSocket,
    // authenticated with the token as a subprotocol), on the Terminal tab.
    await page.click("#detail-tab-terminal");
    await page.fill("#run-command", "sh -c 'echo ui-exec-$((6*7)); exit 5'");
    await page.click("#run-submit");
    await page.locator("#run-exit", { hasText: "exit code 5" }).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator("#run-output").textContent(), "ui-exec-42\n");
    await page.click("#terminal-open");
    await page.locator('#terminal-status[data-status="connected"]').waitFor({ timeout: 30_000 });
    await page.locator("#terminal .xterm-helper-textarea").focus();
    await page.keyboard.type("echo term-$((6*7))\n");
    await page.locator("#terminal .xterm-rows", { hasText: "term-42" }).waitFor({ timeout: 15_000 });
    await page.evaluate(() => document.getElementById("shell").scrollIntoView());
    await shot(page, "browser-terminal.png");

    // A key the policies do not name: the API's 400 with the allowed list, inline.
    await page.click("#detail-tab-overview");
    await page.fill("#rotate-paste", "PORT=8080");
    await page.click("#rotate-submit");
    await page.locator("#rotate-error").waitFor({ timeout: 15_000 });
    assert.match(
      await page.locator("#rotate-error").textContent(),
      /invalid_request.*env keys \[PORT\] are not credential source env vars; allowed keys: \[AGENT_TOKEN\]/,
    );

    // An API validation error lands next to its field: the name is taken.
    await page.click("#new-instance");
    await page.fill("#create-image", image);
    await page.fill("#create-name", "ui-vm");
    await page.click("#create-submit");
    const nameError = page.locator('.field-error[data-field="name"]');
    await nameError.waitFor({ timeout: 30_000 });
    assert.match(await nameError.textContent(), /ui-vm/);
    // The pull step ran first and reports the image ready.
    const pull = page.locator(".pull");
    assert.equal(await pull.getAttribute("data-status"), "ready");
    assert.equal(await pull.locator("progress").getAttribute("value"), "100");
    await page.keyboard.press("Escape");

    // The list shows it with its state, IP, uptime and tag; Enter opens it.
    const row = page.locator(`tr[data-instance-id="${id}"]`);
    await row.waitFor();
    assert.equal(await row.locator("td.state").textContent(), "Running");
    assert.equal(await row.locator("td.ip").textContent(), created.network.ip);
    assert.equal(await row.locator("td.tags").textContent(), "suite=browser");
    assert.match(await row.locator("td.uptime").textContent(), /^\d+[smhd]/);
    await shot(page, "browser-list.png");
    await row.focus();
    await page.keyboard.press("Enter");
    await view.waitFor();

    // Stop by clicking; the badge follows and Start becomes possible.
    await page.click('[data-action="stop"]');
    await page.locator('#instance-view .detail-head .badge[data-state="Stopped"]').waitFor({ timeout: 60_000 });
    await page.locator('[data-action="start"]:not([disabled])').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('[data-action="stop"]').isDisabled(), true);
    assert.equal((await server.client().instances.get(id)).state, "Stopped");
    // A rotation now is the API's 409; the page says why before sending it: Rotate is
    // disabled with the reason.
    await page.locator('#rotate-form input[data-key="AGENT_TOKEN"]').fill("tok-browser-late");
    assert.equal(await page.locator("#rotate-submit").isDisabled(), true);
    assert.equal(await page.locator("#rotate-refused").textContent(), "Rotation applies live to a running instance; this one is Stopped. Start it first.");
    await assert.rejects(server.client().instances.update(id, { env: { AGENT_TOKEN: "tok-browser-late" } }), (e) => e.status === 409 && /invalid_state/.test(JSON.stringify(e.error)));

    // Delete asks first, then the list is empty again.
    page.once("dialog", (d) => d.accept());
    await page.click('[data-action="delete"]');
    await page.locator("#empty").waitFor({ timeout: 30_000 });
    assert.deepEqual(await server.client().instances.list(), []);

    // The image stays, listed on the Images tab.
    await page.click('a[href="#/images"]');
    const imageRow = page.locator("#images-table tbody tr").first();
    await imageRow.waitFor({ timeout: 10_000 });
    assert.match(await imageRow.textContent(), /vm\/curl:1.*ready/);

    // Volumes: create one from the Volumes tab, see it listed, delete it (after a confirm).
    await page.click('a[href="#/volumes"]');
    await page.fill("#volume-name", "ui-data");
    await page.fill("#volume-size", "1");
    await page.click("#volume-create");
    const volumeRow = page.locator('#volumes-table tr[data-volume-name="ui-data"]');
    await volumeRow.waitFor({ timeout: 30_000 });
    assert.match(await volumeRow.textContent(), /1 GB/);
    const [volume] = await server.client().volumes.list();
    assert.equal(volume.name, "ui-data");
    page.once("dialog", (d) => d.accept());
    await volumeRow.locator('button[data-action="delete-volume"]').click();
    await volumeRow.waitFor({ state: "detached", timeout: 15_000 });
    assert.deepEqual(await server.client().volumes.list(), []);
    assert.deepEqual(pageErrors, []);
  });

  test("one click to a first sandbox: the hello sample is built locally, boots and greets", async (t) => {
    const { page } = await openUi(t);
    await page.locator("#empty").waitFor({ timeout: 15_000 });
    await page.click("#hello");
    const view = page.locator("#instance-view");
    await view.waitFor({ timeout: 120_000 });
    await page.locator('#instance-view .detail-head .badge[data-state="Running"]').waitFor({ timeout: 90_000 });
    await page.click("#detail-tab-logs");
    await page.locator("#log-lines", { hasText: "Hello from a Hypedeck sandbox!" }).waitFor({ timeout: 60_000 });
    const id = await view.getAttribute("data-instance-id");
    const hello = await server.client().instances.get(id);
    assert.equal(hello.name, "hello");
    assert.equal(hello.image, "hypedeck.local/samples/hello:1");
    await shot(page, "browser-hello.png");
    await server.client().instances.delete(id);
  });

  test("credentials card: fingerprint, last use, the trail, a blocked leak raised, rotation and a test request", async (t) => {
    const port = upstream.address().port;
    const [first, second] = ["sk-card-first-value", "sk-card-second-value"];
    // The guest calls its credential host every second, and every 4 s tries to send a real
    // value (it learned somehow) to another host.
    const script = `i=0; while true; do curl -s -o /dev/null --max-time 20 https://localhost:${port}/; i=$((i+1)); ` +
      `if [ $((i % 4)) = 0 ]; then curl -s -o /dev/null --max-time 20 -d 'k=${first}' https://127.0.0.1:${port}/; fi; sleep 1; done`;
    const created = await server.client().instances.create({
      name: "card", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: [script],
      env: { OPENAI_KEY: first },
      network: { enabled: true, egress: { enabled: true } },
      credentials: { OPENAI_KEY: { source: { env: "OPENAI_KEY" }, inject: [{ hosts: ["localhost"], as: { header: "Authorization", format: "Bearer ${value}" } }] } },
    }, { timeout: 240_000 });
    const { page } = await openUi(t, { height: 1100, hash: `#/instances/${created.id}` });
    // The fingerprint the API reports for the value in force (the engine's), which the card
    // shows, and which the trail's events (the proxy's) must carry to count as "current".
    const fingerprint = async () => (await server.client().get(`/instances/${created.id}/credentials`))[0].fingerprint;
    const fpFirst = await fingerprint();
    assertKeyedFingerprint(fpFirst, first);
    const card = page.locator('#credentials-card [data-credential="OPENAI_KEY"]');
    await page.click("#detail-tab-credentials", { timeout: 60_000 });
    await card.waitFor({ timeout: 60_000 });
    assert.equal(await card.locator('[data-field="fingerprint"]').textContent(), fpFirst);
    await card.locator('[data-field="last-used"]', { hasText: `→ localhost, 200, fingerprint ${fpFirst} (current)` }).waitFor({ timeout: 180_000 });
    await page.locator('#credential-trail li[data-outcome="injected"]').first().waitFor();
    // The leak attempt after the page loaded: refused, in the trail, and raised.
    await page.locator(".credential-alert", { hasText: "tried to send the real OPENAI_KEY to 127.0.0.1; Hypedeck blocked it." }).waitFor({ timeout: 30_000 });
    await page.locator('#credential-trail li[data-outcome="leak_blocked"]').first().waitFor();

    // Rotate in the form (Overview): the card's fingerprint follows and the first request with it shows.
    await page.click("#detail-tab-overview");
    await page.locator('#rotate-form input[data-key="OPENAI_KEY"]').fill(second);
    await page.click("#rotate-submit");
    await page.locator("#rotate-result").waitFor({ timeout: 15_000 });
    await page.click("#detail-tab-credentials");
    const fpSecond = await fingerprint();
    assertKeyedFingerprint(fpSecond, second);
    assert.notEqual(fpSecond, fpFirst, "the fingerprint did not follow the rotation");
    await card.locator('[data-field="fingerprint"]', { hasText: fpSecond }).waitFor({ timeout: 15_000 });
    await card.locator('[data-field="last-used"]', { hasText: `fingerprint ${fpSecond} (current)` }).waitFor({ timeout: 30_000 });
    assert.notEqual(await card.locator('[data-field="first-use"]').textContent(), "not yet");

    // Test credential: a request from the host through the same rules.
    await page.fill("#credential-test-url", `https://localhost:${port}/`);
    await page.click("#credential-test");
    await page.locator("#credential-test-result", { hasText: `200 from localhost:${port} with OPENAI_KEY (${fpSecond})` }).waitFor({ timeout: 30_000 });
    await page.locator('#credential-trail li[data-outcome="test"]').first().waitFor({ timeout: 10_000 });
    const text = await page.locator("body").innerText();
    assert.ok(!text.includes(first) && !text.includes(second), "a credential value is on the page");
    await page.locator("#credentials-card").scrollIntoViewIfNeeded();
    await shot(page, "browser-credentials.png");
    await server.client().instances.delete(created.id);
  });

  test("network card: what the sandbox was refused, and one click to allow a blocked name", async (t) => {
    // The guest keeps asking for a name off its allow-list and for the metadata service.
    const script = "while true; do busybox nslookup blocked.test >/dev/null 2>&1; curl -s -o /dev/null --max-time 2 http://169.254.169.254/; sleep 2; done";
    const created = await server.client().instances.create({
      name: "net-card", image: `${registry.host}/vm/curl:1`, vcpus: 1, size: "256MB", cmd: [script],
      network: { enabled: true, egress: { allow: ["elsewhere.test"] } },
    }, { timeout: 240_000 });
    const { page } = await openUi(t, { height: 1400, hash: `#/instances/${created.id}` });
    const card = page.locator("#network-card");
    await page.click("#detail-tab-network", { timeout: 60_000 });
    await card.waitFor({ timeout: 60_000 });
    await card.locator("#network-allow-list", { hasText: "elsewhere.test" }).waitFor();
    const blockedName = card.locator("#network-blocked li", { hasText: "blocked.test" });
    await blockedName.waitFor({ timeout: 180_000 });
    assert.match(await blockedName.innerText(), /not on this instance's allow-list/);
    const metadata = card.locator('#network-blocked li[data-destination="169.254.169.254:80"]');
    await metadata.waitFor({ timeout: 60_000 });
    assert.match(await metadata.innerText(), /link-local \(cloud metadata\)/);
    assert.equal(await metadata.locator("button").count(), 0, "an address refused by policy has no Allow button");

    // A name refused for the first time while the page is open is raised.
    await page.locator('#network-flows li[data-verdict="denied"]').first().waitFor();
    await execWs(server.url, token, created.id, { command: ["/bin/sh", "-c", "busybox nslookup fresh.test >/dev/null 2>&1; true"] });
    await page.locator(".network-alert", { hasText: "net-card was refused fresh.test over DNS" }).waitFor({ timeout: 30_000 });

    // One click: the name joins the allow-list, live.
    await blockedName.locator("button", { hasText: "Allow blocked.test" }).click();
    await card.locator("#network-allow-result", { hasText: "Allowed blocked.test" }).waitFor({ timeout: 15_000 });
    const policy = await server.client().get(`/instances/${created.id}/network/policy`);
    assert.deepEqual(policy.allow, ["elsewhere.test", "blocked.test"]);
    await card.locator("#network-allow-list", { hasText: "blocked.test" }).waitFor({ timeout: 10_000 });
    // The guest's next lookup of it is no longer refused by the list (the name does not exist
    // anywhere, so it is "unreachable", not "denied").
    const since = Date.now();
    await page.waitForFunction(async ([api, key, id, t0]) => {
      const r = await fetch(`${api}/instances/${id}/network/flows?limit=1000`, { headers: { Authorization: `Bearer ${key}` } });
      const flows = await r.json();
      return flows.some((f) => f.protocol === "dns" && f.name === "blocked.test" && f.at_ms > t0 && f.verdict !== "denied");
    }, [server.url, token, created.id, since], { timeout: 60_000, polling: 1000 });
    assert.equal((await server.client().instances.get(created.id)).state, "Running");
    await card.scrollIntoViewIfNeeded();
    await shot(page, "browser-network.png");
    await server.client().instances.delete(created.id);
  });

  test("stats tab: a guest burning CPU draws four charts with real CPU and memory", async (t) => {
    // A busy loop in the guest: the VMM's CPU time grows whatever the accelerator (TCG too).
    const created = await server.client().instances.create({
      name: "burn", image: `${registry.host}/vm/busybox:1`, vcpus: 1, size: "256MB",
      entrypoint: ["/bin/sh", "-c"], cmd: ["while true; do :; done"],
    }, { timeout: 240_000 });
    t.after(() => server.client().instances.delete(created.id).catch(() => {}));
    const { page, pageErrors } = await openUi(t, { height: 1100, hash: `#/instances/${created.id}` });
    await page.locator('#instance-view .detail-head .badge[data-state="Running"]').waitFor({ timeout: 120_000 });
    await page.click("#detail-tab-stats");
    await page.locator('figure.chart[data-chart="disk"]').waitFor({ timeout: 30_000 });
    // Samples every 2 s: all four charts with at least three points.
    await page.waitForFunction(
      () => {
        const points = [...document.querySelectorAll("figure.chart[data-points]")].map((f) => Number(f.dataset.points));
        return points.length === 4 && points.every((n) => n >= 3);
      },
      null,
      { timeout: 90_000, polling: 500 },
    );
    assert.deepEqual(await page.locator("figure.chart").evaluateAll((fs) => fs.map((f) => f.dataset.chart)), ["cpu", "memory", "network", "disk"]);

    // The CPU text and the hover readout say a non-zero share; memory is resident and non-zero.
    const cpuText = (await page.locator('#chart-cpu [data-field="now"]').textContent()).trim();
    const cpu = /^([\d.]+)% of 1 vCPU$/.exec(cpuText);
    assert.ok(cpu, cpuText);
    assert.ok(Number(cpu[1]) > 0, `CPU ${cpuText}`);
    const plot = await page.locator("#chart-cpu .u-over").boundingBox();
    await page.mouse.move(plot.x + plot.width - 3, plot.y + plot.height / 2);
    await page.waitForFunction(() => /· CPU [\d.]+%$/.test(document.querySelector("#chart-cpu .chart-readout")?.textContent ?? ""), null, { timeout: 10_000 });
    const readout = await page.locator("#chart-cpu .chart-readout").textContent();
    const shown = /· CPU ([\d.]+)%$/.exec(readout);
    assert.ok(shown && Number(shown[1]) > 0, `CPU readout ${readout}`);
    assert.ok(Number(await page.locator("#chart-memory").getAttribute("data-now")) > 0, "the memory chart's latest RSS");
    const memText = (await page.locator('#chart-memory [data-field="now"]').textContent()).trim();
    const mem = /^([\d.]+) (B|KiB|MiB|GiB) resident of .+ allocated/.exec(memText);
    assert.ok(mem && Number(mem[1]) > 0, `memory ${memText}`);
    assert.match(await page.locator("#chart-memory .chart-readout").textContent(), /· RSS [\d.]+ (KiB|MiB|GiB)$/);
    assert.deepEqual(pageErrors, []);
    await shot(page, "vm-stats.png");
  });
});
