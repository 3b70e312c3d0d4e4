import { describe, expect, test } from "vitest";

import { parseRoute, routeHash, type Route } from "./hooks";

describe("routes", () => {
  test("every view round-trips through the hash", () => {
    const routes: Route[] = [
      { view: "list" },
      { view: "instance", id: "a b" },
      { view: "new" },
      { view: "new", image: "ghcr.io/me/tool:1.0" },
      { view: "images" },
      { view: "volumes" },
      { view: "setup" },
      { view: "settings" },
    ];
    for (const r of routes) expect(parseRoute(routeHash(r))).toEqual(r);
  });

  test("hashes people type", () => {
    expect(parseRoute("#/volumes")).toEqual({ view: "volumes" });
    expect(parseRoute("#volumes")).toEqual({ view: "volumes" });
    expect(parseRoute("")).toEqual({ view: "list" });
    expect(parseRoute("#/nope")).toEqual({ view: "list" });
    expect(parseRoute("#/new?image=")).toEqual({ view: "new" });
    expect(parseRoute("#/new?image=alpine%3A3")).toEqual({ view: "new", image: "alpine:3" });
  });
});
