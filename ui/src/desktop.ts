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
