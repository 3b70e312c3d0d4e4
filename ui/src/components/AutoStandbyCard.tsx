// The instance page's auto-standby card: why the instance is up or asleep (upstream's status
// with Hypedeck's activity and `asleep`), and Hold, which keeps it up for another timeout.
// Hidden for instances without a policy and on servers without the status route.
import { useCallback, useState } from "react";
import type Hypeman from "@onkernel/hypeman";
import { APIError } from "@onkernel/hypeman";

import { problem } from "../api";
import { canHold, describeAutoStandby, type AutoStandbyStatus } from "../autostandby";
import { usePolled } from "../hooks";
import type { Instance } from "../model";

const BADGE = { ok: "badge-ok", warn: "badge-busy", muted: "badge-parked" } as const;

export function AutoStandbyCard({ api, instance }: { api: Hypeman; instance: Instance }) {
  const id = instance.id;
  const fetch = useCallback(async (): Promise<AutoStandbyStatus | null> => {
    try {
      return await api.get<AutoStandbyStatus>(`/instances/${encodeURIComponent(id)}/auto-standby/status`);
    } catch (e) {
      if (e instanceof APIError && (e.status === 404 || e.status === 501)) return null;
      throw e;
    }
  }, [api, id]);
  const { value, reload } = usePolled(fetch, 2000);
  const [holding, setHolding] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  if (!value || !value.configured) return null;
  const said = describeAutoStandby(value, instance.state);
  const hold = async (): Promise<void> => {
    setHolding(true);
    setNote(null);
    try {
      const held = await api.post<AutoStandbyStatus>(`/instances/${encodeURIComponent(id)}/auto-standby/hold`);
      setNote(held.hold_until ? `Held until ${new Date(held.hold_until).toLocaleTimeString()}.` : "Nothing to hold.");
      await reload();
    } catch (e) {
      setNote(problem(e, "").message);
    } finally {
      setHolding(false);
    }
  };
  return (
    <div className="card" id="auto-standby-card" data-status={value.status} data-asleep={value.asleep ? "true" : "false"}>
      <h3>Auto-standby</h3>
      <p>
        <span className={`badge ${BADGE[said.tone]}`} id="auto-standby-title">
          {said.title}
        </span>{" "}
        <span id="auto-standby-text">{said.text}</span>
      </p>
      {value.enabled && (
        <p className="toolbar">
          <button
            type="button"
            id="auto-standby-hold"
            disabled={!canHold(value) || holding}
            aria-describedby="auto-standby-hold-why"
            onClick={() => void hold()}
          >
            {holding ? "Holding…" : "Hold"}
          </button>
          <span id="auto-standby-hold-why" className="hint">
            {canHold(value) ? `Keeps it up for another ${value.idle_timeout ?? "timeout"}.` : "Only a running instance auto-standby could put to sleep can be held."}
          </span>
        </p>
      )}
      {note && (
        <p id="auto-standby-note" role="status">
          {note}
        </p>
      )}
    </div>
  );
}
