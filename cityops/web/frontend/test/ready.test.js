// A map's "load" fires once, and MapLibre's isStyleLoaded() is false again while a source is busy: a screen that
// waits for the map after that moment must not wait forever (the command view's households stopped updating).
import { describe, expect, it } from "vitest";
import { trackLoad, whenLoaded } from "../src/map/ready.js";

function fakeMap() {
  const handlers = [];
  return {
    styleLoaded: false,
    once(event, fn) { if (event === "load") handlers.push(fn); },
    fire() { this.styleLoaded = true; handlers.splice(0).forEach((fn) => fn()); },
    loaded() { return false; },
    isStyleLoaded() { return this.styleLoaded; },
  };
}

describe("whenLoaded", () => {
  it("waits for the first load, then resolves even while a source is busy", async () => {
    const map = trackLoad(fakeMap());
    let done = false;
    const first = whenLoaded(map).then(() => { done = true; });
    await Promise.resolve();
    expect(done).toBe(false);
    map.fire();
    await first;
    expect(done).toBe(true);
    map.styleLoaded = false; // a GeoJSON setData in its worker: no further "load" will come
    const again = await Promise.race([whenLoaded(map), new Promise((r) => setTimeout(() => r("stuck"), 50))]);
    expect(again).toBe(map);
  });
});
