// Three-level command view (三级指挥): the incident on a map (zone, households coloured by state, shelters),
// live totals at district/township/village level, the task board and the decision timeline, all at the
// user's scope and kept live from the incident's stream.
import * as maplibregl from "/static/vendor/maplibre-gl.mjs";
import { $, api, ensureLogin, fmtTime, follow, loadLanguage, state, t } from "/static/tasks-common.js";

export const STATE_COLOURS = { to_move: "#d7263d", refused: "#7b1fa2", not_home: "#f28c28", moved: "#2e8b57",
  with_relatives: "#1b998b", in_shelter: "#1e5aa8", returned: "#8a8f98" };
const EMPTY = { type: "FeatureCollection", features: [] };
const view = { incident: null, map: null, stream: null, refresh: null, fitted: false };

function makeMap() {
  const map = new maplibregl.Map({
    container: "cmd-map", attributionControl: false, center: [108.4, 31.2], zoom: 9, maxZoom: 19, dragRotate: false,
    style: { version: 8, sources: { zone: { type: "geojson", data: EMPTY }, households: { type: "geojson", data: EMPTY },
      shelters: { type: "geojson", data: EMPTY } }, layers: [
      { id: "bg", type: "background", paint: { "background-color": "#eef1f4" } },
      { id: "zone-fill", type: "fill", source: "zone", paint: { "fill-color": "#d7263d", "fill-opacity": 0.12 } },
      { id: "zone-line", type: "line", source: "zone", paint: { "line-color": "#d7263d", "line-width": 2, "line-dasharray": [2, 1] } },
      { id: "households", type: "circle", source: "households", paint: { "circle-radius": 5, "circle-stroke-width": 1,
        "circle-stroke-color": "#fff", "circle-color": ["match", ["get", "state"],
          ...Object.entries(STATE_COLOURS).flat(), "#444"] } },
      { id: "shelters", type: "circle", source: "shelters", paint: { "circle-radius": 8, "circle-color": "#1e5aa8",
        "circle-stroke-width": 3, "circle-stroke-color": "#fff" } },
    ] },
  });
  window.cityopsCommandMap = map;
  return new Promise((ok) => map.on("load", () => ok(map)));
}

function legend() {
  $("legend").innerHTML = "";
  for (const [key, colour] of Object.entries(STATE_COLOURS)) {
    const span = document.createElement("span");
    span.innerHTML = `<i style="background:${colour}"></i>`;
    span.append(t(`tasks.state.${key}`));
    $("legend").append(span);
  }
}

function row(label, b, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const v of [label, b.households, b.people, b.safe_households, b.remaining_households, b.percent_safe]) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(td);
  }
  return tr;
}

async function refresh() {
  const id = view.incident;
  if (!id) return;
  const [inc, evac, tasks, timeline] = await Promise.all([api(`/api/incidents/${id}`),
    api(`/api/incidents/${id}/evacuations?limit=5000`), api(`/api/tasks?incident_id=${id}`), api(`/api/incidents/${id}/timeline`)]);
  $("incident-status").textContent = t(`tasks.status.${inc.status}`, inc.status) + (inc.drill ? ` · ${t("tasks.drill")}` : "");
  $("incident-status").className = `badge ${inc.status}${inc.drill ? " drill" : ""}`;
  $("incident-level").textContent = `${t("tasks.command.response")} ${inc.response_level_roman}`;
  $("incident-grade").textContent = inc.event_grade_roman ? `${t("tasks.command.grade")} ${inc.event_grade_roman}` : "";
  $("report-link").href = "#";
  $("report-link").onclick = async (ev) => {
    ev.preventDefault();
    const html = await api(`/api/incidents/${id}/report`);
    const w = window.open("", "_blank");
    if (w) { w.document.write(html); w.document.close(); }
  };
  const body = $("totals-body");
  body.innerHTML = "";
  const totals = inc.totals;
  body.append(row(t("level.district"), totals.district, "district"));
  for (const tw of totals.townships) body.append(row(tw.name, tw, "township"));
  for (const v of totals.villages) body.append(row(`· ${v.name}`, v, "village"));
  body.dataset.households = totals.district.households;
  body.dataset.safe = totals.district.safe_households;
  body.dataset.remaining = totals.district.remaining_households;
  $("shelters").innerHTML = "";
  for (const s of totals.shelters) {
    const li = document.createElement("li");
    li.textContent = `${s.name}: ${s.occupancy} / ${s.capacity}`;
    $("shelters").append(li);
  }
  $("board").innerHTML = "";
  for (const task of tasks) {
    const li = document.createElement("li");
    const p = task.progress;
    li.innerHTML = `<div></div><div class="progress"><span style="width:${p.percent}%"></span></div>`;
    li.firstChild.textContent = `${task.title} — ${t(`tasks.taskstatus.${task.status}`, task.status)} ${p.done}/${p.total}` +
      (task.overdue ? ` · ${t("tasks.overdue")}` : "");
    $("board").append(li);
  }
  $("timeline").innerHTML = "";
  for (const e of timeline.slice().reverse()) {
    const li = document.createElement("li");
    li.innerHTML = "<time></time><span></span>";
    li.firstChild.textContent = fmtTime(e.at);
    li.lastChild.textContent = `${e.actor}: ${e.message}`;
    $("timeline").append(li);
  }
  const map = view.map;
  map.getSource("zone").setData(inc.zone ? { type: "Feature", geometry: inc.zone.geometry, properties: {} } : EMPTY);
  map.getSource("households").setData({ type: "FeatureCollection", features: evac.items.map((h) => ({ type: "Feature",
    geometry: { type: "Point", coordinates: [h.lon, h.lat] }, properties: { id: h.id, state: h.state, code: h.household_code } })) });
  map.getSource("shelters").setData({ type: "FeatureCollection", features: (await api("/api/shelters")).map((s) => ({
    type: "Feature", geometry: { type: "Point", coordinates: [s.lon, s.lat] }, properties: { name: s.name } })) });
  if (inc.zone && !view.fitted) {
    const coords = inc.zone.geometry.coordinates.flat(2);
    const xs = coords.map((c) => c[0]), ys = coords.map((c) => c[1]);
    map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], { padding: 40, duration: 0 });
    view.fitted = true;
  }
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

function scheduleRefresh() {
  clearTimeout(view.refresh);
  view.refresh = setTimeout(() => refresh().catch(console.error), 150);
}

async function choose(id) {
  view.incident = Number(id);
  view.fitted = false;
  if (view.stream) view.stream.abort();
  view.stream = new AbortController();
  await refresh();
  follow(view.incident, () => scheduleRefresh(), view.stream.signal);
}

async function main() {
  await loadLanguage(localStorage.getItem("cityops.language") || "zh-CN");
  await ensureLogin();
  $("main-view").hidden = false;
  legend();
  view.map = await makeMap();
  const incidents = await api("/api/incidents");
  const select = $("incident-select");
  for (const inc of incidents) {
    const opt = document.createElement("option");
    opt.value = inc.id;
    opt.textContent = `${inc.drill ? "[" + t("tasks.drill") + "] " : ""}${inc.title}`;
    select.append(opt);
  }
  const wanted = new URLSearchParams(location.search).get("incident");
  if (wanted) select.value = wanted;
  select.onchange = () => choose(select.value);
  $("language").value = state.language;
  $("language").onchange = async () => { await loadLanguage($("language").value); legend(); await refresh(); };
  if (select.value) await choose(select.value);
  document.body.dataset.ready = "1";
}

main().catch((e) => { console.error(e); document.body.dataset.error = String(e); });
