// The receipt board adds up after every live change: counts per level and totals recomputed from the receipts.
import { describe, expect, it } from "vitest";
import { applyReceipt, percent, progress, silentOnes } from "../src/directives/board.js";

const r = (id, state, extra = {}) => ({ id, state, overdue: false, escalated_at: null, ...extra });

function board() {
  const towns = [r(1, "sent"), r(2, "read"), r(3, "confirmed")];
  const villages = [r(4, "sent"), r(5, "reported")];
  return {
    levels: [{ depth: 1, level: "township", ...progress(towns), receipts: towns },
             { depth: 2, level: "village", ...progress(villages), receipts: villages }],
    totals: progress([...towns, ...villages]),
  };
}

describe("receipt board", () => {
  it("counts each state with those beyond it", () => {
    expect(board().totals).toEqual({ total: 5, read: 3, confirmed: 2, reported: 1, silent: 2 });
  });
  it("applies a confirmation to its level and the totals", () => {
    const next = applyReceipt(board(), r(1, "confirmed"));
    expect(next.levels[0]).toMatchObject({ total: 3, read: 3, confirmed: 2, silent: 0 });
    expect(next.levels[1]).toMatchObject({ total: 2, reported: 1 });
    expect(next.totals).toEqual({ total: 5, read: 4, confirmed: 3, reported: 1, silent: 1 });
    expect(silentOnes(next.levels[0]).map((x) => x.id)).toEqual([2]);
    expect(percent(next.levels[0], "confirmed")).toBe(67);
  });
  it("leaves the board alone for a receipt it does not hold", () => {
    expect(applyReceipt(board(), r(99, "read"))).toBeNull();
    expect(percent({ total: 0, read: 0 }, "read")).toBe(0);
  });
  it("counts escalations", () => {
    const next = applyReceipt(board(), r(4, "sent", { escalated_at: "2026-07-08T20:00:00Z" }));
    expect(next.levels[1].escalated).toBe(1);
  });
});
