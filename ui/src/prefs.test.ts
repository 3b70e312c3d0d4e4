import { describe, expect, test } from "vitest";

import { draftDefaults, normalized, problemsOf } from "./prefs";

describe("settings rules", () => {
  test("the defaults and good values pass", () => {
    expect(problemsOf({ theme: "system" })).toEqual([]);
    expect(problemsOf({ theme: "dark", default_vcpus: 64, default_memory: "512MB", default_hypervisor: "cloud-hypervisor" })).toEqual([]);
    expect(problemsOf({ theme: "light", default_memory: "64mb" })).toEqual([]);
  });

  test("every bad field is named with what is expected", () => {
    expect(
      problemsOf({ theme: "blue" as never, default_vcpus: 0, default_memory: "lots", default_hypervisor: "firecracker" }).map((p) => p.field),
    ).toEqual(["theme", "default_hypervisor", "default_vcpus", "default_memory"]);
    expect(problemsOf({ theme: "system", default_vcpus: 2.5 })[0]?.message).toBe("2.5 is not between 1 and 64");
    expect(problemsOf({ theme: "system", default_memory: "16MB" })[0]?.message).toBe("16MB is less than 64MB, too little to boot");
  });

  test("empty inputs mean the default, and defaults prefill the create form", () => {
    expect(normalized({ theme: "system", default_memory: "  ", listen: "", data_dir: " /data " })).toEqual({ theme: "system", data_dir: "/data" });
    expect(draftDefaults({ theme: "system", default_vcpus: 2, default_memory: "2GB", default_hypervisor: "qemu" })).toEqual({ vcpus: "2", memory: "2GB", hypervisor: "qemu" });
    expect(draftDefaults({ theme: "system" })).toEqual({});
    // Opened from an image's Run button.
    expect(draftDefaults({ theme: "system", default_vcpus: 2, image: "alpine:3" })).toEqual({ vcpus: "2", image: "alpine:3" });
  });
});
