"""Per-layer feature tables, made at run time.

``layer_<key>`` holds the current features (id, fid, properties, geom, v_from: the version since which the
row is current). It is a GeoPackage feature table on SQLite and has a GiST index on PostGIS.
``layer_<key>_history`` keeps every superseded row with the versions it was current for,
[v_from, v_to), so any earlier version can be restored exactly. Ids are never reused (AUTOINCREMENT /
identity), so a restored row keeps its id.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import shapely
from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text

from cityops.core.bulk import rtree_trigger_suspended, write_rtree
from cityops.core.geometry import CANONICAL_SRID, Geometry, encode_many
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.types import JSONText

GEOMETRY_TYPES = ("POINT", "MULTIPOINT", "LINESTRING", "MULTILINESTRING", "POLYGON", "MULTIPOLYGON", "GEOMETRY")


@lru_cache(maxsize=512)
def tables(key: str, geometry_type: str) -> tuple[Table, Table]:
    """The (current, history) tables of a layer, named after its (immutable) key so that GDAL and QGIS
    list the layer as ``layer_<key>``."""
    metadata = MetaData()
    name = f"layer_{key}"
    current = Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("fid", Text),
        Column("properties", JSONText, nullable=False),
        Column("geom", Geometry(geometry_type)),
        Column("v_from", Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    history = Table(
        f"{name}_history", metadata,
        Column("id", Integer, primary_key=True),
        Column("feature_id", Integer, nullable=False, index=True),
        Column("fid", Text),
        Column("properties", JSONText, nullable=False),
        Column("geom", Geometry(geometry_type)),
        Column("v_from", Integer, nullable=False),
        Column("v_to", Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    return current, history


def create(conn: Connection, key: str, geometry_type: str, title: str) -> None:
    current, history = tables(key, geometry_type)
    current.create(conn)
    history.create(conn)
    # identifier = the table name: unique, where a bare key could clash with a core table (e.g. "buildings").
    register_spatial_table(current.name, "geom", geometry_type, title, bind=conn)


def drop(conn: Connection, key: str, geometry_type: str) -> None:
    current, history = tables(key, geometry_type)
    unregister_spatial_table(current.name, "geom", conn)
    history.drop(conn, checkfirst=True)
    current.drop(conn, checkfirst=True)


class BulkWriter:
    """Fast inserts of new current rows for a bulk import, inside the caller's transaction: values are
    encoded once per batch and handed to the driver's executemany, past SQLAlchemy's per-row processing;
    on SQLite the R*Tree is filled from the batch's bounds (see ``core.bulk``)."""

    def __init__(self, conn: Connection, table: Table):
        self.conn, self.table = conn, table
        self.sqlite = conn.dialect.name == "sqlite"
        self._suspension = rtree_trigger_suspended(conn, table.name)
        self.index_by_hand = False

    def __enter__(self) -> "BulkWriter":
        self.index_by_hand = self._suspension.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._suspension.__exit__(*exc)

    def insert(self, fids: list, properties: list[dict], geoms: np.ndarray, version: int) -> int:
        props = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in properties]
        if not props:
            return 0
        name = self.table.name
        if not self.sqlite:
            # COPY, with the geometry as hex EWKB carrying its SRID: several times a multi-row INSERT.
            geoms = np.asarray(geoms, dtype=object)
            present = np.array([g is not None for g in geoms], dtype=bool)
            hexes = np.full(len(geoms), None, dtype=object)
            if present.any():
                hexes[present] = shapely.to_wkb(shapely.set_srid(geoms[present], CANONICAL_SRID), hex=True,
                                                include_srid=True, flavor="extended")
            cursor = self.conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY {name} (fid, properties, geom, v_from) FROM STDIN") as copy:
                for f, p, g in zip(fids, props, hexes.tolist(), strict=True):
                    copy.write_row((f, p, g, version))
            return len(props)
        encoded = encode_many(geoms, self.conn.dialect.name)
        rows = [(f, p, bytes(g) if g is not None else None, version) for f, p, g in zip(fids, props, encoded, strict=True)]
        # AUTOINCREMENT ids are consecutive inside our write transaction: the next ones follow the sequence.
        start = self.conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).scalar() or 0
        self.conn.exec_driver_sql(f"INSERT INTO {name} (fid, properties, geom, v_from) VALUES (?, ?, ?, ?)", rows)
        end = self.conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).scalar()
        if end - start != len(rows):
            raise RuntimeError(f"unexpected id sequence in {name}: {start} → {end} for {len(rows)} rows")
        if self.index_by_hand:
            write_rtree(self.conn, name, np.arange(start + 1, end + 1), geoms)
        return len(rows)
