// Pure logic of the snapshot schedule (upstream's `/instances/{id}/snapshot-schedule`): Go
// durations parsed and printed as Go does, and shown in words; the schedule form's checks (the
// server's rules, every error at once) and the body it sends; the summary sentence of a schedule;
// the server's schedule errors as plain sentences on their field. No React, no I/O
// (schedule.test.ts).
import type Hypeman from "@onkernel/hypeman";

import { duration } from "./model";
import { nameProblem } from "./forms";
import type { Problem } from "./model";
import { explainSnapshotProblem, type Snapshot } from "./snapshots";

export type Schedule = Hypeman.SnapshotSchedule;
export type ScheduleBody = Hypeman.Instances.SnapshotScheduleUpdateParams;

const NS: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
/** Go's largest Duration (int64 nanoseconds). */
const MAX_NS = 9_223_372_036_854_775_807;

/**
 * Nanoseconds of a Go duration (`time.ParseDuration`: `90m`, `1h30m`, `1.5h`, `-2h`, `0`), or
 * null when Go refuses it (no unit, an unknown unit such as `d`, spaces, out of range).
 */
export function parseGoDuration(text: string): number | null {
  let rest = text;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    if (rest.startsWith("-")) sign = -1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") return null;
  const part = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  let total = 0;
  while (rest !== "") {
    const m = part.exec(rest);
    if (!m) return null;
    total += Number(m[1]) * NS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  if (total > MAX_NS) return null;
  return sign * Math.round(total);
}

/** Go's `Duration.String()` of whole nanoseconds: `1h0m0s`, `1m30s`, `1.5s`, `500ms`, `0s`. */
export function formatGoDuration(ns: number): string {
  if (ns === 0) return "0s";
  const sign = ns < 0 ? "-" : "";
  let n = Math.abs(Math.round(ns));
  const frac = (value: number, unit: number): string => {
    const whole = Math.floor(value / unit);
    const rest = value % unit;
    if (rest === 0) return String(whole);
    const digits = String(unit).length - 1;
    return `${whole}.${String(rest).padStart(digits, "0").replace(/0+$/, "")}`;
  };
  if (n < 1e3) return `${sign}${n}ns`;
  if (n < 1e6) return `${sign}${frac(n, 1e3)}µs`;
  if (n < 1e9) return `${sign}${frac(n, 1e6)}ms`;
  const h = Math.floor(n / 3600e9);
  n -= h * 3600e9;
  const m = Math.floor(n / 60e9);
  n -= m * 60e9;
  const s = `${frac(n, 1e9)}s`;
  if (h > 0) return `${sign}${h}h${m}m${s}`;
  if (m > 0) return `${sign}${m}m${s}`;
  return `${sign}${s}`;
}

const plural = (n: number | string, one: string): string => `${n} ${one}${Number(n) === 1 ? "" : "s"}`;

/**
 * A duration in words: `1 hour`, `15 minutes`, `2 days`; mixed ones short: `1 h 30 min`,
 * `1 day 12 h`. Sub-second ones stay Go's (`500ms`).
 */
export function durationWords(ns: number): string {
  if (ns < 0) return `minus ${durationWords(-ns)}`;
  if (ns === 0) return "0 seconds";
  if (ns < 1e9) return formatGoDuration(ns);
  let seconds = ns / 1e9;
  const d = Math.floor(seconds / 86_400);
  seconds -= d * 86_400;
  const h = Math.floor(seconds / 3600);
  seconds -= h * 3600;
  const m = Math.floor(seconds / 60);
  seconds = Math.round((seconds - m * 60) * 1000) / 1000;
  const parts: { n: number; word: string; short: string }[] = [
    { n: d, word: "day", short: d === 1 ? "day" : "days" },
    { n: h, word: "hour", short: "h" },
    { n: m, word: "minute", short: "min" },
    { n: seconds, word: "second", short: "s" },
  ].filter((p) => p.n > 0);
  if (parts.length === 1) return plural(parts[0]!.n, parts[0]!.word);
  return parts.map((p) => `${p.n} ${p.short}`).join(" ");
}

/** A server's Go duration (`1h0m0s`) in words (`1 hour`); text Go cannot read is kept as it is. */
export function goDurationWords(text: string): string {
  const ns = parseGoDuration(text);
  return ns === null ? text : durationWords(ns);
}

/** The interval choices of the form; `custom` takes a Go duration. */
export const INTERVAL_CHOICES: readonly { value: string; label: string }[] = [
  { value: "15m", label: "Every 15 minutes" },
  { value: "1h", label: "Every hour" },
  { value: "6h", label: "Every 6 hours" },
  { value: "24h", label: "Every day" },
  { value: "custom", label: "Custom interval…" },
];

/** The shortest interval the server accepts: one minute. */
export const MIN_INTERVAL_NS = 60e9;
/** The longest name prefix (the server appends `-YYYYMMDD-HHMMSS` to reach the name limit). */
export const PREFIX_MAX = 47;

/** What the schedule form holds, as typed. */
export interface ScheduleForm {
  /** One of INTERVAL_CHOICES' values. */
  every: string;
  /** The Go duration when `every` is `custom`. */
  custom: string;
  /** max_count: a whole number ≥ 0, or empty. */
  keep: string;
  /** max_age: a Go duration, or empty. */
  maxAge: string;
  /** name_prefix: optional. */
  prefix: string;
}

export type ScheduleField = "interval" | "keep" | "maxAge" | "prefix" | "retention";
export type ScheduleErrors = Partial<Record<ScheduleField, string>>;

/** The form of a new schedule: every hour, keeping the newest 5. */
export const NEW_SCHEDULE: ScheduleForm = { every: "1h", custom: "", keep: "5", maxAge: "", prefix: "" };

/** The form prefilled with a schedule (Edit): its interval as a choice when it is one. */
export function formOf(s: Schedule): ScheduleForm {
  const ns = parseGoDuration(s.interval);
  const choice = INTERVAL_CHOICES.find((c) => c.value !== "custom" && parseGoDuration(c.value) === ns);
  return {
    every: choice?.value ?? "custom",
    custom: choice ? "" : s.interval,
    keep: s.retention.max_count ? String(s.retention.max_count) : "",
    maxAge: s.retention.max_age ?? "",
    prefix: s.name_prefix ?? "",
  };
}

const GO_EXAMPLE = "a Go duration such as 90m, 6h or 168h (units h, m, s; no days)";

/** The interval's problem, or null: a Go duration of at least one minute. */
export function intervalProblem(text: string): string | null {
  const t = text.trim();
  if (t === "") return "Give the interval as a Go duration, e.g. 30m or 12h";
  const ns = parseGoDuration(t);
  if (ns === null) return `Write the interval as ${GO_EXAMPLE}`;
  if (ns < MIN_INTERVAL_NS) return `The interval is at least 1 minute (1m); ${t} is ${durationWords(ns)}`;
  return null;
}

/** The name prefix's problem, or null: optional, else the instance name rule in at most 47 characters. */
export function prefixProblem(raw: string): string | null {
  const p = raw.trim();
  if (p === "") return null;
  if (p.length > PREFIX_MAX) return `A prefix has at most ${PREFIX_MAX} characters; this one has ${p.length}`;
  return nameProblem(p);
}

/**
 * Every problem of the form at once (the server's rules), or the body to PUT. `metadata` (the
 * schedule's tags, which the form does not edit) is sent back as it was.
 */
export function checkSchedule(form: ScheduleForm, metadata?: Record<string, string>): { errors: ScheduleErrors; body: ScheduleBody | null } {
  const errors: ScheduleErrors = {};
  const interval = (form.every === "custom" ? form.custom : form.every).trim();
  const wrongInterval = intervalProblem(interval);
  if (wrongInterval) errors.interval = wrongInterval;

  const keepText = form.keep.trim();
  let keep: number | undefined;
  if (keepText !== "") {
    if (/^\d+$/.test(keepText) && Number.isSafeInteger(Number(keepText))) keep = Number(keepText);
    else errors.keep = "Keep a whole number of snapshots: 0 or more (0: no limit by count)";
  }
  const ageText = form.maxAge.trim();
  let ageNs: number | undefined;
  if (ageText !== "") {
    const ns = parseGoDuration(ageText);
    if (ns === null) errors.maxAge = `Write the age as ${GO_EXAMPLE}`;
    else if (ns < 0) errors.maxAge = "The age cannot be negative";
    else ageNs = ns;
  }
  if (!errors.keep && !errors.maxAge && !keep && !ageNs) {
    errors.retention = "Say how many snapshots to keep, or after how long to delete them (or both)";
  }
  const wrongPrefix = prefixProblem(form.prefix);
  if (wrongPrefix) errors.prefix = wrongPrefix;
  if (Object.keys(errors).length) return { errors, body: null };

  const body: ScheduleBody = { interval, retention: {} };
  if (keep !== undefined) body.retention.max_count = keep;
  if (ageNs !== undefined) body.retention.max_age = ageText;
  if (form.prefix.trim() !== "") body.name_prefix = form.prefix.trim();
  if (metadata && Object.keys(metadata).length) body.metadata = metadata;
  return { errors, body };
}

/** `Every 1 hour, keeps the newest 5 and deletes those older than 2 days`. */
export function scheduleSummary(s: Pick<Schedule, "interval" | "retention">): string {
  const rules: string[] = [];
  const count = s.retention.max_count ?? 0;
  if (count > 0) rules.push(`keeps the newest ${count}`);
  if (s.retention.max_age) rules.push(`deletes those older than ${goDurationWords(s.retention.max_age)}`);
  const every = `Every ${goDurationWords(s.interval)}`;
  return rules.length ? `${every}, ${rules.join(" and ")}` : every;
}

/** `in 42m 10s`, or `due now` once the time has passed (the engine looks every minute). */
export function nextRunText(nextRunAt: string, now: number): string {
  const at = Date.parse(nextRunAt);
  if (Number.isNaN(at)) return "—";
  if (at <= now) return "due now (the engine looks every minute)";
  return `in ${duration(new Date(now).toISOString(), at)}`;
}

/** What the last run did: not yet, running, took a snapshot, or failed. */
export type LastRun =
  | { kind: "never" }
  | { kind: "running"; at: string }
  | { kind: "took"; at: string; snapshotId: string }
  | { kind: "failed"; at: string; error: string };

export function lastRun(s: Pick<Schedule, "last_run_at" | "last_snapshot_id" | "last_error">): LastRun {
  if (!s.last_run_at) return { kind: "never" };
  if (s.last_error) return { kind: "failed", at: s.last_run_at, error: s.last_error };
  if (s.last_snapshot_id) return { kind: "took", at: s.last_run_at, snapshotId: s.last_snapshot_id };
  // The engine records the run before it takes the snapshot.
  return { kind: "running", at: s.last_run_at };
}

/** The tag the engine puts on the snapshots a schedule takes. */
export const SCHEDULED_TAG = "hypeman.scheduled";

/** Whether a snapshot was taken by a schedule (its `hypeman.scheduled=true` tag). */
export function isScheduled(s: Pick<Snapshot, "tags">): boolean {
  return s.tags?.[SCHEDULED_TAG] === "true";
}

/**
 * A schedule error as a plain sentence, on the field it is about. Upstream's texts are
 * translated; anything else keeps the server's words and code.
 */
export function explainScheduleProblem(problem: Problem): { field: ScheduleField | "form"; message: string } {
  const m = problem.message;
  const at = (field: ScheduleField | "form", message: string) => ({ field, message });
  if (/interval must be a valid duration/.test(m)) return at("interval", `The server could not read the interval: write it as ${GO_EXAMPLE}.`);
  if (/interval must be at least/.test(m)) return at("interval", "The server refused the interval: it is at least 1 minute (1m).");
  if (/retention\.max_age must be a valid duration/.test(m)) return at("maxAge", `The server could not read the age: write it as ${GO_EXAMPLE}.`);
  if (/retention\.max_age must be >= 0/.test(m)) return at("maxAge", "The server refused the age: it cannot be negative.");
  if (/retention\.max_count must be >= 0/.test(m)) return at("keep", "The server refused the count: keep 0 or more snapshots.");
  if (/retention must include max_count or max_age|retention\.max_count or retention\.max_age must be set/.test(m)) {
    return at("retention", "The server needs a limit: how many snapshots to keep, or after how long to delete them.");
  }
  if (/name_prefix must be at most (\d+)/.test(m)) return at("prefix", `The server refused the prefix: it has at most ${PREFIX_MAX} characters.`);
  if (/name_prefix/.test(m)) return at("prefix", `The server refused the prefix: ${m.replace(/^invalid request: /, "")}`);
  if (problem.code === "not_found") {
    return at("form", /schedule/.test(m) ? "The schedule no longer exists: it may have been removed meanwhile." : "The instance no longer exists: it may have been deleted.");
  }
  if (["unreachable", "Unauthorized", "http_401", "not_implemented", "not_supported"].includes(problem.code)) {
    return at("form", explainSnapshotProblem(problem).message);
  }
  return at("form", `${m} (${problem.code})`);
}
