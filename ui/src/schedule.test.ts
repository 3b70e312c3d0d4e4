import { describe, expect, test } from "vitest";

import {
  checkSchedule,
  durationWords,
  explainScheduleProblem,
  formatGoDuration,
  formOf,
  goDurationWords,
  INTERVAL_CHOICES,
  intervalProblem,
  isScheduled,
  lastRun,
  NEW_SCHEDULE,
  nextRunText,
  parseGoDuration,
  prefixProblem,
  scheduleSummary,
  type Schedule,
  type ScheduleForm,
} from "./schedule";

const schedule = (extra: Partial<Schedule> = {}): Schedule => ({
  instance_id: "i1",
  interval: "1h0m0s",
  name_prefix: null,
  retention: { max_count: 5 },
  next_run_at: "2026-12-06T11:00:00Z",
  last_run_at: null,
  last_snapshot_id: null,
  last_error: null,
  created_at: "2026-12-06T10:00:00Z",
  updated_at: "2026-12-06T10:00:00Z",
  ...extra,
});

const form = (extra: Partial<ScheduleForm> = {}): ScheduleForm => ({ ...NEW_SCHEDULE, ...extra });

describe("Go durations", () => {
  test("parsed as time.ParseDuration does", () => {
    expect(parseGoDuration("1h")).toBe(3600e9);
    expect(parseGoDuration("90m")).toBe(5400e9);
    expect(parseGoDuration("1h30m")).toBe(5400e9);
    expect(parseGoDuration("1.5h")).toBe(5400e9);
    expect(parseGoDuration("1h0m0s")).toBe(3600e9);
    expect(parseGoDuration("48h0m0s")).toBe(48 * 3600e9);
    expect(parseGoDuration("30s")).toBe(30e9);
    expect(parseGoDuration("500ms")).toBe(500e6);
    expect(parseGoDuration("2us")).toBe(2000);
    expect(parseGoDuration("2µs")).toBe(2000);
    expect(parseGoDuration("7ns")).toBe(7);
    expect(parseGoDuration(".5s")).toBe(500e6);
    expect(parseGoDuration("1.s")).toBe(1e9);
    expect(parseGoDuration("-1h")).toBe(-3600e9);
    expect(parseGoDuration("+1m")).toBe(60e9);
    expect(parseGoDuration("0")).toBe(0);
    expect(parseGoDuration("-0")).toBe(0);
  });

  test("refused where Go refuses", () => {
    for (const bad of ["", "1", "1d", "2 h", " 1h", "1H", "h", ".s", "1h-5m", "1hh", "-", "3000000h"]) {
      expect(parseGoDuration(bad), bad).toBeNull();
    }
  });

  test("printed as Duration.String()", () => {
    expect(formatGoDuration(0)).toBe("0s");
    expect(formatGoDuration(3600e9)).toBe("1h0m0s");
    expect(formatGoDuration(5400e9)).toBe("1h30m0s");
    expect(formatGoDuration(48 * 3600e9)).toBe("48h0m0s");
    expect(formatGoDuration(90e9)).toBe("1m30s");
    expect(formatGoDuration(1.5e9)).toBe("1.5s");
    expect(formatGoDuration(500e6)).toBe("500ms");
    expect(formatGoDuration(1500)).toBe("1.5µs");
    expect(formatGoDuration(7)).toBe("7ns");
    expect(formatGoDuration(-60e9)).toBe("-1m0s");
    for (const text of ["15m", "6h", "24h", "2h45m10s"]) expect(parseGoDuration(formatGoDuration(parseGoDuration(text)!))).toBe(parseGoDuration(text));
  });

  test("in words: one unit in full, mixed ones short, days for whole days", () => {
    expect(goDurationWords("1h0m0s")).toBe("1 hour");
    expect(goDurationWords("6h0m0s")).toBe("6 hours");
    expect(goDurationWords("15m0s")).toBe("15 minutes");
    expect(goDurationWords("1m0s")).toBe("1 minute");
    expect(goDurationWords("1h30m0s")).toBe("1 h 30 min");
    expect(goDurationWords("48h0m0s")).toBe("2 days");
    expect(goDurationWords("24h0m0s")).toBe("1 day");
    expect(goDurationWords("36h0m0s")).toBe("1 day 12 h");
    expect(goDurationWords("2m30s")).toBe("2 min 30 s");
    expect(goDurationWords("45s")).toBe("45 seconds");
    expect(goDurationWords("1.5s")).toBe("1.5 seconds");
    expect(goDurationWords("500ms")).toBe("500ms");
    expect(durationWords(0)).toBe("0 seconds");
    expect(goDurationWords("weekly")).toBe("weekly");
  });
});

describe("the schedule form", () => {
  test("offers the common intervals and a custom one", () => {
    expect(INTERVAL_CHOICES.map((c) => c.value)).toEqual(["15m", "1h", "6h", "24h", "custom"]);
    for (const c of INTERVAL_CHOICES.filter((c) => c.value !== "custom")) expect(intervalProblem(c.value)).toBeNull();
  });

  test("the interval: a Go duration of at least a minute (the server's rule)", () => {
    expect(intervalProblem("1m")).toBeNull();
    expect(intervalProblem("60s")).toBeNull();
    expect(intervalProblem("30s")).toBe("The interval is at least 1 minute (1m); 30s is 30 seconds");
    expect(intervalProblem("-1h")).toMatch(/^The interval is at least 1 minute/);
    expect(intervalProblem("0")).toMatch(/^The interval is at least 1 minute/);
    expect(intervalProblem("1d")).toMatch(/^Write the interval as a Go duration/);
    expect(intervalProblem(" ")).toMatch(/^Give the interval/);
  });

  test("the prefix: optional, the name rule, at most 47 characters", () => {
    expect(prefixProblem("")).toBeNull();
    expect(prefixProblem("nightly")).toBeNull();
    expect(prefixProblem("a".repeat(47))).toBeNull();
    expect(prefixProblem("a".repeat(48))).toBe("A prefix has at most 47 characters; this one has 48");
    expect(prefixProblem("Nightly")).toMatch(/lowercase letters, digits and dashes/);
    expect(prefixProblem("nightly-")).toMatch(/cannot start or end with a dash/);
  });

  test("every problem at once, nothing to send", () => {
    const { errors, body } = checkSchedule(form({ every: "custom", custom: "30s", keep: "-1", maxAge: "2d", prefix: "Bad Prefix" }));
    expect(body).toBeNull();
    expect(Object.keys(errors).sort()).toEqual(["interval", "keep", "maxAge", "prefix"]);
    expect(errors.keep).toMatch(/whole number/);
    expect(errors.maxAge).toMatch(/Go duration/);
  });

  test("a limit is needed: a count above 0 or an age above 0", () => {
    expect(checkSchedule(form({ keep: "", maxAge: "" })).errors).toEqual({ retention: expect.stringMatching(/how many snapshots to keep/) });
    expect(checkSchedule(form({ keep: "0", maxAge: "" })).errors.retention).toBeDefined();
    expect(checkSchedule(form({ keep: "0", maxAge: "0s" })).errors.retention).toBeDefined();
    expect(checkSchedule(form({ keep: "", maxAge: "-1h" })).errors).toEqual({ maxAge: "The age cannot be negative" });
    expect(checkSchedule(form({ keep: "0", maxAge: "48h" })).body).toEqual({ interval: "1h", retention: { max_count: 0, max_age: "48h" } });
  });

  test("the body: the interval chosen or typed, the limits set, the prefix, the tags kept", () => {
    expect(checkSchedule(form()).body).toEqual({ interval: "1h", retention: { max_count: 5 } });
    expect(checkSchedule(form({ every: "custom", custom: " 90m ", keep: "3", maxAge: "168h", prefix: " nightly " }), { team: "a" }).body).toEqual({
      interval: "90m",
      retention: { max_count: 3, max_age: "168h" },
      name_prefix: "nightly",
      metadata: { team: "a" },
    });
    expect(checkSchedule(form({ every: "24h" }), {}).body).toEqual({ interval: "24h", retention: { max_count: 5 } });
  });

  test("prefilled from a schedule: a common interval as its choice, another as custom", () => {
    expect(formOf(schedule())).toEqual({ every: "1h", custom: "", keep: "5", maxAge: "", prefix: "" });
    expect(formOf(schedule({ interval: "24h0m0s", retention: { max_count: 0, max_age: "48h0m0s" }, name_prefix: "nightly" }))).toEqual({
      every: "24h",
      custom: "",
      keep: "",
      maxAge: "48h0m0s",
      prefix: "nightly",
    });
    expect(formOf(schedule({ interval: "1h30m0s" }))).toMatchObject({ every: "custom", custom: "1h30m0s" });
  });
});

describe("a schedule in words", () => {
  test("the summary sentence", () => {
    expect(scheduleSummary(schedule())).toBe("Every 1 hour, keeps the newest 5");
    expect(scheduleSummary(schedule({ retention: { max_count: 0, max_age: "48h0m0s" } }))).toBe("Every 1 hour, deletes those older than 2 days");
    expect(scheduleSummary(schedule({ interval: "1h30m0s", retention: { max_count: 3, max_age: "168h0m0s" } }))).toBe(
      "Every 1 h 30 min, keeps the newest 3 and deletes those older than 7 days",
    );
  });

  test("the next run: relative, or due", () => {
    const now = Date.parse("2026-12-06T10:00:00Z");
    expect(nextRunText("2026-12-06T10:42:10Z", now)).toBe("in 42m 10s");
    expect(nextRunText("2026-12-06T12:00:00Z", now)).toBe("in 2h 0m");
    expect(nextRunText("2026-12-06T09:59:00Z", now)).toMatch(/^due now/);
    expect(nextRunText("soon", now)).toBe("—");
  });

  test("the last run: never, running, took a snapshot, failed", () => {
    expect(lastRun(schedule())).toEqual({ kind: "never" });
    expect(lastRun(schedule({ last_run_at: "t" }))).toEqual({ kind: "running", at: "t" });
    expect(lastRun(schedule({ last_run_at: "t", last_snapshot_id: "s1" }))).toEqual({ kind: "took", at: "t", snapshotId: "s1" });
    expect(lastRun(schedule({ last_run_at: "t", last_error: "boom" }))).toEqual({ kind: "failed", at: "t", error: "boom" });
  });

  test("scheduled snapshots are those tagged hypeman.scheduled=true", () => {
    expect(isScheduled({ tags: { "hypeman.scheduled": "true", "hypeman.schedule_instance_id": "i1" } })).toBe(true);
    expect(isScheduled({ tags: { "hypeman.scheduled": "false" } })).toBe(false);
    expect(isScheduled({ tags: {} })).toBe(false);
    expect(isScheduled({})).toBe(false);
  });
});

describe("the server's schedule errors", () => {
  const bad = (message: string, code = "invalid_request") => explainScheduleProblem({ code, message });
  test("upstream's texts, on their field", () => {
    expect(bad("interval must be a valid duration").field).toBe("interval");
    expect(bad("invalid request: interval must be at least 1m0s")).toEqual({ field: "interval", message: "The server refused the interval: it is at least 1 minute (1m)." });
    expect(bad("retention must include max_count or max_age").field).toBe("retention");
    expect(bad("invalid request: retention.max_count or retention.max_age must be set").field).toBe("retention");
    expect(bad("retention.max_age must be a valid duration").field).toBe("maxAge");
    expect(bad("invalid request: retention.max_age must be >= 0").field).toBe("maxAge");
    expect(bad("invalid request: retention.max_count must be >= 0").field).toBe("keep");
    expect(bad("invalid request: name_prefix must be at most 47 characters").field).toBe("prefix");
    expect(bad("invalid request: name_prefix must match ^[a-z0-9]…")).toEqual({ field: "prefix", message: "The server refused the prefix: name_prefix must match ^[a-z0-9]…" });
  });

  test("not found, unreachable; anything else keeps the server's words and code", () => {
    expect(bad("snapshot schedule not found", "not_found").message).toMatch(/^The schedule no longer exists/);
    expect(bad("instance not found", "not_found").message).toMatch(/^The instance no longer exists/);
    expect(bad("cannot reach http://x: fetch failed", "unreachable").message).toMatch(/^Cannot reach the server/);
    expect(bad("disk full", "internal_error")).toEqual({ field: "form", message: "disk full (internal_error)" });
  });
});
