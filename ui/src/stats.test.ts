import { describe, expect, test } from "vitest";
import type Hypeman from "@onkernel/hypeman";

import {
  appendLive,
  bytesText,
  chartData,
  cpuLine,
  hostSummary,
  hostSummaryText,
  latest,
  peak,
  percentText,
  rates,
  rateText,
  sampled,
  shareText,
  sparkLabel,
  sparkPath,
  spanText,
  noVmmSentence,
  type FleetStats,
  type StatsHistory,
  type StatsSample,
} from "./stats";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** A sample at `s` seconds with the given totals (the rest zero). */
const at = (s: number, v: Partial<Omit<StatsSample, "at_ms">> = {}): StatsSample => ({
  at_ms: 1_000_000 + s * 1000,
  cpu_seconds: 0,
  memory_rss_bytes: 0,
  network_rx_bytes: 0,
  network_tx_bytes: 0,
  disk_read_bytes: 0,
  disk_write_bytes: 0,
  ...v,
});

const history = (name: string, samples: StatsSample[], vcpus = 1): StatsHistory => ({
  instance_id: `id-${name}`,
  instance_name: name,
  interval_ms: 2000,
  allocated_vcpus: vcpus,
  allocated_memory_bytes: GiB,
  samples,
});

describe("rates from running totals", () => {
  test("each interval's rates: CPU in % of the allocated vCPUs, bytes per second, RSS as it is", () => {
    const points = rates(
      [
        at(0, { cpu_seconds: 10, memory_rss_bytes: 100 * MiB, network_rx_bytes: 1000, network_tx_bytes: 50, disk_read_bytes: 0, disk_write_bytes: 4096 }),
        at(2, { cpu_seconds: 11, memory_rss_bytes: 120 * MiB, network_rx_bytes: 3000, network_tx_bytes: 250, disk_read_bytes: 8192, disk_write_bytes: 4096 }),
        at(4, { cpu_seconds: 11.5, memory_rss_bytes: 110 * MiB, network_rx_bytes: 3000, network_tx_bytes: 250, disk_read_bytes: 8192, disk_write_bytes: 8192 }),
      ],
      2,
    );
    expect(points).toHaveLength(3);
    // The first sample has no interval yet: only its RSS.
    expect(points[0]).toEqual({ at_ms: 1_000_000, cpu_percent: null, memory_rss_bytes: 100 * MiB, rx_per_s: null, tx_per_s: null, read_per_s: null, write_per_s: null });
    // 1 CPU second in 2 s on 2 vCPUs: 25%.
    expect(points[1]).toEqual({ at_ms: 1_002_000, cpu_percent: 25, memory_rss_bytes: 120 * MiB, rx_per_s: 1000, tx_per_s: 100, read_per_s: 4096, write_per_s: 0 });
    expect(points[2]!.cpu_percent).toBe(12.5);
    expect(points[2]!.write_per_s).toBe(2048);
    expect(points[2]!.memory_rss_bytes).toBe(110 * MiB);
  });

  test("CPU is clamped to 0..100 and a history without vCPUs counts one", () => {
    const busy = rates([at(0, { cpu_seconds: 0 }), at(2, { cpu_seconds: 10 })], 1);
    expect(busy[1]!.cpu_percent).toBe(100);
    const none = rates([at(0, { cpu_seconds: 0 }), at(2, { cpu_seconds: 1 })], 0);
    expect(none[1]!.cpu_percent).toBe(50);
  });

  test("a counter that goes down is a new VMM: no rate for that interval, never negative, and counting goes on from there", () => {
    const points = rates(
      [
        at(0, { cpu_seconds: 50, network_rx_bytes: 10_000, disk_write_bytes: 9000 }),
        at(2, { cpu_seconds: 0.2, network_rx_bytes: 12_000, disk_write_bytes: 100 }),
        at(4, { cpu_seconds: 0.6, network_rx_bytes: 14_000, disk_write_bytes: 300 }),
      ],
      1,
    );
    expect(points[1]!.cpu_percent).toBeNull();
    expect(points[1]!.write_per_s).toBeNull();
    // The network counter did not go down (it outlives the VMM): its rate goes on.
    expect(points[1]!.rx_per_s).toBe(1000);
    expect(points[2]!.cpu_percent).toBeCloseTo(20);
    expect(points[2]!.write_per_s).toBe(100);
    for (const p of points) for (const v of Object.values(p)) if (v !== null) expect(v).toBeGreaterThanOrEqual(0);
  });

  test("a gap breaks every line (an empty point) and rates start again after it", () => {
    const points = rates([at(0, { cpu_seconds: 1, memory_rss_bytes: 5 }), at(2, { cpu_seconds: 2, memory_rss_bytes: 6 }), at(60, { cpu_seconds: 40, memory_rss_bytes: 7 }), at(62, { cpu_seconds: 41, memory_rss_bytes: 8 })], 1);
    expect(points.map((p) => p.at_ms - 1_000_000)).toEqual([0, 2000, 4000, 60_000, 62_000]);
    expect(points[2]).toEqual({ at_ms: 1_004_000, cpu_percent: null, memory_rss_bytes: null, rx_per_s: null, tx_per_s: null, read_per_s: null, write_per_s: null });
    // Not 38 CPU seconds over 58 s: the sample after a gap starts afresh.
    expect(points[3]!.cpu_percent).toBeNull();
    expect(points[3]!.memory_rss_bytes).toBe(7);
    expect(points[4]!.cpu_percent).toBe(50);
    // A late sample within 2.5 intervals is not a gap.
    expect(rates([at(0), at(4.5, { cpu_seconds: 0.9 })], 1, 2000)[1]!.cpu_percent).toBeCloseTo(20);
  });

  test("samples that do not move time forward are skipped; no samples, no points", () => {
    const points = rates([at(0, { cpu_seconds: 1 }), at(0, { cpu_seconds: 5 }), at(-2), at(2, { cpu_seconds: 2 })], 1);
    expect(points).toHaveLength(2);
    expect(points[1]!.cpu_percent).toBe(50);
    expect(rates([], 1)).toEqual([]);
  });

  test("latest and peak skip the empty points", () => {
    const points = rates([at(0, { cpu_seconds: 0 }), at(2, { cpu_seconds: 1.6 }), at(4, { cpu_seconds: 0 })], 1);
    expect(latest(points, "cpu_percent")).toBe(80);
    expect(peak(points, "cpu_percent")).toBe(80);
    expect(latest(points, "memory_rss_bytes")).toBe(0);
    expect(latest(rates([at(0)], 1), "rx_per_s")).toBeNull();
    expect(peak([], "tx_per_s")).toBeNull();
  });

  test("chart data: seconds on x, one array per key", () => {
    const points = rates([at(0, { memory_rss_bytes: 1 }), at(2, { memory_rss_bytes: 2, network_rx_bytes: 20 })], 1);
    expect(chartData(points, ["memory_rss_bytes", "rx_per_s"])).toEqual([[1000, 1002], [1, 2], [null, 10]]);
  });
});

describe("text", () => {
  test("percentages", () => {
    expect(percentText(12.4)).toBe("12%");
    expect(percentText(99.6)).toBe("100%");
    expect(percentText(3.25)).toBe("3.3%");
    expect(percentText(9.96)).toBe("10%");
    expect(percentText(0.01)).toBe("0%");
    expect(percentText(2)).toBe("2%");
    expect(percentText(0)).toBe("0%");
    expect(percentText(null)).toBe("—");
    expect(percentText(Number.NaN)).toBe("—");
  });

  test("bytes and rates in the units of bytes()", () => {
    expect(bytesText(231 * MiB)).toBe("231 MiB");
    expect(bytesText(1.2 * GiB)).toBe("1.2 GiB");
    expect(bytesText(512.4)).toBe("512 B");
    expect(bytesText(null)).toBe("—");
    expect(rateText(1.2 * MiB)).toBe("1.2 MiB/s");
    expect(rateText(0)).toBe("0 B/s");
    expect(rateText(333.3)).toBe("333 B/s");
    expect(rateText(null)).toBe("—");
  });

  test("how long a chart spans", () => {
    expect(spanText([])).toBe("the last moments");
    expect(spanText([{ at_ms: 0 }, { at_ms: 40_000 }])).toBe("the last 40 seconds");
    expect(spanText([{ at_ms: 0 }, { at_ms: 1000 }])).toBe("the last 1 second");
    expect(spanText([{ at_ms: 0 }, { at_ms: 598_000 }])).toBe("the last 10 minutes");
    expect(spanText([{ at_ms: 0 }, { at_ms: 100_000 }])).toBe("the last 2 minutes");
  });
});

describe("the list's sparkline", () => {
  test("CPU per point and the accessible name with the latest value", () => {
    const line = cpuLine(history("web", [at(0, { cpu_seconds: 0 }), at(2, { cpu_seconds: 0.24 }), at(4, { cpu_seconds: 0.48 })]));
    expect(line).toEqual([null, 12, 12]);
    expect(sparkLabel("web", line)).toBe("CPU of web, last minute: 12% now");
    expect(sparkLabel("web", [5, null])).toBe("CPU of web, last minute: 5% now");
    expect(sparkLabel("idle", [])).toBe("CPU of idle, last minute: — now");
  });

  test("the SVG path spans the width, 0% at the bottom, 100% at the top, broken at nulls", () => {
    expect(sparkPath([0, 50, 100], 60, 20)).toBe("M0,20L30,10L60,0");
    expect(sparkPath([null, 0, 100, null, 50, 50], 50, 10)).toBe("M10,10L20,0M40,5L50,5");
    // Out of range values stay in the box.
    expect(sparkPath([-5, 200], 10, 10)).toBe("M0,10L10,0");
    // A lone point is a short dash, nothing is drawn for nothing.
    expect(sparkPath([null, 30, null], 20, 10)).toBe("M10,7h5");
    expect(sparkPath([], 20, 10)).toBe("");
    expect(sparkPath([null, null], 20, 10)).toBe("");
  });
});

describe("the header's host summary", () => {
  const fleet: FleetStats = {
    host_memory_bytes: 16 * GiB,
    host_cpus: 8,
    guest_memory_rss_bytes: 0,
    guest_memory_allocated_bytes: 3 * GiB,
    instances: [
      history("web", [at(0, { memory_rss_bytes: 100 * MiB }), at(2, { memory_rss_bytes: 300 * MiB })]),
      history("db", [at(2, { memory_rss_bytes: 900 * MiB })]),
      history("fresh", []),
    ],
  };

  test("the guests' RSS (each one's latest), its share of the host, and each instance's share, biggest first", () => {
    const s = hostSummary(fleet);
    expect(s.rss_bytes).toBe(1200 * MiB);
    expect(s.of_host).toBeCloseTo(1200 / (16 * 1024));
    expect(s.shares.map((x) => [x.name, x.rss_bytes])).toEqual([
      ["db", 900 * MiB],
      ["web", 300 * MiB],
      ["fresh", 0],
    ]);
    expect(s.shares[0]!.of_guests).toBe(0.75);
    expect(s.shares[1]!.of_guests).toBe(0.25);
    expect(s.shares.reduce((a, x) => a + x.of_guests, 0)).toBeCloseTo(1);
    expect(hostSummaryText(s)).toBe("Sandboxes: 1.2 GiB of 16 GiB");
    expect(shareText(s.shares[1]!)).toBe("300 MiB, 25% of sandboxes' memory, 1.8% of the host's");
  });

  test("nothing running; the host's memory unknown", () => {
    const empty = hostSummary({ ...fleet, instances: [] });
    expect(empty).toEqual({ rss_bytes: 0, host_memory_bytes: 16 * GiB, of_host: 0, shares: [] });
    expect(hostSummaryText(empty)).toBe("Sandboxes: 0 B of 16 GiB");
    const unknown = hostSummary({ ...fleet, host_memory_bytes: 0 });
    expect(unknown.of_host).toBeNull();
    expect(unknown.shares[0]!.of_host).toBe(0);
    expect(hostSummaryText(unknown)).toBe("Sandboxes: 1.2 GiB");
    expect(shareText(unknown.shares[0]!, false)).toBe("900 MiB, 75% of sandboxes' memory");
  });
});

describe("a history kept by the page (servers without Hypedeck's)", () => {
  const stats = (cpu: number, rss: number, id = "i1"): Hypeman.InstanceStats => ({
    instance_id: id,
    instance_name: "web",
    cpu_seconds: cpu,
    memory_rss_bytes: rss,
    memory_vms_bytes: 0,
    network_rx_bytes: 10,
    network_tx_bytes: 20,
    allocated_vcpus: 2,
    allocated_memory_bytes: GiB,
  });

  test("appends upstream's totals, keeps the last ones, and skips the zeros of no VMM", () => {
    let h = appendLive(null, stats(1, 5 * MiB), 1000);
    h = appendLive(h, stats(0, 0), 3000);
    h = appendLive(h, stats(2, 6 * MiB), 5000);
    expect(h.samples.map((s) => [s.at_ms, s.cpu_seconds, s.disk_read_bytes])).toEqual([
      [1000, 1, 0],
      [5000, 2, 0],
    ]);
    expect(h).toMatchObject({ instance_id: "i1", instance_name: "web", interval_ms: 2000, allocated_vcpus: 2, allocated_memory_bytes: GiB });
    for (let n = 0; n < 5; n++) h = appendLive(h, stats(3 + n, MiB), 7000 + n * 2000, 4);
    expect(h.samples.map((s) => s.cpu_seconds)).toEqual([4, 5, 6, 7]);
    // Another instance starts a new history.
    expect(appendLive(h, stats(1, MiB, "i2"), 9).samples).toHaveLength(1);
  });

  test("which states have a VMM to sample", () => {
    expect(["Running", "Initializing", "Paused"].every(sampled)).toBe(true);
    expect(["Stopped", "Standby", "Shutdown", "Created", "Unknown"].some(sampled)).toBe(false);
  });
});

describe("the Stats tab without a VMM", () => {
  test("says why there is nothing to draw and what to do", () => {
    expect(noVmmSentence("web", "Stopped")).toBe("web is Stopped: no VMM runs, so there is no CPU, memory, network or disk use to show. Start it to see its graphs.");
    expect(noVmmSentence("web", "Standby")).toBe(
      "web is in standby: its memory is saved to disk and no VMM runs, so there is no CPU, memory, network or disk use to show. Restore it to see its graphs.",
    );
    expect(noVmmSentence("web", "Created")).toBe("web has not booted yet: no VMM runs, so there is no CPU, memory, network or disk use to show. Once it runs, its graphs appear here.");
    expect(noVmmSentence("web", "Unknown")).toContain("web is in an unknown state: no VMM runs");
  });
});
