// Settings: the create form's defaults and the theme (everywhere); the data dir, the guest
// kernel source and the API listen address (desktop app: they apply when it restarts); and API
// token rotation (this computer's engine). Each bad field gets its error next to it.
import { useEffect, useState, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";
import { inDesktop } from "../desktop";
import { applyTheme, HYPERVISORS, loadSettings, saveSettings, SettingsError, type Settings, type SettingsView as View, type Theme } from "../prefs";
import { FormRow } from "./common";

function Field({ label, field, errors, hint, children }: { label: string; field: string; errors: Record<string, string>; hint?: ReactNode; children: ReactNode }) {
  return (
    <FormRow label={label} field={field} message={errors[field]} hint={hint}>
      {children}
    </FormRow>
  );
}

export function SettingsView({
  api,
  canRotate,
  onSaved,
  onToken,
}: {
  api: Hypeman;
  /** Whether the token of the engine shown may be rotated here (this computer's, not a remote's). */
  canRotate: boolean;
  onSaved: (s: Settings) => void;
  onToken: (token: string) => void;
}) {
  const desktop = inDesktop();
  const [view, setView] = useState<View | null>(null);
  const [draft, setDraft] = useState<Settings | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [failure, setFailure] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  const [rotation, setRotation] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);

  useEffect(() => {
    loadSettings().then(
      (v) => {
        setView(v);
        setDraft(v.settings);
      },
      (e: unknown) => setFailure(e instanceof Error ? e.message : String(e)),
    );
  }, []);

  if (!draft) {
    return (
      <section id="settings" className="settings card">
        <h2>Settings</h2>
        {failure ? <p className="alert bad">{failure}</p> : <p className="muted">Loading…</p>}
      </section>
    );
  }
  const set = <K extends keyof Settings>(k: K, v: Settings[K]): void => {
    setSaved(false);
    setDraft((d) => (d ? { ...d, [k]: v } : d));
    if (k === "theme") applyTheme(v as Theme);
  };
  const text = (k: "default_memory" | "data_dir" | "kernel_deb" | "listen" | "console_log_max") => ({
    id: `settings-${k.replaceAll("_", "-")}`,
    value: draft[k] ?? "",
    onChange: (e: { target: { value: string } }) => set(k, e.target.value || undefined),
  });

  const save = (): void => {
    setBusy(true);
    setErrors({});
    setFailure(null);
    saveSettings(draft)
      .then((v) => {
        setView(v);
        setDraft(v.settings);
        setSaved(true);
        onSaved(v.settings);
      })
      .catch((e: unknown) => {
        if (e instanceof SettingsError && e.fields.length > 0) {
          setErrors(Object.fromEntries(e.fields.map((f) => [f.field, f.message])));
        } else {
          setFailure(e instanceof Error ? e.message : String(e));
        }
      })
      .finally(() => setBusy(false));
  };

  const rotate = (): void => {
    setConfirming(false);
    setRotation(null);
    api
      .post<{ token: string }>("/system/token/rotate")
      .then((r) => {
        onToken(r.token);
        setRotation({ ok: true, text: "A new API token is in effect; the old one no longer works. This window switched to it." });
      })
      .catch((e: unknown) => {
        const p: Problem = problem(e, "");
        setRotation({ ok: false, text: `${p.code}: ${p.message}` });
      });
  };

  return (
    <section id="settings" className="settings">
      <form
        className="card"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          save();
        }}
      >
        <h2>Settings</h2>
        {view?.load_error && (
          <p id="settings-load-error" className="alert warn">
            The settings file could not be read, so the defaults are in use: {view.load_error}
          </p>
        )}
        <h3>New instances</h3>
        <Field label="Default backend" field="default_hypervisor" errors={errors} hint="Preselected in the create form; empty: the engine's default.">
          <select id="settings-default-hypervisor" value={draft.default_hypervisor ?? ""} onChange={(e) => set("default_hypervisor", e.target.value || undefined)}>
            <option value="">Engine default</option>
            {HYPERVISORS.map((h) => (
              <option key={h} value={h}>
                {h}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Default vCPUs" field="default_vcpus" errors={errors}>
          <input
            id="settings-default-vcpus"
            type="number"
            min={1}
            max={64}
            value={draft.default_vcpus ?? ""}
            onChange={(e) => set("default_vcpus", e.target.value === "" ? undefined : Number(e.target.value))}
          />
        </Field>
        <Field label="Default memory" field="default_memory" errors={errors} hint="A size like 1GB or 512MB.">
          <input {...text("default_memory")} placeholder="1GB" />
        </Field>
        <h3>Appearance</h3>
        <Field label="Theme" field="theme" errors={errors}>
          <select id="settings-theme" value={draft.theme} onChange={(e) => set("theme", e.target.value as Theme)}>
            <option value="system">Follow the system</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </Field>
        {desktop && (
          <>
            <h3>This computer (applies when Hypedeck restarts)</h3>
            <Field label="Data folder" field="data_dir" errors={errors} hint={`Instances, images and the guest kernel. In use now: ${view?.data_dir ?? "the default"}.`}>
              <input {...text("data_dir")} placeholder="the platform default" />
            </Field>
            <Field label="Guest kernel package" field="kernel_deb" errors={errors} hint="Used only when the app carries no kernel of its own. Empty: Debian's cloud kernel through apt. Otherwise the absolute path of a linux-image .deb.">
              <input {...text("kernel_deb")} placeholder="apt (linux-image-cloud)" />
            </Field>
            <Field label="API address" field="listen" errors={errors} hint="Where this computer's engine serves the Hypeman API. Empty: 127.0.0.1:4973, or any free port.">
              <input {...text("listen")} placeholder="127.0.0.1:4973" />
            </Field>
            <Field label="Console log size" field="console_log_max" errors={errors} hint="Past this size an instance's console log is moved to app.log.1 and started afresh, so a chatty guest cannot fill the disk. Empty: 64MB.">
              <input {...text("console_log_max")} placeholder="64MB" />
            </Field>
          </>
        )}
        {failure && (
          <p id="settings-error" className="alert bad" role="alert">
            {failure}
          </p>
        )}
        <div className="actions">
          <button id="settings-save" type="submit" className="primary" disabled={busy}>
            Save
          </button>
          {saved && (
            <span id="settings-saved" role="status">
              Saved{view?.restart_needed ? " — restart Hypedeck to use the new data folder, kernel or address." : "."}
            </span>
          )}
        </div>
        <p className="hint">Kept in {view?.path ?? "?"}.</p>
      </form>
      {canRotate && (
        <div className="card">
          <h3>API token</h3>
          <p className="muted">Rotating makes a new token and stops the old one at once. Clients of this engine need the new one (`hypedeck token`).</p>
          {confirming ? (
            <div className="actions">
              <button id="rotate-token-confirm" type="button" className="danger" onClick={rotate}>
                Rotate now
              </button>
              <button type="button" onClick={() => setConfirming(false)}>
                Cancel
              </button>
            </div>
          ) : (
            <button id="rotate-token" type="button" onClick={() => setConfirming(true)}>
              Rotate API token…
            </button>
          )}
          {rotation && (
            <p id="rotate-token-result" className={rotation.ok ? "notice" : "alert bad"} role="status">
              {rotation.text}
            </p>
          )}
        </div>
      )}
    </section>
  );
}
