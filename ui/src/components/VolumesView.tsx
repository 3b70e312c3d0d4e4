// Volumes on the engine: a form that creates one (empty, or filled from a .tar.gz), and the
// list with what each is attached to (each attachment with Detach); an attached volume cannot
// be deleted.
import { useCallback, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";
import { buildVolumeParams } from "../forms";
import { usePolled } from "../hooks";
import { shortId, volumeDeletion, when, type Volume } from "../model";

type VolumeAttachment = NonNullable<Volume["attachments"]>[number];

/** Uploading an archive can take a while; the client's default is 10 s. */
const ARCHIVE_TIMEOUT_MS = 10 * 60_000;

/** One attachment of a volume, with Detach (the API says when the instance cannot: 409 inline). */
function Attachment({ api, volume, attachment: a, onDetached }: { api: Hypeman; volume: Volume; attachment: VolumeAttachment; onDetached: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Problem | null>(null);
  const errorId = `attachment-error-${volume.id}-${a.instance_id}`;
  const detach = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await api.instances.volumes.detach(volume.id, { id: a.instance_id });
      onDetached();
    } catch (e) {
      setError(problem(e, ""));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li data-instance-id={a.instance_id}>
      <span>
        <a href={`#/instances/${encodeURIComponent(a.instance_id)}`} title={a.instance_id}>
          {shortId(a.instance_id)}
        </a>{" "}
        → <code>{a.mount_path}</code> <span className="muted">{a.readonly ? "ro" : "rw"}</span>
      </span>
      <button
        type="button"
        data-action="detach-volume"
        disabled={busy}
        aria-label={`Detach ${volume.name} from instance ${shortId(a.instance_id)} (${a.mount_path})`}
        aria-describedby={error ? errorId : undefined}
        title="Running or stopped instances only; a running guest unmounts it first"
        onClick={() => void detach()}
      >
        {busy ? "Detaching…" : "Detach"}
      </button>
      {error && (
        <span id={errorId} className="inline-error" role="alert">
          {error.message} ({error.code})
        </span>
      )}
    </li>
  );
}

function VolumeRow({
  api,
  volume,
  error,
  onChanged,
  onError,
}: {
  api: Hypeman;
  volume: Volume;
  /** The last delete of this volume failed with this. */
  error: Problem | null;
  onChanged: () => void;
  onError: (p: Problem | null) => void;
}) {
  const [busy, setBusy] = useState(false);
  const attachments = volume.attachments ?? [];
  const can = volumeDeletion(volume);

  const remove = async (): Promise<void> => {
    if (!window.confirm(`Delete volume ${volume.name}? Its data is removed.`)) return;
    onError(null);
    setBusy(true);
    try {
      await api.volumes.delete(volume.id);
      onChanged();
    } catch (e) {
      onError(problem(e, ""));
    } finally {
      setBusy(false);
    }
  };

  return (
    <tr data-volume-id={volume.id} data-volume-name={volume.name}>
      <td>{volume.name}</td>
      <td>
        <code>{volume.id}</code>
      </td>
      <td className="num">{volume.size_gb} GB</td>
      <td>
        {attachments.length ? (
          <ul className="attachments">
            {attachments.map((a) => (
              <Attachment key={`${a.instance_id}:${a.mount_path}`} api={api} volume={volume} attachment={a} onDetached={onChanged} />
            ))}
          </ul>
        ) : (
          <span className="muted">not attached</span>
        )}
      </td>
      <td>{when(volume.created_at)}</td>
      <td className="row-actions">
        <span className="action-wrap" title={can.reason}>
          <button
            type="button"
            className="danger"
            data-action="delete-volume"
            disabled={!can.enabled || busy}
            aria-label={`Delete volume ${volume.name}`}
            title={can.reason}
            onClick={() => void remove()}
          >
            {busy ? "Deleting…" : "Delete"}
          </button>
        </span>
        {error && (
          <span id="volume-delete-error" className="inline-error" role="alert">
            {error.message} ({error.code})
          </span>
        )}
      </td>
    </tr>
  );
}

export function VolumesView({ api }: { api: Hypeman }) {
  const [name, setName] = useState("");
  const [size, setSize] = useState("1");
  const [archive, setArchive] = useState<File | null>(null);
  // Bumped to clear the file input (a file input cannot be set from state).
  const [fileKey, setFileKey] = useState(0);
  const [createError, setCreateError] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  // One delete error at a time, on the row it is about.
  const [deleteError, setDeleteError] = useState<{ id: string; problem: Problem } | null>(null);

  const list = useCallback(() => api.volumes.list(), [api]);
  const { value: volumes, failure, reload: load } = usePolled(list, 3000);

  const create = async (): Promise<void> => {
    const { params, error } = buildVolumeParams({ name, sizeGb: size, archive });
    setCreateError(error);
    if (!params) return;
    setCreating(true);
    try {
      if (archive) await api.volumes.createFromArchive(archive, params, { timeout: ARCHIVE_TIMEOUT_MS });
      else await api.volumes.create(params);
      setName("");
      setArchive(null);
      setFileKey((k) => k + 1);
      void load();
    } catch (e) {
      const p = problem(e, "");
      setCreateError(`${p.message} (${p.code})`);
    } finally {
      setCreating(false);
    }
  };

  return (
    <section id="volumes-view" aria-label="Volumes">
      <form
        id="volume-form"
        className="toolbar"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void create();
        }}
      >
        <input id="volume-name" value={name} placeholder="data" aria-label="Volume name" spellCheck={false} onChange={(e) => setName(e.target.value)} />
        <label>
          <input id="volume-size" type="number" min={1} step={1} inputMode="numeric" value={size} aria-label="Size in GB" onChange={(e) => setSize(e.target.value)} /> GB
        </label>
        <label title="Optional: fill the volume from a .tar.gz archive">
          From archive
          <input
            key={fileKey}
            id="volume-archive"
            type="file"
            accept=".tar.gz,.tgz,application/gzip"
            aria-label="Archive to fill the volume from (.tar.gz)"
            onChange={(e) => setArchive(e.target.files?.[0] ?? null)}
          />
        </label>
        <button id="volume-create" type="submit" className="primary" disabled={creating}>
          {creating ? (archive ? "Uploading…" : "Creating…") : "Create volume"}
        </button>
        {createError && (
          <span id="volume-error" className="inline-error" role="alert">
            {createError}
          </span>
        )}
      </form>
      {failure && (
        <p id="volumes-load-error" className="inline-error" role="alert">
          <strong>{failure.code}</strong> {failure.message}
        </p>
      )}
      {volumes === null ? (
        <p className="empty" aria-busy="true">
          Loading volumes…
        </p>
      ) : volumes.length === 0 ? (
        <p className="empty">No volumes yet. Create one above, then mount it from the New instance dialog.</p>
      ) : (
        <table id="volumes-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>ID</th>
              <th className="num">Size</th>
              <th>Attachments</th>
              <th>Created</th>
              <th aria-label="Actions" />
            </tr>
          </thead>
          <tbody>
            {volumes.map((v) => (
              <VolumeRow
                key={v.id}
                api={api}
                volume={v}
                error={deleteError?.id === v.id ? deleteError.problem : null}
                onChanged={() => void load()}
                onError={(p) => setDeleteError(p && { id: v.id, problem: p })}
              />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
