import { describe, expect, test } from "vitest";

import { bulkPlan, bulkSummary, imageUsage, normalizeImage, pullProgress, usageText } from "./fleet";
import type { Instance } from "./model";

const inst = (id: string, state: Instance["state"], image = "docker.io/library/alpine:latest"): Instance => ({ id, name: `n-${id}`, state, image }) as Instance;

describe("bulk actions on a selection", () => {
  const list = [inst("a", "Running"), inst("b", "Stopped"), inst("c", "Running"), inst("d", "Standby")];
  test("a verb applies to the selected instances it makes sense for, in list order", () => {
    const stop = bulkPlan(list, new Set(["c", "a", "b"]), "stop");
    expect(stop.targets.map((i) => i.id)).toEqual(["a", "c"]);
    expect(stop.skipped).toBe(1);
    expect(stop.reason).toBeNull();
    expect(bulkPlan(list, new Set(["a", "b", "d"]), "delete").targets.map((i) => i.id)).toEqual(["a", "b", "d"]);
  });
  test("no target: the reason says why", () => {
    expect(bulkPlan(list, new Set(["a", "c"]), "start")).toEqual({ targets: [], skipped: 2, reason: "None of the selected instances is stopped" });
    expect(bulkPlan(list, new Set(), "stop").reason).toBe("Nothing is selected");
    expect(bulkPlan(list, new Set(["zz"]), "stop").reason).toBe("Nothing is selected");
  });
  test("the summary counts and names failures", () => {
    expect(bulkSummary("stop", 2, [])).toBe("2 instances stopped");
    expect(bulkSummary("delete", 1, [{ name: "web", message: "busy" }])).toBe("1 instance deleted; 1 failed (web: busy)");
  });
});

describe("images in use", () => {
  test("references are compared the way the API stores them", () => {
    expect(normalizeImage("alpine")).toBe("docker.io/library/alpine:latest");
    expect(normalizeImage("alpine:3.20")).toBe("docker.io/library/alpine:3.20");
    expect(normalizeImage("me/tool")).toBe("docker.io/me/tool:latest");
    expect(normalizeImage("ghcr.io/me/tool")).toBe("ghcr.io/me/tool:latest");
    expect(normalizeImage("127.0.0.1:5000/vm/curl:1")).toBe("127.0.0.1:5000/vm/curl:1");
    expect(normalizeImage("localhost/x")).toBe("localhost/x:latest");
    expect(normalizeImage("hypedeck.local/samples/hello:1")).toBe("hypedeck.local/samples/hello:1");
    expect(normalizeImage("ghcr.io/me/tool@sha256:abc")).toBe("ghcr.io/me/tool@sha256:abc");
  });
  test("each image counts the instances created from it", () => {
    const uses = imageUsage([inst("a", "Running", "alpine"), inst("b", "Stopped"), inst("c", "Running", "ghcr.io/x/y:1")]);
    expect(uses.get("docker.io/library/alpine:latest")).toBe(2);
    expect(uses.get("ghcr.io/x/y:1")).toBe(1);
    expect(usageText(0)).toBe("not in use");
    expect(usageText(1)).toBe("in use by 1 instance");
    expect(usageText(3)).toBe("in use by 3 instances");
  });
});

describe("pull progress", () => {
  test("bytes and percent when the total is known", () => {
    expect(pullProgress(1024 * 1024 * 12, 1024 * 1024 * 48)).toEqual({ percent: 25, text: "12 MiB of 48 MiB (25%)" });
    expect(pullProgress(null, 2048)).toEqual({ percent: 0, text: "0 B of 2.0 KiB (0%)" });
    expect(pullProgress(5000, 2048).percent).toBe(100);
  });
  test("no total: what arrived so far, no made-up percent", () => {
    expect(pullProgress(2048, 0)).toEqual({ percent: null, text: "2.0 KiB so far" });
    expect(pullProgress(null, null)).toEqual({ percent: null, text: "" });
  });
});
