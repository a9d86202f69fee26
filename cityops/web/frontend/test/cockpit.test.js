// The cockpit's logic: red first, a runway's worst band, the band of a value, the ranking with its change, the
// slider's days, the drill path and how values read.
import { describe, expect, it } from "vitest";
import { shapeBoard } from "../src/cockpit/data.js";
import { addDays, applyChange, bandOf, bandRank, childLevel, districtDay, drillPath, endOfDay, formatIndicator, isolated,
  olderPeriod, Pushed, rankUnits, sliderDays, trendDays, TREND_DAYS, worstBand, worstFirst }
  from "../src/cockpit/model.js";

describe("bands", () => {
  it("orders red, orange, yellow, green, then no value", () => {
    expect(["green", "none", "red", "yellow", "orange"].sort((a, b) => bandRank(a) - bandRank(b)))
      .toEqual(["red", "orange", "yellow", "green", "none"]);
    expect(bandRank(undefined)).toBe(bandRank("none"));
  });

  it("takes the worst band of a runway's indicators; none when nothing has a value", () => {
    expect(worstBand(["green", "yellow", null, "green"])).toBe("yellow");
    expect(worstBand(["green", "red", "orange"])).toBe("red");
    expect(worstBand([null, undefined])).toBe("none");
    expect(worstBand([])).toBe("none");
  });

  it("puts the red items first and keeps the catalogue order among equals", () => {
    const items = [{ c: "a", b: "green" }, { c: "b", b: "red" }, { c: "c", b: "none" }, { c: "d", b: "red" }, { c: "e", b: "yellow" }];
    expect(worstFirst(items, (x) => x.b).map((x) => x.c)).toEqual(["b", "d", "e", "a", "c"]);
  });
});

describe("ranking of units", () => {
  const rows = [
    { code: "t1", name: "义和镇", value: 92.5 },
    { code: "t2", name: "大德镇", value: 97 },
    { code: "t3", name: "汉丰街道", value: null },
    { code: "t4", name: "镇安镇", value: 92.5 },
  ];

  it("ranks higher-is-better best first, ties share a rank, units without a value last", () => {
    const ranked = rankUnits(rows, "higher");
    expect(ranked.map((r) => [r.code, r.rank])).toEqual([["t2", 1], ["t1", 2], ["t4", 2], ["t3", null]]);
  });

  it("ranks lower-is-better smallest first", () => {
    expect(rankUnits(rows, "lower").map((r) => r.code)).toEqual(["t1", "t4", "t2", "t3"]);
  });

  it("gives the change of value and of rank since the last period (positive: moved up)", () => {
    const ranked = rankUnits(rows, "higher", { t1: 99, t2: 90, t4: 80 });
    const by = Object.fromEntries(ranked.map((r) => [r.code, r]));
    // Before: t1 (99) 1st, t2 (90) 2nd, t4 (80) 3rd. Now: t2 1st, t1 and t4 2nd.
    expect(by.t2.rank_change).toBe(1);
    expect(by.t1.rank_change).toBe(-1);
    expect(by.t4.rank_change).toBe(1);
    expect(by.t1.change).toBeCloseTo(-6.5);
    expect(by.t3.change).toBeNull();
    expect(by.t3.rank_change).toBeNull();
  });
});

describe("time slider", () => {
  it("has today and the 30 days before it on the district's clock, oldest first", () => {
    // 2026-07-23 17:30 UTC is already 2026-07-24 on the district's clock (UTC+8).
    const days = sliderDays(new Date("2026-07-23T17:30:00Z"));
    expect(days).toHaveLength(31);
    expect(days[30]).toBe("2026-07-24");
    expect(days[0]).toBe("2026-06-24");
  });
});

describe("drill-down", () => {
  const chain = [{ code: "500154", level: "district" }, { code: "500154102", level: "township" },
    { code: "500154102201", level: "village" }];

  it("starts the path at the user's own top unit", () => {
    expect(drillPath(chain, "500154").map((u) => u.code)).toEqual(["500154", "500154102", "500154102201"]);
    expect(drillPath(chain, "500154102").map((u) => u.code)).toEqual(["500154102", "500154102201"]);
  });

  it("goes district → township → village → grid, and no further", () => {
    expect(childLevel("district")).toBe("township");
    expect(childLevel("village")).toBe("grid");
    expect(childLevel("grid")).toBeNull();
  });
});

describe("values", () => {
  it("reads integers plainly, rates with one or two decimals, percentages without a space", () => {
    expect(formatIndicator(12, "件", "zh-CN")).toBe("12 件");
    expect(formatIndicator(93.456, "%", "zh-CN")).toBe("93.5%");
    expect(formatIndicator(0.456, "", "en")).toBe("0.46");
    expect(formatIndicator(null, "%")).toBe("—");
  });
});

describe("band of a value", () => {
  const lower = { yellow: 5, orange: 10, red: 20 };
  const higher = { yellow: 95, orange: 90, red: 80 };

  it("judges lower-is-better at or above each threshold, the worst reached winning", () => {
    expect(bandOf(4, lower, "lower")).toBe("green");
    expect(bandOf(5, lower, "lower")).toBe("yellow");
    expect(bandOf(19.9, lower, "lower")).toBe("orange");
    expect(bandOf(20, lower, "lower")).toBe("red");
  });

  it("judges higher-is-better at or below, skips bands a definition leaves out, and has none without a value", () => {
    expect(bandOf(96, higher, "higher")).toBe("green");
    expect(bandOf(90, higher, "higher")).toBe("orange");
    expect(bandOf(79, higher, "higher")).toBe("red");
    expect(bandOf(85, { red: 80 }, "higher")).toBe("green");
    expect(bandOf(null, higher, "higher")).toBe("none");
  });

  it("reads a time as a day on the district's clock", () => {
    expect(districtDay("2026-07-23T16:30:00Z")).toBe("2026-07-24");
    expect(endOfDay("2026-07-24")).toBe("2026-07-24T23:59:59+08:00");
  });
});

describe("values pushed while a board was asked for", () => {
  it("are drawn again over the board's answer: the latest of each indicator and unit after the mark, in order", () => {
    const pushed = new Pushed();
    pushed.add({ indicator: "cases_open", unit_code: "d", value: 110 });
    const mark = pushed.mark(); // the board is asked for here
    expect(pushed.since(mark)).toEqual([]);
    pushed.add({ indicator: "cases_open", unit_code: "d", value: 111 });
    pushed.add({ indicator: "alarms_open", unit_code: "d", value: 6 });
    pushed.add({ indicator: "cases_open", unit_code: "d", value: 112 });
    pushed.add({ indicator: "cases_open", unit_code: "t1", value: 3 });
    expect(pushed.since(mark).map((c) => [c.indicator, c.unit_code, c.value]))
      .toEqual([["alarms_open", "d", 6], ["cases_open", "d", 112], ["cases_open", "t1", 3]]);
    const later = pushed.mark();
    pushed.add({ indicator: "alarms_open", unit_code: "d", value: 7 });
    expect(pushed.since(later).map((c) => c.value)).toEqual([7]);
    expect(pushed.since(0).map((c) => c.value)).toEqual([112, 3, 7]);
  });
});

describe("a pushed change on a card", () => {
  // Today is 2026-07-24 on the district's clock (its day starts at 16:00 UTC the day before).
  const today = "2026-07-23T16:00:00+00:00";
  const yesterday = "2026-07-22T16:00:00+00:00";
  const card = () => ({
    shown: { value: 12, band: "green", period_start: today },
    series: [{ day: "2026-07-22", value: 9, band: "green" }, { day: "2026-07-24", value: 12, band: "green" }],
  });

  it("of the period shown replaces the value and today's point of the trend", () => {
    const next = applyChange(card(), { indicator: "cases_open", unit_code: "d", period_start: today, value: 14, band: "yellow" });
    expect(next.shown).toEqual({ value: 14, band: "yellow", period_start: today });
    expect(next.series).toEqual([{ day: "2026-07-22", value: 9, band: "green" }, { day: "2026-07-24", value: 14, band: "yellow" }]);
    expect(next.moved).toBe(true);
  });

  it("of a past day (a history written while the cockpit is open) is not shown as today's, nor drawn in the trend", () => {
    const ind = card();
    expect(applyChange(ind, { indicator: "cases_open", unit_code: "d", period_start: yesterday, value: 3, band: "red" })).toBeNull();
    expect(olderPeriod({ period_start: yesterday }, today)).toBe(true);
    expect(olderPeriod({ period_start: today }, today)).toBe(false);
    expect(olderPeriod({ period_start: today }, null)).toBe(false);
  });

  it("of a new day moves the trend's window on to it; a card without a value takes any", () => {
    const tomorrow = "2026-07-24T16:00:00+00:00";
    const next = applyChange(card(), { period_start: tomorrow, value: 1, band: null });
    expect(next.shown).toEqual({ value: 1, band: "none", period_start: tomorrow });
    expect(next.series).toHaveLength(TREND_DAYS);
    expect(next.series[0].day).toBe(addDays("2026-07-25", 1 - TREND_DAYS));
    expect(next.series.slice(-4)).toEqual([{ day: "2026-07-22", value: 9, band: "green" },
      { day: "2026-07-23", value: null, band: "none" }, { day: "2026-07-24", value: 12, band: "green" },
      { day: "2026-07-25", value: 1, band: "none" }]);
    const empty = { shown: { value: null, band: "none", period_start: null }, series: [] };
    const first = applyChange(empty, { period_start: today, value: 5, band: "green" }).series;
    expect(first.at(-1)).toEqual({ day: "2026-07-24", value: 5, band: "green" });
    expect(first.slice(0, -1).every((p) => p.value === null)).toBe(true);
  });

  it("of a past period does not replace the latest pushed value drawn again over a board", () => {
    const pushed = new Pushed();
    pushed.add({ indicator: "cases_open", unit_code: "d", period_start: today, value: 12 });
    pushed.add({ indicator: "cases_open", unit_code: "d", period_start: yesterday, value: 3 });
    expect(pushed.since(0).map((c) => c.value)).toEqual([12]);
  });
});

describe("an indicator's trend", () => {
  const point = (day, value) => ({ day, value, band: "green" });

  it("spans every day of the window, those without a value as gaps, ending on the board's day", () => {
    // The demo serves before it writes its month of history: the first days written and today, nothing between.
    const written = [point("2026-11-09", 2), point("2026-11-10", 4), point("2026-11-11", 2), point("2026-12-08", 20)];
    const days = trendDays(written, "2026-12-08");
    expect(days).toHaveLength(30);
    expect(days[0]).toEqual(point("2026-11-09", 2));
    expect(days.at(-1)).toEqual(point("2026-12-08", 20)); // today at the end, where the axis says
    expect(days.at(-2)).toEqual({ day: "2026-12-07", value: null, band: "none" }); // not a line from 11-11 to today
    expect(days.filter((p) => p.value !== null)).toHaveLength(4);
    expect(days.map((p) => p.day)).toEqual(Array.from({ length: 30 }, (_, i) => addDays("2026-11-09", i)));
  });

  it("ends on the board's day even without a value that day, and keeps an indicator without day values empty", () => {
    const days = trendDays([point("2026-12-01", 3)], "2026-12-08");
    expect(days.at(-1)).toEqual({ day: "2026-12-08", value: null, band: "none" });
    expect(days.find((p) => p.day === "2026-12-01").value).toBe(3);
    expect(trendDays([], "2026-12-08")).toEqual([]);
    expect(addDays("2024-03-01", -1)).toBe("2024-02-29"); // calendar days, whatever the clock's zone
  });

  it("marks a day alone between gaps (a dot: a line needs two days)", () => {
    const days = trendDays([point("2026-11-09", 2), point("2026-11-10", 4), point("2026-12-08", 20)], "2026-12-08");
    expect(isolated(days, 29)).toBe(true);
    expect(isolated(days, 0)).toBe(false);
    expect(isolated(days, 5)).toBe(false); // no value
  });

  it("as the board is shaped: the trend's days on the district's clock, up to the board's", () => {
    const card = { indicator: "cases_reported", name_zh: "上报案件数", name_en: "Cases reported", subrunway: "s",
      subrunway_zh: "s", subrunway_en: "s", unit: "件", direction: "lower", period: "day", target: null,
      bands: null, value: 20, band: "green", period_start: "2026-12-07T16:00:00+00:00",
      trend: [["2026-11-08T16:00:00+00:00", 2], ["2026-11-09T16:00:00+00:00", 4], ["2026-12-07T16:00:00+00:00", 20]] };
    const board = { unit: { code: "d" }, at: "2026-12-07T21:32:04Z", red_list: [], children: [],
      sectors: [{ code: "x", name_zh: "x", name_en: "x", red: 0, runways: [{ code: "r", name_zh: "r", name_en: "r",
        owner: null, band: "green", cards: [card] }] }] };
    const series = shapeBoard(board).sectors[0].runways[0].subs[0].inds[0].series;
    expect(series).toHaveLength(30);
    expect(series[0]).toMatchObject({ day: "2026-11-09", value: 2 });
    expect(series[1]).toMatchObject({ day: "2026-11-10", value: 4 });
    expect(series[2]).toMatchObject({ day: "2026-11-11", value: null });
    expect(series.at(-1)).toMatchObject({ day: "2026-12-08", value: 20 });
  });
});
