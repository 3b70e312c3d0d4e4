// The instances table: filter by text, state and tag; sort by any column; select rows for bulk
// start / stop / delete; each row's actions show on hover and focus. Keyboard: Down from the
// search box enters the list, Up/Down/Home/End move between rows, Enter opens, Space selects;
// the list is one Tab stop (roving tabindex) and so are the state chips. Rows are memoized, so
// a poll re-renders only what changed. With servers that report resource use (`GET /stats`,
// polled once for the window), a CPU column draws each running instance's last minute.
import { memo, useCallback, useContext, useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent, type RefObject } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem as problemOf, type Problem } from "../api";
import { refusedToken } from "../connection";
import { bulkPlan, bulkSummary } from "../fleet";
import { FleetStatsContext } from "../hooks";
import {
  availability,
  countByState,
  filterInstances,
  nextSort,
  sortInstances,
  STATES,
  tagLabels,
  uptime,
  type Filter,
  type Instance,
  type Sort,
  type SortKey,
  type State,
  type Verb,
} from "../model";
import { forkedFrom, forkNote } from "../snapshots";
import { cpuLine, percentText, sparkLabel, sparkPath } from "../stats";
import { ConfirmDialog, runVerb, StateBadge } from "./common";

const COLUMNS: { key: SortKey | null; label: string; className: string }[] = [
  { key: "name", label: "Name", className: "name" },
  { key: "state", label: "State", className: "state" },
  { key: "image", label: "Image", className: "image" },
  { key: "vcpus", label: "vCPUs", className: "vcpus num" },
  { key: "memory", label: "Memory", className: "memory num" },
  // Only from servers that report resource use (`GET /stats`).
  { key: null, label: "CPU", className: "cpu" },
  { key: null, label: "IP", className: "ip" },
  { key: "uptime", label: "Uptime", className: "uptime num" },
  { key: null, label: "Tags", className: "tags" },
];

type RowVerb = "start" | "stop" | "delete";

const SPARK_W = 44;
const SPARK_H = 16;

/**
 * An instance's CPU over the last minute (0–100% of its vCPUs) as a small inline SVG, with the
 * latest value beside it: cheap enough for a row each (one path, no layout of its own).
 */
const Sparkline = memo(function Sparkline({ name, values }: { name: string; values: readonly (number | null)[] }) {
  const label = sparkLabel(name, values);
  let now: number | null = null;
  for (let i = values.length - 1; i >= 0 && now === null; i--) now = values[i] ?? null;
  return (
    <span className="spark-cell" title={label}>
      <svg className="spark" width={SPARK_W} height={SPARK_H} viewBox={`0 0 ${SPARK_W} ${SPARK_H}`} role="img" aria-label={label} data-spark-points={values.filter((v) => v !== null).length}>
        <line className="spark-base" x1="0" y1={SPARK_H - 0.5} x2={SPARK_W} y2={SPARK_H - 0.5} />
        <path d={sparkPath(values, SPARK_W, SPARK_H - 2)} transform="translate(0 1)" />
      </svg>
      <span className="spark-now" aria-hidden="true">
        {percentText(now)}
      </span>
    </span>
  );
});

const Row = memo(function Row({
  instance,
  cpu,
  now,
  active,
  selected,
  busy,
  onOpen,
  onSelect,
  onAct,
  onFocusRow,
}: {
  instance: Instance;
  /** CPU % over the last minute; undefined: no CPU column; null: nothing to draw (no VMM). */
  cpu: readonly (number | null)[] | null | undefined;
  now: number;
  /** The row the list's one Tab stop is on; its controls are Tab stops too. */
  active: boolean;
  selected: boolean;
  busy: boolean;
  onOpen: (id: string) => void;
  onSelect: (id: string, on: boolean) => void;
  onAct: (instance: Instance, verb: RowVerb) => void;
  onFocusRow: (id: string) => void;
}) {
  const tab = active ? 0 : -1;
  const start = availability(instance.state, "start");
  const power: { verb: RowVerb; label: string; reason: string; enabled: boolean } = start.enabled
    ? { verb: "start", label: "Start", ...start }
    : { verb: "stop", label: "Stop", ...availability(instance.state, "stop") };
  const whyId = `row-why-${instance.id}`;
  const origin = forkedFrom(instance);
  return (
    <tr
      data-instance-id={instance.id}
      data-state={instance.state}
      className={selected ? "selected" : undefined}
      aria-selected={selected}
      tabIndex={tab}
      onFocus={(e) => e.target === e.currentTarget && onFocusRow(instance.id)}
      onClick={() => onOpen(instance.id)}
      onKeyDown={(e) => {
        if (e.target !== e.currentTarget) return;
        if (e.key === "Enter") onOpen(instance.id);
        if (e.key === " ") {
          e.preventDefault();
          onSelect(instance.id, !selected);
        }
      }}
    >
      <td className="select" onClick={(e) => e.stopPropagation()}>
        <input
          type="checkbox"
          data-select={instance.id}
          tabIndex={tab}
          aria-label={`Select ${instance.name}`}
          checked={selected}
          onChange={(e) => onSelect(instance.id, e.target.checked)}
        />
      </td>
      <td className="name">
        {instance.name}
        {origin && (
          <span className="fork-of muted" data-field="forked_from" title={`Forked from ${origin.source_instance_name}${origin.snapshot_id ? ` (snapshot ${origin.snapshot_id})` : ""}`}>
            {forkNote(origin)}
          </span>
        )}
      </td>
      <td className="state">
        <StateBadge state={instance.state} title={instance.state_error ?? instance.exit_message ?? null} />
      </td>
      <td className="image" title={instance.image}>
        {instance.image}
      </td>
      <td className="vcpus num">{instance.vcpus ?? "—"}</td>
      <td className="memory num">{instance.size ?? "—"}</td>
      {cpu !== undefined && <td className="cpu">{cpu && cpu.length > 0 ? <Sparkline name={instance.name} values={cpu} /> : null}</td>}
      <td className="ip">{instance.network?.ip ?? "—"}</td>
      <td className="uptime num">{uptime(instance, now)}</td>
      <td className="tags">
        {tagLabels(instance.tags).map((t) => (
          <span key={t} className="tag">
            {t}
          </span>
        ))}
      </td>
      <td className="row-actions" onClick={(e) => e.stopPropagation()}>
        {!power.enabled && (
          <span id={whyId} className="sr-only">
            {power.reason}
          </span>
        )}
        <button
          type="button"
          data-row-action={power.verb}
          tabIndex={tab}
          disabled={!power.enabled || busy}
          aria-label={`${power.label} ${instance.name}`}
          aria-describedby={power.enabled ? undefined : whyId}
          title={power.reason}
          onClick={() => onAct(instance, power.verb)}
        >
          {power.label}
        </button>
        <button type="button" data-row-action="open" tabIndex={tab} aria-label={`Open ${instance.name}`} onClick={() => onOpen(instance.id)}>
          Open
        </button>
        <button type="button" data-row-action="delete" className="danger" tabIndex={tab} disabled={busy} aria-label={`Delete ${instance.name}`} onClick={() => onAct(instance, "delete")}>
          Delete
        </button>
      </td>
    </tr>
  );
});

/** The rows of the table body, in order. */
function rowsOf(body: HTMLTableSectionElement | null): HTMLTableRowElement[] {
  return body ? Array.from(body.rows) : [];
}

/** A question before deleting: which instances, and that their disks go with them. */
interface DeleteQuestion {
  targets: Instance[];
}

const BULK_VERBS: { verb: Verb; label: string; danger?: boolean }[] = [
  { verb: "start", label: "Start" },
  { verb: "stop", label: "Stop" },
  { verb: "delete", label: "Delete", danger: true },
];

export function InstanceList({
  api,
  list,
  loaded,
  problem,
  now,
  filter,
  sort,
  onFilter,
  onSort,
  onOpen,
  onCreate,
  onHello,
  helloBusy = false,
  onChanged,
  onProblem,
  onReconnect,
  searchRef,
}: {
  api: Hypeman;
  list: Instance[];
  loaded: boolean;
  /** Why the last fetch of the list failed, if it did. */
  problem: Problem | null;
  now: number;
  filter: Filter;
  sort: Sort;
  onFilter: (f: Filter) => void;
  onSort: (s: Sort) => void;
  onOpen: (id: string) => void;
  onCreate: () => void;
  /** Builds and starts the sample sandbox (shown in the empty state). */
  onHello?: () => void;
  helloBusy?: boolean;
  /** After a row or bulk action: refresh, and say what was done. */
  onChanged: (summary: string) => void;
  onProblem: (p: Problem) => void;
  /** Back to the connect form, offered when the token is refused (null: not possible here). */
  onReconnect: (() => void) | null;
  searchRef: RefObject<HTMLInputElement | null>;
}) {
  const shown = useMemo(() => sortInstances(filterInstances(list, filter), sort, now), [list, filter, sort, now]);
  // Every running instance's CPU line from the one `GET /stats` poll (null: the server lacks it).
  const fleet = useContext(FleetStatsContext);
  const cpuLines = useMemo(() => (fleet ? new Map(fleet.instances.map((h) => [h.instance_id, cpuLine(h)])) : null), [fleet]);
  const columns = cpuLines ? COLUMNS : COLUMNS.filter((c) => c.className !== "cpu");
  const counts = useMemo(() => countByState(list), [list]);
  const body = useRef<HTMLTableSectionElement>(null);
  const chips = useRef<HTMLDivElement>(null);
  const [activeId, setActiveId] = useState<string | null>(null);
  const [chipIndex, setChipIndex] = useState(0);
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const [busy, setBusy] = useState<{ verb: Verb; done: number; of: number } | null>(null);
  const [busyRows, setBusyRows] = useState<ReadonlySet<string>>(new Set());
  const [asking, setAsking] = useState<DeleteQuestion | null>(null);

  // How long the table took from the data arriving to the rows being laid out (BENCHMARKS.md):
  // once per fetched list, with a forced layout so the measure includes it.
  useLayoutEffect(() => {
    if (!loaded || performance.getEntriesByName("hypedeck:list-data").length === 0) return;
    void body.current?.offsetHeight;
    performance.measure("hypedeck:list-render", "hypedeck:list-data");
    if (performance.getEntriesByName("hypedeck:list-render").length > 50) performance.clearMeasures("hypedeck:list-render");
  }, [list, loaded]);
  useLayoutEffect(() => {
    document.body.dataset.rows = String(body.current?.rows.length ?? 0);
  }, [shown]);

  // A deleted instance leaves the selection.
  useEffect(() => {
    setSelected((s) => {
      const live = new Set(list.map((i) => i.id));
      const kept = [...s].filter((id) => live.has(id));
      return kept.length === s.size ? s : new Set(kept);
    });
  }, [list]);

  // The list's one Tab stop: the last focused row while it is shown, else the first row.
  const active = shown.some((i) => i.id === activeId) ? activeId : (shown[0]?.id ?? null);

  const toggleState = (s: State): void => {
    const states = filter.states.includes(s) ? filter.states.filter((x) => x !== s) : [...filter.states, s];
    onFilter({ ...filter, states });
  };
  const filtered = filter.states.length > 0 || filter.tag.trim() !== "" || filter.text.trim() !== "";

  const onSelect = useCallback((id: string, on: boolean) => {
    setSelected((s) => {
      const next = new Set(s);
      if (on) next.add(id);
      else next.delete(id);
      return next;
    });
  }, []);

  /** Runs `verb` on each target in turn; one summary at the end, failures named. */
  const run = useCallback(
    async (verb: Verb, targets: Instance[]): Promise<void> => {
      setBusy({ verb, done: 0, of: targets.length });
      setBusyRows(new Set(targets.map((i) => i.id)));
      const failures: { name: string; message: string }[] = [];
      let done = 0;
      for (const i of targets) {
        try {
          await runVerb(api, i.id, verb);
          done += 1;
        } catch (e) {
          failures.push({ name: i.name, message: problemOf(e, "").message });
        }
        setBusy({ verb, done: done + failures.length, of: targets.length });
      }
      setBusy(null);
      setBusyRows(new Set());
      if (verb === "delete") {
        const gone = new Set(targets.map((i) => i.id));
        setSelected((s) => new Set([...s].filter((id) => !gone.has(id))));
      }
      const summary = bulkSummary(verb, done, failures);
      if (failures.length > 0) onProblem({ code: `${verb}_failed`, message: summary });
      onChanged(summary);
    },
    [api, onChanged, onProblem],
  );

  const onAct = useCallback(
    (instance: Instance, verb: RowVerb) => {
      if (verb === "delete") setAsking({ targets: [instance] });
      else void run(verb, [instance]);
    },
    [run],
  );

  /** Up/Down/Home/End between rows; Up from the first row goes back to the search box. */
  const moveFocus = (e: KeyboardEvent<HTMLTableSectionElement>): void => {
    if (!["ArrowDown", "ArrowUp", "Home", "End"].includes(e.key)) return;
    const target = e.target as HTMLElement;
    if (target.tagName === "INPUT" && e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const rows = rowsOf(body.current);
    const at = rows.indexOf(target.closest("tr") as HTMLTableRowElement);
    const to = e.key === "Home" ? 0 : e.key === "End" ? rows.length - 1 : e.key === "ArrowDown" ? at + 1 : at - 1;
    e.preventDefault();
    if (to < 0) {
      searchRef.current?.focus();
      return;
    }
    rows[Math.min(to, rows.length - 1)]?.focus();
  };

  /** Left/Right (Home/End) between the state chips, which are one Tab stop. */
  const moveChip = (e: KeyboardEvent<HTMLDivElement>): void => {
    const keys: Record<string, (i: number, n: number) => number> = {
      ArrowRight: (i, n) => (i + 1) % n,
      ArrowLeft: (i, n) => (i - 1 + n) % n,
      Home: () => 0,
      End: (_i, n) => n - 1,
    };
    const step = keys[e.key];
    if (!step) return;
    e.preventDefault();
    const next = step(chipIndex, STATES.length);
    setChipIndex(next);
    chips.current?.querySelectorAll<HTMLButtonElement>("button")[next]?.focus();
  };

  const shownIds = shown.map((i) => i.id);
  const allShownSelected = shownIds.length > 0 && shownIds.every((id) => selected.has(id));
  const someShownSelected = shownIds.some((id) => selected.has(id));
  const selectAll = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (selectAll.current) selectAll.current.indeterminate = someShownSelected && !allShownSelected;
  }, [someShownSelected, allShownSelected]);

  const tokenRefused = refusedToken(problem);

  return (
    <section id="instances-view" aria-label="Instances">
      <div className="toolbar">
        <input
          id="filter-text"
          ref={searchRef}
          type="search"
          placeholder="Search name, image, id, IP   ( / )"
          aria-label="Search instances"
          aria-keyshortcuts="/"
          aria-describedby="filter-text-hint"
          value={filter.text}
          onChange={(e) => onFilter({ ...filter, text: e.target.value })}
          onKeyDown={(e) => {
            if (e.key !== "ArrowDown") return;
            const first = rowsOf(body.current)[0];
            if (first) {
              e.preventDefault();
              first.focus();
            }
          }}
        />
        <span id="filter-text-hint" className="sr-only">
          Down arrow moves to the list; Enter opens an instance, Space selects it.
        </span>
        <input
          id="filter-tag"
          type="search"
          placeholder="tag or tag=value"
          aria-label="Filter by tag"
          value={filter.tag}
          onChange={(e) => onFilter({ ...filter, tag: e.target.value })}
        />
        <div className="chips" role="toolbar" aria-label="Filter by state" ref={chips} onKeyDown={moveChip}>
          {STATES.map((s, n) => (
            <button
              key={s}
              type="button"
              className={filter.states.includes(s) ? "chip on" : "chip"}
              data-filter-state={s}
              aria-pressed={filter.states.includes(s)}
              tabIndex={n === chipIndex ? 0 : -1}
              onFocus={() => setChipIndex(n)}
              onClick={() => toggleState(s)}
            >
              {s} <span className="count">{counts[s]}</span>
            </button>
          ))}
        </div>
        <span className="spacer" />
        <span id="instance-count" className="muted">
          {filtered ? `${shown.length} of ${list.length}` : `${list.length}`} instance{list.length === 1 ? "" : "s"}
        </span>
      </div>

      {selected.size > 0 && (
        <div id="bulk-bar" className="bulk-bar" role="region" aria-label="Selected instances">
          <span id="bulk-count" aria-live="polite">
            {busy ? `${busy.verb === "delete" ? "Deleting" : busy.verb === "stop" ? "Stopping" : "Starting"} ${busy.done} of ${busy.of}…` : `${selected.size} selected`}
          </span>
          {BULK_VERBS.map(({ verb, label, danger }) => {
            const plan = bulkPlan(list, selected, verb);
            const why = plan.reason ? `bulk-${verb}-why` : plan.skipped > 0 ? `bulk-${verb}-skip` : undefined;
            return (
              <span key={verb} className="bulk-action">
                <button
                  id={`bulk-${verb}`}
                  type="button"
                  className={danger ? "danger" : undefined}
                  disabled={plan.targets.length === 0 || busy !== null}
                  aria-describedby={why}
                  onClick={() => (verb === "delete" ? setAsking({ targets: plan.targets }) : void run(verb, plan.targets))}
                >
                  {label} {plan.targets.length > 0 ? plan.targets.length : ""}
                </button>
                {plan.reason ? (
                  <span id={why} className="bulk-why">
                    {plan.reason}
                  </span>
                ) : plan.skipped > 0 ? (
                  <span id={why} className="bulk-why">
                    {plan.skipped} skipped
                  </span>
                ) : null}
              </span>
            );
          })}
          <button id="bulk-clear" type="button" className="link" onClick={() => setSelected(new Set())}>
            Clear selection
          </button>
        </div>
      )}

      {!loaded ? (
        problem ? (
          <div id="list-problem" className="empty" role="alert">
            <p>{tokenRefused ? "The API refused the token in use." : "The instances could not be loaded."}</p>
            <p className="muted">
              {problem.code}: {problem.message}
              {tokenRefused ? "" : " Trying again every 2 s."}
            </p>
            {tokenRefused && onReconnect && (
              <div className="actions center">
                <button id="list-reconnect" type="button" className="primary" onClick={onReconnect}>
                  Enter another token
                </button>
              </div>
            )}
          </div>
        ) : (
          <p id="loading" className="empty" aria-busy="true">
            Loading instances…
          </p>
        )
      ) : list.length === 0 ? (
        <div id="empty" className="empty">
          <p>No instances yet</p>
          <p className="muted">An instance is an OCI image running as a small VM with its own kernel.</p>
          <div className="actions center">
            <button id="hello" type="button" className="primary" onClick={onHello} disabled={helloBusy}>
              {helloBusy ? "Building the hello sandbox…" : "Try a hello sandbox"}
            </button>
            <button type="button" onClick={onCreate}>
              Create your first instance
            </button>
          </div>
          <p className="hint">The hello sandbox is built on this machine (no registry) and prints a greeting in its logs.</p>
        </div>
      ) : (
        <>
          <table id="instances-table" aria-label="Instances">
            <thead>
              <tr>
                <th className="select">
                  <input
                    id="select-all"
                    ref={selectAll}
                    type="checkbox"
                    aria-label="Select every instance shown"
                    checked={allShownSelected}
                    disabled={shownIds.length === 0}
                    onChange={(e) => setSelected(e.target.checked ? new Set([...selected, ...shownIds]) : new Set([...selected].filter((id) => !shownIds.includes(id))))}
                  />
                </th>
                {columns.map((c) => (
                  <th
                    key={c.label}
                    className={c.className}
                    aria-sort={c.key === sort.key ? (sort.dir === "asc" ? "ascending" : "descending") : undefined}
                  >
                    {c.key ? (
                      <button type="button" className="sort" data-sort={c.key} onClick={() => onSort(nextSort(sort, c.key!))}>
                        {c.label}
                        {c.key === sort.key ? (sort.dir === "asc" ? " ▲" : " ▼") : ""}
                      </button>
                    ) : (
                      c.label
                    )}
                  </th>
                ))}
                <th className="row-actions">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody id="instances" ref={body} onKeyDown={moveFocus}>
              {shown.map((i) => (
                <Row
                  key={i.id}
                  instance={i}
                  cpu={cpuLines ? (cpuLines.get(i.id) ?? null) : undefined}
                  now={now}
                  active={i.id === active}
                  selected={selected.has(i.id)}
                  busy={busyRows.has(i.id)}
                  onOpen={onOpen}
                  onSelect={onSelect}
                  onAct={onAct}
                  onFocusRow={setActiveId}
                />
              ))}
            </tbody>
          </table>
          {shown.length === 0 && (
            <div id="no-match" className="empty">
              <p>No instance matches these filters.</p>
              <button type="button" onClick={() => onFilter({ states: [], tag: "", text: "" })}>
                Clear filters
              </button>
            </div>
          )}
        </>
      )}
      {asking && (
        <ConfirmDialog
          id="delete-confirm"
          title={asking.targets.length === 1 ? `Delete ${asking.targets[0]!.name}?` : `Delete ${asking.targets.length} instances?`}
          confirmLabel={asking.targets.length === 1 ? "Delete" : `Delete ${asking.targets.length}`}
          danger
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            const targets = asking.targets;
            setAsking(null);
            void run("delete", targets);
          }}
        >
          <p>Their disks and logs are removed; this cannot be undone.</p>
          <ul id="delete-confirm-names" className="names">
            {asking.targets.map((i) => (
              <li key={i.id}>{i.name}</li>
            ))}
          </ul>
        </ConfirmDialog>
      )}
    </section>
  );
}
