// What the sandbox network decided for this instance: the destinations it was refused (each
// once, with why and how often) and the recent flows. A destination refused for the first time
// raises a notice and a desktop notification. Shown only by servers with Hypedeck's
// `/network/flows` extension, for instances with a network.
import { useCallback, useEffect, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { notifyNetworkBlocked } from "../desktop";
import { problem } from "../api";
import {
  allowName,
  blockText,
  blocked,
  flows as loadFlows,
  moved,
  newBlocks,
  policy as loadPolicy,
  reasonText,
  target,
  type Blocked,
  type FlowEvent,
  type NetworkPolicy,
} from "../flows";
import type { Instance } from "../model";
import { bytes, duration } from "../model";

const POLL_MS = 3000;
const SHOWN = 30;

const VERDICT_BADGE: Record<FlowEvent["verdict"], string> = {
  allowed: "badge-ok",
  denied: "badge-bad",
  unreachable: "badge-parked",
};

export function NetworkPanel({ api, instance, now }: { api: Hypeman; instance: Instance; now: number }) {
  const [events, setEvents] = useState<FlowEvent[] | null | undefined>(undefined);
  const [alerts, setAlerts] = useState<string[]>([]);
  const [policy, setPolicy] = useState<NetworkPolicy | null>(null);
  const [status, setStatus] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const known = useRef<Set<string> | null>(null);

  const refresh = useCallback(async () => {
    const [list, p] = await Promise.all([loadFlows(api, instance.id), loadPolicy(api, instance.id)]);
    setEvents(list);
    setPolicy(p);
    if (!list) return;
    const blocks = blocked(list);
    // The first load only learns what was already blocked: history, not news.
    if (known.current === null) {
      known.current = new Set(blocks.map((b) => b.key));
      return;
    }
    const fresh = newBlocks(blocks, known.current);
    for (const b of fresh) known.current.add(b.key);
    if (fresh.length > 0) {
      const texts = fresh.map((b) => blockText(instance.name, b));
      setAlerts((a) => [...texts, ...a].slice(0, 5));
      for (const t of texts) void notifyNetworkBlocked(instance.name, t);
    }
  }, [api, instance.id, instance.name]);

  // "Allowed …" is about the run it was said in.
  useEffect(() => setStatus(null), [instance.state]);

  useEffect(() => {
    let live = true;
    const tick = (): void => {
      refresh().catch(() => live && setEvents((e) => e ?? null));
    };
    tick();
    const timer = window.setInterval(tick, POLL_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [refresh]);

  if (!instance.network?.enabled) return <p className="muted card">This instance has no network.</p>;
  if (events === undefined) {
    return (
      <p className="muted card" aria-busy="true">
        Reading the network log…
      </p>
    );
  }
  if (events === null) {
    return (
      <p id="network-unreported" className="muted card">
        This server does not report what the sandbox network decided (a Hypedeck extension).
      </p>
    );
  }
  const blocks: Blocked[] = blocked(events);
  const egress = policy?.egress ?? false;
  const allow = (name: string): void => {
    setBusy(true);
    setStatus(null);
    allowName(api, instance.id, name)
      .then(
        (list) => setStatus({ ok: true, text: `Allowed ${name}: the next connection may go there (allow-list: ${list.join(", ")}).` }),
        (e: unknown) => {
          const p = problem(e, "");
          setStatus({ ok: false, text: `${p.code}: ${p.message}` });
        },
      )
      .finally(() => {
        setBusy(false);
        void refresh();
      });
  };

  return (
    <div className="card network" id="network-card">
      <h3>Network</h3>
      <p className="muted">
        {egress
          ? "Egress goes only through this instance's credential proxy; everything else is refused."
          : "The internet is reachable; this computer, its other services, link-local and private networks are not."}
      </p>
      {policy?.allow && (
        <p id="network-allow-list">
          Allow-list: {policy.allow.length === 0 ? <span className="muted">empty (no names)</span> : policy.allow.map((n) => <code key={n}>{n} </code>)}
        </p>
      )}
      {status && (
        <p id="network-allow-result" className={status.ok ? "alert ok" : "alert bad"} role="status">
          {status.text}
        </p>
      )}
      {alerts.map((a, i) => (
        <p key={i} className="alert bad network-alert" role="alert">
          {a}
        </p>
      ))}
      <h4>Blocked</h4>
      {blocks.length === 0 ? (
        <p className="muted" id="network-blocked-none">
          Nothing was blocked.
        </p>
      ) : (
        <ul id="network-blocked" className="trail">
          {blocks.map((b) => (
            <li key={b.key} data-destination={b.destination}>
              <span className="badge badge-bad">{b.protocol}</span> {target(b)} <span className="muted">— {reasonText(b.reason)}</span>{" "}
              <span className="muted">
                ({b.count}×, last {duration(new Date(b.last_ms).toISOString(), now)} ago)
              </span>
              {b.reason === "not_allowed" && b.name && policy?.allow?.includes(b.name) && <span className="muted"> (allowed since)</span>}
              {b.reason === "not_allowed" && b.name && !policy?.allow?.includes(b.name) && (
                <>
                  {" "}
                  <button type="button" className="link network-allow" disabled={busy} onClick={() => allow(b.name!)}>
                    Allow {b.name}
                  </button>
                </>
              )}
            </li>
          ))}
        </ul>
      )}
      <h4>Recent flows</h4>
      {events.length === 0 ? (
        <p className="muted">No connection yet.</p>
      ) : (
        <ol id="network-flows" className="trail">
          {events.slice(0, SHOWN).map((e, i) => (
            <li key={`${String(e.at_ms)}-${String(i)}`} data-verdict={e.verdict}>
              <span className={`badge ${VERDICT_BADGE[e.verdict]}`}>{e.verdict}</span>{" "}
              <span className="muted">{duration(new Date(e.at_ms).toISOString(), now)} ago</span> {e.protocol} {target(e)}
              {e.reason && <span className="muted"> — {reasonText(e.reason)}</span>}
              {moved(e, bytes) && (
                <span className="muted flow-bytes" data-flow-bytes={e.bytes ? "ended" : "open"}>
                  {" "}
                  · {moved(e, bytes)}
                </span>
              )}
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}
