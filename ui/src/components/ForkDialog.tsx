// Fork an instance, or a snapshot, into a new instance: its name (checked like the create form's,
// and against the instances that exist) and the state it ends in (by default the source's own,
// or the snapshot kind's), with what that state means. A running source is forked "from
// running" (paused and saved for a moment, then resumed; the fork carries on from the same
// point), which the dialog says; whatever the server answers is shown in plain words.
import { useId, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { CREATE_TIMEOUT_MS, problem } from "../api";
import { NAME_RULE } from "../forms";
import { when, type Instance } from "../model";
import {
  explainSnapshotProblem,
  forkCarries,
  forkNameProblem,
  forkTargets,
  targetHint,
  snapshotLabel,
  snapshotTargets,
  suggestForkName,
  type Snapshot,
  type TargetState,
} from "../snapshots";
import { useDialogFocus } from "./common";

export type ForkSource = { kind: "instance"; instance: Instance } | { kind: "snapshot"; snapshot: Snapshot };

export function ForkDialog({
  api,
  source,
  taken,
  onClose,
  onForked,
}: {
  api: Hypeman;
  source: ForkSource;
  /** The names of the instances that exist (a fork needs a free one); read when the dialog opens. */
  taken: readonly string[];
  onClose: () => void;
  onForked: (fork: Instance) => void;
}) {
  const ref = useRef<HTMLFormElement>(null);
  const uid = useId();
  const sourceName = source.kind === "instance" ? source.instance.name : source.snapshot.source_instance_name;
  const targets: TargetState[] = source.kind === "instance" ? forkTargets(source.instance.state) : snapshotTargets(source.snapshot.kind);
  const running = source.kind === "instance" && source.instance.state === "Running";
  // Memory and disks (a Standby snapshot, a running or standby instance), or the disks.
  const carries = source.kind === "instance" ? forkCarries(source.instance.state) : source.snapshot.kind;
  // The names known when the dialog opened; one taken since is the server's to refuse.
  const [known] = useState(taken);
  const [name, setName] = useState(() => suggestForkName(sourceName, known));
  const [target, setTarget] = useState<TargetState>(targets[0]!);
  const [fromRunning, setFromRunning] = useState(true);
  const [nameError, setNameError] = useState<string | null>(null);
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useDialogFocus(ref, () => !busy && onClose());

  const submit = async (): Promise<void> => {
    const wrong = forkNameProblem(name, known);
    setNameError(wrong);
    setFormError(null);
    if (wrong) {
      document.getElementById("fork-name")?.focus();
      return;
    }
    setBusy(true);
    try {
      const fork =
        source.kind === "instance"
          ? await api.instances.fork(source.instance.id, { name: name.trim(), target_state: target, ...(running ? { from_running: fromRunning } : {}) }, { timeout: CREATE_TIMEOUT_MS })
          : await api.snapshots.fork(source.snapshot.id, { name: name.trim(), target_state: target }, { timeout: CREATE_TIMEOUT_MS });
      onForked(fork);
    } catch (e) {
      const explained = explainSnapshotProblem(problem(e, ""), name);
      if (explained.field === "name") {
        setNameError(explained.message);
        document.getElementById("fork-name")?.focus();
      } else setFormError(explained.message);
    } finally {
      setBusy(false);
    }
  };

  const title = source.kind === "instance" ? `Fork ${sourceName}` : `Fork snapshot ${snapshotLabel(source.snapshot)} of ${sourceName}`;
  const describedBy = [`${uid}-what`, nameError ? `${uid}-name-error` : `${uid}-name-rule`].join(" ");
  return (
    <div className="overlay" onMouseDown={(e) => e.target === e.currentTarget && !busy && onClose()}>
      <form
        id="fork-dialog"
        ref={ref}
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby={`${uid}-title`}
        aria-describedby={`${uid}-what`}
        data-source={source.kind}
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <h2 id={`${uid}-title`}>{title}</h2>
        <p id={`${uid}-what`} className="hint">
          {source.kind === "instance"
            ? `A new instance with a copy of ${sourceName}'s ${carries === "Standby" ? "memory, disks" : "disks"} and settings, and its own ID, address and logs. ${sourceName} itself is not changed.`
            : `A new instance from the ${carries === "Standby" ? "memory and disks" : "disks"} this snapshot saved (${when(source.snapshot.created_at)}). The snapshot and ${sourceName} are not changed.`}
        </p>
        {running && (
          <div id="fork-running-note" className="alert off" role="note">
            <p>
              {sourceName} is running. The instance is paused and saved for a moment, then resumes; the fork continues from the same point with its own
              name and address.
            </p>
            <label className="check">
              <input id="fork-from-running" type="checkbox" checked={fromRunning} disabled={busy} onChange={(e) => setFromRunning(e.target.checked)} />
              Fork from running (pauses {sourceName} for a moment)
            </label>
          </div>
        )}
        <div className={nameError ? "field invalid" : "field"}>
          <label>
            <span className="label">Name of the new instance</span>
            <input
              id="fork-name"
              data-field="fork-name"
              value={name}
              data-autofocus
              spellCheck={false}
              autoComplete="off"
              disabled={busy}
              aria-invalid={nameError ? "true" : "false"}
              aria-describedby={describedBy}
              onChange={(e) => {
                setName(e.target.value);
                setNameError(null);
              }}
            />
          </label>
          {nameError ? (
            <p id={`${uid}-name-error`} className="field-error" data-field="fork-name" role="alert">
              {nameError}
            </p>
          ) : (
            <p id={`${uid}-name-rule`} className="hint">
              {NAME_RULE}
            </p>
          )}
        </div>
        <label>
          <span className="label">Afterwards the new instance is</span>
          <select
            id="fork-target"
            value={target}
            disabled={busy}
            aria-describedby={`${uid}-target`}
            onChange={(e) => setTarget(e.target.value as TargetState)}
          >
            {targets.map((t, n) => (
              <option key={t} value={t}>
                {t}
                {n === 0 ? (source.kind === "instance" ? ` (like ${sourceName})` : " (default)") : ""}
              </option>
            ))}
          </select>
        </label>
        <p id={`${uid}-target`} className="hint" data-field="fork-target-hint">
          {targetHint(carries, target)}
        </p>
        {formError && (
          <p id="fork-error" className="alert bad" role="alert">
            {formError}
          </p>
        )}
        <div className="form-actions">
          <button type="button" data-confirm="cancel" disabled={busy} onClick={onClose}>
            Cancel
          </button>
          <button id="fork-submit" type="submit" className="primary" disabled={busy}>
            {busy ? "Forking…" : "Fork"}
          </button>
        </div>
      </form>
    </div>
  );
}
