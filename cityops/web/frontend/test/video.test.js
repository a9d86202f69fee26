// The camera list's order, the view cone drawn for a camera, which requests carry the login token, and tel: links.
import { describe, expect, it } from "vitest";
import { coneFeature, firstPlayable, rankCameras, sameOrigin } from "../src/video/player.js";
import { telUri } from "../src/video/calls.js";

const cam = (code, in_view, status, distance_m) => ({ code, in_view, status, distance_m });

describe("cameras", () => {
  it("ranks those that see the place first, online before offline, then nearest", () => {
    const items = [cam("a", false, "online", 10), cam("b", true, "offline", 50), cam("c", true, "online", 80), cam("d", true, "online", 30)];
    expect(rankCameras(items).map((c) => c.code)).toEqual(["d", "c", "b", "a"]);
    expect(firstPlayable(items).code).toBe("d");
    expect(firstPlayable([cam("x", true, "offline", 1)])).toBe(null);
  });

  it("draws the view cone around the direction, as far as the camera sees", () => {
    const f = coneFeature({ code: "c", lon: 108.4, lat: 31.2, direction_deg: 90, fov_deg: 60, range_m: 100 });
    const ring = f.geometry.coordinates[0];
    expect(ring[0]).toEqual([108.4, 31.2]);
    expect(ring.at(-1)).toEqual([108.4, 31.2]);
    const mid = ring[1 + 6]; // the centre line: due east, 100 m
    expect(mid[1]).toBeCloseTo(31.2, 6);
    expect((mid[0] - 108.4) * 111320 * Math.cos((31.2 * Math.PI) / 180)).toBeCloseTo(100, 3);
    const all = coneFeature({ code: "d", lon: 108.4, lat: 31.2, direction_deg: 0, fov_deg: 360, range_m: 50 });
    expect(all.geometry.coordinates[0].length).toBe(33);
  });

  it("sends the token to this server only", () => {
    expect(sameOrigin("/api/video/cameras/x/stream/index.m3u8", "http://cityops.local")).toBe(true);
    expect(sameOrigin("http://cityops.local/a.m3u8", "http://cityops.local")).toBe(true);
    expect(sameOrigin("http://media.local:8888/x/index.m3u8", "http://cityops.local")).toBe(false);
  });
});

describe("click-to-call", () => {
  it("makes tel: links of phone numbers only", () => {
    expect(telUri("023-5222 1234")).toBe("tel:023-52221234");
    expect(telUri("+86 138 0000 0000")).toBe("tel:+8613800000000");
    expect(telUri("")).toBe(null);
    expect(telUri("javascript:alert(1)")).toBe(null);
  });
});
