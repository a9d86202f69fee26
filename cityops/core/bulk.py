"""Bulk-load helpers shared by layer imports and the demo generator.

On SQLite the GeoPackage R*Tree insert trigger calls back into Python (ST_MinX …) five times per row. For
a bulk load the trigger is suspended and the index rows are written from the batch's vectorised bounds,
then the trigger is restored — all inside the caller's transaction (SQLite DDL is transactional, so a
failed load rolls the trigger change back too). On PostGIS the GiST index needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import shapely
from sqlalchemy import Connection


@contextmanager
def rtree_trigger_suspended(conn: Connection, table: str, column: str = "geom") -> Iterator[bool]:
    """Yield True when the trigger was suspended (the caller then writes the index with write_rtree)."""
    if conn.dialect.name != "sqlite":
        yield False
        return
    name = f"rtree_{table}_{column}_insert"
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).scalar()
    if sql:
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
    try:
        yield bool(sql)
    finally:
        if sql:
            conn.exec_driver_sql(sql)


def write_rtree(conn: Connection, table: str, ids, geoms, column: str = "geom") -> None:
    """Index rows for ``ids`` from their geometries' bounds (empty and missing geometries are skipped)."""
    geoms = np.asarray(geoms, dtype=object)
    ids = np.asarray(ids)
    keep = shapely.is_geometry(geoms) & ~shapely.is_empty(geoms)
    if not keep.any():
        return
    bounds = shapely.bounds(geoms[keep])
    conn.exec_driver_sql(
        f"INSERT INTO rtree_{table}_{column} (id, minx, maxx, miny, maxy) VALUES (?, ?, ?, ?, ?)",
        list(zip(ids[keep].tolist(), bounds[:, 0].tolist(), bounds[:, 2].tolist(), bounds[:, 1].tolist(),
                 bounds[:, 3].tolist())))
