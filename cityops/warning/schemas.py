"""Response models of the warning routes: risk points (风险点位), their warnings and the model catalogue."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cityops.core.schemas import ApiModel


class Evidence(ApiModel):
    decision: dict[str, Any] = Field(description="how the indicators' levels were combined")
    indicators: list[dict[str, Any]] = Field(description="each indicator's value and level")


class WarningOut(ApiModel):
    """A stored warning (预警): a level change with the evidence that decided it."""

    id: int
    identifier: str = Field(description="CAP identifier")
    risk_point_code: str | None
    msg_type: str = Field(description="CAP msgType: Alert | Update | Cancel")
    level: str
    level_name_zh: str
    level_name_en: str
    colour: str
    previous_level: str
    issued_at: str
    references: str | None = Field(description="CAP references of the message it updates")
    unit_path: str
    reasons: list[str]
    reasons_en: list[str]
    evidence: Evidence
    cap_url: str


class WarningPage(ApiModel):
    total: int
    limit: int
    offset: int
    items: list[WarningOut]


class RiskPointBase(ApiModel):
    code: str
    name: str
    hazard_type: str
    hazard_name: str | None
    lon: float | None
    lat: float | None
    radius_m: float = Field(description="radius of the threatened zone (CAP circle), metres")
    unit_code: str
    unit_path: str
    level: str = Field(description="none, blue, yellow, orange, red (蓝/黄/橙/红)")
    level_name_zh: str
    level_name_en: str
    colour: str
    level_since: str | None
    assessed_at: str | None
    building_codes: list[str]
    datastreams: dict[str, Any]


class RiskPointOut(RiskPointBase):
    reasons: list[str] = Field(description="the first reasons of the current level")
    x: float | None = Field(default=None, description="easting in `crs`, when asked for")
    y: float | None = Field(default=None, description="northing in `crs`, when asked for")


class RiskPointPage(ApiModel):
    total: int
    limit: int
    offset: int
    items: list[RiskPointOut]


class RiskPointDetail(RiskPointBase):
    model: dict[str, Any]
    attributes: dict[str, Any]
    assessment: dict[str, Any] | None = Field(description="the latest assessment, with its evidence")
    history: list[WarningOut] = Field(description="warnings, newest first")


class AssessmentOut(ApiModel):
    risk_point_code: str
    at: str
    level: str
    previous_level: str
    changed: bool
    reasons: list[str]
    reasons_en: list[str]
    decision: dict[str, Any]
    indicators: list[dict[str, Any]]


class WarningModelsOut(ApiModel):
    levels: dict[str, dict[str, Any]] = Field(description="the warning ladder, by key")
    curves: list[dict[str, Any]] = Field(description="published rainfall threshold curves")
    threshold_sets: list[dict[str, Any]]
    defaults: dict[str, dict[str, Any]] = Field(description="model parameters, by section")
    hazard_types: dict[str, dict[str, Any]]
