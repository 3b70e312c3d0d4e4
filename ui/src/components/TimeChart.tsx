// A time-series chart: uPlot on a canvas, wrapped for React. The plot is made in an effect (and
// made again when the theme or the lines change: a canvas does not follow CSS variables), new
// points reach it through `setData`, it follows its box's width, and it is destroyed on
// unmount. To assistive technology it is one image named by `label` (the figure around it
// carries the values as text); hovering shows the values under the cursor.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartLine {
  label: string;
  /** 1: --chart-1, solid (filled when alone); 2: --chart-2, dashed. */
  tone: 1 | 2;
}

interface Palette {
  fg: string;
  muted: string;
  line: string;
  panel: string;
  chart1: string;
  chart2: string;
  font: string;
}

function readPalette(): Palette {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string, fallback: string): string => css.getPropertyValue(name).trim() || fallback;
  return {
    fg: v("--fg", "#1c1d21"),
    muted: v("--muted", "#6b6f7a"),
    line: v("--line", "#e2e3e8"),
    panel: v("--panel", "#ffffff"),
    chart1: v("--chart-1", "#4b5bdc"),
    chart2: v("--chart-2", "#b4540a"),
    font: `11px ${css.fontFamily || "sans-serif"}`,
  };
}

/** The theme's chart colours, read again when the theme changes (settings or the OS). */
function usePalette(): Palette {
  const [palette, setPalette] = useState(readPalette);
  useEffect(() => {
    const update = (): void =>
      setPalette((old) => {
        const next = readPalette();
        return JSON.stringify(next) === JSON.stringify(old) ? old : next;
      });
    const media = window.matchMedia("(prefers-color-scheme: dark)");
    media.addEventListener("change", update);
    const observer = new MutationObserver(update);
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    return () => {
      media.removeEventListener("change", update);
      observer.disconnect();
    };
  }, []);
  return palette;
}

/** `#rrggbb` at `alpha` (the fill under a lone line); the colour itself otherwise. */
function translucent(color: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (!m) return color;
  return `rgba(${parseInt(m[1]!, 16)}, ${parseInt(m[2]!, 16)}, ${parseInt(m[3]!, 16)}, ${alpha})`;
}

/** Tick steps for byte scales: powers of two (512 B, 1.0 KiB, …, 16 MiB, …). */
const BYTE_STEPS = Array.from({ length: 51 }, (_, n) => 2 ** n);

/** A time of day in the page's locale, with seconds or without. */
const clock = (seconds: number, withSeconds = true): string =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "numeric", minute: "2-digit", ...(withSeconds ? { second: "2-digit" } : {}) });

export interface TimeChartProps {
  /** The image's accessible name: what it shows and its latest values. */
  label: string;
  lines: readonly ChartLine[];
  /** Seconds on x, then one array per line (null: a break). */
  data: [number[], ...(number | null)[][]];
  /** A y value as text (axis and hover). */
  format: (v: number) => string;
  /** Byte scales tick at powers of 1024. */
  bytes?: boolean;
  /** The y axis always reaches at least this far (100 for a percentage). */
  minTop?: number;
  /** Charts with the same key move their cursors together. */
  sync?: string;
  height?: number;
}

export default function TimeChart({ label, lines, data, format, bytes = false, minTop = 0, sync, height = 150 }: TimeChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const readout = useRef<HTMLParagraphElement>(null);
  const plot = useRef<uPlot | null>(null);
  const palette = usePalette();
  // The latest data and formatter, for a plot made later and for the hover readout.
  const latest = useRef({ data, format, lines });
  latest.current = { data, format, lines };
  const shape = JSON.stringify(lines);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const shown = JSON.parse(shape) as ChartLine[];
    const stroke = (tone: 1 | 2): string => (tone === 1 ? palette.chart1 : palette.chart2);
    const axis = { stroke: palette.muted, font: palette.font, grid: { stroke: palette.line, width: 1 }, ticks: { stroke: palette.line, width: 1, size: 4 } };
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 120),
      height,
      legend: { show: false },
      cursor: {
        y: false,
        drag: { x: false, y: false },
        points: { size: 6 },
        ...(sync ? { sync: { key: sync } } : {}),
      },
      scales: {
        x: { time: true },
        y: { range: (_u, _min, max) => [0, Math.max(minTop, max > 0 ? max * 1.1 : bytes ? 1024 : 1)] },
      },
      axes: [
        // Times of day, with seconds while ticks are less than a minute apart.
        { ...axis, space: 80, values: (_u, splits, _axis, _space, incr) => splits.map((x) => clock(x, incr < 60)) },
        {
          ...axis,
          size: 72,
          ...(bytes ? { incrs: BYTE_STEPS } : {}),
          values: (_u, splits) => splits.map((v) => latest.current.format(v)),
        },
      ],
      series: [
        {},
        ...shown.map((l) => ({
          label: l.label,
          stroke: stroke(l.tone),
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          ...(l.tone === 2 ? { dash: [6, 4] } : {}),
          ...(shown.length === 1 ? { fill: translucent(stroke(l.tone), 0.12) } : {}),
        })),
      ],
      hooks: {
        setCursor: [
          (u) => {
            const out = readout.current;
            if (!out) return;
            const i = u.cursor.idx;
            const x = i === null || i === undefined ? undefined : u.data[0][i];
            if (i === null || i === undefined || x === undefined) {
              out.textContent = "";
              return;
            }
            const values = latest.current.lines.map((l, n) => {
              const v = u.data[n + 1]?.[i];
              return `${l.label} ${v === null || v === undefined ? "—" : latest.current.format(v)}`;
            });
            out.textContent = `${clock(x)} · ${values.join(" · ")}`;
          },
        ],
      },
    };
    const made = new uPlot(opts, latest.current.data, el);
    plot.current = made;
    let width = el.clientWidth;
    const resize = new ResizeObserver(() => {
      if (el.clientWidth === width || el.clientWidth === 0) return;
      width = el.clientWidth;
      made.setSize({ width, height });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      made.destroy();
      plot.current = null;
    };
  }, [palette, shape, height, bytes, minTop, sync]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return (
    <div className="chart-box">
      <div ref={box} className="chart-plot" role="img" aria-label={label} />
      <p ref={readout} className="chart-readout" aria-hidden="true" />
    </div>
  );
}
