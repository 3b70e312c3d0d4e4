// Hypedeck's page: find the API, then list its instances every 2 s.
import "./style.css";

import { client, problem, type Problem } from "./api";
import {
  forgetBrowserConnection,
  initialConnection,
  rememberBrowserConnection,
  type Connection,
} from "./connection";
import { DesktopError } from "./desktop";
import { renderInstances } from "./instances";

const REFRESH_MS = 2000;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`index.html lacks #${id}`);
  }
  return found as T;
}

const view = {
  mode: element("conn-mode"),
  url: element("conn-url"),
  disconnect: element<HTMLButtonElement>("disconnect"),
  error: element("error"),
  errorCode: element("error-code"),
  errorMessage: element("error-message"),
  connect: element<HTMLFormElement>("connect"),
  connectApi: element<HTMLInputElement>("connect-api"),
  connectToken: element<HTMLInputElement>("connect-token"),
  instancesView: element("instances-view"),
  table: element("instances-table"),
  rows: element("instances"),
  empty: element("empty"),
};

function showError(p: Problem | null): void {
  view.error.hidden = p === null;
  view.errorCode.textContent = p?.code ?? "";
  view.errorMessage.textContent = p?.message ?? "";
}

/** Shows the connection in the header. Never shows the token. */
function showConnection(conn: Connection | null): void {
  view.mode.textContent = conn?.mode ?? "not connected";
  view.mode.dataset.mode = conn?.mode ?? "none";
  view.url.textContent = conn?.url ?? "";
  view.disconnect.hidden = conn?.mode !== "browser";
}

let stopPolling: (() => void) | null = null;

/** Lists instances now and every REFRESH_MS until the connection changes. */
function watch(conn: Connection): void {
  stopPolling?.();
  showConnection(conn);
  view.connect.hidden = true;
  view.instancesView.hidden = false;
  const api = client(conn);
  let timer: number | undefined;
  let stopped = false;
  const refresh = async (): Promise<void> => {
    try {
      const list = await api.instances.list();
      if (stopped) return;
      renderInstances(view.rows, list);
      view.table.hidden = list.length === 0;
      view.empty.hidden = list.length !== 0;
      showError(null);
    } catch (e) {
      if (stopped) return;
      showError(problem(e, conn.url));
    }
    if (!stopped) timer = window.setTimeout(() => void refresh(), REFRESH_MS);
  };
  stopPolling = () => {
    stopped = true;
    window.clearTimeout(timer);
  };
  void refresh();
}

function askForConnection(): void {
  stopPolling?.();
  showConnection(null);
  view.mode.textContent = "browser";
  view.instancesView.hidden = true;
  view.connect.hidden = false;
  view.connectApi.focus();
}

view.connect.addEventListener("submit", (event) => {
  event.preventDefault();
  watch(rememberBrowserConnection(view.connectApi.value, view.connectToken.value));
  view.connectToken.value = "";
});

view.disconnect.addEventListener("click", () => {
  forgetBrowserConnection();
  showError(null);
  askForConnection();
});

async function boot(): Promise<void> {
  try {
    const conn = await initialConnection();
    if (conn === null) {
      askForConnection();
    } else {
      watch(conn);
    }
  } catch (e) {
    showConnection(null);
    view.mode.textContent = "unavailable";
    // Inside the desktop app: the shell could not start or find the engine (e.g. no keychain).
    showError(
      e instanceof DesktopError
        ? { code: "engine_unavailable", message: e.message }
        : problem(e, ""),
    );
  }
}

void boot();
