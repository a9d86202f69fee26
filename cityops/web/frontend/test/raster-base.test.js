// The static base map from the server's raster tiles on WebGL in software: when it is chosen, and what the style
// then draws (one raster layer; the static vector layers kept for picking but not drawn; labels and buildings
// untouched).
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { probeSoftwareRenderer, rasterBaseMap, resetRendererProbe, VECTOR_BASE_KEY } from "../src/map/frames.js";

beforeAll(() => {
  globalThis.location = new URL("http://127.0.0.1:8000/");
});

function glNamed(name) {
  let lost = 0;
  const gl = {
    RENDERER: 1,
    getExtension: (ext) => (ext === "WEBGL_debug_renderer_info" ? { UNMASKED_RENDERER_WEBGL: 2 }
      : ext === "WEBGL_lose_context" ? { loseContext: () => { lost += 1; } } : null),
    getParameter: () => name,
  };
  return { gl, lost: () => lost };
}
const storageWith = (values) => ({ getItem: (key) => (key in values ? values[key] : null) });

describe("rasterBaseMap", () => {
  afterEach(() => resetRendererProbe());

  it("is chosen on a software renderer and not with a GPU", () => {
    expect(rasterBaseMap({ storage: storageWith({}), renderer: () => "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device))" })).toBe(true);
    expect(rasterBaseMap({ storage: storageWith({}), renderer: () => null })).toBe(false);
  });
  it("is left out when the user keeps the vector base map", () => {
    expect(rasterBaseMap({ storage: storageWith({ [VECTOR_BASE_KEY]: "1" }), renderer: () => "llvmpipe" })).toBe(false);
  });
  it("probes the renderer once, with a throwaway context it gives back", () => {
    const probe = glNamed("ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)))");
    let made = 0;
    const canvas = () => { made += 1; return { getContext: () => probe.gl }; };
    expect(probeSoftwareRenderer(canvas)).toMatch(/SwiftShader/);
    expect(probeSoftwareRenderer(canvas)).toMatch(/SwiftShader/);
    expect(made).toBe(1);
    expect(probe.lost()).toBe(1);
    resetRendererProbe();
    expect(probeSoftwareRenderer(() => ({ getContext: () => glNamed("NVIDIA GeForce RTX 3060").gl }))).toBe(null);
    resetRendererProbe();
    expect(probeSoftwareRenderer(() => ({ getContext: () => null }))).toBe(null);
  });
});

describe("baseStyle with the raster base map", async () => {
  const { baseStyle, RASTER_PARTS, RASTER_SOURCE, rasterTileUrl } = await import("../src/map/style.js");
  const ids = (style) => style.layers.map((l) => l.id);
  const rasterised = Object.values(RASTER_PARTS).flat();

  it("draws one raster layer over the background and keeps the static layers queryable but not drawn", () => {
    const vector = baseStyle({});
    const style = baseStyle({ raster: true });
    expect(ids(style)).toEqual([ids(vector)[0], RASTER_SOURCE, ...ids(vector).slice(1)]);
    expect(style.sources[RASTER_SOURCE]).toMatchObject({ type: "raster", tileSize: 512,
      tiles: ["http://127.0.0.1:8000/api/tiles/raster/base/{z}/{x}/{y}.png"] });
    for (const layer of style.layers) {
      const before = vector.layers.find((l) => l.id === layer.id);
      if (rasterised.includes(layer.id)) {
        expect(layer.paint[`${layer.type}-layer-opacity`], layer.id).toBe(0);
        expect(layer.source).toBe("basemap");
      } else if (before) {
        expect(layer, layer.id).toEqual(before);  // labels, buildings, highlights: as they were
      }
    }
    expect(ids(style)).toContain("place-labels");
    expect(vector.sources[RASTER_SOURCE]).toBeUndefined();
  });
  it("without unit boundaries asks for the terrain style", () => {
    const style = baseStyle({ raster: true, units: false });
    expect(style.sources[RASTER_SOURCE].tiles[0]).toContain("/api/tiles/raster/terrain/");
    expect(ids(style)).not.toContain("district-line");
  });
  it("names the parts shown when some are switched off", () => {
    expect(rasterTileUrl("base", ["relief", "water", "units"]))
      .toBe("http://127.0.0.1:8000/api/tiles/raster/base/{z}/{x}/{y}.png?parts=relief,water,units");
  });
});
