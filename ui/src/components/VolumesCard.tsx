// The instance page's Volumes card: what is mounted where (by name when the volume list has it),
// Detach per mount, and a form that attaches another volume. Both work on a running instance
// (the guest mounts or unmounts at once) or a stopped one (at its next start); the API's refusals
// (a path it does not take, a volume in use in the guest) show next to what they are about.
import { useCallback, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";
import { usePolled } from "../hooks";
import type { Instance } from "../model";
import {
  attachChoices,
  attachErrorField,
  attachParams,
  detachAvailability,
  firstOffered,
  mountMode,
  volumeChanges,
  volumeName,
  type AttachField,
  type VolumeMount,
} from "../volumes";

/** How often the volume list (names, other instances' attachments) is read again. */
const VOLUMES_MS = 5000;

/** `record` without `key`. */
function without<T>(record: Readonly<Record<string, T>>, key: string): Record<string, T> {
  const next = { ...record };
  delete next[key];
  return next;
}

interface Props {
  api: Hypeman;
  instance: Instance;
  /** After an attach or a detach: the page reads the instance again. */
  onChanged: () => void;
}

export function VolumesCard({ api, instance, onChanged }: Props) {
  const list = useCallback(() => api.volumes.list(), [api]);
  const { value: volumes, failure, reload } = usePolled(list, VOLUMES_MS);
  // The instance the last attach or detach answered with, until the page's own copy changes.
  const [fresh, setFresh] = useState<{ basis: Instance; mounts: VolumeMount[] } | null>(null);
  const mounts = fresh && fresh.basis === instance ? fresh.mounts : (instance.volumes ?? []);
  const shown: Pick<Instance, "id" | "volumes"> = { id: instance.id, volumes: mounts };
  const [note, setNote] = useState("");
  const heading = useRef<HTMLHeadingElement>(null);

  const changes = volumeChanges(instance.state);
  const [detaching, setDetaching] = useState<ReadonlySet<string>>(new Set());
  const [detachErrors, setDetachErrors] = useState<Readonly<Record<string, Problem>>>({});

  const changed = (answer: Instance, said: string): void => {
    setFresh({ basis: instance, mounts: answer.volumes ?? [] });
    setNote(said);
    void reload();
    onChanged();
  };

  const detach = async (mount: VolumeMount, label: string): Promise<void> => {
    const id = mount.volume_id;
    setDetaching((s) => new Set(s).add(id));
    setDetachErrors((errors) => without(errors, id));
    setNote("");
    try {
      const answer = await api.instances.volumes.detach(id, { id: instance.id });
      changed(answer, `Detached ${label} from ${mount.mount_path}.`);
      // Its row (and button) is gone: the focus goes back to the card.
      heading.current?.focus();
    } catch (e) {
      setDetachErrors((errors) => ({ ...errors, [id]: problem(e, "") }));
    } finally {
      setDetaching((s) => {
        const next = new Set(s);
        next.delete(id);
        return next;
      });
    }
  };

  return (
    <div className="card" id="volumes-card">
      <h3 id="volumes-heading" ref={heading} tabIndex={-1}>
        Volumes
      </h3>
      {mounts.length ? (
        <ul className="volume-mounts" id="volume-mounts">
          {mounts.map((m) => {
            const name = volumeName(volumes, m.volume_id);
            const label = name ?? m.volume_id;
            const can = detachAvailability(m, instance.state);
            const busy = detaching.has(m.volume_id);
            const error = detachErrors[m.volume_id];
            const errorId = `volume-detach-error-${m.volume_id}`;
            return (
              <li key={`${m.volume_id}:${m.mount_path}`} className="volume-mount" data-volume-id={m.volume_id} data-mount-path={m.mount_path}>
                <span className="volume-mount-what">
                  {name && <strong className="volume-mount-name">{name}</strong>} <code title="Volume ID">{m.volume_id}</code> → <code data-field="mount_path">{m.mount_path}</code>{" "}
                  <span className="muted" data-field="mode">
                    ({mountMode(m)})
                  </span>
                </span>
                {changes.enabled && (
                  <span className="action-wrap" title={can.reason}>
                    <button
                      type="button"
                      data-action="detach-volume"
                      disabled={!can.enabled || busy}
                      aria-label={`Detach ${label} from ${m.mount_path}`}
                      aria-describedby={error ? errorId : undefined}
                      title={can.reason}
                      onClick={() => void detach(m, label)}
                    >
                      {busy ? "Detaching…" : "Detach"}
                    </button>
                  </span>
                )}
                {error && (
                  <span id={errorId} className="inline-error volume-detach-error" role="alert">
                    {error.message} ({error.code})
                  </span>
                )}
              </li>
            );
          })}
        </ul>
      ) : (
        <p className="muted" id="volumes-none">
          No volumes.
        </p>
      )}
      {!changes.enabled ? (
        <p className="hint" id="volumes-why">
          {changes.reason}
        </p>
      ) : failure && volumes === null ? (
        <p className="inline-error" id="volumes-load-error" role="alert">
          Cannot list the volumes to attach: {failure.message} ({failure.code})
        </p>
      ) : volumes === null ? (
        <p className="muted" aria-busy="true">
          Reading volumes…
        </p>
      ) : volumes.length === 0 ? (
        <p className="hint" id="volumes-empty">
          There are no volumes on this engine yet. Create one in the <a href="#/volumes">Volumes view</a>, then attach it here.
        </p>
      ) : (
        <AttachForm
          api={api}
          instance={instance}
          choices={attachChoices(volumes, shown)}
          hint={changes.reason}
          onAttached={(answer, label, path) => changed(answer, `Attached ${label} at ${path}${instance.state === "Stopped" ? "; it is mounted at the next start" : ""}.`)}
          onStart={() => setNote("")}
        />
      )}
      <p id="volumes-status" className="success volumes-status" role="status" aria-live="polite">
        {note}
      </p>
    </div>
  );
}

function AttachForm({
  api,
  instance,
  choices,
  hint,
  onAttached,
  onStart,
}: {
  api: Hypeman;
  instance: Instance;
  choices: ReturnType<typeof attachChoices>;
  hint: string;
  onAttached: (answer: Instance, label: string, path: string) => void;
  onStart: () => void;
}) {
  const [picked, setPicked] = useState("");
  const [path, setPath] = useState("");
  const [readonly, setReadonly] = useState(false);
  const [attaching, setAttaching] = useState(false);
  const [error, setError] = useState<{ field: AttachField; message: string } | null>(null);
  const pathInput = useRef<HTMLInputElement>(null);
  const volumeSelect = useRef<HTMLSelectElement>(null);

  // The picked volume while it is still offered, else the first one that is.
  const selected = choices.some((c) => c.id === picked && c.offered) ? picked : firstOffered(choices);
  const choice = choices.find((c) => c.id === selected);
  const readOnlyOnly = choice?.readOnlyOnly ?? false;
  const offered = choices.some((c) => c.offered);

  if (!offered) {
    return (
      <p className="hint" id="volumes-none-free">
        {choices.length === 0
          ? "Every volume on this engine is attached here already. "
          : "No other volume can be attached: each is attached read-write to another instance. "}
        Create another in the <a href="#/volumes">Volumes view</a>.
      </p>
    );
  }

  const submit = async (): Promise<void> => {
    const built = attachParams(instance.id, { volumeId: selected, mountPath: path, readonly }, choices);
    if ("error" in built) {
      setError(built.error);
      (built.error.field === "volume" ? volumeSelect : pathInput).current?.focus();
      return;
    }
    setError(null);
    onStart();
    setAttaching(true);
    try {
      const answer = await api.instances.volumes.attach(built.volumeId, built.params);
      setPath("");
      setReadonly(false);
      onAttached(answer, choice?.name ?? built.volumeId, built.params.mount_path);
    } catch (e) {
      const p = problem(e, "");
      const field = attachErrorField(p);
      setError({ field, message: `${p.message} (${p.code})` });
      if (field === "mount_path") pathInput.current?.focus();
    } finally {
      setAttaching(false);
    }
  };

  const invalid = (field: AttachField): boolean => error?.field === field;
  return (
    <form
      id="volume-attach-form"
      className="volume-attach"
      aria-labelledby="volume-attach-heading"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <h4 id="volume-attach-heading">Attach volume</h4>
      <div className="volume-attach-fields">
        <div className={invalid("volume") ? "field invalid" : "field"}>
          <label>
            <span className="label">Volume</span>
            <select
              id="volume-attach-volume"
              ref={volumeSelect}
              value={selected}
              aria-invalid={invalid("volume") ? "true" : "false"}
              aria-describedby={invalid("volume") ? "volume-attach-error" : undefined}
              onChange={(e) => {
                setPicked(e.target.value);
                if (error?.field === "volume") setError(null);
              }}
            >
              {choices.map((c) => (
                <option key={c.id} value={c.id} disabled={!c.offered}>
                  {c.label}
                </option>
              ))}
            </select>
          </label>
        </div>
        <div className={invalid("mount_path") ? "field invalid" : "field"}>
          <label>
            <span className="label">Mount path</span>
            <input
              id="volume-attach-path"
              ref={pathInput}
              value={path}
              placeholder="/mnt/data"
              required
              spellCheck={false}
              autoComplete="off"
              aria-invalid={invalid("mount_path") ? "true" : "false"}
              aria-describedby={invalid("mount_path") ? "volume-attach-error" : undefined}
              onChange={(e) => {
                setPath(e.target.value);
                if (error?.field === "mount_path") setError(null);
              }}
            />
          </label>
        </div>
        <label className="check" title={readOnlyOnly ? "Shared read-only with another instance: it can join only read-only" : undefined}>
          <input
            id="volume-attach-readonly"
            type="checkbox"
            checked={readonly || readOnlyOnly}
            disabled={readOnlyOnly}
            aria-describedby={readOnlyOnly ? "volume-attach-ro-why" : undefined}
            onChange={(e) => setReadonly(e.target.checked)}
          />
          Read-only
        </label>
        <button id="volume-attach-submit" type="submit" className="primary" disabled={attaching}>
          {attaching ? "Attaching…" : "Attach"}
        </button>
      </div>
      <p className="hint" id="volume-attach-hint">
        {hint}
        {readOnlyOnly && (
          <span id="volume-attach-ro-why"> This volume is shared read-only with another instance, so it joins read-only.</span>
        )}
      </p>
      {error && (
        <p id="volume-attach-error" className="inline-error" role="alert" data-field={error.field}>
          {error.message}
        </p>
      )}
    </form>
  );
}
