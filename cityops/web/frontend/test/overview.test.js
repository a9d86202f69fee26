import { describe, expect, it } from "vitest";
import { dropOverview, overviewRequest, TOPBAR_PX } from "../src/overview.js";

function storage(items) {
  return { getItem: (k) => (k in items ? (typeof items[k] === "string" ? items[k] : JSON.stringify(items[k])) : null) };
}
const session = { "cityops.session": { token: "t", user: { username: "d1" } } };
const at = (href) => new URL(href, "http://host");
const params = (url) => Object.fromEntries(new URL(url, "http://host").searchParams);

describe("the operations map's first view drawn by the server", () => {
  it("is asked for the map's own view: the window below the top bar, the user's scope on a first visit", () => {
    const url = overviewRequest(at("/"), storage(session), 1440, 900);
    expect(url.startsWith("/api/map/overview?")).toBe(true);
    expect(params(url)).toEqual({ width: "1440", height: String(900 - TOPBAR_PX) });
  });

  it("follows the bounds the map remembers from the last visit (fitted as MapLibre's bounds option, padding 30)", () => {
    const url = overviewRequest(at("/"), storage({ ...session,
      "cityops.map.d1": { bounds: [[108.1, 30.9], [108.6, 31.3]] } }), 1280, 800);
    expect(params(url)).toEqual({ width: "1280", height: "748", bbox: "108.100000,30.900000,108.600000,31.300000",
      padding: "30" });
  });

  it("ignores a damaged remembered view, and draws English names for an English user", () => {
    const url = overviewRequest(at("/"), storage({ ...session, "cityops.language": "en",
      "cityops.map.d1": { bounds: [[108.1, "x"], [null, 31.3]] } }), 1280, 800);
    expect(params(url)).toEqual({ width: "1280", height: "748", lang: "en" });
  });

  it("is not asked for on other pages, without a session, or in a window too small for a map", () => {
    expect(overviewRequest(at("/workbench"), storage(session), 1440, 900)).toBe(null);
    expect(overviewRequest(at("/phone"), storage(session), 390, 844)).toBe(null);
    expect(overviewRequest(at("/"), storage({}), 1440, 900)).toBe(null);
    expect(overviewRequest(at("/"), storage({ "cityops.session": "{broken" }), 1440, 900)).toBe(null);
    expect(overviewRequest(at("/"), storage(session), 50, 900)).toBe(null);
  });

  it("caps the size at what the server draws", () => {
    expect(params(overviewRequest(at("/"), storage(session), 8000, 5000))).toEqual({ width: "4096", height: "4096" });
  });

  it("is removed from the page once, quietly when already gone", () => {
    let removed = 0;
    const el = { remove: () => { removed += 1; } };
    const doc = { getElementById: (id) => (id === "overview" && !removed ? el : null) };
    dropOverview(doc);
    dropOverview(doc);
    expect(removed).toBe(1);
  });
});
