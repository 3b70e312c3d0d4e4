// The terminal: xterm.js over a TTY exec session, following its element's size, with
// reconnect. Loaded lazily by ExecPanel.
import { useEffect, useRef, useState } from "react";
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";

import type { Connection } from "../connection";
import { openExec, type ExecSocket } from "../exec";

export default function TerminalView({ conn, id }: { conn: Connection; id: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState("connecting");
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const term = new Terminal({ cursorBlink: true, fontSize: 13, convertEol: false, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    setStatus("connecting");
    const session: ExecSocket = openExec(
      conn,
      id,
      { command: ["/bin/sh"], tty: true, rows: term.rows, cols: term.cols },
      {
        output: (bytes) => {
          setStatus("connected");
          term.write(bytes);
        },
        exit: (code) => {
          setStatus(`exited (${code})`);
          term.write(`\r\n[process exited with code ${code}]\r\n`);
        },
        closed: (reason) => setStatus(`disconnected: ${reason}`),
      },
    );
    const input = term.onData((data) => session.send(data));
    const resized = term.onResize(({ rows, cols }) => session.resize(rows, cols));
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(el);
    term.focus();
    return () => {
      observer.disconnect();
      input.dispose();
      resized.dispose();
      session.close();
      term.dispose();
    };
  }, [conn, id, generation]);

  return (
    <div className="terminal-wrap">
      <div className="card-head">
        <span id="terminal-status" className="muted" data-status={status}>
          {status}
        </span>
        <button id="terminal-reconnect" type="button" onClick={() => setGeneration((g) => g + 1)}>
          Reconnect
        </button>
      </div>
      <div id="terminal" ref={host} className="terminal" />
    </div>
  );
}
