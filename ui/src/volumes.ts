// Pure logic of attaching and detaching volumes on the instance page: when the instance takes a
// change (Running or Stopped only), which volumes the Attach form offers and which of them only
// read-only (a volume is shared only when every attachment is read-only), whether a mount may be
// detached now, the body sent, and which field an API error is about. No React, no I/O
// (volumes.test.ts).
import type Hypeman from "@onkernel/hypeman";

import { shortId, type Availability, type Instance, type Problem, type State, type Volume } from "./model";

export type VolumeMount = Hypeman.VolumeMount;

/** Whether the instance's volumes can change now (upstream's rule: Running or Stopped). */
export function volumeChanges(state: State): Availability {
  if (state === "Running") return { enabled: true, reason: "A volume attached now is mounted in the guest at once." };
  if (state === "Stopped") return { enabled: true, reason: "A volume attached now is mounted at the next start." };
  return { enabled: false, reason: `Volumes can be attached when the instance is running or stopped; this one is ${state}.` };
}

/** One entry of the Attach form's volume menu. */
export interface VolumeChoice {
  id: string;
  name: string;
  /** `"data (1 GB)"`, with why it cannot be attached or only read-only. */
  label: string;
  /** False: shown but not selectable (attached read-write to another instance). */
  offered: boolean;
  /** Attached read-only elsewhere: it may join only read-only. */
  readOnlyOnly: boolean;
}

/**
 * The volumes the Attach form lists for `instance`: every volume not attached to it yet, by
 * name; those attached read-write elsewhere are listed but not offered, those attached
 * read-only elsewhere only read-only (the API refuses the rest with a 409).
 */
export function attachChoices(volumes: readonly Volume[], instance: Pick<Instance, "id" | "volumes">): VolumeChoice[] {
  const mine = new Set((instance.volumes ?? []).map((m) => m.volume_id));
  const out: VolumeChoice[] = [];
  for (const v of [...volumes].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))) {
    const attachments = v.attachments ?? [];
    if (mine.has(v.id) || attachments.some((a) => a.instance_id === instance.id)) continue;
    const base = `${v.name} (${String(v.size_gb)} GB)`;
    const writer = attachments.find((a) => !a.readonly);
    if (writer) {
      out.push({ id: v.id, name: v.name, label: `${base}: attached read-write to ${shortId(writer.instance_id)}`, offered: false, readOnlyOnly: false });
    } else if (attachments.length) {
      out.push({ id: v.id, name: v.name, label: `${base}: shared read-only`, offered: true, readOnlyOnly: true });
    } else {
      out.push({ id: v.id, name: v.name, label: base, offered: true, readOnlyOnly: false });
    }
  }
  return out;
}

/** The first volume the form may select, or `""`. */
export function firstOffered(choices: readonly VolumeChoice[]): string {
  return choices.find((c) => c.offered)?.id ?? "";
}

/** What the Attach form holds. */
export interface AttachDraft {
  volumeId: string;
  mountPath: string;
  readonly: boolean;
}

/** Which part of the Attach form a mistake is about. */
export type AttachField = "volume" | "mount_path" | "form";

/**
 * The body of `POST /instances/{id}/volumes/{volumeId}` (the SDK's params), or the one mistake
 * the form can tell before sending: nothing chosen, no mount path. The path's rules (absolute,
 * no `..`, no system directory, not taken) are the API's, which answers a 400 with its reason.
 */
export function attachParams(
  instanceId: string,
  draft: AttachDraft,
  choices: readonly VolumeChoice[],
): { volumeId: string; params: Hypeman.Instances.VolumeAttachParams } | { error: { field: AttachField; message: string } } {
  const choice = choices.find((c) => c.id === draft.volumeId);
  if (!choice || !choice.offered) return { error: { field: "volume", message: "Choose a volume to attach" } };
  const mountPath = draft.mountPath.trim();
  if (mountPath === "") return { error: { field: "mount_path", message: "Give the path to mount it at in the guest, e.g. /mnt/data" } };
  const readonly = draft.readonly || choice.readOnlyOnly;
  return { volumeId: choice.id, params: { id: instanceId, mount_path: mountPath, readonly } };
}

/**
 * Which field of the Attach form an API error is about: the mount path for the path rules'
 * 400s (`mount path "x" must be absolute`, `cannot mount to system directory "/etc"`,
 * `duplicate mount path "/data"`), the volume for "already attached" and unknown volumes;
 * anything else (state, backend, device budget) is about the form as a whole.
 */
export function attachErrorField(p: Problem): AttachField {
  const m = p.message;
  if (p.code === "invalid_request" && /mount path|system directory|mount_path/i.test(m)) return "mount_path";
  if (/already attached/i.test(m) || (p.code === "not_found" && /\bvolume\b/i.test(m))) return "volume";
  return "form";
}

/** Whether a mount can be detached now, and why not (the API's 409s, said before sending). */
export function detachAvailability(mount: Pick<VolumeMount, "overlay">, state: State): Availability {
  const changes = volumeChanges(state);
  if (!changes.enabled) return { enabled: false, reason: `Volumes can be detached when the instance is running or stopped; this one is ${state}.` };
  if (state === "Running" && mount.overlay) {
    return { enabled: false, reason: "Its overlay stays until the guest stops: stop the instance to detach it." };
  }
  return { enabled: true, reason: state === "Running" ? "The guest unmounts it first; a volume in use stays attached." : "It is no longer mounted at the next start." };
}

/** How a mount is attached: `"read-write"`, `"read-only"`, `"read-only, overlay 1 GB"`. */
export function mountMode(mount: Pick<VolumeMount, "readonly" | "overlay" | "overlay_size">): string {
  if (mount.overlay) return `read-only, overlay${mount.overlay_size ? ` ${mount.overlay_size}` : ""}`;
  return mount.readonly ? "read-only" : "read-write";
}

/** The volume's name when the list has it (null: not known, e.g. the list is loading or it is gone). */
export function volumeName(volumes: readonly Pick<Volume, "id" | "name">[] | null, id: string): string | null {
  return volumes?.find((v) => v.id === id)?.name ?? null;
}
