// Where the API is and how to authenticate: from the desktop shell inside Tauri, otherwise from
// a link (`#api=<url>&token=<token>`, or the older `?api=<url>&token=<token>`), the browser's
// storage, or the connect form.
//
// A link is a request, not an order: a crafted link could point the page at a server that then
// receives everything typed here (credential values in Create and Rotate). So the page reads a
// link once at load and strips it from the address bar and the history before anything else,
// and `decideLink` says whether it may be used as is or the user must confirm it first.
import { desktopConnection, inDesktop } from "./desktop";
import type { Problem } from "./model";
import { checkHealth, hostOf, normalizeUrl } from "./remotes";

export type Mode = "embedded" | "attached" | "browser" | "remote";

export interface Connection {
  url: string;
  token: string;
  mode: Mode;
}

/** An API and token as a link or the browser's storage gives them. */
export interface Link {
  url: string;
  token: string;
}

/** A link the user must confirm before the page uses it. */
export interface LinkQuestion {
  /** What the link asks for (its URL checked and normalized). */
  link: Link;
  /** The connection this browser already has, if any. */
  saved: Link | null;
  /** The link names the saved server with another token. */
  sameServer: boolean;
}

/** What to do with a link, given the saved connection. */
export type LinkDecision =
  /** Connect to the link's API without asking (and remember it). */
  | { action: "use"; link: Link }
  /** Show where the link wants to connect; only an explicit yes uses it. */
  | { action: "ask"; question: LinkQuestion }
  /** No link, or one that cannot be used (`reason` says why); start as if there were none. */
  | { action: "ignore"; reason: string | null };

/** What the page starts with. */
export type Start =
  /** A connection, or `null` for the connect form; `note` says why a link was not used. */
  | { kind: "connected"; conn: Connection | null; note: string | null }
  /** A link to confirm first. */
  | { kind: "ask"; question: LinkQuestion };

const STORAGE_KEY = "hypedeck.connection";
/** The API URL of the last connection the user changed away from (no token), for the form. */
const LAST_URL_KEY = "hypedeck.last-api";

/**
 * The connection the page starts with, given the link it was opened with (see `takeLink`).
 * Rejects if the desktop shell reports an error. The desktop window ignores links.
 */
export async function initialConnection(link: Link | null): Promise<Start> {
  if (inDesktop()) {
    return { kind: "connected", conn: await desktopConnection(), note: null };
  }
  const saved = fromStorage();
  const decision = decideLink(saved, link);
  switch (decision.action) {
    case "use":
      return { kind: "connected", conn: rememberBrowserConnection(decision.link.url, decision.link.token), note: null };
    case "ask":
      return { kind: "ask", question: decision.question };
    case "ignore":
      return { kind: "connected", conn: saved && browserConnection(saved), note: decision.reason };
  }
}

/**
 * Whether a link may be used without asking. Asked: a link to another server than the saved
 * one, or to the saved server with another token; with nothing saved, a link to any host
 * that is not this machine's loopback. Used as is: the saved connection itself, or, with
 * nothing saved, a loopback API (what `hypedeck serve` runs; a page on the web cannot receive
 * what is sent there, and the header always shows the URL in use). Pure.
 */
export function decideLink(saved: Link | null, link: Link | null): LinkDecision {
  if (link === null) {
    return { action: "ignore", reason: null };
  }
  let url: string;
  try {
    url = normalizeUrl(link.url);
  } catch (e) {
    return { action: "ignore", reason: `the link's API URL is unusable: ${e instanceof Error ? e.message : String(e)}` };
  }
  const wanted: Link = { url, token: link.token.trim() };
  if (saved === null) {
    return isLoopback(url) ? { action: "use", link: wanted } : { action: "ask", question: { link: wanted, saved: null, sameServer: false } };
  }
  const sameServer = sameUrl(saved.url, url);
  if (sameServer && saved.token === wanted.token) {
    return { action: "use", link: wanted };
  }
  return { action: "ask", question: { link: wanted, saved, sameServer } };
}

/**
 * The link in a page address: `api` and `token` from the fragment (preferred: browsers never
 * send it to the server hosting the page) or the query, and the address without them (`null`
 * when there is nothing to strip). A lone `token` or `api` is stripped too. Pure.
 */
export function readLink(href: string): { link: Link | null; stripped: string | null } {
  const address = new URL(href);
  const fragment = new URLSearchParams(address.hash.replace(/^#/, ""));
  const inFragment = fragment.has("api") || fragment.has("token");
  const inQuery = address.searchParams.has("api") || address.searchParams.has("token");
  if (!inFragment && !inQuery) {
    return { link: null, stripped: null };
  }
  const from = inFragment ? fragment : address.searchParams;
  const api = from.get("api");
  const token = from.get("token");
  const link = api && token !== null ? { url: api, token } : null;
  address.searchParams.delete("api");
  address.searchParams.delete("token");
  if (inFragment) {
    fragment.delete("api");
    fragment.delete("token");
    address.hash = fragment.toString();
  }
  return { link, stripped: address.href };
}

/**
 * Reads the link this page was opened with and removes it from the address bar and the
 * history entry at once, whatever is decided about it later. Call once, before rendering.
 */
export function takeLink(): Link | null {
  const { link, stripped } = readLink(window.location.href);
  if (stripped !== null) {
    window.history.replaceState(window.history.state, "", stripped);
  }
  return link;
}

/** Remembers a browser connection (from the form or a confirmed link) for the next visit. */
export function rememberBrowserConnection(url: string, token: string): Connection {
  const conn: Connection = { url: url.trim(), token: token.trim(), mode: "browser" };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ url: conn.url, token: conn.token }));
  } catch {
    // Storage can be disabled; the connection still works for this page.
  }
  return conn;
}

/** The browser connection for a saved (or kept) API and token. */
export function browserConnection(link: Link): Connection {
  return { url: link.url, token: link.token, mode: "browser" };
}

/**
 * Forgets the stored browser connection's token; its URL (`url`, if given) stays for the connect
 * form (`lastBrowserUrl`).
 */
export function forgetBrowserConnection(url?: string): void {
  try {
    localStorage.removeItem(STORAGE_KEY);
    if (url) localStorage.setItem(LAST_URL_KEY, url);
  } catch {
    // Nothing stored.
  }
}

/** The URL the connect form starts with: the last one changed away from, or empty. */
export function lastBrowserUrl(): string {
  try {
    return localStorage.getItem(LAST_URL_KEY) ?? "";
  } catch {
    return "";
  }
}

/** True for the API's answer to a missing or wrong token (401; upstream spells the code `Unauthorized`). */
export function refusedToken(p: Problem | null): boolean {
  return p !== null && /^(unauthorized|http_401)$/i.test(p.code);
}

/** What the connect form says when `url` with this token does not work (a 401, no answer…). Pure. */
export function connectProblem(url: string, p: Problem): string {
  const host = hostOf(url);
  if (refusedToken(p)) {
    return `${host} refused this token (401). Run \`hypedeck token\` on the machine running it and paste what it prints.`;
  }
  if (p.code === "timeout") return `${host} did not answer within 5 s. Is the URL right, and is the engine running?`;
  if (p.code === "unreachable") return `Cannot reach ${host}: is \`hypedeck serve\` running there, and does it allow this page's origin (HYPEDECK_CORS_ORIGINS)?`;
  return `${host} answered with ${p.code}: ${p.message}`;
}

/**
 * Checks an API URL and token from the connect form before the page uses them: null when an
 * authenticated call works, otherwise the sentence to show.
 */
export async function checkBrowserConnection(url: string, token: string): Promise<string | null> {
  let base: string;
  try {
    base = normalizeUrl(url);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (token.trim() === "") return "The token is empty.";
  const health = await checkHealth({ url: base, token: token.trim(), mode: "browser" }, null);
  if (health.problem === null) return null;
  const p = health.problem.code === "unauthorized" ? { code: "http_401", message: health.problem.message } : health.problem;
  return connectProblem(base, p);
}

/** True for an API on this machine's loopback (`localhost`, `*.localhost`, 127/8, `[::1]`). */
export function isLoopback(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host.endsWith(".localhost") || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function sameUrl(a: string, b: string): boolean {
  try {
    return new URL(normalizeUrl(a)).href === new URL(normalizeUrl(b)).href;
  } catch {
    return false;
  }
}

function fromStorage(): Link | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (raw === null) {
      return null;
    }
    const value: unknown = JSON.parse(raw);
    if (
      typeof value === "object" &&
      value !== null &&
      "url" in value &&
      "token" in value &&
      typeof value.url === "string" &&
      typeof value.token === "string"
    ) {
      return { url: value.url, token: value.token };
    }
  } catch {
    // Corrupt or unavailable storage: ask again.
  }
  return null;
}
