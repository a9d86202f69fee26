// What a map draws on each frame that it need not. MapLibre (6.17) draws its sky on every frame: one pass over
// every pixel of the canvas, with a fragment shader that computes the horizon and the atmosphere per pixel, even
// when the style has no sky (then its colours are transparent and the pass changes no pixel). With a GPU that is
// nothing; with WebGL in software (SwiftShader: a kiosk, a virtual desktop or a headless browser without a GPU)
// it was the largest single cost of a frame — half of the frame time of a map of the background alone.

/** Whether a sky (MapLibre's evaluated sky properties) can change a pixel: one of its colours is not transparent. */
export function skyShows(sky) {
  if (!sky) return false;
  return ["sky-color", "horizon-color"].some((key) => {
    const colour = sky[key];
    return colour != null && !(typeof colour === "object" && colour.a === 0);
  });
}

/**
 * Draw the sky of `map` only when it shows. MapLibre has no option for it, so the painter's own draw function is
 * wrapped, on this map's painter only (MapLibre's table of draw functions is shared by all maps). Returns false,
 * leaving the map as it is, when this MapLibre lays its painter out differently (the browser test then fails).
 */
export function drawSkyOnlyWhenItShows(map) {
  const painter = map && map.painter;
  const draw = painter && painter.drawFunctions;
  if (!draw || typeof draw.sky !== "function") return false;
  const drawSky = draw.sky;
  painter.drawFunctions = { ...draw, sky(mesh, frame) {
    if (skyShows(frame && frame.data && frame.data.sky)) drawSky(mesh, frame);
  } };
  return true;
}

// The tile clipping masks of layers that draw nothing. Before a fill or line layer is drawn, MapLibre writes one
// stencil mask per tile of its source (a quad over the tile's pixels), whenever the previous clipped layer had
// another source — in both the opaque and the translucent pass, and even when the layer then draws nothing: a line
// in the opaque pass, a layer at opacity 0 (the raster base map's vector layers, the unit highlights at rest), a
// source with no feature in view (the empty drawing and threat-zone sources). On the operations map that was 105
// of ~230 draw calls a frame at 1920×1080 while only the incident zones' 15 were used; with WebGL in software each
// is a pass over the pixels of a tile.

/** Whether `layer` (a MapLibre style layer) draws nothing in `frame`'s pass over the tiles `coords` of `tiles`. */
export function drawsNothing(layer, frame, coords, tiles) {
  const paint = layer && layer.paint;
  if (!paint || typeof paint.get !== "function") return false;
  const constant = (name, otherwise) => {
    const value = paint.get(name);
    return value && typeof value.constantOr === "function" ? value.constantOr(otherwise) : value;
  };
  const translucent = frame.currentPass === "translucent";
  if (layer.type === "line") {
    // (MapLibre draws lines in the translucent pass only.)
    if (!translucent || constant("line-opacity", 1) === 0 || constant("line-width", 1) === 0
      || paint.get("line-layer-opacity") === 0) return true;
  } else if (layer.type === "fill") {
    const layerOpacity = paint.get("fill-layer-opacity");
    if (constant("fill-opacity", 1) === 0 || layerOpacity === 0) return true;
    // Outside the translucent pass only a fill opaque throughout is drawn.
    if (!translucent && (layerOpacity !== 1 || constant("fill-opacity", 0) !== 1)) return true;
  } else {
    return false;
  }
  // A tile draws a layer only where it holds features of it.
  if (!tiles || !Array.isArray(coords)) return false;
  return !coords.some((coord) => {
    const tile = tiles.getTile(coord);
    return !tile || typeof tile.getBucket !== "function" || tile.getBucket(layer);
  });
}

/**
 * Draw the tile clipping masks of `map`'s layers only for layers that draw something. The frame's own
 * renderTileClippingMasks is wrapped, on each frame of this map (MapLibre makes a frame context per frame and hands
 * it to the sky's draw function first), so a skipped layer leaves the masks of the last drawn source in place, as
 * when MapLibre finds them already there. Returns {stop(), skipped()} or null when this MapLibre differs.
 */
export function skipIdleClippingMasks(map) {
  const painter = map && map.painter;
  const draw = painter && painter.drawFunctions;
  if (!draw || typeof draw.sky !== "function") return null;
  const drawSky = draw.sky;
  let skipped = 0;
  let on = true;
  const sky = (mesh, frame) => {
    const masks = frame && frame.renderTileClippingMasks;
    const style = map.style;
    if (on && typeof masks === "function" && style && style.tileManagers && !Object.hasOwn(frame, "renderTileClippingMasks")) {
      frame.renderTileClippingMasks = function renderTileClippingMasks(layer, coords) {
        if (drawsNothing(layer, frame, coords, layer && style.tileManagers[layer.source])) {
          skipped += 1;
          return undefined;
        }
        return masks.call(frame, layer, coords);
      };
    }
    return drawSky(mesh, frame);
  };
  painter.drawFunctions = { ...draw, sky };
  return {
    skipped: () => skipped,
    stop() { on = false; },
  };
}

// The raster pass with one texture sample a pixel where it needs one. MapLibre's raster shader samples each
// pixel's tile and the tile's parent (for a cross-fade) and mixes them by the fade — on every frame, also when
// nothing fades (the app's raster base map has raster-fade-duration 0: the fade is 0 and the parent is the tile
// itself). With WebGL in software the second sample was a third of the raster pass (the base map's 15 tiles at
// 1920×1080): the parent is now sampled only while a fade is under way. The shader's text is MapLibre's own,
// rewritten as this map's WebGL context compiles it; a MapLibre whose raster shader reads otherwise is left as it is.
export const PARENT_SAMPLE = "vec4 color1=texture(u_image1,v_pos1.xy/v_pos1.z);";
const PARENT_SAMPLE_WHEN_FADING = "vec4 color1=color0;if (u_fade_t > 0.0) {color1=texture(u_image1,v_pos1.xy/v_pos1.z);}";

/** MapLibre's raster fragment shader with the parent sampled only while fading; other sources unchanged. */
export function sampleParentOnlyWhenFading(source) {
  if (typeof source !== "string" || !source.includes("uniform sampler2D u_image1") || !source.includes(PARENT_SAMPLE)) {
    return source;
  }
  return source.replace(PARENT_SAMPLE, PARENT_SAMPLE_WHEN_FADING);
}

/**
 * Compile `map`'s raster shader with the parent sampled only while fading (its WebGL context's shaderSource is
 * wrapped; MapLibre compiles a program when it first draws with it). Returns {rewritten(), stop()} or null.
 */
export function sampleRasterOnce(map) {
  const gl = map && map.painter && map.painter.context && map.painter.context.gl;
  if (!gl || typeof gl.shaderSource !== "function") return null;
  const shaderSource = gl.shaderSource;
  let rewritten = 0;
  let on = true;
  gl.shaderSource = function rasterShaderSource(shader, source) {
    const once = on ? sampleParentOnlyWhenFading(source) : source;
    if (once !== source) rewritten += 1;
    return shaderSource.call(this, shader, once);
  };
  return { rewritten: () => rewritten, stop() { on = false; } };
}

// While the map moves on a software renderer, draw it at a lower resolution; at rest, at full resolution again.
// On WebGL in software (SwiftShader, llvmpipe: the virtual desktops and thin clients of duty rooms often have no
// GPU) a frame costs what its fills and lines cover in pixels, so a pan at full resolution stutters at a few
// frames a second. Drawing the moving map at `MOVING_SCALE` of the device's pixel ratio (a quarter of the pixels
// at 0.5; the browser scales the canvas up) is what CesiumJS's resolutionScale does; the map at rest — what is
// read, printed or captured — is always drawn at full resolution, `REST_MS` after the last move. A large map is
// lowered further, to at most `MOVING_PIXELS` drawn pixels (a 1280×800 map at half resolution, which pans above
// 30 frames a second there): at 1920×1080 half resolution still drew twice those pixels, and the browser's own
// compositing of the larger page left no room for them (18 frames a second). With a GPU nothing changes. A user
// (or a measurement) can keep full resolution: localStorage `cityops.map.fullResolution` = "1".
export const MOVING_SCALE = 0.5;
export const REST_MS = 250;
export const MOVING_PIXELS = (1280 * 800) / 4;
// Below this pixel ratio the moving map's labels and points blur into each other.
export const MIN_MOVING_RATIO = 0.3;
export const FULL_RESOLUTION_KEY = "cityops.map.fullResolution";
const SOFTWARE = /swiftshader|llvmpipe|softpipe|lavapipe|software|basic render/i;

/** The renderer's name when WebGL is drawn in software (what WEBGL_debug_renderer_info reports), else null. */
export function softwareRenderer(gl) {
  if (!gl || typeof gl.getParameter !== "function") return null;
  let name = null;
  try {
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    name = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
  } catch (err) {
    return null;
  }
  return typeof name === "string" && SOFTWARE.test(name) ? name : null;
}

/**
 * The pixel ratio of a moving map of `width` × `height` CSS pixels drawn at `full` at rest: `scale` of it, lowered
 * further so that the drawn pixels stay within `pixels`, never below MIN_MOVING_RATIO (nor above `full`).
 */
export function movingRatio(full, width, height, { scale = MOVING_SCALE, pixels = MOVING_PIXELS } = {}) {
  let ratio = full * scale;
  const area = width * height;
  if (area > 0 && ratio * ratio * area > pixels) ratio = Math.sqrt(pixels / area);
  return Math.min(full, Math.max(ratio, MIN_MOVING_RATIO));
}

function fullResolutionAsked(storage) {
  try {
    return storage != null && storage.getItem(FULL_RESOLUTION_KEY) === "1";
  } catch (err) {
    return false;
  }
}

/**
 * Lower `map`'s pixel ratio while it moves when its WebGL is drawn in software, and draw it at full resolution
 * once it has not moved for `restMs`. Returns the controller ({renderer, movingScale(), moving(), stop()}) or null when
 * nothing is done (a GPU, full resolution asked for, or a map this code does not recognise).
 */
export function lowerResolutionWhileMoving(map, { scale = MOVING_SCALE, pixels = MOVING_PIXELS, restMs = REST_MS,
  storage = globalThis.localStorage, schedule = globalThis.setTimeout, cancel = globalThis.clearTimeout,
  frame = globalThis.requestAnimationFrame } = {}) {
  const gl = map && map.painter && map.painter.context && map.painter.context.gl;
  const renderer = softwareRenderer(gl);
  if (!renderer || fullResolutionAsked(storage) || typeof map.setPixelRatio !== "function") return null;
  let full = map.getPixelRatio();
  let lowered = false;
  let changing = false;
  let timer = null;
  // setPixelRatio resizes the canvas, which clears it, and fires a move of its own (ignored here). The map is drawn
  // again at once, after the code that moved it has returned, so no blank frame reaches the screen.
  // The container says so while the map is drawn at the lower resolution (what waits for a sharp map reads it).
  const container = typeof map.getContainer === "function" ? map.getContainer() : null;
  // The moving map's share of the full resolution, for the map's size now.
  const movingScale = () => {
    const ratio = lowered ? full : map.getPixelRatio();
    const size = container ? [container.clientWidth, container.clientHeight] : [0, 0];
    return movingRatio(ratio, size[0], size[1], { scale, pixels }) / ratio;
  };
  const canvas = typeof map.getCanvas === "function" ? map.getCanvas() : null;
  const setRatio = (ratio) => {
    if (container) {
      if (ratio < full) {
        container.dataset.resolutionLowered = "1";
        container.dataset.movingResolution = String(Math.round((100 * ratio) / full) / 100);
      } else delete container.dataset.resolutionLowered;
    }
    // The lowered canvas is scaled up by the browser's compositor, in software too, on every frame: nearest
    // pixels instead of a bilinear filter took ~10 % off the GPU process's time per frame of a 1920×1080 map
    // (40-43 against 44-52 ms, alternated). At rest the canvas is drawn 1:1 and keeps the browser's default.
    if (canvas && canvas.style) canvas.style.imageRendering = ratio < full ? "pixelated" : "";
    changing = true;
    try { map.setPixelRatio(ratio); } finally { changing = false; }
    queueMicrotask(() => { if (map.style) map.redraw(); });
  };
  const restore = () => {
    if (!lowered) return;
    lowered = false;
    setRatio(full);
  };
  // At rest: `restMs` without a move, and then one more frame without one. On a machine so busy that frames come
  // slower than `restMs`, the timer alone fired between two frames of a pan, and every frame was drawn at full
  // resolution after resizing the canvas twice (a few frames a second turned into one or two).
  const rest = () => {
    timer = null;
    if (typeof frame !== "function") return restore();
    frame(() => { if (timer === null) restore(); });
  };
  const onMove = () => {
    if (changing) return;
    if (!lowered) {
      lowered = true;
      full = map.getPixelRatio();
      setRatio(full * movingScale());
    }
    if (timer !== null) cancel(timer);
    timer = schedule(rest, restMs);
  };
  map.on("movestart", onMove);
  map.on("move", onMove);
  return {
    renderer,
    movingScale,
    moving: () => lowered,
    stop() {
      map.off("movestart", onMove);
      map.off("move", onMove);
      if (timer !== null) cancel(timer);
      timer = null;
      restore();
    },
  };
}

// An opaque map canvas. MapLibre asks for a WebGL context with an alpha channel, so the browser blends the whole
// canvas over the page under it on every frame, and draws that page too. The map's background layer covers every
// pixel, so the alpha channel shows nothing; without it the canvas is opaque, the browser's compositor copies it
// and skips what lies under it. With WebGL in software the compositor is software too: this took 10-15 % off the
// GPU process's time per frame of a 1920×1080 map while panning.

/**
 * Run `create` (which makes a MapLibre map) with its WebGL context asked for without alpha. MapLibre has no option
 * for it (it sets alpha: true after the user's context attributes), so canvases' getContext is wrapped for the
 * duration of the call only: MapLibre creates its context inside the Map constructor.
 */
export function withOpaqueCanvas(create, proto = globalThis.HTMLCanvasElement && globalThis.HTMLCanvasElement.prototype) {
  if (!proto || typeof proto.getContext !== "function") return create();
  const own = Object.prototype.hasOwnProperty.call(proto, "getContext");
  const getContext = proto.getContext;
  proto.getContext = function opaqueContext(type, attributes) {
    const gl = type === "webgl2" || type === "webgl";
    return getContext.call(this, type, gl && attributes ? { ...attributes, alpha: false } : attributes);
  };
  try {
    return create();
  } finally {
    if (own) proto.getContext = getContext;
    else delete proto.getContext;
  }
}

// The static base map as the server's raster tiles on a software renderer. Relief, contours, water, roads and unit
// boundaries are ~150 fills and lines over the whole view; in software each is a pass over the pixels it covers on
// every frame of a pan, and the frame rate halves and halves again. The server draws the same layers, in the same
// colours, into one image per tile (`/api/tiles/raster/…`, cityops/tiles/raster.py): one textured quad per tile,
// about what the background costs. Labels, buildings and the live layers stay vectors (CJK text from the system's
// font, clickable). With a GPU the vector base map stays: it is sharp at every zoom and pitch and costs nothing
// there. A user (or a measurement) can keep the vector base map: localStorage `cityops.map.vectorBase` = "1".
export const VECTOR_BASE_KEY = "cityops.map.vectorBase";
let probed;

/** The name of the software renderer this browser draws WebGL with (probed once with a throwaway context), else null. */
export function probeSoftwareRenderer(makeCanvas = () => globalThis.document && globalThis.document.createElement("canvas")) {
  if (probed !== undefined) return probed;
  probed = null;
  try {
    const canvas = makeCanvas();
    const gl = canvas && (canvas.getContext("webgl2") || canvas.getContext("webgl"));
    probed = softwareRenderer(gl);
    const lose = gl && gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
  } catch (err) {
    probed = null;
  }
  return probed;
}

/** Whether maps draw their static base map from the server's raster tiles: on a software renderer, unless asked not to. */
export function rasterBaseMap({ storage = globalThis.localStorage, renderer = probeSoftwareRenderer } = {}) {
  try {
    if (storage != null && storage.getItem(VECTOR_BASE_KEY) === "1") return false;
  } catch (err) {
    // no storage: decide by the renderer
  }
  return Boolean(renderer());
}

/** For tests: forget the probed renderer. */
export function resetRendererProbe() {
  probed = undefined;
}
