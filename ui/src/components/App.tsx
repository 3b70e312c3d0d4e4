// The page: find the API (desktop shell, a link (confirmed when it points elsewhere), storage or
// the connect form), then the instances list, one instance's details, the create dialog, images
// and volumes, routed by the location hash.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";

import { client, createHello, problem, systemChecks, type Problem } from "../api";
import {
  browserConnection,
  forgetBrowserConnection,
  initialConnection,
  rememberBrowserConnection,
  type Connection,
  type Link,
  type LinkQuestion,
  type Start,
} from "../connection";
import { DesktopError, inDesktop, shell } from "../desktop";
import { BackendsContext, SettingsContext, useBackends, useInstances, useNow, useRoute, useShortcuts } from "../hooks";
import { applyTheme, DEFAULT_SETTINGS, loadSettings, type Settings } from "../prefs";
import { checksOf, DEFAULT_SORT, NO_FILTER, type Filter, type Instance, type Sort, type SystemCheck, type SystemChecks, type Verb } from "../model";
import { Connections } from "./Connections";
import { CreateDialog } from "./CreateDialog";
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

function ConnectForm({ onConnect }: { onConnect: (c: Connection) => void }) {
  const [api, setApi] = useState("");
  const [token, setToken] = useState("");
  return (
    <form
      id="connect"
      className="card connect"
      onSubmit={(e) => {
        e.preventDefault();
        onConnect(rememberBrowserConnection(api, token));
        setToken("");
      }}
    >
      <h2>Connect to a Hypeman API</h2>
      <label>
        API URL
        <input id="connect-api" name="api" type="url" required autoFocus placeholder="http://127.0.0.1:4973" value={api} onChange={(e) => setApi(e.target.value)} />
      </label>
      <label>
        Token
        <input id="connect-token" name="token" type="password" required autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} />
      </label>
      <p className="hint">
        Run <code>hypedeck token</code> to print the token of a local engine.
      </p>
      <button type="submit" className="primary">
        Connect
      </button>
    </form>
  );
}

function Workspace({
  conn,
  canRotate,
  onToken,
  onSettings,
}: {
  conn: Connection;
  canRotate: boolean;
  onToken: (token: string) => void;
  onSettings: (s: Settings) => void;
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
  const changed = (verb?: Verb, instance?: Instance): void => {
    setActionProblem(null);
    if (verb) setNotice(`${instance?.name ?? "Instance"}: ${verb} done`);
    if (verb === "delete") go({ view: "list" });
    feed.refresh();
  };

  return (
    <BackendsContext.Provider value={backends}>
      <nav className="tabs" aria-label="Views">
        <a href="#/" className={route.view === "list" || route.view === "instance" ? "tab on" : "tab"}>
          Instances <span className="count">{feed.list.length}</span>
        </a>
        <a href="#/images" className={route.view === "images" ? "tab on" : "tab"}>
          Images
        </a>
        <a href="#/volumes" className={route.view === "volumes" ? "tab on" : "tab"}>
          Volumes
        </a>
        <a id="setup-tab" href="#/setup" className={route.view === "setup" || firstChecks ? "tab on" : "tab"}>
          Setup
        </a>
        <a id="settings-tab" href="#/settings" className={route.view === "settings" ? "tab on" : "tab"}>
          Settings
        </a>
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
        <ImagesView api={api} />
      ) : route.view === "volumes" ? (
        <VolumesView api={api} />
      ) : route.view === "instance" ? (
        selected ? (
          <InstanceDetails
            api={api}
            conn={conn}
            instance={selected}
            now={now}
            onBack={() => go({ view: "list" })}
            onChanged={(verb) => changed(verb, selected)}
            onProblem={setActionProblem}
          />
        ) : (
          <div id="instance-missing" className="empty">
            <p>{feed.loaded ? `No instance ${route.id}; it may have been deleted.` : "Loading…"}</p>
            <button type="button" onClick={() => go({ view: "list" })}>
              Back to instances
            </button>
          </div>
        )
      ) : (
        <InstanceList
          list={feed.list}
          loaded={feed.loaded}
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
        <CreateDialog
          api={api}
          onClose={() => go({ view: "list" })}
          onCreated={(i) => {
            feed.refresh();
            go({ view: "instance", id: i.id });
          }}
        />
      )}
    </BackendsContext.Provider>
  );
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

  const mode = bootProblem ? "unavailable" : question ? "confirm link" : conn === undefined ? "connecting" : (conn?.mode ?? "browser");
  return (
    <>
      <header className="bar">
        <h1>Hypedeck</h1>
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
              onClick={() => {
                forgetBrowserConnection();
                setConn(null);
              }}
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
          <ConnectForm onConnect={setConn} />
        ) : (
          <SettingsContext.Provider value={settings}>
            <Workspace
              key={`${conn.url} ${conn.mode} ${remoteId ?? "home"}`}
              conn={conn}
              canRotate={remoteId === null}
              onSettings={setSettings}
              onToken={(token) => {
                // This computer's engine switched tokens: keep using it with the new one.
                const next = conn.mode === "browser" ? rememberBrowserConnection(conn.url, token) : { ...conn, token };
                setHome(next);
                setConnState(next);
              }}
            />
          </SettingsContext.Provider>
        )}
      </main>
    </>
  );
}
