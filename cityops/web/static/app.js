// CityOps map page: login → full-screen map of the district hierarchy → click-to-inspect side panel.
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
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll(".language-select")) el.value = state.language;
  if (state.panelUnit) renderPanel(state.panelUnit);
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
        sources: Object.fromEntries(LEVELS.map((level) => [level,
          { type: "geojson", data: EMPTY, promoteId: "code" }])),
        layers: mapLayers(),
      },
      center: [108.4, 31.2],
      zoom: 8,
      maxZoom: 18,
      attributionControl: false,
      dragRotate: false,
      pitchWithRotate: false,
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
  map.on("load", () => loadUnits(map));
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

async function openPanel(level, code) {
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
