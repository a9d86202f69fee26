// The cockpit's logic that does not touch the screen: band colours and order, a runway's worst band, the red list
// first, the ranking of units with their change, the 30-day window of the time slider and the drill path.
// Plain functions over what the indicators API returns, tested with Vitest.

/** 绿/黄/橙/红 (and "no value"): colours of the bands on cards, map and charts. */
export const BAND_COLOURS = { green: "#22c55e", yellow: "#f2c037", orange: "#f5821f", red: "#e5484d", none: "#64748b" };
/** Worst first. */
export const BAND_ORDER = ["red", "orange", "yellow", "green", "none"];
export const LEVELS = ["district", "township", "village", "grid"];
export const SLIDER_DAYS = 30;

export const bandRank = (band) => {
  const i = BAND_ORDER.indexOf(band || "none");
  return i < 0 ? BAND_ORDER.length : i;
};
export const bandColour = (band) => BAND_COLOURS[band] || BAND_COLOURS.none;

/** The worst of some bands ("none" when none has a value). */
export function worstBand(bands) {
  let worst = "none";
  for (const b of bands) if (b && bandRank(b) < bandRank(worst)) worst = b;
  return worst;
}

/**
 * The band of a value by an indicator's thresholds (as the server judges): lower-is-better reaches a band at or
 * above its threshold, higher-is-better at or below; the worst band reached wins, green when none is.
 */
export function bandOf(value, bands, direction) {
  if (value === null || value === undefined || !bands) return "none";
  for (const name of ["red", "orange", "yellow"]) {
    const limit = bands[name];
    if (limit === null || limit === undefined) continue;
    if (direction === "lower" ? value >= limit : value <= limit) return name;
  }
  return "green";
}

/** Stable sort, worst band first; `bandOf(item)` says an item's band. */
export function worstFirst(items, bandOf) {
  return items.map((item, i) => ({ item, i, r: bandRank(bandOf(item)) }))
    .sort((a, b) => a.r - b.r || a.i - b.i).map((x) => x.item);
}

/** The level under `level` (a district's children are townships …); null under the last. */
export function childLevel(level) {
  const i = LEVELS.indexOf(level);
  return i >= 0 && i < LEVELS.length - 1 ? LEVELS[i + 1] : null;
}

/**
 * Units ranked by an indicator's value: best first by its direction ("higher" or "lower" is better), units
 * without a value last. `previous` (code → value of the last period) gives each row's change and `rank_change`
 * (positive: moved up). Ties share a rank.
 */
export function rankUnits(rows, direction, previous = {}) {
  const sign = direction === "lower" ? 1 : -1;
  const valued = rows.filter((r) => r.value !== null && r.value !== undefined);
  const rest = rows.filter((r) => r.value === null || r.value === undefined);
  const order = (list) => list.slice().sort((a, b) => sign * (a.value - b.value) || String(a.name).localeCompare(String(b.name), "zh-CN"));
  const ranked = order(valued);
  const rankOf = (list) => {
    const out = new Map();
    list.forEach((r, i) => out.set(r.code, i > 0 && list[i - 1].value === r.value ? out.get(list[i - 1].code) : i + 1));
    return out;
  };
  const now = rankOf(ranked);
  const before = rankOf(order(valued.filter((r) => previous[r.code] !== undefined && previous[r.code] !== null)
    .map((r) => ({ ...r, value: previous[r.code] }))));
  return [...ranked, ...rest].map((r) => ({
    ...r,
    rank: now.get(r.code) ?? null,
    change: previous[r.code] !== undefined && previous[r.code] !== null && r.value !== null && r.value !== undefined
      ? r.value - previous[r.code] : null,
    rank_change: now.has(r.code) && before.has(r.code) ? before.get(r.code) - now.get(r.code) : null,
  }));
}

/** The end of a slider day (YYYY-MM-DD) on the district's clock, as an ISO time for the API's `at`. */
export const endOfDay = (day) => `${day}T23:59:59+08:00`;

/** A day (YYYY-MM-DD) on the district's clock of an ISO time. */
export function districtDay(value) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" })
    .format(new Date(value));
}

/** The days of the slider, oldest first, as YYYY-MM-DD on the district's clock: today and the 30 before. */
export function sliderDays(now = new Date(), days = SLIDER_DAYS) {
  const fmt = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" });
  const out = [];
  for (let i = days; i >= 0; i -= 1) out.push(fmt.format(new Date(now.getTime() - i * 86400000)));
  return out;
}

/** The days of an indicator's trend (the board's `trend`, "近30天走势"). */
export const TREND_DAYS = 30;

/** The day (YYYY-MM-DD) `n` calendar days after `day` (before it when negative). */
export function addDays(day, n) {
  return new Date(Date.parse(`${day}T00:00:00Z`) + n * 86400000).toISOString().slice(0, 10);
}

/**
 * An indicator's trend as drawn: every day of the `days` ending on `lastDay` (YYYY-MM-DD, or the last point's day
 * when later), oldest first, a day without a stored value as `{day, value: null, band: "none"}`. The charts draw
 * such a day as a gap, never as a line across it: while the demo still writes its month of history, the days
 * written so far and today's value were drawn side by side, a month's change as one day's step. An indicator
 * without day values (a monthly one) keeps its empty trend.
 */
export function trendDays(points, lastDay, days = TREND_DAYS) {
  if (!points.length) return [];
  const latest = points[points.length - 1].day;
  const end = lastDay && lastDay > latest ? lastDay : latest;
  const byDay = new Map(points.map((p) => [p.day, p]));
  const out = [];
  for (let i = days - 1; i >= 0; i -= 1) {
    const day = addDays(end, -i);
    out.push(byDay.get(day) || { day, value: null, band: "none" });
  }
  return out;
}

/** Whether the `i`th point stands alone between days without a value (drawn as a dot: a line needs two). */
export function isolated(points, i) {
  const known = (p) => p && p.value !== null && p.value !== undefined;
  return known(points[i]) && !known(points[i - 1]) && !known(points[i + 1]);
}

/**
 * The path shown in the breadcrumb when drilling: from the user's top unit down to `unit`. `chain` is the unit's
 * chain of ancestors from the API (top first, the unit last); units above the user's top unit are dropped.
 */
export function drillPath(chain, topCode) {
  const i = chain.findIndex((u) => u.code === topCode);
  return i >= 0 ? chain.slice(i) : chain.slice(-1);
}

/** A value as a leader reads it: integers plain, rates with one decimal, with the unit. */
export function formatIndicator(value, unit, lang = "zh-CN") {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "—";
  const n = Number(value);
  const digits = Number.isInteger(n) ? 0 : Math.abs(n) < 10 ? 2 : 1;
  const text = n.toLocaleString(lang, { maximumFractionDigits: digits });
  if (!unit) return text;
  return unit === "%" ? `${text}%` : `${text} ${unit}`;
}

/**
 * The values the stream pushed, the latest per indicator and unit, numbered as they arrived. A board asked for
 * before some of them arrived may have been read before they were stored: its answer would draw an older number
 * over a newer one until the next change (a case count shown one lower, for as long as nothing else moved). So the
 * page takes `mark()` when it asks for a board and draws `since(mark)` again over the answer.
 */
export class Pushed {
  constructor() {
    this.n = 0;
    this.latest = new Map();
  }

  add(change) {
    const key = `${change.indicator}\u0000${change.unit_code}`;
    const held = this.latest.get(key);
    if (held && olderPeriod(change, held.change.period_start)) return; // a past period's value is not the latest
    this.n += 1;
    this.latest.set(key, { n: this.n, change });
  }

  mark() {
    return this.n;
  }

  /** The latest change of each indicator and unit pushed after `mark`, in the order they arrived. */
  since(mark) {
    return [...this.latest.values()].filter((e) => e.n > mark).sort((a, b) => a.n - b.n).map((e) => e.change);
  }
}

/** Whether a pushed change is of a period older than the one starting at `shownStart` (an ISO time; none: no). */
export function olderPeriod(change, shownStart) {
  const mine = Date.parse(change && change.period_start);
  const shown = Date.parse(shownStart);
  return Number.isFinite(mine) && Number.isFinite(shown) && mine < shown;
}

/**
 * A pushed change drawn on an indicator card `{shown: {value, band, period_start}, series: [{day, value, band}]}`:
 * the card's new `shown` and `series` and whether its band `moved`; null when the change is of a period older than
 * the one shown (a past day written while the cockpit is open is history, not today's value). The trend's last
 * point is replaced when the change is of its day, a later day moves its window on (the days between without a
 * value), and an earlier day leaves the trend as it is.
 */
export function applyChange(ind, change) {
  if (olderPeriod(change, ind.shown.period_start)) return null;
  const band = change.band || "none";
  const point = { day: districtDay(change.period_start), value: change.value, band };
  const last = ind.series[ind.series.length - 1];
  let series = ind.series;
  if (last && last.day === point.day) series = [...series.slice(0, -1), point]; // a new array: the sparkline redraws
  else if (!last || last.day < point.day) series = trendDays([...series, point], point.day); // the window moves on
  return { shown: { value: change.value, band, period_start: change.period_start ?? ind.shown.period_start },
    series, moved: ind.shown.band !== band };
}
