import { describe, expect, test } from "vitest";

import { parseRoute, routeHash, type Route } from "./hooks";

describe("routes", () => {
  test("every view round-trips through the hash", () => {
    const routes: Route[] = [{ view: "list" }, { view: "instance", id: "a b" }, { view: "new" }, { view: "images" }, { view: "volumes" }];
    for (const r of routes) expect(parseRoute(routeHash(r))).toEqual(r);
  });

  test("hashes people type", () => {
    expect(parseRoute("#/volumes")).toEqual({ view: "volumes" });
    expect(parseRoute("#volumes")).toEqual({ view: "volumes" });
    expect(parseRoute("")).toEqual({ view: "list" });
    expect(parseRoute("#/nope")).toEqual({ view: "list" });
  });
});
