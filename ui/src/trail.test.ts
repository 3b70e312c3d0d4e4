import { describe, expect, test } from "vitest";

import { credentialTitle, describeUse, fingerprintLabel, injectionText, newRefusals, outcomeLabel, refusalText, type UsageEvent } from "./trail";

const at = (time: string, outcome: UsageEvent["outcome"], extra: Partial<UsageEvent> = {}): UsageEvent => ({
  time,
  credential: "OPENAI",
  fingerprint: "a1b2c3d4e5f60718",
  host: "api.openai.com",
  method: "GET",
  status: 200,
  outcome,
  ...extra,
});

describe("credential trail words", () => {
  test("a use says when, where, the status and which value", () => {
    const now = Date.parse("2026-11-29T10:00:12Z");
    expect(describeUse(at("2026-11-29T10:00:00Z", "injected"), "a1b2c3d4e5f60718", now)).toBe("12s ago → api.openai.com, 200, fingerprint a1b2c3d4e5f60718 (current)");
    const { status: _unused, ...unsent } = at("2026-11-29T09:58:12Z", "injected");
    expect(describeUse(unsent, "ffff0000ffff0000", now)).toBe(
      "2m 0s ago → api.openai.com, not sent, fingerprint a1b2c3d4e5f60718 (previous)",
    );
    expect(fingerprintLabel("x", null)).toBe("x (previous)");
  });

  test("only refusals newer than the last seen one raise a notification, oldest first", () => {
    const list = [
      at("2026-11-29T10:00:03Z", "leak_blocked", { host: "evil.example" }),
      at("2026-11-29T10:00:02Z", "injected"),
      at("2026-11-29T10:00:01Z", "blocked", { reason: "host not allowed" }),
    ];
    expect(newRefusals(list, null).map((e) => e.time)).toEqual(["2026-11-29T10:00:01Z", "2026-11-29T10:00:03Z"]);
    expect(newRefusals(list, "2026-11-29T10:00:01Z").map((e) => e.outcome)).toEqual(["leak_blocked"]);
    expect(refusalText("agent", list[0]!)).toBe("agent tried to send the real OPENAI to evil.example; Hypedeck blocked it.");
    expect(refusalText("agent", list[2]!)).toBe("agent: OPENAI was not sent to api.openai.com (host not allowed).");
  });

  test("a request whose upstream failed is in the trail in words, and is no refusal", () => {
    const failed = at("2026-11-29T10:00:04Z", "failed", { status: 502, reason: "the upstream could not be reached" });
    expect(outcomeLabel(failed.outcome)).toBe("upstream failed");
    expect(newRefusals([failed], null)).toEqual([]);
  });
});

describe("credentials in plain words", () => {
  test("the env var is named only when it differs from the credential's name", () => {
    expect(credentialTitle({ name: "OPENAI_KEY", env: "OPENAI_KEY" })).toBe("OPENAI_KEY");
    expect(credentialTitle({ name: "OPENAI", env: "OPENAI_KEY" })).toBe("OPENAI (value of OPENAI_KEY)");
  });

  test("where the proxy puts a credential", () => {
    expect(injectionText({ headers: ["Authorization"], hosts: ["api.openai.com"] })).toBe("Sent as the Authorization header to api.openai.com");
    expect(injectionText({ headers: ["Authorization", "X-Key"], hosts: null })).toBe("Sent as the Authorization, X-Key headers to every host");
  });
});
