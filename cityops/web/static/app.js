// CityOps map page: login → full-screen map of the district hierarchy → click-to-inspect side panel;
// vector tiles (base map with 3D buildings, catalogue layers to toggle), feature inspection and drawing a
// zone to ask "who is threatened" (受威胁对象).
// Plain ES module, no build step. MapLibre GL is vendored under /static/vendor/ (see docs/web.md);
// nothing is loaded from any other host. No basemap tiles and no text layers (no glyph fonts):
// names are shown in an HTML tooltip and in the side panel.
import * as maplibregl from "/static/vendor/maplibre-gl.mjs";

const LANGUAGES = ["zh-CN", "en"];
const DEFAULT_LANGUAGE = "zh-CN";
const LEVELS = ["district", "township", "village", "grid"]; // coarse → fine, as drawn on the map
const ABOVE_DISTRICT = ["province", "city"];
const VILLAGE_MINZOOM = 10;
const GRID_MINZOOM = 12;
const GRID_DEBOUNCE_MS = 250;
const TOKEN_KEY = "cityops.token";
const USER_KEY = "cityops.user";
const LANG_KEY = "cityops.language";
const EMPTY = { type: "FeatureCollection", features: [] };
const BUILDINGS_3D_MINZOOM = 14;
const BUILDINGS_MINZOOM = 12;
// Colours by JGJ 125 safety grade (A safe … D whole-building danger); unassessed is grey.
const GRADE_COLOURS = ["match", ["coalesce", ["get", "safety_grade"], ""],
  "A", "#5eead4", "B", "#93c5fd", "C", "#fb923c", "D", "#ef4444", "#94a3b8"];
const LAYER_PALETTE = ["#f472b6", "#facc15", "#4ade80", "#c084fc", "#fb7185", "#2dd4bf", "#fde68a", "#a3e635"];

const state = {
  language: DEFAULT_LANGUAGE,
  messages: {},
  token: sessionStorage.getItem(TOKEN_KEY),
  user: null,
  map: null,
  hovered: null, // {level, code}
  selected: null, // {level, code}
  panelUnit: null,
  panelSeq: 0,
  gridBounds: null, // [minx, miny, maxx, maxy] of the last grid load
  gridTimer: null,
  gridAbort: null,
  status: null, // message key shown in the status box
  catalogue: [], // layers from /api/layers
  enabled: new Set(), // keys of catalogue layers shown
  drawing: null, // {points: [[lon, lat], …]} while a zone is being drawn
  threat: null, // {zone, result} of the last "who is threatened" query
  panelKind: "unit", // unit | feature | building | threat
  pitched: false,
};

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------ i18n

function t(key, fallback) {
  return state.messages[key] ?? fallback ?? key;
}

/** A level key (district, township, …) in the current language; unknown levels show their key. */
const levelName = (level) => t(`level.${level}`, level);

async function loadLanguage(language) {
  if (!LANGUAGES.includes(language)) language = DEFAULT_LANGUAGE;
  const response = await fetch(`/api/i18n/${encodeURIComponent(language)}`);
  if (!response.ok) throw new Error(`i18n ${language}: HTTP ${response.status}`);
  state.messages = await response.json();
  state.language = language;
  localStorage.setItem(LANG_KEY, language);
  document.documentElement.lang = language;
  applyTranslations();
}

function applyTranslations() {
  document.title = t("app.title");
  $("panel-title").dataset.i18n = PANEL_TITLES[state.panelKind] || "panel.title";
  $("view-toggle").dataset.i18n = state.pitched ? "tiles.view_2d" : "tiles.view_3d";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll(".language-select")) el.value = state.language;
  if (state.panelUnit) renderPanel(state.panelUnit);
  if (state.panelKind === "threat" && state.threat && state.threat.result) renderThreat(state.threat.result);
  renderLayerList();
  setStatus(state.status);
}

function unitName(item) {
  return state.language === "en" && item.name_en ? item.name_en : item.name;
}

// ------------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", json, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { method, headers, signal };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, t("error.network"));
  }
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.message) || `HTTP ${response.status}`;
    if (response.status === 401 && state.token && !path.startsWith("/api/auth/login")) {
      endSession(t("error.session_expired"));
    }
    throw new ApiError(response.status, message, body);
  }
  return body;
}

// --------------------------------------------------------------------------------- login / logout

function showLogin(error) {
  $("main-view").hidden = true;
  $("login-view").hidden = false;
  showLoginError(error);
  $("login-username").focus();
}

function showLoginError(message) {
  const el = $("login-error");
  el.textContent = message || "";
  el.hidden = !message;
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  if (!username || !password) {
    showLoginError(t("login.required"));
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  button.textContent = t("login.busy");
  try {
    const result = await api("/api/auth/login", { method: "POST", json: { username, password } });
    state.token = result.access_token;
    state.user = result.user;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(state.user));
    $("login-password").value = "";
    showLoginError(null);
    showMain();
  } catch (err) {
    // Known API error codes read in the UI language; anything else shows the API's own message.
    const code = err.body && err.body.error;
    showLoginError((code && state.messages[`error.${code}`]) || err.message || t("login.failed"));
  } finally {
    button.disabled = false;
    button.textContent = t("login.submit");
  }
}

function endSession(message) {
  state.token = null;
  state.user = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  destroyMap();
  showLogin(message);
}

async function onLogout() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch {
    // the token is dropped locally whatever the server says
  }
  endSession(null);
}

function showMain() {
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("user-name").textContent = state.user.display_name || state.user.username;
  initMap();
}

// ------------------------------------------------------------------------------------------- map

function destroyMap() {
  closePanel();
  stopDrawing();
  state.enabled.clear();
  state.catalogue = [];
  state.threat = null;
  state.pitched = false;
  hideTooltip();
  clearTimeout(state.gridTimer);
  if (state.gridAbort) state.gridAbort.abort();
  if (state.map) state.map.remove();
  state.map = null;
  state.gridBounds = null;
  window.cityopsMap = undefined;
  delete document.body.dataset.mapReady;
}

function setStatus(key) {
  state.status = key;
  $("map-status").textContent = key ? t(key) : "";
}

const hoverOr = (on, off) => ["case", ["boolean", ["feature-state", "hover"], false], on, off];
const selectedOr = (on, off) => ["case", ["boolean", ["feature-state", "selected"], false], on, off];

function mapLayers() {
  const covered = (yes, no) => ["case", ["boolean", ["get", "covered"], true], yes, no];
  return [
    { id: "background", type: "background", paint: { "background-color": "#071426" } },
    { id: "district-fill", type: "fill", source: "district",
      paint: { "fill-color": "#0c2c50", "fill-opacity": 0.6 } },
    { id: "township-fill", type: "fill", source: "township",
      paint: { "fill-color": hoverOr("#38bdf8", covered("#1d5c8f", "#123251")),
               "fill-opacity": ["interpolate", ["linear"], ["zoom"],
                 9, hoverOr(0.75, 0.55), 11, hoverOr(0.5, 0.3), 13, hoverOr(0.3, 0.1)] } },
    { id: "village-fill", type: "fill", source: "village", minzoom: VILLAGE_MINZOOM,
      paint: { "fill-color": hoverOr("#7dd3fc", covered("#2a6f9e", "#16324f")),
               "fill-opacity": hoverOr(0.5, 0.15) } },
    { id: "grid-fill", type: "fill", source: "grid", minzoom: GRID_MINZOOM,
      paint: { "fill-color": hoverOr("#fde047", "#a16207"), "fill-opacity": hoverOr(0.45, 0.12) } },
    { id: "grid-line", type: "line", source: "grid", minzoom: GRID_MINZOOM,
      paint: { "line-color": "#facc15", "line-width": 0.7, "line-opacity": 0.8 } },
    { id: "village-line", type: "line", source: "village", minzoom: VILLAGE_MINZOOM,
      paint: { "line-color": "#7dd3fc", "line-width": 1, "line-opacity": 0.85 } },
    { id: "township-line", type: "line", source: "township",
      paint: { "line-color": "#38bdf8", "line-width": 1.4 } },
    { id: "district-line", type: "line", source: "district",
      paint: { "line-color": "#67e8f9", "line-width": 3 } },
    // Buildings from the base map vector tiles: flat from z12, extruded by height (metres) from z14.
    { id: "buildings-flat", type: "fill", source: "basemap", "source-layer": "buildings",
      minzoom: BUILDINGS_MINZOOM, maxzoom: BUILDINGS_3D_MINZOOM,
      paint: { "fill-color": GRADE_COLOURS, "fill-opacity": 0.8 } },
    { id: "buildings-3d", type: "fill-extrusion", source: "basemap", "source-layer": "buildings",
      minzoom: BUILDINGS_3D_MINZOOM,
      paint: { "fill-extrusion-color": GRADE_COLOURS, "fill-extrusion-height": ["get", "height"],
               "fill-extrusion-base": 0, "fill-extrusion-opacity": 0.85 } },
    // "Who is threatened": the zone and the buildings found in it.
    { id: "threat-zone-fill", type: "fill", source: "threat-zone",
      paint: { "fill-color": "#ef4444", "fill-opacity": 0.15 } },
    { id: "threat-zone-line", type: "line", source: "threat-zone",
      paint: { "line-color": "#ef4444", "line-width": 2, "line-dasharray": [2, 1] } },
    { id: "threat-buildings", type: "fill-extrusion", source: "basemap", "source-layer": "buildings",
      minzoom: BUILDINGS_MINZOOM, filter: ["in", ["get", "code"], ["literal", []]],
      paint: { "fill-extrusion-color": "#dc2626", "fill-extrusion-height": ["+", ["get", "height"], 0.5],
               "fill-extrusion-opacity": 0.95 } },
    // The zone being drawn.
    { id: "draw-fill", type: "fill", source: "draw", filter: ["==", ["geometry-type"], "Polygon"],
      paint: { "fill-color": "#fbbf24", "fill-opacity": 0.2 } },
    { id: "draw-line", type: "line", source: "draw", filter: ["!=", ["geometry-type"], "Point"],
      paint: { "line-color": "#fbbf24", "line-width": 2 } },
    { id: "draw-points", type: "circle", source: "draw", filter: ["==", ["geometry-type"], "Point"],
      paint: { "circle-radius": 4, "circle-color": "#fbbf24", "circle-stroke-color": "#000", "circle-stroke-width": 1 } },
    // The selected unit's outline, above every other line (feature-state cannot filter, so opacity).
    ...LEVELS.map((level) => ({
      id: `${level}-selected`, type: "line", source: level,
      minzoom: { village: VILLAGE_MINZOOM, grid: GRID_MINZOOM }[level] ?? 0,
      paint: { "line-color": "#f97316", "line-width": 3, "line-opacity": selectedOr(1, 0) },
    })),
  ];
}

const FILL_LAYERS = LEVELS.map((level) => `${level}-fill`);

function initMap() {
  destroyMap();
  setStatus("map.loading");
  let map;
  try {
    map = new maplibregl.Map({
      container: "map",
      style: {
        version: 8,
        sources: {
          ...Object.fromEntries(LEVELS.map((level) => [level, { type: "geojson", data: EMPTY, promoteId: "code" }])),
          basemap: { type: "vector", url: `${location.origin}/api/tiles/basemap/tilejson.json` },
          "threat-zone": { type: "geojson", data: EMPTY },
          draw: { type: "geojson", data: EMPTY },
        },
        layers: mapLayers(),
      },
      center: [108.4, 31.2],
      zoom: 8,
      maxZoom: 18,
      attributionControl: false,
      dragRotate: false,
      pitchWithRotate: false,
      maxPitch: 70,
      // Tiles and TileJSON need the login token: sent as a header, never in the URL.
      transformRequest: (url) => (state.token && url.startsWith(`${location.origin}/api/`)
        ? { url, headers: { Authorization: `Bearer ${state.token}` } } : { url }),
    });
  } catch (err) {
    console.error(err);
    setStatus("map.webgl_missing");
    return;
  }
  state.map = map;
  window.cityopsMap = map;
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-left");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
  map.touchZoomRotate.disableRotation();
  map.on("load", () => {
    loadUnits(map);
    loadCatalogue(map);
  });
  map.on("dblclick", onDoubleClick);
  map.on("mousemove", onMouseMove);
  map.on("mouseout", clearHover);
  map.on("click", onClick);
  map.on("moveend", scheduleGrids);
}

async function loadUnits(map) {
  try {
    const [district, township, village] = await Promise.all([
      api("/api/map/units?level=district&simplify=0.0002"),
      api("/api/map/units?level=township&simplify=0.0002"),
      api("/api/map/units?level=village&simplify=0.0001"),
    ]);
    if (map !== state.map) return;
    map.getSource("district").setData(district);
    map.getSource("township").setData(township);
    map.getSource("village").setData(village);
    const bounds = await scopeBounds([district, township, village]);
    if (map !== state.map) return;
    if (bounds) map.fitBounds(bounds, { padding: 40, duration: 0 });
    setStatus("map.hint");
    map.once("idle", () => {
      if (map === state.map) document.body.dataset.mapReady = "1";
    });
    map.triggerRepaint();
    scheduleGrids();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    console.error(err);
    if (map === state.map) setStatus("map.load_failed");
  }
}

function extendBounds(bounds, geometry) {
  const visit = (coords) => {
    if (typeof coords[0] === "number") {
      bounds[0] = Math.min(bounds[0], coords[0]);
      bounds[1] = Math.min(bounds[1], coords[1]);
      bounds[2] = Math.max(bounds[2], coords[0]);
      bounds[3] = Math.max(bounds[3], coords[1]);
    } else {
      coords.forEach(visit);
    }
  };
  if (geometry && geometry.coordinates) visit(geometry.coordinates);
  return bounds;
}

const emptyBounds = () => [Infinity, Infinity, -Infinity, -Infinity];
const isBounds = (b) => b && Number.isFinite(b[0]) && b[0] <= b[2] && b[1] <= b[3];

/** The bounds of the user's scope units (their geometries), else of every covered feature loaded. */
async function scopeBounds(collections) {
  const bounds = emptyBounds();
  for (const code of state.user.scope_units || []) {
    try {
      const unit = await api(`/api/units/${encodeURIComponent(code)}?geometry=true`);
      extendBounds(bounds, unit.geometry);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
    }
  }
  if (isBounds(bounds)) return bounds;
  for (const collection of collections) {
    for (const feature of collection.features) {
      if (feature.properties.covered) extendBounds(bounds, feature.geometry);
    }
    if (isBounds(bounds)) return bounds;
  }
  return null;
}

// Grids: only at high zoom, loaded for the current view (with a margin) after the map stops moving.
function scheduleGrids() {
  clearTimeout(state.gridTimer);
  state.gridTimer = setTimeout(loadGrids, GRID_DEBOUNCE_MS);
}

async function loadGrids() {
  const map = state.map;
  if (!map || map.getZoom() < GRID_MINZOOM - 0.5) return;
  const b = map.getBounds();
  const view = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];
  const have = state.gridBounds;
  if (have && have[0] <= view[0] && have[1] <= view[1] && have[2] >= view[2] && have[3] >= view[3]) return;
  const dx = (view[2] - view[0]) * 0.25;
  const dy = (view[3] - view[1]) * 0.25;
  const want = [view[0] - dx, view[1] - dy, view[2] + dx, view[3] + dy].map((v) => +v.toFixed(6));
  if (state.gridAbort) state.gridAbort.abort();
  const abort = new AbortController();
  state.gridAbort = abort;
  try {
    const grids = await api(`/api/map/units?level=grid&simplify=0.00002&bbox=${want.join(",")}`,
      { signal: abort.signal });
    if (map !== state.map || abort.signal.aborted) return;
    map.getSource("grid").setData(grids); // replaces the previous load; kept until the next one
    state.gridBounds = want;
    if (state.selected && state.selected.level === "grid") setSelected(state.selected);
  } catch (err) {
    if (err.name !== "AbortError") console.error(err);
  }
}

/** The finest unit rendered under a pixel: grid before village before township before district. */
function unitAt(point) {
  const map = state.map;
  const layers = FILL_LAYERS.filter((id) => map.getLayer(id));
  const features = map.queryRenderedFeatures(point, { layers });
  let best = null;
  for (const f of features) {
    const rank = LEVELS.indexOf(f.source);
    if (!best || rank > LEVELS.indexOf(best.source)) best = f;
  }
  return best;
}

function setFeatureState(target, key, value) {
  if (!target || !state.map) return;
  try {
    state.map.setFeatureState({ source: target.level, id: target.code }, { [key]: value });
  } catch {
    // the feature may no longer be in its source (grids are reloaded by view)
  }
}

function onMouseMove(event) {
  if (state.drawing) {
    state.map.getCanvas().style.cursor = "crosshair";
    hideTooltip();
    return;
  }
  const feature = unitAt(event.point);
  const target = feature ? { level: feature.source, code: feature.properties.code } : null;
  if (!target || !state.hovered || target.code !== state.hovered.code) {
    setFeatureState(state.hovered, "hover", false);
    setFeatureState(target, "hover", true);
    state.hovered = target;
  }
  state.map.getCanvas().style.cursor = target ? "pointer" : "";
  if (!feature) {
    hideTooltip();
    return;
  }
  const tip = $("tooltip");
  tip.replaceChildren(text("span", unitName(feature.properties)),
    text("span", levelName(feature.properties.level), "tip-level"));
  tip.hidden = false;
  const rect = state.map.getContainer().getBoundingClientRect();
  tip.style.left = `${rect.left + event.point.x + 14}px`;
  tip.style.top = `${rect.top + event.point.y + 14}px`;
}

function clearHover() {
  setFeatureState(state.hovered, "hover", false);
  state.hovered = null;
  hideTooltip();
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

function setSelected(target) {
  setFeatureState(state.selected, "selected", false);
  state.selected = target;
  setFeatureState(target, "selected", true);
}

function onClick(event) {
  if (state.drawing) {
    addVertex(event.lngLat);
    return;
  }
  const hit = featureAt(event.point);
  if (hit) {
    openFeaturePanel(hit);
    return;
  }
  const feature = unitAt(event.point);
  if (!feature) {
    closePanel();
    return;
  }
  openPanel(feature.source, feature.properties.code);
}

// ----------------------------------------------------------------------------------- side panel

function text(tag, content, className) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.textContent = content ?? "";
  return el;
}

const PANEL_TITLES = { unit: "panel.title", feature: "tiles.feature_title", building: "tiles.building_title",
  threat: "tiles.threat_title" };

function setPanelKind(kind) {
  state.panelKind = kind;
  $("panel-title").dataset.i18n = PANEL_TITLES[kind];
  $("panel-title").textContent = t(PANEL_TITLES[kind]);
}

async function openPanel(level, code) {
  closePanel();
  setPanelKind("unit");
  setSelected({ level, code });
  const seq = ++state.panelSeq;
  state.panelUnit = null;
  $("panel").hidden = false;
  $("panel-body").replaceChildren(text("p", t("panel.loading")));
  try {
    const unit = await api(`/api/units/${encodeURIComponent(code)}`);
    if (seq !== state.panelSeq) return;
    state.panelUnit = unit;
    renderPanel(unit);
  } catch (err) {
    if (seq !== state.panelSeq) return;
    const message = err.status === 403 ? t("panel.out_of_scope") : err.message;
    $("panel-body").replaceChildren(text("p", message, "error"));
  }
}

function closePanel() {
  if (state.panelKind === "threat") clearThreat();
  state.panelSeq++;
  state.panelUnit = null;
  setSelected(null);
  $("panel").hidden = true;
  $("panel-body").replaceChildren();
}

function renderPanel(unit) {
  const body = $("panel-body");
  const name = text("div", unitName(unit), "unit-name");
  name.dataset.testid = "unit-name";

  const dl = document.createElement("dl");
  const row = (labelKey, value, testid) => {
    const dd = value instanceof Node ? value : text("dd", value);
    if (!(value instanceof Node) && testid) dd.dataset.testid = testid;
    dl.append(text("dt", t(labelKey)), dd);
    return dd;
  };
  row("panel.code", unit.code, "unit-code");
  row("panel.level", levelName(unit.level), "unit-level");
  if (unit.area_m2 != null) {
    const km2 = unit.area_m2 / 1e6;
    row("panel.area", `${km2.toLocaleString(state.language, { maximumFractionDigits: km2 < 10 ? 2 : 1 })} ${t("panel.area_unit")}`,
      "unit-area");
  }
  const chain = document.createElement("dd");
  chain.className = "chain";
  chain.dataset.testid = "unit-chain";
  // district › township › village › grid (levels above the district, if any, are left out)
  const links = (unit.chain || []).filter((item) => !ABOVE_DISTRICT.includes(item.level));
  links.forEach((item, i) => {
    if (i) chain.append(text("span", "›", "sep"));
    const part = text("span", item.name);
    part.title = `${levelName(item.level)} ${item.code}`;
    chain.append(part);
  });
  row("panel.chain", chain);
  if (unit.level !== "grid" && unit.children != null) row("panel.children", String(unit.children), "unit-children");

  const parts = [name, dl];
  if (unit.level === "grid") {
    parts.push(text("h3", t("panel.responsible")));
    const people = unit.responsible || [];
    if (people.length) {
      const table = document.createElement("table");
      table.dataset.testid = "unit-responsible";
      const head = document.createElement("tr");
      head.append(text("th", t("panel.person_name")), text("th", t("panel.person_post")),
        text("th", t("panel.person_phone")));
      table.append(head);
      for (const person of people) {
        const tr = document.createElement("tr");
        tr.append(text("td", person.name), text("td", t(`post.${person.post}`, person.post)),
          text("td", person.phone));
        table.append(tr);
      }
      parts.push(table);
    } else {
      parts.push(text("p", t("panel.no_responsible")));
    }
  }
  body.replaceChildren(...parts);
}

// ---------------------------------------------------------------------------- catalogue layers

const layerTitle = (layer) => (state.language === "en" && layer.title_en ? layer.title_en : layer.title_zh);

async function loadCatalogue(map) {
  try {
    const layers = await api("/api/layers");
    if (map !== state.map) return;
    state.catalogue = layers;
    renderLayerList();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) console.error(err);
  }
}

function renderLayerList() {
  const list = $("layers-list");
  if (!list) return;
  const parts = [text("h3", t("tiles.layers_title"))];
  if (!state.catalogue.length) parts.push(text("p", t("tiles.no_layers"), "muted"));
  state.catalogue.forEach((layer) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.enabled.has(layer.key);
    box.dataset.layer = layer.key;
    box.dataset.testid = `layer-${layer.key}`;
    box.addEventListener("change", () => toggleLayer(layer, box.checked));
    const swatch = text("span", "", "swatch");
    swatch.style.background = layerColour(layer.key);
    label.append(box, swatch, text("span", layerTitle(layer)), text("small", ` ${layer.feature_count ?? ""}`, "muted"));
    label.title = `${layer.key} · ${layer.category} · ${layer.geometry_type}`;
    parts.push(label);
  });
  list.replaceChildren(...parts);
}

function layerColour(key) {
  const i = state.catalogue.findIndex((l) => l.key === key);
  return LAYER_PALETTE[(i < 0 ? 0 : i) % LAYER_PALETTE.length];
}

/** Style layers of one catalogue layer's tile set, by its geometry type ("GEOMETRY" gets all three). */
function catalogueStyleLayers(layer) {
  const source = `layer:${layer.key}`;
  const colour = layerColour(layer.key);
  const base = { source, "source-layer": layer.key };
  const type = (layer.geometry_type || "GEOMETRY").toUpperCase();
  const out = [];
  if (type.includes("POLYGON") || type === "GEOMETRY") {
    out.push({ ...base, id: `${source}:fill`, type: "fill", filter: ["==", ["geometry-type"], "Polygon"],
               paint: { "fill-color": colour, "fill-opacity": 0.35 } });
    out.push({ ...base, id: `${source}:outline`, type: "line", filter: ["==", ["geometry-type"], "Polygon"],
               paint: { "line-color": colour, "line-width": 1.2 } });
  }
  if (type.includes("LINE") || type === "GEOMETRY") {
    out.push({ ...base, id: `${source}:line`, type: "line", filter: ["==", ["geometry-type"], "LineString"],
               paint: { "line-color": colour, "line-width": 2 } });
  }
  if (type.includes("POINT") || type === "GEOMETRY") {
    out.push({ ...base, id: `${source}:circle`, type: "circle", filter: ["==", ["geometry-type"], "Point"],
               paint: { "circle-radius": 5, "circle-color": colour, "circle-stroke-color": "#0b1220",
                        "circle-stroke-width": 1 } });
  }
  return out;
}

function toggleLayer(layer, on) {
  const map = state.map;
  if (!map) return;
  const source = `layer:${layer.key}`;
  if (on) {
    state.enabled.add(layer.key);
    if (!map.getSource(source)) {
      map.addSource(source, { type: "vector", url: `${location.origin}/api/tiles/${encodeURIComponent(layer.key)}/tilejson.json` });
    }
    for (const spec of catalogueStyleLayers(layer)) {
      if (!map.getLayer(spec.id)) map.addLayer(spec, "threat-zone-fill");
    }
  } else {
    state.enabled.delete(layer.key);
    for (const spec of catalogueStyleLayers(layer)) if (map.getLayer(spec.id)) map.removeLayer(spec.id);
  }
}

function setVisible(ids, visible) {
  for (const id of ids) {
    if (state.map && state.map.getLayer(id)) state.map.setLayoutProperty(id, "visibility", visible ? "visible" : "none");
  }
}

function toggleView() {
  state.pitched = !state.pitched;
  const map = state.map;
  if (map) map.easeTo({ pitch: state.pitched ? 55 : 0, zoom: state.pitched ? Math.max(map.getZoom(), BUILDINGS_3D_MINZOOM + 1) : map.getZoom(), duration: 600 });
  $("view-toggle").dataset.i18n = state.pitched ? "tiles.view_2d" : "tiles.view_3d";
  $("view-toggle").textContent = t($("view-toggle").dataset.i18n);
}

// ---------------------------------------------------------------------------- feature inspection

const catalogueLayerIds = () => [...state.enabled].flatMap((key) => {
  const layer = state.catalogue.find((l) => l.key === key);
  return layer ? catalogueStyleLayers(layer).map((s) => s.id) : [];
}).filter((id) => state.map.getLayer(id));

/** The top catalogue feature or (from z14) building under a pixel; units are handled by unitAt. */
function featureAt(point) {
  const map = state.map;
  const box = [[point.x - 3, point.y - 3], [point.x + 3, point.y + 3]];
  const layers = catalogueLayerIds();
  if (map.getZoom() >= BUILDINGS_3D_MINZOOM && map.getLayoutProperty("buildings-3d", "visibility") !== "none") {
    layers.push("buildings-3d");
  }
  if (!layers.length) return null;
  const hits = map.queryRenderedFeatures(box, { layers });
  return hits.find((f) => f.layer.id !== "buildings-3d") || hits[0] || null;
}

function propertyTable(props) {
  const dl = document.createElement("dl");
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(text("dt", key), text("dd", String(value)));
  }
  return dl;
}

async function openFeaturePanel(feature) {
  closePanel();
  const seq = ++state.panelSeq;
  $("panel").hidden = false;
  if (feature.layer.id === "buildings-3d") {
    setPanelKind("building");
    const p = feature.properties;
    const body = [text("div", p.code, "unit-name")];
    body[0].dataset.testid = "feature-code";
    const dl = document.createElement("dl");
    dl.dataset.testid = "building-details";
    const row = (key, value) => { if (value !== undefined && value !== null) dl.append(text("dt", t(key)), text("dd", String(value))); };
    row("tiles.grade", p.safety_grade || t("tiles.grade_none"));
    row("tiles.floors", p.floors);
    row("tiles.height", p.height);
    row("tiles.use", p.use);
    row("tiles.structure", p.structure);
    row("tiles.year_built", p.year_built);
    row("panel.code", p.grid_code);
    body.push(dl);
    $("panel-body").replaceChildren(...body);
    try {
      const detail = await api(`/api/buildings/${encodeURIComponent(p.code)}`);
      if (seq !== state.panelSeq) return;
      row("tiles.address", detail.address);
      row("tiles.households", (detail.households || []).length);
    } catch (err) {
      if (seq === state.panelSeq && err.status !== 401) dl.append(text("dd", err.message, "error"));
    }
    return;
  }
  setPanelKind("feature");
  const key = feature.layer.id.split(":")[1];
  const layer = state.catalogue.find((l) => l.key === key);
  const title = text("div", layer ? layerTitle(layer) : key, "unit-name");
  title.dataset.testid = "feature-layer";
  const props = propertyTable(feature.properties);
  props.dataset.testid = "feature-properties";
  $("panel-body").replaceChildren(title, props);
}

// ---------------------------------------------------------------------------- who is threatened

function startDrawing() {
  if (!state.map) return;
  closePanel();
  state.drawing = { points: [] };
  state.map.doubleClickZoom.disable();
  $("draw-bar").hidden = false;
  $("draw-error").textContent = "";
  renderDrawing();
}

function stopDrawing() {
  state.drawing = null;
  if (state.map) {
    state.map.doubleClickZoom.enable();
    state.map.getCanvas().style.cursor = "";
    const source = state.map.getSource("draw");
    if (source) source.setData(EMPTY);
  }
  $("draw-bar").hidden = true;
}

function addVertex(lngLat) {
  const last = state.drawing.points[state.drawing.points.length - 1];
  const point = [+lngLat.lng.toFixed(7), +lngLat.lat.toFixed(7)];
  if (last && last[0] === point[0] && last[1] === point[1]) return; // the second click of a double-click
  state.drawing.points.push(point);
  renderDrawing();
}

function renderDrawing() {
  const pts = state.drawing ? state.drawing.points : [];
  const features = pts.map((p) => ({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: p } }));
  if (pts.length >= 3) {
    features.push({ type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [[...pts, pts[0]]] } });
  } else if (pts.length === 2) {
    features.push({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates: pts } });
  }
  state.map.getSource("draw").setData({ type: "FeatureCollection", features });
}

function onDoubleClick(event) {
  if (!state.drawing) return;
  event.preventDefault();
  finishDrawing();
}

async function finishDrawing() {
  if (!state.drawing) return;
  const pts = state.drawing.points;
  if (pts.length < 3) {
    $("draw-error").textContent = t("tiles.draw_too_few");
    return;
  }
  const zone = { type: "Polygon", coordinates: [[...pts, pts[0]]] };
  stopDrawing();
  await runThreatened(zone);
}

async function runThreatened(zone) {
  closePanel();
  setPanelKind("threat");
  state.threat = { zone, result: null };
  window.cityopsThreat = state.threat;
  state.map.getSource("threat-zone").setData({ type: "Feature", properties: {}, geometry: zone });
  $("panel").hidden = false;
  $("panel-body").replaceChildren(text("p", t("tiles.threat_busy")));
  const seq = ++state.panelSeq;
  try {
    const result = await api("/api/threatened", { method: "POST", json: { geometry: zone } });
    if (seq !== state.panelSeq) return;
    state.threat.result = result;
    const codes = result.building_codes || (result.buildings || []).map((b) => b.code);
    state.map.setFilter("threat-buildings", ["in", ["get", "code"], ["literal", codes]]);
    renderThreat(result);
  } catch (err) {
    if (seq !== state.panelSeq) return;
    const message = text("p", err.message, "error");
    message.dataset.testid = "threat-error";
    $("panel-body").replaceChildren(message);
  }
}

function clearThreat() {
  state.threat = null;
  window.cityopsThreat = undefined;
  if (!state.map) return;
  if (state.map.getSource("threat-zone")) state.map.getSource("threat-zone").setData(EMPTY);
  if (state.map.getLayer("threat-buildings")) state.map.setFilter("threat-buildings", ["in", ["get", "code"], ["literal", []]]);
}

function table(headers, rows, testid) {
  const el = document.createElement("table");
  if (testid) el.dataset.testid = testid;
  const head = document.createElement("tr");
  head.append(...headers.map((h) => text("th", h)));
  el.append(head);
  for (const cells of rows) {
    const tr = document.createElement("tr");
    tr.append(...cells.map((c) => (c instanceof Node ? c : text("td", c ?? ""))));
    el.append(tr);
  }
  return el;
}

function renderThreat(result) {
  const n = (v) => Number(v || 0).toLocaleString(state.language);
  const totals = result.totals;
  const parts = [];
  const area = result.zone_area_m2 / 1e6;
  const summary = document.createElement("dl");
  summary.append(text("dt", t("tiles.threat_area")),
    text("dd", `${area.toLocaleString(state.language, { maximumFractionDigits: 3 })} ${t("panel.area_unit")}`));
  parts.push(summary);
  const tot = table([t("tiles.threat_buildings"), t("tiles.threat_households"), t("tiles.threat_residents"),
    t("tiles.threat_vulnerable")], [[n(totals.buildings), n(totals.households), n(totals.residents), n(totals.vulnerable)]],
  "threat-totals");
  parts.push(tot);
  if (!totals.buildings) parts.push(text("p", t("tiles.threat_none"), "muted"));
  if (result.outside_scope && result.outside_scope.buildings) {
    parts.push(text("p", t("tiles.threat_outside").replace("{n}", n(result.outside_scope.buildings)), "muted"));
  }
  if (result.by_grid.length) {
    parts.push(text("h3", t("tiles.threat_by_grid")));
    parts.push(table([t("tiles.threat_grid"), t("tiles.threat_buildings"), t("tiles.threat_households"),
      t("tiles.threat_residents"), t("tiles.threat_vulnerable"), t("tiles.threat_workers")],
    result.by_grid.map((g) => [g.name || g.code, n(g.buildings), n(g.households), n(g.residents), n(g.vulnerable),
      [...g.grid_workers, ...g.village_cadres].map((p) => `${p.name} ${p.phone || ""}`.trim()).join("、")]),
    "threat-by-grid"));
  }
  if (result.truncated) parts.push(text("p", t("tiles.threat_truncated"), "muted"));
  const clear = text("button", t("tiles.threat_clear"));
  clear.type = "button";
  clear.addEventListener("click", closePanel);
  parts.push(clear);
  $("panel-body").replaceChildren(...parts);
}

// ------------------------------------------------------------------------------------------ boot

async function onLanguageChange(event) {
  try {
    await loadLanguage(event.target.value);
  } catch (err) {
    console.error(err);
  }
}

async function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("panel-close").addEventListener("click", closePanel);
  $("layers-toggle").addEventListener("click", () => { $("layers-panel").hidden = !$("layers-panel").hidden; });
  $("view-toggle").addEventListener("click", toggleView);
  $("draw-start").addEventListener("click", startDrawing);
  $("draw-finish").addEventListener("click", finishDrawing);
  $("draw-cancel").addEventListener("click", stopDrawing);
  $("toggle-buildings").addEventListener("change", (e) => setVisible(["buildings-flat", "buildings-3d"], e.target.checked));
  $("toggle-grids").addEventListener("change", (e) => setVisible(["grid-fill", "grid-line", "grid-selected"], e.target.checked));
  for (const el of document.querySelectorAll(".language-select")) el.addEventListener("change", onLanguageChange);
  try {
    await loadLanguage(localStorage.getItem(LANG_KEY) || DEFAULT_LANGUAGE);
  } catch (err) {
    console.error(err);
  }
  if (state.token) {
    try {
      state.user = await api("/api/auth/me");
      sessionStorage.setItem(USER_KEY, JSON.stringify(state.user));
      showMain();
      return;
    } catch (err) {
      if (err.status !== 401) {
        endSession(err.message);
        return;
      }
      return; // endSession already showed the login form
    }
  }
  showLogin(null);
}

boot();
