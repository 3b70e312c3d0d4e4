// Resource use for the graphs: the shapes of Hypedeck's stats extensions
// (`GET /instances/{id}/stats/history`, `GET /stats`), per-interval rates from their running
// totals (a counter that goes down is a new VMM, never a negative rate), the text the charts,
// the list's sparklines and the header's host summary show, and the sparkline's SVG path.
// No React and no I/O, so Vitest covers all of it (stats.test.ts).
import type Hypeman from "@onkernel/hypeman";

import { bytes } from "./model";

/** One sample of an instance's counters (running totals, except the RSS). */
export interface StatsSample {
  /** When (Unix milliseconds). */
  at_ms: number;
  cpu_seconds: number;
  memory_rss_bytes: number;
  network_rx_bytes: number;
  network_tx_bytes: number;
  disk_read_bytes: number;
  disk_write_bytes: number;
}

/** An instance's recent samples, oldest first (`GET /instances/{id}/stats/history`). */
export interface StatsHistory {
  instance_id: string;
  instance_name: string;
  /** Time between samples. */
  interval_ms: number;
  allocated_vcpus: number;
  allocated_memory_bytes: number;
  samples: StatsSample[];
}

/** The host and every instance with a VMM, the last minute of each (`GET /stats`). */
export interface FleetStats {
  host_memory_bytes: number;
  host_cpus: number;
  guest_memory_rss_bytes: number;
  guest_memory_allocated_bytes: number;
  instances: StatsHistory[];
}

/** The engine's sampling interval when a history does not say. */
export const SAMPLE_MS = 2000;
/** Samples the engine keeps per instance (ten minutes); the UI keeps as many of its own. */
export const KEEP_SAMPLES = 300;
/** A step longer than this many intervals is a gap: the lines break there. */
export const GAP_INTERVALS = 2.5;

/** What the charts draw at one moment; null where there is nothing to draw (a break). */
export interface RatePoint {
  at_ms: number;
  /** CPU use in % of the allocated vCPUs (0..100). */
  cpu_percent: number | null;
  memory_rss_bytes: number | null;
  /** Bytes per second received / sent by the guest's NIC. */
  rx_per_s: number | null;
  tx_per_s: number | null;
  /** Bytes per second read from / written to the guest's disks. */
  read_per_s: number | null;
  write_per_s: number | null;
}

export type RateKey = Exclude<keyof RatePoint, "at_ms">;

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** A counter's rate per second over `dt` seconds; null when it went down (a new VMM). */
function perSecond(now: number, before: number, dt: number): number | null {
  const d = now - before;
  return d < 0 || !Number.isFinite(d) ? null : d / dt;
}

const BREAK = { cpu_percent: null, memory_rss_bytes: null, rx_per_s: null, tx_per_s: null, read_per_s: null, write_per_s: null } as const;

/**
 * What the charts draw from a history's samples (oldest first): one point per sample, its RSS
 * and the rates over the interval that ends there, CPU as a % of `vcpus`. The first sample and
 * the first after a gap have no rates yet; a counter that went down (a new VMM process: a
 * restart or restore) has none for that interval and counts on from there. A gap (a step over
 * GAP_INTERVALS intervals: no VMM, or no sampling, in between) gets an empty point, so lines
 * break instead of bridging it. Samples that do not move time forward are skipped.
 */
export function rates(samples: readonly StatsSample[], vcpus: number, intervalMs = SAMPLE_MS): RatePoint[] {
  const cores = vcpus > 0 ? vcpus : 1;
  const interval = intervalMs > 0 ? intervalMs : SAMPLE_MS;
  const out: RatePoint[] = [];
  let prev: StatsSample | undefined;
  for (const s of samples) {
    if (prev !== undefined && s.at_ms <= prev.at_ms) continue;
    const first = { ...BREAK, at_ms: s.at_ms, memory_rss_bytes: s.memory_rss_bytes };
    if (prev === undefined) {
      out.push(first);
    } else if (s.at_ms - prev.at_ms > interval * GAP_INTERVALS) {
      out.push({ ...BREAK, at_ms: prev.at_ms + interval }, first);
    } else {
      const dt = (s.at_ms - prev.at_ms) / 1000;
      const cpu = perSecond(s.cpu_seconds, prev.cpu_seconds, dt);
      out.push({
        at_ms: s.at_ms,
        cpu_percent: cpu === null ? null : clamp((cpu / cores) * 100, 0, 100),
        memory_rss_bytes: s.memory_rss_bytes,
        rx_per_s: perSecond(s.network_rx_bytes, prev.network_rx_bytes, dt),
        tx_per_s: perSecond(s.network_tx_bytes, prev.network_tx_bytes, dt),
        read_per_s: perSecond(s.disk_read_bytes, prev.disk_read_bytes, dt),
        write_per_s: perSecond(s.disk_write_bytes, prev.disk_write_bytes, dt),
      });
    }
    prev = s;
  }
  return out;
}

/** The last value of `key` there is (null: none yet). */
export function latest(points: readonly RatePoint[], key: RateKey): number | null {
  for (let i = points.length - 1; i >= 0; i--) {
    const v = points[i]![key];
    if (v !== null) return v;
  }
  return null;
}

/** The highest value of `key` (null: none). */
export function peak(points: readonly RatePoint[], key: RateKey): number | null {
  let top: number | null = null;
  for (const p of points) {
    const v = p[key];
    if (v !== null && (top === null || v > top)) top = v;
  }
  return top;
}

/** `"12%"`, `"3.5%"`, `"5%"`, `"0%"`; `"—"` when unknown. */
export function percentText(p: number | null | undefined): string {
  if (p === null || p === undefined || !Number.isFinite(p)) return "—";
  if (p >= 9.95) return `${Math.round(p)}%`;
  const tenths = p.toFixed(1);
  return `${tenths.endsWith(".0") ? tenths.slice(0, -2) : tenths}%`;
}

/** `"231 MiB"` (the units of `bytes()`); `"—"` when unknown. */
export function bytesText(n: number | null | undefined): string {
  return bytes(n === null || n === undefined || !Number.isFinite(n) ? n : n < 1024 ? Math.round(n) : n);
}

/** `"1.2 MiB/s"`, `"0 B/s"`; `"—"` when unknown. */
export function rateText(perSecond: number | null | undefined): string {
  const text = bytesText(perSecond);
  return text === "—" ? text : `${text}/s`;
}

/** How long the points span, for captions: `"the last 40 seconds"`, `"the last 5 minutes"`. */
export function spanText(points: readonly Pick<RatePoint, "at_ms">[]): string {
  if (points.length < 2) return "the last moments";
  const s = (points[points.length - 1]!.at_ms - points[0]!.at_ms) / 1000;
  if (s < 90) {
    const n = Math.max(1, Math.round(s));
    return `the last ${n} second${n === 1 ? "" : "s"}`;
  }
  const m = Math.round(s / 60);
  return `the last ${m} minute${m === 1 ? "" : "s"}`;
}

/** The uPlot data of a chart: seconds on x, then one array per key. */
export function chartData(points: readonly RatePoint[], keys: readonly RateKey[]): [number[], ...(number | null)[][]] {
  return [points.map((p) => p.at_ms / 1000), ...keys.map((k) => points.map((p) => p[k]))];
}

/** CPU % per point of an instance's fleet history (the list's sparkline). */
export function cpuLine(history: StatsHistory): (number | null)[] {
  return rates(history.samples, history.allocated_vcpus, history.interval_ms).map((p) => p.cpu_percent);
}

/** The sparkline's accessible name: `"CPU of web, last minute: 12% now"`. */
export function sparkLabel(name: string, values: readonly (number | null)[]): string {
  let now: number | null = null;
  for (let i = values.length - 1; i >= 0 && now === null; i--) now = values[i] ?? null;
  return `CPU of ${name}, last minute: ${percentText(now)} now`;
}

/**
 * An SVG path of `values` (0..`max`) across `width` × `height`, one step per value, broken at
 * nulls; "" when there is nothing to draw. A lone point between breaks is a short flat dash.
 */
export function sparkPath(values: readonly (number | null)[], width: number, height: number, max = 100): string {
  if (values.length === 0) return "";
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const y = (v: number): number => Math.round((height - (clamp(v, 0, max) / max) * height) * 10) / 10;
  const x = (i: number): number => Math.round(i * step * 10) / 10;
  const parts: string[] = [];
  let drawing = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      drawing = false;
      return;
    }
    const lone = !drawing && (i + 1 >= values.length || values[i + 1] === null);
    parts.push(`${drawing ? "L" : "M"}${x(i)},${y(v)}`);
    if (lone) parts.push(`h${Math.max(1, Math.round(step * 5) / 10)}`);
    drawing = true;
  });
  return parts.join("");
}

/** One instance's part of the guests' memory. */
export interface MemoryShare {
  id: string;
  name: string;
  rss_bytes: number;
  /** Of all guests' RSS (0..1). */
  of_guests: number;
  /** Of the host's memory (0..1; 0 when the host's is unknown). */
  of_host: number;
}

/** The header's summary: what the guests use of the host's memory, and who uses it. */
export interface HostSummary {
  rss_bytes: number;
  host_memory_bytes: number;
  /** Of the host's memory (0..1); null when the host's is unknown. */
  of_host: number | null;
  /** Biggest first (then by name). */
  shares: MemoryShare[];
}

/** The header's summary from `GET /stats`: each instance's latest RSS and their sum. */
export function hostSummary(fleet: FleetStats): HostSummary {
  const each = fleet.instances.map((h) => ({ id: h.instance_id, name: h.instance_name, rss_bytes: h.samples.at(-1)?.memory_rss_bytes ?? 0 }));
  const total = each.reduce((sum, i) => sum + i.rss_bytes, 0);
  const host = fleet.host_memory_bytes;
  const shares = each
    .map((i) => ({ ...i, of_guests: total > 0 ? i.rss_bytes / total : 0, of_host: host > 0 ? i.rss_bytes / host : 0 }))
    .sort((a, b) => b.rss_bytes - a.rss_bytes || a.name.localeCompare(b.name));
  return { rss_bytes: total, host_memory_bytes: host, of_host: host > 0 ? total / host : null, shares };
}

/** `"Sandboxes: 1.2 GiB of 16 GiB"` (`"Sandboxes: 1.2 GiB"` when the host's memory is unknown). */
export function hostSummaryText(s: HostSummary): string {
  return `Sandboxes: ${bytesText(s.rss_bytes)}${s.host_memory_bytes > 0 ? ` of ${bytesText(s.host_memory_bytes)}` : ""}`;
}

/** What one instance uses, after its name: `"231 MiB, 45% of sandboxes' memory, 1.4% of the host's"`. */
export function shareText(share: MemoryShare, hostKnown = true): string {
  return `${bytesText(share.rss_bytes)}, ${percentText(share.of_guests * 100)} of sandboxes' memory${hostKnown ? `, ${percentText(share.of_host * 100)} of the host's` : ""}`;
}

/**
 * A history kept by the page from upstream's `GET /instances/{id}/stats` (servers without
 * Hypedeck's history): `stats` taken at `at_ms` appended to `prev` (null: a new one), the last
 * `keep` kept. Upstream counts no disk bytes (0 here; the page says so), and its zeros mean no
 * VMM (not a sample).
 */
export function appendLive(prev: StatsHistory | null, stats: Hypeman.InstanceStats, at_ms: number, keep = KEEP_SAMPLES): StatsHistory {
  const base: StatsHistory = {
    instance_id: stats.instance_id,
    instance_name: stats.instance_name,
    interval_ms: SAMPLE_MS,
    allocated_vcpus: stats.allocated_vcpus,
    allocated_memory_bytes: stats.allocated_memory_bytes,
    samples: prev?.instance_id === stats.instance_id ? prev.samples : [],
  };
  if (stats.cpu_seconds === 0 && stats.memory_rss_bytes === 0) return base;
  const sample: StatsSample = {
    at_ms,
    cpu_seconds: stats.cpu_seconds,
    memory_rss_bytes: stats.memory_rss_bytes,
    network_rx_bytes: stats.network_rx_bytes,
    network_tx_bytes: stats.network_tx_bytes,
    disk_read_bytes: 0,
    disk_write_bytes: 0,
  };
  return { ...base, samples: [...base.samples, sample].slice(-keep) };
}

/** Whether an instance in `state` has a VMM whose use can be sampled. */
export function sampled(state: string): boolean {
  return state === "Running" || state === "Initializing" || state === "Paused";
}

/** What the Stats tab says instead of graphs when `state` has no VMM. */
export function noVmmSentence(name: string, state: string): string {
  const why =
    state === "Standby"
      ? `${name} is in standby: its memory is saved to disk and no VMM runs`
      : state === "Created"
        ? `${name} has not booted yet: no VMM runs`
        : `${name} is ${state === "Unknown" ? "in an unknown state" : state}: no VMM runs`;
  const next =
    state === "Standby" ? "Restore it to see its graphs." : state === "Created" || state === "Unknown" ? "Once it runs, its graphs appear here." : "Start it to see its graphs.";
  return `${why}, so there is no CPU, memory, network or disk use to show. ${next}`;
}
