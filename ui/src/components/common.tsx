// Small building blocks: the state badge, copy buttons, the lifecycle buttons, field errors,
// and focus handling for dialogs and popovers (`useDialogFocus`, `usePopover`, `ConfirmDialog`).
import { useContext, useEffect, useId, useRef, useState, type ReactNode, type RefObject } from "react";
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

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/** The elements in `root` that Tab stops at, in order. */
export function focusables(root: HTMLElement): HTMLElement[] {
  return Array.from(root.querySelectorAll<HTMLElement>(FOCUSABLE)).filter((e) => e.getClientRects().length > 0);
}

/**
 * A modal dialog's focus: on open, the focus moves into `ref` (its `[autofocus]`/`data-autofocus`
 * element, else its first focusable one); Tab and Shift+Tab cycle inside it; Escape calls
 * `onClose`; on close, the focus returns to what had it before (the button that opened it).
 * Use with `role="dialog" aria-modal="true"` and an `aria-labelledby` on the container.
 */
export function useDialogFocus(ref: RefObject<HTMLElement | null>, onClose: () => void): void {
  const close = useRef(onClose);
  close.current = onClose;
  useEffect(() => {
    const root = ref.current;
    if (!root) return;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const first = root.querySelector<HTMLElement>("[data-autofocus]") ?? focusables(root)[0] ?? root;
    if (first === root && !root.hasAttribute("tabindex")) root.tabIndex = -1;
    first.focus();
    const onKey = (e: KeyboardEvent): void => {
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        close.current();
        return;
      }
      if (e.key !== "Tab") return;
      const items = focusables(root);
      if (items.length === 0) {
        e.preventDefault();
        return;
      }
      const [head, tail] = [items[0]!, items[items.length - 1]!];
      const at = document.activeElement;
      if (e.shiftKey && (at === head || !root.contains(at))) {
        e.preventDefault();
        tail.focus();
      } else if (!e.shiftKey && (at === tail || !root.contains(at))) {
        e.preventDefault();
        head.focus();
      }
    };
    // Capture: the dialog sees Escape before the page's shortcuts do.
    document.addEventListener("keydown", onKey, true);
    return () => {
      document.removeEventListener("keydown", onKey, true);
      if (opener?.isConnected) opener.focus();
    };
  }, [ref]);
}

/**
 * A non-modal popover (`ref`) opened by a button (`opener`): Escape or a click or focus outside
 * both closes it (`onClose`), and Escape puts the focus back on the opener.
 */
export function usePopover(open: boolean, ref: RefObject<HTMLElement | null>, opener: RefObject<HTMLElement | null>, onClose: () => void): void {
  const close = useRef(onClose);
  close.current = onClose;
  useEffect(() => {
    if (!open) return;
    const inside = (t: EventTarget | null): boolean => t instanceof Node && (ref.current?.contains(t) === true || opener.current?.contains(t) === true);
    const onKey = (e: KeyboardEvent): void => {
      if (e.key !== "Escape") return;
      e.preventDefault();
      e.stopPropagation();
      close.current();
      opener.current?.focus();
    };
    const onPointer = (e: Event): void => {
      if (!inside(e.target)) close.current();
    };
    document.addEventListener("keydown", onKey, true);
    document.addEventListener("pointerdown", onPointer, true);
    document.addEventListener("focusin", onPointer, true);
    return () => {
      document.removeEventListener("keydown", onKey, true);
      document.removeEventListener("pointerdown", onPointer, true);
      document.removeEventListener("focusin", onPointer, true);
    };
  }, [open, ref, opener]);
}

/**
 * A modal question with a confirm and a cancel button (focus trapped, Escape cancels, the focus
 * goes back to the opener). The cancel button has the focus first: a stray Enter does nothing
 * destructive.
 */
export function ConfirmDialog({
  id,
  title,
  children,
  confirmLabel,
  danger = false,
  onConfirm,
  onCancel,
}: {
  id: string;
  title: string;
  children?: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const titleId = useId();
  useDialogFocus(ref, onCancel);
  return (
    <div className="overlay" onMouseDown={(e) => e.target === e.currentTarget && onCancel()}>
      <div id={id} ref={ref} className="dialog confirm" role="dialog" aria-modal="true" aria-labelledby={titleId}>
        <h2 id={titleId}>{title}</h2>
        {children}
        <div className="form-actions">
          <button type="button" data-autofocus data-confirm="cancel" onClick={onCancel}>
            Cancel
          </button>
          <button type="button" data-confirm="ok" className={danger ? "danger-solid" : "primary"} onClick={onConfirm}>
            {confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}

/**
 * Start / Stop / Standby / Restore / Delete for one instance, each disabled (with the reason as
 * its tooltip and its accessible description) when the state does not allow it. Delete asks
 * first.
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
  const uid = useId();
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
        const why = !a.enabled && a.reason ? `${uid}-${verb}-why` : undefined;
        return (
          <span key={verb} className="action-wrap" title={a.reason}>
            {why && (
              <span id={why} className="sr-only">
                {a.reason}
              </span>
            )}
            <button
              type="button"
              className={verb === "delete" ? "danger" : verb === "start" || verb === "restore" ? "primary" : ""}
              data-action={verb}
              disabled={!a.enabled || busy !== null}
              aria-label={`${VERB_LABEL[verb]} ${instance.name}`}
              aria-describedby={why}
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
