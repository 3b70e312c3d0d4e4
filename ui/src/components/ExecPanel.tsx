// A shell in the instance: a terminal (TerminalView, loaded on first use: xterm.js is most
// of the bundle) and "Run command" for one-shot commands with their output.

const TerminalView = lazy(() => import("./TerminalView"));
import { lazy, Suspense, useEffect, useRef, useState } from "react";

import type { Connection } from "../connection";
import { openExec, type ExecSocket } from "../exec";
import { shellWords } from "../forms";

function RunCommand({ conn, id }: { conn: Connection; id: string }) {
  const [command, setCommand] = useState("");
  const [output, setOutput] = useState("");
  const [exit, setExit] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const session = useRef<ExecSocket | null>(null);
  useEffect(() => () => session.current?.close(), []);

  const run = (): void => {
    const { words, error } = shellWords(command);
    if (error || words.length === 0) {
      setExit(error ?? "enter a command");
      return;
    }
    setBusy(true);
    setOutput("");
    setExit(null);
    const decoder = new TextDecoder();
    session.current = openExec(
      conn,
      id,
      { command: words },
      {
        output: (bytes) => setOutput((o) => o + decoder.decode(bytes, { stream: true })),
        exit: (code) => {
          setExit(`exit code ${code}`);
          setBusy(false);
        },
        closed: (reason) => {
          setExit(reason);
          setBusy(false);
        },
      },
    );
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
      <div className="toolbar">
        <input id="run-command" value={command} placeholder="ls -la /app" spellCheck={false} aria-label="Command" onChange={(e) => setCommand(e.target.value)} />
        <button id="run-submit" type="submit" className="primary" disabled={busy}>
          {busy ? "Running…" : "Run"}
        </button>
        {exit && (
          <span id="run-exit" className="muted">
            {exit}
          </span>
        )}
      </div>
      {(output || exit) && <pre id="run-output">{output}</pre>}
    </form>
  );
}

export function ExecPanel({ conn, id, running }: { conn: Connection; id: string; running: boolean }) {
  const [open, setOpen] = useState(false);
  if (!running) {
    return <p className="muted">A shell is available while the instance runs.</p>;
  }
  return (
    <>
      <RunCommand conn={conn} id={id} />
      {open ? (
        <Suspense fallback={<p className="muted">Loading the terminal…</p>}>
          <TerminalView conn={conn} id={id} />
        </Suspense>
      ) : (
        <button id="terminal-open" type="button" onClick={() => setOpen(true)}>
          Open terminal
        </button>
      )}
    </>
  );
}
