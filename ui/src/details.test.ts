import { describe, expect, test } from "vitest";

import { commandLine, detailTabs, envEntries, originText, rotationRefusal, shellQuote, tabAfterKey, tabOrDefault } from "./details";

describe("details page", () => {
  test("the Network tab exists only for an instance with a network, after Stats", () => {
    expect(detailTabs(false)).toEqual(["overview", "logs", "terminal", "credentials", "snapshots", "stats"]);
    expect(detailTabs(true)).toEqual(["overview", "logs", "terminal", "credentials", "snapshots", "stats", "network"]);
  });

  test("a remembered tab is used only if the page has it", () => {
    expect(tabOrDefault("logs", detailTabs(false))).toBe("logs");
    expect(tabOrDefault("stats", detailTabs(false))).toBe("stats");
    expect(tabOrDefault("network", detailTabs(false))).toBe("overview");
    expect(tabOrDefault(3, detailTabs(true))).toBe("overview");
    expect(tabOrDefault(null, detailTabs(true))).toBe("overview");
  });

  test("arrows wrap around the tabs, Home and End go to the ends, other keys do nothing", () => {
    const tabs = detailTabs(true);
    expect(tabAfterKey(tabs, "overview", "ArrowRight")).toBe("logs");
    expect(tabAfterKey(tabs, "network", "ArrowRight")).toBe("overview");
    expect(tabAfterKey(tabs, "overview", "ArrowLeft")).toBe("network");
    expect(tabAfterKey(tabs, "terminal", "Home")).toBe("overview");
    expect(tabAfterKey(tabs, "logs", "End")).toBe("network");
    expect(tabAfterKey(tabs, "logs", "Enter")).toBeNull();
    expect(tabAfterKey(tabs, "logs", "ArrowDown")).toBeNull();
  });

  test("a command reads back as the shell would take it", () => {
    expect(shellQuote("/usr/bin/python3")).toBe("/usr/bin/python3");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("echo hi; exit 5")).toBe("'echo hi; exit 5'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(commandLine(["/bin/sh", "-c", "echo $HOME | tr a-z A-Z"])).toBe("/bin/sh -c 'echo $HOME | tr a-z A-Z'");
    expect(commandLine([])).toBe("");
    expect(originText("image")).toBe("from the image");
    expect(originText("instance")).toBe("set for this instance");
  });

  test("the Environment card never carries a credential's value, nor any value while unknown", () => {
    const env = { OPENAI_KEY: "sk-real", PORT: "8080", A: "x" };
    expect(envEntries(env, ["OPENAI_KEY"])).toEqual([
      { key: "A", kind: "plain", value: "x" },
      { key: "OPENAI_KEY", kind: "credential" },
      { key: "PORT", kind: "plain", value: "8080" },
    ]);
    const unknown = envEntries(env, null);
    expect(unknown.map((e) => e.kind)).toEqual(["unknown", "unknown", "unknown"]);
    expect(JSON.stringify(unknown)).not.toContain("sk-real");
    expect(JSON.stringify(envEntries(env, ["OPENAI_KEY"]))).not.toContain("sk-real");
    expect(envEntries(undefined, [])).toEqual([]);
  });

  test("rotation is refused outside Running and Initializing, with what to do", () => {
    expect(rotationRefusal("Running")).toBeNull();
    expect(rotationRefusal("Initializing")).toBeNull();
    expect(rotationRefusal("Stopped")).toBe("Rotation applies live to a running instance; this one is Stopped. Start it first.");
    expect(rotationRefusal("Standby")).toBe("Rotation applies live to a running instance; this one is Standby. Restore it first.");
    for (const s of ["Created", "Paused", "Shutdown", "Unknown"] as const) expect(rotationRefusal(s)).toMatch(new RegExp(`this one is ${s}\\. `));
  });
});
