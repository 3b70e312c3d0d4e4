// Auto-standby in words: upstream's `AutoStandbyStatus` (with Hypedeck's `asleep` and
// `activity`) as one sentence for the instance page, and whether a hold makes sense.

/** Upstream's `AutoStandbyStatus` and Hypedeck's extensions. */
export interface AutoStandbyStatus {
  supported: boolean;
  configured: boolean;
  enabled: boolean;
  eligible: boolean;
  status: string;
  reason: string;
  active_inbound_connections: number;
  idle_timeout?: string | null;
  idle_since?: string | null;
  next_standby_at?: string | null;
  hold_until?: string | null;
  countdown_remaining?: string | null;
  tracking_mode: string;
  activity?: { inbound: number; outbound: number; exec: number } | null;
  asleep?: boolean;
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

/** What the status says, in one sentence; `tone` for the badge. */
export function describeAutoStandby(s: AutoStandbyStatus, state: string): { title: string; text: string; tone: "ok" | "warn" | "muted" } {
  const timeout = s.idle_timeout ?? "its idle timeout";
  if (s.asleep) {
    return {
      title: "Asleep",
      text: `Auto-standby put it in standby after ${timeout} without activity. A connection to a forwarded port or an exec wakes it.`,
      tone: "muted",
    };
  }
  if (!s.configured) return { title: "Off", text: "No auto-standby policy: it runs until stopped.", tone: "muted" };
  if (!s.enabled) return { title: "Off", text: "The auto-standby policy is turned off.", tone: "muted" };
  if (s.status === "ineligible") {
    if (s.reason === "network_disabled") return { title: "Not possible", text: "Auto-standby needs the instance's network: it has none.", tone: "warn" };
    return { title: "Waiting", text: state === "Standby" ? "In standby (put there by hand, not by auto-standby)." : "Counts down once the instance runs.", tone: "muted" };
  }
  if (s.status === "active") {
    const a = s.activity ?? { inbound: s.active_inbound_connections, outbound: 0, exec: 0 };
    const parts = [
      a.inbound ? plural(a.inbound, "connection in", "connections in") : null,
      a.outbound ? plural(a.outbound, "connection out", "connections out") : null,
      a.exec ? plural(a.exec, "exec session", "exec sessions") : null,
    ].filter(Boolean);
    return { title: "Awake", text: `In use: ${parts.join(", ") || "activity"}. It goes to standby after ${timeout} without any.`, tone: "ok" };
  }
  if (s.status === "idle_countdown") {
    const held = s.hold_until ? ` Held until ${new Date(s.hold_until).toLocaleTimeString()}.` : "";
    const left = s.countdown_remaining ? `standby in ${s.countdown_remaining}` : `standby after ${timeout} idle`;
    return { title: "Idle", text: `Nothing uses it: ${left}.${held}`, tone: "warn" };
  }
  if (s.status === "ready_for_standby" || s.status === "standby_requested") {
    return { title: "Going to standby", text: "Idle for its whole timeout: going to standby now.", tone: "warn" };
  }
  return { title: "Unavailable", text: `Auto-standby cannot tell (${s.reason}).`, tone: "warn" };
}

/** Whether Hold can do anything: a running instance that auto-standby could put to sleep. */
export function canHold(s: AutoStandbyStatus): boolean {
  return s.enabled && s.eligible && !s.asleep;
}
