// Images on the engine, with a pull form; pulls in flight show their progress.
import { useCallback, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem } from "../api";
import { usePolled } from "../hooks";
import { bytes, when } from "../model";
import { PullProgress } from "./CreateDialog";
import type { Image } from "./images";

export function ImagesView({ api }: { api: Hypeman }) {
  const [name, setName] = useState("");
  const [pullError, setPullError] = useState<string | null>(null);
  const list = useCallback(async () => (await api.images.list()) as Image[], [api]);
  // Pulls in flight are followed closely, so their progress moves.
  const { value: images, failure, reload: load } = usePolled(list, (all) =>
    all?.some((i) => i.status !== "ready" && i.status !== "failed") ? 500 : 3000,
  );

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

  return (
    <section id="images-view" aria-label="Images">
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void startPull();
        }}
      >
        <input id="pull-name" value={name} placeholder="docker.io/library/alpine:latest" aria-label="Image to pull" spellCheck={false} onChange={(e) => setName(e.target.value)} />
        <button id="pull-submit" type="submit" className="primary" disabled={name.trim() === ""}>
          Pull
        </button>
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
        <p className="empty" aria-busy="true">
          Loading images…
        </p>
      ) : images.length === 0 ? (
        <p className="empty">No images yet. Pull one above, or create an instance and its image is pulled for you.</p>
      ) : (
        <table id="images-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Status</th>
              <th className="num">Size</th>
              <th>Digest</th>
              <th>Pulled</th>
            </tr>
          </thead>
          <tbody>
            {images.map((i) => (
              <tr key={i.name} data-image={i.name}>
                <td>{i.name}</td>
                <td>{i.status === "ready" || i.status === "failed" ? <span title={i.error ?? ""}>{i.status}</span> : <PullProgress image={i} />}</td>
                <td className="num">{bytes(i.size_bytes)}</td>
                <td>
                  <code title={i.digest}>{i.digest.slice(0, 19)}</code>
                </td>
                <td>{when(i.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
