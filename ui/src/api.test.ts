import Hypeman from "@onkernel/hypeman";
import { describe, expect, test } from "vitest";

import { credentialKeys, effectiveCommand, rotationKeys } from "./api";

type Call = { method: string; path: string };

/** An SDK client whose server is `answer` (no network), recording each request. */
function fakeServer(answer: (call: Call) => { status: number; body: unknown }): { api: Hypeman; calls: Call[] } {
  const calls: Call[] = [];
  const api = new Hypeman({
    baseURL: "http://hypeman.test",
    apiKey: "k",
    maxRetries: 0,
    fetch: (async (input: string | URL | Request, init?: RequestInit) => {
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      const call = { method: init?.method ?? "GET", path: url.pathname };
      calls.push(call);
      const { status, body } = answer(call);
      return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    }) as typeof fetch,
  });
  return { api, calls };
}

const notFound = { status: 404, body: { code: "not_found", message: "no matching operation was found" } };

describe("credential keys", () => {
  test("the distinct env keys, in the server's order", () => {
    expect(credentialKeys([{ env: "B" }, { env: "A" }, { env: "B" }])).toEqual(["B", "A"]);
    expect(credentialKeys([])).toEqual([]);
  });

  test("a Hypedeck server names them in GET …/credentials: no PATCH is sent", async () => {
    const { api, calls } = fakeServer(({ path }) =>
      path === "/instances/i1/credentials"
        ? { status: 200, body: [{ name: "OPENAI", env: "OPENAI_KEY", hosts: null, headers: ["Authorization"], fingerprint: "ab12", rotated_at: null, last_used: null, first_use_of_current: null, blocked: 0 }] }
        : notFound,
    );
    expect(await rotationKeys(api, "i1")).toEqual({ keys: ["OPENAI_KEY"], fingerprints: { OPENAI_KEY: "ab12" }, reported: true });
    expect(calls).toEqual([{ method: "GET", path: "/instances/i1/credentials" }]);
  });

  test("an upstream server (404) is asked with the probe PATCH, whose 400 lists the keys", async () => {
    const { api, calls } = fakeServer(({ method }) =>
      method === "PATCH"
        ? { status: 400, body: { code: "invalid_request", message: "invalid request: env keys [HYPEDECK_ROTATION_PROBE] are not credential source env vars; allowed keys: [A B]" } }
        : notFound,
    );
    expect(await rotationKeys(api, "i1")).toEqual({ keys: ["A", "B"], fingerprints: {}, reported: false });
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual(["GET /instances/i1/credentials", "PATCH /instances/i1"]);
  });

  test("another failure is not a list of keys", async () => {
    const { api } = fakeServer(() => ({ status: 500, body: { code: "internal", message: "boom" } }));
    await expect(rotationKeys(api, "i1")).rejects.toThrow(/boom/);
  });
});

describe("effective command", () => {
  test("null from a server without the extension; errors other than 404 are errors", async () => {
    expect(await effectiveCommand(fakeServer(() => notFound).api, "i1")).toBeNull();
    const body = { argv: ["/bin/sh", "-c", "x"], entrypoint: { value: ["/bin/sh", "-c"], from: "instance" }, cmd: { value: ["x"], from: "instance" }, working_dir: null };
    expect(await effectiveCommand(fakeServer(() => ({ status: 200, body })).api, "i 1")).toEqual(body);
    await expect(effectiveCommand(fakeServer(() => ({ status: 500, body: { code: "internal", message: "boom" } })).api, "i1")).rejects.toThrow(/boom/);
  });
});
