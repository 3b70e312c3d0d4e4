import { describe, expect, test } from "vitest";

import { connectProblem, decideLink, readLink, refusedToken, type Link } from "./connection";

const local: Link = { url: "http://127.0.0.1:4973", token: "hdk_local" };

describe("a link against the saved connection", () => {
  test("no link: nothing to decide", () => {
    expect(decideLink(null, null)).toEqual({ action: "ignore", reason: null });
    expect(decideLink(local, null)).toEqual({ action: "ignore", reason: null });
  });

  test("the saved connection itself is used without a question, however its URL is spelled", () => {
    expect(decideLink(local, { ...local })).toEqual({ action: "use", link: local });
    expect(decideLink(local, { url: " http://127.0.0.1:4973/ ", token: "hdk_local" })).toEqual({ action: "use", link: local });
    expect(decideLink({ url: "http://127.0.0.1:4973/", token: "hdk_local" }, local)).toEqual({ action: "use", link: local });
    expect(decideLink({ url: "https://Hypeman.Example.com", token: "k" }, { url: "https://hypeman.example.com/", token: "k" }).action).toBe("use");
  });

  test("another server is asked about, naming both", () => {
    const link = { url: "https://evil.example.com", token: "hdk_theirs" };
    expect(decideLink(local, link)).toEqual({ action: "ask", question: { link, saved: local, sameServer: false } });
    // Another port of this machine is another server too.
    const other = { url: "http://127.0.0.1:5000", token: "hdk_local" };
    expect(decideLink(local, other)).toEqual({ action: "ask", question: { link: other, saved: local, sameServer: false } });
    // And so is the same host over another scheme.
    expect(decideLink(local, { url: "https://127.0.0.1:4973", token: "hdk_local" }).action).toBe("ask");
  });

  test("the saved server with another token is asked about", () => {
    const link = { url: "http://127.0.0.1:4973/", token: "hdk_other" };
    expect(decideLink(local, link)).toEqual({
      action: "ask",
      question: { link: { url: "http://127.0.0.1:4973", token: "hdk_other" }, saved: local, sameServer: true },
    });
  });

  test("nothing saved: a loopback API is used, any other host is asked about", () => {
    for (const url of ["http://127.0.0.1:4973", "http://127.1.2.3:1", "http://localhost:4973", "http://api.localhost:4973", "http://[::1]:4973", "http://2130706433:4973"]) {
      expect(decideLink(null, { url, token: "t" }).action, url).toBe("use");
    }
    for (const url of ["https://hypeman.example.com", "http://192.168.1.10:4973", "http://0.0.0.0:4973", "http://localhost.evil.example", "http://[::ffff:127.0.0.1]:1"]) {
      expect(decideLink(null, { url, token: "t" }), url).toEqual({ action: "ask", question: { link: { url, token: "t" }, saved: null, sameServer: false } });
    }
  });

  test("an unusable API URL is ignored with the reason, whatever is saved", () => {
    for (const saved of [null, local]) {
      expect(decideLink(saved, { url: "javascript:alert(1)", token: "t" })).toEqual({
        action: "ignore",
        reason: `the link's API URL is unusable: "javascript:alert(1)": only http and https URLs are supported`,
      });
      expect(decideLink(saved, { url: "https://user:pw@evil.example", token: "t" }).action).toBe("ignore");
      expect(decideLink(saved, { url: "not a url", token: "t" }).action).toBe("ignore");
    }
  });
});

describe("a link in the address", () => {
  test("the fragment form is read and stripped, keeping nothing of it", () => {
    expect(readLink("http://127.0.0.1:4173/#api=http%3A%2F%2F127.0.0.1%3A4973&token=hdk_x")).toEqual({
      link: { url: "http://127.0.0.1:4973", token: "hdk_x" },
      stripped: "http://127.0.0.1:4173/",
    });
    // Unencoded, as people paste it.
    expect(readLink("http://ui.example/app/#api=http://127.0.0.1:4973&token=hdk_x").link).toEqual({ url: "http://127.0.0.1:4973", token: "hdk_x" });
  });

  test("the query form is read and stripped, other parameters stay", () => {
    expect(readLink("http://127.0.0.1:4173/?x=1&api=http://127.0.0.1:4973&token=hdk_x#/images")).toEqual({
      link: { url: "http://127.0.0.1:4973", token: "hdk_x" },
      stripped: "http://127.0.0.1:4173/?x=1#/images",
    });
  });

  test("the fragment wins over the query, and both are stripped", () => {
    const { link, stripped } = readLink("http://h/?api=http://a:1&token=q#api=http://b:2&token=f");
    expect(link).toEqual({ url: "http://b:2", token: "f" });
    expect(stripped).toBe("http://h/");
  });

  test("half a link is no link, but its token is still stripped", () => {
    expect(readLink("http://h/?token=hdk_secret")).toEqual({ link: null, stripped: "http://h/" });
    expect(readLink("http://h/#token=hdk_secret")).toEqual({ link: null, stripped: "http://h/" });
    expect(readLink("http://h/?api=http://a:1")).toEqual({ link: null, stripped: "http://h/" });
    expect(readLink("http://h/?api=&token=t")).toEqual({ link: null, stripped: "http://h/" });
  });

  test("an address without a link is left alone, routes included", () => {
    expect(readLink("http://h/")).toEqual({ link: null, stripped: null });
    expect(readLink("http://h/#/instances/abc")).toEqual({ link: null, stripped: null });
    expect(readLink("http://h/?x=1#/new")).toEqual({ link: null, stripped: null });
    expect(readLink("http://h/#/new?image=alpine%3A3")).toEqual({ link: null, stripped: null });
  });
});

describe("a connection that does not work says why", () => {
  test("a refused token is recognised however the server spells it", () => {
    expect(refusedToken({ code: "Unauthorized", message: "invalid token" })).toBe(true);
    expect(refusedToken({ code: "http_401", message: "x" })).toBe(true);
    expect(refusedToken({ code: "unreachable", message: "x" })).toBe(false);
    expect(refusedToken(null)).toBe(false);
  });

  test("the connect form names the host and the fix", () => {
    expect(connectProblem("http://127.0.0.1:4973", { code: "http_401", message: "invalid token" })).toBe(
      "127.0.0.1:4973 refused this token (401). Run `hypedeck token` on the machine running it and paste what it prints.",
    );
    expect(connectProblem("http://127.0.0.1:1", { code: "unreachable", message: "fetch failed" })).toMatch(/^Cannot reach 127\.0\.0\.1:1: is `hypedeck serve` running there/);
    expect(connectProblem("https://h.example", { code: "timeout", message: "" })).toMatch(/^h\.example did not answer within 5 s/);
    expect(connectProblem("https://h.example", { code: "http_500", message: "boom" })).toBe("h.example answered with http_500: boom");
  });
});
