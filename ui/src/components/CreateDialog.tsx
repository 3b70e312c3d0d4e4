// Create an instance: image, name, size, credentials (with a "Bearer ${value}" default), the
// command (with what will actually run), env, tags, volumes and network/egress. Every mistake
// the form can see is shown at once, before anything is sent, next to its field and in a summary
// by the Create button; the API's errors are put in plain words on the field they are about. An
// error goes away when its field is edited. The image is pulled first, with progress, then the
// instance is created.
import { useContext, useEffect, useRef, useState, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import { CREATE_TIMEOUT_MS, problem } from "../api";
import {
  argvWarning,
  buildCreateBody,
  credentialProblem,
  emptyCredential,
  emptyDraft,
  explain,
  explainPull,
  fieldLabel,
  fieldRank,
  NAME_RULE,
  parseEnvLines,
  shellQuote,
  shellWords,
  willRun,
  type CreateDraft,
  type CredentialDraft,
  type Field,
  type FieldErrors,
} from "../forms";
import { BackendsContext, SettingsContext } from "../hooks";
import { draftDefaults } from "../prefs";
import { backendFor, bytes, limitsOf, percent, type Instance } from "../model";
import { lookUpImage, pullImage, type Image, type ImageLookup } from "./images";
import { useDialogFocus } from "./common";
import { KeychainPicker } from "./KeychainPicker";

/** The input a field's error focuses (credentials: the row's input the mistake is about). */
function inputId(field: Field, draft: CreateDraft): string | null {
  const cred = /^credentials\.(\d+)$/.exec(field);
  if (cred) {
    const i = Number(cred[1]);
    const c = draft.credentials[i];
    if (!c) return null;
    const declared = draft.credentials.slice(0, i).map((d) => d.key.trim());
    const part = credentialProblem(c, declared, parseEnvLines(draft.env).env)?.part ?? "key";
    return `cred-${part}-${i}`;
  }
  if (field === "form") return null;
  return `create-${field}`;
}

/** `aria-*` for an input: invalid when its field has an error, described by its hint and error. */
function described(field: Field, errors: FieldErrors, hint: boolean) {
  const ids = [hint ? `${field}-hint` : "", errors[field] ? `${field}-error` : ""].filter((x) => x !== "").map((x) => `create-${x}`);
  return {
    "aria-invalid": errors[field] ? ("true" as const) : ("false" as const),
    ...(ids.length ? { "aria-describedby": ids.join(" ") } : {}),
  };
}

function ErrorText({ field, errors }: { field: Field; errors: FieldErrors }) {
  const message = errors[field];
  if (!message) return null;
  return (
    <p className="field-error" data-field={field} id={`create-${field}-error`}>
      {message}
    </p>
  );
}

function Row({ label, field, errors, children, hint }: { label: string; field: Field; errors: FieldErrors; children: ReactNode; hint?: ReactNode }) {
  return (
    <div className={errors[field] ? "field invalid" : "field"}>
      <label>
        <span className="label">{label}</span>
        {children}
      </label>
      {hint && (
        <p className="hint" id={`create-${field}-hint`}>
          {hint}
        </p>
      )}
      <ErrorText field={field} errors={errors} />
    </div>
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

/** The image's own Entrypoint/Cmd and the argv that will run, computed with Docker's rules. */
function WillRun({ draft, lookup }: { draft: CreateDraft; lookup: ImageLookup | null }) {
  const cmd = shellWords(draft.cmd);
  const entrypoint = shellWords(draft.entrypoint);
  const image = lookup?.state === "known" ? lookup : null;
  const words = (w: string[]) => (w.length ? <code>{shellQuote(w)}</code> : <span className="muted">none</span>);
  let own: ReactNode;
  if (draft.image.trim() === "") own = "Choose an image to see the command it runs.";
  else if (!lookup || lookup.state === "looking") own = "Looking up the image's command…";
  else if (image)
    own = (
      <>
        The image runs Entrypoint {words(image.entrypoint)}, Cmd {words(image.cmd)}.
      </>
    );
  else own = "The image's Entrypoint and Cmd are known after the pull.";

  let run: ReactNode;
  let warning: string | null = null;
  let dropped = false;
  if (cmd.error || entrypoint.error) {
    run = <span className="muted">— (fix the quotes first)</span>;
  } else {
    const argv = willRun(image, entrypoint.words, cmd.words);
    if (argv) {
      run = <code>{shellQuote(argv)}</code>;
      warning = argvWarning(argv);
      dropped = entrypoint.words.length > 0 && cmd.words.length === 0 && (image?.cmd.length ?? 1) > 0;
    } else {
      run = (
        <span className="muted">
          the image's Entrypoint{cmd.words.length ? "" : " and Cmd"} (known after the pull)
          {cmd.words.length ? (
            <>
              {" "}
              followed by <code>{shellQuote(cmd.words)}</code>
            </>
          ) : null}
        </span>
      );
    }
  }
  return (
    <div className="will-run" id="create-will-run" aria-live="polite">
      <p className="hint" id="create-image-command">
        {own}
      </p>
      <p className="will-run-line">
        <span className="label">Will run:</span> <span id="will-run-argv">{run}</span>
      </p>
      {dropped && (
        <p className="hint" id="will-run-dropped">
          The image's Cmd is dropped because the Entrypoint is overridden (Docker's rule).
        </p>
      )}
      {warning && (
        <p className="hint warn" id="will-run-warning">
          {warning}
        </p>
      )}
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
  const [lookup, setLookup] = useState<ImageLookup | null>(null);
  const [focusTick, setFocusTick] = useState(0);
  const abort = useRef(new AbortController());
  const first = useRef<HTMLInputElement>(null);
  /** The image the form holds now: a pull of another one no longer reports here. */
  const currentImage = useRef(draft.image.trim());
  const draftRef = useRef(draft);
  draftRef.current = draft;

  // Focus inside while open (the image field first), Escape closes, focus back to the opener.
  const dialog = useRef<HTMLFormElement>(null);
  useDialogFocus(dialog, onClose);
  useEffect(() => {
    const controller = abort.current;
    return () => controller.abort();
  }, []);

  // The image's own command, looked up a moment after the image name stops changing.
  const imageName = draft.image.trim();
  useEffect(() => {
    currentImage.current = imageName;
    if (imageName === "") {
      setLookup(null);
      return;
    }
    setLookup({ state: "looking" });
    const controller = new AbortController();
    const timer = window.setTimeout(() => {
      void lookUpImage(api, imageName, controller.signal).then((l) => {
        if (!controller.signal.aborted) setLookup(l);
      });
    }, 350);
    return () => {
      window.clearTimeout(timer);
      controller.abort();
    };
  }, [api, imageName]);

  // After a submit with mistakes: the first bad field (in the form's order) is shown and focused.
  useEffect(() => {
    if (focusTick === 0) return;
    const [firstBad] = (Object.keys(errors) as Field[]).sort((a, b) => fieldRank(a) - fieldRank(b));
    if (firstBad) focusField(firstBad);
  }, [focusTick]);

  const focusField = (field: Field): void => {
    const id = inputId(field, draftRef.current);
    // A field without an input on screen (a form-wide error, a hidden hypervisor choice): the summary.
    const el = (id ? document.getElementById(id) : null) ?? document.getElementById("create-summary");
    if (!el) return;
    el.closest("details")?.setAttribute("open", "");
    el.scrollIntoView({ block: "center" });
    (el as HTMLElement).focus({ preventScroll: true });
  };

  /** Forgets the errors about `fields`: the user is changing what they were about. */
  const clear = (...fields: Field[]): void =>
    setErrors((e) => {
      if (!fields.some((f) => f in e)) return e;
      const next = { ...e };
      for (const f of fields) delete next[f];
      return next;
    });

  const FIELDS_OF: Partial<Record<keyof CreateDraft, Field[]>> = {
    hypervisor: ["hypervisor", "ports", "network"],
    networkEnabled: ["network", "ports"],
    egressEnabled: ["network"],
    egressMode: ["network"],
  };
  const set = <K extends keyof CreateDraft>(k: K, v: CreateDraft[K]): void => {
    setDraft((d) => ({ ...d, [k]: v }));
    clear(...(FIELDS_OF[k] ?? [k as Field]));
    if (k === "image") setPull(null);
  };
  const setCred = (i: number, patch: Partial<CredentialDraft>): void => {
    setDraft((d) => ({ ...d, credentials: d.credentials.map((c, j) => (j === i ? { ...c, ...patch } : c)) }));
    clear(`credentials.${i}`);
  };
  const addCred = (): void => {
    setDraft((d) => ({ ...d, networkEnabled: true, egressEnabled: true, credentials: [...d.credentials, emptyCredential()] }));
    clear("network");
  };
  const removeCred = (i: number): void => {
    setDraft((d) => ({ ...d, credentials: d.credentials.filter((_, j) => j !== i) }));
    clear("network", ...draft.credentials.map((_, j) => `credentials.${j}` as Field));
  };

  const submit = async (): Promise<void> => {
    const { body, errors: local } = buildCreateBody(draft, backend);
    // With the image's own command known, "nothing to run" is caught here too.
    if (lookup?.state === "known" && !local.cmd && !local.entrypoint && willRun(lookup, shellWords(draft.entrypoint).words, shellWords(draft.cmd).words)?.length === 0) {
      local.cmd = "The image has no Entrypoint or Cmd: give a Command";
    }
    setErrors(local);
    if (!body || Object.keys(local).length > 0) {
      setFocusTick((t) => t + 1);
      return;
    }
    const fail = (field: Field, message: string): void => {
      setErrors({ [field]: message });
      setFocusTick((t) => t + 1);
    };
    let pulled: Image;
    try {
      setBusy("pulling");
      pulled = await pullImage(api, body.image, (i) => currentImage.current === body.image && setPull(i), abort.current.signal);
    } catch (e) {
      setBusy("");
      if (currentImage.current === body.image) fail("image", explainPull(problem(e, ""), body.image));
      return;
    }
    // The image was changed during the pull: the form no longer says to create this one.
    if (currentImage.current !== body.image) {
      setBusy("");
      return;
    }
    // Now pulled, the image's own command is known: ask for it (a pull's answer may not carry it).
    if (pulled.status === "ready") {
      void lookUpImage(api, body.image, abort.current.signal).then((l) => currentImage.current === body.image && setLookup(l));
    }
    try {
      setBusy("creating");
      const created = await api.instances.create(body, { timeout: CREATE_TIMEOUT_MS });
      onCreated(created);
    } catch (e) {
      const { field, message } = explain(problem(e, ""), draft);
      fail(field, message);
    } finally {
      setBusy("");
    }
  };

  const problems = (Object.keys(errors) as Field[]).filter((f) => errors[f]).sort((a, b) => fieldRank(a) - fieldRank(b));

  return (
    <div className="overlay" role="presentation" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <form
        id="create-form"
        ref={dialog}
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
        <div className="two">
          <Row label="Image" field="image" errors={errors} hint="An OCI reference; pulled first if it is not here yet.">
            <input
              id="create-image"
              ref={first}
              data-autofocus
              value={draft.image}
              placeholder="docker.io/library/alpine:latest"
              spellCheck={false}
              {...described("image", errors, true)}
              onChange={(e) => set("image", e.target.value)}
            />
          </Row>
          <Row label="Name" field="name" errors={errors} hint={NAME_RULE}>
            <input id="create-name" value={draft.name} placeholder="my-agent" spellCheck={false} {...described("name", errors, true)} onChange={(e) => set("name", e.target.value)} />
          </Row>
        </div>
        {pull && <PullProgress image={pull} />}
        <div className="two">
          <Row label="vCPUs" field="vcpus" errors={errors}>
            <input id="create-vcpus" inputMode="numeric" value={draft.vcpus} placeholder="2" {...described("vcpus", errors, false)} onChange={(e) => set("vcpus", e.target.value)} />
          </Row>
          <Row label="Memory" field="memory" errors={errors} hint="e.g. 512MB, 1GB">
            <input id="create-memory" value={draft.memory} placeholder="1GB" {...described("memory", errors, true)} onChange={(e) => set("memory", e.target.value)} />
          </Row>
        </div>
        {backends && backends.length > 1 && (
          <Row label="Hypervisor" field="hypervisor" errors={errors} {...(backend && limitsOf(backend) ? { hint: limitsOf(backend) } : {})}>
            <select
              id="create-hypervisor"
              value={draft.hypervisor}
              {...described("hypervisor", errors, Boolean(backend && limitsOf(backend)))}
              onChange={(e) => set("hypervisor", e.target.value)}
            >
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

        <fieldset className="credentials-create">
          <legend>Credentials (API keys)</legend>
          <p className="hint">
            Let the program use an API key without ever holding it: it sees a placeholder, and Hypedeck puts the real key into its HTTPS requests to the
            hosts you allow. Adding one turns on the network and the credential proxy.
          </p>
          {draft.credentials.map((c, i) => {
            const field = `credentials.${i}` as const;
            const key = c.key.trim() || "KEY";
            const hosts = c.hosts.trim() || "any host";
            const aria = (part: string) => ({
              "aria-invalid": errors[field] && inputId(field, draft) === `cred-${part}-${i}` ? ("true" as const) : ("false" as const),
              ...(errors[field] ? { "aria-describedby": `create-${field}-error` } : {}),
            });
            return (
              <div key={i} className={errors[field] ? "credential invalid" : "credential"} data-credential={i}>
                <div className="two">
                  <label>
                    <span className="label">Variable in the sandbox</span>
                    <input id={`cred-key-${i}`} value={c.key} placeholder="OPENAI_API_KEY" spellCheck={false} {...aria("key")} onChange={(e) => setCred(i, { key: e.target.value })} />
                  </label>
                  <div className="cred-value">
                    <label>
                      <span className="label" title="Or a reference resolved on the engine's machine: op://vault/item/field, keychain:service/account, cmd:gh auth token">
                        Real key
                      </span>
                      <input id={`cred-value-${i}`} type="password" autoComplete="off" value={c.value} {...aria("value")} onChange={(e) => setCred(i, { value: e.target.value })} />
                    </label>
                    <KeychainPicker api={api} id={`cred-keychain-${String(i)}`} onPick={(reference) => setCred(i, { value: reference })} />
                    <p className="hint">Kept in the keychain, never shown again. Or a reference: op://vault/item/field, keychain:service/account, cmd:gh auth token.</p>
                  </div>
                </div>
                <label>
                  <span className="label">Send it only to</span>
                  <input id={`cred-hosts-${i}`} value={c.hosts} placeholder="api.openai.com, *.openai.com" spellCheck={false} onChange={(e) => setCred(i, { hosts: e.target.value })} />
                </label>
                <p className="hint cred-explained" id={`cred-explained-${i}`}>
                  The program sees <code>{key}=mock-{key}</code>; requests to {hosts} get the header{" "}
                  <code>
                    {c.header.trim() || "?"}: {c.format.replace("${value}", "<real key>")}
                  </code>
                  .
                </p>
                <details className="cred-advanced">
                  <summary>Header, format and where the key is stored</summary>
                  <div className="two">
                    <label>
                      <span className="label">Header</span>
                      <input id={`cred-header-${i}`} value={c.header} {...aria("header")} onChange={(e) => setCred(i, { header: e.target.value })} />
                    </label>
                    <label>
                      <span className="label">Format (${"{value}"} is the real key)</span>
                      <input id={`cred-format-${i}`} value={c.format} spellCheck={false} {...aria("format")} onChange={(e) => setCred(i, { format: e.target.value })} />
                    </label>
                  </div>
                  <label>
                    <span className="label">Stored under the name</span>
                    <input
                      id={`cred-source-${i}`}
                      value={c.sourceEnv}
                      placeholder={c.key || "the variable's name"}
                      spellCheck={false}
                      {...aria("source")}
                      onChange={(e) => setCred(i, { sourceEnv: e.target.value })}
                    />
                  </label>
                  <p className="hint">The same as the variable unless you leave the real key empty and take it from a variable of the Environment field.</p>
                </details>
                <button type="button" className="link" onClick={() => removeCred(i)}>
                  Remove credential
                </button>
                <ErrorText field={field} errors={errors} />
              </div>
            );
          })}
          <button id="add-credential" type="button" onClick={addCred}>
            Add credential
          </button>
        </fieldset>

        <div className="two">
          <Row label="Command" field="cmd" errors={errors} hint="Replaces the image's Cmd, in shell words; empty keeps the image's.">
            <input
              id="create-cmd"
              value={draft.cmd}
              placeholder={"sh -c 'echo hello; sleep 3600'"}
              spellCheck={false}
              {...described("cmd", errors, true)}
              onChange={(e) => set("cmd", e.target.value)}
            />
          </Row>
          <Row label="Entrypoint" field="entrypoint" errors={errors} hint="Replaces the image's Entrypoint and drops its Cmd (docker run --entrypoint); empty keeps the image's.">
            <input
              id="create-entrypoint"
              value={draft.entrypoint}
              placeholder="/bin/sh -c"
              spellCheck={false}
              {...described("entrypoint", errors, true)}
              onChange={(e) => set("entrypoint", e.target.value)}
            />
          </Row>
        </div>
        <WillRun draft={draft} lookup={lookup} />
        <Row label="Environment" field="env" errors={errors} hint="KEY=value, one per line">
          <textarea id="create-env" rows={3} spellCheck={false} value={draft.env} {...described("env", errors, true)} onChange={(e) => set("env", e.target.value)} />
        </Row>
        <Row label="Tags" field="tags" errors={errors} hint="key=value, comma separated">
          <input id="create-tags" value={draft.tags} placeholder="team=ml, purpose=agent" {...described("tags", errors, true)} onChange={(e) => set("tags", e.target.value)} />
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
            {...described("volumes", errors, true)}
            onChange={(e) => set("volumes", e.target.value)}
          />
        </Row>

        <fieldset className={errors.network ? "invalid" : ""}>
          <legend>Network</legend>
          <Row label="Forwarded ports" field="ports" errors={errors} hint="host:guest on 127.0.0.1, e.g. 8080:80, 5353:53/udp">
            <input id="create-ports" value={draft.ports} placeholder="8080:80" spellCheck={false} {...described("ports", errors, true)} onChange={(e) => set("ports", e.target.value)} />
          </Row>
          <label className="check">
            <input
              id="create-network"
              type="checkbox"
              checked={draft.networkEnabled}
              {...described("network", errors, false)}
              onChange={(e) => set("networkEnabled", e.target.checked)}
            />{" "}
            Network
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
          <ErrorText field="network" errors={errors} />
        </fieldset>

        {problems.length > 0 && (
          <div id="create-summary" className="error-summary" role="alert" tabIndex={-1}>
            <p>{problems.length === 1 ? "One thing to fix before creating:" : `${problems.length} things to fix before creating:`}</p>
            <ul>
              {problems.map((f) => (
                <li key={f}>
                  {f === "form" ? (
                    <p className="field-error" data-field="form" data-summary-field={f}>
                      {errors[f]}
                    </p>
                  ) : (
                    <button type="button" className="link" data-summary-field={f} onClick={() => focusField(f)}>
                      {fieldLabel(f)}: {errors[f]}
                    </button>
                  )}
                </li>
              ))}
            </ul>
          </div>
        )}
        <div className="form-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button id="create-submit" type="submit" className="primary" disabled={busy !== ""} aria-describedby={problems.length ? "create-summary" : undefined}>
            {busy === "pulling" ? "Pulling image…" : busy === "creating" ? "Creating…" : "Create"}
          </button>
        </div>
      </form>
    </div>
  );
}
