// What the cockpit reads from the indicators API, in the shapes the page draws:
//   GET /api/indicators/board?unit=&at=       sector tabs → runway cards (value, band, target, 30-day trend), the
//                                              red list with the case a breach opened, the unit's children
//   GET /api/indicators/{code}/children?unit=&at=   one indicator at each child unit (ranking, map colours)
//   GET /api/indicators/stream                 SSE: {indicator, unit_code, value, band, previous_band} per change
import { api } from "../api/client.js";
import { bandOf, districtDay, trendDays } from "./model.js";

const name = (x, zh = "name_zh", en = "name_en") => ({ name: x[zh], name_en: x[en] });

/**
 * The board of a unit as the page draws it: each runway's cards grouped by sub-runway (in the board's order,
 * worst first), each indicator with `shown` {value, band, period_start} and its trend as [{day, value, band}]: the
 * 30 days ending on the board's day, a day without a value with `value: null` (`trendDays`).
 */
export function shapeBoard(board) {
  const day = board.at ? districtDay(board.at) : null; // the trends end on the board's day, with or without a value
  const sectors = board.sectors.map((s) => ({
    code: s.code, ...name(s), red: s.red,
    runways: s.runways.filter((rw) => rw.cards.length).map((rw) => {
      const subs = [];
      for (const c of rw.cards) {
        let sub = subs.find((x) => x.code === c.subrunway);
        if (!sub) subs.push(sub = { code: c.subrunway, ...name(c, "subrunway_zh", "subrunway_en"), inds: [] });
        sub.inds.push({
          code: c.indicator, ...name(c), unit: c.unit, direction: c.direction, period: c.period, target: c.target,
          bands: c.bands, shown: { value: c.value, band: c.band || "none", period_start: c.period_start },
          series: trendDays(c.trend.map(([at, value]) => ({ day: districtDay(at), value, band: bandOf(value, c.bands, c.direction) })),
            day),
        });
      }
      return { code: rw.code, ...name(rw), owner: rw.owner, band: rw.band || "none", subs };
    }),
  }));
  return { unit: board.unit, at: board.at, sectors, redList: board.red_list, children: board.children };
}

export async function loadBoard(unit, at) {
  return shapeBoard(await api.get("/api/indicators/board", { params: { unit, at } }));
}

/**
 * One indicator at each child of `unit`: code → {value, band, period_start, previous}, `previous` being the value of the period
 * before (for the ranking's change), read in the same two requests for every child.
 */
export async function loadChildValues(indicator, unit, at) {
  const path = `/api/indicators/${encodeURIComponent(indicator)}/children`;
  const now = await api.get(path, { params: { unit, at } });
  const out = Object.fromEntries(now.items.map((v) => [v.unit_code,
    { value: v.value, band: v.band || "none", period_start: v.period_start, previous: null }]));
  const starts = now.items.map((v) => Date.parse(v.period_start)).filter(Number.isFinite);
  if (starts.length) {
    const before = await api.get(path, { params: { unit, at: new Date(Math.min(...starts) - 1000).toISOString() } });
    for (const v of before.items) if (out[v.unit_code]) out[v.unit_code].previous = v.value;
  }
  return out;
}

/**
 * Today's key numbers over the map: indicators of the shipped catalogue, one code or [part, whole] ("moved of
 * threatened"); those a catalogue lacks are left out.
 */
export const KEY_NUMBERS = [["cases_reported"], ["cases_open"], ["cases_overdue"], ["alarms_open"], ["risk_points_warned"],
  ["risk_points_red"], ["incidents_active"], ["households_moved", "households_threatened"]];

export const STREAM_URL = "/api/indicators/stream";
