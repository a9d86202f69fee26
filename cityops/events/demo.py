"""Demo step ``events``: a seeded stream of historical and live cases across the district.

Cases are reported over the last 60 days from patrols, the 12345 hotline, the public and sensors, then
played through the real workflow (``actions.act`` with past timestamps), so every log entry, deadline and
KPI is what the live system would have produced. Recent cases stop part-way: they form the live queues.
One case per ten grids, at least 40 (the full demo's ~4 000 grids → ~400 cases), to keep the demo fast.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import shapely
from sqlalchemy import select

from cityops.core import audit
from cityops.core.errors import OutsideJurisdiction
from cityops.demo.generator import DemoContext, register_step
from cityops.events import actions, catalogue, creation, sla
from cityops.org.locate import LocatorCache
from cityops.org.models import Unit

CASES_PER_GRID = 0.1
HISTORY_DAYS = 60
_SOURCES = (("patrol", 0.6), ("hotline", 0.22), ("public", 0.12), ("rest", 0.06))


def _pick(rng: random.Random, table):
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _point_in(rng: random.Random, geom) -> tuple[float, float]:
    minx, miny, maxx, maxy = geom.bounds
    for _ in range(50):
        p = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if geom.contains(p):
            return p.x, p.y
    p = geom.representative_point()
    return p.x, p.y


def step_events(ctx: DemoContext) -> None:
    from cityops.org.levels import load_levels

    rng = random.Random(ctx.config.seed + 4)
    classes = list(catalogue.taxonomy().classes.values())
    weights = [3 if c.kind == "matter" else 1 for c in classes]
    now = datetime.now(UTC).replace(microsecond=0)
    cal = catalogue.calendar()
    locator = LocatorCache(ctx.sessions, load_levels(ctx.org_config.grid_code_length))
    actors = {r: audit.Actor(f"demo:{r}") for r in ("operator", "shiftlead", "dispatcher", "unit", "supervisor", "leader")}
    made = 0
    with ctx.sessions() as session:
        grids = session.execute(select(Unit.code, Unit.geom).where(Unit.level == "grid", Unit.geom.is_not(None))
                                .order_by(Unit.code)).all()
        n = max(40, int(len(grids) * CASES_PER_GRID))
        for i in range(n):
            code, geom = grids[rng.randrange(len(grids))]
            lon, lat = _point_in(rng, geom)
            cls = rng.choices(classes, weights=weights)[0]
            source = _pick(rng, _SOURCES)
            # One in eight is live: reported in the last few hours, so the queues have work waiting.
            live = i % 8 == 0
            at = now - (timedelta(hours=4 * rng.random()) if live else timedelta(days=HISTORY_DAYS * rng.random() ** 1.3))
            reporter = {"name": "市民", "phone": f"139{rng.randrange(10**8):08d}"} if source in ("hotline", "public") else {}
            try:
                case = creation.create_case(session, source=source, class_code=cls.code, kind=cls.kind,
                                           description=f"{cls.name}：{cls.filing}", lon=lon, lat=lat,
                                           urgency="urgent" if rng.random() < 0.1 else "normal", reporter=reporter,
                                           external_key=f"demo:{ctx.config.seed}:{i}", reported_at=at,
                                           actor=actors["supervisor"], locator=locator)
            except OutsideJurisdiction:  # a point on the outer edge may fall outside; skip it
                continue
            _play(session, case, rng, at, now, cal, actors, max_steps=rng.randrange(0, 5) if live else 99)
            made += 1
            if made % 200 == 0:
                session.commit()
        session.commit()
        # Live cases (the most recent reports): due-soon warnings and escalations as of now.
        sla.sweep(session, now)
        session.commit()
    ctx.summary["events"] = made


def _play(session, case, rng: random.Random, at: datetime, now: datetime, cal, actors, max_steps: int = 99) -> None:
    """Walk one case through the workflow from ``at``, stopping at ``now`` or after ``max_steps`` actions."""
    taken = 0

    def step(action: str, who: str, minutes: float, **kw) -> bool:
        nonlocal at, taken
        at = at + timedelta(minutes=minutes)
        if at >= now or taken >= max_steps:
            return False
        taken += 1
        actions.act(session, case, action, actors[who], at=at, **kw)
        return True

    if rng.random() < 0.05:
        step("void", "operator", rng.uniform(5, 60), note="重复或无效上报")
        return
    if not step("accept", "operator", rng.uniform(5, 90)):
        return
    if not step("file", "shiftlead", rng.uniform(10, 120)):
        return
    if case.state == "filed":  # routing left it in the dispatch queue
        dept = (case.route or {}).get("candidates") or [None]
        if not step("dispatch", "dispatcher", rng.uniform(10, 180), data={"department_code": dept[0]} if dept[0] else
                    {"unit_code": case.township_code}):
            return
    if rng.random() < 0.06:
        if not step("return", "unit", rng.uniform(30, 240), note="非本单位职责"):
            return
        if not step("dispatch", "dispatcher", rng.uniform(10, 120), data={"unit_code": case.township_code}):
            return
    if not step("start", "unit", rng.uniform(20, 300)):
        return
    limit_s = cal.limit_seconds(catalogue.taxonomy().resolve(case.class_code, case.kind).limit(case.urgency))
    if rng.random() < 0.05:
        if not step("request_extension", "unit", rng.uniform(30, 120), note="需协调施工", data={"extension": "2d"}):
            return
        if not step("approve_extension", "shiftlead", rng.uniform(30, 240)):
            return
    if rng.random() < 0.03:
        step("backlog", "leader", rng.uniform(60, 600), note="季节性施工，列入挂账")
        return
    # Handling takes 30-140 % of the limit in working time: most on time, some late.
    done = cal.add(at, limit_s * rng.uniform(0.3, 1.4))
    if done >= now:
        return
    minutes = (done - at).total_seconds() / 60
    if not step("feedback", "unit", minutes, note="已处置，附现场照片"):
        return
    if rng.random() < 0.08:
        if not step("rework", "supervisor", rng.uniform(30, 180), note="核查未通过"):
            return
        if not step("start", "unit", rng.uniform(20, 120)):
            return
        if not step("feedback", "unit", rng.uniform(60, 600), note="已重新处置"):
            return
    step("close", "supervisor", rng.uniform(30, 300), note="核查通过，结案")


register_step("events", step_events)
