// The Snapshots tab of an instance: take a snapshot of either kind — Standby (memory and disks,
// of a running or standby instance, its memory optionally compressed: zstd or lz4, at a level)
// or Stopped (disks, of a stopped one); the kind follows the state until one is chosen, and the
// submit is disabled with the reason when the kind cannot be taken now — with an optional name
// and tags; and its snapshots newest first with kind, size (and the memory's compression: under
// way, its sizes, or why it failed), time and the user's tags (not the internal `hypeman.*`
// ones); each one restores (a dialog that says what goes back, and the state to end in), forks
// into a new instance, or is deleted (asked first); those a schedule took are marked. Below,
// the snapshot schedule (ScheduleCard). The list is read while the tab is shown, every few
// seconds and after each change.
import { useCallback, useEffect, useId, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { CREATE_TIMEOUT_MS, problem, type Problem } from "../api";
import { parseTags } from "../forms";
import { bytes, duration, tagLabels, when, type Instance } from "../model";
import {
  COMPRESSION_ALGORITHMS,
  compressionLevelHint,
  compressionLevelProblem,
  compressionLevels,
  compressionView,
  explainSnapshotProblem,
  kindText,
  restoreRefusal,
  snapshotLabel,
  snapshotNameProblem,
  defaultSnapshotKind,
  NO_COMPRESSION,
  restoreWhat,
  SNAPSHOT_KINDS,
  snapshotBody,
  snapshotRefusal,
  snapshotTargets,
  sortSnapshots,
  takeHint,
  targetHint,
  userTags,
  type CompressionAlgorithm,
  type CompressionChoice,
  type Snapshot,
  type SnapshotKind,
  type TargetState,
} from "../snapshots";
import { usePolled } from "../hooks";
import { isScheduled } from "../schedule";
import { ConfirmDialog, useDialogFocus } from "./common";
import { ForkDialog } from "./ForkDialog";
import { ScheduleCard } from "./ScheduleCard";

const POLL_MS = 3000;

/** This instance's snapshots, newest first, read while `visible` (null: not read yet). */
function useSnapshots(api: Hypeman, id: string, visible: boolean): { list: Snapshot[] | null; failure: Problem | null; reload: () => Promise<void> } {
  const fetch = useCallback(async () => sortSnapshots(await api.snapshots.list({ source_instance_id: id })), [api, id]);
  const { value: list, failure, reload } = usePolled(fetch, POLL_MS, visible);
  return { list, failure, reload };
}

/** The take-a-snapshot form: the kind (Standby or Stopped), the memory's compression (Standby only), an optional name and tags. */
function TakeForm({ api, instance, focusRequest, onTaken }: { api: Hypeman; instance: Instance; focusRequest: number; onTaken: (s: Snapshot) => void }) {
  const [name, setName] = useState("");
  const [tags, setTags] = useState("");
  // null: the default for the instance's state, which follows the state until a kind is chosen.
  const [chosen, setChosen] = useState<SnapshotKind | null>(null);
  const [nameError, setNameError] = useState<string | null>(null);
  const [tagsError, setTagsError] = useState<string | null>(null);
  // Kept while the kind is Stopped (hidden, not sent), so choosing Standby again brings it back.
  const [compression, setCompression] = useState<CompressionChoice>(NO_COMPRESSION);
  const [levelError, setLevelError] = useState<string | null>(null);
  const [formError, setFormError] = useState<string | null>(null);
  // The kind being taken: the form keeps it while the engine saves and resumes the VM, whatever
  // state the instance passes through meanwhile.
  const [busy, setBusy] = useState<SnapshotKind | null>(null);
  const kind = busy ?? chosen ?? defaultSnapshotKind(instance.state);
  const refusal = busy ? null : snapshotRefusal(instance.state, kind);
  const kindRefs = useRef<Partial<Record<SnapshotKind, HTMLInputElement | null>>>({});
  // An error about the last try is about the state it was made in.
  useEffect(() => setFormError(null), [instance.state]);
  // The instance page's Snapshot button: the first control of the form takes the focus.
  useEffect(() => {
    if (focusRequest > 0) kindRefs.current[kind]?.focus();
    // Only a new request moves the focus, not a change of kind (so `kind` is left out).
  }, [focusRequest]);

  const take = async (): Promise<void> => {
    const wrongName = snapshotNameProblem(name);
    const parsed = parseTags(tags);
    const compressed = kind === "Standby" && compression.enabled;
    const wrongLevel = compressed ? compressionLevelProblem(compression.algorithm, compression.level) : null;
    setNameError(wrongName);
    setTagsError(parsed.error);
    setLevelError(wrongLevel);
    setFormError(null);
    if (wrongName || parsed.error || wrongLevel || refusal) return;
    setBusy(kind);
    try {
      const body = snapshotBody(kind, name, parsed.tags, compression);
      const taken = await api.instances.snapshots.create(instance.id, body, { timeout: CREATE_TIMEOUT_MS });
      setName("");
      setTags("");
      onTaken(taken);
    } catch (e) {
      const explained = explainSnapshotProblem(problem(e, ""), name);
      if (explained.field === "name") setNameError(explained.message);
      else if (explained.field === "level" && compressed) setLevelError(explained.message);
      else setFormError(explained.message);
    } finally {
      setBusy(null);
    }
  };

  const describe = (...ids: (string | false | null)[]): string | undefined => {
    const list = ids.filter((i): i is string => typeof i === "string");
    return list.length ? list.join(" ") : undefined;
  };
  const choose = (patch: Partial<CompressionChoice>): void => {
    setCompression((c) => ({ ...c, ...patch }));
    setLevelError(null);
    setFormError(null);
  };
  return (
    <form
      id="snapshot-form"
      className="card snapshot-form"
      aria-labelledby="snapshot-form-title"
      aria-busy={busy !== null}
      data-kind={kind}
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void take();
      }}
    >
      <h3 id="snapshot-form-title">Take a snapshot</h3>
      <p className="hint">A snapshot keeps {instance.name} as it is now: restore it here later, or fork it into a new instance.</p>
      <fieldset id="snapshot-kind" className="snapshot-kind" aria-describedby="snapshot-kind-hint">
        <legend>Kind</legend>
        <div className="snapshot-kind-options">
          {SNAPSHOT_KINDS.map((k) => (
            <label key={k} className="check">
              <input
                ref={(el) => {
                  kindRefs.current[k] = el;
                }}
                type="radio"
                name="snapshot-kind"
                id={`snapshot-kind-${k.toLowerCase()}`}
                value={k}
                checked={kind === k}
                disabled={busy !== null}
                onChange={() => {
                  setChosen(k);
                  setFormError(null);
                }}
              />
              {kindText(k)}
            </label>
          ))}
        </div>
        <p id="snapshot-kind-hint" className="hint">
          {takeHint(instance.state, kind)}
        </p>
      </fieldset>
      {kind === "Standby" && (
        <div id="snapshot-compression" className="snapshot-compression">
          <label className="check">
            <input
              id="snapshot-compress"
              type="checkbox"
              checked={compression.enabled}
              disabled={busy !== null}
              aria-describedby="snapshot-compress-hint"
              onChange={(e) => choose({ enabled: e.target.checked })}
            />
            Compress the saved memory
          </label>
          <p id="snapshot-compress-hint" className="hint">
            Compressed in the background once the snapshot is taken: smaller on disk; a restore or a fork decompresses it first.
          </p>
          {compression.enabled && (
            <div className="snapshot-compression-fields">
              <div className="field">
                <label>
                  <span className="label">Algorithm</span>
                  <select
                    id="snapshot-compression-algorithm"
                    value={compression.algorithm}
                    disabled={busy !== null}
                    onChange={(e) => choose({ algorithm: e.target.value as CompressionAlgorithm })}
                  >
                    {COMPRESSION_ALGORITHMS.map((a) => (
                      <option key={a} value={a}>
                        {a}
                      </option>
                    ))}
                  </select>
                </label>
              </div>
              <div className={levelError ? "field invalid" : "field"}>
                <label>
                  <span className="label">Level (optional)</span>
                  <input
                    id="snapshot-compression-level"
                    value={compression.level}
                    placeholder={String(compressionLevels(compression.algorithm).default)}
                    inputMode="numeric"
                    spellCheck={false}
                    autoComplete="off"
                    disabled={busy !== null}
                    aria-invalid={levelError ? "true" : "false"}
                    aria-describedby={describe("snapshot-compression-level-hint", levelError !== null && "snapshot-compression-level-error")}
                    onChange={(e) => choose({ level: e.target.value })}
                  />
                </label>
                <p id="snapshot-compression-level-hint" className="hint">
                  {compressionLevelHint(compression.algorithm)}
                </p>
                {levelError && (
                  <p id="snapshot-compression-level-error" className="field-error" role="alert">
                    {levelError}
                  </p>
                )}
              </div>
            </div>
          )}
        </div>
      )}
      <div className="snapshot-fields">
        <div className={nameError ? "field invalid" : "field"}>
          <label>
            <span className="label">Name (optional)</span>
            <input
              id="snapshot-name"
              value={name}
              placeholder="before-upgrade"
              spellCheck={false}
              autoComplete="off"
              aria-invalid={nameError ? "true" : "false"}
              aria-describedby={describe(nameError !== null && "snapshot-name-error")}
              onChange={(e) => {
                setName(e.target.value);
                setNameError(null);
              }}
            />
          </label>
          {nameError && (
            <p id="snapshot-name-error" className="field-error" role="alert">
              {nameError}
            </p>
          )}
        </div>
        <div className={tagsError ? "field invalid" : "field"}>
          <label>
            <span className="label">Tags (optional)</span>
            <input
              id="snapshot-tags"
              value={tags}
              placeholder="reason=upgrade"
              spellCheck={false}
              autoComplete="off"
              aria-invalid={tagsError ? "true" : "false"}
              aria-describedby={describe(tagsError !== null && "snapshot-tags-error")}
              onChange={(e) => {
                setTags(e.target.value);
                setTagsError(null);
              }}
            />
          </label>
          {tagsError && (
            <p id="snapshot-tags-error" className="field-error" role="alert">
              {tagsError}
            </p>
          )}
        </div>
        <button
          id="snapshot-take"
          type="submit"
          className="primary"
          disabled={refusal !== null || busy !== null}
          aria-describedby={describe(refusal !== null && "snapshot-take-why")}
          title={refusal ?? (kind === "Standby" ? "Save the VM's memory and disks now" : "Copy the disks now")}
        >
          {busy ? "Taking snapshot…" : "Take snapshot"}
        </button>
      </div>
      {refusal && (
        <p id="snapshot-take-why" className="hint">
          {refusal}
        </p>
      )}
      {formError && (
        <p id="snapshot-error" className="alert bad" role="alert">
          {formError}
        </p>
      )}
    </form>
  );
}

/** Asks before a restore: the disks go back; which state to end in. */
function RestoreDialog({
  api,
  instance,
  snapshot,
  onClose,
  onRestored,
}: {
  api: Hypeman;
  instance: Instance;
  snapshot: Snapshot;
  onClose: () => void;
  onRestored: (target: TargetState) => void;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const uid = useId();
  const targets = snapshotTargets(snapshot.kind);
  const [target, setTarget] = useState<TargetState>(targets[0]!);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useDialogFocus(ref, () => !busy && onClose());

  const restore = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await api.instances.snapshots.restore(snapshot.id, { id: instance.id, target_state: target }, { timeout: CREATE_TIMEOUT_MS });
      onRestored(target);
    } catch (e) {
      setError(explainSnapshotProblem(problem(e, "")).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="overlay" onMouseDown={(e) => e.target === e.currentTarget && !busy && onClose()}>
      <div id="restore-dialog" ref={ref} className="dialog confirm" role="dialog" aria-modal="true" aria-labelledby={`${uid}-title`} aria-describedby={`${uid}-what`}>
        <h2 id={`${uid}-title`}>
          Restore {instance.name} to {snapshot.name ? `“${snapshot.name}”` : "this snapshot"}?
        </h2>
        <p id={`${uid}-what`}>
          {restoreWhat(snapshot.kind, instance.name)} go back to how they were at {when(snapshot.created_at)}: everything written since is lost. Its
          settings go back too (credential values stay as they are now). The snapshot is kept.
        </p>
        <label>
          <span className="label">Afterwards {instance.name} is</span>
          <select
            id="restore-target"
            value={target}
            disabled={busy}
            aria-describedby={`${uid}-target`}
            onChange={(e) => setTarget(e.target.value as TargetState)}
          >
            {targets.map((t, n) => (
              <option key={t} value={t}>
                {t}
                {n === 0 ? " (default)" : ""}
              </option>
            ))}
          </select>
        </label>
        <p id={`${uid}-target`} className="hint" data-field="restore-target-hint">
          {targetHint(snapshot.kind, target)}
        </p>
        {error && (
          <p id="restore-error" className="alert bad" role="alert">
            {error}
          </p>
        )}
        <div className="form-actions">
          <button type="button" data-autofocus data-confirm="cancel" disabled={busy} onClick={onClose}>
            Cancel
          </button>
          <button id="restore-confirm" type="button" data-confirm="ok" className="danger-solid" disabled={busy} onClick={() => void restore()}>
            {busy ? "Restoring…" : "Restore"}
          </button>
        </div>
      </div>
    </div>
  );
}

/** `snapshot before-upgrade` / `an unnamed snapshot`, in a sentence. */
const called = (s: Snapshot): string => (s.name ? `snapshot ${s.name}` : "an unnamed snapshot");

type Question = { kind: "restore"; snapshot: Snapshot } | { kind: "fork"; snapshot: Snapshot } | { kind: "delete"; snapshot: Snapshot };

export function SnapshotsPanel({
  api,
  instance,
  instances,
  visible,
  now,
  onChanged,
  onOpen,
  focusTake = 0,
}: {
  api: Hypeman;
  instance: Instance;
  /** Bumped to move the focus into the take form (the instance page's Snapshot button). */
  focusTake?: number;
  /** Every instance (a fork needs a free name). */
  instances: readonly Instance[];
  visible: boolean;
  now: number;
  /** After a restore: the instance changed. */
  onChanged: () => void;
  /** Opens an instance's page (a new fork's). */
  onOpen: (id: string) => void;
}) {
  const { list, failure, reload } = useSnapshots(api, instance.id, visible);
  const [question, setQuestion] = useState<Question | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [rowError, setRowError] = useState<{ id: string; message: string } | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  // The row the schedule's "last run" link points at, highlighted for a moment.
  const [shown, setShown] = useState<string | null>(null);
  const restoreWhy = restoreRefusal(instance.state);
  const total = (list ?? []).reduce((n, s) => n + s.size_bytes, 0);

  useEffect(() => {
    if (!note) return;
    const t = window.setTimeout(() => setNote(null), 6000);
    return () => window.clearTimeout(t);
  }, [note]);

  useEffect(() => {
    if (!shown) return;
    const t = window.setTimeout(() => setShown(null), 4000);
    return () => window.clearTimeout(t);
  }, [shown]);

  /** Scrolls to a snapshot's row and moves the focus there. */
  const showRow = (id: string): void => {
    const row = document.querySelector<HTMLTableRowElement>(`#snapshots-table tr[data-snapshot-id="${CSS.escape(id)}"]`);
    if (!row) return;
    row.scrollIntoView({ block: "center" });
    row.focus();
    setShown(id);
  };

  const remove = async (s: Snapshot): Promise<void> => {
    setDeleting(s.id);
    setRowError(null);
    try {
      await api.snapshots.delete(s.id);
      setNote(`Deleted ${called(s)}`);
      await reload();
    } catch (e) {
      setRowError({ id: s.id, message: explainSnapshotProblem(problem(e, "")).message });
    } finally {
      setDeleting(null);
    }
  };

  return (
    <div id="snapshots" className="snapshots">
      <TakeForm
        api={api}
        instance={instance}
        focusRequest={focusTake}
        onTaken={(s) => {
          setNote(`Took ${called(s)} (${bytes(s.size_bytes)})`);
          void reload();
        }}
      />
      <div id="snapshots-note" role="status">
        {note && <p className="alert ok">{note}</p>}
      </div>
      <section className="card" aria-labelledby="snapshots-title">
        <h3 id="snapshots-title">
          Snapshots of {instance.name}
          {list && list.length > 0 && (
            <span id="snapshots-summary" className="muted">
              {" "}
              — {list.length} ({bytes(total)})
            </span>
          )}
        </h3>
        {failure && (
          <p id="snapshots-load-error" className="inline-error" role="alert">
            The snapshots could not be read: <strong>{failure.code}</strong> {failure.message}
          </p>
        )}
        {list === null ? (
          failure ? null : (
            <p className="muted" aria-busy="true">
              Reading snapshots…
            </p>
          )
        ) : list.length === 0 ? (
          <p id="snapshots-empty" className="muted">
            No snapshots of {instance.name} yet. A snapshot keeps a copy of the disks to go back to, or to fork into a new instance.
          </p>
        ) : (
          <table id="snapshots-table" aria-labelledby="snapshots-title">
            <thead>
              <tr>
                <th>Name</th>
                <th>Kind</th>
                <th className="num">Size</th>
                <th>Created</th>
                <th>Tags</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((s) => {
                const label = snapshotLabel(s);
                const whyId = `snapshot-restore-why-${s.id}`;
                const packed = compressionView(s);
                return (
                  <tr
                    key={s.id}
                    data-snapshot-id={s.id}
                    data-snapshot-name={s.name ?? ""}
                    tabIndex={-1}
                    className={shown === s.id ? "shown" : undefined}
                  >
                    <td className="snapshot-name">
                      {s.name ? <span>{s.name}</span> : <span className="muted">unnamed</span>} <code className="muted" title={s.id}>{s.id.slice(0, 8)}</code>
                      {isScheduled(s) && (
                        <span className="scheduled-mark" data-field="scheduled" title="Taken by the snapshot schedule">
                          scheduled
                        </span>
                      )}
                    </td>
                    <td data-field="kind" data-kind={s.kind}>
                      {kindText(s.kind)}
                    </td>
                    <td className="num" data-field="size" title={`${s.size_bytes} bytes`}>
                      {bytes(s.size_bytes)}
                      {packed && (
                        <span
                          className={packed.state === "error" ? "compression bad" : packed.state === "compressing" ? "compression muted" : "compression"}
                          data-field="compression"
                          data-state={packed.state}
                          aria-busy={packed.state === "compressing" ? "true" : undefined}
                          title={packed.title}
                        >
                          {packed.text}
                          {packed.detail && <span className="sr-only">: {packed.detail}</span>}
                        </span>
                      )}
                    </td>
                    <td data-field="created_at">
                      {when(s.created_at)} <span className="muted">({duration(s.created_at, now)} ago)</span>
                    </td>
                    <td className="tags" data-field="tags">
                      {tagLabels(userTags(s.tags)).map((t) => (
                        <span key={t} className="tag">
                          {t}
                        </span>
                      ))}
                    </td>
                    <td className="row-actions">
                      {restoreWhy && (
                        <span id={whyId} className="sr-only">
                          {restoreWhy}
                        </span>
                      )}
                      <button
                        type="button"
                        data-action="restore-snapshot"
                        disabled={restoreWhy !== null}
                        aria-label={`Restore ${instance.name} to snapshot ${label}`}
                        aria-describedby={restoreWhy ? whyId : undefined}
                        title={restoreWhy ?? "Put the disks back to this point"}
                        onClick={() => setQuestion({ kind: "restore", snapshot: s })}
                      >
                        Restore
                      </button>
                      <button
                        type="button"
                        data-action="fork-snapshot"
                        aria-label={`Fork snapshot ${label} into a new instance`}
                        title="A new instance from this snapshot"
                        onClick={() => setQuestion({ kind: "fork", snapshot: s })}
                      >
                        Fork
                      </button>
                      <button
                        type="button"
                        className="danger"
                        data-action="delete-snapshot"
                        disabled={deleting === s.id}
                        aria-label={`Delete snapshot ${label}`}
                        onClick={() => setQuestion({ kind: "delete", snapshot: s })}
                      >
                        {deleting === s.id ? "Deleting…" : "Delete"}
                      </button>
                      {rowError?.id === s.id && (
                        <span className="inline-error snapshot-row-error" role="alert">
                          {rowError.message}
                        </span>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </section>
      <ScheduleCard api={api} instance={instance} visible={visible} now={now} snapshots={list} onNote={setNote} onShow={showRow} />

      {question?.kind === "restore" && (
        <RestoreDialog
          api={api}
          instance={instance}
          snapshot={question.snapshot}
          onClose={() => setQuestion(null)}
          onRestored={(target) => {
            setQuestion(null);
            setNote(`Restored ${instance.name} to ${called(question.snapshot)}; it is ${target} now`);
            onChanged();
            void reload();
          }}
        />
      )}
      {question?.kind === "fork" && (
        <ForkDialog
          api={api}
          source={{ kind: "snapshot", snapshot: question.snapshot }}
          taken={instances.map((i) => i.name)}
          onClose={() => setQuestion(null)}
          onForked={(fork) => {
            setQuestion(null);
            onOpen(fork.id);
          }}
        />
      )}
      {question?.kind === "delete" && (
        <ConfirmDialog
          id="snapshot-delete-confirm"
          title={`Delete snapshot ${snapshotLabel(question.snapshot)}?`}
          confirmLabel="Delete snapshot"
          danger
          onCancel={() => setQuestion(null)}
          onConfirm={() => {
            const s = question.snapshot;
            setQuestion(null);
            void remove(s);
          }}
        >
          <p>
            Its copy of the disks ({bytes(question.snapshot.size_bytes)}) is removed; this cannot be undone. {instance.name} and instances forked from it
            are not affected.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}
