// The instance page's Stats tab: CPU, memory, network and disk over the last minutes, from
// Hypedeck's `GET /instances/{id}/stats/history` (polled every 2 s while the tab is shown), or,
// from servers without it, a history this page keeps of upstream's `GET /instances/{id}/stats`.
// Each chart is a figure whose caption says what it shows and its latest values in text.
// Without a VMM (stopped, standby) there is a sentence instead. Loaded on first use (uPlot).
import { useCallback, useMemo, useRef } from "react";
import Hypeman, { APIError } from "@onkernel/hypeman";

import { statsHistory } from "../api";
import { REFRESH_MS, usePolled } from "../hooks";
import type { Instance } from "../model";
import {
  appendLive,
  bytesText,
  chartData,
  latest,
  noVmmSentence,
  peak,
  percentText,
  rates,
  rateText,
  sampled,
  spanText,
  type RateKey,
  type RatePoint,
  type StatsHistory,
} from "../stats";
import TimeChart, { type ChartLine } from "./TimeChart";

/** What the tab has: Hypedeck's history, one kept here (no disk bytes), or nothing to ask. */
type Feed = { history: StatsHistory; kept: boolean } | { unsupported: true };

/** The stats of `id`: the server's history, else upstream's totals kept here, polled while `active`. */
function useStatsFeed(api: Hypeman, id: string, active: boolean) {
  const mode = useRef<"history" | "kept">("history");
  const kept = useRef<StatsHistory | null>(null);
  const fetch = useCallback(async (): Promise<Feed> => {
    if (mode.current === "history") {
      const history = await statsHistory(api, id);
      if (history !== null) return { history, kept: false };
      mode.current = "kept";
    }
    try {
      kept.current = appendLive(kept.current, await api.instances.stats(id), Date.now());
    } catch (e) {
      if (e instanceof APIError && e.status === 404) return { unsupported: true };
      throw e;
    }
    return { history: kept.current, kept: true };
  }, [api, id]);
  return usePolled(fetch, REFRESH_MS, active);
}

const pct = (v: number): string => percentText(v);

/** A line's key: solid for the first series, dashed for the second (not colour alone). */
function Key({ tone }: { tone: 1 | 2 }) {
  return (
    <svg width="18" height="8" aria-hidden="true" className={tone === 1 ? "key-solid" : "key-dashed"}>
      <line x1="0" y1="4" x2="18" y2="4" strokeWidth="2" {...(tone === 2 ? { strokeDasharray: "5 3" } : {})} />
    </svg>
  );
}

interface Series {
  key: RateKey;
  label: string;
  tone: 1 | 2;
}

function Chart({
  id,
  title,
  points,
  series,
  format,
  now,
  peakText,
  bytes = false,
  minTop = 0,
  sync,
}: {
  id: string;
  title: string;
  points: readonly RatePoint[];
  series: readonly Series[];
  format: (v: number) => string;
  /** The latest values, in words. */
  now: string;
  peakText: string;
  bytes?: boolean;
  minTop?: number;
  sync: string;
}) {
  const data = useMemo(
    () =>
      chartData(
        points,
        series.map((s) => s.key),
      ),
    [points, series],
  );
  const lines: ChartLine[] = useMemo(() => series.map((s) => ({ label: s.label, tone: s.tone })), [series]);
  const values = series.map((s) => latest(points, s.key));
  const drawn = points.filter((p) => series.some((s) => p[s.key] !== null)).length;
  return (
    <figure className="card chart" id={`chart-${id}`} data-chart={id} data-points={drawn} data-now={values.map((v) => v ?? "").join(" ")} aria-labelledby={`chart-${id}-caption`}>
      <figcaption id={`chart-${id}-caption`}>
        <h3>{title}</h3>
        <span className="chart-now" data-field="now">
          {now}
        </span>
        {series.length > 1 &&
          series.map((s) => (
            <span key={s.key} className="chart-key muted">
              <Key tone={s.tone} />
              {s.label}
            </span>
          ))}
        <span className="chart-peak muted">{peakText}</span>
      </figcaption>
      <TimeChart label={`${title} over ${spanText(points)}: ${now}. ${peakText}.`} lines={lines} data={data} format={format} bytes={bytes} minTop={minTop} sync={sync} />
    </figure>
  );
}

const CPU: Series[] = [{ key: "cpu_percent", label: "CPU", tone: 1 }];
const MEMORY: Series[] = [{ key: "memory_rss_bytes", label: "RSS", tone: 1 }];
const NETWORK: Series[] = [
  { key: "rx_per_s", label: "received", tone: 1 },
  { key: "tx_per_s", label: "sent", tone: 2 },
];
const DISK: Series[] = [
  { key: "read_per_s", label: "read", tone: 1 },
  { key: "write_per_s", label: "written", tone: 2 },
];

function Charts({ history, kept }: { history: StatsHistory; kept: boolean }) {
  const points = useMemo(() => rates(history.samples, history.allocated_vcpus, history.interval_ms), [history]);
  const span = spanText(points);
  const vcpus = history.allocated_vcpus;
  const allocated = history.allocated_memory_bytes;
  const rss = latest(points, "memory_rss_bytes");
  const sync = `stats-${history.instance_id}`;
  const peakOf = (key: RateKey, text: (v: number | null) => string): string => `Peak ${text(peak(points, key))} over ${span}`;
  const perSecond = (v: number): string => rateText(v);
  return (
    <div className="charts">
      <Chart
        id="cpu"
        title="CPU"
        points={points}
        series={CPU}
        format={pct}
        minTop={100}
        sync={sync}
        now={`${percentText(latest(points, "cpu_percent"))} of ${vcpus} vCPU${vcpus === 1 ? "" : "s"}`}
        peakText={peakOf("cpu_percent", percentText)}
      />
      <Chart
        id="memory"
        title="Memory"
        points={points}
        series={MEMORY}
        format={bytesText}
        bytes
        sync={sync}
        now={`${bytesText(rss)} resident${allocated > 0 ? ` of ${bytesText(allocated)} allocated${rss !== null ? ` (${percentText((rss / allocated) * 100)})` : ""}` : ""}`}
        peakText={peakOf("memory_rss_bytes", bytesText)}
      />
      <Chart
        id="network"
        title="Network"
        points={points}
        series={NETWORK}
        format={perSecond}
        bytes
        sync={sync}
        now={`${rateText(latest(points, "rx_per_s"))} received, ${rateText(latest(points, "tx_per_s"))} sent`}
        peakText={`Peaks ${rateText(peak(points, "rx_per_s"))} received, ${rateText(peak(points, "tx_per_s"))} sent over ${span}`}
      />
      {kept ? (
        <figure className="card chart" id="chart-disk" data-chart="disk" aria-labelledby="chart-disk-caption">
          <figcaption id="chart-disk-caption">
            <h3>Disk</h3>
          </figcaption>
          <p className="muted">This server does not count the bytes guests read and write (a Hypedeck extension).</p>
        </figure>
      ) : (
        <Chart
          id="disk"
          title="Disk"
          points={points}
          series={DISK}
          format={perSecond}
          bytes
          sync={sync}
          now={`${rateText(latest(points, "read_per_s"))} read, ${rateText(latest(points, "write_per_s"))} written`}
          peakText={`Peaks ${rateText(peak(points, "read_per_s"))} read, ${rateText(peak(points, "write_per_s"))} written over ${span}`}
        />
      )}
    </div>
  );
}

export default function StatsPanel({ api, instance }: { api: Hypeman; instance: Instance }) {
  const live = sampled(instance.state);
  const { value, failure } = useStatsFeed(api, instance.id, live);
  if (!live) {
    return (
      <p id="stats-none" className="card muted">
        {noVmmSentence(instance.name, instance.state)}
      </p>
    );
  }
  if (value && "unsupported" in value) {
    return (
      <p id="stats-unsupported" className="card muted">
        This server does not report resource use.
      </p>
    );
  }
  return (
    <section id="stats" className="stats" aria-label={`Resource use of ${instance.name}`}>
      {failure && (
        <p id="stats-error" className="inline-error card" role="alert">
          Cannot read resource use: <strong>{failure.code}</strong> {failure.message}
        </p>
      )}
      {value === null ? (
        !failure && (
          <p className="muted card" aria-busy="true">
            Reading resource use…
          </p>
        )
      ) : value.history.samples.length === 0 ? (
        <p id="stats-waiting" className="muted card" aria-busy="true">
          Waiting for the first samples (one every {Math.round(value.history.interval_ms / 1000)} s).
        </p>
      ) : (
        <>
          <p className="hint" id="stats-source">
            {value.kept
              ? "Sampled by this page every 2 s while the tab is open: this server keeps no history."
              : `Sampled by the engine every ${Math.round(value.history.interval_ms / 1000)} s; the last 10 minutes. CPU is the VMM process's time as a share of the vCPUs.`}
          </p>
          <Charts history={value.history} kept={value.kept} />
        </>
      )}
    </section>
  );
}
