import { describe, expect, test } from "vitest";

import { execUrl, exitCodeOf } from "./exec";

describe("exec", () => {
  test("the WebSocket URL follows the API's scheme and base path", () => {
    expect(execUrl("http://127.0.0.1:4973", "abc")).toBe("ws://127.0.0.1:4973/instances/abc/exec");
    expect(execUrl("https://h.example/api/", "a b")).toBe("wss://h.example/api/instances/a%20b/exec");
    expect(execUrl("http://127.0.0.1:4973/?x=1", "i")).toBe("ws://127.0.0.1:4973/instances/i/exec");
  });

  test("only {\"exitCode\":N} ends a session", () => {
    expect(exitCodeOf('{"exitCode":3}')).toBe(3);
    expect(exitCodeOf('{"exitCode":"3"}')).toBeNull();
    expect(exitCodeOf("hello")).toBeNull();
    expect(exitCodeOf('{"resize":{"rows":1,"cols":2}}')).toBeNull();
  });
});
