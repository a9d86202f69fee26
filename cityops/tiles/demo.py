"""Demo step "building_tiles": the prepared tile geometry of the buildings the demo bulk-loaded (its loader writes
rows past the ORM, whose events prepare it for every other writer; cityops/tiles/prepared.py)."""

from __future__ import annotations

import time

from cityops.demo.generator import DemoContext, register_step
from cityops.tiles import prepared


def step_building_tiles(ctx: DemoContext) -> None:
    started = time.perf_counter()
    with ctx.sessions() as session:
        n = prepared.fill(session.connection())
        session.commit()
    ctx.progress(f"building tiles: {n:,} footprints prepared in {time.perf_counter() - started:.1f} s")


register_step("building_tiles", step_building_tiles, after="buildings")
