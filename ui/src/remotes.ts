// Remote Hypeman servers the UI can switch to. In the desktop app the shell keeps them (names
// and URLs in its data dir, API keys in the OS keychain) and checks their health from Rust; in
// a plain browser they live in this tab's sessionStorage (gone when the tab closes) and the
// health check is an SDK call. Pure parts (URL checks, health wording) are unit-tested.
import Hypeman, { APIConnectionError, APIConnectionTimeoutError, APIError } from "@onkernel/hypeman";

import { problem, type Problem } from "./api";
import type { Connection } from "./connection";
import { inDesktop, shell } from "./desktop";

export interface Remote {
  id: string;
  name: string;
  url: string;
}

/** A connection's health: the round trip of an authenticated call, or what is wrong. */
export interface Health {
  latency_ms: number | null;
  problem: Problem | null;
}

const STORAGE_KEY = "hypedeck.remotes";

interface Stored extends Remote {
  key: string;
}

/** The base URL of an API, checked like the shell checks it; throws a sentence otherwise. */
export function normalizeUrl(text: string): string {
  const url = text.trim().replace(/\/+$/, "");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(`${JSON.stringify(url)}: only http and https URLs are supported`);
  }
  if (parsed.username || parsed.password || parsed.search || parsed.hash) {
    throw new Error(`${JSON.stringify(url)}: give the API's base URL only (no credentials, query or fragment)`);
  }
  return url;
}

/** `host:port` of a URL, for messages. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** Health in the shell's words from what an SDK call did (browser mode). */
export function healthFrom(url: string, started: number, ended: number, error: unknown): Health {
  const host = hostOf(url);
  const latency_ms = ended - started;
  if (error === null) return { latency_ms, problem: null };
  if (error instanceof APIConnectionTimeoutError) {
    return { latency_ms: null, problem: { code: "timeout", message: `${host} did not answer within 5 s` } };
  }
  if (error instanceof APIConnectionError) {
    return { latency_ms: null, problem: { code: "unreachable", message: `cannot reach ${host}: ${error.message}` } };
  }
  const p = problem(error, url);
  if (error instanceof APIError && error.status === 401) {
    return { latency_ms, problem: { code: "unauthorized", message: `${host} refused the API key (401: ${p.message})` } };
  }
  return { latency_ms, problem: p };
}

function stored(): Stored[] {
  try {
    const value: unknown = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "[]");
    return Array.isArray(value) ? (value as Stored[]).filter((r) => typeof r.id === "string" && typeof r.key === "string") : [];
  } catch {
    return [];
  }
}

function store(list: Stored[]): void {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(list));
}

/** Every remote. */
export async function listRemotes(): Promise<Remote[]> {
  if (inDesktop()) return shell<Remote[]>("remotes");
  return stored().map(({ id, name, url }) => ({ id, name, url }));
}

/** Adds a remote. Throws a sentence for a bad name, URL or key. */
export async function addRemote(name: string, url: string, key: string): Promise<Remote> {
  if (inDesktop()) return shell<Remote>("remote_add", { name, url, key });
  const list = stored();
  const n = name.trim();
  if (n === "") throw new Error("give the remote a name");
  const u = normalizeUrl(url);
  if (key.trim() === "") throw new Error("the API key is empty");
  if (list.some((r) => r.name === n)) throw new Error(`a remote named ${JSON.stringify(n)} exists already`);
  const remote = { id: crypto.randomUUID(), name: n, url: u };
  store([...list, { ...remote, key: key.trim() }]);
  return remote;
}

/** Forgets a remote and its key. */
export async function removeRemote(id: string): Promise<void> {
  if (inDesktop()) return shell<undefined>("remote_remove", { id });
  store(stored().filter((r) => r.id !== id));
}

/** The connection to a remote. */
export async function remoteConnection(id: string): Promise<Connection> {
  if (inDesktop()) return shell<Connection>("remote_connection", { id });
  const r = stored().find((r) => r.id === id);
  if (!r) throw new Error(`no remote ${id}`);
  return { url: r.url, token: r.key, mode: "remote" };
}

/** The health of the current connection (`remoteId` null: the home connection). */
export async function checkHealth(conn: Connection, remoteId: string | null): Promise<Health> {
  if (inDesktop()) return shell<Health>("health", { id: remoteId });
  const api = new Hypeman({ baseURL: conn.url, apiKey: conn.token, maxRetries: 0, timeout: 5_000 });
  const started = performance.now();
  try {
    await api.instances.list();
    return healthFrom(conn.url, started, performance.now(), null);
  } catch (e) {
    return healthFrom(conn.url, started, performance.now(), e);
  }
}
