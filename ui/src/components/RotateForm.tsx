// Rotate credentials on a running instance: exactly the keys its credential policies name
// (`credentials[*].source.env`, asked of the API), masked fields with reveal, a paste box for
// `KEY=value` lines, and proof that the change applied live (the same `started_at`).
import { useEffect, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, rotatableKeys, type Problem } from "../api";
import { notifyRotationFailed } from "../desktop";
import { mask, parsePaste, rotationBody } from "../forms";
import { canRotate, when, type Instance } from "../model";
import { KeychainPicker } from "./KeychainPicker";

type Outcome = { kind: "applied"; keys: string[]; startedAt: string | null; same: boolean; at: string } | { kind: "failed"; problem: Problem };

export function RotateForm({ api, instance, onRotated }: { api: Hypeman; instance: Instance; onRotated: () => void }) {
  const [keys, setKeys] = useState<string[] | null>(null);
  const [keysProblem, setKeysProblem] = useState<Problem | null>(null);
  const [values, setValues] = useState<Record<string, string>>({});
  const [extra, setExtra] = useState<string[]>([]);
  const [revealed, setRevealed] = useState<Record<string, boolean>>({});
  const [paste, setPaste] = useState("");
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);

  useEffect(() => {
    let live = true;
    setKeys(null);
    setKeysProblem(null);
    rotatableKeys(api, instance.id).then(
      (k) => live && setKeys(k),
      (e: unknown) => live && setKeysProblem(problem(e, "")),
    );
    return () => {
      live = false;
    };
  }, [api, instance.id]);

  if (keysProblem) {
    return (
      <p className="inline-error" role="alert">
        Cannot tell which keys rotate: <strong>{keysProblem.code}</strong> {keysProblem.message}
      </p>
    );
  }
  if (keys === null) return <p className="muted" aria-busy="true">Reading credential policies…</p>;
  if (keys.length === 0) {
    return (
      <p id="rotate-none" className="muted">
        This instance has no credential policies, so there is nothing to rotate. Credentials are declared when an instance is created.
      </p>
    );
  }

  const applyPaste = (text: string): void => {
    const parsed = parsePaste(text, keys);
    setValues((v) => ({ ...v, ...parsed.values }));
    setExtra((x) => [...new Set([...x, ...parsed.unknown])]);
    setPaste("");
  };

  const submit = async (): Promise<void> => {
    const pending = paste.trim() !== "" ? { ...values, ...parsePaste(paste, keys).values } : values;
    const body = rotationBody(pending);
    if (!body) {
      setOutcome({ kind: "failed", problem: { code: "nothing_to_send", message: "Enter a new value for at least one key." } });
      return;
    }
    setBusy(true);
    setOutcome(null);
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
  const running = canRotate(instance.state);
  return (
    <form
      id="rotate-form"
      className="rotate"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {!running && (
        <p className="hint warn">
          Rotation applies live to a running instance; this one is {instance.state}, so the API will refuse it.
        </p>
      )}
      {rows.map((key) => {
        const known = keys.includes(key);
        const current = instance.env?.[key] ?? "";
        return (
          <div key={key} className={known ? "rotate-row" : "rotate-row unknown"}>
            <label htmlFor={`rotate-${key}`}>
              <code>{key}</code>
              {!known && <span className="warn"> not a credential key of this instance</span>}
            </label>
            <div className="secret-input">
              <input
                id={`rotate-${key}`}
                data-key={key}
                type={revealed[key] ? "text" : "password"}
                autoComplete="off"
                spellCheck={false}
                placeholder={current ? `current ${mask(current)}` : "new value"}
                value={values[key] ?? ""}
                onChange={(e) => setValues((v) => ({ ...v, [key]: e.target.value }))}
              />
              <button
                type="button"
                className="reveal"
                aria-pressed={revealed[key] ?? false}
                aria-label={`${revealed[key] ? "Hide" : "Reveal"} ${key}`}
                onClick={() => setRevealed((r) => ({ ...r, [key]: !r[key] }))}
              >
                {revealed[key] ? "Hide" : "Reveal"}
              </button>
            </div>
            <KeychainPicker
              api={api}
              id={`rotate-keychain-${key}`}
              onPick={(reference) => {
                setValues((v) => ({ ...v, [key]: reference }));
                setRevealed((r) => ({ ...r, [key]: true }));
              }}
            />
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
          onChange={(e) => setPaste(e.target.value)}
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
        <button id="rotate-submit" type="submit" className="primary" disabled={busy}>
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
      {outcome?.kind === "failed" && (
        <p id="rotate-error" className="inline-error" role="alert">
          <strong>{outcome.problem.code}</strong> {outcome.problem.message}
        </p>
      )}
    </form>
  );
}
