// Exec over the API's WebSocket (upstream's framing): the first text frame is the request,
// binary frames carry stdio both ways, a text `{"exitCode":N}` ends it. Browsers cannot set
// headers on a WebSocket, so the token travels as the `bearer.<token>` subprotocol.
import type { Connection } from "./connection";

export interface ExecRequest {
  command: string[];
  tty?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  rows?: number;
  cols?: number;
  timeout?: number;
}

/** The shell the Run box runs its line in (what the page says it does). */
export const RUN_SHELL: readonly string[] = ["/bin/sh", "-c"];

/**
 * The exec request for one line typed in the Run box: the guest's shell runs it, so pipes,
 * quotes, `$VAR` and `&&` work as in a terminal. An empty line is an error to show.
 */
export function shellRun(text: string): { request: ExecRequest; error: null } | { request: null; error: string } {
  if (text.trim() === "") return { request: null, error: "Type a command to run, e.g. ls -la /" };
  return { request: { command: [...RUN_SHELL, text] }, error: null };
}

/** `ws(s)://…/instances/<id>/exec` for an API base URL. */
export function execUrl(apiUrl: string, id: string): string {
  const url = new URL(apiUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = `${url.pathname.replace(/\/$/, "")}/instances/${encodeURIComponent(id)}/exec`;
  url.search = "";
  return url.href;
}

/** The exit code in a text frame, or null when the frame is something else. */
export function exitCodeOf(text: string): number | null {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && "exitCode" in value && typeof value.exitCode === "number") {
      return value.exitCode;
    }
  } catch {
    // Not JSON.
  }
  return null;
}

export interface ExecHandlers {
  output: (bytes: Uint8Array) => void;
  exit: (code: number) => void;
  /** The socket closed without an exit code (network, server gone). */
  closed: (reason: string) => void;
}

/** A running exec session. */
export interface ExecSocket {
  send: (data: string | Uint8Array<ArrayBuffer>) => void;
  resize: (rows: number, cols: number) => void;
  /** Closes stdin (an empty binary frame; Hypedeck extension). */
  endInput: () => void;
  close: () => void;
}

/** Opens an exec session. */
export function openExec(conn: Connection, id: string, request: ExecRequest, on: ExecHandlers): ExecSocket {
  const ws = new WebSocket(execUrl(conn.url, id), [`bearer.${conn.token}`]);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const pending: (string | Uint8Array<ArrayBuffer>)[] = [];
  let exited = false;
  const push = (frame: string | Uint8Array<ArrayBuffer>): void => {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
    else if (ws.readyState === WebSocket.CONNECTING) pending.push(frame);
  };
  ws.onopen = () => {
    ws.send(JSON.stringify(request));
    for (const frame of pending.splice(0)) ws.send(frame);
  };
  ws.onmessage = (event: MessageEvent<ArrayBuffer | string>) => {
    if (typeof event.data === "string") {
      const code = exitCodeOf(event.data);
      if (code !== null) {
        exited = true;
        on.exit(code);
      }
    } else {
      on.output(new Uint8Array(event.data));
    }
  };
  ws.onclose = (event) => {
    if (!exited) on.closed(event.reason || `connection closed (${event.code})`);
  };
  return {
    send: (data) => push(typeof data === "string" ? encoder.encode(data) : data),
    resize: (rows, cols) => push(JSON.stringify({ resize: { rows, cols } })),
    endInput: () => push(new Uint8Array(0)),
    close: () => ws.close(),
  };
}
