"""Demo step ``shelters``: one shelter (安置点) per township at its centre school or square, and one at each
village office of the scenario village 太康村, near 老沟湾."""

from __future__ import annotations

from sqlalchemy import insert, select

from cityops.core import audit
from cityops.demo.generator import DemoContext, register_step
from cityops.org.models import Place, Unit
from cityops.tasks.models import Shelter

TOWNSHIP_CAPACITY = 400
VILLAGE_CAPACITY = 150


def step_shelters(ctx: DemoContext) -> None:
    with ctx.sessions() as session:
        rows = []
        for t in session.scalars(select(Unit).where(Unit.level == "township").order_by(Unit.code)):
            p = t.geom.representative_point()
            rows.append(dict(code=f"SH{t.code}", name=f"{t.name}中心小学安置点", capacity=TOWNSHIP_CAPACITY, occupancy=0,
                             geom=p, unit_code=t.code, unit_path=t.path, attributes={"kind": "school"}))
        hazard = session.scalar(select(Place).where(Place.name == "老沟湾"))
        if hazard is not None:
            grid = session.scalar(select(Unit).where(Unit.code == hazard.unit_code))
            village = session.scalar(select(Unit).where(Unit.code == grid.parent_code))
            office = session.scalar(select(Place).where(Place.unit_code == village.code, Place.kind == "village_office"))
            point = office.geom if office is not None else village.geom.representative_point()
            rows.append(dict(code=f"SH{village.code}", name=f"{village.name}村委会安置点", capacity=VILLAGE_CAPACITY, occupancy=0,
                             geom=point, unit_code=village.code, unit_path=village.path, attributes={"kind": "village_office"}))
        for row in rows:
            session.execute(insert(Shelter), [row])
        audit.record(session, audit.SYSTEM, "demo.shelters", "shelter", "*", after={"count": len(rows)})
        session.commit()
    ctx.summary["shelters"] = len(rows)


register_step("shelters", step_shelters)
