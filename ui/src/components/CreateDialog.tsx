// Create an instance: image, name, size, env, tags, volumes, credentials (with a
// "Bearer ${value}" default) and network/egress. Our own checks and the API's errors show next to their field.
// The image is pulled first, with progress, then the instance is created.
import { useContext, useEffect, useRef, useState, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import { CREATE_TIMEOUT_MS, problem, type Problem } from "../api";
import { buildCreateBody, emptyCredential, emptyDraft, fieldOf, type CreateDraft, type CredentialDraft, type FieldErrors } from "../forms";
import { BackendsContext, SettingsContext } from "../hooks";
import { draftDefaults } from "../prefs";
import { backendFor, bytes, limitsOf, percent, type Instance } from "../model";
import { FieldError, FormRow } from "./common";
import { pullImage, type Image } from "./images";
import { KeychainPicker } from "./KeychainPicker";

function Row({ label, field, errors, children, hint }: { label: string; field: keyof FieldErrors; errors: FieldErrors; children: ReactNode; hint?: string }) {
  return (
    <FormRow label={label} field={field} message={errors[field]} hint={hint}>
      {children}
    </FormRow>
  );
}

export function PullProgress({ image }: { image: Image }) {
  const pct = percent(image.bytes_done, image.bytes_total);
  return (
    <div className="pull" data-status={image.status}>
      <span>
        {image.name}: {image.status}
        {image.queue_position ? ` (queue ${image.queue_position})` : ""}
        {image.bytes_total ? ` — ${bytes(image.bytes_done ?? 0)} of ${bytes(image.bytes_total)}` : ""}
      </span>
      <progress max={100} value={image.status === "ready" ? 100 : (pct ?? undefined)} aria-label={`Pull of ${image.name}`} />
    </div>
  );
}

export function CreateDialog({ api, onClose, onCreated }: { api: Hypeman; onClose: () => void; onCreated: (i: Instance) => void }) {
  const settings = useContext(SettingsContext);
  const [draft, setDraft] = useState<CreateDraft>(() => ({ ...emptyDraft(), ...draftDefaults(settings) }));
  const backends = useContext(BackendsContext);
  const backend = backendFor(backends, draft.hypervisor || undefined);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [busy, setBusy] = useState<"" | "pulling" | "creating">("");
  const [pull, setPull] = useState<Image | null>(null);
  const abort = useRef(new AbortController());
  const first = useRef<HTMLInputElement>(null);

  useEffect(() => {
    first.current?.focus();
    const controller = abort.current;
    return () => controller.abort();
  }, []);

  const set = <K extends keyof CreateDraft>(k: K, v: CreateDraft[K]): void => setDraft((d) => ({ ...d, [k]: v }));
  const setCred = (i: number, patch: Partial<CredentialDraft>): void =>
    setDraft((d) => ({ ...d, credentials: d.credentials.map((c, j) => (j === i ? { ...c, ...patch } : c)) }));
  const addCred = (): void =>
    setDraft((d) => ({ ...d, networkEnabled: true, egressEnabled: true, credentials: [...d.credentials, emptyCredential()] }));
  const removeCred = (i: number): void => setDraft((d) => ({ ...d, credentials: d.credentials.filter((_, j) => j !== i) }));

  const submit = async (): Promise<void> => {
    const { body, errors: local } = buildCreateBody(draft, backend);
    setErrors(local);
    if (!body) return;
    const show = (p: Problem): void => setErrors({ [fieldOf(p, draft)]: `${p.message} (${p.code})` });
    try {
      setBusy("pulling");
      await pullImage(api, body.image, setPull, abort.current.signal);
    } catch (e) {
      setBusy("");
      const p = problem(e, "");
      setErrors({ image: `${p.message} (${p.code})` });
      return;
    }
    try {
      setBusy("creating");
      const created = await api.instances.create(body, { timeout: CREATE_TIMEOUT_MS });
      onCreated(created);
    } catch (e) {
      show(problem(e, ""));
    } finally {
      setBusy("");
    }
  };

  return (
    <div className="overlay" role="presentation" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <form
        id="create-form"
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="create-title"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <h2 id="create-title">New instance</h2>
        <FieldError field="form" message={errors.form} />
        <div className="two">
          <Row label="Image" field="image" errors={errors} hint="An OCI reference; pulled first if it is not here yet.">
            <input id="create-image" ref={first} value={draft.image} placeholder="docker.io/library/alpine:latest" spellCheck={false} onChange={(e) => set("image", e.target.value)} />
          </Row>
          <Row label="Name" field="name" errors={errors}>
            <input id="create-name" value={draft.name} placeholder="my-agent" spellCheck={false} onChange={(e) => set("name", e.target.value)} />
          </Row>
        </div>
        {pull && <PullProgress image={pull} />}
        <div className="two">
          <Row label="vCPUs" field="vcpus" errors={errors}>
            <input id="create-vcpus" inputMode="numeric" value={draft.vcpus} placeholder="2" onChange={(e) => set("vcpus", e.target.value)} />
          </Row>
          <Row label="Memory" field="memory" errors={errors} hint="e.g. 512MB, 1GB">
            <input id="create-memory" value={draft.memory} placeholder="1GB" onChange={(e) => set("memory", e.target.value)} />
          </Row>
        </div>
        {backends && backends.length > 1 && (
          <Row label="Hypervisor" field="hypervisor" errors={errors} {...(backend && limitsOf(backend) ? { hint: limitsOf(backend) } : {})}>
            <select id="create-hypervisor" value={draft.hypervisor} onChange={(e) => set("hypervisor", e.target.value)}>
              {backends.map((b) => (
                <option key={b.kind} value={b.default ? "" : b.kind} disabled={!b.available} title={b.reason}>
                  {b.kind}
                  {b.default ? " (default)" : ""}
                  {b.available ? "" : ` — unavailable: ${b.reason ?? "not on this host"}`}
                </option>
              ))}
            </select>
          </Row>
        )}
        <Row label="Command" field="cmd" errors={errors} hint="Overrides the image's CMD, in shell words; empty keeps the image's.">
          <input id="create-cmd" value={draft.cmd} placeholder={"sh -c 'echo hello; sleep 3600'"} spellCheck={false} onChange={(e) => set("cmd", e.target.value)} />
        </Row>
        <Row label="Environment" field="env" errors={errors} hint="KEY=value, one per line">
          <textarea id="create-env" rows={3} spellCheck={false} value={draft.env} onChange={(e) => set("env", e.target.value)} />
        </Row>
        <Row label="Tags" field="tags" errors={errors} hint="key=value, comma separated">
          <input id="create-tags" value={draft.tags} placeholder="team=ml, purpose=agent" onChange={(e) => set("tags", e.target.value)} />
        </Row>
        <Row
          label="Volumes"
          field="volumes"
          errors={errors}
          hint="volume_id:/mount/path[:ro|:rw|:overlay=SIZE], comma or line separated; read-write by default, overlay is read-only with a private writable layer. e.g. data:/data:ro, cache:/cache:overlay=1GB"
        >
          <textarea
            id="create-volumes"
            rows={2}
            spellCheck={false}
            value={draft.volumes}
            placeholder="data:/data:ro"
            onChange={(e) => set("volumes", e.target.value)}
          />
        </Row>

        <fieldset className={errors.network ? "invalid" : ""}>
          <legend>Network</legend>
          <Row label="Forwarded ports" field="ports" errors={errors} hint="host:guest on 127.0.0.1, e.g. 8080:80, 5353:53/udp">
            <input id="create-ports" value={draft.ports} placeholder="8080:80" spellCheck={false} onChange={(e) => set("ports", e.target.value)} />
          </Row>
          <label className="check">
            <input id="create-network" type="checkbox" checked={draft.networkEnabled} onChange={(e) => set("networkEnabled", e.target.checked)} /> Network
          </label>
          <label className="check">
            <input
              id="create-egress"
              type="checkbox"
              checked={draft.egressEnabled}
              disabled={!draft.networkEnabled}
              onChange={(e) => set("egressEnabled", e.target.checked)}
            />{" "}
            Egress through the credential proxy
          </label>
          <label>
            <span className="label">Enforcement</span>
            <select id="create-egress-mode" value={draft.egressMode} disabled={!draft.egressEnabled} onChange={(e) => set("egressMode", e.target.value as CreateDraft["egressMode"])}>
              <option value="all">all traffic through the proxy</option>
              <option value="http_https_only">HTTP/HTTPS through the proxy</option>
            </select>
          </label>
          <FieldError field="network" message={errors.network} />
        </fieldset>

        <fieldset>
          <legend>Credentials</legend>
          <p className="hint">The guest sees <code>mock-KEY</code>; the proxy puts the real value into matching HTTPS requests.</p>
          {draft.credentials.map((c, i) => {
            const field = `credentials.${i}` as const;
            return (
              <div key={i} className={errors[field] ? "credential invalid" : "credential"} data-credential={i}>
                <div className="two">
                  <label>
                    <span className="label">Env var (guest)</span>
                    <input id={`cred-key-${i}`} value={c.key} placeholder="OPENAI_API_KEY" spellCheck={false} onChange={(e) => setCred(i, { key: e.target.value })} />
                  </label>
                  <label>
                    <span className="label" title="Or a reference the host resolves: op://vault/item/field, keychain:service/account, cmd:gh auth token">
                      Real value (or op://, keychain:, cmd: reference)
                    </span>
                    <input id={`cred-value-${i}`} type="password" autoComplete="off" value={c.value} onChange={(e) => setCred(i, { value: e.target.value })} />
                  </label>
                  <KeychainPicker api={api} id={`cred-keychain-${String(i)}`} onPick={(reference) => setCred(i, { value: reference })} />
                </div>
                <div className="two">
                  <label>
                    <span className="label">Hosts</span>
                    <input id={`cred-hosts-${i}`} value={c.hosts} placeholder="api.openai.com, *.openai.com" spellCheck={false} onChange={(e) => setCred(i, { hosts: e.target.value })} />
                  </label>
                  <label>
                    <span className="label">Source env (host)</span>
                    <input id={`cred-source-${i}`} value={c.sourceEnv} placeholder={c.key || "same as the env var"} spellCheck={false} onChange={(e) => setCred(i, { sourceEnv: e.target.value })} />
                  </label>
                </div>
                <div className="two">
                  <label>
                    <span className="label">Header</span>
                    <input id={`cred-header-${i}`} value={c.header} onChange={(e) => setCred(i, { header: e.target.value })} />
                  </label>
                  <label>
                    <span className="label">Format</span>
                    <input id={`cred-format-${i}`} value={c.format} spellCheck={false} onChange={(e) => setCred(i, { format: e.target.value })} />
                  </label>
                </div>
                <button type="button" className="link" onClick={() => removeCred(i)}>
                  Remove credential
                </button>
                <FieldError field={field} message={errors[field]} />
              </div>
            );
          })}
          <button id="add-credential" type="button" onClick={addCred}>
            Add credential
          </button>
        </fieldset>

        <div className="form-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button id="create-submit" type="submit" className="primary" disabled={busy !== ""}>
            {busy === "pulling" ? "Pulling image…" : busy === "creating" ? "Creating…" : "Create"}
          </button>
        </div>
      </form>
    </div>
  );
}
