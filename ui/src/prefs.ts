// The settings: in the desktop app the shell keeps them (a JSON file in the config dir, checked
// by `hypedeck_cli::settings`); in a browser the page keeps the ones that concern it (theme and
// the create form's defaults) in local storage, checked by the same rules here.
import { invoke } from "@tauri-apps/api/core";

import { inDesktop, shell } from "./desktop";
import { memoryProblem, type CreateDraft } from "./forms";

export type Theme = "system" | "light" | "dark";

export interface Settings {
  theme: Theme;
  default_hypervisor?: string;
  default_vcpus?: number;
  default_memory?: string;
  /** Desktop only (apply when the app starts). */
  data_dir?: string;
  kernel_deb?: string;
  listen?: string;
  console_log_max?: string;
}

/** What the settings page shows besides the values. */
export interface SettingsView {
  settings: Settings;
  /** Where they are kept (a file path, or "this browser"). */
  path: string | null;
  data_dir?: string | null;
  restart_needed: boolean;
  load_error?: string | null;
}

export interface FieldProblem {
  field: string;
  message: string;
}

/** Saving failed: a sentence and the fields at fault. */
export class SettingsError extends Error {
  override name = "SettingsError";
  constructor(
    message: string,
    readonly fields: FieldProblem[],
  ) {
    super(message);
  }
}

export const DEFAULT_SETTINGS: Settings = { theme: "system" };
export const HYPERVISORS = ["qemu", "cloud-hypervisor", "vz"] as const;
const STORAGE_KEY = "hypedeck.settings";

/** The rules the page can check itself (the shell checks the rest, and these again). */
export function problemsOf(s: Settings): FieldProblem[] {
  const out: FieldProblem[] = [];
  if (!["system", "light", "dark"].includes(s.theme)) out.push({ field: "theme", message: `${JSON.stringify(s.theme)} is not one of system, light, dark` });
  if (s.default_hypervisor !== undefined && !(HYPERVISORS as readonly string[]).includes(s.default_hypervisor)) {
    out.push({ field: "default_hypervisor", message: `${JSON.stringify(s.default_hypervisor)} is not one of ${HYPERVISORS.join(", ")}` });
  }
  if (s.default_vcpus !== undefined && !(Number.isInteger(s.default_vcpus) && s.default_vcpus >= 1 && s.default_vcpus <= 64)) {
    out.push({ field: "default_vcpus", message: `${String(s.default_vcpus)} is not between 1 and 64` });
  }
  if (s.default_memory !== undefined) {
    // The create form's own check, so a default it would refuse is refused here too.
    const message = memoryProblem(s.default_memory);
    if (message) out.push({ field: "default_memory", message });
  }
  return out;
}

/** Drops empty optional fields (an empty input means "the default"). */
export function normalized(s: Settings): Settings {
  const out: Settings = { theme: s.theme };
  for (const k of ["default_hypervisor", "default_memory", "data_dir", "kernel_deb", "listen", "console_log_max"] as const) {
    const v = s[k]?.trim();
    if (v) out[k] = v;
  }
  if (s.default_vcpus !== undefined && !Number.isNaN(s.default_vcpus)) out.default_vcpus = s.default_vcpus;
  return out;
}

function fromStorage(): Settings {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    if (parsed && typeof parsed === "object") {
      const s = { ...DEFAULT_SETTINGS, ...(parsed as Partial<Settings>) };
      if (problemsOf(s).length === 0) return s;
    }
  } catch {
    // Unreadable storage: the defaults.
  }
  return DEFAULT_SETTINGS;
}

/** The settings and where they live. */
export async function loadSettings(): Promise<SettingsView> {
  if (inDesktop()) return shell<SettingsView>("settings");
  return { settings: fromStorage(), path: "this browser's local storage", restart_needed: false };
}

/** Checks and saves; rejects with a [`SettingsError`] naming the fields at fault. */
export async function saveSettings(wanted: Settings): Promise<SettingsView> {
  const s = normalized(wanted);
  const problems = problemsOf(s);
  if (problems.length > 0) throw new SettingsError(problems.map((p) => `${p.field}: ${p.message}`).join("; "), problems);
  if (inDesktop()) {
    try {
      return await invoke<SettingsView>("save_settings", { settings: s });
    } catch (e) {
      // The shell answers `{message, fields}`.
      if (typeof e === "object" && e !== null && "message" in e && "fields" in e) {
        const body = e as { message: string; fields: FieldProblem[] };
        throw new SettingsError(body.message, body.fields);
      }
      throw new SettingsError(typeof e === "string" ? e : String(e), []);
    }
  }
  localStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  return { settings: s, path: "this browser's local storage", restart_needed: false };
}

/** Puts the theme on the page (`system` follows the OS). */
export function applyTheme(theme: Theme): void {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

/** The create form's starting values from the settings. */
export function draftDefaults(s: Settings & { image?: string }): Partial<CreateDraft> {
  const out: Partial<CreateDraft> = {};
  if (s.image) out.image = s.image;
  if (s.default_vcpus !== undefined) out.vcpus = String(s.default_vcpus);
  if (s.default_memory) out.memory = s.default_memory;
  if (s.default_hypervisor) out.hypervisor = s.default_hypervisor;
  return out;
}
