// The snapshot schedule of an instance, in its Snapshots tab: without one, a sentence and the
// form to set one (an interval, how many scheduled snapshots to keep and/or after how long to
// delete them, a name prefix); with one, what it does in words, the next run, the last run's
// result (the snapshot it took, shown in the table, or its error), Edit (the same form,
// prefilled) and Remove (asked first; the snapshots stay). Read while the tab is shown.
import { useCallback, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, snapshotSchedule } from "../api";
import { duration, when, type Instance } from "../model";
import {
  checkSchedule,
  explainScheduleProblem,
  formOf,
  INTERVAL_CHOICES,
  isScheduled,
  lastRun,
  NEW_SCHEDULE,
  nextRunText,
  PREFIX_MAX,
  scheduleSummary,
  type Schedule,
  type ScheduleErrors,
  type ScheduleForm,
} from "../schedule";
import { snapshotLabel, type Snapshot } from "../snapshots";
import { usePolled } from "../hooks";
import { ConfirmDialog } from "./common";

const POLL_MS = 3000;

/** The schedule, read while `visible` (undefined: not read yet; null: none). */
function useSchedule(api: Hypeman, id: string, visible: boolean) {
  // Wrapped, so "none" (null) is not "not read yet" (the poll's null).
  const fetch = useCallback(async () => ({ schedule: await snapshotSchedule(api, id) }), [api, id]);
  const { value, failure, reload, set } = usePolled(fetch, POLL_MS, visible);
  const setSchedule = useCallback((schedule: Schedule | null) => set({ schedule }), [set]);
  return { schedule: value === null ? undefined : value.schedule, setSchedule, failure, reload };
}

const describe = (...ids: (string | false | null | undefined)[]): string | undefined => {
  const list = ids.filter((i): i is string => typeof i === "string");
  return list.length ? list.join(" ") : undefined;
};

/** One text field of the form, with its label, hint and error. */
function Field({
  id,
  label,
  value,
  error,
  hint,
  placeholder,
  numeric = false,
  disabled,
  onChange,
}: {
  id: string;
  label: string;
  value: string;
  error: string | undefined;
  hint?: string;
  placeholder?: string;
  numeric?: boolean;
  disabled: boolean;
  onChange: (v: string) => void;
}) {
  return (
    <div className={error ? "field invalid" : "field"}>
      <label>
        <span className="label">{label}</span>
        <input
          id={id}
          value={value}
          placeholder={placeholder}
          inputMode={numeric ? "numeric" : undefined}
          spellCheck={false}
          autoComplete="off"
          disabled={disabled}
          aria-invalid={error ? "true" : "false"}
          aria-describedby={describe(hint && `${id}-hint`, error && `${id}-error`)}
          onChange={(e) => onChange(e.target.value)}
        />
      </label>
      {hint && (
        <p id={`${id}-hint`} className="hint">
          {hint}
        </p>
      )}
      {error && (
        <p id={`${id}-error`} className="field-error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** The form that sets (or edits) the schedule. */
function ScheduleFormView({
  api,
  instance,
  current,
  onSaved,
  onCancel,
}: {
  api: Hypeman;
  instance: Instance;
  /** The schedule being edited, or null for a new one. */
  current: Schedule | null;
  onSaved: (s: Schedule) => void;
  onCancel?: () => void;
}) {
  const [form, setForm] = useState<ScheduleForm>(() => (current ? formOf(current) : NEW_SCHEDULE));
  const [errors, setErrors] = useState<ScheduleErrors>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const set = (patch: Partial<ScheduleForm>, clear: (keyof ScheduleErrors)[]): void => {
    setForm((f) => ({ ...f, ...patch }));
    setErrors((e) => {
      const next = { ...e };
      for (const k of clear) delete next[k];
      return next;
    });
    setFormError(null);
  };

  const save = async (): Promise<void> => {
    const checked = checkSchedule(form, current?.metadata);
    setErrors(checked.errors);
    setFormError(null);
    if (!checked.body) return;
    setBusy(true);
    try {
      onSaved(await api.instances.snapshotSchedule.update(instance.id, checked.body));
    } catch (e) {
      const explained = explainScheduleProblem(problem(e, ""));
      if (explained.field === "form") setFormError(explained.message);
      else setErrors({ [explained.field]: explained.message });
    } finally {
      setBusy(false);
    }
  };

  const custom = form.every === "custom";
  const intervalError = errors.interval;
  const prefixExample = `${form.prefix.trim() || "scheduled"}-20261206-100000`;
  return (
    <form
      id="schedule-form"
      className="schedule-form"
      aria-labelledby="schedule-form-title"
      aria-busy={busy}
      data-mode={current ? "edit" : "new"}
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <h4 id="schedule-form-title">{current ? "Edit the schedule" : "Set a schedule"}</h4>
      <div className="schedule-fields">
        <div className={intervalError && !custom ? "field invalid" : "field"}>
          <label>
            <span className="label">Interval</span>
            <select
              id="schedule-every"
              value={form.every}
              disabled={busy}
              aria-invalid={intervalError && !custom ? "true" : "false"}
              aria-describedby={describe(intervalError && !custom && "schedule-interval-error")}
              onChange={(e) => set({ every: e.target.value }, ["interval"])}
            >
              {INTERVAL_CHOICES.map((c) => (
                <option key={c.value} value={c.value}>
                  {c.label}
                </option>
              ))}
            </select>
          </label>
          {intervalError && !custom && (
            <p id="schedule-interval-error" className="field-error" role="alert">
              {intervalError}
            </p>
          )}
        </div>
        {custom && (
          <div className={intervalError ? "field invalid" : "field"}>
            <label>
              <span className="label">Custom interval</span>
              <input
                id="schedule-custom"
                value={form.custom}
                placeholder="90m"
                spellCheck={false}
                autoComplete="off"
                disabled={busy}
                aria-invalid={intervalError ? "true" : "false"}
                aria-describedby={describe("schedule-custom-hint", intervalError && "schedule-interval-error")}
                onChange={(e) => set({ custom: e.target.value }, ["interval"])}
              />
            </label>
            <p id="schedule-custom-hint" className="hint">
              A Go duration, at least 1m: 90m, 12h, 168h.
            </p>
            {intervalError && (
              <p id="schedule-interval-error" className="field-error" role="alert">
                {intervalError}
              </p>
            )}
          </div>
        )}
      </div>
      <fieldset
        id="schedule-retention"
        className="schedule-retention"
        aria-invalid={errors.retention ? "true" : undefined}
        aria-describedby={describe("schedule-retention-hint", errors.retention && "schedule-retention-error")}
      >
        <legend>Delete old scheduled snapshots</legend>
        <div className="schedule-fields">
          <Field
            id="schedule-keep"
            label="Keep the newest"
            value={form.keep}
            placeholder="5"
            numeric
            disabled={busy}
            error={errors.keep}
            onChange={(v) => set({ keep: v }, ["keep", "retention"])}
          />
          <Field
            id="schedule-max-age"
            label="Delete after"
            value={form.maxAge}
            placeholder="168h"
            disabled={busy}
            error={errors.maxAge}
            onChange={(v) => set({ maxAge: v }, ["maxAge", "retention"])}
          />
        </div>
        <p id="schedule-retention-hint" className="hint">
          A count (0: no limit by count), an age as a Go duration (48h, 168h), or both. Only the snapshots the schedule took are deleted, never
          those taken by hand.
        </p>
        {errors.retention && (
          <p id="schedule-retention-error" className="field-error" role="alert">
            {errors.retention}
          </p>
        )}
      </fieldset>
      <div className="schedule-fields">
        <Field
          id="schedule-prefix"
          label="Name prefix (optional)"
          value={form.prefix}
          placeholder="scheduled"
          hint={`At most ${PREFIX_MAX} characters; snapshots are named like ${prefixExample}.`}
          disabled={busy}
          error={errors.prefix}
          onChange={(v) => set({ prefix: v }, ["prefix"])}
        />
      </div>
      {formError && (
        <p id="schedule-error" className="alert bad" role="alert">
          {formError}
        </p>
      )}
      <div className="form-actions">
        {onCancel && (
          <button id="schedule-cancel" type="button" disabled={busy} onClick={onCancel}>
            Cancel
          </button>
        )}
        <button id="schedule-save" type="submit" className="primary" disabled={busy}>
          {busy ? "Saving…" : current ? "Save schedule" : "Set schedule"}
        </button>
      </div>
    </form>
  );
}

export function ScheduleCard({
  api,
  instance,
  visible,
  now,
  snapshots,
  onNote,
  onShow,
}: {
  api: Hypeman;
  instance: Instance;
  visible: boolean;
  now: number;
  /** The instance's snapshots (null: not read yet), to name the last one taken. */
  snapshots: readonly Snapshot[] | null;
  onNote: (text: string) => void;
  /** Shows a snapshot's row in the table. */
  onShow: (id: string) => void;
}) {
  const { schedule, setSchedule, failure, reload } = useSchedule(api, instance.id, visible);
  const [editing, setEditing] = useState(false);
  const [asking, setAsking] = useState(false);
  const [removing, setRemoving] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const scheduledCount = (snapshots ?? []).filter(isScheduled).length;

  const remove = async (): Promise<void> => {
    setRemoving(true);
    setError(null);
    try {
      await api.instances.snapshotSchedule.delete(instance.id);
      setSchedule(null);
      setEditing(false);
      onNote(`Removed the schedule; its snapshots stay`);
    } catch (e) {
      const p = problem(e, "");
      if (p.code === "not_found" && /schedule/.test(p.message)) setSchedule(null);
      else setError(explainScheduleProblem(p).message);
    } finally {
      setRemoving(false);
      void reload();
    }
  };

  const saved = (s: Schedule): void => {
    const wasSet = schedule !== null && schedule !== undefined;
    setSchedule(s);
    setEditing(false);
    onNote(`${wasSet ? "Schedule saved" : "Schedule set"}: ${scheduleSummary(s)}`);
  };

  let body;
  if (schedule === undefined) {
    body = failure ? null : (
      <p className="muted" aria-busy="true">
        Reading the schedule…
      </p>
    );
  } else if (schedule === null) {
    body = (
      <>
        <p id="schedule-none">
          No schedule: snapshots of {instance.name} are taken only by hand. A schedule takes one every interval (Standby while it runs, Stopped
          while it is stopped) and deletes the older scheduled ones.
        </p>
        <ScheduleFormView api={api} instance={instance} current={null} onSaved={saved} />
      </>
    );
  } else if (editing) {
    body = <ScheduleFormView api={api} instance={instance} current={schedule} onSaved={saved} onCancel={() => setEditing(false)} />;
  } else {
    const last = lastRun(schedule);
    const taken = last.kind === "took" ? (snapshots ?? []).find((s) => s.id === last.snapshotId) : undefined;
    body = (
      <>
        <p id="schedule-summary" className="schedule-summary">
          {scheduleSummary(schedule)}.
        </p>
        <dl className="schedule-facts">
          <dt>Next run</dt>
          <dd id="schedule-next" data-at={schedule.next_run_at}>
            {nextRunText(schedule.next_run_at, now)} <span className="muted">({when(schedule.next_run_at)})</span>
          </dd>
          <dt>Last run</dt>
          <dd id="schedule-last" data-result={last.kind}>
            {last.kind === "never" && <span className="muted">Not run yet</span>}
            {last.kind !== "never" && (
              <>
                {when(last.at)} <span className="muted">({duration(last.at, now)} ago)</span>
                {": "}
              </>
            )}
            {last.kind === "running" && <span>taking a snapshot…</span>}
            {last.kind === "failed" && (
              <span id="schedule-last-error" className="inline-error">
                failed: {last.error}
              </span>
            )}
            {last.kind === "took" &&
              (taken ? (
                <>
                  took{" "}
                  <button type="button" className="link" data-snapshot-id={taken.id} onClick={() => onShow(taken.id)}>
                    snapshot {snapshotLabel(taken)}
                  </button>
                </>
              ) : (
                <>
                  took snapshot <code title={last.snapshotId}>{last.snapshotId.slice(0, 8)}</code> <span className="muted">(since deleted)</span>
                </>
              ))}
          </dd>
          <dt>Names</dt>
          <dd id="schedule-names">
            <code>{schedule.name_prefix || "scheduled"}-YYYYMMDD-HHMMSS</code>
          </dd>
        </dl>
        <div className="form-actions schedule-actions">
          <button id="schedule-edit" type="button" onClick={() => setEditing(true)}>
            Edit
          </button>
          <button id="schedule-remove" type="button" className="danger" disabled={removing} onClick={() => setAsking(true)}>
            {removing ? "Removing…" : "Remove"}
          </button>
        </div>
      </>
    );
  }

  return (
    <section id="schedule" className="card schedule" aria-labelledby="schedule-title" data-schedule={schedule ? "set" : schedule === null ? "none" : "unknown"}>
      <h3 id="schedule-title">Schedule</h3>
      {failure && (
        <p id="schedule-load-error" className="inline-error" role="alert">
          The schedule could not be read: <strong>{failure.code}</strong> {failure.message}
        </p>
      )}
      {body}
      {error && (
        <p id="schedule-remove-error" className="alert bad" role="alert">
          {error}
        </p>
      )}
      {asking && (
        <ConfirmDialog
          id="schedule-remove-confirm"
          title={`Remove the schedule of ${instance.name}?`}
          confirmLabel="Remove schedule"
          danger
          onCancel={() => setAsking(false)}
          onConfirm={() => {
            setAsking(false);
            void remove();
          }}
        >
          <p>
            No more snapshots are taken or deleted on a schedule. The snapshots it took stay
            {scheduledCount > 0 ? ` (${scheduledCount} now)` : ""}: delete them from the list if you no longer need them.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
