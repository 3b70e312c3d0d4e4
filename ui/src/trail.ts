// Credential checks (Hypedeck's `/instances/{id}/credentials…` extensions) and the words the
// details page uses for them. Pure except the API calls; servers without the extension (404)
// give null, and the page then shows nothing about it.
import Hypeman, { APIError } from "@onkernel/hypeman";

import { duration } from "./model";

/** `failed`: the request was to carry it, but the upstream could not be reached (the guest got a 502). */
export type Outcome = "injected" | "test" | "blocked" | "leak_blocked" | "failed";

export interface UsageEvent {
  time: string;
  credential: string;
  fingerprint: string;
  host: string;
  method: string;
  status?: number;
  outcome: Outcome;
  reason?: string;
}

export interface CredentialStatus {
  name: string;
  env: string;
  hosts: string[] | null;
  headers: string[];
  fingerprint: string | null;
  rotated_at: string | null;
  reference?: string;
  reference_kind?: "op" | "keychain" | "cmd";
  last_used: UsageEvent | null;
  first_use_of_current: UsageEvent | null;
  blocked: number;
}

export interface TestOutcome {
  status: number;
  injected: [string, string][];
}

async function orNull<T>(call: Promise<T>): Promise<T | null> {
  try {
    return await call;
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** The instance's credentials, or null from a server without the extension. */
export function credentials(api: Hypeman, id: string): Promise<CredentialStatus[] | null> {
  return orNull(api.get<CredentialStatus[]>(`/instances/${encodeURIComponent(id)}/credentials`));
}

/** The newest `limit` events of the trail, newest first. */
export function events(api: Hypeman, id: string, limit = 30): Promise<UsageEvent[] | null> {
  return orNull(api.get<UsageEvent[]>(`/instances/${encodeURIComponent(id)}/credentials/events`, { query: { limit } }));
}

export function testCredential(api: Hypeman, id: string, url: string): Promise<TestOutcome> {
  return api.post<TestOutcome>(`/instances/${encodeURIComponent(id)}/credentials/test`, { body: { url } });
}

export function reResolve(api: Hypeman, id: string, name: string): Promise<CredentialStatus[]> {
  return api.post<CredentialStatus[]>(`/instances/${encodeURIComponent(id)}/credentials/${encodeURIComponent(name)}/resolve`);
}

const OUTCOME_LABEL: Record<Outcome, string> = {
  injected: "injected",
  test: "test",
  blocked: "blocked",
  leak_blocked: "leak blocked",
  failed: "upstream failed",
};

export function outcomeLabel(o: Outcome): string {
  return OUTCOME_LABEL[o];
}

/** `"a1b2c3d4e5f60718 (current)"` or `"… (previous)"`. */
export function fingerprintLabel(fp: string, current: string | null): string {
  return `${fp} (${fp === current ? "current" : "previous"})`;
}

/** `"12s ago → api.openai.com, 200, fingerprint a1b2c3d4e5f60718 (current)"`. */
export function describeUse(e: UsageEvent, current: string | null, now: number): string {
  const status = e.status === undefined ? "not sent" : String(e.status);
  return `${duration(e.time, now)} ago → ${e.host}, ${status}, fingerprint ${fingerprintLabel(e.fingerprint, current)}`;
}

/** Refused attempts newer than `since` (ISO time; everything when null), oldest first. */
export function newRefusals(list: readonly UsageEvent[], since: string | null): UsageEvent[] {
  return list
    .filter((e) => (e.outcome === "blocked" || e.outcome === "leak_blocked") && (since === null || e.time > since))
    .sort((a, b) => a.time.localeCompare(b.time));
}

/** The sentence a notification says about a refusal. */
export function refusalText(instance: string, e: UsageEvent): string {
  return e.outcome === "leak_blocked"
    ? `${instance} tried to send the real ${e.credential} to ${e.host}; Hypedeck blocked it.`
    : `${instance}: ${e.credential} was not sent to ${e.host} (${e.reason ?? "blocked"}).`;
}

/**
 * A credential's name in plain words: its name, and the env var its value comes from only when
 * that is another name (`"OPENAI"` + `OPENAI_KEY` → `"OPENAI (value of OPENAI_KEY)"`).
 */
export function credentialTitle(c: Pick<CredentialStatus, "name" | "env">): string {
  return c.name === c.env ? c.name : `${c.name} (value of ${c.env})`;
}

/** Where the proxy puts it: `"Sent as the Authorization header to api.example.com"`. */
export function injectionText(c: Pick<CredentialStatus, "headers" | "hosts">): string {
  const headers = c.headers.length === 0 ? "no header" : c.headers.length === 1 ? `the ${c.headers[0]!} header` : `the ${c.headers.join(", ")} headers`;
  const hosts = c.hosts === null ? "every host" : c.hosts.length === 0 ? "no host" : c.hosts.join(", ");
  return `Sent as ${headers} to ${hosts}`;
}
