import { describe, expect, test } from "vitest";

import type { Volume } from "./model";
import { attachChoices, attachErrorField, attachParams, detachAvailability, firstOffered, mountMode, volumeChanges, volumeName } from "./volumes";

const volume = (id: string, name: string, attachments: Volume["attachments"] = []): Volume => ({ id, name, size_gb: 1, created_at: "2026-01-01T00:00:00Z", attachments });
const me = { id: "inst-me", volumes: [{ volume_id: "v-mine", mount_path: "/data", readonly: false }] };

describe("attach choices", () => {
  const volumes = [
    volume("v-free", "free"),
    volume("v-mine", "mine", [{ instance_id: "inst-me", mount_path: "/data", readonly: false }]),
    volume("v-rw", "busy", [{ instance_id: "inst-other-123456", mount_path: "/x", readonly: false }]),
    volume("v-ro", "shared", [{ instance_id: "inst-other", mount_path: "/x", readonly: true }]),
    volume("v-listed", "also-mine"),
  ];

  test("left out when attached here (by the instance or the volume's own list); read-write elsewhere is shown but not offered", () => {
    const choices = attachChoices(volumes, { ...me, volumes: [...me.volumes, { volume_id: "v-listed", mount_path: "/l" }] });
    expect(choices.map((c) => c.id)).toEqual(["v-rw", "v-free", "v-ro"]);
    expect(choices.find((c) => c.id === "v-rw")).toEqual({ id: "v-rw", name: "busy", label: "busy (1 GB): attached read-write to inst-oth", offered: false, readOnlyOnly: false });
    expect(choices.find((c) => c.id === "v-ro")).toEqual({ id: "v-ro", name: "shared", label: "shared (1 GB): shared read-only", offered: true, readOnlyOnly: true });
    expect(choices.find((c) => c.id === "v-free")).toEqual({ id: "v-free", name: "free", label: "free (1 GB)", offered: true, readOnlyOnly: false });
    expect(firstOffered(choices)).toBe("v-free");
  });

  test("an attachment to this instance in the volume's list alone also leaves it out", () => {
    expect(attachChoices(volumes, { id: "inst-me", volumes: [] }).map((c) => c.id)).not.toContain("v-mine");
  });

  test("nothing offered: no first choice", () => {
    expect(firstOffered(attachChoices([volumes[2]], me))).toBe("");
    expect(firstOffered(attachChoices([], me))).toBe("");
  });
});

describe("the attach body", () => {
  const choices = attachChoices([volume("v-free", "free"), volume("v-ro", "shared", [{ instance_id: "x", mount_path: "/x", readonly: true }]), volume("v-rw", "busy", [{ instance_id: "x", mount_path: "/x", readonly: false }])], me);

  test("the SDK's params, path trimmed; a volume shared read-only joins read-only", () => {
    expect(attachParams("inst-me", { volumeId: "v-free", mountPath: " /mnt/data ", readonly: false }, choices)).toEqual({
      volumeId: "v-free",
      params: { id: "inst-me", mount_path: "/mnt/data", readonly: false },
    });
    expect(attachParams("inst-me", { volumeId: "v-free", mountPath: "/mnt/data", readonly: true }, choices)).toMatchObject({ params: { readonly: true } });
    expect(attachParams("inst-me", { volumeId: "v-ro", mountPath: "/ro", readonly: false }, choices)).toMatchObject({ params: { readonly: true } });
  });

  test("what the form tells before sending: no volume, a volume not offered, no path", () => {
    expect(attachParams("inst-me", { volumeId: "", mountPath: "/a", readonly: false }, choices)).toEqual({ error: { field: "volume", message: "Choose a volume to attach" } });
    expect(attachParams("inst-me", { volumeId: "v-rw", mountPath: "/a", readonly: false }, choices)).toMatchObject({ error: { field: "volume" } });
    expect(attachParams("inst-me", { volumeId: "v-free", mountPath: "  ", readonly: false }, choices)).toMatchObject({ error: { field: "mount_path" } });
  });

  test("the path's rules are the API's: /etc and a relative path are sent", () => {
    expect(attachParams("inst-me", { volumeId: "v-free", mountPath: "/etc", readonly: false }, choices)).toMatchObject({ params: { mount_path: "/etc" } });
    expect(attachParams("inst-me", { volumeId: "v-free", mountPath: "data", readonly: false }, choices)).toMatchObject({ params: { mount_path: "data" } });
  });
});

describe("API errors to fields", () => {
  test("the path rules' 400s are the mount path's", () => {
    for (const message of [
      'invalid request: volume v: mount path "data" must be absolute',
      "invalid request: volume v: mount path \"/a/../b\" must not contain '..'",
      'invalid request: volume v: cannot mount to system directory "/etc"',
      'invalid request: duplicate mount path "/data"',
    ]) {
      expect(attachErrorField({ code: "invalid_request", message })).toBe("mount_path");
    }
  });

  test("already attached and unknown volumes are the volume's; state and the rest the form's", () => {
    expect(attachErrorField({ code: "invalid_state", message: "volume v is already attached to this instance at /data" })).toBe("volume");
    expect(attachErrorField({ code: "invalid_state", message: "volume v is already attached to instance i read-write; a volume is shared only when every attachment is read-only" })).toBe("volume");
    expect(attachErrorField({ code: "not_found", message: "volume v not found" })).toBe("volume");
    expect(attachErrorField({ code: "invalid_state", message: "cannot attach a volume to an instance in state Standby; it must be Running or Stopped" })).toBe("form");
    expect(attachErrorField({ code: "invalid_request", message: "cannot attach more than 23 volume devices per instance (overlay volumes count as 2)" })).toBe("form");
    expect(attachErrorField({ code: "unreachable", message: "cannot reach http://x" })).toBe("form");
  });
});

describe("when volumes change", () => {
  test("running or stopped only, with what happens", () => {
    expect(volumeChanges("Running")).toEqual({ enabled: true, reason: "A volume attached now is mounted in the guest at once." });
    expect(volumeChanges("Stopped").enabled).toBe(true);
    for (const s of ["Created", "Initializing", "Paused", "Shutdown", "Standby", "Unknown"] as const) {
      expect(volumeChanges(s)).toEqual({ enabled: false, reason: `Volumes can be attached when the instance is running or stopped; this one is ${s}.` });
    }
  });

  test("detach: not while another state, nor an overlay on a running guest", () => {
    expect(detachAvailability({}, "Running").enabled).toBe(true);
    expect(detachAvailability({ overlay: true }, "Stopped").enabled).toBe(true);
    expect(detachAvailability({ overlay: true }, "Running")).toEqual({ enabled: false, reason: "Its overlay stays until the guest stops: stop the instance to detach it." });
    expect(detachAvailability({}, "Standby")).toEqual({ enabled: false, reason: "Volumes can be detached when the instance is running or stopped; this one is Standby." });
  });
});

describe("words", () => {
  test("mode and name", () => {
    expect(mountMode({ readonly: false })).toBe("read-write");
    expect(mountMode({})).toBe("read-write");
    expect(mountMode({ readonly: true })).toBe("read-only");
    expect(mountMode({ readonly: true, overlay: true, overlay_size: "1GB" })).toBe("read-only, overlay 1GB");
    expect(volumeName([volume("v1", "data")], "v1")).toBe("data");
    expect(volumeName([volume("v1", "data")], "v2")).toBeNull();
    expect(volumeName(null, "v1")).toBeNull();
  });
});
