// One results table for BENCHMARKS.md: printed, and appended to $BENCH_OUT when set (the
// desktop session's helpers also write to stdout, so `tee` would catch their noise).
import { appendFileSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

/** `rows` = [measure, result, notes][]; `context` follows the machine line. */
export function report(title, context, rows) {
  const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const out = [
    `\n## ${title} — ${new Date().toISOString().slice(0, 10)}\n`,
    `Machine: ${cpu}, ${cpus().length} cores${context ? `; ${context}` : ""}.\n`,
    "| measure | result | notes |\n|---|---|---|",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
  if (process.env.BENCH_OUT) appendFileSync(process.env.BENCH_OUT, `${out}\n`);
  console.log(out);
}

/** The median of `xs` (the upper one of an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `"423 ms (min 414, max 453)"` of millisecond samples. */
export const msRange = (xs) => `${Math.round(median(xs))} ms (min ${Math.round(Math.min(...xs))}, max ${Math.round(Math.max(...xs))})`;
