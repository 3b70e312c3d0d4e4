// Pure logic of snapshots and forks: the order and labels of the Snapshots tab, when an instance
// may be snapshotted, restored or forked (and why not), the target states each call accepts and
// its default, name checks, the take form's compression (levels, their check, the body sent) and
// a snapshot's compression state, the tags a user sees, where a fork comes from (Hypedeck's
// `forked_from` extension), and the API's snapshot and fork errors as plain sentences. No React,
// no I/O (snapshots.test.ts).
import type Hypeman from "@onkernel/hypeman";

import { nameProblem } from "./forms";
import { bytes, type Instance, type Problem, type State } from "./model";

export type Snapshot = Hypeman.Snapshot;
export type SnapshotKind = Hypeman.SnapshotKind;
/** The body of `POST /instances/{id}/snapshots`. */
export type SnapshotBody = Hypeman.Instances.SnapshotCreateParams;
/** How a Standby snapshot's memory may be compressed. */
export type CompressionAlgorithm = NonNullable<Hypeman.SnapshotCompressionConfig["algorithm"]>;
/** A state a restore or a fork may leave its instance in. */
export type TargetState = "Stopped" | "Standby" | "Running";

/** Newest first; the same `created_at` falls back to the id (newest id first), so polls keep the order. */
export function sortSnapshots(list: readonly Snapshot[]): Snapshot[] {
  return [...list].sort((a, b) => {
    const byTime = (Date.parse(b.created_at) || 0) - (Date.parse(a.created_at) || 0);
    return byTime !== 0 ? byTime : b.id.localeCompare(a.id);
  });
}

/** The snapshot's name, or `"unnamed"`. */
export function snapshotLabel(s: Pick<Snapshot, "name">): string {
  return s.name ? s.name : "unnamed";
}

/** What a kind keeps, for the table and the dialogs. */
export function kindText(kind: SnapshotKind): string {
  return kind === "Stopped" ? "Stopped (disks)" : "Standby (disks and memory)";
}

/** The kinds a snapshot may be taken of, in the order the form offers them. */
export const SNAPSHOT_KINDS: readonly SnapshotKind[] = ["Standby", "Stopped"];

/**
 * The kind the take form offers first for an instance in `state`: Standby (memory too) while a
 * VM is there to save (Running or Standby), Stopped (the disks) otherwise.
 */
export function defaultSnapshotKind(state: State): SnapshotKind {
  return state === "Running" || state === "Standby" ? "Standby" : "Stopped";
}

/**
 * Why a snapshot of `kind` cannot be taken of an instance in `state`, or null when it can: the
 * engine copies the disks of a stopped instance (Stopped), or the saved VM of a running one
 * (paused, saved, copied and resumed) or of one in standby (Standby).
 */
export function snapshotRefusal(state: State, kind: SnapshotKind = "Stopped"): string | null {
  if (kind === "Standby") {
    if (state === "Running" || state === "Standby") return null;
    return `A Standby snapshot needs the instance running or in standby (it is ${state})`;
  }
  if (state === "Stopped") return null;
  // A standby instance cannot be stopped as it is: it is restored first.
  if (state === "Standby") return "Restore the instance, then stop it, to take a Stopped snapshot (it is in standby)";
  return `Stop the instance to take a Stopped snapshot (it is ${state})`;
}

/** One line under the kind choice: what taking a snapshot of `kind` does to an instance in `state`. */
export function takeHint(state: State, kind: SnapshotKind): string {
  if (kind === "Stopped") return "A copy of the disks and settings; the VM's memory is not kept.";
  if (state === "Running") return "The VM is paused and saved, then resumes; it keeps running.";
  if (state === "Standby") return "The saved VM is copied as it is; the instance stays in standby.";
  return "A copy of the disks and of the saved VM's memory.";
}

/**
 * What a restore of a snapshot of `kind` puts back, as the start of a sentence that goes on with
 * " go back to how they were at <time>".
 */
export function restoreWhat(kind: SnapshotKind, instance: string): string {
  return kind === "Standby" ? `${instance}'s memory and disks` : `${instance}'s disks`;
}

/**
 * What the instance (or a fork) is like when a restore or a fork that carries `kind`'s contents
 * (a Standby snapshot, or a running or standby instance: memory and disks) ends in `target`.
 */
export function targetHint(kind: SnapshotKind, target: TargetState): string {
  if (kind === "Standby") {
    switch (target) {
      case "Running":
        return "It resumes from the saved moment: the programs that ran then carry on.";
      case "Standby":
        return "It is saved in standby, ready to resume from the saved moment.";
      case "Stopped":
        return "The saved memory is dropped: the next start boots afresh from the disks.";
    }
  }
  return target === "Running" ? "It boots afresh from the disks." : "It stays stopped until you start it.";
}

/**
 * Why a snapshot cannot be restored onto an instance in `state`, or null when it can: the disks
 * are replaced, so no VM may be using them (only Stopped and Standby have none).
 */
export function restoreRefusal(state: State): string | null {
  if (state === "Stopped" || state === "Standby") return null;
  return `Stop the instance to restore a snapshot onto it (it is ${state})`;
}

/** The states a restore or a fork of a snapshot of `kind` may end in, the default first. */
export function snapshotTargets(kind: SnapshotKind): TargetState[] {
  return kind === "Stopped" ? ["Stopped", "Running"] : ["Running", "Standby", "Stopped"];
}

/** The state a restore or a fork of a snapshot of `kind` ends in when none is asked for. */
export function defaultSnapshotTarget(kind: SnapshotKind): TargetState {
  return snapshotTargets(kind)[0]!;
}

/** What a fork of an instance in `state` carries: memory and disks (like a Standby snapshot) while it has a VM, else the disks. */
export function forkCarries(state: State): SnapshotKind {
  return state === "Running" || state === "Standby" ? "Standby" : "Stopped";
}

/** Whether an instance in `state` can be forked, how, and why not. */
export interface ForkPlan {
  enabled: boolean;
  /** The tooltip and accessible description when disabled. */
  reason: string;
  /** A running source is forked `from_running` (paused and saved, copied, resumed). */
  fromRunning: boolean;
}

export function forkPlan(state: State): ForkPlan {
  switch (state) {
    case "Stopped":
    case "Standby":
      return { enabled: true, reason: "Copy this instance into a new one", fromRunning: false };
    case "Running":
      return { enabled: true, reason: "Copy this running instance into a new one", fromRunning: true };
    default:
      return { enabled: false, reason: `Only a stopped, standby or running instance can be forked (this one is ${state})`, fromRunning: false };
  }
}

/** The states a fork of an instance in `state` may end in; the first is the default (the source's own state). */
export function forkTargets(state: State): TargetState[] {
  switch (state) {
    case "Running":
      return ["Running", "Standby", "Stopped"];
    case "Standby":
      return ["Standby", "Running", "Stopped"];
    default:
      return ["Stopped", "Running"];
  }
}

/** The algorithms the take form offers, the engine's default (zstd) first. */
export const COMPRESSION_ALGORITHMS: readonly CompressionAlgorithm[] = ["zstd", "lz4"];

/** The levels the engine accepts for `algorithm`, and the one it uses when none is given. */
export function compressionLevels(algorithm: CompressionAlgorithm): { min: number; max: number; default: number } {
  return algorithm === "lz4" ? { min: 0, max: 9, default: 0 } : { min: 1, max: 19, default: 1 };
}

/** The line under the level field: its range for `algorithm` and what an empty one means. */
export function compressionLevelHint(algorithm: CompressionAlgorithm): string {
  const r = compressionLevels(algorithm);
  return `${r.min}–${r.max} for ${algorithm}; empty: ${r.default}, the engine's default. Higher is smaller but slower.`;
}

/**
 * What is wrong with the level typed for `algorithm`, or null when it is fine (empty: the
 * engine's default). The range and the words are the engine's (`level must be between 1 and 19
 * for zstd, got 0`).
 */
export function compressionLevelProblem(algorithm: CompressionAlgorithm, raw: string): string | null {
  const text = raw.trim();
  if (text === "") return null;
  const r = compressionLevels(algorithm);
  if (!/^[+-]?\d+$/.test(text)) return `The level must be a whole number between ${r.min} and ${r.max} for ${algorithm}, got "${text}"`;
  const level = Number(text);
  if (level < r.min || level > r.max) return `The level must be between ${r.min} and ${r.max} for ${algorithm}, got ${level}`;
  return null;
}

/** The take form's compression choice. */
export interface CompressionChoice {
  /** "Compress the saved memory" checked. */
  enabled: boolean;
  algorithm: CompressionAlgorithm;
  /** As typed; empty: the engine's default. */
  level: string;
}

/** The take form's compression before anything is chosen: off (zstd, the default level, if turned on). */
export const NO_COMPRESSION: CompressionChoice = { enabled: false, algorithm: "zstd", level: "" };

/**
 * The body the take form sends: the kind, the name and tags when given, and `compression`
 * only for a Standby snapshot with compression checked (the engine refuses it for Stopped).
 * The level is left out when empty, so the engine uses its default; it is checked first
 * (`compressionLevelProblem`).
 */
export function snapshotBody(kind: SnapshotKind, name: string, tags: Record<string, string>, compression: CompressionChoice = NO_COMPRESSION): SnapshotBody {
  const body: SnapshotBody = { kind };
  if (name.trim() !== "") body.name = name.trim();
  if (Object.keys(tags).length) body.tags = tags;
  if (kind === "Standby" && compression.enabled) {
    body.compression = { enabled: true, algorithm: compression.algorithm };
    if (compression.level.trim() !== "") body.compression.level = Number(compression.level.trim());
  }
  return body;
}

/** A snapshot's compression, for its row: what the cell says, its tooltip, and whether it is under way. */
export interface CompressionView {
  state: "compressing" | "compressed" | "error";
  /** `compressing…`, `zstd · 49 MiB of 93 MiB`, `compression failed`. */
  text: string;
  title: string;
  /** More words for a screen reader after `text` (the error), or null. */
  detail: string | null;
}

/** How a snapshot's memory compression is shown, or null when it was not asked for (`none` or absent). */
export function compressionView(s: Snapshot): CompressionView | null {
  const algorithm = s.compression?.algorithm ?? "zstd";
  const level = typeof s.compression?.level === "number" ? ` level ${s.compression.level}` : "";
  switch (s.compression_state) {
    case "compressing":
      return { state: "compressing", text: "compressing…", title: `The saved memory is being compressed (${algorithm}${level})`, detail: null };
    case "compressed": {
      const sizes = `${bytes(s.compressed_size_bytes)} of ${bytes(s.uncompressed_size_bytes)}`;
      return {
        state: "compressed",
        text: `${algorithm} · ${sizes}`,
        title: `The saved memory, compressed with ${algorithm}${level}: ${sizes}`,
        detail: null,
      };
    }
    case "error": {
      const why = s.compression_error?.trim() || "no reason given";
      return { state: "error", text: "compression failed", title: why, detail: why };
    }
    default:
      return null;
  }
}

/** Tags whose key starts with this are Hypedeck's or upstream's own (a schedule's `hypeman.scheduled`). */
export const INTERNAL_TAG_PREFIX = "hypeman.";

/** A snapshot's tags without the internal ones (`hypeman.*`): those the user gave. */
export function userTags(tags: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(tags ?? {}).filter(([k]) => !k.startsWith(INTERNAL_TAG_PREFIX)));
}

/** A snapshot name: optional, else the instance name rule. */
export function snapshotNameProblem(raw: string): string | null {
  if (raw.trim() === "") return null;
  return nameProblem(raw);
}

/** A fork's name: the instance name rule, and not one of `taken` (the instances' names). */
export function forkNameProblem(raw: string, taken: readonly string[]): string | null {
  const rule = nameProblem(raw);
  if (rule) return rule;
  const name = raw.trim();
  return taken.includes(name) ? `An instance named "${name}" already exists. Choose another name.` : null;
}

/** `"web-fork"`, then `"web-fork-2"`…: a free name for a fork of `source` (at most 63 characters). */
export function suggestForkName(source: string, taken: readonly string[]): string {
  const base = `${source.slice(0, 63 - "-fork-99".length).replace(/-+$/, "")}-fork`;
  let name = base;
  for (let n = 2; taken.includes(name); n++) name = `${base}-${String(n)}`;
  return name;
}

/** Hypedeck's `forked_from` extension on an Instance made by a fork. */
export interface ForkedFrom {
  source_instance_id: string;
  source_instance_name: string;
  /** Only when the fork was made from a snapshot. */
  snapshot_id?: string;
}

/** Where an instance was forked from, or null (not a fork, or a server without the extension). */
export function forkedFrom(instance: Instance): ForkedFrom | null {
  const raw: unknown = (instance as Instance & { forked_from?: unknown }).forked_from;
  if (typeof raw !== "object" || raw === null) return null;
  const f = raw as Record<string, unknown>;
  if (typeof f.source_instance_id !== "string" || typeof f.source_instance_name !== "string") return null;
  const out: ForkedFrom = { source_instance_id: f.source_instance_id, source_instance_name: f.source_instance_name };
  if (typeof f.snapshot_id === "string" && f.snapshot_id !== "") out.snapshot_id = f.snapshot_id;
  return out;
}

/** `"fork of web"`, for the instance list. */
export function forkNote(from: ForkedFrom): string {
  return `fork of ${from.source_instance_name}`;
}

/** What a snapshot or fork error is about: the name field, the compression level, or the form as a whole. */
export type SnapshotField = "name" | "level" | "form";

const capitalize = (text: string): string => text.charAt(0).toUpperCase() + text.slice(1);

/**
 * A snapshot, restore or fork error as a plain sentence, next to the name field when it is
 * about the name. Known codes and messages are translated (like the create form's `explain`);
 * anything else keeps the server's words and code.
 */
export function explainSnapshotProblem(problem: Problem, name = ""): { field: SnapshotField; message: string } {
  const m = problem.message;
  const at = (field: SnapshotField, message: string) => ({ field, message });
  // The OpenAPI schema check: `… Error at "/name": string doesn't match the regular expression "…"`.
  const schema = /Error at "\/([^"]*)": (.*)$/.exec(m);
  if (schema?.[1] === "name") return at("name", nameProblem(name) ?? `The server refused the name: ${schema[2] ?? ""}`);

  const snapshotName = /snapshot name "([^"]*)" already exists/.exec(m);
  if (snapshotName) return at("name", `This instance already has a snapshot named "${snapshotName[1]}". Choose another name.`);
  const instanceName = /instance name '([^']*)' already exists/.exec(m);
  if (instanceName || problem.code === "name_conflict") {
    return at("name", `An instance named "${instanceName?.[1] ?? name.trim()}" already exists. Choose another name.`);
  }
  if (problem.code === "invalid_snapshot_compression") {
    const level = /level must be (between \d+ and \d+ for \w+, got -?\d+)/.exec(m);
    if (level) return at("level", `The server refused the level: it must be ${level[1] ?? ""}.`);
    return at("level", `The server refused the compression: ${m}.`);
  }
  if (/compression is only supported for standby snapshots/.test(m)) {
    return at("form", "Only a Standby snapshot can be compressed (its memory is what is compressed): choose Standby, or take it without compression.");
  }
  const needsStopped = /stopped snapshot requires source in Stopped, got (\w+)/.exec(m);
  if (needsStopped) return at("form", `Stop the instance first: a Stopped snapshot copies the disks of a stopped instance (it is ${needsStopped[1]}).`);
  const needsVm = /standby snapshot requires source in Running or Standby, got (\w+)/.exec(m);
  if (needsVm) return at("form", `A Standby snapshot needs the instance running or in standby (it is ${needsVm[1]}).`);
  const restoreWhile = /cannot restore snapshot while source is (\w+)/.exec(m);
  if (restoreWhile) return at("form", `Stop the instance before restoring a snapshot onto it (it is ${restoreWhile[1]}).`);
  if (/cannot fork from state Running \(set from_running/.test(m)) {
    return at("form", "The instance is running: fork it with “from running” (it is paused and saved for a moment, then resumes), or stop it first.");
  }
  const belongs = /snapshot (\S+) belongs to instance (\S+)/.exec(m);
  if (belongs) return at("form", "This snapshot belongs to another instance: fork it instead of restoring it.");
  if (/target_hypervisor is only allowed for stopped snapshots/.test(m)) {
    return at("form", "A Standby snapshot keeps its VM's memory, so it runs only on the hypervisor it was taken on.");
  }
  const target = /invalid target_state "(\w+)" for snapshot kind (\w+)/.exec(m);
  if (target) return at("form", `A ${target[2]} snapshot cannot end in ${target[1]}: choose another state.`);

  switch (problem.code) {
    case "not_found":
      return at("form", /snapshot/.test(m) ? "The snapshot no longer exists: it may have been deleted." : "The instance no longer exists: it may have been deleted.");
    case "not_implemented":
    case "not_supported":
      return at("form", `Not available on this engine yet: ${m}.`);
    case "unreachable":
      return at("form", `Cannot reach the server. ${capitalize(m)}`);
    case "Unauthorized":
    case "http_401":
      return at("form", "The server refused the API token. Reconnect with a valid token.");
    case "insufficient_resources":
      return at("form", `Not enough free resources on the host: ${m}`);
  }
  return at("form", `${m} (${problem.code})`);
}
