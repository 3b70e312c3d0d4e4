import { describe, expect, test } from "vitest";

import { execUrl, exitCodeOf, RUN_SHELL, shellRun } from "./exec";

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

describe("the Run box", () => {
  test("a typed line runs in the guest's /bin/sh -c, exactly as typed", () => {
    expect(shellRun("env | grep X")).toEqual({ request: { command: ["/bin/sh", "-c", "env | grep X"] }, error: null });
    expect(shellRun("  echo 'a  b'  ").request?.command).toEqual(["/bin/sh", "-c", "  echo 'a  b'  "]);
    expect(RUN_SHELL).toEqual(["/bin/sh", "-c"]);
  });

  test("an empty line is refused with a message", () => {
    expect(shellRun("   ")).toEqual({ request: null, error: "Type a command to run, e.g. ls -la /" });
  });
});
