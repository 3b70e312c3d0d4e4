// Pure rules of the fleet views: which selected instances a bulk verb applies to, how many
// instances use an image, and a pull's progress in words. Unit-tested in fleet.test.ts.
import { availability, bytes, type BackendCaps, type Instance, type Verb } from "./model";

/** What a bulk verb does to a selection: the instances it applies to, and why the others are left. */
export interface BulkPlan {
  /** The selected instances the verb applies to, in list order. */
  targets: Instance[];
  /** How many selected instances it skips. */
  skipped: number;
  /** Why the button is disabled (no target), or null. */
  reason: string | null;
}

const PAST: Record<Verb, string> = {
  start: "started",
  stop: "stopped",
  standby: "put in standby",
  restore: "restored",
  delete: "deleted",
};

const ADJECTIVE: Partial<Record<Verb, string>> = {
  start: "stopped",
  stop: "running or initializing",
  standby: "running",
  restore: "in standby",
};

/** The selected instances `verb` applies to (by the same table as the lifecycle buttons). */
export function bulkPlan(list: readonly Instance[], selected: ReadonlySet<string>, verb: Verb, backend?: (i: Instance) => BackendCaps | undefined): BulkPlan {
  const chosen = list.filter((i) => selected.has(i.id));
  const targets = chosen.filter((i) => availability(i.state, verb, backend?.(i)).enabled);
  const skipped = chosen.length - targets.length;
  let reason: string | null = null;
  if (chosen.length === 0) reason = "Nothing is selected";
  else if (targets.length === 0) reason = `None of the selected instances is ${ADJECTIVE[verb] ?? "in a state for this"}`;
  return { targets, skipped, reason };
}

/** "2 instances stopped", "1 instance deleted; 1 failed (web: …)". */
export function bulkSummary(verb: Verb, done: number, failures: readonly { name: string; message: string }[]): string {
  const n = (k: number): string => `${k} instance${k === 1 ? "" : "s"}`;
  const head = `${n(done)} ${PAST[verb]}`;
  if (failures.length === 0) return head;
  return `${head}; ${failures.length} failed (${failures.map((f) => `${f.name}: ${f.message}`).join("; ")})`;
}

/**
 * An image reference the way the API stores it: `alpine` is `docker.io/library/alpine:latest`,
 * a reference without a tag or digest gets `:latest`.
 */
export function normalizeImage(ref: string): string {
  let r = ref.trim();
  const slash = r.indexOf("/");
  const first = slash < 0 ? "" : r.slice(0, slash);
  const hasRegistry = slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost");
  if (!hasRegistry) r = `docker.io/${slash < 0 ? "library/" : ""}${r}`;
  const last = r.slice(r.lastIndexOf("/") + 1);
  if (!last.includes(":") && !r.includes("@")) r = `${r}:latest`;
  return r;
}

/** How many instances use each image, keyed by the image's normalized name. */
export function imageUsage(instances: readonly Pick<Instance, "image">[]): Map<string, number> {
  const uses = new Map<string, number>();
  for (const i of instances) {
    const k = normalizeImage(i.image);
    uses.set(k, (uses.get(k) ?? 0) + 1);
  }
  return uses;
}

/** "in use by 2 instances", "not in use". */
export function usageText(n: number): string {
  return n === 0 ? "not in use" : `in use by ${n} instance${n === 1 ? "" : "s"}`;
}

/**
 * A pull's progress: `{percent, text}` ("12 MiB of 48 MiB (25%)"); percent null and text empty
 * when the engine does not say (Hypedeck reports bytes only until the image's config arrives).
 */
export function pullProgress(done: number | null | undefined, total: number | null | undefined): { percent: number | null; text: string } {
  if (!total || total <= 0) return { percent: null, text: done ? `${bytes(done)} so far` : "" };
  const d = Math.max(0, Math.min(done ?? 0, total));
  const percent = Math.floor((d / total) * 100);
  return { percent, text: `${bytes(d)} of ${bytes(total)} (${percent}%)` };
}
