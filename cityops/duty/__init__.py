"""值班值守 duty: rosters per center (district, each township) and per department, who is on duty now, swaps,
shift handovers (交接班) with their open items carried over."""

from cityops.duty import demo as _demo  # noqa: E402,F401  (registers the "duty" demo step)
