// When a map may take sources and layers. MapLibre's own `isStyleLoaded()` turns false again whenever a source
// is busy (a GeoJSON `setData` still in its worker, tiles still loading), and its "load" event fires only once:
// waiting for "load" after that moment waits forever. So the first "load" is remembered per map.
const ready = new WeakMap();

/** Start remembering the first "load" of a map that has just been created. */
export function trackLoad(map) {
  ready.set(map, new Promise((resolve) => map.once("load", () => resolve(map))));
  return map;
}

/** Resolves (once and for all) when the map's style has loaded. */
export function whenLoaded(map) {
  if (!ready.has(map)) trackLoad(map);
  return map.loaded() || map.isStyleLoaded() ? Promise.resolve(map) : ready.get(map);
}
