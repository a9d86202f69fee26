// The API requests a page's first paint needs whose addresses are known before any of the app's code runs: index.html
// starts them while the scripts are still arriving (or being read on a slow phone), and the API client takes their
// answers instead of asking again (api/client.js, takeEarly). On a link with half a second per round trip that is
// one round trip less before the phone shows its households; the cockpit's board is computed by the server while
// the browser reads the scripts.
//
// `firstPaintRequests` is copied into index.html as it is (vite.config.js, `firstPaintPreload`): it may use nothing
// from outside its own body but its arguments.

/** The evacuation states the phone lists (its households still to move). */
export const OPEN_STATES = "to_move,refused,not_home";

/** Paths (with query) to ask for at once on opening `location`, given the stored session and lists: the operations
 * map's live layers (those drawn at its first view) and units to fit; the cockpit's board; the phone's households in one answer (its incidents, the chosen one's households and totals;
 * `GET /api/evacuations/mine`) and the shelters, the very addresses HouseholdsTab builds. */
export function firstPaintRequests(location, storage) {
  var read = function (key) {
    try { return JSON.parse(storage.getItem(key) || "null"); } catch (e) { return null; }
  };
  var session = read("cityops.session");
  var path = location.pathname;
  if (!session || !session.token || !session.user) return [];
  var query = new URLSearchParams(location.search);
  if (/^\/cockpit\/?$/.test(path)) {
    // The cockpit's board (pages/Cockpit.vue): the unit asked for inside the user's scope, else the scope's top
    // unit, else (district-wide) the district, which the server picks.
    var own = (session.user.scope_units || [])[0] || "";
    var asked = query.get("unit") || "";
    var unit = asked && (!own || asked.indexOf(own) === 0) ? asked : own;
    return ["/api/indicators/board" + (unit ? "?" + new URLSearchParams({ unit: unit }).toString() : "")];
  }
  if (path === "/") {
    // The operations map (pages/OpsMap.vue, map/live.js): the live layers the first view draws, by permission, and
    // the scope's units to fit a first visit (without a view remembered from the last one).
    var perms = session.user.permissions || [];
    var may = function (p) { return perms.indexOf("*") >= 0 || perms.indexOf(p) >= 0; };
    var urls = [];
    if (may("tasks.read")) urls.push("/api/incidents?status=active");
    if (may("warning.read")) urls.push("/api/risk-points?limit=1000&offset=0");
    if (may("sensing.read")) urls.push("/api/sensing/alarms?" + new URLSearchParams({ status: "active,acknowledged", limit: "1000" }).toString());
    if (may("events.read")) urls.push("/api/events/map/cases");
    if (may("tasks.read")) urls.push("/api/shelters");
    var prefs = read("cityops.map." + session.user.username) || {};
    if (!prefs.bounds) {
      (session.user.scope_units || []).slice(0, 20).forEach(function (code) { urls.push("/api/units/" + encodeURIComponent(code)); });
    }
    return urls;
  }
  if (!/^\/phone(\/households)?\/?$/.test(path)) return [];
  var cache = read("cityops.phone." + session.user.username) || {};
  var id = Number(query.get("incident")) || cache.incidentId;
  var near = query.get("lon") && query.get("lat")
    ? new URLSearchParams({ lon: String(Number(query.get("lon"))), lat: String(Number(query.get("lat"))) }).toString() : "";
  var mine = new URLSearchParams(id ? { incident_id: String(id) } : {});
  mine.set("state", "to_move,refused,not_home");
  return ["/api/evacuations/mine?" + mine.toString() + (near ? "&" + near : ""), "/api/shelters" + (near ? "?" + near : "")];
}
