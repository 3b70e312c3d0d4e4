import { APIConnectionError, APIConnectionTimeoutError, APIError } from "@onkernel/hypeman";
import { describe, expect, test } from "vitest";

import { healthFrom, hostOf, normalizeUrl } from "./remotes";

describe("remote URLs", () => {
  test("a base URL is kept without its trailing slash", () => {
    expect(normalizeUrl(" https://hypeman.example.com:8443/ ")).toBe("https://hypeman.example.com:8443");
    expect(normalizeUrl("http://127.0.0.1:4973")).toBe("http://127.0.0.1:4973");
  });

  test("anything else is refused with the reason", () => {
    expect(() => normalizeUrl("not a url")).toThrow('"not a url" is not a URL');
    expect(() => normalizeUrl("ftp://a")).toThrow("only http and https URLs are supported");
    expect(() => normalizeUrl("https://u:p@a")).toThrow("give the API's base URL only");
    expect(() => normalizeUrl("https://a/?k=1")).toThrow("give the API's base URL only");
    expect(hostOf("https://a.example:8443/x")).toBe("a.example:8443");
  });
});

describe("health", () => {
  const url = "http://127.0.0.1:5001";
  test("a working server gives its round trip", () => {
    expect(healthFrom(url, 10, 22.5, null)).toEqual({ latency_ms: 12.5, problem: null });
  });

  test("a refused key, an unreachable host and a timeout are named", () => {
    const refused = new APIError(401, { code: "Unauthorized", message: "invalid token" }, undefined, new Headers());
    expect(healthFrom(url, 0, 3, refused)).toEqual({
      latency_ms: 3,
      problem: { code: "unauthorized", message: "127.0.0.1:5001 refused the API key (401: invalid token)" },
    });
    expect(healthFrom(url, 0, 3, new APIConnectionError({ message: "Connection error." })).problem).toEqual({
      code: "unreachable",
      message: "cannot reach 127.0.0.1:5001: Connection error.",
    });
    expect(healthFrom(url, 0, 3, new APIConnectionTimeoutError()).problem?.code).toBe("timeout");
  });
});
