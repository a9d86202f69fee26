"""Response models of the task center's routes: the shapes of the snapshots in incidents, zones, evacuation,
shelters and work."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cityops.core.schemas import ApiModel, Geometry, Page
from cityops.housing.schemas import ThreatOut


class IncidentOut(ApiModel):
    """An emergency response (应急响应)."""

    id: int
    title: str
    hazard_type: str
    plan_key: str
    plan_name: str = Field(description="预案名称")
    response_level: int = Field(description="1 = I (most severe) … 4 = IV")
    response_level_roman: str
    warning_level: int | None
    status: str = Field(description="proposed → active → standing_down → closed (or dismissed)")
    activation: str = Field(description="manual | auto | proposed")
    risk_point_code: str | None
    unit_code: str
    unit_path: str
    event_grade: int | None = Field(description="事件分级 I–IV (1–4) from the people to relocate")
    event_grade_roman: str | None
    case_ref: str | None
    case_link: str | None
    drill: bool = Field(description="演练: left out of real statistics")
    created_by: str
    created_at: str
    activated_at: str | None
    stood_down_at: str | None
    closed_at: str | None
    closing_note: str | None
    hazard_geometry: Geometry | None


class MyIncident(IncidentOut):
    mine: int = Field(description="how many of its households are yours")


class ZoneOut(ApiModel):
    """One version of an incident's risk zone (风险区)."""

    id: int
    incident_id: int
    version: int
    source: str = Field(description="drawn | imported | computed")
    area_m2: float
    summary: dict[str, Any]
    note: str | None
    created_by: str
    created_at: str
    unit_path: str
    geometry: Geometry | None = Field(default=None, description="left out with ?geometry=false")


class ShelterUse(ApiModel):
    id: int
    name: str
    capacity: int
    occupancy: int


class Bucket(ApiModel):
    """Evacuation totals of one area."""

    households: int
    people: int
    vulnerable: int
    safe_households: int
    safe_people: int
    remaining_households: int = Field(description="still at home or refusing")
    remaining_people: int
    by_state: dict[str, int] = Field(description="households per evacuation state")
    percent_safe: float
    all_at_home_moved: bool


class AreaBucket(Bucket):
    code: str
    name: str | None


class VillageBucket(AreaBucket):
    township_code: str | None


class GridBucket(AreaBucket):
    village_code: str | None


class TotalsOut(ApiModel):
    """Live totals (实时统计): district, townships, villages, grids; the levels agree by construction."""

    incident_id: int
    status: str
    at: str
    district: Bucket
    townships: list[AreaBucket]
    villages: list[VillageBucket]
    grids: list[GridBucket]
    shelters: list[ShelterUse]


class IncidentDetail(IncidentOut):
    zone: ZoneOut | None = Field(description="the current risk zone")
    totals: TotalsOut


class WarningOut(ApiModel):
    incident: IncidentOut | None = Field(description="the response the warning opened or changed, if any")


class StateCount(ApiModel):
    households: int
    people: int


class StatsOut(ApiModel):
    incidents: dict[str, int] = Field(description="incidents per status")
    households: int
    safe_households: int
    safe_people: int
    by_state: dict[str, StateCount]
    drills_included: bool


class RemovedOut(ApiModel):
    removed: dict[str, int] = Field(description="rows removed per table")


class ZoneThreatOut(ThreatOut):
    zone_version: int
    event_grade: int = Field(description="proposed event grade 1–4 (I–IV) from the people threatened")
    event_grade_roman: str


class EvacuationOut(ApiModel):
    """A household's evacuation task (转移任务)."""

    id: int
    incident_id: int
    household_code: str
    building_code: str
    members: int
    vulnerable: int
    lon: float
    lat: float
    grid_code: str
    village_code: str
    township_code: str
    unit_path: str
    assignee_person_id: int | None
    assignee_name: str | None
    assignee_post: str | None
    state: str
    state_zh: str
    state_en: str
    shelter_id: int | None
    shelter_name: str | None
    in_zone: bool
    version: int = Field(description="for expected_version on the next change")
    drill: bool
    updated_at: str
    updated_by: str | None


class EvacuationItem(EvacuationOut):
    distance_m: float | None = Field(default=None, description="from lon/lat, when given")
    head_name: str | None = Field(default=None, description="户主 (masked without personal.read)")
    phone: str | None = None
    address: str | None = None
    room: str | None = None


EvacuationPage = Page[EvacuationItem]


class MyHouseholdsOut(ApiModel):
    incidents: list[MyIncident] = Field(description="active incidents you see, each with `mine`: how many of its households are yours")
    incident_id: int | None = Field(description="the incident chosen: the one asked for, else the first with households of yours")
    evacuations: EvacuationPage = Field(description="its households, nearest first with lon/lat")
    totals: TotalsOut | None = Field(description="its live totals at your scope")


class LogEntry(ApiModel):
    """A step of the decision timeline (决策时间线)."""

    id: int
    incident_id: int
    at: str
    actor: str
    actor_name: str | None
    kind: str
    message: str
    data: dict[str, Any]
    unit_path: str


class StateChange(ApiModel):
    at: str
    actor: str
    from_: str | None = Field(alias="from")
    to: str
    shelter_id: int | None
    lon: float | None
    lat: float | None
    note: str | None


class ShelterOut(ApiModel):
    """A shelter (安置点)."""

    id: int
    code: str
    name: str
    capacity: int
    occupancy: int
    free: int
    lon: float
    lat: float
    unit_code: str
    unit_path: str
    attributes: dict[str, Any]


class ShelterItem(ShelterOut):
    distance_m: float | None = Field(default=None, description="from lon/lat or the incident's zone, when given")


class Progress(ApiModel):
    total: int
    done: int
    percent: float
    overdue: int
    unit: str = Field(description="tasks | households (an evacuation action counts households)")


class AttachmentOut(ApiModel):
    name: str
    url: str


class TaskOut(ApiModel):
    """A task (任务) with its rolled-up progress."""

    id: int
    parent_id: int | None
    incident_id: int | None
    title: str
    goal: str | None
    deadline: str | None
    status: str
    unit_code: str
    unit_name: str | None
    unit_path: str
    level: str | None
    assignee_role: str | None
    assignee_person_id: int | None
    assignee_name: str | None
    attachments: list[AttachmentOut]
    source_kind: str | None
    source_ref: str | None
    source_link: str | None
    action_key: str | None
    drill: bool
    progress_note: str | None
    created_by: str
    created_at: str
    completed_at: str | None
    overdue: bool
    reminded_at: str | None
    escalated_at: str | None
    progress: Progress


class TaskTree(TaskOut):
    children: list[TaskTree] = Field(description="sub-tasks you see, each with its own")


class Escalation(ApiModel):
    task_id: int
    to_unit: str | None


class OverdueOut(ApiModel):
    reminded: list[int] = Field(description="tasks whose assignees were reminded (催办)")
    escalated: list[Escalation] = Field(description="tasks escalated to the level above (督办)")
    at: str
