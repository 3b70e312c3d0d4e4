import { describe, expect, test } from "vitest";

import { canHold, describeAutoStandby, type AutoStandbyStatus } from "./autostandby";

const base: AutoStandbyStatus = {
  supported: true,
  configured: true,
  enabled: true,
  eligible: true,
  status: "idle_countdown",
  reason: "idle_timeout_not_elapsed",
  active_inbound_connections: 0,
  idle_timeout: "5m0s",
  countdown_remaining: "4m10s",
  tracking_mode: "netstack_flows_v4_tcp",
  activity: { inbound: 0, outbound: 0, exec: 0 },
  asleep: false,
};

describe("auto-standby in words", () => {
  test("each status reads as a sentence, with what keeps it awake", () => {
    expect(describeAutoStandby(base, "Running")).toMatchObject({ title: "Idle", text: "Nothing uses it: standby in 4m10s." });
    const active = { ...base, status: "active", reason: "active_inbound_connections", active_inbound_connections: 1, activity: { inbound: 1, outbound: 2, exec: 1 } };
    expect(describeAutoStandby(active, "Running").text).toBe("In use: 1 connection in, 2 connections out, 1 exec session. It goes to standby after 5m0s without any.");
    const asleep = { ...base, status: "ineligible", reason: "instance_not_running", eligible: false, asleep: true };
    expect(describeAutoStandby(asleep, "Standby").title).toBe("Asleep");
    expect(describeAutoStandby({ ...asleep, asleep: false }, "Standby").text).toBe("In standby (put there by hand, not by auto-standby).");
    expect(describeAutoStandby({ ...base, configured: false, enabled: false }, "Running").title).toBe("Off");
    expect(describeAutoStandby({ ...base, status: "ineligible", reason: "network_disabled", eligible: false }, "Running").title).toBe("Not possible");
    expect(describeAutoStandby({ ...base, hold_until: "2026-01-01T10:00:00Z" }, "Running").text).toMatch(/Held until /);
  });

  test("a hold only makes sense while auto-standby could act", () => {
    expect(canHold(base)).toBe(true);
    expect(canHold({ ...base, asleep: true })).toBe(false);
    expect(canHold({ ...base, enabled: false })).toBe(false);
    expect(canHold({ ...base, eligible: false })).toBe(false);
  });
});
