// The live player of a camera: hls.js (from npm, loaded with the player only) on a <video>, with the login token
// on every request to this server (the media route is scoped like the rest of the API), never on another
// host's (a configured media server). Safari plays HLS natively and gets the URL as it is.
import { authHeaders } from "../api/client.js";

/** Whether a URL is this server's (so it may carry the login token). */
export function sameOrigin(url, origin = globalThis.location ? globalThis.location.origin : "") {
  try {
    return new URL(url, origin || "http://localhost").origin === (origin || "http://localhost");
  } catch {
    return false;
  }
}

/**
 * Play `url` on `video`. Returns a handle with stop(); `onState` hears "loading", "playing", "error" (with the
 * reason: network or media).
 */
export async function play(video, url, { onState = () => {}, Hls = null } = {}) {
  onState("loading");
  const HlsClass = Hls || (await import("hls.js")).default;
  if (HlsClass.isSupported()) {
    const hls = new HlsClass({
      lowLatencyMode: true,
      backBufferLength: 30,
      xhrSetup(xhr, requestUrl) {
        if (!sameOrigin(requestUrl)) return;
        for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      },
    });
    hls.on(HlsClass.Events.ERROR, (_event, data) => {
      if (data.fatal) onState("error", data.type === HlsClass.ErrorTypes.NETWORK_ERROR ? "network" : "media");
    });
    video.addEventListener("playing", () => onState("playing"), { once: true });
    hls.loadSource(url);
    hls.attachMedia(video);
    hls.on(HlsClass.Events.MANIFEST_PARSED, () => { video.play().catch(() => {}); });
    return { stop() { hls.destroy(); video.removeAttribute("src"); video.load(); } };
  }
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    video.addEventListener("playing", () => onState("playing"), { once: true });
    video.addEventListener("error", () => onState("error", "media"), { once: true });
    video.play().catch(() => {});
    return { stop() { video.removeAttribute("src"); video.load(); } };
  }
  onState("error", "unsupported");
  return { stop() {} };
}

/** Sort key and label data for the nearest-camera list: in view first, then online, then nearest. */
export function rankCameras(items) {
  return items.slice().sort((a, b) => (Number(!a.in_view) - Number(!b.in_view))
    || (Number(a.status !== "online") - Number(b.status !== "online")) || a.distance_m - b.distance_m);
}

/** The camera to play first: the best-ranked online one. */
export function firstPlayable(items) {
  return rankCameras(items).find((c) => c.status === "online") || null;
}

/** A view cone as a GeoJSON polygon (degrees from north, metres), for cameras drawn from a list rather than /api/video/map. */
export function coneFeature(cam, steps = 12) {
  const [lon, lat] = [cam.lon, cam.lat];
  const mPerDegLat = 111_320;
  const mPerDegLon = 111_320 * Math.cos((lat * Math.PI) / 180);
  const ring = [];
  if (cam.fov_deg >= 360) {
    for (let i = 0; i <= 32; i++) {
      const a = (2 * Math.PI * i) / 32;
      ring.push([lon + (cam.range_m * Math.sin(a)) / mPerDegLon, lat + (cam.range_m * Math.cos(a)) / mPerDegLat]);
    }
  } else {
    ring.push([lon, lat]);
    const start = cam.direction_deg - cam.fov_deg / 2;
    for (let i = 0; i <= steps; i++) {
      const a = ((start + (cam.fov_deg * i) / steps) * Math.PI) / 180;
      ring.push([lon + (cam.range_m * Math.sin(a)) / mPerDegLon, lat + (cam.range_m * Math.cos(a)) / mPerDegLat]);
    }
    ring.push([lon, lat]);
  }
  return { type: "Feature", properties: { code: cam.code, name: cam.name, status: cam.status, part: "cone", in_view: !!cam.in_view },
    geometry: { type: "Polygon", coordinates: [ring] } };
}
