// React hooks shared by the views: polling the instance list and the fleet's resource use, the
// hash route, a ticking clock, and global keyboard shortcuts.
import { createContext, useCallback, useEffect, useRef, useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { fleetStats, hypervisors, problem, type Problem } from "./api";
import type { Backend, Instance } from "./model";
import { DEFAULT_SETTINGS, type Settings } from "./prefs";
import type { FleetStats } from "./stats";

export const REFRESH_MS = 2000;

export interface InstancesFeed {
  list: Instance[];
  loaded: boolean;
  problem: Problem | null;
  /** When the list was last fetched (epoch ms), for uptimes. */
  at: number;
  refresh: () => void;
}

/**
 * The instance list, fetched now and every REFRESH_MS (and at once after `refresh()`), for as
 * long as the component lives. Instances whose JSON did not change keep their object, so rows
 * that did not change do not re-render.
 */
export function useInstances(api: Hypeman, url: string): InstancesFeed {
  const [state, setState] = useState<Omit<InstancesFeed, "refresh">>({ list: [], loaded: false, problem: null, at: Date.now() });
  const kick = useRef<() => void>(() => {});
  const previous = useRef(new Map<string, { json: string; value: Instance }>());

  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    let inFlight = false;
    let again = false;
    const fetchOnce = async (): Promise<void> => {
      if (inFlight) {
        again = true;
        return;
      }
      inFlight = true;
      window.clearTimeout(timer);
      try {
        const fresh = await api.instances.list();
        if (stopped) return;
        performance.clearMarks("hypedeck:list-data");
        performance.mark("hypedeck:list-data");
        const next = new Map<string, { json: string; value: Instance }>();
        const list = fresh.map((i) => {
          const json = JSON.stringify(i);
          const old = previous.current.get(i.id);
          const value = old && old.json === json ? old.value : i;
          next.set(i.id, { json, value });
          return value;
        });
        previous.current = next;
        setState({ list, loaded: true, problem: null, at: Date.now() });
      } catch (e) {
        if (stopped) return;
        setState((s) => ({ ...s, problem: problem(e, url), at: Date.now() }));
      } finally {
        inFlight = false;
      }
      if (stopped) return;
      if (again) {
        again = false;
        void fetchOnce();
      } else {
        timer = window.setTimeout(() => void fetchOnce(), REFRESH_MS);
      }
    };
    kick.current = () => void fetchOnce();
    void fetchOnce();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [api, url]);

  const refresh = useCallback(() => kick.current(), []);
  return { ...state, refresh };
}

/**
 * The app's settings as the page uses them (create form defaults, theme), plus the image the
 * create form starts with when it was opened from an image's Run button (`#/new?image=…`).
 */
export type PageDefaults = Settings & { image?: string };
export const SettingsContext = createContext<PageDefaults>(DEFAULT_SETTINGS);

export type Route =
  | { view: "list" }
  | { view: "instance"; id: string }
  | { view: "new"; image?: string }
  | { view: "images" }
  | { view: "volumes" }
  | { view: "setup" }
  | { view: "settings" };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#\/?/, "");
  if (path.startsWith("instances/")) {
    const id = decodeURIComponent(path.slice("instances/".length));
    if (id) return { view: "instance", id };
  }
  if (path === "new") return { view: "new" };
  if (path.startsWith("new?")) {
    const image = new URLSearchParams(path.slice("new?".length)).get("image")?.trim();
    return image ? { view: "new", image } : { view: "new" };
  }
  if (path === "images") return { view: "images" };
  if (path === "volumes") return { view: "volumes" };
  if (path === "setup") return { view: "setup" };
  if (path === "settings") return { view: "settings" };
  return { view: "list" };
}

export function routeHash(route: Route): string {
  switch (route.view) {
    case "list":
      return "#/";
    case "instance":
      return `#/instances/${encodeURIComponent(route.id)}`;
    case "new":
      return route.image ? `#/new?${new URLSearchParams({ image: route.image }).toString()}` : "#/new";
    case "images":
      return "#/images";
    case "volumes":
      return "#/volumes";
    case "setup":
      return "#/setup";
    case "settings":
      return "#/settings";
  }
}

/** The route in the location hash, and a way to go elsewhere. */
export function useRoute(): [Route, (r: Route) => void] {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const onHash = (): void => setRoute(parseRoute(window.location.hash));
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  const go = useCallback((r: Route) => {
    window.location.hash = routeHash(r);
  }, []);
  return [route, go];
}

/** The current time, updated every `ms`. */
export function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = window.setInterval(() => setNow(Date.now()), ms);
    return () => window.clearInterval(t);
  }, [ms]);
  return now;
}

/**
 * Single-key shortcuts that fire when no text field has the focus and no modal dialog
 * (`aria-modal="true"`) is open; Escape always fires.
 */
export function useShortcuts(map: Record<string, () => void>): void {
  const ref = useRef(map);
  ref.current = map;
  useEffect(() => {
    const onKey = (e: KeyboardEvent): void => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const target = e.target as HTMLElement | null;
      const typing = target !== null && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
      if (typing && e.key !== "Escape") return;
      // Behind a modal dialog only Escape (which closes the create form) reaches the page.
      if (e.key !== "Escape" && document.querySelector('[aria-modal="true"]')) return;
      const fn = ref.current[e.key];
      if (fn) {
        e.preventDefault();
        fn();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}

export interface Polled<T> {
  /** The last value fetched; null until the first answer. */
  value: T | null;
  /** Why the last fetch failed (cleared by the next success). */
  failure: Problem | null;
  /** Fetches now. */
  reload: () => Promise<void>;
  /** Replaces the value until the next fetch (what a write just made true). */
  set: (value: T) => void;
}

/**
 * `fetch()` now and every `everyMs` (or every `everyMs(lastValue)`), for as long as the
 * component lives and `active` holds (a hidden tab does not poll).
 */
export function usePolled<T>(fetch: () => Promise<T>, everyMs: number | ((value: T | null) => number), active = true): Polled<T> {
  const [value, setValue] = useState<T | null>(null);
  const [failure, setFailure] = useState<Problem | null>(null);
  const reload = useCallback(async () => {
    try {
      setValue(await fetch());
      setFailure(null);
    } catch (e) {
      setFailure(problem(e, ""));
    }
  }, [fetch]);
  const interval = typeof everyMs === "function" ? everyMs(value) : everyMs;
  useEffect(() => {
    if (!active) return;
    void reload();
    const t = window.setInterval(() => void reload(), interval);
    return () => window.clearInterval(t);
  }, [reload, interval, active]);
  return { value, failure, reload, set: setValue };
}

/** The backends of the connected engine, fetched once per client (null: unknown). */
export const BackendsContext = createContext<readonly Backend[] | null>(null);

/** Fetches the engine's backends once per client; null while unknown or unsupported. */
export function useBackends(api: Hypeman): readonly Backend[] | null {
  const [backends, setBackends] = useState<readonly Backend[] | null>(null);
  useEffect(() => {
    let live = true;
    setBackends(null);
    hypervisors(api)
      .then((b) => live && setBackends(b))
      .catch(() => live && setBackends(null));
    return () => {
      live = false;
    };
  }, [api]);
  return backends;
}

/**
 * The host's and every running instance's resource use (`GET /stats`): polled once for the
 * window (the header's summary and the list's sparklines share it); null while unknown, when the
 * last poll failed, and from servers without it (upstream Hypeman).
 */
export const FleetStatsContext = createContext<FleetStats | null>(null);

/** How often a server that answered 404 to `GET /stats` is asked again. */
const FLEET_UNSUPPORTED_MS = 60_000;

/** Polls `GET /stats` every REFRESH_MS while there is a client (see FleetStatsContext). */
export function useFleetStats(api: Hypeman | null): FleetStats | null {
  const fetch = useCallback(async () => ({ api, fleet: api ? await fleetStats(api) : null }), [api]);
  const { value, failure } = usePolled(fetch, (v) => (v !== null && v.api === api && v.fleet === null ? FLEET_UNSUPPORTED_MS : REFRESH_MS), api !== null);
  // A value fetched from another connection's server is not this one's.
  return failure || value === null || value.api !== api ? null : value.fleet;
}
