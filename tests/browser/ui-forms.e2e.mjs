// The create form in headless Chromium against a fake-backed `hypedeck serve`: every mistake
// shown at once before anything is sent, the first bad field focused, the API's refusals in
// plain words on their field, messages that expire when their input changes, and the "Will
// run" line. The fake engine has no image cache (its image endpoints answer 500
// dependency_missing), so where a test needs a pulled image it answers `POST /images` and
// `GET /images/{name}` for that one image in the page (`stubImage`); every other request,
// creates included, goes to the real engine.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { RESULTS, browserUi } from "./harness.mjs";

const ui = browserUi("forms");
before(() => ui.start());
after(() => ui.stop());

const ALPINE = "docker.io/library/alpine:latest";
const NAME_RULE = "Lowercase letters, digits and dashes; it starts and ends with a letter or digit (at most 63 characters).";

/** A screenshot with `selector` (the part the test is about) scrolled into the middle. */
async function shot(page, name, selector) {
  mkdirSync(RESULTS, { recursive: true });
  if (selector) await page.locator(selector).evaluate((e) => e.scrollIntoView({ block: "center" }));
  await page.screenshot({ path: path.join(RESULTS, name) });
}

/** Opens the create form on a page connected to this file's engine. */
async function openForm(t, options) {
  const opened = await ui.openConnected(t, options);
  await opened.page.locator("#conn-mode", { hasText: "browser" }).waitFor();
  await opened.page.click("#new-instance");
  await opened.page.locator("#create-form").waitFor();
  return opened;
}

/**
 * Answers the pull of `name` (ready at once) and its look-up with `config` in the page, since the
 * fake engine keeps no images. Counts the look-ups it answered.
 */
async function stubImage(page, name, config) {
  const cors = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "*",
    "access-control-allow-methods": "GET, POST, OPTIONS",
  };
  const image = { name, status: "ready", digest: `sha256:${"ab".repeat(32)}`, created_at: new Date().toISOString(), ...config };
  // `stub.image.status` may be changed by the test (e.g. "pulling", then "ready").
  const stub = { lookups: 0, pulls: 0, image };
  await page.route(
    (url) => url.href.startsWith(ui.engine.url) && (url.pathname === "/images" || decodeURIComponent(url.pathname) === `/images/${name}`),
    async (route) => {
      const request = route.request();
      if (request.method() === "OPTIONS") return route.fulfill({ status: 204, headers: cors });
      if (request.method() === "POST") {
        if (JSON.parse(request.postData() ?? "{}").name !== name) return route.fallback();
        stub.pulls++;
      } else {
        stub.lookups++;
      }
      return route.fulfill({ status: request.method() === "POST" ? 202 : 200, headers: { ...cors, "content-type": "application/json" }, json: stub.image });
    },
  );
  return stub;
}

/** The id of the focused element. */
const focused = (page) => page.evaluate(() => document.activeElement?.id ?? "");

/** The requests that change something (the list's polling and look-ups are reads). */
const writes = (calls) => calls.filter((c) => !c.startsWith("GET ") && !c.startsWith("OPTIONS "));

describe("create form", () => {
  test("the dialog keeps the focus inside, closes on Escape and gives it back to New instance", async (t) => {
    const { page } = await openForm(t);
    assert.equal(await focused(page), "create-image");
    const inside = () => page.evaluate(() => document.getElementById("create-form").contains(document.activeElement));
    // Backwards from the first field wraps to the dialog's last control, not the page behind.
    await page.keyboard.press("Shift+Tab");
    assert.ok(await inside(), "Shift+Tab left the dialog");
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press("Tab");
      assert.ok(await inside(), `Tab ${i + 1} left the dialog`);
    }
    await page.keyboard.press("Escape");
    await page.locator("#create-form").waitFor({ state: "detached" });
    assert.equal(await focused(page), "new-instance");
  });

  test("every mistake is shown after one click, before any request, with the first bad field focused", async (t) => {
    const { page, apiCalls } = await openForm(t);
    // The name rule is there before any mistake, under the field (and read with it).
    assert.equal(await page.locator("#create-name-hint").innerText(), NAME_RULE);
    assert.equal(await page.locator("#create-name").getAttribute("aria-describedby"), "create-name-hint");

    await page.fill("#create-image", ALPINE);
    await page.fill("#create-name", "My_Agent");
    await page.fill("#create-memory", "lots");
    await page.fill("#create-tags", "team=ml, bad key!=x");
    await page.fill("#create-env", "PORT=3000\noops");
    // The image look-up (a read) has answered before the click.
    await page.locator("#create-image-command", { hasText: "known after the pull" }).waitFor();
    const before = apiCalls.length;
    await page.click("#create-submit");

    const summary = page.locator("#create-summary");
    await summary.waitFor();
    const items = await summary.locator("[data-summary-field]").evaluateAll((els) => els.map((e) => [e.dataset.summaryField, e.textContent]));
    assert.deepEqual(items, [
      ["name", 'Name: Use lowercase letters, digits and dashes only (not capital letters). Try "my-agent".'],
      ["memory", 'Memory: "lots" is not a size like 1GB or 512MB'],
      ["env", "Environment: line 2: expected KEY=value"],
      ["tags", 'Tags: The tag key "bad key!" can only use letters, digits, spaces and _ . : / = + @ -'],
    ]);
    assert.equal(await summary.locator("p").first().innerText(), "4 things to fix before creating:");
    // Each next to its field, which is marked invalid and described by it.
    for (const [field, input] of [
      ["name", "#create-name"],
      ["memory", "#create-memory"],
      ["env", "#create-env"],
      ["tags", "#create-tags"],
    ]) {
      const error = page.locator(`.field-error[data-field="${field}"]`);
      assert.equal(await error.count(), 1, field);
      assert.equal(await page.locator(input).getAttribute("aria-invalid"), "true", field);
      const describedBy = (await page.locator(input).getAttribute("aria-describedby")).split(" ");
      assert.ok(describedBy.includes(await error.getAttribute("id")), `${field}: ${describedBy}`);
    }
    assert.equal(await page.locator("#create-image").getAttribute("aria-invalid"), "false");
    assert.equal(await page.locator(".field-error").count(), 4);
    // The first bad field in the form's order has the focus.
    assert.equal(await focused(page), "create-name");
    // No raw server text: nothing was sent.
    const shown = await page.locator("#create-form").innerText();
    assert.doesNotMatch(shown, /strconv|#\/components|\^\[a-z0-9\]|invalid_size|Bad Request/);
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual(writes(apiCalls.slice(before)), []);
    assert.equal((await ui.engine.client.instances.list()).filter((i) => i.name.toLowerCase() === "my_agent").length, 0);
    await shot(page, "ui-forms-all-errors.png");
    await shot(page, "ui-forms-summary.png", "#create-summary");

    // The summary's entries take the user to their field.
    await summary.locator('[data-summary-field="tags"]').click();
    assert.equal(await focused(page), "create-tags");
    await summary.locator('[data-summary-field="memory"]').click();
    assert.equal(await focused(page), "create-memory");

    // Editing a field takes its error away, and only its own.
    await page.fill("#create-name", "my-agent");
    assert.equal(await page.locator('.field-error[data-field="name"]').count(), 0);
    assert.equal(await page.locator("#create-name").getAttribute("aria-invalid"), "false");
    assert.equal(await page.locator("#create-name").getAttribute("aria-describedby"), "create-name-hint");
    assert.equal(await summary.locator("[data-summary-field]").count(), 3);
    assert.equal(await page.locator('.field-error[data-field="memory"]').count(), 1);
    await page.fill("#create-memory", "512MB");
    await page.fill("#create-env", "PORT=3000");
    await page.fill("#create-tags", "team=ml");
    assert.equal(await summary.count(), 0);
    assert.equal(await page.locator(".field-error").count(), 0);
    assert.deepEqual(writes(apiCalls.slice(before)), []);
  });

  test("a mistake below the fold is scrolled to and focused; a credential's focuses its own input", async (t) => {
    const { page, apiCalls } = await openForm(t, { viewport: { width: 1000, height: 520 }, colorScheme: "dark" });
    await page.fill("#create-image", ALPINE);
    await page.fill("#create-name", "scrolled");
    await page.fill("#create-volumes", "data:relative/path");
    await page.click("#create-submit");
    await page.locator('.field-error[data-field="volumes"]').waitFor();
    assert.equal(await focused(page), "create-volumes");
    const box = await page.locator("#create-volumes").boundingBox();
    assert.ok(box && box.y >= 0 && box.y + box.height <= 520, `volumes field on screen: ${JSON.stringify(box)}`);
    assert.equal(await page.locator("#create-volumes").getAttribute("aria-invalid"), "true");

    // A credential without its real key: the key's input, not the row's first one, is focused.
    await page.fill("#create-volumes", "");
    await page.click("#add-credential");
    await page.fill("#cred-key-0", "OPENAI_API_KEY");
    await page.fill("#cred-hosts-0", "api.openai.com");
    // The row says in words what happens.
    assert.equal(
      await page.locator("#cred-explained-0").innerText(),
      "The program sees OPENAI_API_KEY=mock-OPENAI_API_KEY; requests to api.openai.com get the header Authorization: Bearer <real key>.",
    );
    await page.click("#create-submit");
    await page.locator('.field-error[data-field="credentials.0"]').waitFor();
    assert.equal(await page.locator('.field-error[data-field="credentials.0"]').innerText(), "Paste the real key (the program only ever sees a placeholder)");
    assert.equal(await focused(page), "cred-value-0");
    assert.equal(await page.locator("#cred-value-0").getAttribute("aria-invalid"), "true");
    // A format without ${value}: the (folded) advanced part opens on its input.
    await page.fill("#cred-value-0", "sk-test-not-shown");
    assert.equal(await page.locator('.field-error[data-field="credentials.0"]').count(), 0);
    await page.locator(".cred-advanced summary").click();
    await page.fill("#cred-format-0", "Bearer");
    await page.locator(".cred-advanced summary").click();
    await page.click("#create-submit");
    await page.locator('.field-error[data-field="credentials.0"]', { hasText: "${value}" }).waitFor();
    assert.equal(await focused(page), "cred-format-0");
    assert.equal(await page.locator(".cred-advanced").getAttribute("open"), "");
    assert.ok(!(await page.locator("body").innerText()).includes("sk-test-not-shown"));
    assert.deepEqual(writes(apiCalls), []);
    await shot(page, "ui-forms-credential.png", ".credential");
  });

  test("the server's refusals are plain sentences on their field; the pull bar goes with its image", async (t) => {
    const taken = await ui.engine.client.instances.create({ name: "taken", image: ALPINE });
    t.after(() => ui.engine.client.instances.delete(taken.id));
    const { page, apiCalls } = await openForm(t);
    const stub = await stubImage(page, ALPINE, { entrypoint: null, cmd: ["/bin/sh"] });

    // Only the server knows its vCPU limit.
    await page.fill("#create-image", ALPINE);
    await page.fill("#create-name", "taken");
    await page.fill("#create-vcpus", "99");
    await page.click("#create-submit");
    const vcpus = page.locator('.field-error[data-field="vcpus"]');
    await vcpus.waitFor({ timeout: 15_000 });
    assert.equal(await vcpus.innerText(), "This server allows at most 16 vCPUs per instance");
    assert.equal(await focused(page), "create-vcpus");
    assert.ok(apiCalls.includes("POST /instances"), apiCalls.join(", "));
    // The pull ran first and shows the image ready.
    assert.equal(stub.pulls, 1);
    assert.equal(await page.locator(".pull").getAttribute("data-status"), "ready");

    // Fixed: the error goes; the next refusal is about the name, in words.
    await page.fill("#create-vcpus", "1");
    assert.equal(await vcpus.count(), 0);
    await page.click("#create-submit");
    const name = page.locator('.field-error[data-field="name"]');
    await name.waitFor({ timeout: 15_000 });
    assert.equal(await name.innerText(), 'An instance named "taken" already exists. Choose another name.');
    assert.equal(await page.locator("#create-name").getAttribute("aria-invalid"), "true");
    assert.equal(await focused(page), "create-name");
    assert.equal(await page.locator('#create-summary [data-summary-field="name"]').innerText(), 'Name: An instance named "taken" already exists. Choose another name.');
    assert.doesNotMatch(await page.locator("#create-form").innerText(), /name_conflict|invalid_request|\(\w+_\w+\)/);
    await shot(page, "ui-forms-server-error.png", "#create-summary");

    // The pull bar is about the image: a new image name takes it away (the name's error stays).
    await page.fill("#create-image", "docker.io/library/busybox:latest");
    assert.equal(await page.locator(".pull").count(), 0);
    assert.equal(await name.count(), 1);

    // A free name and the stubbed image: created for real.
    await page.fill("#create-image", ALPINE);
    await page.fill("#create-name", "forms-created");
    await page.click("#create-submit");
    await page.locator("#instance-view").waitFor({ timeout: 30_000 });
    const created = (await ui.engine.client.instances.list()).find((i) => i.name === "forms-created");
    assert.ok(created, "forms-created exists");
    assert.equal(created.vcpus, 1);
    await ui.engine.client.instances.delete(created.id);
  });

  test("Will run: the image's Entrypoint and Cmd, the overrides with Docker's rules, and the idle-shell trap", async (t) => {
    const { page } = await openForm(t);
    const shellish = "docker.io/library/shellish:1";
    const stub = await stubImage(page, shellish, { entrypoint: ["/bin/sh", "-c"], cmd: ["sleep infinity"] });
    const sent = [];
    page.on("request", (r) => {
      if (r.method() === "POST" && new URL(r.url()).pathname === "/instances") sent.push(JSON.parse(r.postData()));
    });
    const own = page.locator("#create-image-command");
    const argv = page.locator("#will-run-argv");
    const warning = page.locator("#will-run-warning");

    assert.equal(await own.innerText(), "Choose an image to see the command it runs.");
    await page.fill("#create-image", shellish);
    await own.locator("code").first().waitFor();
    assert.equal(await own.innerText(), "The image runs Entrypoint /bin/sh -c, Cmd 'sleep infinity'.");
    assert.equal(await argv.innerText(), "/bin/sh -c 'sleep infinity'");
    assert.ok(stub.lookups >= 1);
    assert.equal(await warning.count(), 0);

    // A Command replaces the Cmd; `sh -c '…'` after an Entrypoint of `/bin/sh -c` idles.
    await page.fill("#create-cmd", "sh -c 'echo hi; sleep 600'");
    assert.equal(await argv.innerText(), "/bin/sh -c sh -c 'echo hi; sleep 600'");
    assert.equal(
      await warning.innerText(),
      `/bin/sh -c runs only "sh"; the words after it become its $0, $1…, so this starts an idle shell. Write the Command as one quoted word: 'echo hi; sleep 600'.`,
    );
    await shot(page, "ui-forms-will-run-trap.png", "#create-will-run");
    await page.fill("#create-cmd", "'echo hi; sleep 600'");
    assert.equal(await argv.innerText(), "/bin/sh -c 'echo hi; sleep 600'");
    assert.equal(await warning.count(), 0);

    // An Entrypoint override drops the image's Cmd (Docker's rule) and takes the Command after it.
    await page.fill("#create-entrypoint", "/bin/echo");
    assert.equal(await argv.innerText(), "/bin/echo 'echo hi; sleep 600'");
    await page.fill("#create-cmd", "");
    assert.equal(await argv.innerText(), "/bin/echo");
    assert.equal(await page.locator("#will-run-dropped").innerText(), "The image's Cmd is dropped because the Entrypoint is overridden (Docker's rule).");
    await page.fill("#create-entrypoint", "");
    assert.equal(await argv.innerText(), "/bin/sh -c 'sleep infinity'");

    // An image the server does not have yet: its part is known after the pull.
    await page.fill("#create-image", "docker.io/library/busybox:latest");
    await own.filter({ hasText: "known after the pull" }).waitFor();
    assert.equal(await own.innerText(), "The image's Entrypoint and Cmd are known after the pull.");
    await page.fill("#create-cmd", "echo hi");
    assert.equal(await argv.innerText(), "the image's Entrypoint (known after the pull) followed by echo hi");
    await page.fill("#create-entrypoint", "/bin/sh -c");
    assert.equal(await argv.innerText(), "/bin/sh -c echo hi");

    // What is sent is what the line showed.
    await page.fill("#create-image", shellish);
    await page.fill("#create-name", "will-run");
    await page.fill("#create-entrypoint", "");
    await page.fill("#create-cmd", "'echo hi; sleep 600'");
    await argv.filter({ hasText: "/bin/sh -c 'echo hi; sleep 600'" }).waitFor();
    await page.click("#create-submit");
    await page.locator("#instance-view").waitFor({ timeout: 30_000 });
    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0].cmd, ["echo hi; sleep 600"]);
    assert.equal(sent[0].entrypoint, undefined);
    const created = (await ui.engine.client.instances.list()).find((i) => i.name === "will-run");
    assert.ok(created);
    await ui.engine.client.instances.delete(created.id);
  });

  test("an image with nothing to run is caught before sending, and a Command fixes it", async (t) => {
    const { page, apiCalls } = await openForm(t);
    const empty = "docker.io/library/scratchy:1";
    await stubImage(page, empty, { entrypoint: null, cmd: null });
    await page.fill("#create-image", empty);
    await page.fill("#create-name", "nothing-to-run");
    await page.locator("#create-image-command", { hasText: "The image runs Entrypoint none, Cmd none." }).waitFor();
    assert.equal(await page.locator("#will-run-warning").innerText(), "Nothing to run: the image has no Entrypoint or Cmd. Give a Command.");
    await page.click("#create-submit");
    const cmd = page.locator('.field-error[data-field="cmd"]');
    await cmd.waitFor();
    assert.equal(await cmd.innerText(), "The image has no Entrypoint or Cmd: give a Command");
    assert.equal(await focused(page), "create-cmd");
    assert.deepEqual(writes(apiCalls), []);
    await page.fill("#create-cmd", "/bin/true");
    assert.equal(await cmd.count(), 0);
    assert.equal(await page.locator("#will-run-argv").innerText(), "/bin/true");
    assert.equal(await page.locator("#will-run-warning").count(), 0);
  });

  test("changing the image during its pull takes the pull bar away and creates nothing", async (t) => {
    const { page, apiCalls } = await openForm(t);
    const slow = "docker.io/library/slowpoke:1";
    const stub = await stubImage(page, slow, { entrypoint: null, cmd: ["/bin/sh"], status: "pulling", bytes_done: 1024, bytes_total: 4096 });
    await page.fill("#create-image", slow);
    await page.fill("#create-name", "never-created");
    await page.click("#create-submit");
    await page.locator('.pull[data-status="pulling"]').waitFor();
    assert.equal(await page.locator("#create-submit").innerText(), "Pulling image…");
    await page.fill("#create-image", ALPINE);
    assert.equal(await page.locator(".pull").count(), 0);
    // The pull finishes after the change: no bar comes back, and no create goes out.
    stub.image = { ...stub.image, status: "ready" };
    await page.locator("#create-submit", { hasText: /^Create$/ }).waitFor();
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(await page.locator(".pull").count(), 0);
    assert.ok(!apiCalls.includes("POST /instances"), apiCalls.join(", "));
    assert.equal((await ui.engine.client.instances.list()).filter((i) => i.name === "never-created").length, 0);
  });
});
