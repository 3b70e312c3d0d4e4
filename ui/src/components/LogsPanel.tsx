// Follows an instance's log over the API's SSE stream (through the SDK), with pause, search
// and download. Paused, lines keep arriving into a buffer and show on resume.
import { useEffect, useMemo, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem, type Problem } from "../api";

const MAX_LINES = 5000;
type Source = "app" | "hypeman";

/**
 * `run`: the instance's `started_at`; a new run reconnects (and clears an old error). `visible`:
 * whether its tab is shown (lines keep arriving while hidden; showing it scrolls to the end).
 */
export function LogsPanel({ api, id, name, run, visible = true }: { api: Hypeman; id: string; name: string; run: string | null; visible?: boolean }) {
  const [source, setSource] = useState<Source>("app");
  const [lines, setLines] = useState<string[]>([]);
  const [paused, setPaused] = useState(false);
  const [query, setQuery] = useState("");
  const [status, setStatus] = useState<"connecting" | "following" | "ended">("connecting");
  const [failure, setFailure] = useState<Problem | null>(null);
  const [generation, setGeneration] = useState(0);
  const buffer = useRef<string[]>([]);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const view = useRef<HTMLPreElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    buffer.current = [];
    setLines([]);
    setFailure(null);
    setStatus("connecting");
    let flush: number | undefined;
    const schedule = (): void => {
      if (flush !== undefined || pausedRef.current) return;
      flush = window.setTimeout(() => {
        flush = undefined;
        const taken = buffer.current;
        buffer.current = [];
        setLines((old) => [...old, ...taken].slice(-MAX_LINES));
      }, 100);
    };
    (async () => {
      try {
        const stream = await api.instances.logs(id, { follow: true, tail: 500, source }, { signal: abort.signal, timeout: 24 * 3600_000 });
        setStatus("following");
        for await (const line of stream) {
          buffer.current.push(String(line));
          if (buffer.current.length > MAX_LINES) buffer.current.splice(0, buffer.current.length - MAX_LINES);
          schedule();
        }
        setStatus("ended");
      } catch (e) {
        if (abort.signal.aborted) return;
        const p = problem(e, "");
        // An instance that never booted has no log yet; that is not an error to shout about.
        if (p.code === "log_not_found" || p.code === "not_found") setStatus("ended");
        else setFailure(p);
      }
    })();
    return () => {
      abort.abort();
      window.clearTimeout(flush);
    };
  }, [api, id, source, generation, run]);

  // Resuming shows what arrived while paused.
  useEffect(() => {
    if (!paused && buffer.current.length) {
      const taken = buffer.current;
      buffer.current = [];
      setLines((old) => [...old, ...taken].slice(-MAX_LINES));
    }
  }, [paused]);

  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    return q === "" ? lines : lines.filter((l) => l.toLowerCase().includes(q));
  }, [lines, query]);

  useEffect(() => {
    const el = view.current;
    if (el && !paused && visible) el.scrollTop = el.scrollHeight;
  }, [shown, paused, visible]);

  const download = (): void => {
    const blob = new Blob([[...lines, ...buffer.current].join("\n") + "\n"], { type: "text/plain" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${name}-${source}.log`;
    document.body.append(a);
    a.click();
    a.remove();
    window.setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };

  return (
    <section id="logs" className="card logs" aria-label="Logs">
      <div className="card-head">
        <h3>Logs</h3>
        <select id="logs-source" aria-label="Log source" value={source} onChange={(e) => setSource(e.target.value as Source)}>
          <option value="app">app (guest console)</option>
          <option value="hypeman">hypeman (operations)</option>
        </select>
        <input id="logs-search" type="search" placeholder="Search logs" aria-label="Search logs" value={query} onChange={(e) => setQuery(e.target.value)} />
        <button id="logs-pause" type="button" aria-pressed={paused} onClick={() => setPaused((p) => !p)}>
          {paused ? "Resume" : "Pause"}
        </button>
        <button id="logs-download" type="button" onClick={download} disabled={lines.length === 0}>
          Download
        </button>
        <span id="logs-status" className="muted" data-status={status}>
          {failure ? "error" : paused ? "paused" : status}
        </span>
      </div>
      {failure ? (
        <p className="inline-error" role="alert">
          <strong>{failure.code}</strong> {failure.message}{" "}
          <button type="button" className="link" onClick={() => setGeneration((g) => g + 1)}>
            Retry
          </button>
        </p>
      ) : (
        <pre id="log-lines" ref={view} tabIndex={0}>
          {shown.length === 0 ? (
            <span className="muted">{query ? "No line matches." : status === "connecting" ? "Connecting…" : "No output yet."}</span>
          ) : (
            shown.map((l, i) => (
              <div key={i} className="log-line">
                {l}
              </div>
            ))
          )}
        </pre>
      )}
    </section>
  );
}
