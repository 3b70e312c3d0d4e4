// One instance: every field of the Hypeman Instance, human-readable, with copy buttons; exit
// and state errors up front; lifecycle buttons; credential rotation; logs.
import { useState, type ReactNode } from "react";
import type Hypeman from "@onkernel/hypeman";

import type { Problem } from "../api";
import type { Connection } from "../connection";
import { duration, tagLabels, uptime, when, type Instance, type Verb } from "../model";
import { Actions, Copyable, StateBadge } from "./common";
import { CredentialsPanel } from "./CredentialsPanel";
import { NetworkPanel } from "./NetworkPanel";
import { ExecPanel } from "./ExecPanel";
import { LogsPanel } from "./LogsPanel";
import { RotateForm } from "./RotateForm";

function Item({ label, children, field }: { label: string; children: ReactNode; field: string }) {
  return (
    <>
      <dt>{label}</dt>
      <dd data-field={field}>{children}</dd>
    </>
  );
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === "" ? "—" : String(v));

/** The Instance with credential-looking env values replaced, for the raw view. */
function redacted(instance: Instance): Instance {
  if (!instance.env) return instance;
  const env = Object.fromEntries(Object.keys(instance.env).map((k) => [k, "<hidden: reveal in Environment>"]));
  return { ...instance, env };
}

function Environment({ env }: { env: Record<string, string> | undefined }) {
  const entries = Object.entries(env ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (entries.length === 0) return <p className="muted">No environment variables.</p>;
  return (
    <dl className="env">
      {entries.map(([k, v]) => (
        <div key={k} className="env-row">
          <dt>
            <code>{k}</code>
          </dt>
          <dd>
            <details>
              <summary>hidden — reveal</summary>
              <code className="env-value">{v}</code>
            </details>
          </dd>
        </div>
      ))}
    </dl>
  );
}

export function InstanceDetails({
  api,
  conn,
  instance,
  now,
  onBack,
  onChanged,
  onProblem,
}: {
  api: Hypeman;
  conn: Connection;
  instance: Instance;
  now: number;
  onBack: () => void;
  onChanged: (verb?: Verb) => void;
  onProblem: (p: Problem) => void;
}) {
  const net = instance.network;
  // Bumped by a rotation, so the credentials card reloads at once.
  const [rotations, setRotations] = useState(0);
  const exited = instance.exit_code !== null && instance.exit_code !== undefined;
  return (
    <section id="instance-view" data-instance-id={instance.id} aria-label={`Instance ${instance.name}`}>
      <div className="detail-head">
        <button type="button" className="link" onClick={onBack} aria-label="Back to instances">
          ← Instances
        </button>
        <h2 id="detail-name">{instance.name}</h2>
        <StateBadge state={instance.state} />
        <span className="spacer" />
        <Actions api={api} instance={instance} onDone={onChanged} onProblem={onProblem} />
      </div>

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

      <div className="grid">
        <div className="card">
          <h3>Overview</h3>
          <dl>
            <Item label="ID" field="id">
              <Copyable value={instance.id} label="ID" />
            </Item>
            <Item label="Image" field="image">
              <code>{instance.image}</code>
            </Item>
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

        <div className="card" id="rotate-card">
          <h3>Rotate credentials</h3>
          <RotateForm
            key={instance.id}
            api={api}
            instance={instance}
            onRotated={() => {
              setRotations((n) => n + 1);
              onChanged();
            }}
          />
        </div>
        <CredentialsPanel api={api} instance={instance} now={now} version={rotations} />
        <NetworkPanel api={api} instance={instance} now={now} />
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
          <h3>Volumes</h3>
          {instance.volumes?.length ? (
            <ul className="volumes">
              {instance.volumes.map((v) => (
                <li key={`${v.volume_id}:${v.mount_path}`}>
                  <code>{v.volume_id}</code> → <code>{v.mount_path}</code> {v.readonly ? "(read-only)" : "(read-write)"}
                  {v.overlay ? ` overlay ${dash(v.overlay_size)}` : ""}
                </li>
              ))}
            </ul>
          ) : (
            <p className="muted">No volumes.</p>
          )}
          <h3>Environment</h3>
          <Environment env={instance.env} />
        </div>

      </div>

      <section id="shell" className="card shell" aria-label="Shell">
        <h3>Shell</h3>
        <ExecPanel key={instance.id} conn={conn} id={instance.id} running={instance.state === "Running"} />
      </section>

      <LogsPanel key={instance.id} api={api} id={instance.id} name={instance.name} />

      <details className="card raw">
        <summary>Raw JSON (environment values hidden)</summary>
        <pre>{JSON.stringify(redacted(instance), null, 2)}</pre>
      </details>
    </section>
  );
}
