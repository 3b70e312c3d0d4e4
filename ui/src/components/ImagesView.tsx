// Images on the engine, with a pull form; pulls in flight show their bytes and percent. Each
// image says how many instances use it (from the instance list), runs (the create form with
// that image) and deletes after a question that names the instances using it. Below, the VM
// templates instances start from (Hypedeck engines only): shape, status, starts, size, delete.
import { useCallback, useMemo, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { deleteTemplate, problem, templates as listTemplates } from "../api";
import { imageUsage, normalizeImage, pullProgress, usageText } from "../fleet";
import { usePolled } from "../hooks";
import { bytes, shortId, templateShape, when, type Instance, type Template } from "../model";
import { ConfirmDialog } from "./common";
import type { Image } from "./images";

/** A pull in flight: its status, bytes so far of the total and the percent (when the engine says), and a bar. */
function PullStatus({ image }: { image: Image }) {
  const p = pullProgress(image.bytes_done, image.bytes_total);
  return (
    <div className="pull" data-status={image.status}>
      <span className="pull-text">
        {image.status}
        {image.queue_position ? ` (queue ${image.queue_position})` : ""}
        {p.text ? ` — ${p.text}` : ""}
      </span>
      {/* No value: an indeterminate bar, for a pull whose size the engine does not report. */}
      <progress max={100} value={p.percent ?? undefined} aria-label={`Pull of ${image.name}`} aria-valuetext={p.text || image.status} />
    </div>
  );
}

/**
 * The engine's VM templates. Hidden on servers without them (upstream Hypeman). A template is
 * cheap to make again, so Delete asks nothing.
 */
function TemplatesSection({ api }: { api: Hypeman }) {
  const list = useCallback(() => listTemplates(api), [api]);
  const { value, failure, reload } = usePolled(list, (all) => (all?.some((t) => t.status === "building") ? 1000 : 5000));
  const [deleting, setDeleting] = useState<string | null>(null);
  const [rowError, setRowError] = useState<{ id: string; text: string } | null>(null);
  if (value === null && !failure) return null;
  const remove = async (t: Template): Promise<void> => {
    setDeleting(t.id);
    setRowError(null);
    try {
      await deleteTemplate(api, t.id);
      await reload();
    } catch (e) {
      const p = problem(e, "");
      setRowError({ id: t.id, text: `${p.code}: ${p.message}` });
    } finally {
      setDeleting(null);
    }
  };
  return (
    <section id="templates" aria-labelledby="templates-title">
      <h2 id="templates-title">Templates</h2>
      <p className="hint" id="templates-hint">
        A template is a VM of one image and shape, booted until it waits for its configuration and saved. Instances of that shape start from it
        instead of booting, sharing its unchanged memory. The first start of a shape makes one in the background; it never holds an instance&apos;s
        environment or credentials.
      </p>
      {failure && (
        <p className="inline-error" role="alert">
          <strong>{failure.code}</strong> {failure.message}
        </p>
      )}
      {value && value.length === 0 && <p className="empty">No templates yet. Start an instance and one is made for its image and shape.</p>}
      {value && value.length > 0 && (
        <table id="templates-table" aria-label="Templates" aria-describedby="templates-hint">
          <thead>
            <tr>
              <th>Image</th>
              <th>Shape</th>
              <th>Status</th>
              <th className="num">Starts</th>
              <th className="num">On disk</th>
              <th>Made</th>
              <th>
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {value.map((t) => (
              <tr key={t.id} data-template={t.id} data-status={t.status}>
                <td>
                  {t.image} <code title={t.id}>{shortId(t.id)}</code>
                </td>
                <td>{templateShape(t)}</td>
                <td>{t.status === "failed" ? <span title={t.error ?? ""}>failed: {t.error}</span> : t.status}</td>
                <td className="num">{t.starts}</td>
                <td className="num">{bytes(t.disk_bytes)}</td>
                <td>
                  {when(t.created_at)}
                  {t.build_ms !== undefined ? ` (${(t.build_ms / 1000).toFixed(1)} s)` : ""}
                </td>
                <td className="row-actions">
                  {t.status !== "building" && (
                    <button
                      type="button"
                      data-template-action="delete"
                      className="danger"
                      disabled={deleting !== null}
                      aria-label={`Delete the template of ${t.image} (${templateShape(t)})`}
                      onClick={() => void remove(t)}
                    >
                      {deleting === t.id ? "Deleting…" : "Delete"}
                    </button>
                  )}
                  {rowError?.id === t.id && (
                    <span className="inline-error" role="alert">
                      {rowError.text}
                    </span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function ImagesView({
  api,
  instances,
  instancesLoaded,
  onRun,
}: {
  api: Hypeman;
  /** The instance list, to say which images are in use. */
  instances: readonly Instance[];
  instancesLoaded: boolean;
  /** Opens the create form with this image. */
  onRun: (image: string) => void;
}) {
  const [name, setName] = useState("");
  const [pullError, setPullError] = useState<string | null>(null);
  const [asking, setAsking] = useState<Image | null>(null);
  const [deleting, setDeleting] = useState<string | null>(null);
  const [rowError, setRowError] = useState<{ image: string; text: string } | null>(null);
  const list = useCallback(async () => (await api.images.list()) as Image[], [api]);
  // Pulls in flight are followed closely, so their progress moves.
  const { value: images, failure, reload: load } = usePolled(list, (all) =>
    all?.some((i) => i.status !== "ready" && i.status !== "failed") ? 500 : 3000,
  );
  const uses = useMemo(() => imageUsage(instances), [instances]);
  const usersOf = (image: Image): Instance[] => instances.filter((i) => normalizeImage(i.image) === normalizeImage(image.name));

  const startPull = async (): Promise<void> => {
    setPullError(null);
    try {
      await api.images.create({ name: name.trim() });
      setName("");
      void load();
    } catch (e) {
      const p = problem(e, "");
      setPullError(`${p.message} (${p.code})`);
    }
  };

  const remove = async (image: Image): Promise<void> => {
    setDeleting(image.name);
    setRowError(null);
    try {
      await api.images.delete(image.name);
      await load();
    } catch (e) {
      const p = problem(e, "");
      setRowError({ image: image.name, text: `${p.code}: ${p.message}` });
    } finally {
      setDeleting(null);
    }
  };

  const asked = asking ? usersOf(asking) : [];
  return (
    <section id="images-view" aria-label="Images">
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void startPull();
        }}
      >
        <input
          id="pull-name"
          value={name}
          placeholder="docker.io/library/alpine:latest"
          aria-label="Image to pull"
          aria-describedby="pull-hint"
          spellCheck={false}
          onChange={(e) => setName(e.target.value)}
        />
        <button id="pull-submit" type="submit" className="primary" disabled={name.trim() === ""} aria-describedby="pull-hint">
          Pull
        </button>
        <span id="pull-hint" className="hint">
          {name.trim() === "" ? "Type an image reference to pull it." : "Pulled on the engine's machine."}
        </span>
        {pullError && (
          <span className="inline-error" role="alert">
            {pullError}
          </span>
        )}
      </form>
      {failure && (
        <p className="inline-error" role="alert">
          <strong>{failure.code}</strong> {failure.message}
        </p>
      )}
      {images === null ? (
        failure ? null : (
          <p className="empty" aria-busy="true">
            Loading images…
          </p>
        )
      ) : images.length === 0 ? (
        <p className="empty">No images yet. Pull one above, or create an instance and its image is pulled for you.</p>
      ) : (
        <table id="images-table" aria-label="Images">
          <thead>
            <tr>
              <th>Name</th>
              <th>Status</th>
              <th className="num">Size</th>
              <th>Digest</th>
              <th>Pulled</th>
              <th>Used by</th>
              <th>
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {images.map((i) => {
              const n = uses.get(normalizeImage(i.name)) ?? 0;
              const ready = i.status === "ready";
              const whyId = `image-run-why-${i.digest || i.name}`.replace(/[^a-zA-Z0-9_-]/g, "-");
              return (
                <tr key={i.name} data-image={i.name}>
                  <td>{i.name}</td>
                  <td>{ready || i.status === "failed" ? <span title={i.error ?? ""}>{i.status}</span> : <PullStatus image={i} />}</td>
                  <td className="num">{bytes(i.size_bytes)}</td>
                  <td>
                    <code title={i.digest}>{i.digest.slice(0, 19)}</code>
                  </td>
                  <td>{when(i.created_at)}</td>
                  <td className="usage" data-uses={instancesLoaded ? n : undefined}>
                    {instancesLoaded ? usageText(n) : "…"}
                  </td>
                  <td className="row-actions image-actions">
                    {!ready && (
                      <span id={whyId} className="sr-only">
                        Only a ready image runs
                      </span>
                    )}
                    <button
                      type="button"
                      data-image-action="run"
                      className="primary"
                      disabled={!ready}
                      aria-describedby={ready ? undefined : whyId}
                      aria-label={`Run ${i.name}`}
                      onClick={() => onRun(i.name)}
                    >
                      Run
                    </button>
                    <button
                      type="button"
                      data-image-action="delete"
                      className="danger"
                      disabled={deleting !== null}
                      aria-label={`Delete ${i.name}`}
                      onClick={() => setAsking(i)}
                    >
                      {deleting === i.name ? "Deleting…" : "Delete"}
                    </button>
                    {rowError?.image === i.name && (
                      <span className="inline-error" role="alert">
                        {rowError.text}
                      </span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {asking && (
        <ConfirmDialog
          id="image-delete-confirm"
          title={`Delete ${asking.name}?`}
          confirmLabel="Delete image"
          danger
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            const image = asking;
            setAsking(null);
            void remove(image);
          }}
        >
          {asked.length > 0 ? (
            <p id="image-delete-users">
              {usageText(asked.length).replace(/^in use/, "It is in use")}: {asked.map((i) => i.name).join(", ")}. Creating another instance from it pulls it again.
            </p>
          ) : (
            <p id="image-delete-users">No instance uses it. Creating an instance from it later pulls it again.</p>
          )}
        </ConfirmDialog>
      )}
      <TemplatesSection api={api} />
    </section>
  );
}
