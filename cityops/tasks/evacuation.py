"""Household evacuation (转移安置): one record per household, its state changes (idempotent per request key), history,
and the three-level totals.

Three-level totals (village, township, district) are computed from one grouped query and summed upward, so they agree
with each other by construction, at every instant."""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cityops.core import audit
from cityops.core.db import begin_write
from cityops.core.errors import Conflict, InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.housing import service as housing
from cityops.housing.models import Household
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.tasks.catalogue import catalogue
from cityops.tasks.incidents import get_incident, incident_dict, list_incidents
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, IncidentLog, Shelter


def evacuation_dict(e: Evacuation, shelters: dict[int, str] | None = None) -> dict:
    states = catalogue().evacuation.states
    return {"id": e.id, "incident_id": e.incident_id, "household_code": e.household_code, "building_code": e.building_code,
            "members": e.members, "vulnerable": e.vulnerable, "lon": e.lon, "lat": e.lat, "grid_code": e.grid_code,
            "village_code": e.village_code, "township_code": e.township_code, "unit_path": e.unit_path,
            "assignee_person_id": e.assignee_person_id, "assignee_name": e.assignee_name, "assignee_post": e.assignee_post,
            "state": e.state, "state_zh": states[e.state].zh, "state_en": states[e.state].en, "shelter_id": e.shelter_id,
            "shelter_name": (shelters or {}).get(e.shelter_id), "in_zone": e.in_zone, "version": e.version,
            "drill": e.drill, "updated_at": e.updated_at.isoformat(), "updated_by": e.updated_by}


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    # Haversine is exact enough to order a worker's households (metres apart, within one village).
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def list_evacuations(session: Session, scope: Scope, incident_id: int, *, states: list[str] | None = None,
                     grid: str | None = None, near: tuple[float, float] | None = None, limit: int = 500,
                     offset: int = 0, personal: bool = False) -> dict:
    """Household tasks at the caller's scope; with ``near`` (lon, lat) nearest first (the phone page). Each
    item of the page names its household as people know it (head, address, phone; masked unless ``personal``
    and in scope, as the housing registry masks them)."""
    get_incident(session, scope, incident_id)
    known = catalogue().evacuation.states
    for s in states or []:
        if s not in known:
            raise InvalidInput(f"unknown evacuation state {s!r}", {"states": list(known)})
    stmt = select(Evacuation).where(Evacuation.incident_id == incident_id, Evacuation.in_zone.is_(True),
                                    scope.covers_clause(Evacuation.unit_path))
    if states:
        stmt = stmt.where(Evacuation.state.in_(states))
    if grid:
        stmt = stmt.where(Evacuation.grid_code == grid)
    rows = list(session.scalars(stmt.order_by(Evacuation.id)))
    shelters = dict(session.execute(select(Shelter.id, Shelter.name)).all()) if rows else {}
    items = [evacuation_dict(e, shelters) for e in rows]
    if near is not None:
        for item in items:
            item["distance_m"] = round(_distance_m(near[0], near[1], item["lon"], item["lat"]), 1)
        items.sort(key=lambda i: (i["distance_m"], i["id"]))
    page = items[offset : offset + limit]
    codes = [i["household_code"] for i in page]
    households = {}
    for n in range(0, len(codes), 500):
        households.update({h.code: h for h in session.scalars(select(Household).where(Household.code.in_(codes[n:n + 500])))})
    for item in page:
        h = households.get(item["household_code"])
        if h is not None:
            who = housing.mask_personal("household", {"head_name": h.head_name, "phone": h.phone},
                                        housing.sees_personal(scope, personal, h.unit_path))
            item.update(head_name=who["head_name"], phone=who["phone"], address=h.address, room=h.room)
    return {"total": len(items), "items": page}


def my_households(session: Session, scope: Scope, *, incident_id: int | None = None, states: list[str] | None = None,
                  near: tuple[float, float] | None = None, personal: bool = False) -> dict:
    """What the phone command room shows first, in one answer (one round trip on a poor connection): the active
    incidents the caller sees, each with how many of its households are the caller's (``mine``); the chosen
    incident — the asked one if it is among them, else the first with households of the caller's, else the first —
    with its households (``states``, nearest first with ``near``) and its totals at the caller's scope. Without an
    active incident: an empty list and no choice."""
    active = list_incidents(session, scope, status="active")
    ids = [i.id for i in active]
    mine = dict(session.execute(select(Evacuation.incident_id, func.count(Evacuation.id))
                                .where(Evacuation.incident_id.in_(ids), Evacuation.in_zone.is_(True),
                                       scope.covers_clause(Evacuation.unit_path))
                                .group_by(Evacuation.incident_id)).all()) if ids else {}
    incidents = [{**incident_dict(i), "mine": int(mine.get(i.id, 0))} for i in active]
    chosen = (incident_id if incident_id in ids
              else next((i for i in ids if mine.get(i)), ids[0] if ids else None))
    if chosen is None:
        return {"incidents": [], "incident_id": None, "evacuations": {"total": 0, "items": []}, "totals": None}
    return {"incidents": incidents, "incident_id": chosen,
            "evacuations": list_evacuations(session, scope, chosen, states=states, near=near, personal=personal),
            "totals": totals(session, scope, chosen)}


def change_state(session: Session, actor: audit.Actor, scope: Scope, evacuation_id: int, *, state: str,
                 shelter_id: int | None = None, lon: float | None = None, lat: float | None = None,
                 note: str | None = None, expected_version: int | None = None, request_key: str | None = None) -> Evacuation:
    """Record a household's new state (with time and the worker's position). Idempotent under
    ``request_key``; refuses illegal transitions, a full shelter and a stale ``expected_version``.

    The same change sent many times at once (a phone retrying over a bad link) gets the same answer every time:
    a request that lost the race to the one that recorded its key (PostgreSQL: it read the household before the
    winner committed, and its guarded UPDATE then found the version moved on) answers with the recorded state
    instead of a conflict; whatever it had done is rolled back.

    The reads and checks run before the embedded store's writer lock is taken (the first UPDATE takes it,
    ``core.db.WriterConnection``): held through them, the lock queued every other writer behind this request's
    Python work, and on a busy machine that queue was the updaters' tail. The UPDATE guarded by the version read
    finds a change made in between; that, and any other conflict judged on the first read, has the change done once
    more from a fresh read as the store's writer (``core.db.begin_write``: nothing can come in between), so every
    answer is the one the lock alone gave before."""
    change = dict(state=state, shelter_id=shelter_id, lon=lon, lat=lat, note=note, expected_version=expected_version,
                  request_key=request_key)
    try:
        try:
            return _change_state(session, actor, scope, evacuation_id, **change)
        except Conflict:  # judged on a read another writer may have overtaken: judged again as the writer
            session.rollback()
            begin_write(session)
            return _change_state(session, actor, scope, evacuation_id, **change)
    except Conflict:
        if not request_key:
            raise
        session.rollback()
        ev = session.get(Evacuation, evacuation_id)
        if ev is None or not _recorded(session, ev, request_key):
            raise
        return ev


def _recorded(session: Session, ev: Evacuation, request_key: str) -> bool:
    return session.scalar(select(EvacuationEvent.id).where(EvacuationEvent.evacuation_id == ev.id,
                                                           EvacuationEvent.request_key == request_key).limit(1)) is not None


def _change_state(session: Session, actor: audit.Actor, scope: Scope, evacuation_id: int, *, state: str,
                  shelter_id: int | None, lon: float | None, lat: float | None, note: str | None,
                  expected_version: int | None, request_key: str | None) -> Evacuation:
    ev = session.get(Evacuation, evacuation_id)
    if ev is None or not scope.covers(ev.unit_path):
        raise NotFound(f"household task {evacuation_id} not found")
    if request_key and _recorded(session, ev, request_key):
        session.refresh(ev)  # read before the change was committed (PostgreSQL)
        return ev  # a retry of a change already recorded
    cat = catalogue().evacuation
    if state not in cat.states:
        raise InvalidInput(f"unknown evacuation state {state!r}", {"states": list(cat.states)})
    if lon is not None or lat is not None:
        if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput("position needs both lon (−180…180) and lat (−90…90)")
    # Only the status: the hot path needs no geometry decoded.
    incident_status = session.scalar(select(Incident.status).where(Incident.id == ev.incident_id))
    if not ev.in_zone:
        raise Conflict(f"household {ev.household_code} is no longer in the risk zone")
    if state == cat.return_state:
        if incident_status != "standing_down":
            raise Conflict("households return home only after the response is stood down (解除响应)")
    elif incident_status != "active":
        raise Conflict(f"incident {ev.incident_id} is {incident_status}; evacuation states can no longer change")
    if expected_version is not None and expected_version != ev.version:
        raise Conflict(f"household task {ev.id} changed meanwhile (version {ev.version}, you sent {expected_version}); reload it")
    if state == ev.state and (state != "in_shelter" or shelter_id == ev.shelter_id):
        return ev
    if state not in cat.states[ev.state].next:
        raise Conflict(f"illegal change of household {ev.household_code}: {cat.states[ev.state].zh}({ev.state}) → "
                       f"{cat.states[state].zh}({state}) is not allowed",
                       {"from": ev.state, "to": state, "allowed": cat.states[ev.state].next})
    if state == "in_shelter":
        if shelter_id is None:
            raise InvalidInput("state in_shelter needs shelter_id")
        shelter = session.get(Shelter, shelter_id)
        if shelter is None or not scope.sees(shelter.unit_path):
            raise NotFound(f"shelter {shelter_id} not found")
    elif shelter_id is not None:
        raise InvalidInput("shelter_id is only given with state in_shelter")
    previous, old_shelter, old_version = ev.state, ev.shelter_id, ev.version
    # Check in first, guarded in SQL, so two workers can never fill a shelter past capacity.
    if state == "in_shelter":
        taken = session.execute(update(Shelter).where(Shelter.id == shelter_id, Shelter.occupancy + ev.members <= Shelter.capacity)
                                .values(occupancy=Shelter.occupancy + ev.members)).rowcount
        if not taken:
            raise Conflict(f"shelter {shelter.name} is full: no room for {ev.members} more people")
    if old_shelter is not None:
        session.execute(update(Shelter).where(Shelter.id == old_shelter).values(occupancy=Shelter.occupancy - ev.members))
    now = utcnow()
    changed = session.execute(update(Evacuation).where(Evacuation.id == ev.id, Evacuation.version == old_version)
                              .values(state=state, shelter_id=shelter_id if state == "in_shelter" else None,
                                      version=Evacuation.version + 1, updated_at=now, updated_by=actor.name)).rowcount
    if not changed:
        raise Conflict(f"household task {ev.id} changed meanwhile; reload it")
    session.add(EvacuationEvent(evacuation_id=ev.id, incident_id=ev.incident_id, at=now, actor=actor.name, from_state=previous,
                                to_state=state, shelter_id=shelter_id, lon=lon, lat=lat, note=note, request_key=request_key))
    session.add(IncidentLog(incident_id=ev.incident_id, at=now, actor=actor.name, kind="evacuation.state",
                            message=f"{ev.household_code} {cat.states[previous].zh} → {cat.states[state].zh}",
                            data={"evacuation_id": ev.id, "household_code": ev.household_code, "from": previous, "to": state,
                                  "shelter_id": shelter_id, "lon": lon, "lat": lat, "members": ev.members,
                                  "village_code": ev.village_code, "grid_code": ev.grid_code}, unit_path=ev.unit_path))
    audit.record(session, actor, "evacuation.state", "evacuation", str(ev.id), before={"state": previous, "shelter_id": old_shelter},
                 after={"state": state, "shelter_id": shelter_id, "lon": lon, "lat": lat, "note": note}, unit_path=ev.unit_path)
    # The row as written (no read-back): the UPDATE above was guarded by the version we hold.
    for key, value in (("state", state), ("shelter_id", shelter_id if state == "in_shelter" else None), ("version", old_version + 1),
                       ("updated_at", now), ("updated_by", actor.name)):
        set_committed_value(ev, key, value)
    return ev


def history(session: Session, scope: Scope, evacuation_id: int) -> list[dict]:
    ev = session.get(Evacuation, evacuation_id)
    if ev is None or not scope.covers(ev.unit_path):
        raise NotFound(f"household task {evacuation_id} not found")
    return [{"at": e.at.isoformat(), "actor": e.actor, "from": e.from_state, "to": e.to_state, "shelter_id": e.shelter_id,
             "lon": e.lon, "lat": e.lat, "note": e.note}
            for e in session.scalars(select(EvacuationEvent).where(EvacuationEvent.evacuation_id == ev.id).order_by(EvacuationEvent.id))]


def _bucket() -> dict:
    states = catalogue().evacuation.states
    return {"households": 0, "people": 0, "vulnerable": 0, "safe_households": 0, "safe_people": 0, "remaining_households": 0,
            "remaining_people": 0, "by_state": dict.fromkeys(states, 0)}


def _finish(b: dict) -> dict:
    b["percent_safe"] = round(100.0 * b["safe_households"] / b["households"], 1) if b["households"] else 100.0
    # "Every household at home moved": nobody left to move or refusing; those not at home are reported apart.
    b["all_at_home_moved"] = b["remaining_households"] == 0
    return b


def totals(session: Session, scope: Scope, incident_id: int) -> dict:
    """Live totals at district, township, village and grid level, at the caller's scope. One grouped query,
    summed upward: the levels agree by construction."""
    incident = get_incident(session, scope, incident_id)
    cat = catalogue().evacuation
    safe = set(cat.safe_states())
    remaining = {cat.initial, "refused"}
    rows = session.execute(select(Evacuation.township_code, Evacuation.village_code, Evacuation.grid_code, Evacuation.state,
                                  func.count(Evacuation.id), func.coalesce(func.sum(Evacuation.members), 0),
                                  func.coalesce(func.sum(Evacuation.vulnerable), 0))
                           .where(Evacuation.incident_id == incident.id, Evacuation.in_zone.is_(True),
                                  scope.covers_clause(Evacuation.unit_path))
                           .group_by(Evacuation.township_code, Evacuation.village_code, Evacuation.grid_code, Evacuation.state)).all()
    district, townships, villages, grids = _bucket(), defaultdict(_bucket), defaultdict(_bucket), defaultdict(_bucket)
    for township, village, grid, state, n, people, vul in rows:
        for b in (district, townships[township], villages[village], grids[grid]):
            b["households"] += n
            b["people"] += int(people)
            b["vulnerable"] += int(vul)
            b["by_state"][state] += n
            if state in safe:
                b["safe_households"] += n
                b["safe_people"] += int(people)
            if state in remaining:
                b["remaining_households"] += n
                b["remaining_people"] += int(people)
    codes = set(townships) | set(villages) | set(grids)
    names = dict(session.execute(select(Unit.code, Unit.name).where(Unit.code.in_(codes))).all()) if codes else {}
    parent = {}
    for township, village, grid, *_ in rows:
        parent[village], parent[grid] = township, village
    shelters = session.execute(select(Shelter.id, Shelter.name, Shelter.capacity, Shelter.occupancy)
                               .where(scope.sees_clause(Shelter.unit_path)).order_by(Shelter.id)).all()
    return {"incident_id": incident.id, "status": incident.status, "at": utcnow().isoformat(),
            "district": _finish(district),
            "townships": [{"code": c, "name": names.get(c), **_finish(b)} for c, b in sorted(townships.items())],
            "villages": [{"code": c, "name": names.get(c), "township_code": parent.get(c), **_finish(b)} for c, b in sorted(villages.items())],
            "grids": [{"code": c, "name": names.get(c), "village_code": parent.get(c), **_finish(b)} for c, b in sorted(grids.items())],
            "shelters": [{"id": s.id, "name": s.name, "capacity": s.capacity, "occupancy": s.occupancy} for s in shelters]}
