// The live layers of the operations map: what each one loads, how its records become map features, and how they
// are drawn. Loaders return GeoJSON FeatureCollections; the page refreshes them on the live streams (alarms,
// cases, incidents) and every minute.
import { api, getAll } from "../api/client.js";

export const LEVEL_COLOURS = { red: "#e5484d", orange: "#f5821f", yellow: "#f2c037", blue: "#3b82f6", none: "#8a99ab" };
export const LEVEL_ORDER = ["red", "orange", "yellow", "blue", "none"];
/** A sensor is offline when its newest reading is older than this (the no-signal rules use 2 h for GNSS). */
export const SENSOR_STALE_MS = 3 * 3600 * 1000;
export const STATE_COLOURS = { to_move: "#e5484d", refused: "#a855f7", not_home: "#f59e0b", moved: "#22c55e",
  with_relatives: "#14b8a6", in_shelter: "#3b82f6", returned: "#94a3b8" };

const point = (lon, lat, properties, id) => ({ type: "Feature", id, properties,
  geometry: { type: "Point", coordinates: [lon, lat] } });
const collection = (features) => ({ type: "FeatureCollection", features });
export const EMPTY = collection([]);

/** The newest reading of a device and whether it still reports. */
export function sensorStatus(device, now = Date.now()) {
  let last = null;
  let value = null;
  for (const ds of device.datastreams || []) {
    const at = ds.last_time ? Date.parse(ds.last_time) : NaN;
    if (Number.isFinite(at) && (last === null || at > last.at)) {
      last = { at, time: ds.last_time };
      value = ds;
    }
  }
  const alarm = (device.datastreams || []).map((d) => d.alarm).filter(Boolean);
  const online = last !== null && now - last.at <= SENSOR_STALE_MS;
  return { online, lastTime: last && last.time, latest: value, alarm: alarm.length ? alarm[0] : null };
}

export function riskPointFeatures(items) {
  return collection(items.filter((r) => r.lon != null && r.lat != null).map((r) => point(r.lon, r.lat, {
    kind: "risk_point", code: r.code, name: r.name, level: r.level || "none",
    rank: LEVEL_ORDER.length - Math.max(0, LEVEL_ORDER.indexOf(r.level || "none")),
  })));
}

export function alarmFeatures(items) {
  return collection(items.filter((a) => a.lon != null && a.lat != null).map((a) => point(a.lon, a.lat, {
    kind: "alarm", id: a.id, title: a.title, severity: a.severity, status: a.status,
  }, a.id)));
}

export function sensorFeatures(items, now = Date.now()) {
  return collection(items.filter((d) => d.lon != null && d.lat != null).map((d) => {
    const status = sensorStatus(d, now);
    return point(d.lon, d.lat, { kind: "sensor", id: d.id, name: d.name, device_type: d.device_type,
      online: status.online, alarm: status.alarm || "" }, d.id);
  }));
}

export function shelterFeatures(items) {
  return collection(items.filter((s) => s.lon != null && s.lat != null).map((s) => point(s.lon, s.lat, {
    kind: "shelter", id: s.id, name: s.name, capacity: s.capacity, occupancy: s.occupancy,
    label: `${s.occupancy}/${s.capacity}`, full: s.capacity > 0 && s.occupancy >= s.capacity,
  }, s.id)));
}

/** Active incidents: their zones (polygons) and a marker at each zone's first vertex-free centre. */
export function incidentFeatures(incidents) {
  const features = [];
  for (const inc of incidents) {
    const zone = inc.zone && inc.zone.geometry;
    const props = { kind: "incident", id: inc.id, title: inc.title, level: inc.response_level_roman || "",
      status: inc.status };
    if (zone) features.push({ type: "Feature", id: inc.id, properties: props, geometry: zone });
    const centre = zone ? centreOf(zone) : inc.hazard_geometry ? centreOf(inc.hazard_geometry) : null;
    if (centre) features.push(point(centre[0], centre[1], { ...props, marker: true }, inc.id));
  }
  return collection(features);
}

/** The middle of a geometry's bounding box (zones are compact, a box centre lies inside them). */
export function centreOf(geometry) {
  let minx = Infinity; let miny = Infinity; let maxx = -Infinity; let maxy = -Infinity;
  const visit = (c) => {
    if (typeof c[0] === "number") {
      minx = Math.min(minx, c[0]); maxx = Math.max(maxx, c[0]);
      miny = Math.min(miny, c[1]); maxy = Math.max(maxy, c[1]);
    } else c.forEach(visit);
  };
  visit(geometry.coordinates);
  return Number.isFinite(minx) ? [(minx + maxx) / 2, (miny + maxy) / 2] : null;
}

/** Bounds [[w, s], [e, n]] of a geometry. */
export function boundsOf(geometry) {
  let minx = Infinity; let miny = Infinity; let maxx = -Infinity; let maxy = -Infinity;
  const visit = (c) => {
    if (typeof c[0] === "number") {
      minx = Math.min(minx, c[0]); maxx = Math.max(maxx, c[0]);
      miny = Math.min(miny, c[1]); maxy = Math.max(maxy, c[1]);
    } else c.forEach(visit);
  };
  visit(geometry.coordinates);
  return Number.isFinite(minx) ? [[minx, miny], [maxx, maxy]] : null;
}

/** The live layers: key, what they need, how they load, and (minzoom) from which zoom their style draws them: a
 * map opening further out asks for those after the others (src/first-paint.js asks for the others at page start). */
export const LIVE_LAYERS = [
  { key: "incidents", permission: "tasks.read", async load() {
    const list = await api.get("/api/incidents", { params: { status: "active" } });
    const full = await Promise.all(list.map((i) => api.get(`/api/incidents/${i.id}`).catch(() => i)));
    return { geojson: incidentFeatures(full), items: full };
  } },
  { key: "risk_points", permission: "warning.read", async load() {
    const items = await getAll("/api/risk-points");
    return { geojson: riskPointFeatures(items), items };
  } },
  { key: "alarms", permission: "sensing.read", async load() {
    const body = await api.get("/api/sensing/alarms", { params: { status: "active,acknowledged", limit: 1000 } });
    return { geojson: alarmFeatures(body.items), items: body.items };
  } },
  { key: "sensors", permission: "sensing.read", minzoom: 10.5, async load() {
    const items = await getAll("/api/sensing/devices", { pageSize: 5000 });
    return { geojson: sensorFeatures(items), items };
  } },
  { key: "cases", permission: "events.read", async load() {
    const body = await api.get("/api/events/map/cases");
    return { geojson: body, items: body.features.map((f) => f.properties), total: body.total };
  } },
  { key: "shelters", permission: "tasks.read", async load() {
    const list = await api.get("/api/shelters");
    return { geojson: shelterFeatures(list), items: list };
  } },
  // 视频监控: each camera and its view cone (GET /api/video/map draws both, part = camera | cone).
  { key: "cameras", permission: "video.read", minzoom: 10, async load() {
    const body = await api.get("/api/video/map");
    return { geojson: body, items: body.features.filter((f) => f.properties.part === "camera").map((f) => f.properties) };
  } },
];

/** Style layers of each live layer (drawn above the base map), by layer key. */
export function liveStyleLayers() {
  const level = ["match", ["get", "level"], ...Object.entries(LEVEL_COLOURS).flat(), "#8a99ab"];
  return {
    incidents: [
      { id: "incidents-fill", type: "fill", source: "incidents", filter: ["==", ["geometry-type"], "Polygon"],
        paint: { "fill-color": "#e5484d", "fill-opacity": 0.18 } },
      { id: "incidents-line", type: "line", source: "incidents", filter: ["==", ["geometry-type"], "Polygon"],
        paint: { "line-color": "#ff6b6b", "line-width": 2.5, "line-dasharray": [2, 1] } },
      { id: "incidents-marker", type: "circle", source: "incidents", filter: ["has", "marker"],
        paint: { "circle-radius": 9, "circle-color": "#e5484d", "circle-stroke-color": "#ffffff", "circle-stroke-width": 2.5 } },
      { id: "incidents-label", type: "symbol", source: "incidents", filter: ["has", "marker"],
        layout: { "text-field": ["get", "title"], "text-font": ["Noto Sans Regular"], "text-size": 13,
          "text-offset": [0, 1.3], "text-anchor": "top", "text-max-width": 14 },
        paint: { "text-color": "#ffd2d2", "text-halo-color": "#2a0708", "text-halo-width": 1.5 } },
    ],
    risk_points: [
      { id: "risk_points-halo", type: "circle", source: "risk_points", filter: ["in", ["get", "level"], ["literal", ["red", "orange"]]],
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, 10, 14, 18], "circle-color": level, "circle-opacity": 0.28 } },
      { id: "risk_points", type: "circle", source: "risk_points",
        layout: { "circle-sort-key": ["get", "rank"] },
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, ["case", ["==", ["get", "level"], "none"], 3, 5.5], 14, 9],
          "circle-color": level, "circle-stroke-color": "#0b1320", "circle-stroke-width": 1.2 } },
    ],
    alarms: [
      { id: "alarms", type: "circle", source: "alarms",
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, 7, 14, 12], "circle-color": "rgba(0,0,0,0)",
          "circle-stroke-color": ["match", ["get", "severity"], ...Object.entries(LEVEL_COLOURS).flat(), "#ffffff"],
          "circle-stroke-width": 3 } },
    ],
    sensors: [
      { id: "sensors", type: "circle", source: "sensors", minzoom: 10.5,
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 9, 3, 15, 6],
          "circle-color": ["case", ["get", "online"], "#22d3ee", "#0b1320"],
          "circle-stroke-color": ["case", ["get", "online"], "#0b1320", "#94a3b8"], "circle-stroke-width": 1.5 } },
    ],
    cases: [
      { id: "cases-clusters", type: "circle", source: "cases", filter: ["has", "point_count"],
        paint: { "circle-color": "#a855f7", "circle-opacity": 0.75, "circle-stroke-color": "#ffffff", "circle-stroke-width": 1.5,
          "circle-radius": ["step", ["get", "point_count"], 8, 10, 11, 50, 15] } },
      { id: "cases-count", type: "symbol", source: "cases", filter: ["has", "point_count"],
        layout: { "text-field": ["to-string", ["get", "point_count"]], "text-font": ["Noto Sans Regular"], "text-size": 11,
          "text-allow-overlap": true },
        paint: { "text-color": "#ffffff" } },
      { id: "cases", type: "circle", source: "cases", filter: ["!", ["has", "point_count"]],
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, 3.5, 14, 6],
          "circle-color": ["match", ["get", "sla"], "overdue", "#f43f5e", "due_soon", "#f59e0b", "#c084fc"],
          "circle-stroke-color": "#ffffff", "circle-stroke-width": 1 } },
    ],
    cameras: [
      { id: "cameras-cone", type: "fill", source: "cameras", minzoom: 12, filter: ["==", ["get", "part"], "cone"],
        paint: { "fill-color": ["match", ["get", "status"], "online", "#facc15", "#64748b"], "fill-opacity": 0.16 } },
      { id: "cameras-cone-line", type: "line", source: "cameras", minzoom: 12, filter: ["==", ["get", "part"], "cone"],
        paint: { "line-color": ["match", ["get", "status"], "online", "#facc15", "#64748b"], "line-width": 1, "line-opacity": 0.7 } },
      { id: "cameras", type: "circle", source: "cameras", minzoom: 10, filter: ["==", ["get", "part"], "camera"],
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 2.5, 15, 6],
          "circle-color": ["match", ["get", "status"], "online", "#facc15", "#475569"],
          "circle-stroke-color": "#0b1320", "circle-stroke-width": 1.2 } },
    ],
    shelters: [
      { id: "shelters", type: "circle", source: "shelters",
        paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 8, 3, 14, 8], "circle-color": ["case", ["get", "full"], "#f43f5e", "#10b981"],
          "circle-stroke-color": "#ffffff", "circle-stroke-width": ["interpolate", ["linear"], ["zoom"], 8, 1, 14, 2] } },
      { id: "shelters-label", type: "symbol", source: "shelters", minzoom: 12,
        layout: { "text-field": ["concat", ["get", "name"], "\n", ["get", "label"]], "text-font": ["Noto Sans Regular"],
          "text-size": 11, "text-offset": [0, 1.1], "text-anchor": "top" },
        paint: { "text-color": "#bbf7d0", "text-halo-color": "#052e1c", "text-halo-width": 1.2 } },
    ],
  };
}

/** Which live layer a clicked style layer belongs to. */
export const LIVE_CLICK_LAYERS = ["incidents-marker", "incidents-fill", "alarms", "risk_points", "cases", "cases-clusters",
  "sensors", "shelters", "cameras"];
