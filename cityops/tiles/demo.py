"""Demo step "building_tiles": the prepared tile geometry of the buildings the demo bulk-loaded (its loader writes
rows past the ORM, whose events prepare it for every other writer; cityops/tiles/prepared.py).

Deferrable: a building without it is encoded from its footprint when its tile is drawn (the same tile, more slowly),
so ``cityops demo`` runs this after its server answers instead of before. Batches are committed one by one, so the
single SQLite writer is never held for long while the server serves."""

from __future__ import annotations

import time

from cityops.demo.generator import DemoContext, register_step
from cityops.tiles import prepared

#: Buildings per committed batch.
BATCH = 5_000


def step_building_tiles(ctx: DemoContext) -> None:
    started = time.perf_counter()
    with ctx.sessions.kw["bind"].connect() as conn:
        n = prepared.fill(conn, batch=BATCH, on_batch=conn.commit)
    ctx.progress(f"building tiles: {n:,} footprints prepared in {time.perf_counter() - started:.1f} s")


register_step("building_tiles", step_building_tiles, after="buildings", deferrable=True)
