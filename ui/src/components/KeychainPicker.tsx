// "From keychain…": picks an OS keychain item (on the engine's machine) as a credential's
// value, written as the reference `keychain:<service>/<account>`; the host resolves it, the page
// never sees the value. Uses Hypedeck's `GET /system/keychain/items` (names only).
import { useState } from "react";
import type Hypeman from "@onkernel/hypeman";

import { problem } from "../api";

interface Item {
  service: string;
  account: string;
}

export function KeychainPicker({ api, id, onPick }: { api: Hypeman; id: string; onPick: (reference: string) => void }) {
  const [items, setItems] = useState<Item[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState(false);
  if (!open) {
    return (
      <button
        type="button"
        id={`${id}-open`}
        className="link keychain-open"
        onClick={() => {
          setOpen(true);
          setError(null);
          api.get<Item[]>("/system/keychain/items").then(setItems, (e: unknown) => {
            const p = problem(e, "");
            setError(p.code === "http_404" ? "this server cannot list keychain items" : p.message);
          });
        }}
      >
        From keychain…
      </button>
    );
  }
  if (error) return <span className="field-error keychain-error">{error}</span>;
  if (!items) return <span className="muted">Reading the keychain…</span>;
  if (items.length === 0) return <span className="muted">No keychain item with a service and an account.</span>;
  return (
    <select
      id={id}
      className="keychain-select"
      aria-label="Keychain item"
      defaultValue=""
      onChange={(e) => {
        if (!e.target.value) return;
        onPick(`keychain:${e.target.value}`);
        setOpen(false);
      }}
    >
      <option value="">Choose an item…</option>
      {items.map((i) => (
        <option key={`${i.service}/${i.account}`} value={`${i.service}/${i.account}`}>
          {i.service} / {i.account}
        </option>
      ))}
    </select>
  );
}
