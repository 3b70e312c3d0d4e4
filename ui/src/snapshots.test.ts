import { describe, expect, test } from "vitest";

import type { Instance } from "./model";
import {
  COMPRESSION_ALGORITHMS,
  compressionLevelHint,
  compressionLevelProblem,
  compressionLevels,
  compressionView,
  defaultSnapshotKind,
  defaultSnapshotTarget,
  explainSnapshotProblem,
  forkedFrom,
  forkNameProblem,
  forkCarries,
  forkNote,
  forkPlan,
  forkTargets,
  kindText,
  restoreRefusal,
  restoreWhat,
  NO_COMPRESSION,
  SNAPSHOT_KINDS,
  snapshotBody,
  snapshotLabel,
  snapshotNameProblem,
  snapshotRefusal,
  snapshotTargets,
  sortSnapshots,
  suggestForkName,
  takeHint,
  targetHint,
  userTags,
  type Snapshot,
} from "./snapshots";

const snap = (id: string, created_at: string, extra: Partial<Snapshot> = {}): Snapshot => ({
  id,
  created_at,
  kind: "Stopped",
  size_bytes: 1024,
  source_hypervisor: "qemu",
  source_instance_id: "src",
  source_instance_name: "web",
  ...extra,
});

const instance = (extra: Record<string, unknown> = {}): Instance => ({ id: "i1", name: "web", image: "alpine", state: "Stopped", created_at: "2026-12-06T10:00:00Z", ...extra }) as Instance;

describe("snapshots", () => {
  test("the list is newest first, ties by id (newest id first), and the input is left alone", () => {
    const list = [snap("a", "2026-12-06T10:00:00Z"), snap("c", "2026-12-06T12:00:00Z"), snap("b", "2026-12-06T10:00:00Z")];
    expect(sortSnapshots(list).map((s) => s.id)).toEqual(["c", "b", "a"]);
    expect(list.map((s) => s.id)).toEqual(["a", "c", "b"]);
  });

  test("labels: the name or unnamed; what each kind keeps", () => {
    expect(snapshotLabel({ name: "before-upgrade" })).toBe("before-upgrade");
    expect(snapshotLabel({ name: null })).toBe("unnamed");
    expect(snapshotLabel({})).toBe("unnamed");
    expect(kindText("Stopped")).toBe("Stopped (disks)");
    expect(kindText("Standby")).toBe("Standby (disks and memory)");
  });

  test("the take form offers Standby while there is a VM to save, Stopped otherwise", () => {
    expect(SNAPSHOT_KINDS).toEqual(["Standby", "Stopped"]);
    expect(defaultSnapshotKind("Running")).toBe("Standby");
    expect(defaultSnapshotKind("Standby")).toBe("Standby");
    expect(defaultSnapshotKind("Stopped")).toBe("Stopped");
    for (const s of ["Initializing", "Paused", "Shutdown", "Created", "Unknown"] as const) expect(defaultSnapshotKind(s)).toBe("Stopped");
  });

  test("a Stopped snapshot needs a stopped instance, and says so", () => {
    expect(snapshotRefusal("Stopped")).toBeNull();
    expect(snapshotRefusal("Stopped", "Stopped")).toBeNull();
    expect(snapshotRefusal("Running", "Stopped")).toBe("Stop the instance to take a Stopped snapshot (it is Running)");
    expect(snapshotRefusal("Running")).toBe("Stop the instance to take a Stopped snapshot (it is Running)");
    expect(snapshotRefusal("Initializing", "Stopped")).toBe("Stop the instance to take a Stopped snapshot (it is Initializing)");
    expect(snapshotRefusal("Standby", "Stopped")).toBe("Restore the instance, then stop it, to take a Stopped snapshot (it is in standby)");
  });

  test("a Standby snapshot needs a running or standby instance, and says so", () => {
    expect(snapshotRefusal("Running", "Standby")).toBeNull();
    expect(snapshotRefusal("Standby", "Standby")).toBeNull();
    expect(snapshotRefusal("Stopped", "Standby")).toBe("A Standby snapshot needs the instance running or in standby (it is Stopped)");
    for (const s of ["Initializing", "Paused", "Shutdown", "Created", "Unknown"] as const) {
      expect(snapshotRefusal(s, "Standby")).toBe(`A Standby snapshot needs the instance running or in standby (it is ${s})`);
    }
    // The default kind of every state is one the state can take, but for states with no snapshot at all.
    for (const s of ["Running", "Standby", "Stopped"] as const) expect(snapshotRefusal(s, defaultSnapshotKind(s))).toBeNull();
  });

  test("the kind's line says what taking it does in the instance's state", () => {
    expect(takeHint("Running", "Standby")).toBe("The VM is paused and saved, then resumes; it keeps running.");
    expect(takeHint("Standby", "Standby")).toMatch(/stays in standby/);
    expect(takeHint("Stopped", "Standby")).toMatch(/memory/);
    expect(takeHint("Stopped", "Stopped")).toMatch(/^A copy of the disks and settings/);
    expect(takeHint("Running", "Stopped")).toBe(takeHint("Stopped", "Stopped"));
  });

  test("a restore needs an instance without a VM", () => {
    expect(restoreRefusal("Stopped")).toBeNull();
    expect(restoreRefusal("Standby")).toBeNull();
    for (const s of ["Running", "Initializing", "Paused", "Shutdown", "Created", "Unknown"] as const) {
      expect(restoreRefusal(s)).toBe(`Stop the instance to restore a snapshot onto it (it is ${s})`);
    }
  });

  test("target states: a Stopped snapshot ends Stopped by default or Running; a Standby one Running by default, Standby or Stopped", () => {
    expect(snapshotTargets("Stopped")).toEqual(["Stopped", "Running"]);
    expect(defaultSnapshotTarget("Stopped")).toBe("Stopped");
    expect(snapshotTargets("Standby")).toEqual(["Running", "Standby", "Stopped"]);
    expect(defaultSnapshotTarget("Standby")).toBe("Running");
  });

  test("a restore says what comes back per kind, and what each target state means", () => {
    expect(restoreWhat("Standby", "web")).toBe("web's memory and disks");
    expect(restoreWhat("Stopped", "web")).toBe("web's disks");
    for (const kind of ["Standby", "Stopped"] as const) {
      const hints = snapshotTargets(kind).map((t) => targetHint(kind, t));
      expect(new Set(hints).size).toBe(hints.length);
    }
    expect(targetHint("Standby", "Running")).toMatch(/^It resumes from the saved moment/);
    expect(targetHint("Standby", "Standby")).toMatch(/standby/);
    expect(targetHint("Standby", "Stopped")).toMatch(/memory is dropped/);
    expect(targetHint("Stopped", "Running")).toBe("It boots afresh from the disks.");
    expect(targetHint("Stopped", "Stopped")).toMatch(/stays stopped/);
  });

  test("a fork defaults to the source's state; a running source needs from_running; other states cannot fork", () => {
    expect(forkTargets("Stopped")[0]).toBe("Stopped");
    expect(forkTargets("Standby")[0]).toBe("Standby");
    expect(forkTargets("Running")[0]).toBe("Running");
    expect(forkTargets("Standby")).toEqual(["Standby", "Running", "Stopped"]);
    expect(forkTargets("Running")).toEqual(["Running", "Standby", "Stopped"]);
    expect(forkTargets("Stopped")).toEqual(["Stopped", "Running"]);
    // A running or standby source carries its memory, like a Standby snapshot; a stopped one its disks.
    expect(forkCarries("Running")).toBe("Standby");
    expect(forkCarries("Standby")).toBe("Standby");
    expect(forkCarries("Stopped")).toBe("Stopped");
    expect(forkPlan("Stopped")).toMatchObject({ enabled: true, fromRunning: false });
    expect(forkPlan("Standby")).toMatchObject({ enabled: true, fromRunning: false });
    expect(forkPlan("Running")).toMatchObject({ enabled: true, fromRunning: true });
    expect(forkPlan("Initializing")).toEqual({
      enabled: false,
      reason: "Only a stopped, standby or running instance can be forked (this one is Initializing)",
      fromRunning: false,
    });
  });

  test("names: a snapshot's is optional, a fork's is required, follows the rule and is free", () => {
    expect(snapshotNameProblem("")).toBeNull();
    expect(snapshotNameProblem("  ")).toBeNull();
    expect(snapshotNameProblem("before-upgrade")).toBeNull();
    expect(snapshotNameProblem("Before Upgrade")).toMatch(/lowercase letters, digits and dashes/);
    expect(snapshotNameProblem("-x")).toMatch(/cannot start or end with a dash/);
    expect(forkNameProblem("", [])).toMatch(/Give the instance a name/);
    expect(forkNameProblem("web-fork", ["web", "web-fork"])).toBe('An instance named "web-fork" already exists. Choose another name.');
    expect(forkNameProblem("web-fork", ["web"])).toBeNull();
    expect(forkNameProblem("a".repeat(64), [])).toMatch(/at most 63/);
  });

  test("a suggested fork name is free and fits the rule", () => {
    expect(suggestForkName("web", ["web"])).toBe("web-fork");
    expect(suggestForkName("web", ["web", "web-fork", "web-fork-2"])).toBe("web-fork-3");
    const long = suggestForkName("a".repeat(63), []);
    expect(long.length).toBeLessThanOrEqual(63);
    expect(forkNameProblem(long, [])).toBeNull();
  });

  test("forked_from is read only when well formed", () => {
    expect(forkedFrom(instance())).toBeNull();
    expect(forkedFrom(instance({ forked_from: null }))).toBeNull();
    expect(forkedFrom(instance({ forked_from: { source_instance_id: 3 } }))).toBeNull();
    expect(forkedFrom(instance({ forked_from: { source_instance_id: "s", source_instance_name: "web" } }))).toEqual({ source_instance_id: "s", source_instance_name: "web" });
    expect(forkedFrom(instance({ forked_from: { source_instance_id: "s", source_instance_name: "web", snapshot_id: "snap1" } }))).toEqual({
      source_instance_id: "s",
      source_instance_name: "web",
      snapshot_id: "snap1",
    });
    expect(forkNote({ source_instance_id: "s", source_instance_name: "web" })).toBe("fork of web");
  });

  test("compression levels: the engine's ranges and defaults, zstd first", () => {
    expect(COMPRESSION_ALGORITHMS).toEqual(["zstd", "lz4"]);
    expect(compressionLevels("zstd")).toEqual({ min: 1, max: 19, default: 1 });
    expect(compressionLevels("lz4")).toEqual({ min: 0, max: 9, default: 0 });
    expect(compressionLevelHint("zstd")).toMatch(/^1–19 for zstd; empty: 1, the engine's default\./);
    expect(compressionLevelHint("lz4")).toMatch(/^0–9 for lz4; empty: 0, the engine's default\./);
  });

  test("a compression level is checked with the engine's range and words; empty is the default", () => {
    for (const ok of ["", "  ", "1", "3", "19", " 7 "]) expect(compressionLevelProblem("zstd", ok)).toBeNull();
    for (const ok of ["", "0", "9"]) expect(compressionLevelProblem("lz4", ok)).toBeNull();
    expect(compressionLevelProblem("zstd", "0")).toBe("The level must be between 1 and 19 for zstd, got 0");
    expect(compressionLevelProblem("zstd", "20")).toBe("The level must be between 1 and 19 for zstd, got 20");
    expect(compressionLevelProblem("lz4", "12")).toBe("The level must be between 0 and 9 for lz4, got 12");
    expect(compressionLevelProblem("lz4", "-1")).toBe("The level must be between 0 and 9 for lz4, got -1");
    // The same level may suit one algorithm and not the other.
    expect(compressionLevelProblem("zstd", "12")).toBeNull();
    expect(compressionLevelProblem("lz4", "0")).toBeNull();
    expect(compressionLevelProblem("zstd", "2.5")).toBe('The level must be a whole number between 1 and 19 for zstd, got "2.5"');
    expect(compressionLevelProblem("lz4", "fast")).toBe('The level must be a whole number between 0 and 9 for lz4, got "fast"');
  });

  test("the take body: name and tags when given, compression only when checked and the kind is Standby", () => {
    expect(snapshotBody("Stopped", "", {})).toEqual({ kind: "Stopped" });
    expect(snapshotBody("Standby", " hot ", { reason: "test" })).toEqual({ kind: "Standby", name: "hot", tags: { reason: "test" } });
    expect(snapshotBody("Standby", "", {}, NO_COMPRESSION)).toEqual({ kind: "Standby" });
    expect(snapshotBody("Standby", "", {}, { enabled: false, algorithm: "lz4", level: "3" })).toEqual({ kind: "Standby" });
    expect(snapshotBody("Standby", "", {}, { enabled: true, algorithm: "zstd", level: "3" })).toEqual({
      kind: "Standby",
      compression: { enabled: true, algorithm: "zstd", level: 3 },
    });
    // An empty level is left to the engine (zstd 1, lz4 0); a level of 0 is sent.
    expect(snapshotBody("Standby", "", {}, { enabled: true, algorithm: "zstd", level: " " })).toEqual({ kind: "Standby", compression: { enabled: true, algorithm: "zstd" } });
    expect(snapshotBody("Standby", "", {}, { enabled: true, algorithm: "lz4", level: "0" })).toEqual({ kind: "Standby", compression: { enabled: true, algorithm: "lz4", level: 0 } });
    // Never for Stopped, which the engine refuses.
    expect(snapshotBody("Stopped", "cold", {}, { enabled: true, algorithm: "zstd", level: "3" })).toEqual({ kind: "Stopped", name: "cold" });
  });

  test("a snapshot's compression: under way, done with the sizes, failed with why; nothing when none", () => {
    const standby = (extra: Partial<Snapshot>) => snap("s", "2026-12-06T10:00:00Z", { kind: "Standby", ...extra });
    expect(compressionView(standby({}))).toBeNull();
    expect(compressionView(standby({ compression_state: "none" }))).toBeNull();
    expect(compressionView(standby({ compression_state: "compressing", compression: { enabled: true, algorithm: "lz4", level: 0 } }))).toEqual({
      state: "compressing",
      text: "compressing…",
      title: "The saved memory is being compressed (lz4 level 0)",
      detail: null,
    });
    const done = compressionView(
      standby({
        compression_state: "compressed",
        compression: { enabled: true, algorithm: "zstd", level: 3 },
        compressed_size_bytes: 51_275_366,
        uncompressed_size_bytes: 97_411_891,
      }),
    );
    expect(done).toEqual({
      state: "compressed",
      text: "zstd · 49 MiB of 93 MiB",
      title: "The saved memory, compressed with zstd level 3: 49 MiB of 93 MiB",
      detail: null,
    });
    // Sizes not (yet) known, and no setting recorded: zstd, the engine's default.
    expect(compressionView(standby({ compression_state: "compressed" }))?.text).toBe("zstd · — of —");
    expect(compressionView(standby({ compression_state: "error", compression_error: "compress the saved memory: no space left on device" }))).toEqual({
      state: "error",
      text: "compression failed",
      title: "compress the saved memory: no space left on device",
      detail: "compress the saved memory: no space left on device",
    });
    expect(compressionView(standby({ compression_state: "error", compression_error: null }))?.detail).toBe("no reason given");
  });

  test("the tags shown are the user's: hypeman.* ones are left out", () => {
    expect(userTags(undefined)).toEqual({});
    expect(userTags({})).toEqual({});
    expect(userTags({ "hypeman.scheduled": "true", "hypeman.schedule_instance_id": "abc", team: "a", env: "" })).toEqual({ team: "a", env: "" });
    // Only the prefix with its dot: a key that merely starts with "hypeman" is the user's.
    expect(userTags({ hypeman: "x", "hypeman-ish": "y", "x.hypeman.y": "z" })).toEqual({ hypeman: "x", "hypeman-ish": "y", "x.hypeman.y": "z" });
  });

  test("the server's errors become sentences; unknown ones keep the server's words and code", () => {
    const ex = (code: string, message: string, name?: string) => explainSnapshotProblem({ code, message }, name);
    expect(ex("conflict", "instance already exists: snapshot name already exists: snapshot name \"nightly\" already exists for source instance abc")).toEqual({
      field: "name",
      message: 'This instance already has a snapshot named "nightly". Choose another name.',
    });
    expect(ex("conflict", "invalid state transition: stopped snapshot requires source in Stopped, got Running")).toEqual({
      field: "form",
      message: "Stop the instance first: a Stopped snapshot copies the disks of a stopped instance (it is Running).",
    });
    expect(ex("conflict", "invalid state transition: standby snapshot requires source in Running or Standby, got Stopped")).toEqual({
      field: "form",
      message: "A Standby snapshot needs the instance running or in standby (it is Stopped).",
    });
    expect(ex("invalid_request", "invalid request: target_hypervisor is only allowed for stopped snapshots").message).toMatch(/only on the hypervisor it was taken on/);
    expect(ex("invalid_state", "invalid state transition: cannot restore snapshot while source is Running").message).toBe(
      "Stop the instance before restoring a snapshot onto it (it is Running).",
    );
    expect(ex("name_conflict", "instance already exists: instance name 'web-2' already exists")).toEqual({
      field: "name",
      message: 'An instance named "web-2" already exists. Choose another name.',
    });
    expect(ex("conflict", "instance already exists: instance name 'web-3' already exists").message).toBe('An instance named "web-3" already exists. Choose another name.');
    expect(ex("invalid_state", "invalid state transition: cannot fork from state Running (set from_running=true to allow standby+restore flow)").message).toMatch(
      /^The instance is running: fork it with “from running”/,
    );
    expect(ex("not_implemented", "forking a running instance is not implemented yet")).toEqual({
      field: "form",
      message: "Not available on this engine yet: forking a running instance is not implemented yet.",
    });
    expect(ex("not_found", "snapshot not found").message).toBe("The snapshot no longer exists: it may have been deleted.");
    expect(ex("invalid_request", 'invalid request: invalid target_state "Standby" for snapshot kind Stopped').message).toBe(
      "A Stopped snapshot cannot end in Standby: choose another state.",
    );
    expect(ex("Bad Request", 'request body has an error: doesn\'t match schema: Error at "/name": string doesn\'t match the regular expression', "Web")).toEqual({
      field: "name",
      message: expect.stringMatching(/lowercase letters/) as string,
    });
    // Compression: a level out of range is put on the level field; Stopped with compression, on the form.
    expect(ex("invalid_snapshot_compression", "level must be between 1 and 19 for zstd, got 0")).toEqual({
      field: "level",
      message: "The server refused the level: it must be between 1 and 19 for zstd, got 0.",
    });
    expect(ex("invalid_snapshot_compression", "level must be between 0 and 9 for lz4, got 12").message).toBe(
      "The server refused the level: it must be between 0 and 9 for lz4, got 12.",
    );
    expect(ex("invalid_snapshot_compression", 'algorithm must be one of zstd or lz4, got "gzip"')).toEqual({
      field: "level",
      message: 'The server refused the compression: algorithm must be one of zstd or lz4, got "gzip".',
    });
    expect(ex("invalid_request", "invalid request: compression is only supported for standby snapshots")).toEqual({
      field: "form",
      message: "Only a Standby snapshot can be compressed (its memory is what is compressed): choose Standby, or take it without compression.",
    });
    expect(ex("internal_error", "failed to fork snapshot")).toEqual({ field: "form", message: "failed to fork snapshot (internal_error)" });
  });
});
