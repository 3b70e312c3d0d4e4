// Small building blocks: the state badge, copy buttons, the lifecycle buttons and field errors.
import { useContext, useState, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";
import { BackendsContext } from "../hooks";
import { availability, backendFor, tone, VERBS, type Instance, type State, type Verb } from "../model";

export function StateBadge({ state, title }: { state: State; title?: string | null | undefined }) {
  return (
    <span className={`badge badge-${tone(state)}`} data-state={state} title={title ?? state}>
      {state}
    </span>
  );
}

/** A button that copies `text` and says so for a moment. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState<"" | "copied" | "failed">("");
  const copy = async (): Promise<void> => {
    try {
      await navigator.clipboard.writeText(text);
      setDone("copied");
    } catch {
      setDone("failed");
    }
    window.setTimeout(() => setDone(""), 1500);
  };
  return (
    <button type="button" className="copy" aria-label={`Copy ${label}`} title={`Copy ${label}`} onClick={() => void copy()}>
      {done === "copied" ? "Copied" : done === "failed" ? "Copy failed" : "Copy"}
    </button>
  );
}

/** A value with a copy button, or a dash. */
export function Copyable({ value, label }: { value: string | null | undefined; label: string }) {
  if (!value) return <span className="muted">—</span>;
  return (
    <span className="copyable">
      <code>{value}</code>
      <CopyButton text={value} label={label} />
    </span>
  );
}

/** A labelled form field with its hint and, when there is one, its error. */
export function FormRow({ label, field, message, hint, children }: { label: string; field: string; message: string | undefined; hint?: ReactNode; children: ReactNode }) {
  return (
    <div className={message ? "field invalid" : "field"}>
      <label>
        <span className="label">{label}</span>
        {children}
      </label>
      {hint && <p className="hint">{hint}</p>}
      <FieldError field={field} message={message} />
    </div>
  );
}

export function FieldError({ field, message }: { field: string; message: string | undefined }) {
  if (!message) return null;
  return (
    <p className="field-error" data-field={field} role="alert">
      {message}
    </p>
  );
}

const VERB_LABEL: Record<Verb, string> = {
  start: "Start",
  stop: "Stop",
  standby: "Standby",
  restore: "Restore",
  delete: "Delete",
};

/** Runs a lifecycle verb through the SDK. */
export async function runVerb(api: Hypeman, id: string, verb: Verb): Promise<void> {
  switch (verb) {
    case "start":
      await api.instances.start(id, {});
      return;
    case "stop":
      await api.instances.stop(id);
      return;
    case "standby":
      await api.instances.standby(id);
      return;
    case "restore":
      await api.instances.restore(id);
      return;
    case "delete":
      await api.instances.delete(id);
      return;
  }
}

/**
 * Start / Stop / Standby / Restore / Delete for one instance, each disabled (with the reason as
 * its tooltip) when the state does not allow it. Delete asks first.
 */
export function Actions({
  api,
  instance,
  onDone,
  onProblem,
  compact = false,
}: {
  api: Hypeman;
  instance: Instance;
  onDone: (verb: Verb) => void;
  onProblem: (p: Problem) => void;
  compact?: boolean;
}) {
  const [busy, setBusy] = useState<Verb | null>(null);
  const backend = backendFor(useContext(BackendsContext), instance.hypervisor);
  const act = async (verb: Verb): Promise<void> => {
    if (verb === "delete" && !window.confirm(`Delete ${instance.name}? Its disks and logs are removed.`)) return;
    setBusy(verb);
    try {
      await runVerb(api, instance.id, verb);
      onDone(verb);
    } catch (e) {
      onProblem(problem(e, ""));
    } finally {
      setBusy(null);
    }
  };
  return (
    <div className={compact ? "actions compact" : "actions"} role="group" aria-label="Lifecycle">
      {VERBS.map((verb) => {
        const a = availability(instance.state, verb, backend);
        return (
          <span key={verb} className="action-wrap" title={a.reason}>
            <button
              type="button"
              className={verb === "delete" ? "danger" : verb === "start" || verb === "restore" ? "primary" : ""}
              data-action={verb}
              disabled={!a.enabled || busy !== null}
              aria-label={`${VERB_LABEL[verb]} ${instance.name}`}
              title={a.reason}
              onClick={(e) => {
                e.stopPropagation();
                void act(verb);
              }}
            >
              {busy === verb ? `${VERB_LABEL[verb]}…` : VERB_LABEL[verb]}
            </button>
          </span>
        );
      })}
    </div>
  );
}
