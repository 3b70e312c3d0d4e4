// The instances table: filter by text, state and tag; sort by any column; arrow keys move
// between rows and Enter opens one. Rows are memoized, so a poll re-renders only what changed.
import { memo, useLayoutEffect, useMemo, useRef, type KeyboardEvent, type RefObject } from "react";

import {
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
} from "../model";
import { StateBadge } from "./common";

const COLUMNS: { key: SortKey | null; label: string; className: string }[] = [
  { key: "name", label: "Name", className: "name" },
  { key: "state", label: "State", className: "state" },
  { key: "image", label: "Image", className: "image" },
  { key: "vcpus", label: "vCPUs", className: "vcpus num" },
  { key: "memory", label: "Memory", className: "memory num" },
  { key: null, label: "IP", className: "ip" },
  { key: "uptime", label: "Uptime", className: "uptime num" },
  { key: null, label: "Tags", className: "tags" },
];

const Row = memo(function Row({ instance, now, onOpen }: { instance: Instance; now: number; onOpen: (id: string) => void }) {
  return (
    <tr
      data-instance-id={instance.id}
      data-state={instance.state}
      tabIndex={0}
      onClick={() => onOpen(instance.id)}
      onKeyDown={(e) => {
        if (e.key === "Enter") onOpen(instance.id);
      }}
    >
      <td className="name">{instance.name}</td>
      <td className="state">
        <StateBadge state={instance.state} title={instance.state_error ?? instance.exit_message ?? null} />
      </td>
      <td className="image" title={instance.image}>
        {instance.image}
      </td>
      <td className="vcpus num">{instance.vcpus ?? "—"}</td>
      <td className="memory num">{instance.size ?? "—"}</td>
      <td className="ip">{instance.network?.ip ?? "—"}</td>
      <td className="uptime num">{uptime(instance, now)}</td>
      <td className="tags">
        {tagLabels(instance.tags).map((t) => (
          <span key={t} className="tag">
            {t}
          </span>
        ))}
      </td>
    </tr>
  );
});

/** Moves the focus to the next or previous row. */
function moveFocus(e: KeyboardEvent<HTMLTableSectionElement>): void {
  if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
  const row = (e.target as HTMLElement).closest("tr");
  const next = e.key === "ArrowDown" ? row?.nextElementSibling : row?.previousElementSibling;
  if (next instanceof HTMLElement) {
    e.preventDefault();
    next.focus();
  }
}

export function InstanceList({
  list,
  loaded,
  now,
  filter,
  sort,
  onFilter,
  onSort,
  onOpen,
  onCreate,
  onHello,
  helloBusy = false,
  searchRef,
}: {
  list: Instance[];
  loaded: boolean;
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
  searchRef: RefObject<HTMLInputElement | null>;
}) {
  const shown = useMemo(() => sortInstances(filterInstances(list, filter), sort, now), [list, filter, sort, now]);
  const counts = useMemo(() => countByState(list), [list]);
  const body = useRef<HTMLTableSectionElement>(null);

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

  const toggleState = (s: State): void => {
    const states = filter.states.includes(s) ? filter.states.filter((x) => x !== s) : [...filter.states, s];
    onFilter({ ...filter, states });
  };
  const filtered = filter.states.length > 0 || filter.tag.trim() !== "" || filter.text.trim() !== "";

  return (
    <section id="instances-view" aria-label="Instances">
      <div className="toolbar">
        <input
          id="filter-text"
          ref={searchRef}
          type="search"
          placeholder="Search name, image, id, IP   ( / )"
          aria-label="Search instances"
          value={filter.text}
          onChange={(e) => onFilter({ ...filter, text: e.target.value })}
        />
        <input
          id="filter-tag"
          type="search"
          placeholder="tag or tag=value"
          aria-label="Filter by tag"
          value={filter.tag}
          onChange={(e) => onFilter({ ...filter, tag: e.target.value })}
        />
        <div className="chips" role="group" aria-label="Filter by state">
          {STATES.map((s) => (
            <button
              key={s}
              type="button"
              className={filter.states.includes(s) ? "chip on" : "chip"}
              data-filter-state={s}
              aria-pressed={filter.states.includes(s)}
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

      {!loaded ? (
        <p id="loading" className="empty" aria-busy="true">
          Loading instances…
        </p>
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
          <table id="instances-table">
            <thead>
              <tr>
                {COLUMNS.map((c) => (
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
              </tr>
            </thead>
            <tbody id="instances" ref={body} onKeyDown={moveFocus}>
              {shown.map((i) => (
                <Row key={i.id} instance={i} now={now} onOpen={onOpen} />
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
    </section>
  );
}
