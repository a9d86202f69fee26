"""Where the capabilities meet (集成): sensing → warning → task center and event center.

Each capability stays importable and testable alone; the seams between them are connected here, per
database (``connect(engine)``, idempotent; the app factory does it unless ``settings.wiring`` is off, the CLI
for its commands):

- the warning models read observations from the sensing time series (``warning.service.series_source``);
- every committed sensing batch re-evaluates the risk points its datastreams feed (``ingest.AFTER_COMMIT``);
- a risk point's level change activates, upgrades or stands down the emergency plan (task center), and
  raises an alarm on the risk point (sensing alarms; at or above the policy's level it opens a case);
- the demo step ``link_sensors`` links every risk point to the demo's real datastreams.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import UTC, datetime

import numpy as np
from shapely.geometry import Point, shape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core import audit
from cityops.core.errors import CityOpsError
from cityops.demo.generator import DemoContext, register_step

log = logging.getLogger("cityops.wiring")
_HOOKED: list[bool] = []
#: The databases (by URL) whose capabilities are connected (a process may hold several, e.g. in tests).
_DATABASES: set[str] = set()


def _connected(bind) -> bool:
    return bind is not None and bind.url.render_as_string(hide_password=False) in _DATABASES
#: Level names of the warning capability, in Chinese for alarm titles.
_LEVEL_ZH = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}


def sensing_series(session: Session):
    """A warning-model ``series`` over the SensorThings observations: (POSIX seconds, numeric results)."""
    from cityops.sensing.models import Observation

    def series(datastream_id: int, start: datetime, end: datetime):
        rows = session.execute(
            select(Observation.t_ms, Observation.result_num)
            .where(Observation.datastream_id == datastream_id, Observation.result_num.is_not(None),
                   Observation.t_ms >= int(start.timestamp() * 1000), Observation.t_ms <= int(end.timestamp() * 1000))
            .order_by(Observation.t_ms)).all()
        return (np.array([r[0] / 1000.0 for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float))

    return series


def evaluate_fed_risk_points(sessions: sessionmaker, rows) -> list[str]:
    """Re-evaluate, at the newest observation's time, every risk point fed by a datastream in ``rows``."""
    from cityops.warning import service as warning
    from cityops.warning.tables import RiskPoint

    bind = sessions.kw.get("bind")
    if not rows or not _connected(bind):
        return []
    links = _fed_links(sessions, bind)
    if not links:
        return []  # no risk point is fed by a datastream: the common case costs a dict lookup
    fed = sorted({code for ds_id in {r.datastream_id for r in rows} for code in links.get(ds_id, ())})
    if not fed:
        return []
    now = datetime.fromtimestamp(max(r.t_ms for r in rows) / 1000.0, UTC)
    evaluated = []
    with sessions() as session:
        for code in fed:
            warning.evaluate_risk_point(session, code, sensing_series(session), now)
            evaluated.append(code)
    return evaluated


#: datastream id → codes of the risk points it feeds, per engine; dropped whenever a risk point is written
#: (ORM flush or ORM bulk statement) and, as a safety net for writes that bypass the ORM, after a minute.
_FED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FED_LOCK = threading.Lock()
_FED_TTL_S = 60.0


def _fed_links(sessions: sessionmaker, bind) -> dict[int, tuple[str, ...]]:
    from cityops.warning.tables import RiskPoint

    now = time.monotonic()
    with _FED_LOCK:
        cached = _FED.get(bind)
    if cached is not None and now - cached[0] < _FED_TTL_S:
        return cached[1]
    out: dict[int, list[str]] = {}
    with sessions() as session:
        for code, links in session.execute(select(RiskPoint.code, RiskPoint.datastreams)).all():
            for ds_id in _linked_ids(links or {}):
                out.setdefault(ds_id, []).append(code)
    result = {k: tuple(v) for k, v in out.items()}
    with _FED_LOCK:
        _FED[bind] = (now, result)
    return result


def forget_risk_point_links() -> None:
    """Drop the cached datastream → risk point map (call after changing risk points outside the ORM)."""
    with _FED_LOCK:
        _FED.clear()


def _watch_risk_points() -> None:
    from sqlalchemy import event

    from cityops.warning.tables import RiskPoint

    def after_flush(session, _ctx):
        if any(isinstance(o, RiskPoint) for o in (*session.new, *session.dirty, *session.deleted)):
            forget_risk_point_links()

    def on_execute(state):
        if (state.is_insert or state.is_update or state.is_delete) and any(
                m.class_ is RiskPoint for m in (state.all_mappers or ())):
            forget_risk_point_links()

    # Also after commit: a reader may have cached the old links between the flush and the commit.
    def after_commit(session):
        if session.info.pop("cityops_risk_points_changed", False):
            forget_risk_point_links()

    def mark(session, _ctx):
        if any(isinstance(o, RiskPoint) for o in (*session.new, *session.dirty, *session.deleted)):
            session.info["cityops_risk_points_changed"] = True

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "after_flush", mark)
    event.listen(Session, "do_orm_execute", on_execute)
    event.listen(Session, "after_commit", after_commit)


def _linked_ids(links: dict) -> set[int]:
    ids = set()
    for value in links.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                item = item.get("id")
            if item is not None:
                ids.add(int(item))
    return ids


def on_level_change(change) -> None:
    """Warning subscriber: the plan responds (task center) and the risk point's alarm follows the level."""
    from cityops.core.spatial import buffer_m
    from cityops.sensing import alarms
    from cityops.tasks.plans import on_warning_level
    from cityops.tasks.service import _metric_crs
    from cityops.warning.tables import RiskPoint

    if not _connected(change.bind):
        return
    actor = audit.Actor("warning")
    with Session(change.bind) as session:
        rp = session.scalar(select(RiskPoint).where(RiskPoint.code == change.risk_point_code))
        body = buffer_m(rp.geom, rp.radius_m, _metric_crs(session))  # the hazard body: the risk point's radius
        level = None if change.level == "none" else change.level
        try:
            with session.begin_nested():
                on_warning_level(session, risk_point_code=rp.code, hazard_type=rp.hazard_type, level=level,
                                 unit_code=rp.unit_code, geometry=body, actor=actor,
                                 evidence={"warning": change.identifier, "reasons": change.assessment.get("reasons")})
        except CityOpsError as exc:  # e.g. no plan for this hazard type: the alarm below still goes out
            log.warning("no plan response to %s: %s", change.identifier, exc.message)
        key = f"warning:{rp.code}"
        if level is None:
            alarms.resolve_condition(session, key, change.at, reason=f"warning cancelled ({change.identifier})")
        else:
            alarms.raise_alarm(session, key=key, severity=level, title=f"{rp.name}{_LEVEL_ZH[level]}预警",
                               unit_code=rp.unit_code, risk_point_code=rp.code, datastream_id=None,
                               evidence={"warning": change.identifier, "reasons": change.assessment.get("reasons")},
                               observed_at=change.at, source="warning", lon=change.lon, lat=change.lat)
        session.commit()


def connect(engine) -> None:
    """Connect the seams for the database behind ``engine``."""
    _DATABASES.add(engine.url.render_as_string(hide_password=False))
    if _HOOKED:
        return
    from cityops.sensing import ingest
    from cityops.warning import service as warning

    warning.series_source = _series_source
    warning.on_level_change.append(on_level_change)
    ingest.AFTER_COMMIT.append(evaluate_fed_risk_points)
    _watch_risk_points()
    _HOOKED.append(True)


def _series_source(session: Session):
    """The warning routes' observations: the sensing time series where connected, else the warning store."""
    from cityops.warning.service import stored_series

    return sensing_series(session) if _connected(session.get_bind()) else stored_series(session)


# ------------------------------------------------------------------------------------------- demo step

def step_link_sensors(ctx: DemoContext) -> None:
    """Link each risk point to the demo's datastreams: its own GNSS and tilt meters (things carrying its
    code) and the nearest rain gauge. Their levels stay those of the replayed July history until the next
    observations arrive."""
    from cityops.sensing.models import Datastream, Location, Thing, ThingLocation
    from cityops.warning.tables import RiskPoint

    with ctx.sessions() as session:
        streams: dict[int, list[int]] = {}
        for thing_id, ds_id in session.execute(select(Datastream.thing_id, Datastream.id).order_by(Datastream.id)):
            streams.setdefault(thing_id, []).append(ds_id)
        things = session.execute(select(Thing.id, Thing.device_type, Thing.risk_point_code, Thing.building_code)).all()
        where = {tid: shape(loc) for tid, loc in session.execute(
            select(ThingLocation.thing_id, Location.location).join(Location, Location.id == ThingLocation.location_id))}
        gauges = [(where[t.id], streams[t.id][0]) for t in things
                  if t.device_type == "rain_gauge" and t.id in where and streams.get(t.id)]
        if not gauges:
            return
        gauge_xy = np.array([[g.x, g.y] for g, _ in gauges])
        for rp in session.scalars(select(RiskPoint)):
            point: Point = rp.geom
            nearest = int(np.argmin(((gauge_xy - [point.x, point.y]) ** 2).sum(axis=1)))
            links = {"rainfall": gauges[nearest][1]}
            own = [t for t in things if t.risk_point_code == rp.code and streams.get(t.id)]
            if gnss := [streams[t.id][0] for t in own if t.device_type == "gnss"]:
                links["displacement"] = gnss
            if tilt := [{"id": streams[t.id][0], "building_code": t.building_code} for t in own if t.device_type == "tilt_meter"]:
                links["tilt"] = tilt
            rp.datastreams = links
        session.commit()


register_step("link_sensors", step_link_sensors)
