"""Per-layer feature tables, made at run time.

``layer_<key>`` holds the current features (id, fid, properties, geom, v_from: the version since which the
row is current). It is a GeoPackage feature table on SQLite and has a GiST index on PostGIS.
``layer_<key>_history`` keeps every superseded row with the versions it was current for,
[v_from, v_to), so any earlier version can be restored exactly. Ids are never reused (AUTOINCREMENT /
identity), so a restored row keeps its id.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text

from cityops.core.geometry import Geometry
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
    register_spatial_table(current.name, "geom", geometry_type, title, identifier=key, bind=conn)


def drop(conn: Connection, key: str, geometry_type: str) -> None:
    current, history = tables(key, geometry_type)
    unregister_spatial_table(current.name, "geom", conn)
    history.drop(conn, checkfirst=True)
    current.drop(conn, checkfirst=True)
