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
