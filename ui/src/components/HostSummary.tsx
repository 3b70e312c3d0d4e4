// The header's memory summary (`GET /stats`): "Sandboxes: 1.2 GiB of 16 GiB" — the resident
// memory of every running instance's VMM, of this machine's — with a small bar of this machine's
// memory, stacked with each one's share (a sliver at least). The button opens a popover that
// lists each instance (a link to its page) with its share in words; Escape and a click elsewhere
// close it (`usePopover`).
import { useCallback, useMemo, useRef, useState } from "react";

import { bytesText, hostSummary, hostSummaryText, percentText, shareText, type FleetStats } from "../stats";
import { usePopover } from "./common";

const shade = (n: number): string => `share-${(n % 6) + 1}`;

export function HostSummary({ fleet }: { fleet: FleetStats }) {
  const s = useMemo(() => hostSummary(fleet), [fleet]);
  const [open, setOpen] = useState(false);
  const popover = useRef<HTMLDivElement>(null);
  const opener = useRef<HTMLButtonElement>(null);
  const close = useCallback(() => setOpen(false), []);
  usePopover(open, popover, opener, close);
  const hostKnown = s.host_memory_bytes > 0;
  const count = s.shares.length;
  return (
    <div id="host-summary" className="host-summary">
      <button
        ref={opener}
        id="host-summary-button"
        type="button"
        aria-expanded={open}
        aria-controls={open ? "host-panel" : undefined}
        title="Memory the running sandboxes' VMMs hold (resident), of this machine's; open for each one's share"
        onClick={() => setOpen((o) => !o)}
      >
        <span id="host-summary-text">{hostSummaryText(s)}</span>
        <span className="host-bar" aria-hidden="true">
          {s.shares.map((x, n) => (
            <span key={x.id} className={shade(n)} style={{ width: `${x.of_host * 100}%` }} title={`${x.name}: ${shareText(x, hostKnown)}`} data-instance-id={x.id} />
          ))}
        </span>
      </button>
      {open && (
        <div ref={popover} id="host-panel" className="host-panel" role="group" aria-label="Memory per sandbox">
          <p>
            {count === 0
              ? "No sandbox is running."
              : `${bytesText(s.rss_bytes)} resident in ${count} running sandbox${count === 1 ? "" : "es"}${
                  s.of_host !== null ? `: ${percentText(s.of_host * 100)} of this machine's ${bytesText(s.host_memory_bytes)}` : ""
                }.`}
          </p>
          {count > 0 && (
            <ul id="host-shares" className="host-shares">
              {s.shares.map((x, n) => (
                <li key={x.id} data-instance-id={x.id}>
                  <span className={`swatch ${shade(n)}`} aria-hidden="true" />
                  <span>
                    <a href={`#/instances/${encodeURIComponent(x.id)}`} onClick={close}>
                      {x.name}
                    </a>
                    : {shareText(x, hostKnown)}
                  </span>
                </li>
              ))}
            </ul>
          )}
          <p className="hint">
            {fleet.guest_memory_allocated_bytes > 0 ? `${bytesText(fleet.guest_memory_allocated_bytes)} allocated to them. ` : ""}
            {fleet.host_cpus > 0 ? `This machine has ${fleet.host_cpus} CPU${fleet.host_cpus === 1 ? "" : "s"}.` : ""}
          </p>
        </div>
      )}
    </div>
  );
}
