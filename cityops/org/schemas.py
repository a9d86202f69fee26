"""Response models of the org routes: units (行政区划/网格), locate, departments, people, places, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from cityops.core.schemas import ApiModel, Geometry, Page


class UnitOut(ApiModel):
    code: str
    name: str
    name_en: str | None
    level: str = Field(description="district, township, village, grid … (levels.toml)")
    parent_code: str | None
    path: str = Field(description="materialised path /code/…/code/: scope is a prefix match")
    area_m2: float | None
    attributes: dict[str, Any]
    geometry: Geometry | None = Field(default=None, description="outline, when asked for (in `crs`)")


class UnitPage(ApiModel):
    total: int | None
    limit: int
    offset: int
    items: list[UnitOut]


class UnitRef(ApiModel):
    code: str
    name: str
    level: str


class Responsible(ApiModel):
    id: int
    name: str
    post: str
    phone: str | None


class UnitDetail(UnitOut):
    bbox: list[float] | None = Field(description="[west, south, east, north] in WGS 84")
    chain: list[UnitRef] = Field(description="from the top level down to this unit")
    children: int
    responsible: list[Responsible] = Field(description="people answering for a grid (with people.read)")


class Issue(ApiModel):
    check: str
    message: str
    row: int | None
    code: str | None
    severity: str = Field(description="error | warning")


class ValidationReportOut(ApiModel):
    ok: bool
    errors: int
    warnings: int
    counts: dict[str, int]
    issues: list[Issue]


class ImportOut(ApiModel):
    imported: int
    dry_run: bool
    report: ValidationReportOut


class NamedCode(ApiModel):
    code: str
    name: str


class LocatedOut(ApiModel):
    """Where a point lies (定位): the finest unit, its chain, and one key per level (``district``, ``township``
    … as levels.toml names them) with that level's unit."""

    # The per-level keys depend on the configured levels: allowed, but each one typed.
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, NamedCode]

    code: str
    level: str
    path: str
    chain: list[UnitRef]


class BatchLocated(LocatedOut):
    status: Literal["ok"]


class NotLocated(ApiModel):
    status: Literal["outside_jurisdiction", "outside_scope"]


class BatchLocateOut(ApiModel):
    results: list[BatchLocated | NotLocated] = Field(description="one per point, in order")


class DepartmentOut(ApiModel):
    code: str
    name: str
    name_en: str | None
    kind: str
    unit_code: str
    matter_classes: list[str] = Field(description="event classes the department handles (事项分类)")
    covered_units: list[str]
    phone: str | None
    attributes: dict[str, Any]


class PersonOut(ApiModel):
    id: int
    name: str
    post: str
    title: str | None
    phone: str | None
    email: str | None
    unit_code: str
    units: list[str]
    departments: list[str]
    attributes: dict[str, Any]


PersonPage = Page[PersonOut]


class PlaceOut(ApiModel):
    """A named place (地名)."""

    id: int
    name: str
    kind: str
    unit_code: str
    lon: float
    lat: float
    attributes: dict[str, Any]


class AuditOut(ApiModel):
    """An audit log entry (审计日志)."""

    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_key: str
    before: Any
    after: Any
    request_id: str | None
