import { describe, expect, it } from "vitest";

import { goesLocal } from "./desktop";

describe("goesLocal", () => {
  it("sends only the requests that may carry secret references to the shell", () => {
    expect(goesLocal("POST", "/instances")).toBe(true);
    expect(goesLocal("PATCH", "/instances/abc")).toBe(true);
    expect(goesLocal("POST", "/instances/abc/credentials/OPENAI/resolve")).toBe(true);
    expect(goesLocal("GET", "/system/keychain/items")).toBe(true);
    for (const [method, path] of [
      ["GET", "/instances"],
      ["DELETE", "/instances/abc"],
      ["POST", "/system/token/rotate"],
      ["PATCH", "/instances/../system"],
      ["PATCH", "/instances/abc/x"],
      ["POST", "/instances/abc/exec"],
    ]) {
      expect(goesLocal(method, path), `${method} ${path}`).toBe(false);
    }
  });
});
