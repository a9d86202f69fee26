// The operations map's first view drawn by the server (GET /api/map/overview, one small SVG of the base map and the
// live things): index.html asks for it before any script and shows it at once; the page removes it when MapLibre has
// drawn the same view with the live layers. On "Fast 3G" the interactive map needs ~360 kB of MapLibre first; this
// needs one request of ~25 kB.
//
// `overviewRequest` is copied into index.html as it is (vite.config.js, `earlyRequests`): it may use nothing from
// outside its own body but its arguments.

/** Height of the desk's top bar (styles.css --topbar-h): the map fills the window below it. */
export const TOPBAR_PX = 52;

/** The overview's address for opening `location` with the stored session, in a window of `width` × `height`, or
 * null (not the map, no session). The view is the one the map will open: the bounds of the last visit (MapLibre's
 * `bounds` option, padding 30) or the user's scope (fitted with padding 40, as the page's fitScope). */
export function overviewRequest(location, storage, width, height) {
  var read = function (key) {
    try { return JSON.parse(storage.getItem(key) || "null"); } catch (e) { return null; }
  };
  if (location.pathname !== "/") return null;
  var session = read("cityops.session");
  if (!session || !session.token || !session.user) return null;
  var h = Math.round(height) - 52;
  var w = Math.round(width);
  if (w < 64 || h < 64) return null;
  var prefs = read("cityops.map." + session.user.username) || {};
  var b = prefs.bounds;
  var q = new URLSearchParams({ width: String(Math.min(w, 4096)), height: String(Math.min(h, 4096)) });
  if (b && b.length === 2 && [b[0][0], b[0][1], b[1][0], b[1][1]].every(function (v) { return typeof v === "number" && isFinite(v); })) {
    q.set("bbox", [b[0][0], b[0][1], b[1][0], b[1][1]].map(function (v) { return v.toFixed(6); }).join(","));
    q.set("padding", "30");
  }
  if (storage.getItem("cityops.language") === "en") q.set("lang", "en");
  return "/api/map/overview?" + q.toString();
}

/** Remove the server's drawing (the interactive map has drawn the view, or another page opened). */
export function dropOverview(doc = document) {
  const el = doc.getElementById("overview");
  if (el) el.remove();
}
