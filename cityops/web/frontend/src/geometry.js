// Small planar geometry on lon/lat for the screens (is a sensor in the zone?). Zones are a few hundred metres
// across, so an equirectangular projection around the point is exact enough; written here because a point-in-
// polygon test is a dozen lines and a geometry library would cost the page far more.

function ringContains(ring, x, y) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function polygons(geometry) {
  if (!geometry) return [];
  if (geometry.type === "Polygon") return [geometry.coordinates];
  if (geometry.type === "MultiPolygon") return geometry.coordinates;
  return [];
}

/** Metres from [lon, lat] to the segment a–b (equirectangular around the point). */
function segmentDistance(p, a, b) {
  const kx = 111320 * Math.cos((p[1] * Math.PI) / 180);
  const ky = 110540;
  const ax = (a[0] - p[0]) * kx; const ay = (a[1] - p[1]) * ky;
  const bx = (b[0] - p[0]) * kx; const by = (b[1] - p[1]) * ky;
  const dx = bx - ax; const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 ? Math.max(0, Math.min(1, -(ax * dx + ay * dy) / len2)) : 0;
  return Math.hypot(ax + t * dx, ay + t * dy);
}

/** Whether [lon, lat] lies in the (multi)polygon, or within `buffer` metres of it. */
export function pointInGeometry(point, geometry, buffer = 0) {
  const [x, y] = point;
  for (const poly of polygons(geometry)) {
    if (ringContains(poly[0], x, y) && !poly.slice(1).some((hole) => ringContains(hole, x, y))) return true;
  }
  if (buffer > 0) {
    for (const poly of polygons(geometry)) {
      for (const ring of poly) {
        for (let i = 1; i < ring.length; i++) if (segmentDistance(point, ring[i - 1], ring[i]) <= buffer) return true;
      }
    }
  }
  return false;
}
