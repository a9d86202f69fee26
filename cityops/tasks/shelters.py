"""Shelters (避难场所): listed within a scope (nearest first from a point, or near an incident's zone) and created."""

from __future__ import annotations

import shapely
import shapely.ops
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput
from cityops.identity.scope import Scope
from cityops.tasks.evacuation import _distance_m
from cityops.tasks.incidents import _unit, get_incident
from cityops.tasks.models import Shelter
from cityops.tasks.zones import current_zone


def shelter_dict(s: Shelter) -> dict:
    return {"id": s.id, "code": s.code, "name": s.name, "capacity": s.capacity, "occupancy": s.occupancy,
            "free": s.capacity - s.occupancy, "lon": s.geom.x, "lat": s.geom.y, "unit_code": s.unit_code,
            "unit_path": s.unit_path, "attributes": s.attributes}


def list_shelters(session: Session, scope: Scope, near: tuple[float, float] | None = None,
                  incident_id: int | None = None) -> list[dict]:
    """Shelters in sight; nearest first from a point (``near``) or from an incident's risk zone (its edge; 0
    inside), as the command view lists them."""
    items = [shelter_dict(s) for s in session.scalars(select(Shelter).where(scope.sees_clause(Shelter.unit_path)).order_by(Shelter.id))]
    zone = None
    if incident_id is not None:
        incident = get_incident(session, scope, incident_id)
        found = current_zone(session, incident.id)
        zone = found.geom if found is not None else incident.hazard_geom
        if zone is None:
            raise Conflict(f"incident {incident_id} has no risk zone yet")
    if near or zone is not None:
        for i in items:
            if zone is not None:
                # The zone's nearest point in degrees, then the true distance: exact enough to order shelters.
                edge = shapely.ops.nearest_points(zone, shapely.Point(i["lon"], i["lat"]))[0]
                i["distance_m"] = round(_distance_m(edge.x, edge.y, i["lon"], i["lat"]), 1)
            else:
                i["distance_m"] = round(_distance_m(near[0], near[1], i["lon"], i["lat"]), 1)
        items.sort(key=lambda i: (i["distance_m"], i["id"]))
    return items


def create_shelter(session: Session, actor: audit.Actor, scope: Scope, *, code: str, name: str, capacity: int,
                   lon: float, lat: float, unit_code: str | None = None, attributes: dict | None = None) -> Shelter:
    from shapely.geometry import Point

    if capacity < 1 or capacity > 100_000:
        raise InvalidInput(f"capacity {capacity} is out of range 1…100000")
    point = Point(lon, lat)
    if unit_code is None:
        raise InvalidInput("unit_code is required")
    unit = _unit(session, unit_code)
    scope.require_covers(unit.path, f"unit {unit_code}")
    if unit.geom is not None and not unit.geom.intersects(point):
        raise InvalidGeometry(f"the shelter position lies outside unit {unit.code} ({unit.name})")
    if session.scalar(select(Shelter.id).where(Shelter.code == code)) is not None:
        raise Conflict(f"shelter {code!r} already exists")
    shelter = Shelter(code=code, name=name, capacity=capacity, occupancy=0, geom=point, unit_code=unit.code,
                      unit_path=unit.path, attributes=attributes or {})
    session.add(shelter)
    session.flush()
    audit.record(session, actor, "shelter.create", "shelter", code, after=shelter_dict(shelter), unit_path=unit.path)
    return shelter
