"""Spatial predicates with identical results on both backends.

PostGIS evaluates predicates in SQL (GiST-indexed). SQLite narrows candidates with the GeoPackage R*Tree
and evaluates the exact predicate with Shapely. Both ends use GEOS, so intersects/within/contains agree.
Distances are metres in the deployment's metric CRS (a CGCS2000 Gauss–Krüger zone): PostGIS transforms
with PROJ in SQL, SQLite with pyproj, so ``dwithin`` agrees too.
"""

from __future__ import annotations

from typing import Literal

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Select, func, literal
from sqlalchemy.orm import Session

from cityops.core.crs import from_metric, parse_crs, to_metric
from cityops.core.geometry import CANONICAL_SRID
from cityops.core.storage import storage_of

Predicate = Literal["intersects", "within", "contains", "dwithin"]

_SQL_PREDICATES = {"intersects": "ST_Intersects", "within": "ST_Within", "contains": "ST_Contains"}


def buffer_m(geom: BaseGeometry, metres: float, metric_crs: str) -> BaseGeometry:
    """Buffer ``geom`` (canonical CRS) by ``metres``, computed in the metric CRS."""
    return from_metric(to_metric(geom, metric_crs).buffer(metres, quad_segs=16), metric_crs)


def _search_envelope(geom: BaseGeometry, distance_m: float | None, metric_crs: str) -> tuple[float, float, float, float]:
    if not distance_m:
        return geom.bounds
    # Conservative: the buffer's bounds, padded a little for the curvature of the projected box edges.
    minx, miny, maxx, maxy = buffer_m(shapely.envelope(geom), distance_m * 1.01 + 1.0, metric_crs).bounds
    return minx, miny, maxx, maxy


def bbox_prefilter(stmt: Select, dialect: str, table: str, id_column, geom_column,
                   bounds: tuple[float, float, float, float], geom_name: str = "geom") -> Select:
    """``Storage.bbox_prefilter`` of the backend named ``dialect`` (callers that hold a session use
    ``storage_of(session).bbox_prefilter``)."""
    return storage_of(dialect).bbox_prefilter(stmt, table, id_column, geom_column, bounds, geom_name)


def spatial_filter(
    session: Session,
    model,
    stmt: Select,
    predicate: Predicate,
    geom: BaseGeometry,
    *,
    distance_m: float | None = None,
    metric_crs: str = "EPSG:4545",
    geom_attr: str = "geom",
) -> list:
    """Run ``stmt`` (a ``select(model)``) restricted to rows whose geometry satisfies ``predicate``
    against ``geom`` (canonical CRS). ``within``/``contains`` read as "row geometry within/contains geom".
    Rows come back ordered by primary key."""
    column = getattr(model, geom_attr)
    table = model.__table__.name
    envelope = _search_envelope(geom, distance_m if predicate == "dwithin" else None, metric_crs)
    dialect = session.get_bind().dialect.name
    stmt = bbox_prefilter(stmt, dialect, table, model.id, column, envelope, geom_attr)
    if dialect == "postgresql":
        query_geom = func.ST_GeomFromWKB(literal(shapely.to_wkb(geom), type_=None), CANONICAL_SRID)
        raw_column = column.expression if hasattr(column, "expression") else column
        if predicate == "dwithin":
            srid = parse_crs(metric_crs).epsg
            stmt = stmt.where(
                func.ST_DWithin(func.ST_Transform(raw_column, srid), func.ST_Transform(query_geom, srid), distance_m)
            )
        else:
            stmt = stmt.where(getattr(func, _SQL_PREDICATES[predicate])(raw_column, query_geom))
        return list(session.scalars(stmt.order_by(model.id)))
    rows = list(session.scalars(stmt.order_by(model.id)))
    if not rows:
        return rows
    geoms = [getattr(r, geom_attr) for r in rows]
    if predicate == "dwithin":
        metric = to_metric(geom, metric_crs)
        mask = shapely.dwithin([to_metric(g, metric_crs) for g in geoms], metric, distance_m)
    else:
        shapely.prepare(geom)
        fn = {"intersects": shapely.intersects, "within": shapely.within, "contains": shapely.contains}[predicate]
        mask = fn(geoms, geom)
    return [row for row, keep in zip(rows, mask, strict=True) if keep]
