// What the instance's credentials are doing: each one's current fingerprint and rotation time,
// where it was last used with which value, the first request that carried the value now in
// force, a "Test credential" request from the host, "Re-resolve now" for references, and the
// usage trail. Refusals (a leak blocked, a credential host over plain HTTP…) raise a notice and
// a desktop notification. Shown only by servers with Hypedeck's credential extensions.
import { useCallback, useEffect, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem } from "../api";
import { notifyCredentialBlocked } from "../desktop";
import type { Instance } from "../model";
import {
  credentials as loadCredentials,
  credentialTitle,
  describeUse,
  events as loadEvents,
  fingerprintLabel,
  injectionText,
  newRefusals,
  outcomeLabel,
  refusalText,
  reResolve,
  testCredential,
  type CredentialStatus,
  type UsageEvent,
} from "../trail";
import { duration, when } from "../model";

const POLL_MS = 3000;

const OUTCOME_BADGE: Record<UsageEvent["outcome"], string> = {
  injected: "badge-ok",
  test: "badge-busy",
  blocked: "badge-parked",
  leak_blocked: "badge-bad",
  failed: "badge-bad",
};

export function CredentialsPanel({ api, instance, now, version }: { api: Hypeman; instance: Instance; now: number; version: number }) {
  const [creds, setCreds] = useState<CredentialStatus[] | null | undefined>(undefined);
  const [trail, setTrail] = useState<UsageEvent[]>([]);
  const [alerts, setAlerts] = useState<string[]>([]);
  const [testUrl, setTestUrl] = useState("");
  const [testResult, setTestResult] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const seen = useRef<string | null | undefined>(undefined);

  const refresh = useCallback(async () => {
    const [c, e] = await Promise.all([loadCredentials(api, instance.id), loadEvents(api, instance.id, 30)]);
    setCreds(c);
    const list = e ?? [];
    setTrail(list);
    // The first load only sets the mark: old refusals are history, not news.
    if (seen.current === undefined) {
      seen.current = list[0]?.time ?? null;
      return;
    }
    const fresh = newRefusals(list, seen.current);
    if (fresh.length > 0) {
      seen.current = fresh[fresh.length - 1]!.time;
      const texts = fresh.map((r) => refusalText(instance.name, r));
      setAlerts((a) => [...texts, ...a].slice(0, 5));
      for (const t of texts) void notifyCredentialBlocked(instance.name, t);
    }
  }, [api, instance.id, instance.name]);

  useEffect(() => {
    let live = true;
    const tick = (): void => {
      refresh().catch(() => live && setCreds((c) => c ?? null));
    };
    tick();
    const timer = window.setInterval(tick, POLL_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [refresh, version]);

  // A test's result is about the state it ran in.
  useEffect(() => setTestResult(null), [instance.state]);

  useEffect(() => {
    const host = creds?.flatMap((c) => c.hosts ?? [])[0];
    if (host && !testUrl) setTestUrl(`https://${host.replace(/^\*\./, "api.")}/`);
  }, [creds, testUrl]);

  if (!creds || creds.length === 0) return null;

  const runTest = (): void => {
    setBusy(true);
    setTestResult(null);
    testCredential(api, instance.id, testUrl)
      .then(
        (r) =>
          setTestResult({
            ok: r.status < 400,
            text: `${String(r.status)} from ${new URL(testUrl).host} with ${r.injected.map(([n, fp]) => `${n} (${fp})`).join(", ") || "no credential"}`,
          }),
        (e: unknown) => {
          const p = problem(e, "");
          setTestResult({ ok: false, text: `${p.code}: ${p.message}` });
        },
      )
      .finally(() => {
        setBusy(false);
        void refresh();
      });
  };

  return (
    <div className="card credentials" id="credentials-card">
      <h3>Credentials in use</h3>
      <p className="muted">The guest only ever sees a placeholder; the proxy puts the real value on its requests.</p>
      {alerts.map((a, i) => (
        <p key={i} className="alert bad credential-alert" role="alert">
          {a}
        </p>
      ))}
      {creds.map((c) => {
        const current = c.fingerprint;
        return (
          <div key={c.name} className="credential" data-credential={c.name}>
            <div className="credential-head">
              <strong data-field="title">{credentialTitle(c)}</strong>{" "}
              <span className="muted" data-field="injection">
                {injectionText(c)}
              </span>
            </div>
            <dl>
              <dt title="A keyed hash of the value in force: it changes when the value does, and does not reveal it">Fingerprint</dt>
              <dd>
                <code className="fingerprint" data-field="fingerprint">
                  {current ?? "no value"}
                </code>
              </dd>
              <dt>Rotated</dt>
              <dd data-field="rotated">
                {c.rotated_at ? `${duration(c.rotated_at, now)} ago (${when(c.rotated_at)})` : "—"}
              </dd>
              <dt>Last used</dt>
              <dd data-field="last-used">{c.last_used ? describeUse(c.last_used, current, now) : "not yet"}</dd>
              <dt>New value first used</dt>
              <dd data-field="first-use">
                {c.first_use_of_current ? `${when(c.first_use_of_current.time)} → ${c.first_use_of_current.host}, ${String(c.first_use_of_current.status ?? "")}` : "not yet"}
              </dd>
              {c.blocked > 0 && (
                <>
                  <dt>Blocked</dt>
                  <dd data-field="blocked">{c.blocked} attempt{c.blocked === 1 ? "" : "s"}</dd>
                </>
              )}
              {c.reference && (
                <>
                  <dt>Source</dt>
                  <dd>
                    <code>{c.reference}</code>{" "}
                    <button
                      type="button"
                      className="link re-resolve"
                      onClick={() => {
                        setBusy(true);
                        reResolve(api, instance.id, c.name)
                          .then(setCreds, (e: unknown) => {
                            const p = problem(e, "");
                            setTestResult({ ok: false, text: `${p.code}: ${p.message}` });
                          })
                          .finally(() => setBusy(false));
                      }}
                    >
                      Re-resolve now
                    </button>
                  </dd>
                </>
              )}
            </dl>
          </div>
        );
      })}
      <form
        className="credential-test"
        onSubmit={(e) => {
          e.preventDefault();
          runTest();
        }}
      >
        <input id="credential-test-url" type="url" value={testUrl} onChange={(e) => {
            setTestUrl(e.target.value);
            setTestResult(null);
          }} aria-label="URL to test" />
        <button id="credential-test" type="submit" disabled={busy || !testUrl}>
          Test credential
        </button>
      </form>
      {testResult && (
        <p id="credential-test-result" className={testResult.ok ? "alert ok" : "alert bad"} role="status">
          {testResult.text}
        </p>
      )}
      <h3>Trail</h3>
      {trail.length === 0 ? (
        <p className="muted">No request has used a credential yet.</p>
      ) : (
        <ol id="credential-trail" className="trail">
          {trail.map((e, i) => (
            <li key={`${e.time}-${String(i)}`} data-outcome={e.outcome}>
              <span className={`badge ${OUTCOME_BADGE[e.outcome]}`}>{outcomeLabel(e.outcome)}</span> <span className="muted">{duration(e.time, now)} ago</span>{" "}
              {e.credential} → {e.method} {e.host} {e.status !== undefined ? String(e.status) : ""}{" "}
              <code>{fingerprintLabel(e.fingerprint, creds.find((c) => c.name === e.credential)?.fingerprint ?? null)}</code>
              {e.reason && <span className="muted"> — {e.reason}</span>}
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}
