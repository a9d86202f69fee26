"""Response models of the housing routes (房屋/户/人): the shapes of ``service``'s snapshots."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cityops.core.schemas import ApiModel, Geometry


class BuildingOut(ApiModel):
    code: str
    name: str | None
    address: str | None
    floors: int | None
    height_m: float | None
    structure: str | None
    use: str | None
    year_built: int | None
    safety_grade: str | None = Field(description="JGJ 125 安全等级 A–D; null: not assessed")
    grid_code: str | None
    unit_path: str
    attributes: dict[str, Any]
    geometry: Geometry | None = Field(default=None, description="footprint, when asked for")


class BuildingPage(ApiModel):
    total: int | None = Field(description="matching buildings; null for a search (q)")
    limit: int
    offset: int
    items: list[BuildingOut]


class ResidentOut(ApiModel):
    id: int
    name: str | None
    id_number: str | None
    birth_year: int | None
    sex: str | None
    phone: str | None
    relation: str | None
    unit_path: str
    elderly: bool
    disabled: bool
    child: bool
    bedridden: bool
    masked: bool = Field(default=False, description="personal data masked (no personal.read, or outside your scope)")


class HouseholdOut(ApiModel):
    code: str
    building_code: str | None
    head_name: str | None
    phone: str | None
    address: str | None
    room: str | None
    members: int
    grid_code: str | None
    unit_path: str
    masked: bool = Field(default=False, description="personal data masked (no personal.read, or outside your scope)")


class HouseholdDetail(HouseholdOut):
    residents: list[ResidentOut]


class BuildingDetail(BuildingOut):
    households: list[HouseholdDetail]


class Counts(ApiModel):
    """Buildings and the count columns kept per building (housing.counts)."""

    buildings: int
    households: int
    residents: int
    vulnerable: int
    elderly: int
    disabled: int
    child: int
    bedridden: int


class Responsible(ApiModel):
    id: int
    name: str
    post: str | None
    title: str | None
    phone: str | None


class VillageGroup(Counts):
    code: str | None
    name: str | None
    village_cadres: list[Responsible] = Field(description="village cadres (村干部), closest unit first")


class GridGroup(Counts):
    code: str
    name: str | None
    village_code: str | None
    grid_workers: list[Responsible] = Field(description="grid workers (网格员)")
    village_cadres: list[Responsible]


class ThreatBuilding(BuildingOut):
    households: int
    residents: int
    vulnerable: int


class VulnerableResident(ResidentOut):
    household_code: str


class ThreatPage(ApiModel):
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page while any item list has more")


class ThreatOut(ApiModel):
    """Who is threatened (受威胁) in a zone, at your scope; totals and groups exact, item lists paged."""

    zone_area_m2: float
    totals: Counts
    outside_scope: Counts = Field(description="outside your scope: counted, never described")
    by_village: list[VillageGroup]
    by_grid: list[GridGroup]
    building_codes: list[str] = Field(description="every building in scope in the zone (map highlight)")
    buildings: list[ThreatBuilding]
    households: list[HouseholdOut]
    vulnerable_residents: list[VulnerableResident]
    page: ThreatPage
    truncated: bool
    masked: bool
