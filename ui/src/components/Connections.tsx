// The connection switcher in the header: this computer (or the browser's API) plus any number
// of remote Hypeman servers, an "Add remote" form, and the current connection's health.
import { useCallback, useEffect, useRef, useState } from "react";

import type { Connection } from "../connection";
import { addRemote, checkHealth, listRemotes, removeRemote, remoteConnection, type Health, type Remote } from "../remotes";
import { usePopover } from "./common";

const HEALTH_EVERY_MS = 10_000;

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export function Connections({
  home,
  remoteId,
  current,
  onSwitch,
}: {
  home: Connection;
  remoteId: string | null;
  current: Connection;
  onSwitch: (conn: Connection, remoteId: string | null) => void;
}) {
  const [remotes, setRemotes] = useState<Remote[]>([]);
  const [adding, setAdding] = useState(false);
  const [draft, setDraft] = useState({ name: "", url: "", key: "" });
  const [error, setError] = useState<string | null>(null);
  const [health, setHealth] = useState<Health | null>(null);
  // The "Add remote" popover closes on Escape (focus back on its button) and outside clicks.
  const popover = useRef<HTMLFormElement>(null);
  const opener = useRef<HTMLButtonElement>(null);
  const closeForm = useCallback(() => setAdding(false), []);
  usePopover(adding, popover, opener, closeForm);
  useEffect(() => {
    if (adding) popover.current?.querySelector<HTMLInputElement>("input")?.focus();
  }, [adding]);

  const reload = useCallback(async () => {
    try {
      setRemotes(await listRemotes());
    } catch (e) {
      setError(message(e));
    }
  }, []);
  useEffect(() => void reload(), [reload]);

  useEffect(() => {
    let live = true;
    setHealth(null);
    const probe = (): void => {
      checkHealth(current, remoteId).then(
        (h) => live && setHealth(h),
        (e: unknown) => live && setHealth({ latency_ms: null, problem: { code: "unavailable", message: message(e) } }),
      );
    };
    probe();
    const t = window.setInterval(probe, HEALTH_EVERY_MS);
    return () => {
      live = false;
      window.clearInterval(t);
    };
  }, [current, remoteId]);

  const switchTo = async (id: string): Promise<void> => {
    setError(null);
    if (id === "") return onSwitch(home, null);
    try {
      onSwitch(await remoteConnection(id), id);
    } catch (e) {
      setError(message(e));
    }
  };

  const save = async (): Promise<void> => {
    setError(null);
    try {
      const r = await addRemote(draft.name, draft.url, draft.key);
      setDraft({ name: "", url: "", key: "" });
      setAdding(false);
      opener.current?.focus();
      await reload();
      await switchTo(r.id);
    } catch (e) {
      setError(message(e));
    }
  };

  const remove = async (): Promise<void> => {
    const r = remotes.find((r) => r.id === remoteId);
    if (!r || !window.confirm(`Forget the remote ${r.name} and its API key?`)) return;
    try {
      await removeRemote(r.id);
      onSwitch(home, null);
      await reload();
    } catch (e) {
      setError(message(e));
    }
  };

  const healthText = health === null ? "checking…" : health.problem ? health.problem.message : `${(health.latency_ms ?? 0).toFixed(0)} ms`;
  return (
    <div className="connections">
      <select id="conn-switch" aria-label="Connection" value={remoteId ?? ""} onChange={(e) => void switchTo(e.target.value)}>
        <option value="">{home.mode === "browser" ? "This browser's API" : "This computer"}</option>
        {remotes.map((r) => (
          <option key={r.id} value={r.id}>
            {r.name}
          </option>
        ))}
      </select>
      <span
        id="conn-health"
        className={health?.problem ? "health bad" : "health"}
        data-code={health === null ? "checking" : (health.problem?.code ?? "ok")}
        title={health?.problem?.message ?? "Round trip of an authenticated API call"}
      >
        {healthText}
      </span>
      <button
        id="remote-new"
        ref={opener}
        type="button"
        className="link"
        aria-expanded={adding}
        aria-controls={adding ? "remote-form" : undefined}
        onClick={() => setAdding((a) => !a)}
      >
        Add remote
      </button>
      {remoteId !== null && (
        <button id="remote-remove" type="button" className="link" onClick={() => void remove()}>
          Forget
        </button>
      )}
      {adding && (
        <form
          id="remote-form"
          ref={popover}
          className="remote-form"
          aria-label="Add a remote Hypeman server"
          onSubmit={(e) => {
            e.preventDefault();
            void save();
          }}
        >
          <label>
            Name
            <input id="remote-name" placeholder="lab" value={draft.name} onChange={(e) => setDraft({ ...draft, name: e.target.value })} />
          </label>
          <label>
            API URL
            <input id="remote-url" placeholder="https://hypeman.example.com" value={draft.url} onChange={(e) => setDraft({ ...draft, url: e.target.value })} />
          </label>
          <label>
            API key
            <input
              id="remote-key"
              type="password"
              autoComplete="off"
              value={draft.key}
              onChange={(e) => setDraft({ ...draft, key: e.target.value })}
            />
          </label>
          <button id="remote-save" type="submit" className="primary">
            Add
          </button>
        </form>
      )}
      {error && (
        <span id="remote-error" className="field-error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}
