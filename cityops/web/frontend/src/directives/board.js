// The receipt board's shaping (一览无余): a receipt change from the live stream is applied to the board the page
// holds, and the counts of its level and the totals are recomputed from the receipts, so what the page shows
// always adds up — the same rule as the server's (each state counts the receipts at it or beyond).
export const STATES = ["sent", "read", "confirmed", "reported"];

/** {total, read, confirmed, reported, silent} of a list of receipts. */
export function progress(receipts) {
  const at = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const r of receipts) at[r.state] = (at[r.state] || 0) + 1;
  const reached = (i) => STATES.slice(i).reduce((n, s) => n + at[s], 0);
  return { total: receipts.length, read: reached(1), confirmed: reached(2), reported: reached(3), silent: at.sent };
}

/** A new board with `receipt` replacing the one of the same id (unknown ids: the board is unchanged, null). */
export function applyReceipt(board, receipt) {
  let found = false;
  const levels = board.levels.map((level) => {
    const i = level.receipts.findIndex((r) => r.id === receipt.id);
    if (i < 0) return level;
    found = true;
    const receipts = level.receipts.slice();
    receipts[i] = receipt;
    return { ...level, ...progress(receipts), overdue: receipts.filter((r) => r.overdue).length,
             escalated: receipts.filter((r) => r.escalated_at).length, receipts };
  });
  if (!found) return null;
  return { ...board, levels, totals: progress(levels.flatMap((l) => l.receipts)) };
}

/** Percent of a level's receipts at `state` or beyond (0 when empty). */
export function percent(counts, state) {
  return counts.total ? Math.round((100 * counts[state]) / counts.total) : 0;
}

/** The receipts still silent (not confirmed), the board's first concern, in path order. */
export function silentOnes(level) {
  return level.receipts.filter((r) => r.state === "sent" || r.state === "read");
}
