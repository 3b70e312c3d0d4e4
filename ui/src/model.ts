// Pure view logic for instances: states and their colours, which verbs a state allows (and why
// not, and whether a volume may be deleted), filtering, sorting and the human-readable figures
// the list and details show. No DOM and no SDK calls, so Vitest covers all of it (model.test.ts).
import type Hypeman from "@onkernel/hypeman";

/** An error the page shows in its banner: the API's `{code, message}` (see `problem` in api.ts). */
export interface Problem {
  code: string;
  message: string;
}

/** A forwarded port (Hypedeck extension in upstream's PortMapping shape). */
export interface PortForward {
  host_port: number;
  guest_port: number;
  protocol: "tcp" | "udp";
}

/** The SDK's Instance plus Hypedeck's `ports` extension (absent on other servers). */
export type Instance = Hypeman.Instance & { ports?: PortForward[] };
export type State = Instance["state"];

/** Every state upstream reports, in lifecycle order (the filter menu's order). */
export const STATES: readonly State[] = [
  "Created",
  "Initializing",
  "Running",
  "Paused",
  "Shutdown",
  "Stopped",
  "Standby",
  "Unknown",
];

export type Tone = "ok" | "busy" | "parked" | "off" | "bad";

/** The badge colour of a state: green runs, blue is on its way, amber is parked, grey is off, red is unknown. */
export function tone(state: State): Tone {
  switch (state) {
    case "Running":
      return "ok";
    case "Created":
    case "Initializing":
      return "busy";
    case "Paused":
    case "Standby":
      return "parked";
    case "Shutdown":
    case "Stopped":
      return "off";
    default:
      return "bad";
  }
}

export type Verb = "start" | "stop" | "standby" | "restore" | "delete";
export const VERBS: readonly Verb[] = ["start", "stop", "standby", "restore", "delete"];

/** What a backend supports (Hypedeck's `GET /hypervisors`, a Hypedeck extension). */
export interface Capabilities {
  snapshot: boolean;
  pause: boolean;
  hotplug_memory: boolean;
  disk_io_limit: boolean;
  graceful_shutdown: boolean;
  vsock: boolean;
  gpu: boolean;
  port_forwarding: boolean;
  egress_enforcement: boolean;
  /** VMs start from templates (absent from engines before templates). */
  templates?: boolean;
}

/** One setup check (Hypedeck's `GET /system/checks`, or the desktop shell's own). */
export interface SystemCheck {
  id: string;
  title: string;
  status: "ok" | "warning" | "missing";
  detail: string;
  why: string;
  fix?: string;
}

/** All checks; `ready` is false while any is `missing`. */
export interface SystemChecks {
  ready: boolean;
  checks: SystemCheck[];
}

/** `SystemChecks` from a bare list (the desktop shell's `local_checks`). */
export function checksOf(checks: SystemCheck[]): SystemChecks {
  return { ready: checks.every((c) => c.status !== "missing"), checks };
}

/** One backend of the engine: available with capabilities, or not with the reason. */
/** A VM template (Hypedeck's `GET /templates`): instances of its shape start from it. */
export interface Template {
  id: string;
  status: "building" | "ready" | "failed";
  error?: string;
  image: string;
  image_digest: string;
  hypervisor: string;
  vcpus: number;
  memory_bytes: number;
  overlay_bytes: number;
  network: boolean;
  created_at: string | null;
  build_ms?: number;
  disk_bytes?: number;
  starts: number;
  last_used_at: string | null;
}

/** "1 vCPU · 256 MiB" */
export function templateShape(t: Pick<Template, "vcpus" | "memory_bytes">): string {
  return `${t.vcpus} vCPU${t.vcpus === 1 ? "" : "s"} · ${bytes(t.memory_bytes)}`;
}

/** The id of the template an instance's current run started from (Hypedeck extension), if any. */
export function templateOf(instance: object): string | null {
  const raw: unknown = (instance as { template_id?: unknown }).template_id;
  return typeof raw === "string" && raw !== "" ? raw : null;
}

export interface Backend {
  kind: string;
  default: boolean;
  available: boolean;
  capabilities?: Capabilities;
  reason?: string;
}

/** A backend known to run, with what it supports. */
export interface BackendCaps {
  kind: string;
  capabilities: Capabilities;
}

/**
 * The capabilities of the backend `kind` (an instance's `hypervisor`; undefined: the default
 * one). Undefined when unknown (an upstream server has no `/hypervisors`): assume everything.
 */
export function backendFor(backends: readonly Backend[] | null, kind: string | undefined): BackendCaps | undefined {
  const b = backends?.find((b) => (kind ? b.kind === kind : b.default));
  return b?.capabilities ? { kind: b.kind, capabilities: b.capabilities } : undefined;
}

/** What a backend cannot do, in one line for the create form ("" when it does everything). */
export function limitsOf(backend: BackendCaps): string {
  const c = backend.capabilities;
  const missing = [
    c.snapshot ? null : "standby",
    c.port_forwarding ? null : "port forwarding",
    c.egress_enforcement ? null : "the credential proxy",
    c.hotplug_memory ? null : "memory hotplug",
    c.disk_io_limit ? null : "disk I/O limits",
  ].filter((m): m is string => m !== null);
  if (missing.length === 0) return "";
  const list = missing.length === 1 ? missing[0] : `${missing.slice(0, -1).join(", ")} or ${missing[missing.length - 1]}`;
  return `No ${list} on ${backend.kind}`;
}

/** Whether a verb makes sense in a state; `reason` is the tooltip when it does not. */
export interface Availability {
  enabled: boolean;
  reason: string;
}

/**
 * What each verb does from `state`, by upstream's table (hypeman-semantics §5.4). No-ops the
 * API would accept (start on Running, stop on Stopped…) are disabled too: they do nothing.
 */
export function availability(state: State, verb: Verb, backend?: BackendCaps): Availability {
  const yes = (reason: string): Availability => ({ enabled: true, reason });
  const no = (reason: string): Availability => ({ enabled: false, reason });
  if (verb === "standby" && backend && !backend.capabilities.snapshot) {
    return no(`The ${backend.kind} backend cannot save a VM's state, so no standby`);
  }
  switch (verb) {
    case "start":
      return state === "Stopped"
        ? yes("Boot the instance")
        : no(
            state === "Standby"
              ? "In standby: restore it instead"
              : `Only a stopped instance starts (this one is ${state})`,
          );
    case "stop":
      return state === "Running" || state === "Initializing"
        ? yes("Shut the guest down gracefully")
        : no(`Only a running or initializing instance stops (this one is ${state})`);
    case "standby":
      return state === "Running"
        ? yes("Snapshot memory to disk and free the CPU and RAM")
        : no(`Only a running instance goes to standby (this one is ${state})`);
    case "restore":
      return state === "Standby"
        ? yes("Resume from the standby snapshot")
        : no(`Only an instance in standby restores (this one is ${state})`);
    case "delete":
      return yes("Delete the instance, its disks and its logs");
  }
}

export type Volume = Hypeman.Volume;

/** A volume can be deleted only while no instance has it attached (the API answers 409 otherwise). */
export function volumeDeletion(volume: Volume): Availability {
  const n = volume.attachments?.length ?? 0;
  if (n === 0) return { enabled: true, reason: `Delete ${volume.name} and everything on it` };
  const who = n === 1 ? "an instance" : `${n} instances`;
  return { enabled: false, reason: `Attached to ${who}: detach it or delete ${n === 1 ? "the instance" : "them"} first` };
}

/** The first characters of an ID, enough to tell instances apart in a table. */
export function shortId(id: string): string {
  return id.length > 12 ? id.slice(0, 8) : id;
}

/** Credentials can be rotated live only while the guest runs (upstream's PATCH rule). */
export function canRotate(state: State): boolean {
  return state === "Running" || state === "Initializing";
}

/** `"3h 12m"`, `"45s"`, `"2d 4h"`: time since `since` at `now`; `"—"` without a start. */
export function duration(since: string | null | undefined, now: number): string {
  if (!since) return "—";
  const start = Date.parse(since);
  if (Number.isNaN(start)) return "—";
  let s = Math.max(0, Math.floor((now - start) / 1000));
  const d = Math.floor(s / 86_400);
  s -= d * 86_400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** Uptime of a running (or paused) instance; `"—"` otherwise. */
export function uptime(instance: Instance, now: number): string {
  const live = ["Running", "Initializing", "Paused", "Created"].includes(instance.state);
  return live ? duration(instance.started_at, now) : "—";
}

/** `"2,048 B"`, `"1.5 MiB"`: a byte count for people. */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u += 1;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** `"42%"` of a pull, or null when the total is not known yet. */
export function percent(done: number | null | undefined, total: number | null | undefined): number | null {
  if (!total || done === null || done === undefined) return null;
  return Math.max(0, Math.min(100, Math.floor((done / total) * 100)));
}

/** An ISO timestamp as local date and time; the raw text when it does not parse. */
export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : t.toLocaleString();
}

/** `key=value` labels of the tags, sorted by key. */
export function tagLabels(tags: Record<string, string> | undefined): string[] {
  return Object.entries(tags ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => (v === "" ? k : `${k}=${v}`));
}

export interface Filter {
  /** Empty: every state. */
  states: readonly State[];
  /** `key` or `key=value`; empty: any tags. */
  tag: string;
  /** Case-insensitive text in the name, image, id or IP. */
  text: string;
}

export const NO_FILTER: Filter = { states: [], tag: "", text: "" };

function tagMatches(tags: Record<string, string> | undefined, wanted: string): boolean {
  const spec = wanted.trim();
  if (spec === "") return true;
  const eq = spec.indexOf("=");
  const key = eq < 0 ? spec : spec.slice(0, eq);
  const value = eq < 0 ? null : spec.slice(eq + 1);
  if (!tags || !(key in tags)) return false;
  return value === null || tags[key] === value;
}

/** The instances that pass `filter`. */
export function filterInstances(list: readonly Instance[], filter: Filter): Instance[] {
  const text = filter.text.trim().toLowerCase();
  return list.filter(
    (i) =>
      (filter.states.length === 0 || filter.states.includes(i.state)) &&
      tagMatches(i.tags, filter.tag) &&
      (text === "" ||
        i.name.toLowerCase().includes(text) ||
        i.image.toLowerCase().includes(text) ||
        i.id.toLowerCase().startsWith(text) ||
        (i.network?.ip ?? "").startsWith(text)),
  );
}

export type SortKey = "name" | "state" | "image" | "vcpus" | "memory" | "uptime" | "created";
export interface Sort {
  key: SortKey;
  dir: "asc" | "desc";
}
export const DEFAULT_SORT: Sort = { key: "created", dir: "desc" };

/** Memory in bytes from upstream's `"1024.0 MB"`-style `size` (0 when absent). */
export function sizeBytes(size: string | undefined): number {
  const m = /^\s*([\d.]+)\s*([KMGT]?B)\s*$/i.exec(size ?? "");
  if (!m) return 0;
  const scale: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
  return Number(m[1]) * (scale[m[2]!.toUpperCase()] ?? 1);
}

function sortValue(i: Instance, key: SortKey, now: number): string | number {
  switch (key) {
    case "name":
      return i.name.toLowerCase();
    case "state":
      return STATES.indexOf(i.state);
    case "image":
      return i.image.toLowerCase();
    case "vcpus":
      return i.vcpus ?? 0;
    case "memory":
      return sizeBytes(i.size);
    case "uptime": {
      const live = uptime(i, now) !== "—" && i.started_at ? now - Date.parse(i.started_at) : -1;
      return Number.isNaN(live) ? -1 : live;
    }
    case "created":
      return Date.parse(i.created_at) || 0;
  }
}

/** A sorted copy; ties keep newest first, then id, so the order is stable between polls. */
export function sortInstances(list: readonly Instance[], sort: Sort, now: number): Instance[] {
  const sign = sort.dir === "asc" ? 1 : -1;
  return [...list].sort((a, b) => {
    const va = sortValue(a, sort.key, now);
    const vb = sortValue(b, sort.key, now);
    if (va < vb) return -sign;
    if (va > vb) return sign;
    const byCreated = b.created_at.localeCompare(a.created_at);
    return byCreated !== 0 ? byCreated : a.id.localeCompare(b.id);
  });
}

/** Clicking a column: the same key flips the direction, a new key starts in its natural one. */
export function nextSort(current: Sort, key: SortKey): Sort {
  if (current.key === key) return { key, dir: current.dir === "asc" ? "desc" : "asc" };
  const descFirst: SortKey[] = ["created", "uptime", "vcpus", "memory"];
  return { key, dir: descFirst.includes(key) ? "desc" : "asc" };
}

/** How many instances are in each state (for the filter chips). */
export function countByState(list: readonly Instance[]): Record<State, number> {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<State, number>;
  for (const i of list) counts[i.state] = (counts[i.state] ?? 0) + 1;
  return counts;
}
