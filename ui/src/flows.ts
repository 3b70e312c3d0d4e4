// The sandbox network's flow log (Hypedeck's `/instances/{id}/network/flows` extension) and the
// words the details page uses for it. Pure except the API call; servers without the extension
// (404) give null, and the page then shows nothing about it.
import Hypeman, { APIError } from "@onkernel/hypeman";

export type Verdict = "allowed" | "denied" | "unreachable";

export interface FlowEvent {
  at_ms: number;
  protocol: "tcp" | "udp" | "dns";
  destination: string;
  name?: string | null;
  verdict: Verdict;
  /** The policy's reason for a denial, or why an allowed destination did not answer. */
  reason?: string;
  /** An allowed TCP/UDP flow's number. */
  flow?: number;
  /** What the flow moved, once it ended (sent: from the sandbox). */
  bytes?: { sent: number; received: number };
}

/** One destination the sandbox was refused, with how often and when last. */
export interface Blocked {
  key: string;
  destination: string;
  name: string | null;
  protocol: FlowEvent["protocol"];
  reason: string;
  count: number;
  last_ms: number;
}

/** The newest `limit` flow decisions, newest first; null from a server without the extension. */
export async function flows(api: Hypeman, id: string, limit = 200): Promise<FlowEvent[] | null> {
  try {
    return await api.get<FlowEvent[]>(`/instances/${encodeURIComponent(id)}/network/flows`, { query: { limit } });
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** `GET /instances/{id}/network/policy`. */
export interface NetworkPolicy {
  enabled: boolean;
  egress: boolean;
  mode: "all" | "http_https_only" | null;
  allow: string[] | null;
}

export async function policy(api: Hypeman, id: string): Promise<NetworkPolicy | null> {
  try {
    return await api.get<NetworkPolicy>(`/instances/${encodeURIComponent(id)}/network/policy`);
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** The allow-list with `name` added (kept in order, no duplicates). */
export function withName(list: string[] | null, name: string): string[] {
  const current = list ?? [];
  return current.includes(name) ? current : [...current, name];
}

/** Adds `name` to the instance's allow-list, live (PATCH). Returns the new list. */
export async function allowName(api: Hypeman, id: string, name: string): Promise<string[]> {
  const now = await policy(api, id);
  const allow = withName(now?.allow ?? null, name);
  await api.patch(`/instances/${encodeURIComponent(id)}`, { body: { network: { egress: { allow } } } });
  return allow;
}

const REASONS: Record<string, string> = {
  loopback: "the host's own services (loopback)",
  host_address: "an address of this computer",
  link_local: "link-local (cloud metadata)",
  private_range: "a private network",
  shared_range: "a shared address range (CGNAT, VPN)",
  not_routable: "not a routable address",
  no_such_service: "nothing listens there in the sandbox network",
  egress_proxy_only: "egress goes through the credential proxy only",
  too_many_flows: "too many open connections",
  not_allowed: "not on this instance's allow-list",
};

/** A plain sentence for a flow's reason. */
export function reasonText(reason: string | undefined): string {
  if (!reason) return "";
  return REASONS[reason] ?? reason;
}

/** `"api.example.com (203.0.113.10:443)"`, or the address alone. */
export function target(e: Pick<FlowEvent, "destination" | "name" | "protocol">): string {
  if (e.protocol === "dns") return e.name ?? e.destination;
  return e.name ? `${e.name} (${e.destination})` : e.destination;
}

/** `"↑ 1.2 KiB ↓ 64.0 MiB"` for an ended flow, `"open"` for one still open, "" otherwise. */
export function moved(e: Pick<FlowEvent, "verdict" | "flow" | "bytes">, bytes: (n: number) => string): string {
  if (e.bytes) return `↑ ${bytes(e.bytes.sent)} ↓ ${bytes(e.bytes.received)}`;
  return e.verdict === "allowed" && e.flow !== undefined ? "open" : "";
}

/** Denied destinations, one entry per protocol+destination(+name), most recent first. */
export function blocked(events: FlowEvent[]): Blocked[] {
  const byKey = new Map<string, Blocked>();
  for (const e of events) {
    if (e.verdict !== "denied") continue;
    const key = `${e.protocol} ${e.protocol === "dns" ? e.name ?? "" : e.destination}`;
    const seen = byKey.get(key);
    if (seen) {
      seen.count += 1;
      if (e.at_ms > seen.last_ms) seen.last_ms = e.at_ms;
      continue;
    }
    byKey.set(key, {
      key,
      destination: e.destination,
      name: e.name ?? null,
      protocol: e.protocol,
      reason: e.reason ?? "",
      count: 1,
      last_ms: e.at_ms,
    });
  }
  return [...byKey.values()].sort((a, b) => b.last_ms - a.last_ms);
}

/**
 * Blocks not seen before: those whose key is not in `known`. The caller keeps `known` across
 * polls so each destination raises one notification.
 */
export function newBlocks(list: Blocked[], known: Set<string>): Blocked[] {
  return list.filter((b) => !known.has(b.key));
}

/** The notification text for a first block. */
export function blockText(instance: string, b: Blocked): string {
  return `${instance} was refused ${target(b)} over ${b.protocol.toUpperCase()}: ${reasonText(b.reason)}`;
}
