// The page: find the API (desktop shell, a link (confirmed when it points elsewhere), storage or
// the connect form), then the instances list, one instance's details, the create dialog, images
// and volumes, routed by the location hash. The header sums the sandboxes' memory from
// `GET /stats`, polled once here and shared with the list (`FleetStatsContext`).
import { useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";

import { client, createHello, problem, systemChecks, type Problem } from "../api";
import {
  browserConnection,
  checkBrowserConnection,
  forgetBrowserConnection,
  initialConnection,
  lastBrowserUrl,
  rememberBrowserConnection,
  type Connection,
  type Link,
  type LinkQuestion,
  type Start,
} from "../connection";
import { DesktopError, inDesktop, shell } from "../desktop";
import { BackendsContext, FleetStatsContext, SettingsContext, useBackends, useFleetStats, useInstances, useNow, useRoute, useShortcuts } from "../hooks";
import { applyTheme, DEFAULT_SETTINGS, loadSettings, type Settings } from "../prefs";
import { checksOf, DEFAULT_SORT, NO_FILTER, type Filter, type Instance, type Sort, type SystemCheck, type SystemChecks, type Verb } from "../model";
import { Connections } from "./Connections";
import { CreateDialog } from "./CreateDialog";
import { HostSummary } from "./HostSummary";
import { ImagesView } from "./ImagesView";
import { InstanceDetails } from "./InstanceDetails";
import { InstanceList } from "./InstanceList";
import { LinkConfirm } from "./LinkConfirm";
import { SettingsView } from "./SettingsView";
import { SetupCheck } from "./SetupCheck";
import { VolumesView } from "./VolumesView";

/** The desktop shell's own checks (no engine needed). */
async function localChecks(): Promise<SystemChecks> {
  return checksOf(await shell<SystemCheck[]>("local_checks"));
}

function Banner({ problem: p }: { problem: Problem | null }) {
  return (
    <div id="error" className="banner" role="alert" hidden={p === null}>
      <strong id="error-code">{p?.code ?? ""}</strong> <span id="error-message">{p?.message ?? ""}</span>
    </div>
  );
}

/**
 * The API URL and token for a browser. Both are checked with an authenticated call before the
 * page uses them, so a wrong token is said here, not left to an endless "Loading…".
 */
function ConnectForm({ initialUrl, onConnect }: { initialUrl: string; onConnect: (c: Connection) => void }) {
  const [api, setApi] = useState(initialUrl);
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      const wrong = await checkBrowserConnection(api, token);
      if (wrong !== null) {
        setError(wrong);
        return;
      }
      onConnect(rememberBrowserConnection(api, token));
      setToken("");
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      id="connect"
      className="card connect"
      aria-labelledby="connect-title"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <h2 id="connect-title">Connect to a Hypeman API</h2>
      <label>
        API URL
        <input
          id="connect-api"
          name="api"
          type="url"
          required
          autoFocus={initialUrl === ""}
          placeholder="http://127.0.0.1:4973"
          value={api}
          onChange={(e) => setApi(e.target.value)}
        />
      </label>
      <label>
        Token
        <input
          id="connect-token"
          name="token"
          type="password"
          required
          autoFocus={initialUrl !== ""}
          autoComplete="off"
          aria-invalid={error !== null}
          aria-describedby={error ? "connect-error" : "connect-hint"}
          value={token}
          onChange={(e) => setToken(e.target.value)}
        />
      </label>
      <p id="connect-hint" className="hint">
        Run <code>hypedeck token</code> to print the token of a local engine.
      </p>
      {error && (
        <p id="connect-error" className="alert bad" role="alert">
          {error}
        </p>
      )}
      <button type="submit" className="primary" disabled={busy}>
        {busy ? "Connecting…" : "Connect"}
      </button>
    </form>
  );
}

/** A top navigation tab; the current one is `aria-current="page"`. */
function Tab({ id, href, on, children }: { id?: string; href: string; on: boolean; children: ReactNode }) {
  return (
    <a id={id} href={href} className={on ? "tab on" : "tab"} aria-current={on ? "page" : undefined}>
      {children}
    </a>
  );
}

function Workspace({
  conn,
  canRotate,
  onToken,
  onSettings,
  onReconnect,
}: {
  conn: Connection;
  canRotate: boolean;
  onToken: (token: string) => void;
  onSettings: (s: Settings) => void;
  /** Back to the connect form (browser mode, this browser's API). */
  onReconnect: (() => void) | null;
}) {
  const api = useMemo(() => client(conn), [conn]);
  const feed = useInstances(api, conn.url);
  const backends = useBackends(api);
  const [route, go] = useRoute();
  const [filter, setFilter] = useState<Filter>(NO_FILTER);
  const [sort, setSort] = useState<Sort>(DEFAULT_SORT);
  const [actionProblem, setActionProblem] = useState<Problem | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const search = useRef<HTMLInputElement>(null);
  const settings = useContext(SettingsContext);
  const now = useNow(1000);
  // First run: while the engine says something is missing, the setup screen comes first.
  const [firstChecks, setFirstChecks] = useState<SystemChecks | null>(null);
  const [helloBusy, setHelloBusy] = useState(false);
  const loadChecks = useCallback(async (): Promise<SystemChecks> => (await systemChecks(api)) ?? { ready: true, checks: [] }, [api]);
  useEffect(() => {
    let live = true;
    loadChecks().then(
      (c) => live && !c.ready && setFirstChecks(c),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [loadChecks]);
  const hello = (): void => {
    setHelloBusy(true);
    createHello(api, feed.list.map((i) => i.name))
      .then((i) => {
        feed.refresh();
        go({ view: "instance", id: i.id });
      }, (e: unknown) => setActionProblem(problem(e, conn.url)))
      .finally(() => setHelloBusy(false));
  };

  useShortcuts({
    "/": () => {
      // On the list the search box takes the focus at once; elsewhere once the list is shown.
      if (route.view === "list" && search.current) {
        search.current.focus();
        return;
      }
      if (route.view !== "list") go({ view: "list" });
      window.setTimeout(() => search.current?.focus(), 0);
    },
    n: () => go({ view: "new" }),
    i: () => go({ view: "images" }),
    v: () => go({ view: "volumes" }),
    Escape: () => route.view !== "list" && go({ view: "list" }),
  });

  useEffect(() => {
    if (!notice) return;
    const t = window.setTimeout(() => setNotice(null), 4000);
    return () => window.clearTimeout(t);
  }, [notice]);

  const selected: Instance | undefined = route.view === "instance" ? feed.list.find((i) => i.id === route.id || i.name === route.id) : undefined;
  // An instance just made here (created or forked): "Loading…" until the list has it, not "deleted".
  const [expected, setExpected] = useState<string | null>(null);
  useEffect(() => {
    if (expected !== null && selected?.id === expected) setExpected(null);
  }, [expected, selected?.id]);
  const openNew = (id: string): void => {
    setExpected(id);
    feed.refresh();
    go({ view: "instance", id });
  };
  const changed = (verb?: Verb, instance?: Instance): void => {
    setActionProblem(null);
    if (verb) setNotice(`${instance?.name ?? "Instance"}: ${verb} done`);
    if (verb === "delete") go({ view: "list" });
    feed.refresh();
  };

  // What the page shows: the setup screen comes first while something is missing.
  const shown = firstChecks ? "setup" : route.view;
  const listChanged = useCallback(
    (summary: string): void => {
      setNotice(summary);
      feed.refresh();
    },
    [feed.refresh],
  );

  return (
    <BackendsContext.Provider value={backends}>
      <nav className="tabs" aria-label="Views">
        <Tab href="#/" on={shown === "list" || shown === "instance" || shown === "new"}>
          Instances <span className="count">{feed.list.length}</span>
        </Tab>
        <Tab href="#/images" on={shown === "images"}>
          Images
        </Tab>
        <Tab href="#/volumes" on={shown === "volumes"}>
          Volumes
        </Tab>
        <Tab id="setup-tab" href="#/setup" on={shown === "setup"}>
          Setup
        </Tab>
        <Tab id="settings-tab" href="#/settings" on={shown === "settings"}>
          Settings
        </Tab>
        <span className="spacer" />
        <button id="new-instance" type="button" className="primary" title="New instance (n)" onClick={() => go({ view: "new" })}>
          New instance
        </button>
      </nav>
      <Banner problem={actionProblem ?? feed.problem} />
      {notice && (
        <div id="notice" className="notice" role="status">
          {notice}
        </div>
      )}
      {firstChecks || route.view === "setup" ? (
        <SetupCheck
          load={loadChecks}
          continueLabel="Open Hypedeck"
          onContinue={() => {
            setFirstChecks(null);
            go({ view: "list" });
          }}
        />
      ) : route.view === "settings" ? (
        <SettingsView api={api} canRotate={canRotate} onSaved={onSettings} onToken={onToken} />
      ) : route.view === "images" ? (
        <ImagesView api={api} instances={feed.list} instancesLoaded={feed.loaded} onRun={(image) => go({ view: "new", image })} />
      ) : route.view === "volumes" ? (
        <VolumesView api={api} />
      ) : route.view === "instance" ? (
        selected ? (
          <InstanceDetails
            api={api}
            conn={conn}
            instance={selected}
            instances={feed.list}
            now={now}
            onBack={() => go({ view: "list" })}
            onOpen={openNew}
            onChanged={(verb) => changed(verb, selected)}
            onProblem={setActionProblem}
          />
        ) : (
          <div id="instance-missing" className="empty">
            <p>{feed.loaded && expected !== route.id ? `No instance ${route.id}; it may have been deleted.` : "Loading…"}</p>
            <button type="button" onClick={() => go({ view: "list" })}>
              Back to instances
            </button>
          </div>
        )
      ) : (
        <InstanceList
          api={api}
          list={feed.list}
          loaded={feed.loaded}
          problem={feed.problem}
          onChanged={listChanged}
          onProblem={setActionProblem}
          onReconnect={onReconnect}
          now={feed.at}
          filter={filter}
          sort={sort}
          onFilter={setFilter}
          onSort={setSort}
          onOpen={(id) => go({ view: "instance", id })}
          onCreate={() => go({ view: "new" })}
          onHello={hello}
          helloBusy={helloBusy}
          searchRef={search}
        />
      )}
      {route.view === "new" && (
        // Opened from an image's Run button: the form starts with that image.
        <SettingsContext.Provider value={route.image ? { ...settings, image: route.image } : settings}>
          <CreateDialog
            api={api}
            onClose={() => go({ view: "list" })}
            onCreated={(i) => openNew(i.id)}
          />
        </SettingsContext.Provider>
      )}
    </BackendsContext.Provider>
  );
}

/** The first Tab stop: straight to the list's current row (or its search box). */
function skipToList(): void {
  if (!document.querySelector("#instances-view")) window.location.hash = "#/";
  window.setTimeout(() => (document.querySelector<HTMLElement>('#instances tr[tabindex="0"]') ?? document.querySelector<HTMLElement>("#filter-text"))?.focus(), 0);
}

/** `link`: the API and token the page was opened with (already off the address bar), if any. */
export function App({ link, onFirstPaint }: { link: Link | null; onFirstPaint: () => void }) {
  // `home`: this computer's engine (or the browser's API); `conn`: the one shown, home or a remote.
  const [home, setHome] = useState<Connection | null | undefined>(undefined);
  const [conn, setConnState] = useState<Connection | null | undefined>(undefined);
  const [remoteId, setRemoteId] = useState<string | null>(null);
  const [bootProblem, setBootProblem] = useState<Problem | null>(null);
  // A link to confirm before anything is sent anywhere, and why a link was not used.
  const [question, setQuestion] = useState<LinkQuestion | null>(null);
  const [linkNote, setLinkNote] = useState<string | null>(null);
  const [settings, setSettings] = useState<Settings>(DEFAULT_SETTINGS);
  useEffect(() => {
    loadSettings().then(
      (v) => {
        setSettings(v.settings);
        applyTheme(v.settings.theme);
      },
      () => undefined,
    );
  }, []);
  const setConn = (c: Connection | null): void => {
    setHome(c);
    setConnState(c);
    setRemoteId(null);
  };
  // Also called for a link that arrives while the page is open: it replaces any open question.
  const start = (s: Start): void => {
    if (s.kind === "ask") {
      setLinkNote(null);
      setQuestion(s.question);
      return;
    }
    setQuestion(null);
    setLinkNote(s.note);
    setConn(s.conn);
  };

  // The connect form's URL: the one changed away from ("Change" keeps it), also after a reload.
  const [formUrl, setFormUrl] = useState(lastBrowserUrl);
  const change = (): void => {
    if (conn) {
      forgetBrowserConnection(conn.url);
      setFormUrl(conn.url);
    }
    setConn(null);
  };

  useEffect(() => {
    initialConnection(link).then(start, (e: unknown) => {
      setConn(null);
      // Inside the desktop app: the shell could not start or find the engine (e.g. no keychain).
      setBootProblem(e instanceof DesktopError ? { code: "engine_unavailable", message: e.message } : problem(e, ""));
    });
  }, [link]);
  useEffect(() => {
    requestAnimationFrame(() => onFirstPaint());
  }, [onFirstPaint]);

  // The fleet's resource use, polled once here for the header's summary and the list's sparklines.
  const statsApi = useMemo(() => (conn ? client(conn) : null), [conn]);
  const fleet = useFleetStats(statsApi);

  const mode = bootProblem ? "unavailable" : question ? "confirm link" : conn === undefined ? "connecting" : (conn?.mode ?? "browser");
  return (
    <>
      <header className="bar">
        {conn && (
          <button id="skip-to-list" type="button" className="skip-link" onClick={skipToList}>
            Skip to the instances
          </button>
        )}
        <h1>Hypedeck</h1>
        {conn && fleet && <HostSummary fleet={fleet} />}
        <span className="spacer" />
        <div className="conn" aria-label="Connection">
          <span id="conn-mode" className="mode" data-mode={conn?.mode ?? "none"}>
            {mode}
          </span>
          <code id="conn-url">{conn?.url ?? ""}</code>
          {home && conn && (
            <Connections
              home={home}
              remoteId={remoteId}
              current={conn}
              onSwitch={(c, id) => {
                setConnState(c);
                setRemoteId(id);
              }}
            />
          )}
          {conn?.mode === "browser" && remoteId === null && (
            <button
              id="disconnect"
              type="button"
              className="link"
              onClick={change}
            >
              Change
            </button>
          )}
        </div>
      </header>
      <main>
        {linkNote && (
          <p id="link-ignored" className="hint warn" role="status">
            The link this page was opened with was not used: {linkNote}
          </p>
        )}
        {bootProblem ? (
          <>
            <Banner problem={bootProblem} />
            {inDesktop() && (
              <SetupCheck
                load={localChecks}
                continueLabel="Start Hypedeck"
                onContinue={() => {
                  initialConnection(null).then(
                    (s) => {
                      setBootProblem(null);
                      start(s);
                    },
                    (e: unknown) => setBootProblem(e instanceof DesktopError ? { code: "engine_unavailable", message: e.message } : problem(e, "")),
                  );
                }}
              />
            )}
          </>
        ) : question ? (
          <LinkConfirm
            question={question}
            onConnect={() => {
              setQuestion(null);
              setConn(rememberBrowserConnection(question.link.url, question.link.token));
            }}
            onKeep={() => {
              setQuestion(null);
              setConn(question.saved && browserConnection(question.saved));
            }}
          />
        ) : conn === undefined ? (
          <p className="empty" aria-busy="true">
            Connecting…
          </p>
        ) : conn === null ? (
          <ConnectForm key={formUrl} initialUrl={formUrl} onConnect={setConn} />
        ) : (
          <SettingsContext.Provider value={settings}>
            <FleetStatsContext.Provider value={fleet}>
              <Workspace
                key={`${conn.url} ${conn.mode} ${remoteId ?? "home"}`}
                conn={conn}
                canRotate={remoteId === null}
                onSettings={setSettings}
                onReconnect={conn.mode === "browser" && remoteId === null ? change : null}
                onToken={(token) => {
                  // This computer's engine switched tokens: keep using it with the new one.
                  const next = conn.mode === "browser" ? rememberBrowserConnection(conn.url, token) : { ...conn, token };
                  setHome(next);
                  setConnState(next);
                }}
              />
            </FleetStatsContext.Provider>
          </SettingsContext.Provider>
        )}
      </main>
    </>
  );
}
