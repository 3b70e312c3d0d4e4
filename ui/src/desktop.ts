// The one place the UI talks to the desktop shell (Tauri `invoke`). Everything else goes to the
// Hypeman API through the SDK, so the same UI runs in a plain browser.
import { invoke, isTauri } from "@tauri-apps/api/core";

/** How the desktop window reaches the API: the engine it started, or the one it attached to. */
export interface DesktopConnection {
  url: string;
  token: string;
  mode: "embedded" | "attached" | "remote";
}

/** The desktop shell could not provide a connection; `message` says why. */
export class DesktopError extends Error {
  override name = "DesktopError";
}

/** True inside the Hypedeck desktop window. */
export function inDesktop(): boolean {
  return isTauri();
}

/** The API the desktop shell started or attached to. Rejects with a [`DesktopError`]. */
export async function desktopConnection(): Promise<DesktopConnection> {
  try {
    return await invoke<DesktopConnection>("connection");
  } catch (e) {
    throw new DesktopError(typeof e === "string" ? e : String(e));
  }
}

let painted = false;

/** Tells the shell the first frame is on screen (once; nothing in a browser). */
export function firstPaint(): void {
  if (painted || !inDesktop()) return;
  painted = true;
  invoke("first_paint").catch(() => {
    // An older shell without the command: nothing to measure.
  });
}

/** A desktop notification that a rotation failed (nothing in a browser, never throws). */
export async function notifyRotationFailed(instance: string, message: string): Promise<void> {
  if (!inDesktop()) return;
  try {
    await invoke("notify_rotation_failed", { instance, message });
  } catch {
    // Notifications are best-effort.
  }
}

/** A desktop notification that a credential use was refused (nothing in a browser). */
export async function notifyCredentialBlocked(instance: string, message: string): Promise<void> {
  if (!inDesktop()) return;
  try {
    await invoke("notify_credential_blocked", { instance, message });
  } catch {
    // Notifications are best-effort.
  }
}

/** Desktop notification for a destination the sandbox network refused (first time only). */
export async function notifyNetworkBlocked(instance: string, message: string): Promise<void> {
  if (!inDesktop()) return;
  try {
    await invoke("notify_network_blocked", { instance, message });
  } catch {
    // Notifications are best-effort.
  }
}

/** Calls a shell command; its error sentence becomes a [`DesktopError`]. */
export async function shell<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    throw new DesktopError(typeof e === "string" ? e : String(e));
  }
}

/**
 * Whether `method path` may set or use secret references, so it goes to this computer's engine
 * over its Unix socket through the shell (`local_api`) instead of HTTP. Must match the shell's
 * own list (`src-tauri/src/local.rs`).
 */
export function goesLocal(method: string, path: string): boolean {
  const parts = path.replace(/^\//, "").split("/");
  const plain = (s: string | undefined) => !!s && !/[?#%.]/.test(s);
  switch (method.toUpperCase()) {
    case "POST":
      return (
        (parts.length === 1 && parts[0] === "instances") ||
        (parts.length === 5 && parts[0] === "instances" && plain(parts[1]) && parts[2] === "credentials" && plain(parts[3]) && parts[4] === "resolve")
      );
    case "PATCH":
      return parts.length === 2 && parts[0] === "instances" && plain(parts[1]);
    case "GET":
      return parts.join("/") === "system/keychain/items";
    default:
      return false;
  }
}

/**
 * A `fetch` for the SDK in the desktop window on this computer's engine: requests that may set
 * secret references (create, rotate, re-resolve, the keychain picker) go through the shell to
 * the engine's Unix socket, where the engine knows the user at this machine is asking; the
 * rest goes over HTTP as usual.
 */
export function desktopFetch(base: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const href = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(href);
    const method = (init?.method ?? "GET").toUpperCase();
    if (url.search !== "" || !goesLocal(method, url.pathname)) {
      return base(input, init);
    }
    const body = typeof init?.body === "string" ? init.body : undefined;
    const answer = await shell<{ status: number; body: string }>("local_api", { method, path: url.pathname, body });
    return new Response(answer.status === 204 || answer.body === "" ? null : answer.body, {
      status: answer.status,
      headers: { "content-type": "application/json" },
    });
  };
}
