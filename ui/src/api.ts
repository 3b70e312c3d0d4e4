// The Hypeman API, through the official SDK only, and its errors as `{code, message}`.
import Hypeman, { APIConnectionError, APIError } from "@onkernel/hypeman";

import type { Connection } from "./connection";
import { desktopFetch, inDesktop } from "./desktop";
import { allowedKeysFrom, PROBE_BODY, PROBE_KEY } from "./forms";
import type { Backend, Problem, SystemChecks, Template } from "./model";
import type { EffectiveCommand } from "./details";
import type { FleetStats, StatsHistory } from "./stats";
import { credentials, type CredentialStatus } from "./trail";

export type { Problem } from "./model";
export type Instance = Hypeman.Instance;

/**
 * An SDK client for the connection. The UI polls, so it never retries on its own. In the
 * desktop window on this computer's engine, the requests that may set secret references go
 * through the shell to the engine's Unix socket ([`desktopFetch`]).
 */
export function client(conn: Connection): Hypeman {
  const local = inDesktop() && (conn.mode === "embedded" || conn.mode === "attached");
  return new Hypeman({
    baseURL: conn.url,
    apiKey: conn.token,
    maxRetries: 0,
    timeout: 10_000,
    ...(local ? { fetch: desktopFetch() } : {}),
  });
}

/**
 * How long a create may take before the UI gives up: the server may still pull the image (it
 * waits up to 45 s), build the guest's boot files on the first create, and probe KVM. Giving up
 * earlier would abort the request and cancel the create half-way.
 */
export const CREATE_TIMEOUT_MS = 120_000;

/** Turns whatever a call threw into the API's `{code, message}` (or the closest thing). */
export function problem(error: unknown, url: string): Problem {
  if (error instanceof APIConnectionError) {
    return { code: "unreachable", message: `cannot reach ${url}: ${error.message}` };
  }
  if (error instanceof APIError) {
    const body: unknown = error.error;
    if (
      typeof body === "object" &&
      body !== null &&
      "code" in body &&
      "message" in body &&
      typeof body.code === "string" &&
      typeof body.message === "string"
    ) {
      return { code: body.code, message: body.message };
    }
    return { code: `http_${String(error.status)}`, message: error.message };
  }
  if (error instanceof Error) {
    return { code: error.name, message: error.message };
  }
  return { code: "error", message: String(error) };
}

/** What the page knows about an instance's credentials before anything is rotated. */
export interface RotationKeys {
  /** The env keys `PATCH /instances/{id}` accepts (credentials' `source.env`); `[]`: none. */
  keys: string[];
  /** The current value's fingerprint per env key (Hypedeck servers only). */
  fingerprints: Record<string, string | null>;
  /** Whether the server reports credential status (Hypedeck's extension). */
  reported: boolean;
}

/**
 * The env keys `PATCH /instances/{id}` accepts for this instance (its credential policies'
 * `source.env`). Hypedeck's `GET /instances/{id}/credentials` names them without an error; only
 * servers without it (upstream Hypeman, 404) get the probe PATCH, which is always refused whole
 * (see `PROBE_BODY`) and whose 400 lists them.
 */
export async function rotationKeys(api: Hypeman, id: string): Promise<RotationKeys> {
  const listed = await credentials(api, id);
  if (listed !== null) {
    return { keys: credentialKeys(listed), fingerprints: Object.fromEntries(listed.map((c) => [c.env, c.fingerprint])), reported: true };
  }
  return { keys: await probeKeys(api, id), fingerprints: {}, reported: false };
}

/** `rotationKeys`' keys: `[]` when nothing rotates. */
export async function rotatableKeys(api: Hypeman, id: string): Promise<string[]> {
  return (await rotationKeys(api, id)).keys;
}

/** The distinct env keys credentials take their values from, in the API's order. */
export function credentialKeys(list: readonly Pick<CredentialStatus, "env">[]): string[] {
  return [...new Set(list.map((c) => c.env))];
}

async function probeKeys(api: Hypeman, id: string): Promise<string[]> {
  try {
    await api.instances.update(id, PROBE_BODY);
  } catch (e) {
    const p = problem(e, "");
    const keys = allowedKeysFrom(p);
    if (keys !== null) return keys.filter((k) => k !== PROBE_KEY);
    throw e;
  }
  // A server that accepted the probe: nothing we can tell (and nothing was set to a value).
  return [];
}

/**
 * What the instance runs (Hypedeck's `GET /instances/{id}/command`); null from servers without
 * it (upstream Hypeman), where the page does not say.
 */
export async function effectiveCommand(api: Hypeman, id: string): Promise<EffectiveCommand | null> {
  try {
    return await api.get<EffectiveCommand>(`/instances/${encodeURIComponent(id)}/command`);
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/**
 * The engine's backends (Hypedeck's `GET /hypervisors`); null from servers without it
 * (upstream Hypeman), so the UI assumes every backend can do everything.
 */
export async function hypervisors(api: Hypeman): Promise<Backend[] | null> {
  try {
    return await api.get<Backend[]>("/hypervisors");
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** The engine's VM templates (Hypedeck's `GET /templates`); null from servers without them. */
export async function templates(api: Hypeman): Promise<Template[] | null> {
  try {
    return await api.get<Template[]>("/templates");
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** Removes a template (`DELETE /templates/{id}`): the next start of its shape boots cold. */
export async function deleteTemplate(api: Hypeman, id: string): Promise<void> {
  await api.delete(`/templates/${encodeURIComponent(id)}`);
}

/**
 * What this machine lacks to run sandboxes (Hypedeck's `GET /system/checks`); null from servers
 * without it (upstream Hypeman), which are assumed ready.
 */
export async function systemChecks(api: Hypeman): Promise<SystemChecks | null> {
  try {
    return await api.get<SystemChecks>("/system/checks");
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** The sample image's name (built on the engine's machine, no registry involved). */
export const HELLO_IMAGE = "hypedeck.local/samples/hello:1";

/**
 * One click to a first sandbox: builds the sample image (Hypedeck's
 * `POST /system/samples/hello`) and creates an instance of it named `hello` (or `hello-2`, …).
 */
export async function createHello(api: Hypeman, taken: readonly string[]): Promise<Instance> {
  await api.post("/system/samples/hello");
  let name = "hello";
  for (let n = 2; taken.includes(name); n++) name = `hello-${String(n)}`;
  return api.instances.create({ name, image: HELLO_IMAGE, size: "256MB", vcpus: 1 }, { timeout: CREATE_TIMEOUT_MS });
}

/**
 * The instance's snapshot schedule (upstream's `GET /instances/{id}/snapshot-schedule`); null
 * when it has none (404 `not_found`).
 */
export async function snapshotSchedule(api: Hypeman, id: string): Promise<Hypeman.SnapshotSchedule | null> {
  try {
    return await api.instances.snapshotSchedule.get(id);
  } catch (e) {
    if (e instanceof APIError && e.status === 404 && problem(e, "").code === "not_found" && /schedule/.test(problem(e, "").message)) return null;
    throw e;
  }
}

/**
 * An instance's recent resource use (Hypedeck's `GET /instances/{id}/stats/history`); null from
 * servers without it (upstream Hypeman), where the page keeps its own from `GET /instances/{id}/stats`.
 */
export async function statsHistory(api: Hypeman, id: string): Promise<StatsHistory | null> {
  try {
    return await api.get<StatsHistory>(`/instances/${encodeURIComponent(id)}/stats/history`);
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}

/** The host's and every running instance's resource use (Hypedeck's `GET /stats`); null from servers without it. */
export async function fleetStats(api: Hypeman): Promise<FleetStats | null> {
  try {
    return await api.get<FleetStats>("/stats");
  } catch (e) {
    if (e instanceof APIError && e.status === 404) return null;
    throw e;
  }
}
