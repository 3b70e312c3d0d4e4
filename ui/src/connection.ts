// Where the API is and how to authenticate: from the desktop shell inside Tauri, otherwise from
// `?api=<url>&token=<token>` in the location, the browser's storage, or the connect form.
import { desktopConnection, inDesktop } from "./desktop";

export type Mode = "embedded" | "attached" | "browser" | "remote";

export interface Connection {
  url: string;
  token: string;
  mode: Mode;
}

const STORAGE_KEY = "hypedeck.connection";

/**
 * The connection the page starts with, or `null` in a browser that has none yet (show the
 * form). Rejects if the desktop shell reports an error.
 */
export async function initialConnection(): Promise<Connection | null> {
  if (inDesktop()) {
    return desktopConnection();
  }
  return fromLocation() ?? fromStorage();
}

/** Remembers a browser connection (from the form) for the next visit. */
export function rememberBrowserConnection(url: string, token: string): Connection {
  const conn: Connection = { url: url.trim(), token: token.trim(), mode: "browser" };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ url: conn.url, token: conn.token }));
  } catch {
    // Storage can be disabled; the connection still works for this page.
  }
  return conn;
}

/** Forgets the stored browser connection. */
export function forgetBrowserConnection(): void {
  try {
    localStorage.removeItem(STORAGE_KEY);
  } catch {
    // Nothing stored.
  }
}

function fromLocation(): Connection | null {
  const url = new URL(window.location.href);
  const api = url.searchParams.get("api");
  const token = url.searchParams.get("token");
  if (!api || token === null) {
    return null;
  }
  // Keep the token out of the address bar and the history once it is read.
  url.searchParams.delete("api");
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url);
  return rememberBrowserConnection(api, token);
}

function fromStorage(): Connection | null {
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
      return { url: value.url, token: value.token, mode: "browser" };
    }
  } catch {
    // Corrupt or unavailable storage: ask again.
  }
  return null;
}
