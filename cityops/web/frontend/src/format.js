// Formatting of what the API returns, in the UI language and the district's time zone (the duty room's clock,
// whatever the browser's own zone).
export const TIME_ZONE = "Asia/Shanghai";

function date(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** 2026-07-23 14:05 (24-hour clock, district time). */
export function formatDateTime(value, lang = "zh-CN") {
  const d = date(value);
  if (!d) return "—";
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: TIME_ZONE, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23",
  }).formatToParts(d);
  const get = (type) => parts.find((p) => p.type === type)?.value;
  void lang; // the same ISO-like form reads correctly in both languages
  return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}`;
}

/** 14:05:09 (district time). */
export function formatTime(value) {
  const d = date(value);
  if (!d) return "—";
  return new Intl.DateTimeFormat("en-GB", { timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit",
    hourCycle: "h23" }).format(d);
}

/** "3 分钟前" / "in 2 hours", relative to `now`. */
export function formatRelative(value, lang = "zh-CN", now = Date.now()) {
  const d = date(value);
  if (!d) return "—";
  const seconds = Math.round((d.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  const rtf = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
  if (abs < 60) return rtf.format(seconds, "second");
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(seconds / 3600), "hour");
  return rtf.format(Math.round(seconds / 86400), "day");
}

export function formatNumber(value, lang = "zh-CN", digits = 0) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString(lang, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** 850 m, 1.2 km. */
export function formatDistance(metres, lang = "zh-CN") {
  if (metres === null || metres === undefined || !Number.isFinite(Number(metres))) return "";
  const m = Number(metres);
  if (m < 1000) return `${Math.round(m)} m`;
  return `${(m / 1000).toLocaleString(lang, { maximumFractionDigits: m < 10000 ? 1 : 0 })} km`;
}

/** 0–100 with at most one decimal, or "—" when there is nothing to divide. */
export function percent(part, whole) {
  if (!whole) return null;
  return Math.round((1000 * part) / whole) / 10;
}

/** A measured value with its unit: "12.5 mm". */
export function formatValue(value, unit, lang = "zh-CN") {
  if (value === null || value === undefined) return "—";
  const n = Number(value);
  const text = Number.isFinite(n) ? n.toLocaleString(lang, { maximumFractionDigits: Math.abs(n) < 10 ? 2 : 1 }) : String(value);
  return unit ? `${text} ${unit}` : text;
}

/** Great-circle distance in metres between two [lon, lat] points. */
export function haversine(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b[1] - a[1]) * rad;
  const dLon = (b[0] - a[0]) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a[1] * rad) * Math.cos(b[1] * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(h));
}
