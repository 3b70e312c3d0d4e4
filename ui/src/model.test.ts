import { describe, expect, test } from "vitest";

import {
  availability,
  backendFor,
  bytes,
  limitsOf,
  canRotate,
  countByState,
  duration,
  filterInstances,
  nextSort,
  percent,
  shortId,
  sizeBytes,
  sortInstances,
  STATES,
  tagLabels,
  templateOf,
  templateShape,
  tone,
  uptime,
  VERBS,
  volumeDeletion,
  type Instance,
  type State,
} from "./model";

const T0 = Date.parse("2026-11-28T12:00:00Z");

function inst(over: Partial<Instance> & { id: string }): Instance {
  return {
    created_at: "2026-11-28T10:00:00Z",
    expires_at: null,
    image: "docker.io/library/alpine:latest",
    name: over.id,
    state: "Running",
    ...over,
  } as Instance;
}

describe("states", () => {
  test("every state has a tone, and the tones follow the lifecycle", () => {
    expect(STATES).toHaveLength(8);
    expect(STATES.map(tone)).toEqual(["busy", "busy", "ok", "parked", "off", "off", "parked", "bad"]);
  });

  test("verbs follow upstream's allowed-from table", () => {
    const allowed = (s: State) => VERBS.filter((v) => availability(s, v).enabled);
    expect(allowed("Running")).toEqual(["stop", "standby", "delete"]);
    expect(allowed("Initializing")).toEqual(["stop", "delete"]);
    expect(allowed("Stopped")).toEqual(["start", "delete"]);
    expect(allowed("Standby")).toEqual(["restore", "delete"]);
    expect(allowed("Paused")).toEqual(["delete"]);
    expect(allowed("Shutdown")).toEqual(["delete"]);
    expect(allowed("Created")).toEqual(["delete"]);
    expect(allowed("Unknown")).toEqual(["delete"]);
  });

  test("a disabled verb says why", () => {
    expect(availability("Standby", "start")).toEqual({ enabled: false, reason: "In standby: restore it instead" });
    expect(availability("Paused", "stop").reason).toContain("this one is Paused");
    expect(availability("Initializing", "standby").reason).toContain("Only a running instance");
  });

  test("rotation is live-only", () => {
    expect(STATES.filter(canRotate)).toEqual(["Initializing", "Running"]);
  });
});

describe("figures", () => {
  test("durations", () => {
    expect(duration("2026-11-28T11:59:15Z", T0)).toBe("45s");
    expect(duration("2026-11-28T11:58:00Z", T0)).toBe("2m 0s");
    expect(duration("2026-11-28T08:48:00Z", T0)).toBe("3h 12m");
    expect(duration("2026-11-26T08:00:00Z", T0)).toBe("2d 4h");
    expect(duration(null, T0)).toBe("—");
    expect(duration("garbage", T0)).toBe("—");
    expect(duration("2026-11-28T12:00:05Z", T0)).toBe("0s");
  });

  test("uptime only while the VM is up", () => {
    const started_at = "2026-11-28T11:00:00Z";
    expect(uptime(inst({ id: "a", started_at }), T0)).toBe("1h 0m");
    expect(uptime(inst({ id: "a", started_at, state: "Stopped" }), T0)).toBe("—");
    expect(uptime(inst({ id: "a", started_at, state: "Standby" }), T0)).toBe("—");
  });

  test("bytes and percentages", () => {
    expect(bytes(512)).toBe("512 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(300 * 1024 * 1024)).toBe("300 MiB");
    expect(bytes(undefined)).toBe("—");
    expect(percent(50, 200)).toBe(25);
    expect(percent(10, 0)).toBeNull();
    expect(percent(300, 200)).toBe(100);
  });

  test("upstream's size strings become bytes", () => {
    expect(sizeBytes("1024.0 MB")).toBe(1024 ** 3);
    expect(sizeBytes("2.0 GB")).toBe(2 * 1024 ** 3);
    expect(sizeBytes(undefined)).toBe(0);
  });

  test("tags are sorted key=value labels", () => {
    expect(tagLabels({ team: "ml", a: "", env: "dev" })).toEqual(["a", "env=dev", "team=ml"]);
    expect(tagLabels(undefined)).toEqual([]);
  });
});

describe("filter and sort", () => {
  const list = [
    inst({ id: "aaa1", name: "web", state: "Running", tags: { team: "ml" }, vcpus: 2, size: "512.0 MB", network: { ip: "10.0.0.5", mac: null } }),
    inst({ id: "bbb2", name: "Batch", state: "Stopped", tags: { team: "ops" }, vcpus: 4, size: "2.0 GB", created_at: "2026-11-28T11:00:00Z" }),
    inst({ id: "ccc3", name: "agent", state: "Standby", image: "ghcr.io/x/agent:1", vcpus: 1, size: "1024.0 MB", created_at: "2026-11-28T09:00:00Z" }),
  ];
  const ids = (l: Instance[]) => l.map((i) => i.id);

  test("by state, tag and text", () => {
    expect(ids(filterInstances(list, { states: ["Running", "Standby"], tag: "", text: "" }))).toEqual(["aaa1", "ccc3"]);
    expect(ids(filterInstances(list, { states: [], tag: "team", text: "" }))).toEqual(["aaa1", "bbb2"]);
    expect(ids(filterInstances(list, { states: [], tag: "team=ops", text: "" }))).toEqual(["bbb2"]);
    expect(ids(filterInstances(list, { states: [], tag: "team=", text: "" }))).toEqual([]);
    expect(ids(filterInstances(list, { states: [], tag: "", text: "BATCH" }))).toEqual(["bbb2"]);
    expect(ids(filterInstances(list, { states: [], tag: "", text: "ghcr" }))).toEqual(["ccc3"]);
    expect(ids(filterInstances(list, { states: [], tag: "", text: "10.0.0" }))).toEqual(["aaa1"]);
    expect(ids(filterInstances(list, { states: [], tag: "", text: "ccc" }))).toEqual(["ccc3"]);
  });

  test("sorts by each column, both ways", () => {
    expect(ids(sortInstances(list, { key: "name", dir: "asc" }, T0))).toEqual(["ccc3", "bbb2", "aaa1"]);
    expect(ids(sortInstances(list, { key: "created", dir: "desc" }, T0))).toEqual(["bbb2", "aaa1", "ccc3"]);
    expect(ids(sortInstances(list, { key: "memory", dir: "desc" }, T0))).toEqual(["bbb2", "ccc3", "aaa1"]);
    expect(ids(sortInstances(list, { key: "vcpus", dir: "asc" }, T0))).toEqual(["ccc3", "aaa1", "bbb2"]);
    expect(ids(sortInstances(list, { key: "state", dir: "asc" }, T0))).toEqual(["aaa1", "bbb2", "ccc3"]);
  });

  test("clicking a header", () => {
    expect(nextSort({ key: "name", dir: "asc" }, "name")).toEqual({ key: "name", dir: "desc" });
    expect(nextSort({ key: "name", dir: "asc" }, "memory")).toEqual({ key: "memory", dir: "desc" });
    expect(nextSort({ key: "memory", dir: "desc" }, "image")).toEqual({ key: "image", dir: "asc" });
  });

  test("counts per state include zeros", () => {
    const c = countByState(list);
    expect(c.Running).toBe(1);
    expect(c.Unknown).toBe(0);
    expect(Object.keys(c)).toHaveLength(8);
  });

  test("1,000 instances filter and sort quickly enough to do on every poll", () => {
    const many = Array.from({ length: 1000 }, (_, n) =>
      inst({ id: `id${n}`, name: `n${n}`, state: STATES[n % 8]!, tags: { shard: String(n % 10) } }),
    );
    const shown = sortInstances(filterInstances(many, { states: ["Running"], tag: "shard=2", text: "" }), { key: "name", dir: "asc" }, T0);
    expect(shown.every((i) => i.state === "Running" && i.tags?.shard === "2")).toBe(true);
    expect(shown).toHaveLength(25);
  });
});

describe("volumes", () => {
  const vol = (attachments: { instance_id: string; mount_path: string; readonly: boolean }[]) => ({
    id: "vol1",
    name: "data",
    size_gb: 1,
    created_at: "2026-11-28T10:00:00Z",
    attachments,
  });

  test("only a detached volume can be deleted, and an attached one says why", () => {
    expect(volumeDeletion(vol([]))).toEqual({ enabled: true, reason: "Delete data and everything on it" });
    expect(volumeDeletion({ id: "v", name: "bare", size_gb: 1, created_at: "" }).enabled).toBe(true);
    const one = volumeDeletion(vol([{ instance_id: "i1", mount_path: "/data", readonly: true }]));
    expect(one).toEqual({ enabled: false, reason: "Attached to an instance: detach it or delete the instance first" });
    const two = volumeDeletion(vol([{ instance_id: "i1", mount_path: "/a", readonly: true }, { instance_id: "i2", mount_path: "/b", readonly: false }]));
    expect(two.enabled).toBe(false);
    expect(two.reason).toContain("2 instances");
  });

  test("short IDs", () => {
    expect(shortId("abcdefghijklmnopqrstuvwx")).toBe("abcdefgh");
    expect(shortId("short-id")).toBe("short-id");
  });
});

describe("backends", () => {
  const all = {
    snapshot: true,
    pause: true,
    hotplug_memory: true,
    disk_io_limit: true,
    graceful_shutdown: true,
    vsock: true,
    gpu: false,
    port_forwarding: true,
    egress_enforcement: true,
  };
  const ch = { ...all, snapshot: false, port_forwarding: false, egress_enforcement: false };
  const backends = [
    { kind: "qemu", default: true, available: true, capabilities: all },
    { kind: "cloud-hypervisor", default: false, available: true, capabilities: ch },
    { kind: "vz", default: false, available: false, reason: "only on macOS" },
  ];

  test("an instance's backend is found by kind; the default when it has none", () => {
    expect(backendFor(backends, "cloud-hypervisor")).toEqual({ kind: "cloud-hypervisor", capabilities: ch });
    expect(backendFor(backends, undefined)?.kind).toBe("qemu");
    // Unavailable or unknown backends, and servers without /hypervisors: nothing is assumed missing.
    expect(backendFor(backends, "vz")).toBeUndefined();
    expect(backendFor(null, "qemu")).toBeUndefined();
  });

  test("standby is disabled, with the reason, on a backend that cannot snapshot", () => {
    const onCh = backendFor(backends, "cloud-hypervisor");
    expect(availability("Running", "standby", onCh)).toEqual({
      enabled: false,
      reason: "The cloud-hypervisor backend cannot save a VM's state, so no standby",
    });
    expect(availability("Running", "standby", backendFor(backends, "qemu")).enabled).toBe(true);
    expect(availability("Running", "stop", onCh).enabled).toBe(true);
    expect(availability("Running", "standby").enabled).toBe(true);
  });

  test("the create form names what a backend cannot do", () => {
    expect(limitsOf({ kind: "cloud-hypervisor", capabilities: ch })).toBe(
      "No standby, port forwarding or the credential proxy on cloud-hypervisor",
    );
    expect(limitsOf({ kind: "qemu", capabilities: all })).toBe("");
    expect(limitsOf({ kind: "x", capabilities: { ...all, hotplug_memory: false } })).toBe("No memory hotplug on x");
  });
});

describe("templates", () => {
  test("a template's shape reads as vCPUs and memory", () => {
    expect(templateShape({ vcpus: 1, memory_bytes: 256 * 2 ** 20 })).toBe("1 vCPU · 256 MiB");
    expect(templateShape({ vcpus: 4, memory_bytes: 2 ** 30 })).toBe("4 vCPUs · 1.0 GiB");
  });

  test("template_id is read only when it is a non-empty string", () => {
    expect(templateOf({ template_id: "0123456789abcdef" })).toBe("0123456789abcdef");
    expect(templateOf({})).toBeNull();
    expect(templateOf({ template_id: "" })).toBeNull();
    expect(templateOf({ template_id: 7 })).toBeNull();
  });
});
