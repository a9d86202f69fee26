"""The buildings registry (房屋) as a read-only OGC API – Features collection, ``/ogc/collections/buildings``.

GDAL and QGIS read layers through /ogc; the registry is the main layer of the platform, so it is served there
too: each building's footprint and its registry columns, **without personal data** (no household or resident,
no counts of vulnerable people). Readers need ``housing.read`` and see the buildings their scope covers.

The collection is a derived table over ``buildings`` shaped as a layer's feature table (id, fid, properties as
one JSON object, geom), so the OGC service — paging, bbox, CQL2 filtering by GEOS, CRSs — is the same code for
layers and buildings; the spatial index is the buildings table's own (R*Tree ``rtree_buildings_footprint`` on
SQLite, GiST on PostGIS, which both databases reach through the derived table).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import literal, select

from cityops.core.storage import Storage, storage_of
from cityops.housing.models import Building
from cityops.identity.scope import Scope

KEY = "buildings"
#: Registry columns served, with their queryable types (no personal data; see the module docstring).
COLUMNS = {"code": "string", "name": "string", "address": "string", "floors": "integer", "height_m": "number",
           "structure": "string", "use": "string", "year_built": "integer", "safety_grade": "string",
           "grid_code": "string"}


@lru_cache(maxsize=4)
def _table(storage: Storage):
    """One derived table per backend: a filter compiled against it and the query that runs it must name the
    same object."""
    pairs = []
    for name in COLUMNS:
        pairs += [literal(name), getattr(Building, name)]
    properties = storage.json_object(*pairs)
    return select(Building.id.label("id"), Building.code.label("fid"), properties.label("properties"),
                  Building.footprint.label("geom"), Building.unit_path.label("unit_path")).subquery("ogc_buildings")


@dataclass
class BuildingsCollection:
    """The attributes the OGC service reads of a layer, for the buildings registry as ``scope`` sees it."""

    scope: Scope
    key: str = KEY
    title_zh: str = "房屋"
    title_en: str = "Buildings"
    description_zh: str = "房屋登记：房屋轮廓、层数、结构、用途、建成年份、安全鉴定等级（JGJ 125）和所在网格（不含住户和人口信息）"
    description_en: str = "The buildings registry: footprint, storeys, structure, use, year built, JGJ 125 safety " \
                          "grade and grid (no households or residents)"
    geometry_type: str = "MULTIPOLYGON"
    editable: bool = False
    public_read: bool = False
    bounds: list | None = None
    unit_path: str | None = None

    @property
    def attribute_schema(self) -> list[dict]:
        return [{"name": n, "type": t} for n, t in COLUMNS.items()]

    def ogc_source(self, storage: Storage | str):
        """(feature table, its spatial index's table and geometry column, the rows this scope may read)."""
        table = _table(storage_of(storage))
        return table, "buildings", "footprint", self.scope.covers_clause(table.c.unit_path)
