// The map's frame work: the sky pass is drawn only when the sky can change a pixel; on WebGL in software the moving
// map is drawn at a lower resolution and the map at rest at full resolution.
import { describe, expect, it } from "vitest";
import { drawSkyOnlyWhenItShows, drawsNothing, FULL_RESOLUTION_KEY, lowerResolutionWhileMoving, MIN_MOVING_RATIO,
  MOVING_PIXELS, movingRatio, PARENT_SAMPLE, sampleParentOnlyWhenFading, sampleRasterOnce, skipIdleClippingMasks, skyShows,
  softwareRenderer, withOpaqueCanvas } from "../src/map/frames.js";

const transparent = { r: 0, g: 0, b: 0, a: 0 };
const blue = { r: 0.2, g: 0.4, b: 0.9, a: 1 };

describe("skyShows", () => {
  it("is false for a style without a sky (MapLibre's default: transparent colours) or none at all", () => {
    expect(skyShows({ "sky-color": transparent, "horizon-color": transparent, "fog-color": transparent })).toBe(false);
    expect(skyShows(undefined)).toBe(false);
    expect(skyShows(null)).toBe(false);
  });
  it("is true when the sky or the horizon has a colour", () => {
    expect(skyShows({ "sky-color": blue, "horizon-color": transparent })).toBe(true);
    expect(skyShows({ "sky-color": transparent, "horizon-color": { ...blue, a: 0.3 } })).toBe(true);
  });
});

describe("drawSkyOnlyWhenItShows", () => {
  function fakeMap() {
    const calls = [];
    const shared = { sky: (mesh) => calls.push(mesh), fill: () => "fill" };
    return { calls, shared, map: { painter: { drawFunctions: shared } } };
  }

  it("skips the sky pass of a transparent sky and draws a coloured one", () => {
    const { calls, map } = fakeMap();
    expect(drawSkyOnlyWhenItShows(map)).toBe(true);
    map.painter.drawFunctions.sky("mesh-1", { data: { sky: { "sky-color": transparent, "horizon-color": transparent } } });
    expect(calls).toEqual([]);
    map.painter.drawFunctions.sky("mesh-2", { data: { sky: { "sky-color": blue, "horizon-color": transparent } } });
    expect(calls).toEqual(["mesh-2"]);
    expect(map.painter.drawFunctions.fill()).toBe("fill");
  });

  it("changes only this map's painter, not the draw functions MapLibre shares between maps", () => {
    const { shared, map } = fakeMap();
    const original = shared.sky;
    drawSkyOnlyWhenItShows(map);
    expect(shared.sky).toBe(original);
    expect(map.painter.drawFunctions).not.toBe(shared);
  });

  it("leaves a map it does not recognise alone", () => {
    expect(drawSkyOnlyWhenItShows({})).toBe(false);
    expect(drawSkyOnlyWhenItShows({ painter: { drawFunctions: {} } })).toBe(false);
  });
});

const RENDERERS = {
  swiftshader: "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero) (0x0000C0DE)), SwiftShader driver)",
  llvmpipe: "llvmpipe (LLVM 15.0.6, 256 bits)",
  gpu: "ANGLE (Intel, Mesa Intel(R) UHD Graphics 620 (KBL GT2), OpenGL 4.6)",
};

function fakeGl(renderer, { extension = true } = {}) {
  return {
    RENDERER: 0x1f01,
    getExtension: (name) => (extension && name === "WEBGL_debug_renderer_info" ? { UNMASKED_RENDERER_WEBGL: 0x9246 } : null),
    getParameter: (p) => (p === 0x9246 || p === 0x1f01 ? renderer : null),
  };
}

describe("softwareRenderer", () => {
  it("names SwiftShader and llvmpipe, not a GPU", () => {
    expect(softwareRenderer(fakeGl(RENDERERS.swiftshader))).toBe(RENDERERS.swiftshader);
    expect(softwareRenderer(fakeGl(RENDERERS.llvmpipe))).toBe(RENDERERS.llvmpipe);
    expect(softwareRenderer(fakeGl(RENDERERS.gpu))).toBe(null);
  });
  it("reads the plain renderer name when the debug extension is withheld, and survives no context", () => {
    expect(softwareRenderer(fakeGl("Google SwiftShader", { extension: false }))).toBe("Google SwiftShader");
    expect(softwareRenderer(fakeGl("WebKit WebGL", { extension: false }))).toBe(null);
    expect(softwareRenderer(null)).toBe(null);
  });
});

describe("lowerResolutionWhileMoving", () => {
  // A map with MapLibre's events and pixel ratio (setPixelRatio fires a move of its own, as MapLibre's resize does),
  // a clock the test advances.
  function fakeMap(renderer, ratio = 1, size = null) {
    const handlers = {};
    const ratios = [];
    let redraws = 0;
    const container = size ? { clientWidth: size[0], clientHeight: size[1], dataset: {} } : null;
    const canvas = { style: {} };
    const map = {
      ...(container ? { getContainer: () => container } : {}),
      getCanvas: () => canvas,
      style: {},
      painter: { context: { gl: fakeGl(renderer) } },
      on: (type, fn) => { (handlers[type] ||= []).push(fn); },
      off: (type, fn) => { handlers[type] = (handlers[type] || []).filter((h) => h !== fn); },
      fire: (type) => (handlers[type] || []).slice().forEach((fn) => fn()),
      getPixelRatio: () => ratio,
      setPixelRatio(r) { ratio = r; ratios.push(r); map.fire("movestart"); map.fire("move"); map.fire("moveend"); },
      redraw() { redraws++; },
    };
    const timers = new Map();
    let next = 1;
    const clock = {
      schedule: (fn, ms) => { timers.set(next, fn); return next++; },
      cancel: (id) => timers.delete(id),
      runAll: () => { const fns = [...timers.values()]; timers.clear(); fns.forEach((fn) => fn()); },
      pending: () => timers.size,
    };
    return { map, ratios, clock, redraws: () => redraws };
  }
  const pan = (map) => { map.fire("movestart"); map.fire("move"); map.fire("moveend"); };
  const tick = () => new Promise((resolve) => queueMicrotask(resolve));

  it("draws a moving map at half resolution in software and at full resolution once it rests", async () => {
    const { map, ratios, clock, redraws } = fakeMap(RENDERERS.swiftshader, 2);
    const control = lowerResolutionWhileMoving(map, { storage: null, ...clock });
    expect(control.renderer).toBe(RENDERERS.swiftshader);
    for (let i = 0; i < 10; i++) pan(map); // a pan by code: a whole move on every frame
    expect(ratios).toEqual([1]); // lowered once, not on every frame
    expect(control.moving()).toBe(true);
    expect(clock.pending()).toBe(1); // one rest timer, restarted by each move
    await tick();
    expect(redraws()).toBe(1); // drawn again at once: no blank canvas on screen
    clock.runAll();
    expect(ratios).toEqual([1, 2]);
    expect(control.moving()).toBe(false);
    expect(clock.pending()).toBe(0); // the resize's own move did not lower it again
    pan(map);
    expect(ratios).toEqual([1, 2, 1]);
    control.stop();
    expect(ratios).toEqual([1, 2, 1, 2]);
    pan(map);
    expect(ratios).toEqual([1, 2, 1, 2]);
  });

  it("does nothing with a GPU, or when full resolution is asked for", () => {
    const gpu = fakeMap(RENDERERS.gpu);
    expect(lowerResolutionWhileMoving(gpu.map, { storage: null, ...gpu.clock })).toBe(null);
    pan(gpu.map);
    expect(gpu.ratios).toEqual([]);
    const asked = fakeMap(RENDERERS.llvmpipe);
    const storage = { getItem: (k) => (k === FULL_RESOLUTION_KEY ? "1" : null) };
    expect(lowerResolutionWhileMoving(asked.map, { storage, ...asked.clock })).toBe(null);
    pan(asked.map);
    expect(asked.ratios).toEqual([]);
    expect(lowerResolutionWhileMoving({}, { storage: null })).toBe(null);
  });

  it("lowers a large map further, to the pixels of a 1280×800 map at half resolution, and restores it at rest", async () => {
    const { map, ratios, clock } = fakeMap(RENDERERS.swiftshader, 1, [1920, 1080]);
    const control = lowerResolutionWhileMoving(map, { storage: null, ...clock });
    expect(control.movingScale()).toBeCloseTo(Math.sqrt(MOVING_PIXELS / (1920 * 1080)), 6);
    pan(map);
    pan(map);
    expect(ratios.length).toBe(1);
    expect(ratios[0] * ratios[0] * 1920 * 1080).toBeLessThanOrEqual(MOVING_PIXELS + 1e-6);
    expect(ratios[0]).toBeLessThan(0.5);
    expect(map.getContainer().dataset.resolutionLowered).toBe("1");
    expect(map.getContainer().dataset.movingResolution).toBe("0.35");
    expect(map.getCanvas().style.imageRendering).toBe("pixelated"); // scaled up by nearest pixels while moving
    clock.runAll();
    expect(ratios).toEqual([ratios[0], 1]);
    expect(map.getContainer().dataset.resolutionLowered).toBe(undefined);
    expect(map.getCanvas().style.imageRendering).toBe(""); // drawn 1:1 at rest, the browser's default
    // A 1280×800 map keeps half resolution.
    const small = fakeMap(RENDERERS.swiftshader, 1, [1280, 800]);
    lowerResolutionWhileMoving(small.map, { storage: null, ...small.clock });
    pan(small.map);
    expect(small.ratios).toEqual([0.5]);
  });
});

describe("movingRatio", () => {
  it("is half the full ratio for a map within the budget, lower for a larger one, never below the floor", () => {
    expect(movingRatio(1, 1280, 800)).toBe(0.5);
    expect(movingRatio(1, 800, 600)).toBe(0.5);
    const big = movingRatio(1, 1920, 1080);
    expect(big).toBeLessThan(0.5);
    expect(big * big * 1920 * 1080).toBeCloseTo(MOVING_PIXELS, 3);
    // A high-density screen: its full ratio of 2 is lowered to the same number of pixels.
    expect(movingRatio(2, 1920, 1080)).toBeCloseTo(big, 9);
    expect(movingRatio(1, 7680, 4320)).toBe(MIN_MOVING_RATIO);
    // Never above the full ratio (a screen whose ratio is already below the floor).
    expect(movingRatio(0.2, 1920, 1080)).toBe(0.2);
    expect(movingRatio(1, 0, 0)).toBe(0.5);
  });
});

describe("withOpaqueCanvas", () => {
  function fakeProto() {
    const asked = [];
    const proto = { getContext(type, attributes) { asked.push([type, attributes]); return { type }; } };
    return { proto, asked, original: proto.getContext };
  }

  it("asks for WebGL contexts without alpha while the map is created, and only then", () => {
    const { proto, asked, original } = fakeProto();
    const canvas = Object.create(proto);
    const made = withOpaqueCanvas(() => {
      canvas.getContext("webgl2", { alpha: true, depth: true, antialias: false });
      canvas.getContext("2d", { willReadFrequently: true });
      return "map";
    }, proto);
    expect(made).toBe("map");
    expect(asked[0]).toEqual(["webgl2", { alpha: false, depth: true, antialias: false }]);
    expect(asked[1]).toEqual(["2d", { willReadFrequently: true }]);
    expect(proto.getContext).toBe(original);
    canvas.getContext("webgl2", { alpha: true });
    expect(asked[2]).toEqual(["webgl2", { alpha: true }]);
  });

  it("puts getContext back when creating the map throws", () => {
    const { proto, original } = fakeProto();
    expect(() => withOpaqueCanvas(() => { throw new Error("no WebGL"); }, proto)).toThrow("no WebGL");
    expect(proto.getContext).toBe(original);
  });
});

describe("lowerResolutionWhileMoving at rest", () => {
  it("waits for a frame without a move after the rest timer: a slow pan is not restored between its frames", () => {
    const handlers = {};
    const ratios = [];
    let ratio = 1;
    const map = {
      style: {},
      painter: { context: { gl: { getExtension: () => null, getParameter: () => "SwiftShader Device" } } },
      on: (type, fn) => { (handlers[type] ||= []).push(fn); },
      off: () => {},
      fire: (type) => (handlers[type] || []).slice().forEach((fn) => fn()),
      getPixelRatio: () => ratio,
      setPixelRatio(r) { ratio = r; ratios.push(r); map.fire("move"); },
      redraw() {},
    };
    let timer = null;
    let frames = [];
    const control = lowerResolutionWhileMoving(map, { storage: null,
      schedule: (fn) => { timer = fn; return 1; }, cancel: () => { timer = null; },
      frame: (fn) => { frames.push(fn); } });
    map.fire("move");
    expect(ratios).toEqual([0.5]);
    // The rest timer fires between two frames of a slow pan; the next frame moves the map first.
    const fired = timer; timer = null; fired();
    expect(frames.length).toBe(1);
    map.fire("move");
    frames.shift()();
    expect(ratios).toEqual([0.5]);
    expect(control.moving()).toBe(true);
    // Then the pan stops: the timer, then a frame without a move.
    const again = timer; timer = null; again();
    frames.shift()();
    expect(ratios).toEqual([0.5, 1]);
    expect(control.moving()).toBe(false);
  });
});

// A MapLibre style layer as the painter sees it: evaluated paint properties, data-driven ones with constantOr.
function layerOf(type, source, props = {}) {
  const constant = (v) => ({ constantOr: () => v });
  const defaults = type === "line"
    ? { "line-opacity": constant(1), "line-width": constant(1), "line-layer-opacity": 1 }
    : { "fill-opacity": constant(1), "fill-layer-opacity": 1 };
  const values = { ...defaults, ...Object.fromEntries(Object.entries(props).map(([k, v]) => [k, k.endsWith("layer-opacity") ? v : constant(v)])) };
  return { id: `${source}-${type}`, type, source, paint: { get: (name) => values[name] } };
}
const tilesWith = (...keys) => ({ getTile: (coord) => ({ getBucket: () => (keys.includes(coord) ? {} : undefined) }) });
const translucent = { currentPass: "translucent" };
const opaque = { currentPass: "opaque" };

describe("drawsNothing", () => {
  it("is true for a line outside the translucent pass, and for a layer at opacity or layer opacity 0", () => {
    const tiles = tilesWith("a");
    expect(drawsNothing(layerOf("line", "s"), opaque, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("line", "s"), translucent, ["a"], tiles)).toBe(false);
    expect(drawsNothing(layerOf("line", "s", { "line-layer-opacity": 0 }), translucent, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("line", "s", { "line-opacity": 0 }), translucent, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("fill", "s", { "fill-layer-opacity": 0 }), translucent, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("fill", "s", { "fill-opacity": 0 }), translucent, ["a"], tiles)).toBe(true);
  });
  it("keeps an opaque fill's opaque pass and any fill's translucent one", () => {
    const tiles = tilesWith("a");
    expect(drawsNothing(layerOf("fill", "s"), opaque, ["a"], tiles)).toBe(false);
    expect(drawsNothing(layerOf("fill", "s", { "fill-opacity": 0.2 }), opaque, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("fill", "s", { "fill-opacity": 0.2 }), translucent, ["a"], tiles)).toBe(false);
    expect(drawsNothing(layerOf("fill", "s", { "fill-layer-opacity": 0.5 }), opaque, ["a"], tiles)).toBe(true);
    expect(drawsNothing(layerOf("fill", "s", { "fill-layer-opacity": 0.5 }), translucent, ["a"], tiles)).toBe(false);
  });
  it("is true when no tile in view holds features of the layer", () => {
    expect(drawsNothing(layerOf("fill", "s"), translucent, ["a", "b"], tilesWith())).toBe(true);
    expect(drawsNothing(layerOf("fill", "s"), translucent, ["a", "b"], tilesWith("b"))).toBe(false);
    expect(drawsNothing(layerOf("fill", "s"), translucent, ["a"], null)).toBe(false);
  });
  it("leaves other layer types (not clipped by masks) alone", () => {
    expect(drawsNothing({ type: "circle", paint: { get: () => 0 } }, translucent, [], tilesWith())).toBe(false);
    expect(drawsNothing({ type: "symbol" }, translucent, [], tilesWith())).toBe(false);
  });
});

describe("skipIdleClippingMasks", () => {
  function fakeMap(tileManagers) {
    const skies = [];
    const shared = { sky: (mesh) => skies.push(mesh) };
    return { skies, shared, map: { painter: { drawFunctions: shared }, style: { tileManagers } } };
  }
  function fakeFrame(pass) {
    const masks = [];
    class Frame { renderTileClippingMasks(layer) { masks.push(layer.source); } }
    const frame = new Frame();
    frame.currentPass = pass;
    return { frame, masks };
  }

  it("draws the masks of layers that draw and skips the others, on each frame of this map only", () => {
    const { skies, shared, map } = fakeMap({ zones: tilesWith("a"), empty: tilesWith(), base: tilesWith("a") });
    const masks = skipIdleClippingMasks(map);
    expect(shared.sky).not.toBe(map.painter.drawFunctions.sky);
    const { frame, masks: drawn } = fakeFrame("translucent");
    map.painter.drawFunctions.sky("mesh", frame);
    expect(skies).toEqual(["mesh"]);
    frame.renderTileClippingMasks(layerOf("fill", "base", { "fill-layer-opacity": 0 }), ["a"]);
    frame.renderTileClippingMasks(layerOf("fill", "zones", { "fill-opacity": 0.18 }), ["a"]);
    frame.renderTileClippingMasks(layerOf("line", "empty"), ["a"]);
    expect(drawn).toEqual(["zones"]);
    expect(masks.skipped()).toBe(2);
    // Stopped: the next frames draw every mask again.
    masks.stop();
    const next = fakeFrame("translucent");
    map.painter.drawFunctions.sky("mesh", next.frame);
    next.frame.renderTileClippingMasks(layerOf("line", "empty"), ["a"]);
    expect(next.masks).toEqual(["empty"]);
  });

  it("leaves a map it does not recognise alone", () => {
    expect(skipIdleClippingMasks({})).toBe(null);
    expect(skipIdleClippingMasks({ painter: { drawFunctions: {} } })).toBe(null);
  });
});

// MapLibre's raster fragment shader, as 6.17 ships it (the part that matters).
const RASTER = "uniform float u_fade_t;uniform sampler2D u_image0;uniform sampler2D u_image1;in vec3 v_pos0;in vec3 v_pos1;"
  + "void main() {vec4 color0=texture(u_image0,v_pos0.xy/v_pos0.z);" + PARENT_SAMPLE
  + "vec4 color=mix(color0,color1,u_fade_t);fragColor=color;}";

describe("sampleParentOnlyWhenFading", () => {
  it("samples the parent tile only while a fade is under way", () => {
    const once = sampleParentOnlyWhenFading(RASTER);
    expect(once).not.toContain(PARENT_SAMPLE);
    expect(once).toContain("vec4 color1=color0;if (u_fade_t > 0.0) {color1=texture(u_image1,v_pos1.xy/v_pos1.z);}");
    expect(once.replace(/vec4 color1=.*?\}\}?/, "")).toBe(RASTER.replace(PARENT_SAMPLE, ""));
  });
  it("leaves other shaders, and a raster shader it does not recognise, as they are", () => {
    const fill = "uniform vec4 u_color;void main() {fragColor=u_color;}";
    expect(sampleParentOnlyWhenFading(fill)).toBe(fill);
    const other = RASTER.replace(PARENT_SAMPLE, "vec4 color1=texture(u_image1,v_pos1.xy);");
    expect(sampleParentOnlyWhenFading(other)).toBe(other);
    expect(sampleParentOnlyWhenFading(undefined)).toBe(undefined);
  });
});

describe("sampleRasterOnce", () => {
  it("rewrites the raster shader this map's context compiles, until stopped", () => {
    const compiled = [];
    const gl = { shaderSource(shader, source) { compiled.push([this, shader, source]); } };
    const raster = sampleRasterOnce({ painter: { context: { gl } } });
    gl.shaderSource("s1", RASTER);
    gl.shaderSource("s2", "void main() {}");
    expect(compiled.map(([self]) => self)).toEqual([gl, gl]);
    expect(compiled[0][2]).toBe(sampleParentOnlyWhenFading(RASTER));
    expect(compiled[1][2]).toBe("void main() {}");
    expect(raster.rewritten()).toBe(1);
    raster.stop();
    gl.shaderSource("s3", RASTER);
    expect(compiled[2][2]).toBe(RASTER);
  });
  it("leaves a map it does not recognise alone", () => {
    expect(sampleRasterOnce({})).toBe(null);
  });
});
