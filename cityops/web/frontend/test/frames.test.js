// The map's frame work: the sky pass is drawn only when the sky can change a pixel.
import { describe, expect, it } from "vitest";
import { drawSkyOnlyWhenItShows, skyShows } from "../src/map/frames.js";

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
