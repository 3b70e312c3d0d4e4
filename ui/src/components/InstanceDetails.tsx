// One instance: the header (name, state, lifecycle buttons, exit and state errors) over tabs —
// Overview (every field of the Hypeman Instance, where a fork comes from, what runs, its volumes
// with attach and detach, and credential rotation when the instance has credentials), Logs,
// Terminal, Credentials, Snapshots, Stats (CPU, memory, network and disk graphs) and Network.
// The Snapshot button (to the Snapshots tab's take form) and the Fork button sit with the
// lifecycle buttons. The selected tab is kept in the history entry, so reload and back keep it.
// Tabs follow the WAI-ARIA tabs pattern.
import { lazy, Suspense, useEffect, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import { effectiveCommand, problem, rotationKeys, type Problem, type RotationKeys } from "../api";
import type { Connection } from "../connection";
import {
  commandLine,
  detailTabs,
  envEntries,
  originText,
  TAB_LABEL,
  tabAfterKey,
  tabOrDefault,
  type DetailTab,
  type EffectiveCommand,
} from "../details";
import { duration, shortId, tagLabels, templateOf, uptime, when, type Instance, type Verb } from "../model";
import { forkedFrom, forkPlan, snapshotLabel, type ForkedFrom } from "../snapshots";
import { AutoStandbyCard } from "./AutoStandbyCard";
import { Actions, Copyable, CopyButton, StateBadge } from "./common";
import { CredentialsPanel } from "./CredentialsPanel";
import { ForkDialog } from "./ForkDialog";
import { SnapshotsPanel } from "./SnapshotsPanel";
import { VolumesCard } from "./VolumesCard";
import { NetworkPanel } from "./NetworkPanel";
import { ExecPanel } from "./ExecPanel";
import { LogsPanel } from "./LogsPanel";
import { RotateForm } from "./RotateForm";

// The Stats tab's charts (uPlot) load when the tab is first opened.
const StatsPanel = lazy(() => import("./StatsPanel"));

/** The history entry's field that keeps the selected tab. */
const TAB_STATE = "hypedeckDetailTab";

function Item({ label, children, field }: { label: string; children: ReactNode; field: string }) {
  return (
    <>
      <dt>{label}</dt>
      <dd data-field={field}>{children}</dd>
    </>
  );
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === "" ? "—" : String(v));

/** The Instance for the raw view: no env value at all (credentials or not). */
function redacted(instance: Instance, credentialKeys: readonly string[] | null): Instance {
  if (!instance.env) return instance;
  const env = Object.fromEntries(
    envEntries(instance.env, credentialKeys).map((e) => [
      e.key,
      e.kind === "credential" ? "<credential: see the Credentials tab>" : e.kind === "plain" ? "<hidden: reveal on the Environment card>" : "<hidden>",
    ]),
  );
  return { ...instance, env };
}

function Environment({ env, credentialKeys, onCredentials }: { env: Record<string, string> | undefined; credentialKeys: readonly string[] | null; onCredentials: () => void }) {
  const entries = envEntries(env, credentialKeys);
  if (entries.length === 0) return <p className="muted">No environment variables.</p>;
  return (
    <dl className="env" id="env-list">
      {entries.map((e) => (
        <div key={e.key} className="env-row" data-env={e.key} data-kind={e.kind}>
          <dt>
            <code>{e.key}</code>
          </dt>
          <dd>
            {e.kind === "plain" ? (
              <details>
                <summary>hidden — reveal</summary>
                <code className="env-value">{e.value}</code>
              </details>
            ) : e.kind === "credential" ? (
              <span className="muted">
                credential —{" "}
                <button type="button" className="link env-credential" onClick={onCredentials}>
                  see Credentials tab
                </button>
              </span>
            ) : (
              <span className="muted">hidden</span>
            )}
          </dd>
        </div>
      ))}
    </dl>
  );
}

/** One part of the command (entrypoint or cmd) and where it comes from. */
function CommandPart({ part, imageKnown }: { part: EffectiveCommand["entrypoint"]; imageKnown: boolean }) {
  if (part.from === "image" && !imageKnown) return <span className="muted">unknown until the image is on this machine (from the image)</span>;
  return (
    <>
      {part.value.length ? <code>{commandLine(part.value)}</code> : <span className="muted">none</span>} <span className="muted">({originText(part.from)})</span>
    </>
  );
}

/** What runs: the command line and where each part comes from. */
function CommandCard({ command }: { command: EffectiveCommand }) {
  const line = commandLine(command.argv);
  // `argv` is empty only when the image's config is not available here.
  const imageKnown = command.argv.length > 0;
  return (
    <div className="card" id="command-card">
      <h3>Command</h3>
      <dl>
        <Item label="Runs" field="command">
          {imageKnown ? (
            <span className="copyable">
              <code className="command-line">{line}</code>
              <CopyButton text={line} label="command" />
            </span>
          ) : (
            <span className="muted">not known yet: the image is not on this machine</span>
          )}
        </Item>
        <Item label="Entrypoint" field="entrypoint">
          <CommandPart part={command.entrypoint} imageKnown={imageKnown} />
        </Item>
        <Item label="Arguments (cmd)" field="cmd">
          <CommandPart part={command.cmd} imageKnown={imageKnown} />
        </Item>
        <Item label="Working directory" field="working_dir">
          {command.working_dir ? (
            <code>{command.working_dir}</code>
          ) : (
            <span className="muted">{imageKnown ? "/ (the image sets none)" : "unknown until the image is on this machine"}</span>
          )}
        </Item>
      </dl>
    </div>
  );
}

/** The instance's effective command (null: the server does not say; undefined: loading). */
function useCommand(api: Hypeman, id: string, state: string): EffectiveCommand | null | undefined {
  const [command, setCommand] = useState<EffectiveCommand | null | undefined>(undefined);
  useEffect(() => {
    let live = true;
    effectiveCommand(api, id).then(
      (c) => live && setCommand(c),
      () => live && setCommand(null),
    );
    return () => {
      live = false;
    };
    // A pull finishing or a restart may change what is known.
  }, [api, id, state]);
  return command;
}

/** The instance's credential keys; reloaded after each rotation (fingerprints change). */
function useCredentialKeys(api: Hypeman, id: string, version: number): { info: RotationKeys | null; failure: Problem | null } {
  const [info, setInfo] = useState<RotationKeys | null>(null);
  const [failure, setFailure] = useState<Problem | null>(null);
  useEffect(() => {
    let live = true;
    rotationKeys(api, id).then(
      (k) => {
        if (!live) return;
        setInfo(k);
        setFailure(null);
      },
      (e: unknown) => live && setFailure(problem(e, "")),
    );
    return () => {
      live = false;
    };
  }, [api, id, version]);
  return { info, failure };
}

/** "Forked from web" (a link while web exists), and the snapshot's name when made from one. */
function ForkOrigin({ api, from, instances }: { api: Hypeman; from: ForkedFrom; instances: readonly Instance[] }) {
  const source = instances.find((i) => i.id === from.source_instance_id);
  const [snapshot, setSnapshot] = useState<string | null>(null);
  useEffect(() => {
    const id = from.snapshot_id;
    if (!id) return;
    let live = true;
    api.snapshots.get(id).then(
      (s) => live && setSnapshot(snapshotLabel(s)),
      // Deleted since (or unreadable): its id says which it was.
      () => live && setSnapshot(null),
    );
    return () => {
      live = false;
    };
  }, [api, from.snapshot_id]);
  return (
    <span id="forked-from">
      {source ? (
        <a href={`#/instances/${encodeURIComponent(source.id)}`} title={source.id}>
          {from.source_instance_name}
        </a>
      ) : (
        <>
          {from.source_instance_name} <span className="muted">(deleted)</span>
        </>
      )}
      {from.snapshot_id && (
        <>
          {", snapshot "}
          <span data-snapshot-id={from.snapshot_id}>{snapshot ?? <code title={from.snapshot_id}>{shortId(from.snapshot_id)}</code>}</span>
        </>
      )}
    </span>
  );
}

function initialTab(tabs: readonly DetailTab[]): DetailTab {
  const state: unknown = window.history.state;
  return tabOrDefault(typeof state === "object" && state !== null && TAB_STATE in state ? (state as Record<string, unknown>)[TAB_STATE] : null, tabs);
}

interface Props {
  api: Hypeman;
  conn: Connection;
  instance: Instance;
  /** Every instance (fork names must be free; a fork's source is linked while it exists). */
  instances: readonly Instance[];
  now: number;
  onBack: () => void;
  /** Opens another instance's page (a new fork's, or a fork's source). */
  onOpen: (id: string) => void;
  onChanged: (verb?: Verb) => void;
  onProblem: (p: Problem) => void;
}

/** Each instance gets a fresh page: no note, tab or typed value carries over to another. */
export function InstanceDetails(props: Props) {
  return <Details key={props.instance.id} {...props} />;
}

function Details({ api, conn, instance, instances, now, onBack, onOpen, onChanged, onProblem }: Props) {
  const net = instance.network;
  // Bumped by a rotation, so the credential cards reload at once.
  const [rotations, setRotations] = useState(0);
  const { info: creds, failure: credsFailure } = useCredentialKeys(api, instance.id, rotations);
  const command = useCommand(api, instance.id, instance.state);
  const tabs = detailTabs(net?.enabled ?? false);
  const [tab, setTab] = useState<DetailTab>(() => initialTab(tabs));
  const shown: DetailTab = tabs.includes(tab) ? tab : "overview";
  const tabRefs = useRef<Partial<Record<DetailTab, HTMLButtonElement | null>>>({});
  const exited = instance.exit_code !== null && instance.exit_code !== undefined;
  const hasCredentials = (creds?.keys.length ?? 0) > 0;
  const origin = forkedFrom(instance);
  const fork = forkPlan(instance.state);
  const [forking, setForking] = useState(false);
  // Bumped by the Snapshot button: the Snapshots tab's take form takes the focus.
  const [focusTake, setFocusTake] = useState(0);

  const select = (next: DetailTab, focus = false): void => {
    setTab(next);
    try {
      const state: unknown = window.history.state;
      window.history.replaceState({ ...(typeof state === "object" && state !== null ? state : {}), [TAB_STATE]: next }, "");
    } catch {
      // A history that refuses state: the tab is still selected, just not kept.
    }
    if (focus) tabRefs.current[next]?.focus();
  };
  const onTabKey = (e: KeyboardEvent<HTMLButtonElement>): void => {
    const next = tabAfterKey(tabs, shown, e.key);
    if (next) {
      e.preventDefault();
      select(next, true);
    }
  };

  const panel = (id: DetailTab, children: ReactNode): ReactNode => (
    <div
      role="tabpanel"
      id={`detail-panel-${id}`}
      aria-labelledby={`detail-tab-${id}`}
      className="detail-panel"
      data-tab={id}
      hidden={shown !== id}
      tabIndex={0}
    >
      {children}
    </div>
  );

  return (
    <section id="instance-view" data-instance-id={instance.id} aria-label={`Instance ${instance.name}`}>
      <div className="detail-head">
        <button type="button" className="link" onClick={onBack} aria-label="Back to instances">
          ← Instances
        </button>
        <h2 id="detail-name">{instance.name}</h2>
        <StateBadge state={instance.state} />
        <span className="spacer" />
        <button
          id="snapshot-instance"
          type="button"
          data-action="snapshot"
          aria-label={`Snapshot ${instance.name}`}
          aria-controls="detail-panel-snapshots"
          title="Take a snapshot on the Snapshots tab"
          onClick={() => {
            select("snapshots");
            setFocusTake((n) => n + 1);
          }}
        >
          Snapshot
        </button>
        <span className="action-wrap" title={fork.reason}>
          {!fork.enabled && (
            <span id="fork-why" className="sr-only">
              {fork.reason}
            </span>
          )}
          <button
            id="fork-instance"
            type="button"
            data-action="fork"
            disabled={!fork.enabled}
            aria-label={`Fork ${instance.name}`}
            aria-describedby={fork.enabled ? undefined : "fork-why"}
            title={fork.reason}
            onClick={() => setForking(true)}
          >
            Fork
          </button>
        </span>
        <Actions api={api} instance={instance} onDone={onChanged} onProblem={onProblem} />
      </div>
      {forking && (
        <ForkDialog
          api={api}
          source={{ kind: "instance", instance }}
          taken={instances.map((i) => i.name)}
          onClose={() => setForking(false)}
          onForked={(f) => {
            setForking(false);
            onOpen(f.id);
          }}
        />
      )}

      {instance.state_error && (
        <div id="detail-state-error" className="alert bad" role="alert">
          <strong>State unknown:</strong> {instance.state_error}
        </div>
      )}
      {exited && (
        <div id="detail-exit" className={instance.exit_code === 0 ? "alert off" : "alert warn"} role="status">
          <strong>Exited with code {instance.exit_code}</strong>
          {instance.exit_message ? `: ${instance.exit_message}` : ""}
          {instance.stopped_at ? ` (${when(instance.stopped_at)})` : ""}
        </div>
      )}

      <div role="tablist" aria-label={`${instance.name} sections`} className="detail-tabs" id="detail-tabs">
        {tabs.map((t) => (
          <button
            key={t}
            ref={(el) => {
              tabRefs.current[t] = el;
            }}
            type="button"
            role="tab"
            id={`detail-tab-${t}`}
            data-tab={t}
            aria-selected={shown === t}
            aria-controls={`detail-panel-${t}`}
            tabIndex={shown === t ? 0 : -1}
            className={shown === t ? "detail-tab on" : "detail-tab"}
            onClick={() => select(t)}
            onKeyDown={onTabKey}
          >
            {TAB_LABEL[t]}
          </button>
        ))}
      </div>

      {panel(
        "overview",
        <>
          {hasCredentials && creds && (
            <div className="card" id="rotate-card">
              <h3>Rotate credentials</h3>
              <RotateForm
                api={api}
                instance={instance}
                keys={creds.keys}
                fingerprints={creds.fingerprints}
                onRotated={() => {
                  setRotations((n) => n + 1);
                  onChanged();
                }}
              />
            </div>
          )}
          <div className="detail-columns">
            <div className="detail-column">
              <div className="card" id="overview-card">
                <h3>Instance</h3>
                <dl>
                  <Item label="ID" field="id">
                    <Copyable value={instance.id} label="ID" />
                  </Item>
                  {origin && (
                    <Item label="Forked from" field="forked_from">
                      <ForkOrigin api={api} from={origin} instances={instances} />
                    </Item>
                  )}
                  <Item label="Image" field="image">
                    <code>{instance.image}</code>
                  </Item>
                  {templateOf(instance) && (
                    <Item label="Started from" field="template_id">
                      <span title="This run restored a booted VM of its image and shape instead of booting (see Images → Templates)">
                        template <code>{shortId(templateOf(instance) ?? "")}</code>
                      </span>
                    </Item>
                  )}
                  <Item label="State" field="state">
                    {instance.state}
                  </Item>
                  <Item label="Hypervisor" field="hypervisor">
                    {dash(instance.hypervisor)}
                  </Item>
                  <Item label="Created" field="created_at">
                    {when(instance.created_at)} <span className="muted">({duration(instance.created_at, now)} ago)</span>
                  </Item>
                  <Item label="Started" field="started_at">
                    {when(instance.started_at)}
                  </Item>
                  <Item label="Uptime" field="uptime">
                    {uptime(instance, now)}
                  </Item>
                  <Item label="Stopped" field="stopped_at">
                    {when(instance.stopped_at)}
                  </Item>
                  <Item label="Exit code" field="exit_code">
                    {dash(instance.exit_code)}
                  </Item>
                  <Item label="Exit message" field="exit_message">
                    {dash(instance.exit_message)}
                  </Item>
                  <Item label="State error" field="state_error">
                    {dash(instance.state_error)}
                  </Item>
                  <Item label="Snapshot" field="has_snapshot">
                    {instance.has_snapshot ? "yes (standby snapshot on disk)" : "no"}
                  </Item>
                </dl>
              </div>
              {command && <CommandCard command={command} />}
              <div className="card">
                <h3>Tags</h3>
                {tagLabels(instance.tags).length ? (
                  <p>
                    {tagLabels(instance.tags).map((t) => (
                      <span key={t} className="tag">
                        {t}
                      </span>
                    ))}
                  </p>
                ) : (
                  <p className="muted">No tags.</p>
                )}
              </div>
              <VolumesCard api={api} instance={instance} onChanged={() => onChanged()} />
            </div>
            <div className="detail-column">
              <AutoStandbyCard api={api} instance={instance} />
              <div className="card">
                <h3>Resources</h3>
                <dl>
                  <Item label="vCPUs" field="vcpus">
                    {dash(instance.vcpus)}
                  </Item>
                  <Item label="Memory" field="size">
                    {dash(instance.size)}
                  </Item>
                  <Item label="Hotplug memory" field="hotplug_size">
                    {dash(instance.hotplug_size)}
                  </Item>
                  <Item label="Overlay disk" field="overlay_size">
                    {dash(instance.overlay_size)}
                  </Item>
                  <Item label="Disk I/O limit" field="disk_io_bps">
                    {instance.disk_io_bps ?? "unlimited"}
                  </Item>
                  <Item label="GPU" field="gpu">
                    {instance.gpu?.profile ? `${instance.gpu.profile}${instance.gpu.mdev_uuid ? ` (${instance.gpu.mdev_uuid})` : ""}` : "none"}
                  </Item>
                </dl>
                <h3>Network</h3>
                <dl>
                  <Item label="Network" field="network.enabled">
                    {net?.enabled ? (net.name ?? "default") : "disabled"}
                  </Item>
                  <Item label="IP" field="network.ip">
                    <Copyable value={net?.ip} label="IP" />
                  </Item>
                  <Item label="MAC" field="network.mac">
                    <Copyable value={net?.mac} label="MAC" />
                  </Item>
                  <Item label="Ports" field="ports">
                    {instance.ports?.length ? (
                      <ul className="ports">
                        {instance.ports.map((p) => (
                          <li key={`${p.protocol}/${p.host_port}`} data-port={p.host_port}>
                            {p.protocol === "tcp" ? (
                              <a href={`http://127.0.0.1:${p.host_port}/`} target="_blank" rel="noreferrer" title="Open in the browser">
                                127.0.0.1:{p.host_port}
                              </a>
                            ) : (
                              <code>127.0.0.1:{p.host_port}</code>
                            )}{" "}
                            → {p.guest_port}/{p.protocol}
                          </li>
                        ))}
                      </ul>
                    ) : (
                      "none"
                    )}
                  </Item>
                  <Item label="Bandwidth" field="network.bandwidth">
                    {net?.bandwidth_download || net?.bandwidth_upload
                      ? `↓ ${dash(net.bandwidth_download)} · ↑ ${dash(net.bandwidth_upload)}`
                      : "unlimited"}
                  </Item>
                </dl>
              </div>
              <div className="card" id="env-card">
                <h3>Environment</h3>
                <Environment env={instance.env} credentialKeys={creds?.keys ?? null} onCredentials={() => select("credentials", true)} />
              </div>
            </div>
          </div>
          <details className="card raw">
            <summary>Raw JSON (environment values hidden)</summary>
            <pre>{JSON.stringify(redacted(instance, creds?.keys ?? null), null, 2)}</pre>
          </details>
        </>,
      )}

      {panel("logs", <LogsPanel api={api} id={instance.id} name={instance.name} run={instance.started_at ?? null} visible={shown === "logs"} />)}

      {panel(
        "terminal",
        <section id="shell" className="card shell" aria-label="Shell">
          <h3>Shell</h3>
          <ExecPanel conn={conn} id={instance.id} running={instance.state === "Running"} />
        </section>,
      )}

      {panel(
        "credentials",
        credsFailure ? (
          <p id="credentials-error" className="inline-error card" role="alert">
            Cannot tell which credentials this instance has: <strong>{credsFailure.code}</strong> {credsFailure.message}
          </p>
        ) : creds === null ? (
          <p className="muted card" aria-busy="true">
            Reading credential policies…
          </p>
        ) : !hasCredentials ? (
          <p id="credentials-none" className="muted card">
            This instance has no credentials. Credentials are declared when an instance is created: the guest gets a placeholder, and the
            host&apos;s proxy puts the real value on requests to the hosts you name.
          </p>
        ) : (
          <>
            <p className="hint credentials-rotate-hint">
              Values are rotated on the{" "}
              <button type="button" className="link" id="credentials-to-rotate" onClick={() => select("overview", true)}>
                Overview tab
              </button>
              ; each one takes effect without a restart.
            </p>
            {creds.reported ? (
              <CredentialsPanel api={api} instance={instance} now={now} version={rotations} />
            ) : (
              <p className="muted card">This server does not report how its credentials are used (a Hypedeck extension).</p>
            )}
          </>
        ),
      )}

      {panel(
        "snapshots",
        <SnapshotsPanel
          api={api}
          instance={instance}
          instances={instances}
          visible={shown === "snapshots"}
          now={now}
          focusTake={focusTake}
          onChanged={() => onChanged()}
          onOpen={onOpen}
        />,
      )}

      {panel(
        "stats",
        shown === "stats" && (
          <Suspense fallback={<p className="muted card" aria-busy="true">Loading charts…</p>}>
            <StatsPanel api={api} instance={instance} />
          </Suspense>
        ),
      )}

      {tabs.includes("network") && panel("network", <NetworkPanel api={api} instance={instance} now={now} />)}
    </section>
  );
}
