// A shell in the instance: "Run a command" for one-shot lines (run by the guest's /bin/sh -c,
// echoed above their output) and a terminal (TerminalView, loaded on first use: xterm.js is
// most of the bundle).

const TerminalView = lazy(() => import("./TerminalView"));
import { lazy, Suspense, useEffect, useRef, useState } from "react";

import type { Connection } from "../connection";
import { openExec, RUN_SHELL, shellRun, type ExecSocket } from "../exec";

function RunCommand({ conn, id }: { conn: Connection; id: string }) {
  const [command, setCommand] = useState("");
  // The line that ran (echoed above its output), its output and how it ended.
  const [ran, setRan] = useState<string | null>(null);
  const [output, setOutput] = useState("");
  const [exit, setExit] = useState<string | null>(null);
  const [invalid, setInvalid] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const session = useRef<ExecSocket | null>(null);
  useEffect(() => () => session.current?.close(), []);

  const run = (): void => {
    const { request, error } = shellRun(command);
    if (error !== null) {
      setInvalid(error);
      return;
    }
    session.current?.close();
    setBusy(true);
    setRan(command);
    setOutput("");
    setExit(null);
    setInvalid(null);
    const decoder = new TextDecoder();
    session.current = openExec(conn, id, request, {
      output: (bytes) => setOutput((o) => o + decoder.decode(bytes, { stream: true })),
      exit: (code) => {
        setExit(`exit code ${code}`);
        setBusy(false);
      },
      closed: (reason) => {
        setExit(reason);
        setBusy(false);
      },
    });
    session.current.endInput();
  };

  return (
    <form
      id="run-form"
      className="run"
      onSubmit={(e) => {
        e.preventDefault();
        run();
      }}
    >
      <label htmlFor="run-command" className="run-label">
        Run a command <span id="run-shell" className="muted">runs in <code>{RUN_SHELL.join(" ")}</code>, so pipes and $VARS work</span>
      </label>
      <div className="toolbar">
        <input
          id="run-command"
          value={command}
          placeholder="env | grep PATH"
          spellCheck={false}
          autoComplete="off"
          aria-describedby="run-shell"
          onChange={(e) => {
            setCommand(e.target.value);
            setInvalid(null);
          }}
        />
        <button id="run-submit" type="submit" className="primary" disabled={busy}>
          {busy ? "Running…" : "Run"}
        </button>
        {exit && (
          <span id="run-exit" className="muted">
            {exit}
          </span>
        )}
      </div>
      {invalid && (
        <p id="run-invalid" className="inline-error" role="alert">
          {invalid}
        </p>
      )}
      {ran !== null && (
        <div className="run-result">
          <pre id="run-echo" className="run-echo" aria-label="Command that ran">
            $ {ran}
          </pre>
          <pre id="run-output">{output}</pre>
        </div>
      )}
    </form>
  );
}

export function ExecPanel({ conn, id, running }: { conn: Connection; id: string; running: boolean }) {
  const [open, setOpen] = useState(false);
  if (!running) {
    return (
      <p id="shell-unavailable" className="muted">
        Commands and the terminal are available while the instance runs.
      </p>
    );
  }
  return (
    <>
      <RunCommand conn={conn} id={id} />
      {open ? (
        // Escape belongs to the program in the terminal (vi, less…), not to the page's "back".
        <div
          className="terminal-host"
          onKeyDown={(e) => {
            if (e.key === "Escape") e.stopPropagation();
          }}
        >
          <Suspense fallback={<p className="muted">Loading the terminal…</p>}>
            <TerminalView conn={conn} id={id} />
          </Suspense>
        </div>
      ) : (
        <button id="terminal-open" type="button" onClick={() => setOpen(true)}>
          Open terminal
        </button>
      )}
    </>
  );
}
