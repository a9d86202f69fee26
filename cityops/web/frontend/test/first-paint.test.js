import { describe, expect, it } from "vitest";
import { buildUrl } from "../src/api/client.js";
import { firstPaintRequests, OPEN_STATES } from "../src/first-paint.js";

function storage(items) {
  return { getItem: (k) => (k in items ? JSON.stringify(items[k]) : null) };
}
const session = { "cityops.session": { token: "t", user: { username: "w1" } } };
const at = (href) => new URL(href, "http://host");

describe("the phone's first paint requests", () => {
  it("ask for the households in one answer, for the incident of the last visit, and the shelters nearest first", () => {
    const urls = firstPaintRequests(at("/phone?lon=108.3232669&lat=31.04"),
      storage({ ...session, "cityops.phone.w1": { incidentId: 7 } }));
    // The very addresses HouseholdsTab builds through the API client, so its requests take these answers.
    const near = { lon: 108.3232669, lat: 31.04 };
    expect(urls).toEqual([buildUrl("/api/evacuations/mine", { incident_id: 7, state: OPEN_STATES, ...near }),
      buildUrl("/api/shelters", near)]);
  });

  it("follow an incident asked for in the address, and ask for nothing without a session or on other pages", () => {
    expect(firstPaintRequests(at("/phone?incident=3"), storage(session))).toEqual([
      buildUrl("/api/evacuations/mine", { incident_id: 3, state: OPEN_STATES }), "/api/shelters"]);
    expect(firstPaintRequests(at("/phone"), storage({}))).toEqual([]);
    expect(firstPaintRequests(at("/phone/report"), storage(session))).toEqual([]);
    expect(firstPaintRequests(at("/workbench"), storage(session))).toEqual([]);
  });

  it("ask for the cockpit's board of the unit the page will show", () => {
    // A district-wide user: the district (the server's default), or the unit in the address.
    expect(firstPaintRequests(at("/cockpit"), storage(session))).toEqual(["/api/indicators/board"]);
    expect(firstPaintRequests(at("/cockpit?unit=500101001"), storage(session)))
      .toEqual([buildUrl("/api/indicators/board", { unit: "500101001" })]);
    // A township operator: the township, and never a unit outside it.
    const scoped = { "cityops.session": { token: "t", user: { username: "t1", scope_units: ["500101002"] } } };
    expect(firstPaintRequests(at("/cockpit"), storage(scoped))).toEqual([buildUrl("/api/indicators/board", { unit: "500101002" })]);
    expect(firstPaintRequests(at("/cockpit?unit=500101002003"), storage(scoped)))
      .toEqual([buildUrl("/api/indicators/board", { unit: "500101002003" })]);
    expect(firstPaintRequests(at("/cockpit?unit=500101001"), storage(scoped))).toEqual([buildUrl("/api/indicators/board", { unit: "500101002" })]);
  });

  it("stand alone, as index.html runs them", () => {
    // eslint-disable-next-line no-new-func
    const copy = new Function(`return ${firstPaintRequests.toString()}`)();
    expect(copy(at("/phone"), storage(session))).toEqual([buildUrl("/api/evacuations/mine", { state: OPEN_STATES }),
      "/api/shelters"]);
  });
});

describe("the operations map's first paint requests", () => {
  const user = (permissions, extra = {}) => ({ "cityops.session": { token: "t",
    user: { username: "d1", permissions, scope_units: ["500154101"] } }, ...extra });

  it("ask for the live layers of the first view by permission, at the very addresses the layers' loaders build", () => {
    const urls = firstPaintRequests(at("/"), storage(user(["*"])));
    // map/live.js: api.get(path, { params }) and getAll's first page go through buildUrl.
    expect(urls).toEqual([
      buildUrl("/api/incidents", { status: "active" }),
      buildUrl("/api/risk-points", { limit: 1000, offset: 0 }),
      buildUrl("/api/sensing/alarms", { status: "active,acknowledged", limit: 1000 }),
      "/api/events/map/cases",
      "/api/shelters",
      "/api/units/500154101",
    ]);
    // Sensors and cameras are drawn from a closer zoom: not on the first view's path.
    expect(urls.some((u) => u.includes("devices") || u.includes("video"))).toBe(false);
  });

  it("leave out what the user may not read, and the units when the map remembers its view", () => {
    expect(firstPaintRequests(at("/"), storage(user(["events.read"], { "cityops.map.d1": { bounds: [[1, 2], [3, 4]] } }))))
      .toEqual(["/api/events/map/cases"]);
  });
});
