// The offline base map of the district (一张图底图), drawn from the one vector tile set the server makes of its own
// data (/api/tiles/basemap): relief (elevation bands and hill shading) and contours, water, roads, place names,
// unit boundaries, buildings in 3D. No tile, glyph or sprite server on the internet: labels are drawn in the
// browser (the style has no `glyphs` URL, MapLibre ≥ 5.11 renders text locally), Latin letters and digits from the
// Noto Sans file this build ships (`font-faces`), Chinese characters from the system's CJK font
// (`localIdeographFontFamily`; every Chinese desktop and phone has one, and shipping a CJK font would cost the
// page megabytes).
import latinFontUrl from "@fontsource/noto-sans/files/noto-sans-latin-400-normal.woff2?url";

export const LABEL_FONT = "Noto Sans Regular";
export const CJK_FONTS = "'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', 'Microsoft YaHei', "
  + "'WenQuanYi Micro Hei', 'Hiragino Sans GB', sans-serif";
export const BUILDINGS_MINZOOM = 12;
export const BUILDINGS_3D_MINZOOM = 14;

/** JGJ 125 safety grade colours (A safe … D whole-building danger); unassessed is grey. */
export const GRADE_COLOURS = ["match", ["coalesce", ["get", "safety_grade"], ""],
  "A", "#7fc8b8", "B", "#9bb8e0", "C", "#f0a05a", "D", "#e5484d", "#a8b3c2"];

const FONT = [LABEL_FONT];
const hover = (on, off) => ["case", ["boolean", ["feature-state", "hover"], false], on, off];
const selected = (on, off) => ["case", ["boolean", ["feature-state", "selected"], false], on, off];
// Names in the UI language: English where the data has it, Chinese otherwise.
export const nameField = (lang) => (lang === "en" ? ["coalesce", ["get", "name_en"], ["get", "name"]] : ["get", "name"]);

export function tileUrl(tileset) {
  return `${location.origin}/api/tiles/${tileset}/{z}/{x}/{y}.mvt`;
}

/**
 * The parts of the static base map the server's raster tiles draw (cityops/tiles/raster.py `PARTS`) and the layers
 * of this style each one stands for; the server mirrors those layers' colours, widths and zoom rules.
 */
export const RASTER_PARTS = {
  relief: ["relief", "hillshade"], contours: ["contours"], water: ["lakes", "rivers"], roads: ["roads-casing", "roads"],
  units: ["township-dim", "village-line", "township-line", "district-line"], grids: ["grid-line"],
};
export const RASTER_SOURCE = "basemap-raster";

/** The raster style of a map with or without unit boundaries, and its parts. */
export const rasterStyleOf = (units) => (units ? "base" : "terrain");
export const rasterPartsOf = (units) => Object.keys(RASTER_PARTS).filter((p) => units || (p !== "units" && p !== "grids"));

/** The raster tiles' URL template; `parts` (a subset of the style's) when some are switched off. */
export function rasterTileUrl(style, parts = null) {
  const query = parts ? `?parts=${parts.join(",")}` : "";
  return `${location.origin}/api/tiles/raster/${style}/{z}/{x}/{y}.png${query}`;
}

/** The style's font files: the Latin range from the build, so digits in "6组" and English names render offline. */
export function fontFaces() {
  return { [LABEL_FONT]: [{ url: new URL(latinFontUrl, location.href).href, "unicode-range": ["U+0000-024F", "U+2000-206F"] }] };
}

/**
 * The base map style. `options.units` toggles the unit boundaries (the command view draws only its zone),
 * `options.lang` chooses the label language, `options.bounds` limits tile requests to the district.
 */
export function baseStyle({ lang = "zh-CN", units = true, buildings = true, bounds = null, raster = false } = {}) {
  const src = { source: "basemap" };
  const name = nameField(lang);
  const layers = [
    { id: "background", type: "background", paint: { "background-color": "#0d1d30" } },
    // Relief: elevation bands (hypsometric tint), lighter with height, then the hill shading over them.
    { id: "relief", type: "fill", ...src, "source-layer": "relief", filter: ["==", ["get", "kind"], "band"],
      paint: { "fill-color": ["interpolate", ["linear"], ["to-number", ["get", "elevation"], 0],
        0, "#10273a", 400, "#15303f", 800, "#1b3a44", 1200, "#244348", 1600, "#2f4c4b", 2200, "#3d5551"],
      "fill-antialias": false } },
    // The shaded and the lit slopes in one layer (one pass over the view instead of two: on WebGL in software each
    // layer is a draw per tile and a pass over the pixels it covers).
    { id: "hillshade", type: "fill", ...src, "source-layer": "relief", filter: ["in", ["get", "kind"], ["literal", ["shade", "light"]]],
      paint: { "fill-color": ["match", ["get", "kind"], "shade", "#02080f", "#9fc4d6"],
        "fill-opacity": ["interpolate", ["linear"], ["zoom"], 7, ["match", ["get", "kind"], "shade", 0.35, 0.10],
          13, ["match", ["get", "kind"], "shade", 0.22, 0.06]],
        "fill-antialias": false } },
    { id: "contours", type: "line", ...src, "source-layer": "contours", minzoom: 10,
      paint: { "line-color": "#5d7f86", "line-opacity": ["case", ["get", "index"], 0.55, 0.28],
        "line-width": ["case", ["get", "index"], 0.9, 0.5] } },
    // Water.
    { id: "lakes", type: "fill", ...src, "source-layer": "lakes", paint: { "fill-color": "#1f5d8c" } },
    { id: "rivers", type: "line", ...src, "source-layer": "rivers",
      filter: [">=", ["to-number", ["get", "order"], 1], ["step", ["zoom"], 3, 9, 2, 11, 1]],
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": "#2b78b4", "line-width": ["interpolate", ["exponential", 1.6], ["zoom"],
        8, ["*", 0.4, ["to-number", ["get", "order"], 1]], 14, ["*", 2.2, ["to-number", ["get", "order"], 1]]] } },
    // Roads: a dark casing under a lighter line, by class.
    { id: "roads-casing", type: "line", ...src, "source-layer": "roads", minzoom: 11,
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": "#07111d", "line-width": ["interpolate", ["linear"], ["zoom"], 11, 2.5, 16, 9] } },
    { id: "roads", type: "line", ...src, "source-layer": "roads",
      filter: ["any", ["in", ["get", "class"], ["literal", ["national", "provincial"]]], [">=", ["zoom"], 10]],
      layout: { "line-cap": "round", "line-join": "round" },
      paint: {
        "line-color": ["match", ["get", "class"], "national", "#e0a84a", "provincial", "#d3b36c", "county", "#b9b9a0",
          "#8d99a6"],
        "line-width": ["interpolate", ["linear"], ["zoom"], 8, ["match", ["get", "class"], "national", 1.6, "provincial", 1.2, 0.6],
          16, ["match", ["get", "class"], "national", 7, "provincial", 6, 4]],
      } },
  ];
  if (units) {
    // The highlight of the unit under the pointer: drawn only while there is one (the page sets the layer opacity
    // to 1 then; MapLibre skips a layer at 0, which a fill of invisible pixels it would not — on a software
    // renderer each full-screen layer costs a frame's worth of pixels). The fills also pick the unit under the
    // pointer (queryRenderedFeatures ignores the layer opacity).
    const highlight = { "fill-antialias": false, "fill-layer-opacity": 0, "fill-layer-opacity-transition": { duration: 0 } };
    layers.push(
      // Units outside the user's scope are dimmed: only those are drawn.
      // (No anti-aliased outline: the township line covers its edge.)
      { id: "township-dim", type: "fill", ...src, "source-layer": "township", filter: ["==", ["get", "covered"], false],
        paint: { "fill-color": "#000000", "fill-opacity": 0.35, "fill-antialias": false } },
      { id: "township-fill", type: "fill", ...src, "source-layer": "township",
        paint: { "fill-color": "#38bdf8", "fill-opacity": hover(0.22, 0.0), ...highlight } },
      { id: "village-fill", type: "fill", ...src, "source-layer": "village", minzoom: 10,
        paint: { "fill-color": "#7dd3fc", "fill-opacity": hover(0.18, 0.0), ...highlight } },
      { id: "grid-fill", type: "fill", ...src, "source-layer": "grid", minzoom: 12,
        paint: { "fill-color": "#fde047", "fill-opacity": hover(0.2, 0.0), ...highlight } },
      // Village and grid boundaries solid and thin (a dash pattern is a texture lookup per pixel of the line).
      { id: "grid-line", type: "line", ...src, "source-layer": "grid", minzoom: 12,
        paint: { "line-color": "#e2c044", "line-width": 0.6, "line-opacity": 0.5 } },
      { id: "village-line", type: "line", ...src, "source-layer": "village", minzoom: 10,
        paint: { "line-color": "#7dd3fc", "line-width": 0.8, "line-opacity": 0.5 } },
      { id: "township-line", type: "line", ...src, "source-layer": "township",
        paint: { "line-color": "#4cc3f0", "line-width": ["interpolate", ["linear"], ["zoom"], 8, 1, 14, 2.2], "line-opacity": 0.85 } },
      { id: "district-line", type: "line", ...src, "source-layer": "district",
        paint: { "line-color": "#67e8f9", "line-width": ["interpolate", ["linear"], ["zoom"], 8, 2.5, 14, 4] } },
    );
  }
  if (buildings) {
    layers.push(
      { id: "buildings-flat", type: "fill", ...src, "source-layer": "buildings", minzoom: BUILDINGS_MINZOOM,
        maxzoom: BUILDINGS_3D_MINZOOM, paint: { "fill-color": GRADE_COLOURS, "fill-opacity": 0.85 } },
      { id: "buildings-3d", type: "fill-extrusion", ...src, "source-layer": "buildings", minzoom: BUILDINGS_3D_MINZOOM,
        paint: { "fill-extrusion-color": GRADE_COLOURS, "fill-extrusion-height": ["to-number", ["get", "height"], 3],
          "fill-extrusion-base": 0, "fill-extrusion-opacity": 0.9 } },
    );
  }
  if (units) {
    layers.push(...["district", "township", "village", "grid"].map((level) => ({
      id: `${level}-selected`, type: "line", ...src, "source-layer": level,
      // Like the highlight fills: drawn only while a unit of this level is selected.
      paint: { "line-color": "#f97316", "line-width": 3, "line-opacity": selected(1, 0), "line-layer-opacity": 0,
        "line-layer-opacity-transition": { duration: 0 } },
    })));
  }
  // Labels last, above everything but the live layers the pages add.
  const halo = { "text-color": "#e8f1fb", "text-halo-color": "#06101c", "text-halo-width": 1.4 };
  layers.push(
    { id: "contour-labels", type: "symbol", ...src, "source-layer": "contours", minzoom: 12, filter: ["get", "index"],
      layout: { "symbol-placement": "line", "text-field": ["to-string", ["get", "elevation"]], "text-font": FONT,
        "text-size": 10, "symbol-spacing": 400 },
      paint: { "text-color": "#9cb8bf", "text-halo-color": "#0d1d30", "text-halo-width": 1 } },
    { id: "river-labels", type: "symbol", ...src, "source-layer": "rivers", minzoom: 9, filter: ["has", "name"],
      layout: { "symbol-placement": "line", "text-field": name, "text-font": FONT, "text-size": 13,
        "text-letter-spacing": 0.3, "symbol-spacing": 350 },
      paint: { "text-color": "#8ccaf2", "text-halo-color": "#0d1d30", "text-halo-width": 1.2 } },
    { id: "road-labels", type: "symbol", ...src, "source-layer": "roads", minzoom: 12, filter: ["has", "name"],
      layout: { "symbol-placement": "line", "text-field": name, "text-font": FONT, "text-size": 11 },
      paint: { "text-color": "#f1d9a8", "text-halo-color": "#07111d", "text-halo-width": 1.2 } },
    { id: "peak-labels", type: "symbol", ...src, "source-layer": "peaks", minzoom: 9,
      layout: { "text-field": ["format", name, {}, "\n", {}, ["to-string", ["get", "elevation"]], { "font-scale": 0.8 }],
        "text-font": FONT, "text-size": 11, "text-offset": [0, 0.6], "text-anchor": "top",
        "icon-allow-overlap": false },
      paint: { "text-color": "#c9d6c0", "text-halo-color": "#0d1d30", "text-halo-width": 1 } },
    { id: "peak-marks", type: "circle", ...src, "source-layer": "peaks", minzoom: 9,
      paint: { "circle-radius": 2.5, "circle-color": "#c9d6c0" } },
    { id: "place-labels", type: "symbol", ...src, "source-layer": "place_names",
      filter: ["step", ["zoom"], ["==", ["get", "kind"], "township"], 10.5,
        ["in", ["get", "kind"], ["literal", ["township", "village"]]], 13, true],
      layout: { "text-field": name, "text-font": FONT,
        "text-size": ["interpolate", ["linear"], ["zoom"], 8, ["match", ["get", "kind"], "township", 13, 11],
          12, ["match", ["get", "kind"], "township", 17, "village", 13, 12]],
        "symbol-sort-key": ["match", ["get", "kind"], "township", 0, "village", 1, 2],
        "text-padding": 4 },
      paint: { ...halo, "text-color": ["match", ["get", "kind"], "township", "#ffffff", "village", "#dbe9f7", "#f6e3b4"] } },
  );
  const sources = {
    basemap: { type: "vector", tiles: [tileUrl("basemap")], minzoom: 0, maxzoom: 18, promoteId: "code",
      ...(bounds ? { bounds } : {}) },
  };
  if (raster) {
    // The static layers drawn by the server (frames.js, rasterBaseMap): one image per tile over the background.
    // Their vector layers stay in the style at layer opacity 0 — MapLibre skips them when drawing, while the
    // features stay there to be picked and queried (queryRenderedFeatures ignores the opacity), and the layer
    // list's switches still apply to them.
    sources[RASTER_SOURCE] = { type: "raster", tiles: [rasterTileUrl(rasterStyleOf(units))], tileSize: 512,
      minzoom: 0, maxzoom: 18, ...(bounds ? { bounds } : {}) };
    const drawn = new Set(rasterPartsOf(units).flatMap((part) => RASTER_PARTS[part]));
    for (const layer of layers) {
      if (drawn.has(layer.id)) layer.paint = { ...layer.paint, [`${layer.type}-layer-opacity`]: 0 };
    }
    layers.splice(1, 0, { id: RASTER_SOURCE, type: "raster", source: RASTER_SOURCE,
      paint: { "raster-fade-duration": 0 } });
  }
  return { version: 8, "font-faces": fontFaces(), sources, layers };
}

/** Map options shared by every map of the app. */
export function mapOptions(extra = {}) {
  return {
    localIdeographFontFamily: CJK_FONTS,
    attributionControl: false,
    maxZoom: 18.5,
    maxPitch: 70,
    dragRotate: false,
    pitchWithRotate: false,
    ...extra,
  };
}
