// Rotate credentials on a running instance: exactly the keys its credentials take their values
// from (found by the page, `rotatableKeys`), masked fields whose Show button shows what was
// typed, a paste box for `KEY=value` lines (a pasted key that is not a credential is offered
// the real ones), and proof that the change applied live (the same `started_at`). While the
// state refuses a rotation, the button is disabled and says why. Notes and errors go away when
// the input or the state changes.
import { useEffect, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";
import { rotationRefusal } from "../details";
import { notifyRotationFailed } from "../desktop";
import { allowedKeysFrom, parsePaste, rotationBody } from "../forms";
import { when, type Instance } from "../model";
import { KeychainPicker } from "./KeychainPicker";

type Outcome = { kind: "applied"; keys: string[]; startedAt: string | null; same: boolean; at: string } | { kind: "failed"; problem: Problem };

/** The refusal in plain words first (the API's own words follow it). */
function FailedRotation({ problem: p, sent }: { problem: Problem; sent: string[] }) {
  const allowed = allowedKeysFrom(p);
  const refused = allowed === null ? [] : sent.filter((k) => !allowed.includes(k));
  return (
    <p id="rotate-error" className="inline-error" role="alert">
      {refused.length > 0 && allowed !== null && (
        <span className="plain">
          {refused.join(", ")} {refused.length === 1 ? "is not a credential" : "are not credentials"} of this instance
          {allowed.length ? `; only ${allowed.join(", ")} can be rotated.` : "; it has none to rotate."}{" "}
        </span>
      )}
      <strong>{p.code}</strong> {p.message}
    </p>
  );
}

export function RotateForm({
  api,
  instance,
  keys,
  fingerprints,
  onRotated,
}: {
  api: Hypeman;
  instance: Instance;
  /** The env keys that rotate (non-empty). */
  keys: string[];
  /** The current value's fingerprint per env key, when the server reports them. */
  fingerprints: Record<string, string | null>;
  onRotated: () => void;
}) {
  const [values, setValues] = useState<Record<string, string>>({});
  const [extra, setExtra] = useState<string[]>([]);
  const [revealed, setRevealed] = useState<Record<string, boolean>>({});
  const [paste, setPaste] = useState("");
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const [sent, setSent] = useState<string[]>([]);

  // A note about the last rotation is about the state it was made in.
  useEffect(() => setOutcome(null), [instance.state]);

  const refusal = rotationRefusal(instance.state);

  const edit = (key: string, value: string): void => {
    setOutcome(null);
    setValues((v) => ({ ...v, [key]: value }));
  };

  const applyPaste = (text: string): void => {
    setOutcome(null);
    const parsed = parsePaste(text, keys);
    setValues((v) => ({ ...v, ...parsed.values }));
    setExtra((x) => [...new Set([...x, ...parsed.unknown])]);
    setPaste("");
  };

  /** Moves a pasted value from a key that is not a credential to one that is. */
  const moveTo = (from: string, to: string): void => {
    setOutcome(null);
    setValues((v) => {
      const { [from]: value, ...rest } = v;
      return { ...rest, [to]: value ?? "" };
    });
    setExtra((x) => x.filter((k) => k !== from));
  };

  const drop = (key: string): void => {
    setOutcome(null);
    setValues(({ [key]: _dropped, ...rest }) => rest);
    setExtra((x) => x.filter((k) => k !== key));
  };

  const submit = async (): Promise<void> => {
    if (refusal) return;
    const pending = paste.trim() !== "" ? { ...values, ...parsePaste(paste, keys).values } : values;
    const body = rotationBody(pending);
    if (!body) {
      setOutcome({ kind: "failed", problem: { code: "nothing_to_send", message: "Enter a new value for at least one key." } });
      return;
    }
    setBusy(true);
    setOutcome(null);
    setSent(Object.keys(body.env));
    const before = instance.started_at ?? null;
    try {
      const after = await api.instances.update(instance.id, body);
      setOutcome({
        kind: "applied",
        keys: Object.keys(body.env),
        startedAt: after.started_at ?? null,
        same: (after.started_at ?? null) === before,
        at: new Date().toLocaleTimeString(),
      });
      setValues({});
      setExtra([]);
      setPaste("");
      setRevealed({});
      onRotated();
    } catch (e) {
      const p = problem(e, "");
      setOutcome({ kind: "failed", problem: p });
      void notifyRotationFailed(instance.name, `${p.code}: ${p.message}`);
    } finally {
      setBusy(false);
    }
  };

  const rows = [...keys, ...extra.filter((k) => !keys.includes(k))];
  return (
    <form
      id="rotate-form"
      className="rotate"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {rows.map((key) => {
        const known = keys.includes(key);
        const typed = values[key] ?? "";
        const fingerprint = fingerprints[key];
        return (
          <div key={key} className={known ? "rotate-row" : "rotate-row unknown"} data-row={key}>
            <label htmlFor={`rotate-${key}`}>
              <code>{key}</code>
              {known && fingerprint && (
                <span className="muted" data-field="current-fingerprint">
                  {" "}
                  current value&apos;s fingerprint <code>{fingerprint}</code>
                </span>
              )}
              {!known && <span className="warn"> is not a credential of this instance</span>}
            </label>
            <div className="secret-input">
              <input
                id={`rotate-${key}`}
                data-key={key}
                type={revealed[key] ? "text" : "password"}
                autoComplete="off"
                spellCheck={false}
                placeholder="new value"
                value={typed}
                onChange={(e) => edit(key, e.target.value)}
              />
              {typed !== "" && (
                <button
                  type="button"
                  className="reveal"
                  aria-pressed={revealed[key] ?? false}
                  aria-label={`${revealed[key] ? "Hide" : "Show"} the new value of ${key}`}
                  onClick={() => setRevealed((r) => ({ ...r, [key]: !r[key] }))}
                >
                  {revealed[key] ? "Hide" : "Show"}
                </button>
              )}
            </div>
            {known ? (
              <KeychainPicker
                api={api}
                id={`rotate-keychain-${key}`}
                onPick={(reference) => {
                  edit(key, reference);
                  setRevealed((r) => ({ ...r, [key]: true }));
                }}
              />
            ) : (
              <div className="rotate-move">
                <label>
                  Use this value for{" "}
                  <select
                    className="rotate-move-to"
                    data-from={key}
                    value=""
                    aria-label={`Use the value pasted for ${key} for`}
                    onChange={(e) => e.target.value && moveTo(key, e.target.value)}
                  >
                    <option value="">choose a credential…</option>
                    {keys.map((k) => (
                      <option key={k} value={k}>
                        {k}
                      </option>
                    ))}
                  </select>
                </label>{" "}
                <button type="button" className="link" onClick={() => drop(key)}>
                  Remove {key}
                </button>
              </div>
            )}
          </div>
        );
      })}
      <label className="paste">
        Paste <code>KEY=value</code> lines (or just the value when there is one key)
        <textarea
          id="rotate-paste"
          rows={2}
          spellCheck={false}
          autoComplete="off"
          value={paste}
          onChange={(e) => {
            setOutcome(null);
            setPaste(e.target.value);
          }}
          onPaste={(e) => {
            const text = e.clipboardData.getData("text");
            if (text) {
              e.preventDefault();
              applyPaste(text);
            }
          }}
        />
      </label>
      <p className="hint">
        A value may also be a reference the host resolves: <code>op://vault/item/field</code>, <code>keychain:service/account</code> or{" "}
        <code>cmd:gh auth token</code> (Hypedeck engines listening on loopback).
      </p>
      <div className="form-actions">
        {refusal && (
          <p id="rotate-refused" className="hint warn">
            {refusal}
          </p>
        )}
        <button id="rotate-submit" type="submit" className="primary" disabled={busy || refusal !== null} aria-describedby={refusal ? "rotate-refused" : undefined}>
          {busy ? "Rotating…" : "Rotate without restart"}
        </button>
      </div>
      {outcome?.kind === "applied" && (
        <p id="rotate-result" className="success" role="status">
          Applied live at {outcome.at}: {outcome.keys.join(", ")}.{" "}
          {outcome.same
            ? `No restart — started_at is still ${when(outcome.startedAt)}.`
            : `Note: started_at changed to ${when(outcome.startedAt)}.`}
        </p>
      )}
      {outcome?.kind === "failed" && <FailedRotation problem={outcome.problem} sent={sent} />}
    </form>
  );
}
