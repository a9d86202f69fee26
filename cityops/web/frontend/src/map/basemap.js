// Creating a map of the app: MapLibre with its worker from this build, the offline base map style, the controls,
// and labels that follow the UI language.
import * as maplibregl from "maplibre-gl";
import workerUrl from "maplibre-gl/dist/maplibre-gl-worker.mjs?url";
import "maplibre-gl/dist/maplibre-gl.css";
import { authHeaders } from "../api/client.js";
import { drawSkyOnlyWhenItShows, lowerResolutionWhileMoving, rasterBaseMap, sampleRasterOnce, skipIdleClippingMasks,
  withOpaqueCanvas } from "./frames.js";
import { trackLoad } from "./ready.js";
import { RASTER_PARTS, RASTER_SOURCE, baseStyle, mapOptions, nameField, rasterPartsOf, rasterStyleOf, rasterTileUrl }
  from "./style.js";

// The bundler renames MapLibre's module, so it cannot find its worker beside itself: tell it where it is.
maplibregl.setWorkerUrl(new URL(workerUrl, location.href).href);

export { maplibregl };
export { whenLoaded } from "./ready.js";

/** Tiles need the login token: sent as a header on every request to our own /api/, never in a URL. */
function transformRequest(url) {
  if (url.startsWith(`${location.origin}/api/`)) return { url, headers: authHeaders() };
  return { url };
}

const LABEL_LAYERS = ["place-labels", "river-labels", "road-labels", "peak-labels"];

/** A map in `container` with the base map; `options` go to baseStyle (units, buildings, lang) and to MapLibre. */
export function createMap(container, { lang = "zh-CN", units = true, buildings = true, bounds = null, ...extra } = {}) {
  // WebGL in software: the static base map from the server's raster tiles (frames.js, rasterBaseMap).
  const raster = rasterBaseMap();
  // An opaque canvas: the background layer covers it, and the browser need not blend it over the page (frames.js).
  const map = trackLoad(withOpaqueCanvas(() => new maplibregl.Map(mapOptions({
    container,
    style: baseStyle({ lang, units, buildings, raster }),
    transformRequest,
    ...(bounds ? { bounds, fitBoundsOptions: { padding: 30 } } : { center: [108.4, 31.2], zoom: 8 }),
    ...extra,
  }))));
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-right");
  map.touchZoomRotate.disableRotation();
  drawSkyOnlyWhenItShows(map);
  // No stencil masks for layers that draw nothing, one texture sample a pixel of a raster tile (frames.js; the
  // controllers for the browser tests).
  map.cityopsFrames = { clippingMasks: skipIdleClippingMasks(map), rasterSample: sampleRasterOnce(map) };
  // WebGL in software: the moving map at a lower resolution, the map at rest at full resolution (frames.js).
  const resolution = lowerResolutionWhileMoving(map);
  if (resolution) map.getContainer().dataset.movingResolution = String(Math.round(100 * resolution.movingScale()) / 100);
  if (raster) map.getContainer().dataset.rasterBase = rasterStyleOf(units);
  return map;
}

/**
 * Follow the layer list's switches on the raster base map (when the map has one): the parts whose every layer is
 * hidden are left out of the server's tiles.
 */
export function syncRasterParts(map) {
  const source = map.getSource(RASTER_SOURCE);
  if (!source) return;
  const style = map.getContainer().dataset.rasterBase || "base";
  const all = rasterPartsOf(style === "base");
  const shown = all.filter((part) => RASTER_PARTS[part].some((id) => map.getLayer(id)
    && map.getLayoutProperty(id, "visibility") !== "none"));
  const url = rasterTileUrl(style, shown.length === all.length ? null : shown);
  if (source.tiles && source.tiles[0] === url) return;
  source.setTiles([url]);
}

/** Switch the labels of the base map to another language. */
export function setMapLanguage(map, lang) {
  for (const id of LABEL_LAYERS) {
    if (!map.getLayer(id)) continue;
    if (id === "peak-labels") {
      map.setLayoutProperty(id, "text-field", ["format", nameField(lang), {}, "\n", {},
        ["to-string", ["get", "elevation"]], { "font-scale": 0.8 }]);
    } else {
      map.setLayoutProperty(id, "text-field", nameField(lang));
    }
  }
}
