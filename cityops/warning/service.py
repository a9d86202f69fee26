"""Risk points (风险点位) and their warning evaluation. No HTTP here.

``evaluate_risk_point`` reads the datastreams linked to a risk point through a ``series`` callable, runs the
indicators of ``cityops.warning.indicators`` on them, records the level *and why* on the risk point, stores
every level change as a warning with the same evidence (the history, each one a CAP message) and, in the
same transaction, publishes ``warning.level_changed`` (the task center activates plans from there).

The evidence of an assessment — current (``risk_points.assessment``) or of any past warning
(``risk_warnings.reasons``) — is ``{"reasons", "reasons_en", "decision", "indicators"}``: see
``indicators.py`` and docs/architecture.md ("Warning evidence").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from shapely.geometry import Point
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput, NotFound
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.warning import indicators as ind
from cityops.warning.catalogue import ROLES, Catalogue, catalogue
from cityops.warning.indicators import Series, as_seconds
from cityops.warning.manifest import WarningLevelChanged
from cityops.warning.models.levels import LEVEL_KEYS, RANK, level_key
from cityops.warning.tables import RiskPoint, RiskWarning, StoredObservation

log = logging.getLogger("cityops.warning")

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")


@dataclass
class Assessment:
    risk_point_code: str
    at: datetime
    level: str
    previous_level: str
    changed: bool
    indicators: list[dict]
    reasons: list[str]
    reasons_en: list[str] = field(default_factory=list)
    decision: dict = field(default_factory=dict)
    warning_id: int | None = None

    def evidence(self) -> dict:
        """What is stored with the assessment and with the warning it decides."""
        return {"reasons": self.reasons, "reasons_en": self.reasons_en, "decision": self.decision, "indicators": self.indicators}

    def as_dict(self) -> dict:
        return {"risk_point_code": self.risk_point_code, "at": self.at.isoformat(), "level": self.level,
                "previous_level": self.previous_level, "changed": self.changed, **self.evidence()}


# ------------------------------------------------------------------------------------------ helpers

def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidInput("evaluation time must be timezone-aware")
    return now.astimezone(UTC)


# -------------------------------------------------------------------------------------- evaluation

def _storeys(session: Session, codes: list[str]) -> dict[str, int]:
    if not codes:
        return {}
    return dict(session.execute(select(Building.code, Building.floors).where(Building.code.in_(codes))).all())


def _identifier(cat: Catalogue, rp: RiskPoint, seq: int) -> str:
    return f"{cat.cap['district_code']}-{rp.code}-{seq:04d}"


def _hold_downgrade(cat: Catalogue, rp: RiskPoint, rank: int, now: datetime, decision: dict) -> int:
    """Hysteresis: a lower level takes over only once every assessment for ``downgrade_hold_hours`` said lower;
    until then the current level is held (and why is recorded). A level not assessed for that long is stale
    and is not held."""
    hours = float(cat.params["combination"]["downgrade_hold_hours"])
    hold = timedelta(hours=hours)
    current = RANK[rp.level]
    attributes = dict(rp.attributes or {})
    lower_since = attributes.pop("lower_since", None)
    fresh = rp.assessed_at is not None and now - _aware(rp.assessed_at) <= hold
    if rank < current and fresh:
        since = datetime.fromisoformat(lower_since) if lower_since else now
        if now - since < hold:
            attributes["lower_since"] = since.isoformat()
            decision["notes"].insert(0, {"code": "downgrade_held",
                                         "zh": f"降级需持续 {hours:g} 小时,维持{cat.level(rp.level)['name_zh']} "
                                               f"(a lower level must last {hours:g} h: level held)",
                                         "en": f"a lower level must last {hours:g} h: level held"})
            decision["held_at"] = rp.level
            rank = current
    rp.attributes = attributes
    return rank


def evaluate_risk_point(session: Session, code: str, series: Series, now: datetime, *, commit: bool = True) -> Assessment:
    """Evaluate one risk point at ``now`` from its linked datastreams; store the assessment, and a warning when
    the level changes with its ``warning.level_changed`` event (same transaction); commit unless told not to (a
    bus consumer's transaction is committed by the bus). Re-evaluating with the same data gives the same level
    and stores nothing new (idempotent)."""
    now = _aware(now)
    cat = catalogue()
    rp = session.scalar(select(RiskPoint).where(RiskPoint.code == code))
    if rp is None:
        raise NotFound(f"risk point {code!r} not found")
    links = rp.datastreams or {}
    model = rp.model or {}
    indicators: list[dict] = []
    if links.get("rainfall") is not None:
        indicators.append(ind.rainfall_indicator(cat, model, int(links["rainfall"]), series, now))
    for ds in links.get("displacement", []) or []:
        indicators.append(ind.displacement_indicator(cat, model, int(ds), series, now))
    tilt_items = [i if isinstance(i, dict) else {"id": i} for i in links.get("tilt", []) or []]
    floors = _storeys(session, [i["building_code"] for i in tilt_items if i.get("building_code")])
    for item in tilt_items:
        # Storeys from the link, else the building registry, else the risk point's model; unknown → the rule decides.
        storeys = item.get("storeys") or floors.get(item.get("building_code")) or (model.get("tilt") or {}).get("storeys")
        indicators.append(ind.tilt_indicator(cat, model, item, series, now, int(storeys) if storeys else None))
    rank, decision = ind.combine(cat, indicators)
    previous = rp.level
    if indicators and all(i["status"] != "ok" for i in indicators) and previous != "none":
        # Silence is not safety: with no usable observation at all the level is held, never cancelled.
        rank = RANK[previous]
        decision["held_at"] = previous
        decision["notes"].insert(0, {"code": "no_usable_observations", "zh": "无有效观测,维持原预警等级 (no usable observations: level held)",
                                     "en": "no usable observations: level held"})
    rank = _hold_downgrade(cat, rp, rank, now, decision)
    level = level_key(rank)
    reasons, reasons_en = ind.reasons(decision, indicators)
    assessment = Assessment(rp.code, now, level, previous, level != previous, indicators, reasons, reasons_en, decision)
    rp.assessment = assessment.as_dict()
    rp.assessed_at = now
    if level != previous:
        seq = (session.scalar(select(func.count()).select_from(RiskWarning).where(RiskWarning.risk_point_id == rp.id)) or 0) + 1
        last = session.scalar(select(RiskWarning).where(RiskWarning.risk_point_id == rp.id).order_by(RiskWarning.id.desc()).limit(1))
        msg_type = "Alert" if previous == "none" else "Cancel" if level == "none" else "Update"
        refs = None
        if msg_type != "Alert" and last is not None:
            # CAP references: sender,identifier,sent of the message this one updates or cancels.
            from cityops.warning.cap import cap_time

            refs = f"{cat.cap['sender']},{last.identifier},{cap_time(last.issued_at)}"
        warning = RiskWarning(risk_point_id=rp.id, identifier=_identifier(cat, rp, seq), msg_type=msg_type, cap_references=refs,
                              level=level, previous_level=previous, issued_at=now, unit_path=rp.unit_path,
                              reasons=assessment.evidence())
        session.add(warning)
        rp.level, rp.level_since = level, now
        session.flush()
        assessment.warning_id = warning.id
        audit.record(session, audit.SYSTEM, "warning.level_change", "risk_point", rp.code,
                     before={"level": previous}, after={"level": level, "warning": warning.identifier}, unit_path=rp.unit_path)
        geom = rp.geom
        publish(session, WarningLevelChanged(
            risk_point_code=rp.code, risk_point_name=rp.name, hazard_type=rp.hazard_type, unit_code=rp.unit_code,
            unit_path=rp.unit_path, previous_level=previous, level=level, warning_id=warning.id,
            identifier=warning.identifier, msg_type=msg_type, at=now, reasons=list(reasons),
            building_codes=list(rp.building_codes or []), lon=geom.x if geom is not None else None,
            lat=geom.y if geom is not None else None, radius_m=rp.radius_m))
    if commit:
        session.commit()
    return assessment


def stored_series(session: Session) -> Series:
    """A ``series`` reading the ``warning_observations`` store."""

    def series(datastream_id: int, start: datetime, end: datetime):
        rows = session.execute(select(StoredObservation.phenomenon_time, StoredObservation.value)
                               .where(StoredObservation.datastream_id == datastream_id,
                                      StoredObservation.phenomenon_time >= start, StoredObservation.phenomenon_time <= end)
                               .order_by(StoredObservation.phenomenon_time)).all()
        return np.array([r[0].timestamp() for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)

    return series


def store_observations(session: Session, datastream_id: int, times, values) -> int:
    """Add observations to the store, skipping those already there (same datastream and time): idempotent."""
    t = as_seconds(times)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape or not np.all(np.isfinite(v)):
        raise InvalidInput("observations need one finite value per time")
    existing = {r.timestamp() for r in session.scalars(select(StoredObservation.phenomenon_time)
                                                        .where(StoredObservation.datastream_id == datastream_id))}
    rows = [{"datastream_id": int(datastream_id), "phenomenon_time": datetime.fromtimestamp(float(a), UTC), "value": float(b)}
            for a, b in zip(t, v) if float(a) not in existing]
    if rows:
        session.execute(StoredObservation.__table__.insert(), rows)
    return len(rows)


# --------------------------------------------------------------------------------------- registry

def _validate_links(session: Session, scope: Scope, data: dict) -> None:
    links = data.get("datastreams") or {}
    if not isinstance(links, dict) or set(links) - set(ROLES):
        raise InvalidInput(f"datastreams: unknown roles {sorted(set(links) - set(ROLES))}; expected {ROLES}")
    ids = []
    if links.get("rainfall") is not None:
        ids.append(links["rainfall"])
    ids += list(links.get("displacement") or [])
    for item in links.get("tilt") or []:
        ids.append(item.get("id") if isinstance(item, dict) else item)
    if any(not isinstance(i, int) or isinstance(i, bool) or i <= 0 for i in ids):
        raise InvalidInput("datastreams: ids must be positive integers")
    cat = catalogue()
    model = data.get("model") or {}
    try:
        cat.check_model(model)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    ts = model.get("threshold_set")
    if ts is not None and ts not in cat.threshold_sets:
        raise InvalidInput(f"model.threshold_set {ts!r} is unknown; known: {sorted(cat.threshold_sets)}")
    v = (model.get("displacement") or {}).get("v_constant_mm_per_day")
    v_max = cat.params["registry"]["max_v_constant_mm_per_day"]
    if v is not None and not (isinstance(v, (int, float)) and 0 < v < v_max):
        raise InvalidInput(f"model.displacement.v_constant_mm_per_day must be a positive number of mm/day below {v_max:g}")
    codes = data.get("building_codes") or []
    if codes:
        found = dict(session.execute(select(Building.code, Building.unit_path).where(Building.code.in_(codes))).all())
        missing = [c for c in codes if c not in found or not scope.covers(found[c])]
        if missing:
            raise InvalidInput(f"building_codes: {len(missing)} unknown buildings, the first {missing[0]!r}", {"unknown": missing})


def create_risk_point(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> RiskPoint:
    """Register a risk point inside the caller's scope; validated, all or nothing."""
    cat = catalogue()
    code = data["code"]
    if not CODE_PATTERN.match(code):
        raise InvalidInput(f"code {code!r} must be 2–64 letters, digits, '_', '.' or '-' (it becomes part of CAP identifiers)")
    if data["hazard_type"] not in cat.hazard_types:
        raise InvalidInput(f"hazard_type {data['hazard_type']!r} is unknown; known: {sorted(cat.hazard_types)}")
    unit = session.scalar(select(Unit).where(Unit.code == data["unit_code"]))
    if unit is None or not scope.covers(unit.path):
        raise NotFound(f"unit {data['unit_code']!r} not found")
    geom = data["geometry"]
    if not isinstance(geom, Point) or geom.is_empty:
        raise InvalidGeometry("a risk point's geometry must be a Point")
    reg = cat.params["registry"]
    if unit.geom is not None and not unit.geom.buffer(reg["unit_tolerance_deg"]).covers(geom):
        raise InvalidGeometry(f"the point lies outside unit {unit.code} ({unit.name})")
    radius = float(data.get("radius_m", reg["default_radius_m"]))
    if not reg["min_radius_m"] <= radius <= reg["max_radius_m"]:
        raise InvalidInput(f"radius_m must be between {reg['min_radius_m']:g} and {reg['max_radius_m']:g}")
    _validate_links(session, scope, data)
    if session.scalar(select(RiskPoint.id).where(RiskPoint.code == code)) is not None:
        raise Conflict(f"risk point {code!r} already exists")
    rp = RiskPoint(code=code, name=data["name"], hazard_type=data["hazard_type"], geom=geom, radius_m=radius,
                   unit_code=unit.code, unit_path=unit.path, building_codes=list(data.get("building_codes") or []),
                   datastreams=dict(data.get("datastreams") or {}), model=dict(data.get("model") or {}), level="none",
                   attributes=dict(data.get("attributes") or {}))
    session.add(rp)
    session.flush()
    audit.record(session, actor, "warning.risk_point.create", "risk_point", code, after=risk_point_dict(rp), unit_path=unit.path)
    return rp


def risk_point_dict(rp: RiskPoint, *, detail: bool = False) -> dict:
    cat = catalogue()
    lv = cat.levels[rp.level]
    data = {"code": rp.code, "name": rp.name, "hazard_type": rp.hazard_type,
            "hazard_name": cat.hazard_types.get(rp.hazard_type, {}).get("name_zh"),
            "lon": rp.geom.x if rp.geom is not None else None, "lat": rp.geom.y if rp.geom is not None else None,
            "radius_m": rp.radius_m, "unit_code": rp.unit_code, "unit_path": rp.unit_path, "level": rp.level,
            "level_name_zh": lv["name_zh"], "level_name_en": lv["name_en"], "colour": lv["colour"],
            "level_since": rp.level_since.isoformat() if rp.level_since else None,
            "assessed_at": rp.assessed_at.isoformat() if rp.assessed_at else None,
            "building_codes": rp.building_codes, "datastreams": rp.datastreams}
    if detail:
        data.update(model=rp.model, attributes=rp.attributes, assessment=rp.assessment)
    else:
        data["reasons"] = (rp.assessment or {}).get("reasons", [])[:cat.params["evidence"]["list_reasons"]]
    return data


def evidence_of(stored: dict | None) -> dict:
    """The evidence of a stored assessment or warning, whatever its age: warnings stored before the decision
    and English reasons were recorded give what they have."""
    stored = stored or {}
    return {"reasons": list(stored.get("reasons") or []), "reasons_en": list(stored.get("reasons_en") or []),
            "decision": dict(stored.get("decision") or {}), "indicators": list(stored.get("indicators") or [])}


def warning_dict(w: RiskWarning, code: str | None = None) -> dict:
    """One stored warning with the evidence that decided it (the same for the history and the list)."""
    cat = catalogue()
    lv = cat.levels[w.level]
    evidence = evidence_of(w.reasons)
    return {"id": w.id, "identifier": w.identifier, "risk_point_code": code, "msg_type": w.msg_type, "level": w.level,
            "level_name_zh": lv["name_zh"], "level_name_en": lv["name_en"], "colour": lv["colour"],
            "previous_level": w.previous_level, "issued_at": w.issued_at.isoformat(), "references": w.cap_references,
            "unit_path": w.unit_path, "reasons": evidence["reasons"], "reasons_en": evidence["reasons_en"],
            "evidence": {"decision": evidence["decision"], "indicators": evidence["indicators"]},
            "cap_url": f"/cap/alerts/{w.identifier}.xml"}


def _parse_levels(value: str | None) -> list[str] | None:
    if not value:
        return None
    levels = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in levels if p not in LEVEL_KEYS]
    if bad:
        raise InvalidInput(f"level {bad[0]!r} is not one of {', '.join(LEVEL_KEYS)}")
    return levels


def list_risk_points(session: Session, scope: Scope, *, level: str | None = None, hazard_type: str | None = None,
                     root: str | None = None, min_level: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[RiskPoint], int]:
    stmt = select(RiskPoint).where(scope.covers_clause(RiskPoint.unit_path))
    if root:
        unit = session.scalar(select(Unit).where(Unit.code == root))
        if unit is None or not scope.covers(unit.path):
            raise NotFound(f"unit {root!r} not found")
        stmt = stmt.where(RiskPoint.unit_path.startswith(unit.path, autoescape=True))
    levels = _parse_levels(level)
    if levels:
        stmt = stmt.where(RiskPoint.level.in_(levels))
    if min_level:
        if min_level not in RANK:
            raise InvalidInput(f"min_level {min_level!r} is not one of {', '.join(LEVEL_KEYS)}")
        stmt = stmt.where(RiskPoint.level.in_([k for k in LEVEL_KEYS if RANK[k] >= RANK[min_level]]))
    if hazard_type:
        if hazard_type not in catalogue().hazard_types:
            raise InvalidInput(f"hazard_type {hazard_type!r} is unknown")
        stmt = stmt.where(RiskPoint.hazard_type == hazard_type)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(RiskPoint.code).limit(limit).offset(offset)))
    # Most severe first within the page is what an operator wants to read.
    rows.sort(key=lambda r: -RANK[r.level])
    return rows, total


def get_risk_point(session: Session, scope: Scope, code: str) -> RiskPoint:
    rp = session.scalar(select(RiskPoint).where(RiskPoint.code == code))
    if rp is None or not scope.covers(rp.unit_path):
        raise NotFound(f"risk point {code!r} not found")
    return rp


def risk_point_detail(session: Session, scope: Scope, code: str, history: int = 50) -> dict:
    rp = get_risk_point(session, scope, code)
    data = risk_point_dict(rp, detail=True)
    rows = session.scalars(select(RiskWarning).where(RiskWarning.risk_point_id == rp.id)
                           .order_by(RiskWarning.issued_at.desc(), RiskWarning.id.desc()).limit(history))
    data["history"] = [warning_dict(w, rp.code) for w in rows]
    return data


def list_warnings(session: Session, scope: Scope, *, level: str | None = None, since: datetime | None = None,
                  limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    stmt = (select(RiskWarning, RiskPoint.code).join(RiskPoint, RiskPoint.id == RiskWarning.risk_point_id)
            .where(scope.covers_clause(RiskWarning.unit_path)))
    levels = _parse_levels(level)
    if levels:
        stmt = stmt.where(RiskWarning.level.in_(levels))
    if since is not None:
        stmt = stmt.where(RiskWarning.issued_at >= _aware(since))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.execute(stmt.order_by(RiskWarning.issued_at.desc(), RiskWarning.id.desc()).limit(limit).offset(offset)).all()
    return [warning_dict(w, code) for w, code in rows], total


def building_levels(session: Session, scope: Scope, building_codes: list[str]) -> dict[str, dict]:
    """Warning level of each building from the risk points that threaten it (science §4.2 inheritance: a house
    in a landslide mass at 橙 or worse takes the slope's level): ``{code: {"level", "risk_point_code"}}``, the
    most severe risk point per building; buildings outside the caller's scope or under no risk point are left out."""
    wanted = set(building_codes)
    out: dict[str, dict] = {}
    for rp in session.scalars(select(RiskPoint).where(scope.covers_clause(RiskPoint.unit_path), RiskPoint.level != "none")):
        for code in set(rp.building_codes or []) & wanted:
            if code not in out or RANK[rp.level] > RANK[out[code]["level"]]:
                out[code] = {"level": rp.level, "risk_point_code": rp.code, "hazard_type": rp.hazard_type}
    return out
