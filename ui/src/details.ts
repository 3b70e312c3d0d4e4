// The instance page's pure logic: which tabs it has and how the keyboard moves between them,
// how a command is written for reading, which env values are credentials, and why a rotation
// cannot run now. No React, no I/O.
import type { State } from "./model";

/** The page's tabs, in order. New ones are added here and in the page. */
export type DetailTab = "overview" | "logs" | "terminal" | "credentials" | "snapshots" | "stats" | "network";

export const TAB_LABEL: Record<DetailTab, string> = {
  overview: "Overview",
  logs: "Logs",
  terminal: "Terminal",
  credentials: "Credentials",
  snapshots: "Snapshots",
  stats: "Stats",
  network: "Network",
};

/**
 * The tabs an instance's page shows: Network only for an instance with a network, last, so the
 * other tabs keep their places from one instance to the next.
 */
export function detailTabs(networkEnabled: boolean): DetailTab[] {
  const tabs: DetailTab[] = ["overview", "logs", "terminal", "credentials", "snapshots", "stats"];
  if (networkEnabled) tabs.push("network");
  return tabs;
}

/** A value read back from elsewhere (history state), if it names one of `tabs`. */
export function tabOrDefault(value: unknown, tabs: readonly DetailTab[]): DetailTab {
  return typeof value === "string" && (tabs as readonly string[]).includes(value) ? (value as DetailTab) : "overview";
}

/**
 * The tab a key moves to from `current` (WAI-ARIA tabs: arrows wrap, Home and End go to the
 * ends), or null for any other key.
 */
export function tabAfterKey(tabs: readonly DetailTab[], current: DetailTab, key: string): DetailTab | null {
  const i = tabs.indexOf(current);
  if (i < 0 || tabs.length === 0) return null;
  switch (key) {
    case "ArrowRight":
      return tabs[(i + 1) % tabs.length]!;
    case "ArrowLeft":
      return tabs[(i - 1 + tabs.length) % tabs.length]!;
    case "Home":
      return tabs[0]!;
    case "End":
      return tabs[tabs.length - 1]!;
    default:
      return null;
  }
}

/** One word as a POSIX shell reads it back: bare when safe, else single-quoted. */
export function shellQuote(word: string): string {
  if (word !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An argv as one line a user can read and paste into a shell. */
export function commandLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}

/** Hypedeck's `GET /instances/{id}/command`: what the instance runs, and where each part comes from. */
export interface EffectiveCommand {
  /** What actually runs; `[]` when the image is not available locally. */
  argv: string[];
  entrypoint: { value: string[]; from: "image" | "instance" };
  cmd: { value: string[]; from: "image" | "instance" };
  working_dir: string | null;
}

/** `"from the image"` / `"set for this instance"`. */
export function originText(from: "image" | "instance"): string {
  return from === "image" ? "from the image" : "set for this instance";
}

/** One row of the Environment card. */
export type EnvEntry =
  | { key: string; kind: "plain"; value: string }
  /** A credential's source: its value is never shown on the Environment card. */
  | { key: string; kind: "credential" }
  /** Which keys are credentials is not known (yet): nothing is shown. */
  | { key: string; kind: "unknown" };

/**
 * The env as the Environment card shows it, sorted by key. `credentialKeys` are the env keys
 * credentials take their value from; null while unknown (every value is then withheld).
 */
export function envEntries(env: Record<string, string> | undefined, credentialKeys: readonly string[] | null): EnvEntry[] {
  return Object.entries(env ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, value]): EnvEntry => {
      if (credentialKeys === null) return { key, kind: "unknown" };
      return credentialKeys.includes(key) ? { key, kind: "credential" } : { key, kind: "plain", value };
    });
}

/**
 * Why credentials cannot be rotated in `state` (upstream changes env only in Running or
 * Initializing), with what to do about it; null when they can.
 */
export function rotationRefusal(state: State): string | null {
  if (state === "Running" || state === "Initializing") return null;
  const fix: Partial<Record<State, string>> = {
    Stopped: "Start it first.",
    Standby: "Restore it first.",
    Paused: "It is paused only while a standby is being saved; wait a moment.",
    Shutdown: "Start it again first.",
    Created: "Wait until it boots.",
    Unknown: "Its state could not be read; try again when it shows Running.",
  };
  return `Rotation applies live to a running instance; this one is ${state}. ${fix[state] ?? "Start it first."}`;
}
