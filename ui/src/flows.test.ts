import { describe, expect, it } from "vitest";

import { blockText, blocked, moved, newBlocks, reasonText, target, withName, type FlowEvent } from "./flows";

const ev = (at_ms: number, over: Partial<FlowEvent>): FlowEvent => ({
  at_ms,
  protocol: "tcp",
  destination: "203.0.113.10:443",
  verdict: "allowed",
  ...over,
});

describe("flows", () => {
  it("groups denials by destination, newest first, and skips what was let through", () => {
    const list = blocked([
      ev(5, { verdict: "denied", destination: "127.0.0.1:5432", reason: "loopback" }),
      ev(4, { verdict: "allowed" }),
      ev(3, { verdict: "denied", destination: "169.254.169.254:80", reason: "link_local" }),
      ev(2, { verdict: "denied", destination: "127.0.0.1:5432", reason: "loopback" }),
      ev(1, { verdict: "unreachable", destination: "203.0.113.11:80", reason: "connection refused" }),
      ev(6, { verdict: "denied", protocol: "dns", destination: "10.100.7.3:53", name: "exfil.example", reason: "egress_proxy_only" }),
    ]);
    expect(list.map((b) => [b.key, b.count, b.last_ms])).toEqual([
      ["dns exfil.example", 1, 6],
      ["tcp 127.0.0.1:5432", 2, 5],
      ["tcp 169.254.169.254:80", 1, 3],
    ]);
  });

  it("says where and why in words", () => {
    expect(reasonText("link_local")).toBe("link-local (cloud metadata)");
    expect(reasonText("something new")).toBe("something new");
    expect(target({ protocol: "tcp", destination: "203.0.113.10:443", name: "api.example.com" })).toBe("api.example.com (203.0.113.10:443)");
    expect(target({ protocol: "dns", destination: "10.100.7.3:53", name: "a.example" })).toBe("a.example");
    const [b] = blocked([ev(1, { verdict: "denied", destination: "127.0.0.1:22", reason: "loopback" })]);
    expect(blockText("agent-1", b!)).toBe("agent-1 was refused 127.0.0.1:22 over TCP: the host's own services (loopback)");
  });

  it("says what a flow moved once it ended", () => {
    const size = (n: number) => `${String(n)}B`;
    expect(moved({ verdict: "allowed", flow: 3, bytes: { sent: 10, received: 2048 } }, size)).toBe("↑ 10B ↓ 2048B");
    expect(moved({ verdict: "allowed", flow: 3 }, size)).toBe("open");
    expect(moved({ verdict: "denied" }, size)).toBe("");
    expect(moved({ verdict: "allowed" }, size)).toBe("");
  });

  it("adds a name to an allow-list once, keeping the order", () => {
    expect(withName(null, "pypi.org")).toEqual(["pypi.org"]);
    expect(withName(["a.test"], "pypi.org")).toEqual(["a.test", "pypi.org"]);
    expect(withName(["a.test", "pypi.org"], "pypi.org")).toEqual(["a.test", "pypi.org"]);
    expect(reasonText("not_allowed")).toBe("not on this instance's allow-list");
  });

  it("reports each blocked destination once", () => {
    const first = blocked([ev(1, { verdict: "denied", destination: "10.0.0.1:80", reason: "private_range" })]);
    const known = new Set<string>();
    expect(newBlocks(first, known)).toHaveLength(1);
    first.forEach((b) => known.add(b.key));
    const second = blocked([
      ev(2, { verdict: "denied", destination: "10.0.0.1:80", reason: "private_range" }),
      ev(3, { verdict: "denied", destination: "10.0.0.2:80", reason: "private_range" }),
    ]);
    expect(newBlocks(second, known).map((b) => b.destination)).toEqual(["10.0.0.2:80"]);
  });
});
