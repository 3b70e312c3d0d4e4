// The setup screen: what this machine lacks to run sandboxes, why it matters and the exact
// command that fixes it, with a re-check. Shown instead of the workspace on a first run with
// something missing (or when the desktop engine cannot start), and at #/setup any time.
import { useCallback, useEffect, useState } from "react";

import type { SystemCheck, SystemChecks } from "../model";
import { CopyButton } from "./common";

const BADGE: Record<SystemCheck["status"], [string, string]> = {
  ok: ["badge-ok", "ok"],
  warning: ["badge-parked", "warning"],
  missing: ["badge-bad", "missing"],
};

export function SetupCheck({
  load,
  onContinue,
  continueLabel = "Continue",
}: {
  /** Runs the checks (again). */
  load: () => Promise<SystemChecks>;
  /** Shown (enabled) once nothing is missing. */
  onContinue?: () => void;
  continueLabel?: string;
}) {
  const [result, setResult] = useState<SystemChecks | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const run = useCallback(() => {
    setBusy(true);
    setFailure(null);
    load()
      .then(setResult, (e: unknown) => setFailure(e instanceof Error ? e.message : String(e)))
      .finally(() => setBusy(false));
  }, [load]);
  useEffect(run, [run]);

  const missing = result?.checks.filter((c) => c.status === "missing").length ?? 0;
  return (
    <section id="setup" className="setup" aria-busy={busy}>
      <h2>Set up this computer</h2>
      <p id="setup-summary" className="muted">
        {result === null
          ? "Checking what Hypedeck needs…"
          : missing > 0
            ? `${String(missing)} thing${missing === 1 ? " is" : "s are"} missing before a sandbox can start. Run the command shown, then re-check.`
            : "Everything a sandbox needs is here."}
      </p>
      {failure && (
        <div className="alert bad" role="alert">
          Could not run the checks: {failure}
        </div>
      )}
      <ul className="checks">
        {result?.checks.map((c) => (
          <li key={c.id} id={`check-${c.id}`} className="card check" data-status={c.status}>
            <div className="check-head">
              <span className={`badge ${BADGE[c.status][0]}`}>{BADGE[c.status][1]}</span>
              <h3>{c.title}</h3>
            </div>
            <p className="check-detail">{c.detail}</p>
            {c.status !== "ok" && <p className="hint">Why: {c.why}</p>}
            {c.fix && (
              <div className="fix">
                <code className="check-fix">{c.fix}</code>
                <CopyButton text={c.fix} label={`fix for ${c.title}`} />
              </div>
            )}
          </li>
        ))}
      </ul>
      <div className="actions">
        <button id="recheck" type="button" onClick={run} disabled={busy}>
          {busy ? "Checking…" : "Re-check"}
        </button>
        {onContinue && (
          <button id="setup-continue" type="button" className="primary" disabled={result === null || missing > 0} aria-describedby="setup-summary" onClick={onContinue}>
            {continueLabel}
          </button>
        )}
      </div>
    </section>
  );
}
