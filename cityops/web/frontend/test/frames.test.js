// The map's frame work: the sky pass is drawn only when the sky can change a pixel; on WebGL in software the moving
// map is drawn at a lower resolution and the map at rest at full resolution.
import { describe, expect, it } from "vitest";
import { drawSkyOnlyWhenItShows, FULL_RESOLUTION_KEY, lowerResolutionWhileMoving, MIN_MOVING_RATIO, MOVING_PIXELS,
  movingRatio, skyShows, softwareRenderer, withOpaqueCanvas } from "../src/map/frames.js";

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
    const map = {
      ...(container ? { getContainer: () => container } : {}),
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
    clock.runAll();
    expect(ratios).toEqual([ratios[0], 1]);
    expect(map.getContainer().dataset.resolutionLowered).toBe(undefined);
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
