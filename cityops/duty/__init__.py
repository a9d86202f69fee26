"""值班值守 duty: rosters per center (district, each township) and per department, who is on duty now, swaps,
shift handovers (交接班) with their open items carried over."""
