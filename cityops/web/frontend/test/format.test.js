import { describe, expect, it } from "vitest";
import { formatDateTime, formatDistance, formatRelative, formatTime, formatValue, haversine, percent } from "../src/format.js";
import { pointInGeometry } from "../src/geometry.js";
import { sensorStatus, SENSOR_STALE_MS } from "../src/map/live.js";

describe("formatting", () => {
  it("shows times on the district's clock whatever the browser's zone", () => {
    expect(formatDateTime("2026-07-23T06:05:00Z")).toBe("2026-07-23 14:05");
    expect(formatDateTime("2026-07-23T16:30:00Z")).toBe("2026-07-24 00:30");
    expect(formatTime("2026-07-23T06:05:09Z")).toBe("14:05:09");
    expect(formatDateTime(null)).toBe("—");
    expect(formatDateTime("not a time")).toBe("—");
  });

  it("says how long ago in the UI language", () => {
    const now = Date.parse("2026-07-23T06:00:00Z");
    expect(formatRelative("2026-07-23T05:57:00Z", "zh-CN", now)).toBe("3分钟前");
    expect(formatRelative("2026-07-23T08:00:00Z", "en", now)).toBe("in 2 hours");
  });

  it("writes distances, values and percentages as people read them", () => {
    expect(formatDistance(342.4)).toBe("342 m");
    expect(formatDistance(2900)).toBe("2.9 km");
    expect(formatDistance(17400)).toBe("17 km");
    expect(formatDistance(null)).toBe("");
    expect(formatValue(0.883, "mm")).toBe("0.88 mm");
    expect(formatValue(126.54, "mm")).toBe("126.5 mm");
    expect(formatValue(null, "mm")).toBe("—");
    expect(percent(3, 112)).toBe(2.7);
    expect(percent(0, 0)).toBeNull();
  });

  it("measures great-circle distance", () => {
    expect(haversine([108.32, 31.04], [108.32, 31.05])).toBeCloseTo(1112, -1);
  });
});

describe("geometry", () => {
  const square = { type: "Polygon", coordinates: [[[108, 31], [108.01, 31], [108.01, 31.01], [108, 31.01], [108, 31]]] };
  const withHole = { type: "Polygon", coordinates: [square.coordinates[0],
    [[108.004, 31.004], [108.006, 31.004], [108.006, 31.006], [108.004, 31.006], [108.004, 31.004]]] };

  it("finds points in a zone, not in its holes, and near it within a buffer", () => {
    expect(pointInGeometry([108.005, 31.005], square)).toBe(true);
    expect(pointInGeometry([108.005, 31.005], withHole)).toBe(false);
    expect(pointInGeometry([108.0125, 31.005], square)).toBe(false);
    expect(pointInGeometry([108.0125, 31.005], square, 300)).toBe(true); // ~240 m east of the edge
    expect(pointInGeometry([108.02, 31.005], square, 300)).toBe(false);
    expect(pointInGeometry([108.005, 31.005], { type: "MultiPolygon", coordinates: [square.coordinates] })).toBe(true);
  });
});

describe("sensor status", () => {
  const now = Date.parse("2026-07-23T06:00:00Z");
  it("is online while its newest reading is fresh, and names that reading", () => {
    const device = { datastreams: [{ last_time: "2026-07-23T05:50:00Z", last_value: 1.2, unit: "mm" },
      { last_time: "2026-07-23T01:00:00Z", last_value: 9 }] };
    const s = sensorStatus(device, now);
    expect(s.online).toBe(true);
    expect(s.latest.last_value).toBe(1.2);
    expect(sensorStatus(device, now + SENSOR_STALE_MS + 11 * 60000).online).toBe(false);
    expect(sensorStatus({ datastreams: [] }, now).online).toBe(false);
  });
});
