// The instances table: one `tr[data-instance-id]` per instance, built with DOM calls only (names
// and images come from the API and are never parsed as HTML).
import type { Instance } from "./api";

/** Renders `list` into the table body, newest first. */
export function renderInstances(body: HTMLElement, list: readonly Instance[]): void {
  const rows = [...list].sort((a, b) => b.created_at.localeCompare(a.created_at)).map(row);
  body.replaceChildren(...rows);
}

function row(instance: Instance): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.dataset.instanceId = instance.id;
  tr.append(
    cell("name", instance.name),
    stateCell(instance),
    cell("image", instance.image),
    cell("vcpus num", instance.vcpus === undefined ? "—" : String(instance.vcpus)),
    cell("size num", instance.size ?? "—"),
    createdCell(instance.created_at),
  );
  return tr;
}

function cell(className: string, text: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = className;
  td.textContent = text;
  return td;
}

function stateCell(instance: Instance): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = "state";
  const badge = document.createElement("span");
  badge.className = `badge badge-${tone(instance.state)}`;
  badge.textContent = instance.state;
  if (instance.state_error) {
    badge.title = instance.state_error;
  }
  td.append(badge);
  return td;
}

function createdCell(createdAt: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = "created";
  const time = document.createElement("time");
  time.dateTime = createdAt;
  const date = new Date(createdAt);
  time.textContent = Number.isNaN(date.getTime()) ? createdAt : date.toLocaleString();
  time.title = createdAt;
  td.append(time);
  return td;
}

/** The badge colour for a state: green runs, blue is on its way, amber is parked, red is unknown. */
function tone(state: Instance["state"]): string {
  switch (state) {
    case "Running":
      return "ok";
    case "Created":
    case "Initializing":
      return "busy";
    case "Paused":
    case "Standby":
      return "parked";
    case "Shutdown":
    case "Stopped":
      return "off";
    case "Unknown":
    default:
      return "bad";
  }
}
