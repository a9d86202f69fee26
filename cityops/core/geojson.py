"""The one GeoJSON geometry reader: a GeoJSON geometry object → a Shapely geometry, refused with
``InvalidGeometry`` (a 4xx naming what is wrong) when it is malformed, empty, has non-finite coordinates or more
vertices than allowed, or is not valid (OGC simple features). Coordinate reference systems stay with the caller
(the organisation API, OGC Features edits and CQL2 literals each serve their own)."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from cityops.core.errors import InvalidGeometry


def read_geometry(value, *, max_vertices: int | None = None, check_valid: bool = True) -> BaseGeometry:
    try:
        geom = shape(value)
    except Exception as exc:  # noqa: BLE001 - Shapely raises several types for malformed GeoJSON
        raise InvalidGeometry(f"malformed GeoJSON geometry: {exc}") from None
    coords = shapely.get_coordinates(geom)
    if max_vertices is not None and len(coords) > max_vertices:
        raise InvalidGeometry(f"geometry has {len(coords)} vertices; at most {max_vertices} are accepted")
    if geom.is_empty:
        raise InvalidGeometry("geometry is empty")
    if not np.isfinite(coords).all():
        raise InvalidGeometry("geometry has non-finite coordinates")
    if check_valid:
        require_valid(geom)
    return geom


def require_valid(geom: BaseGeometry) -> BaseGeometry:
    if geom.is_empty:
        raise InvalidGeometry("geometry is empty")
    if not geom.is_valid:
        raise InvalidGeometry(f"invalid geometry: {shapely.is_valid_reason(geom)}")
    return geom
